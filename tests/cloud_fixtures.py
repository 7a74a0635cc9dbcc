"""Fixtures for the cloud tests: moto, the Chalice test client, a real mosquitto, messages.

DynamoDB runs in-process under ``moto.mock_aws`` (models configured with host=None: a
localhost host would bypass the mock), with fresh tables for every test. One test in
test_cloud_models.py runs a ThreadedMotoServer to check the endpoint path the local stack
uses. Import what a module needs (``from tests.cloud_fixtures import aws, api, ...``; pytest
finds fixtures by name in the test module) and keep the names referenced
(``FIXTURES = (aws, api)``) so that ruff does not take the test arguments for redefinitions.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber

from chalicelib import models, publisher
from chalicelib.errors import PublishFailed
from edgeplane import protocol
from edgeplane_dev.mosquitto import mosquitto_binary
from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


@contextmanager
def one_request_at_a_time() -> Iterator[None]:
    """In-process moto applies one request at a time, as the local stack's moto server does
    (``edgeplane_dev/moto_server.py``): its backends have no lock, so two threads' conditional
    updates of one item could both take (the bridge's workers, dispatch's senders)."""
    process = BotocoreStubber.process_request
    lock = threading.RLock()

    def serialized(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return process(self, request)

    BotocoreStubber.process_request = serialized  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.process_request = process  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def moto_dynamodb() -> Iterator[None]:
    """In-process moto for one test module (mock_aws also fakes the credentials).

    Configured once per module: each configure builds new botocore clients (~0.15 s per
    table), while dropping and creating the tables again takes milliseconds.
    """
    with mock_aws(), one_request_at_a_time():
        models.configure(None, "test-", REGION)
        yield
    models.forget_configuration()


@pytest.fixture
def aws(moto_dynamodb, monkeypatch) -> Iterator[None]:
    """Every Edgeplane table, empty, for this test."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("EDGEPLANE_DYNAMODB_ENDPOINT", raising=False)
    models.configure(None, "test-", REGION)  # no-op unless a test pointed them elsewhere
    models.create_tables()
    yield
    models.delete_tables()


class RecordingPublisher:
    """Keeps what would have gone to the broker; refuses the sites listed in ``refuse``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.refuse: set[str] = set()

    def publish(self, topic: str, payload: bytes) -> None:
        site, _, _ = protocol.parse_topic(topic)
        if site in self.refuse:
            raise PublishFailed(topic=topic, reason="broker unreachable (test)")
        self.sent.append((topic, payload))

    def plans(self) -> list[protocol.Plan]:
        return [protocol.decode(payload, topic) for topic, payload in self.sent]


@pytest.fixture
def published() -> Iterator[RecordingPublisher]:
    recorder = RecordingPublisher()
    publisher.install(recorder)
    yield recorder
    publisher.install(None)


@pytest.fixture
def api(aws, published, monkeypatch) -> Iterator[Client]:
    """The Chalice app under test, with a token configured and a recording publisher."""
    monkeypatch.setenv("EDGEPLANE_API_TOKEN", TOKEN)
    from app import app

    with Client(app, project_dir=str(ROOT)) as client:
        yield client


@pytest.fixture
def bus_events(aws) -> Iterator[Callable[[str], list[dict]]]:
    """An SQS queue receiving every Edgeplane event from the default bus (as the console's
    subscription would); ``received(prefix)`` drains it and returns the events whose
    detail-type starts with ``prefix``."""
    import json

    import boto3

    from chalicelib import events

    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="edgeplane-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    bus = boto3.client("events", region_name=REGION)
    bus.put_rule(Name="edgeplane-all", EventPattern=json.dumps({"source": ["edgeplane"]}))
    bus.put_targets(Rule="edgeplane-all", Targets=[{"Id": "q", "Arn": arn}])
    events.forget_client()

    def received(prefix: str) -> list[dict]:
        found = []
        while True:
            batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                        WaitTimeSeconds=0).get("Messages", [])
            if not batch:
                return found
            for message in batch:
                body = json.loads(message["Body"])
                if body["detail-type"].startswith(prefix):
                    found.append(body)
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    yield received
    bus.remove_targets(Rule="edgeplane-all", Ids=["q"])
    bus.delete_rule(Name="edgeplane-all")
    sqs.delete_queue(QueueUrl=queue)
    events.forget_client()


def call(client: Client, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request with the test token; returns (status, decoded JSON body)."""
    import json

    raw = b"" if body is None else (body if isinstance(body, bytes) else
                                     json.dumps(body).encode())
    response = client.http.request(method, path, headers=JSON if headers is None else headers,
                                   body=raw)
    return response.status_code, response.json_body


# --- a real broker ---------------------------------------------------------------------


class Broker:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "mosquitto.conf"
        config.write_text(f"listener {self.port} {LOOPBACK}\nallow_anonymous true\n"
                          "persistence false\nuser root\n")
        log = open(self.directory / "mosquitto.log", "ab")  # Popen keeps its own descriptor
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(config)],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_tcp(self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[Broker]:
    """A mosquitto of this test's own on a free loopback port; stopped afterwards."""
    broker = Broker(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


# --- messages a gateway would send -----------------------------------------------------


def up(message: protocol.Message) -> tuple[str, bytes]:
    return protocol.up_topic(message.site, message.KIND), message.encode()


def machine_result(machine: str, state: str = "succeeded",
                   tasks: tuple[str, ...] = ("power.ensure",)) -> protocol.MachineResult:
    step_state = {"succeeded": "succeeded", "failed": "failed"}.get(state, "running")
    return protocol.MachineResult(machine=machine, state=state, steps=[
        protocol.StepResult(task=task, state=step_state, changed=True, message="ok",
                            started_at=1_700_000_000.0, finished_at=1_700_000_001.5)
        for task in tasks])
