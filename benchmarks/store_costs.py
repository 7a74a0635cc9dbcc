"""What one storage request costs on the local stack's store, by kind: the floor under a
rollout's time.

    python benchmarks/store_costs.py [--items 2000]

Starts the local stack's store (dynalite, ``edgeplane_dev.store``) on a folder of its own
and the stack's moto server for EventBridge (127.0.0.1, free ports), fills a table with
``--items`` items of ~300 bytes under one partition key (like a rollout's executions), and
times, one client thread, one request after the other: a request that reads no item (the
floor of any request), BatchWriteItem of 25, UpdateItem with and without a condition,
GetItem, BatchGetItem of 100, a Query of the whole partition, a Scan of the table, and
EventBridge PutEvents of 1 and of 10 entries. (dynalite implements no transactions; the
engine uses none.) Prints one line per kind and, last, a JSON summary (milliseconds per
request and per item).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp  # noqa: E402
from edgeplane_dev.store import Store  # noqa: E402

TABLE = "costs"


def key(n: int) -> dict:
    return {"r": {"S": "rollout"}, "s": {"S": f"site-{n:06d}"}}


def timed(label: str, run: Callable[[], int], results: dict) -> None:
    """``run`` makes some requests and returns how many items they touched."""
    started = time.perf_counter()
    requests, items = run()
    seconds = time.perf_counter() - started
    results[label] = {"ms_per_request": round(seconds / requests * 1000, 2),
                      "ms_per_item": round(seconds / items * 1000, 3)}
    print(f"{label:32s} {seconds / requests * 1000:8.2f} ms/request "
          f"{seconds / items * 1000:8.3f} ms/item  ({requests} requests, {items} items)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args()
    count = args.items - args.items % 100
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "edgeplane_dev.moto_server", "-H",
                               LOOPBACK, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="edgeplane-store-costs-") as tmp, \
            Store(Path(tmp) / "store") as store:
        try:
            wait_for_tcp(port, timeout=120)
            options = {"region_name": "us-east-1", "aws_access_key_id": "testing",
                       "aws_secret_access_key": "testing"}
            db = boto3.client("dynamodb", endpoint_url=store.url, **options)
            bus = boto3.client("events", endpoint_url=f"http://{LOOPBACK}:{port}", **options)
            create_table(db)
            results: dict[str, dict] = {}
            measure(db, bus, count, results)
        finally:
            server.terminate()
            server.wait(10)
    print(json.dumps({"items": count, "costs": results}, separators=(",", ":")))


def create_table(db) -> None:
    """The table, once ACTIVE: the store creates tables asynchronously, as DynamoDB does."""
    db.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST", KeySchema=[
        {"AttributeName": "r", "KeyType": "HASH"}, {"AttributeName": "s", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "r", "AttributeType": "S"},
                              {"AttributeName": "s", "AttributeType": "S"}])
    deadline = time.monotonic() + 30
    while db.describe_table(TableName=TABLE)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {TABLE} not ACTIVE after 30 s")
        time.sleep(0.1)


def measure(db, bus, count: int, results: dict) -> None:
    def put_all():
        for start in range(0, count, 25):
            db.batch_write_item(RequestItems={TABLE: [{"PutRequest": {"Item": {
                **key(n), "state": {"S": "queued"}, "plan": {"S": "x" * 300}}}}
                for n in range(start, start + 25)]})
        return count // 25, count

    def update(condition: bool, first: int, n: int):
        for i in range(first, first + n):
            extra = {"ConditionExpression": "#st = :old",
                     "ExpressionAttributeValues": {":new": {"S": "sent"},
                                                   ":old": {"S": "queued"}}} \
                if condition else {"ExpressionAttributeValues": {":new": {"S": "queued"}}}
            db.update_item(TableName=TABLE, Key=key(i), UpdateExpression="SET #st = :new",
                           ExpressionAttributeNames={"#st": "state"}, **extra)
        return n, n

    def events(per_call: int, calls: int):
        for _ in range(calls):
            bus.put_events(Entries=[{"Source": "edgeplane", "DetailType": "costs",
                                     "Detail": json.dumps({"x": "y" * 200})}] * per_call)
        return calls, calls * per_call

    timed("any request (ListTables)", lambda: ([db.list_tables(Limit=1) for _ in range(200)]
                                               and (200, 200)), results)
    timed("BatchWriteItem of 25", put_all, results)
    timed("UpdateItem", lambda: update(False, 0, 300), results)
    timed("UpdateItem, conditional", lambda: update(True, 0, 300), results)
    timed("GetItem", lambda: ([db.get_item(TableName=TABLE, Key=key(i)) for i in range(300)]
                              and (300, 300)), results)
    timed("BatchGetItem of 100", lambda: ([db.batch_get_item(RequestItems={TABLE: {
        "Keys": [key(i) for i in range(s, s + 100)], "ConsistentRead": True}})
        for s in range(0, count, 100)] and (count // 100, count)), results)

    def query():
        pages = list(db.get_paginator("query").paginate(
            TableName=TABLE, KeyConditionExpression="r = :r",
            ExpressionAttributeValues={":r": {"S": "rollout"}}))
        return len(pages), sum(page["Count"] for page in pages)

    def scan():
        pages = list(db.get_paginator("scan").paginate(TableName=TABLE))
        return len(pages), sum(page["Count"] for page in pages)

    timed("Query of the partition", query, results)
    timed("Scan of the table", scan, results)
    timed("PutEvents of 1", lambda: events(1, 200), results)
    timed("PutEvents of 10", lambda: events(10, 100), results)


if __name__ == "__main__":
    main()
