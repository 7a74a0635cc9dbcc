"""The suite's fixtures: real brokers, emulators and AWS fakes, always stopped afterwards.

Once per session (started on first use, stopped at the end): mosquitto, the IPMI and
Redfish simulators, sushy-tools' emulators and an image repository. A test gets from them
what it may change for itself: a broker without what earlier tests left (``broker``), BMCs
no other test has used (``ipmi_bmcs.fresh()``, ``redfish_bmcs.fresh()``), a system of its
own on the emulator (``tests.support.SUSHY_SYSTEMS``).

Once per module: moto in this process (``mock_aws`` fakes every AWS client made while it is
on). Per test: empty tables, a recording publisher, the Chalice test client, EventBridge.
Helpers that are not fixtures live in ``tests.support``.

A fixture imports the product code it needs when it runs: a package that fails to import
fails the tests that use it, not the collection of the whole suite.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.sushy_emulator import SushyEmulator
from tests.mockups import two_system_mockup
from tests.support import (
    PROBED,
    REGION,
    ROOT,
    SUSHY_PASSWORD,
    SUSHY_SYSTEMS,
    SUSHY_USERNAME,
    TOKEN,
    Broker,
    IpmiSimulators,
    RecordingPublisher,
    RedfishSimulators,
    SushyForTest,
)
from tests.tls_support import SecureBroker

if TYPE_CHECKING:
    from chalice.test import Client

    from edgeplane_dev.recorder import Recorder


# --- the broker ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory) -> Iterator[Mosquitto]:
    """The session's mosquitto, on a free loopback port; tests use ``broker``."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), persistence=False) as running:
        yield running


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory) -> Iterator[SecureBroker]:
    """A broker like the local stack's (and AWS IoT Core): TLS, a certificate from its CA
    required of every client, the ACL; its CA issues the identities tests connect with.
    Tests on it use site ids of their own: it is shared, and nothing is cleared."""
    from edgeplane_dev.pki import LocalCa

    directory = tmp_path_factory.mktemp("secure-broker")
    ca = LocalCa(directory / "pki").ensure()
    with Mosquitto(directory / "mosquitto", persistence=False, tls=ca.broker()) as running:
        yield SecureBroker(running, ca)


@pytest.fixture
def broker(mosquitto) -> Iterator[Broker]:
    """The session's mosquitto with no retained message of earlier tests; the persistent
    sessions this test opens end with it."""
    with Broker(mosquitto) as clean:
        yield clean


@pytest.fixture
def recorder(broker) -> Iterator[Recorder]:
    """A client that publishes to the broker and records every message on it. Made before
    any fleet a test starts: paho's own network thread waits in select(), which cannot
    watch a socket whose descriptor is above 1,024."""
    from edgeplane_dev.recorder import Recorder

    rec = Recorder(broker.port)
    yield rec
    rec.close()


# --- BMCs ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ipmi_bmcs(tmp_path_factory) -> Iterator[IpmiSimulators]:
    """Simulated IPMI BMCs: ``ipmi_bmcs.fresh(power_delay=0.2)`` is one no test has used."""
    simulators = IpmiSimulators(tmp_path_factory.mktemp("ipmi-sim"))
    yield simulators
    simulators.stop()


@pytest.fixture(scope="session")
def redfish_bmcs() -> Iterator[RedfishSimulators]:
    """Simulated Redfish BMCs: ``redfish_bmcs.fresh(BmcOptions(...))`` are ones no test has
    used (``mockup=other_mockup`` for BMCs of another shape)."""
    simulators = RedfishSimulators()
    yield simulators
    simulators.stop()


@pytest.fixture(scope="session")
def other_mockup(tmp_path_factory) -> Path:
    """A mockup of another shape than the shipped one (see ``tests.mockups``)."""
    return two_system_mockup(tmp_path_factory.mktemp("other-mockup"))


@pytest.fixture(scope="session")
def sushy_emulator(tmp_path_factory) -> Iterator[SushyEmulator]:
    """sushy-tools' emulator with the systems of ``tests.support.SUSHY_SYSTEMS``, basic auth
    on; tests use ``sushy``. It leaks sqlite connections under many concurrent clients:
    tests use one or two at a time, and must stay at 10 or fewer."""
    with SushyEmulator(list(SUSHY_SYSTEMS), state_dir=tmp_path_factory.mktemp("sushy"),
                       username=SUSHY_USERNAME, password=SUSHY_PASSWORD) as running:
        yield running


@pytest.fixture
def sushy(sushy_emulator) -> SushyForTest:
    """The session's sushy-tools emulator; ``sushy.received()`` is what came in during
    this test."""
    return SushyForTest(sushy_emulator)


@pytest.fixture(scope="session")
def sushy_one_system(tmp_path_factory) -> Iterator[SushyEmulator]:
    """sushy-tools' emulator with one system (``tests.support.PROBED``), no auth: what a
    client finds when the service does not make it choose. At most 10 clients at once."""
    with SushyEmulator([PROBED], state_dir=tmp_path_factory.mktemp("sushy-one")) as running:
        yield running


@pytest.fixture(scope="session")
def images() -> Iterator[Callable[[str], str]]:
    """An HTTP image repository on loopback: ``images("bmc-1.2.bin")`` is a URL that serves
    a small file; names with "absent" in them answer 404. BMCs really fetch what they are
    given (virtual media, firmware), so tests give them something to fetch."""

    class Repository(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if "absent" in self.path:
                self.send_error(404)
                return
            body = b"EDGEPLANE" * 256
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Repository)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lambda name: f"http://{LOOPBACK}:{server.server_address[1]}/{name}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# --- the cloud: moto, the Chalice app, what it publishes and emits ----------------------------


@pytest.fixture(scope="module")
def moto_dynamodb() -> Iterator[None]:
    """In-process moto for one test module (mock_aws also fakes the credentials). Models are
    configured with host=None: a localhost host would bypass the mock.

    Configured once per module: each configure builds new botocore clients (~0.15 s per
    table), while dropping and creating the tables again takes milliseconds.
    """
    from moto import mock_aws

    from chalicelib import models

    # moto intercepts botocore's sending: the item requests go through botocore here.
    with pytest.MonkeyPatch.context() as patch, mock_aws(), one_request_at_a_time():
        patch.setenv("EDGEPLANE_STORE_CLIENT", "botocore")
        models.configure(None, "test-", REGION)
        yield
    models.forget_configuration()


@pytest.fixture
def aws(moto_dynamodb, monkeypatch) -> Iterator[None]:
    """Every Edgeplane table, empty, for this test."""
    from chalicelib import models

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("EDGEPLANE_DYNAMODB_ENDPOINT", raising=False)
    models.configure(None, "test-", REGION)  # no-op unless a test pointed them elsewhere
    models.create_tables()
    yield
    models.delete_tables()


@pytest.fixture
def published() -> Iterator[RecordingPublisher]:
    """What the cloud publishes to sites, kept instead of sent."""
    from chalicelib import publisher

    recorder = RecordingPublisher()
    publisher.install(recorder)
    yield recorder
    publisher.install(None)


@pytest.fixture
def api(aws, published, monkeypatch) -> Iterator[Client]:
    """The Chalice app under test, with a token configured and a recording publisher."""
    from chalice.test import Client

    from app import app

    monkeypatch.setenv("EDGEPLANE_API_TOKEN", TOKEN)

    with Client(app, project_dir=str(ROOT)) as client:
        yield client


@pytest.fixture
def bus_events(aws) -> Iterator[Callable[[str], list[dict]]]:
    """An SQS queue receiving every Edgeplane event from the default bus (as the console's
    subscription would); ``received(prefix)`` drains it and returns the events whose
    detail-type starts with ``prefix``."""
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


@contextmanager
def one_request_at_a_time() -> Iterator[None]:
    """In-process moto applies one request at a time, as the local stack's moto server does
    (``edgeplane_dev/moto_server.py``): its backends have no lock, so two threads' conditional
    updates of one item could both take (the bridge's workers, dispatch's senders)."""
    from moto.core.botocore_stubber import BotocoreStubber

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


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Any]:
    """The whole local stack with no site, in the test's folder; stopped afterwards."""
    from edgeplane_dev.stack import LocalStack

    local = LocalStack(tmp_path / "dev", [])
    local.up()
    try:
        yield local
    finally:
        local.down()
