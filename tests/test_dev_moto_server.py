"""The local stack's store (dynalite) and its moto server apply each write atomically, as
DynamoDB does: of writers racing to claim one item on the same condition, exactly one wins,
and no ADD is lost."""

from __future__ import annotations

import sys
import threading

import boto3
import pytest
from botocore.exceptions import ClientError

from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp
from edgeplane_dev.processes import spawn, stop
from edgeplane_dev.store import Store

ITEMS = 120
WRITERS = 8


@pytest.fixture(params=["store", "moto"])
def endpoint(request, tmp_path):
    if request.param == "store":
        with Store(tmp_path / "store") as store:
            yield store.url
        return
    port = free_port()
    server = spawn([sys.executable, "-m", "edgeplane_dev.moto_server", "-H", LOOPBACK,
                    "-p", str(port)], tmp_path / "moto.log")
    try:
        wait_for_tcp(port, timeout=60)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        stop(server)


def client(endpoint: str):
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def test_racing_conditional_claims_take_once_each_and_lose_no_add(endpoint):
    db = client(endpoint)
    db.create_table(TableName="claims", BillingMode="PAY_PER_REQUEST",
                    KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
    db.get_waiter("table_exists").wait(TableName="claims", WaiterConfig={"Delay": 1})
    # With claims the size of the engine's, an unserialized moto server let 2 to 7 of 120
    # items be claimed twice.
    sites = {"L": [{"S": f"site-{n:05d}"} for n in range(200)]}
    for n in range(ITEMS):
        db.put_item(TableName="claims", Item={"k": {"S": f"e-{n}"}, "state": {"S": "queued"},
                                              "queue_key": {"S": f"0-{n}"}, "sites": sites})
    db.put_item(TableName="claims", Item={"k": {"S": "counter"}, "sent": {"N": "0"}})
    wins = [0] * ITEMS
    lock = threading.Lock()

    def claim_all() -> None:
        mine = client(endpoint)
        for n in range(ITEMS):
            try:
                mine.update_item(
                    TableName="claims", Key={"k": {"S": f"e-{n}"}},
                    # the engine's claim: queued -> sent, with what goes with it
                    UpdateExpression="SET #s = :sent, updated_at = :t, sent_at = :t, "
                                     "message = :empty, plan_message_id = :id "
                                     "REMOVE queue_key ADD moves :one",
                    ConditionExpression="#s = :queued",
                    ExpressionAttributeNames={"#s": "state"},
                    ExpressionAttributeValues={
                        ":sent": {"S": "sent"}, ":queued": {"S": "queued"},
                        ":t": {"N": "1796131691.392"}, ":empty": {"S": ""},
                        ":id": {"S": f"m-{n}"}, ":one": {"N": "1"}})
            except ClientError as exc:
                assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
                continue
            with lock:
                wins[n] += 1
            mine.update_item(TableName="claims", Key={"k": {"S": "counter"}},
                             UpdateExpression="ADD sent :one",
                             ExpressionAttributeValues={":one": {"N": "1"}})

    writers = [threading.Thread(target=claim_all) for _ in range(WRITERS)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()

    assert [n for n, won in enumerate(wins) if won != 1] == [], "each item claimed once"
    counter = db.get_item(TableName="claims", Key={"k": {"S": "counter"}}, ConsistentRead=True)
    assert counter["Item"]["sent"] == {"N": str(ITEMS)}, "every claim counted once"
