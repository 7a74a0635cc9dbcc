"""Item requests sent on the wire (``chalicelib.store_wire``) do what botocore's did.

Against the local stack's real store (dynalite): the models' writes, conditions, batches,
pages and binary values, read back through a plain botocore client. Against a small HTTP
server of this test: the signature (checked with SigV4 recomputed here), retries of
throttles and 5xx with their limit, errors as botocore's, a kept-alive connection the
server closed, a store that does not answer, and an answer too large.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, HTTPClientError

from chalicelib import models, settings, store_wire
from chalicelib.availability import store_unavailable
from chalicelib.models import Machine, Site, conditional_write, update_returning
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.store import CREDENTIALS, REGION, Store, client

PREFIX = "wire-"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Store]:
    with Store(tmp_path_factory.mktemp("wire") / "db") as running:
        yield running


@pytest.fixture(scope="module")
def tables(store: Store) -> Iterator[Any]:
    """Every table on the store (each test writes keys of its own), the models on the
    wire; a botocore client to check what they wrote."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
        patch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
        patch.delenv("EDGEPLANE_STORE_CLIENT", raising=False)
        models.forget_configuration()
        models.configure(store.url, PREFIX, REGION)
        models.create_tables()
        yield client(store.url)
        models.forget_configuration()


def test_the_models_requests_go_on_the_wire(tables):
    assert isinstance(Site._get_connection().connection.client, store_wire.WireClient)


def test_every_table_of_one_store_shares_one_client(tables):
    """A process builds one botocore client for the store (65 ms each: the service's
    model loaded in a session of its own), not one per table."""
    clients = {id(model._get_connection().connection.client) for model in models.MODELS}
    assert len(clients) == 1


def test_writes_conditions_and_answers_are_the_stores(tables):
    Site("s1", name="one", tags=["a", "b"], facts={"rack": 4}).save()
    assert conditional_write(Site("s1"), [Site.online.set(True)], Site.name == "one")
    assert not conditional_write(Site("s1"), [Site.online.set(False)], Site.name == "two")
    old = update_returning(Site("s1"), [Site.last_seen_at.set(12.5)])
    assert old is not None and old["online"] == {"BOOL": True}
    assert update_returning(Site("s2"), [Site.name.set("two")]) == {}  # did not exist
    stored = tables.get_item(TableName=f"{PREFIX}sites", Key={"site_id": {"S": "s1"}})
    assert stored["Item"]["online"] == {"BOOL": True}
    assert stored["Item"]["last_seen_at"] == {"N": "12.5"}
    assert Site.get("s1").facts == {"rack": 4}


def test_batches_and_pages(tables):
    with Machine.batch_write() as batch:  # 25 items a request
        for number in range(140):
            batch.save(Machine("big", f"m-{number:03d}", protocol="redfish",
                               address="x" * 8000))  # 140 x 8 KB: more than one 1 MB page
    found = [machine.machine_id for machine in Machine.query("big")]
    assert found == [f"m-{number:03d}" for number in range(140)]
    keys = [("big", f"m-{number:03d}") for number in range(0, 140, 7)]
    assert sorted(m.machine_id for m in Machine.batch_get(keys)) == [k[1] for k in keys]


def test_binary_values_round_trip(tables):
    wire = Site._get_connection().connection.client
    item = {"site_id": {"S": "bin"}, "blob": {"B": b"\x00\xff\"B"},
            "blobs": {"BS": [b"\x01", b"\x02\x03"]},
            "nested": {"M": {"B": {"B": b"\x04"}, "S": {"S": "B"}}}}
    wire._make_api_call("PutItem", {"TableName": f"{PREFIX}sites", "Item": item})
    assert wire._make_api_call("GetItem", {"TableName": f"{PREFIX}sites",
                                           "Key": {"site_id": {"S": "bin"}}})["Item"] == item
    raw = tables.get_item(TableName=f"{PREFIX}sites", Key={"site_id": {"S": "bin"}})["Item"]
    assert raw == item  # what botocore reads of it


def test_an_invalid_request_is_botocores_client_error_and_not_retried(tables):
    wire = Site._get_connection().connection.client
    with pytest.raises(ClientError) as raised:  # "name" is a reserved word
        wire._make_api_call("UpdateItem", {
            "TableName": f"{PREFIX}sites", "Key": {"site_id": {"S": "s"}},
            "UpdateExpression": "SET name = :n", "ExpressionAttributeValues": {":n": {"S": "x"}}})
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "reserved keyword" in raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert store_unavailable(raised.value) is None  # the request's fault, not the store's


def test_table_requests_stay_botocores(tables):
    wire = Site._get_connection().connection.client
    described = wire._make_api_call("DescribeTable", {"TableName": f"{PREFIX}sites"})
    assert described["Table"]["TableStatus"] == "ACTIVE"
    assert "CreationDateTime" in described["Table"]  # botocore's parsed datetime


def test_an_unknown_store_client_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("EDGEPLANE_STORE_CLIENT", "fast")
    with pytest.raises(ValueError, match="EDGEPLANE_STORE_CLIENT is 'fast'"):
        settings.load()


# --- against a server of this test ------------------------------------------------------


class FakeStore(http.server.ThreadingHTTPServer):
    """Answers from ``answers`` in turn (status, JSON), then 200 {}; records each request
    and checks its signature; ``close_idle`` closes each connection after one answer
    without saying so."""

    daemon_threads = True

    def __init__(self, answers: list[tuple[int, Any]], close_idle: bool = False) -> None:
        super().__init__((LOOPBACK, free_port()), _Handler)
        self.answers = list(answers)
        self.close_idle = close_idle
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.bad_signatures: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeStore

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        problem = _signature_problem(self.headers, body, self.server.server_address[1])
        if problem:
            self.server.bad_signatures.append(problem)
        self.server.requests.append({"target": self.headers["X-Amz-Target"],
                                     "body": json.loads(body)})
        status, answer = self.server.answers.pop(0) if self.server.answers else (200, {})
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", f"req-{len(self.server.requests)}")
        self.end_headers()
        self.wfile.write(data)
        if self.server.close_idle:
            self.close_connection = True


def _signature_problem(headers: Any, body: bytes, port: int) -> str:
    """SigV4 recomputed from the request as received ('' when it matches)."""
    authorization = headers.get("Authorization", "")
    try:
        credential = authorization.split("Credential=")[1].split(",")[0]
        signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
        signature = authorization.split("Signature=")[1]
    except IndexError:
        return f"no SigV4 authorization: {authorization!r}"
    access_key, date, region, service, _ = credential.split("/")
    canonical = "\n".join([
        "POST", "/", "",
        "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
        ";".join(signed), hashlib.sha256(body).hexdigest()])
    amz_date = headers["X-Amz-Date"]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, f"{date}/{region}/{service}/aws4_request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{CREDENTIALS['aws_secret_access_key']}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if (access_key, region, service) != (CREDENTIALS["aws_access_key_id"], REGION, "dynamodb"):
        return f"credential scope {credential}"
    if "host" not in signed or headers["Host"] != f"{LOOPBACK}:{port}":
        return f"host not signed as {LOOPBACK}:{port}"
    return "" if hmac.compare_digest(signature, expected) else "signature does not match"


@pytest.fixture
def signing_env(monkeypatch) -> None:
    """The store's credentials in the environment, and retries without a backoff wait."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setattr(store_wire, "MAX_BACKOFF_S", 0.0)


@pytest.fixture
def fake(signing_env) -> Iterator[Any]:
    """Make a FakeStore and a WireClient on it (3 attempts a call, no backoff wait)."""
    servers: list[FakeStore] = []

    def make(answers: list[tuple[int, Any]], close_idle: bool = False,
             ) -> tuple[FakeStore, store_wire.WireClient]:
        server = FakeStore(answers, close_idle)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        botocore_client = client(server.url, retries={"total_max_attempts": 3})
        return server, store_wire.WireClient(botocore_client)

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


UPDATE = {"TableName": "t", "Key": {"site_id": {"S": "s"}}, "UpdateExpression": "SET #a = :v",
          "ExpressionAttributeNames": {"#a": "a"}, "ExpressionAttributeValues": {":v": {"N": "1"}}}
THROTTLED = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                   "message": "slow down"})
BROKEN = (500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                "message": "internal"})


def test_each_request_is_signed_and_names_its_operation(fake):
    server, wire = fake([(200, {"Attributes": {"a": {"N": "1"}}})])
    assert wire._make_api_call("UpdateItem", UPDATE) == {"Attributes": {"a": {"N": "1"}}}
    assert server.requests == [{"target": "DynamoDB_20120810.UpdateItem", "body": UPDATE}]
    assert server.bad_signatures == []


def test_throttles_and_server_errors_are_tried_again_within_the_attempts(fake):
    server, wire = fake([THROTTLED, BROKEN])
    assert wire._make_api_call("UpdateItem", UPDATE) == {}
    assert len(server.requests) == 3

    server, wire = fake([THROTTLED, BROKEN, THROTTLED])
    with pytest.raises(ClientError) as raised:
        wire._make_api_call("UpdateItem", UPDATE)
    assert len(server.requests) == 3  # the client's total_max_attempts
    assert raised.value.response["Error"] == {"Code": "ThrottlingException",
                                              "Message": "slow down"}
    assert store_unavailable(raised.value) is not None  # the store's: retried later


def test_a_refused_condition_is_answered_at_once_with_its_item(fake):
    refused = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                     "message": "The conditional request failed",
                     "Item": {"site_id": {"S": "s"}}})
    server, wire = fake([refused])
    with pytest.raises(ClientError) as raised:
        wire._make_api_call("UpdateItem", UPDATE)
    assert len(server.requests) == 1
    assert raised.value.response["Error"]["Code"] == models.CONDITION_FAILED
    assert raised.value.response["Item"] == {"site_id": {"S": "s"}}
    assert raised.value.response["ResponseMetadata"]["RequestId"] == "req-1"


def test_a_connection_the_server_closed_is_opened_again(fake):
    server, wire = fake([], close_idle=True)
    for _ in range(3):
        assert wire._make_api_call("GetItem", {"TableName": "t", "Key": {}}) == {}
    assert len(server.requests) == 3
    assert server.connections == 3


def test_a_store_that_does_not_answer_is_unavailable(signing_env):
    wire = store_wire.WireClient(client(f"http://{LOOPBACK}:{free_port()}",
                                        retries={"total_max_attempts": 2}))
    with pytest.raises(EndpointConnectionError) as raised:
        wire._make_api_call("GetItem", {"TableName": "t", "Key": {}})
    assert store_unavailable(raised.value).startswith("no answer")


def test_an_answer_too_large_or_not_json_is_refused(fake, monkeypatch):
    monkeypatch.setattr(store_wire, "MAX_ANSWER_BYTES", 1024)
    server, wire = fake([(200, {"Item": {"a": {"S": "x" * 2000}}})] * 3)
    with pytest.raises(HTTPClientError, match="answered more than 1024 bytes") as raised:
        wire._make_api_call("GetItem", {"TableName": "t", "Key": {}})
    assert len(server.requests) == 3  # tried again, as a lost answer
    assert store_unavailable(raised.value) is not None
    server, wire = fake([(200, b"[1, 2]")])
    with pytest.raises(HTTPClientError, match="answered no JSON object"):
        wire._make_api_call("GetItem", {"TableName": "t", "Key": {}})



def test_threads_share_the_kept_alive_connections(fake):
    """Ingest makes new writer threads for each batch: they reuse the idle connections."""
    server, wire = fake([])
    for _ in range(20):
        thread = threading.Thread(
            target=wire._make_api_call, args=("GetItem", {"TableName": "t", "Key": {}}))
        thread.start()
        thread.join()
    assert len(server.requests) == 20
    assert server.connections == 1


def test_a_connection_idle_too_long_is_not_reused(fake, monkeypatch):
    """A server closes idle connections (the local store after 5 s): one idle longer than
    MAX_IDLE_S is closed, not sent on."""
    server, wire = fake([])
    monkeypatch.setattr(store_wire, "MAX_IDLE_S", 0.0)
    for _ in range(3):
        wire._make_api_call("GetItem", {"TableName": "t", "Key": {}})
    assert server.connections == 3


def _random_condition(rng: random.Random, depth: int = 0) -> Any:
    """A pynamodb condition over three numbers of a site, nested up to 4 deep."""
    attributes = (Site.presence_session, Site.presence_rank, Site.last_seen_at)
    if depth < 4 and rng.random() < 0.6:
        left, right = _random_condition(rng, depth + 1), _random_condition(rng, depth + 1)
        shape = rng.choice(("and", "or", "not"))
        return left & right if shape == "and" else left | right if shape == "or" else ~left
    attribute, value = rng.choice(attributes), rng.randint(0, 3)
    return rng.choice((
        lambda: attribute == value, lambda: attribute < value, lambda: attribute >= value,
        lambda: attribute.between(value, value + 1), lambda: attribute.is_in(value, 2),
        lambda: attribute.exists(), lambda: attribute.does_not_exist()))()


def test_conditions_without_their_needless_parentheses_answer_as_written(tables):
    """200 random conditions on 3 sites: the store answers each as sent by botocore
    (pynamodb's parentheses) and as sent on the wire (``store_expressions.plain``)."""
    rng = random.Random(7)
    wire = Site._get_connection().connection.client
    sites = {"c1": {"presence_session": {"N": "1"}, "presence_rank": {"N": "2"}},
             "c2": {"presence_session": {"N": "3"}, "last_seen_at": {"N": "0"}},
             "c3": {"presence_rank": {"N": "1"}, "last_seen_at": {"N": "2"}}}
    for site, values in sites.items():
        tables.put_item(TableName=f"{PREFIX}sites", Item={"site_id": {"S": site}, **values})
    flattened = 0
    for _ in range(200):
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        expression = _random_condition(rng).serialize(names, values)
        flattened += store_wire.plain(expression) != expression
        for site in sites:
            request = {
                "TableName": f"{PREFIX}sites", "Key": {"site_id": {"S": site}},
                "UpdateExpression": "SET #z = :z", "ConditionExpression": expression,
                "ExpressionAttributeNames": {**{v: k for k, v in names.items()},
                                             "#z": "updated_at"},
                "ExpressionAttributeValues": {**values, ":z": {"N": "1"}}}
            answers = []
            for send in (tables._make_api_call, wire._make_api_call):
                try:
                    send("UpdateItem", request)
                    answers.append("written")
                except ClientError as exc:
                    answers.append(exc.response["Error"]["Code"])
            assert answers[0] == answers[1], (expression, store_wire.plain(expression), site)
    assert flattened > 100  # most had parentheses to leave out


# --- EventBridge's PutEvents, against the local stack's moto server ----------------------


@pytest.fixture
def event_bus(tmp_path, monkeypatch) -> Iterator[Any]:
    """A moto server with a rule sending every Edgeplane event to a queue; the events
    client of ``chalicelib.events`` pointed at it (on the wire, as the stack runs it)."""
    import sys

    import boto3

    from chalicelib import events
    from edgeplane_dev.ports import wait_for_tcp
    from edgeplane_dev.processes import spawn, stop

    port = free_port()
    server = spawn([sys.executable, "-m", "edgeplane_dev.moto_server", "-H", LOOPBACK,
                    "-p", str(port)], tmp_path / "moto.log")
    try:
        wait_for_tcp(port, timeout=60)
        url = f"http://{LOOPBACK}:{port}"
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "EDGEPLANE_EVENTS_ENDPOINT": url,
                            "EDGEPLANE_STORE_CLIENT": "wire"}.items():
            monkeypatch.setenv(name, value)
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=url)
        queue = sqs.create_queue(QueueName="events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        bus = boto3.client("events", region_name=REGION, endpoint_url=url)
        bus.put_rule(Name="all", EventPattern=json.dumps({"source": [events.SOURCE]}))
        bus.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])
        events.forget_client()

        def received() -> list[dict]:
            answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
            return [json.loads(m["Body"]) for m in answer.get("Messages", [])]

        yield received
    finally:
        events.forget_client()
        stop(server)


def test_events_are_put_on_the_wire_and_reach_the_bus(event_bus):
    from chalicelib import events

    with events.Outbox() as outbox:
        for n in range(12):  # two requests: ten entries, then two
            outbox.emit("site.presence", {"site_id": f"s-{n}", "online": True},
                        resources=[f"site/s-{n}"])
    assert isinstance(events._events_client()[0], store_wire.WireClient)
    got: list[dict] = []
    for _ in range(5):
        got += event_bus()
        if len(got) >= 12:
            break
    assert sorted(e["detail"]["site_id"] for e in got) == sorted(f"s-{n}" for n in range(12))
    assert {e["detail-type"] for e in got} == {"site.presence"}
    assert got[0]["resources"] == [f"site/{got[0]['detail']['site_id']}"]


def test_an_event_the_bus_refuses_is_reported_not_raised(event_bus, monkeypatch, caplog):
    from chalicelib import events

    monkeypatch.setenv("EDGEPLANE_EVENT_BUS", "no-such-bus")
    events.forget_client()
    assert events.emit("site.presence", {"site_id": "s-1"}) is False
    assert "site.presence" in caplog.text


def test_each_attempt_is_counted_under_its_service(monkeypatch):
    """The local stack counts requests from client-side monitoring's datagrams: an event put
    on the wire counts as EventBridge's, an item request as DynamoDB's."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((LOOPBACK, 0))
    listener.settimeout(5)
    monkeypatch.setenv("AWS_CSM_ENABLED", "true")
    monkeypatch.setenv("AWS_CSM_HOST", LOOPBACK)
    monkeypatch.setenv("AWS_CSM_PORT", str(listener.getsockname()[1]))
    try:
        for service in ("EventBridge", "DynamoDB"):
            store_wire._Monitor.from_environment(service).attempt("Op")
            event = json.loads(listener.recv(4096))
            assert (event["Service"], event["Api"], event["Type"]) == \
                (service, "Op", "ApiCallAttempt")
    finally:
        listener.close()
