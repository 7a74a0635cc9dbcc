"""What the tests share besides fixtures (those are in conftest.py): polling, the plan
signing key (the cloud under test signs with it, every gateway under test pins it), the
cloud tests' helpers, and the session's broker and BMC simulators as one test sees them.

Each shared service is started once per session; a test that changes state gets state of
its own: a BMC no other test has used (``IpmiSimulators``, ``RedfishSimulators``), a system
of its own on sushy-tools' emulator (``SUSHY_SYSTEMS``), a broker without what earlier
tests left in it (``Broker``). The simulators are imported when first started, so a test
that needs none of them does not depend on their importing (nor on the drivers they share
code with).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from chalicelib import signing
from chalicelib.errors import PublishFailed
from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.journal import Journal
from edge_gateway.transport import MqttTransport
from edge_gateway.trust import PlanVerifier
from edgeplane import protocol
from edgeplane.protocol import BmcProtocol, PowerState
from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine
from edgeplane_dev.sushy_emulator import FakeSystem, SushyEmulator

if TYPE_CHECKING:
    from chalice.test import Client

    from edgeplane_cli.client import ApiClient
    from edgeplane_dev.ipmi_sim import SimulatorProcess
    from edgeplane_dev.redfish_sim import BmcOptions, RedfishBmc, RedfishSimulator
    from edgeplane_dev.stack import LocalStack

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def wait_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
               what: str | None = None) -> T:
    """Call ``condition`` until it returns something true, and return that; raise
    TimeoutError (saying ``what`` was awaited) if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'the condition'}: not within {timeout:g} s "
                               f"(last seen: {value!r})")
        time.sleep(interval)


def log_says(stack: LocalStack, name: str, text: str) -> bool:
    """Whether the log of the local stack's process ``name`` (``bridge``...) says ``text``."""
    log = stack.directory / "logs" / f"{name}.log"
    return log.exists() and text in log.read_text(errors="replace")


def machine_count(api: ApiClient, sites: list[str]) -> int:
    """The machines the cloud knows of these sites (a site not registered yet has none)."""
    from edgeplane_cli.client import ApiError

    count = 0
    for site in sites:
        try:
            count += len(api.get(f"/sites/{site}/machines")["machines"])
        except ApiError as exc:
            if exc.status != 404:
                raise
    return count


# --- plan signatures ---------------------------------------------------------------------

# The tests' signing key: what the cloud under test signs with, and what every gateway under
# test pins (``PLAN_KEYS``). Fixed, so that a failure reproduces byte for byte.
PLAN_SIGNER = signing.PlanSigner(Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"edgeplane tests: the plan signing key").digest()))
PLAN_KEYS = (PLAN_SIGNER.public_key_b64,)
SIGNATURE_TTL = 3600.0  # how long the tests' signatures stand, unless a test says


def sign(message: protocol.Message | dict[str, Any], expires: float | None = None,
         signer: signing.PlanSigner = PLAN_SIGNER) -> bytes:
    """A plan or cancel (a message, or an object of one, however malformed) as the cloud
    sends it: signed, expiring ``SIGNATURE_TTL`` from now unless ``expires`` says."""
    return protocol.encode_object(signed(message, expires, signer))


def signed(message: protocol.Message | dict[str, Any], expires: float | None = None,
           signer: signing.PlanSigner = PLAN_SIGNER) -> dict[str, Any]:
    """The object of ``sign``: the message's, with its signature."""
    data = message.to_dict() if isinstance(message, protocol.Message) else message
    return signer.sign_object(data, time.time() + SIGNATURE_TTL if expires is None
                              else expires)


# The cloud under test signs with the tests' key.
signing.install(PLAN_SIGNER)


# --- the cloud ---------------------------------------------------------------------------


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
        """What was sent, decoded once its signature is verified as a gateway would, but
        as of a second before it expires: the cloud under test may run on a test clock."""
        verifier = PlanVerifier(PLAN_KEYS)
        plans = []
        for topic, payload in self.sent:
            data = protocol.parse_json(payload)
            _, signature = protocol.split_signature(data)
            plans.append(protocol.decode_object(
                verifier.verify(data, now=signature.expires - 1), topic))
        return plans


def as_principal(name: str, role: str) -> dict[str, str]:
    """Request headers of a new principal with ``role``, stored as the API would store it
    (``TOKEN`` is the bootstrap admin's)."""
    from chalicelib.access import principals
    from chalicelib.access.roles import Role

    token = principals.create(name, Role(role), "tests").token
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def call(client: Client, method: str, path: str, body: object = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """One request with the test token; returns (status, decoded JSON body)."""
    raw = b"" if body is None else (body if isinstance(body, bytes) else
                                     json.dumps(body).encode())
    response = client.http.request(method, path, headers=JSON if headers is None else headers,
                                   body=raw)
    return response.status_code, response.json_body


def up(message: protocol.Message) -> tuple[str, bytes]:
    """A gateway's message as the topic and payload it is sent with."""
    return protocol.up_topic(message.site, message.KIND), message.encode()


def machine_result(machine: str, state: str = "succeeded",
                   tasks: tuple[str, ...] = ("power.ensure",)) -> protocol.MachineResult:
    step_state = {"succeeded": "succeeded", "failed": "failed"}.get(state, "running")
    return protocol.MachineResult(machine=machine, state=state, steps=[
        protocol.StepResult(task=task, state=step_state, changed=True, message="ok",
                            started_at=1_700_000_000.0, finished_at=1_700_000_001.5)
        for task in tasks])


# --- the broker --------------------------------------------------------------------------

# mosquitto's notice for a client that keeps its session: "... as <id> (p2, c0, k60)."
_PERSISTENT_CLIENT = re.compile(rb"New client connected from \S+ as (\S+) \(p\d+, c0\b")


class Broker:
    """The session's mosquitto as one test sees it; a context manager around the test.

    On entry no retained message is left from earlier tests; on exit the persistent
    sessions this test's clients opened are ended, so a later client with the same id (a
    gateway's is its site id) starts afresh instead of resuming a session and what the
    broker queued for it. A test may stop and start it: it stays on its port, and a restart
    forgets every session and retained message (the broker runs without persistence).
    """

    def __init__(self, server: Mosquitto) -> None:
        self.server = server
        self._log_mark = 0

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> Broker:
        self.server.start()
        return self

    def __enter__(self) -> Broker:
        if not self.server.running:
            self.server.start()
        self._log_mark = self.server.log_path.stat().st_size
        clear_retained(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.server.running:  # stopped by the test (which may have failed meanwhile)
            self.server.start()
            return  # a fresh broker: nothing to end
        with open(self.server.log_path, "rb") as log:
            log.seek(self._log_mark)
            ids = {m.group(1).decode() for m in _PERSISTENT_CLIENT.finditer(log.read())}
        end_sessions(self.port, sorted(ids))


def clear_retained(port: int) -> list[str]:
    """Delete every retained message on the broker; returns their topics."""
    retained: list[str] = []
    marker = f"edgeplane-tests/sync/{uuid.uuid4().hex}"
    subscribed, synced = threading.Event(), threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == marker:
            synced.set()
        elif message.retain:
            retained.append(message.topic)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tests-{marker[-12:]}")
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    client.connect(LOOPBACK, port)
    client.loop_start()
    try:
        client.subscribe("#", qos=0)
        if not subscribed.wait(10):
            raise TimeoutError("could not subscribe to the broker's topics")
        # The broker sends the retained messages as it subscribes us, before this one.
        client.publish(marker, b"sync", qos=0)
        if not synced.wait(10):
            raise TimeoutError("the broker did not send the retained messages")
        deletions = [client.publish(topic, b"", qos=1, retain=True) for topic in retained]
        for deletion in deletions:
            deletion.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return retained


def end_sessions(port: int, client_ids: Collection[str]) -> None:
    """End the persistent sessions of these client ids: connecting with a clean session
    discards the one the broker kept (and disconnects its client, if still connected)."""
    for client_id in client_ids:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        accepted = threading.Event()
        client.on_connect = lambda *_, accepted=accepted: accepted.set()
        client.connect(LOOPBACK, port)
        while not accepted.is_set():
            if client.loop(timeout=10) != mqtt.MQTT_ERR_SUCCESS:
                raise RuntimeError(f"could not end the MQTT session of {client_id}")
        client.disconnect()


# --- IPMI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IpmiBmc:
    """One simulated IPMI BMC (user admin, password "password")."""

    port: int

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


class IpmiSimulators:
    """Simulated IPMI BMCs for the whole session: one simulator process per kind of BMC
    (power delay, faults), started when a test first asks for that kind, serving a batch of
    BMCs (8, then twice as many each time a kind runs out, up to 32). ``fresh()`` hands out
    a BMC no test has used: off, no boot override, an empty SEL."""

    FIRST_BATCH, LARGEST_BATCH = 8, 32
    START_TIMEOUT = 30.0  # a busy machine takes seconds to start Python and pyghmi

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[SimulatorProcess] = []
        self._spare: dict[tuple[float, tuple[str, ...]], list[int]] = {}
        self._batches: Counter[tuple[float, tuple[str, ...]]] = Counter()

    def fresh(self, power_delay: float = 0.0, faults: Collection[str] = ()) -> IpmiBmc:
        from edgeplane_dev.ipmi_sim import SimulatorProcess

        kind = (power_delay, tuple(sorted(faults)))
        spare = self._spare.setdefault(kind, [])
        if not spare:
            count = min(self.LARGEST_BATCH, self.FIRST_BATCH * 2 ** self._batches[kind])
            log = self.directory / f"ipmi-sim-{len(self.processes) + 1}.log"
            for attempt in range(2):
                process = SimulatorProcess(count=count, power_delay=power_delay,
                                           faults=kind[1], log_path=log)
                try:
                    self.processes.append(process.start(timeout=self.START_TIMEOUT))
                    break
                except RuntimeError:  # one of the free ports was taken meanwhile (see log)
                    if attempt:
                        raise
            self._batches[kind] += 1
            spare.extend(process.ports)
        return IpmiBmc(spare.pop(0))

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.processes.clear()


# --- Redfish: our simulator ----------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedRedfish:
    """Simulated Redfish BMCs of one test's own: ``bmcs[i]`` answers at ``urls[i]``."""

    urls: list[str]
    bmcs: list[RedfishBmc]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def bmc(self) -> RedfishBmc:
        return self.bmcs[0]


class RedfishSimulators:
    """Simulated Redfish BMCs for the whole session: one ``RedfishSimulator`` per mockup and
    options, started when a test first asks for them, serving a batch of BMCs (1, then
    twice as many each time they run out, up to 8). ``fresh()`` hands out BMCs no test has
    used, each in the state of its mockup."""

    LARGEST_BATCH = 8

    def __init__(self) -> None:
        self.simulators: list[RedfishSimulator] = []
        self._spare: dict[tuple[Path | None, BmcOptions], list[tuple[str, RedfishBmc]]] = {}
        self._batches: Counter[tuple[Path | None, BmcOptions]] = Counter()

    def fresh(self, options: BmcOptions | None = None, count: int = 1,
              mockup: Path | None = None) -> SimulatedRedfish:
        from edgeplane_dev.redfish_sim import BmcOptions, RedfishSimulator

        kind = (mockup, options or BmcOptions())
        spare = self._spare.setdefault(kind, [])
        if len(spare) < count:
            size = max(count, min(self.LARGEST_BATCH, 2 ** self._batches[kind]))
            simulator = RedfishSimulator(ports=(0,) * size, mockup=mockup, options=kind[1])
            self.simulators.append(simulator.start())
            self._batches[kind] += 1
            spare.extend(zip(simulator.urls, simulator.bmcs, strict=True))
        taken, spare[:count] = spare[:count], []
        return SimulatedRedfish([url for url, _ in taken], [bmc for _, bmc in taken])

    def stop(self) -> None:
        """Stop every simulator (at once: each takes a tenth of a second per BMC)."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.simulators))) as pool:
            list(pool.map(lambda simulator: simulator.stop(), self.simulators))
        self.simulators.clear()


# --- Redfish: sushy-tools' emulator ------------------------------------------------------------

SUSHY_USERNAME, SUSHY_PASSWORD = "admin", "emulator-pw"
# It leaks sqlite connections under many concurrent clients: a test keeps to this many.
SUSHY_MAX_CLIENTS = 10

# The systems of the session's emulator. A test that changes one has it to itself: a power
# change there takes 1-11 s, too long to undo after each test.
STARTS_OFF = FakeSystem(name="starts-off", power_state=PowerState.OFF)
STARTS_ON = FakeSystem(name="starts-on", power_state=PowerState.ON)
BOOTS = FakeSystem(name="boots", power_state=PowerState.OFF)
MEDIA = FakeSystem(name="media", power_state=PowerState.OFF)
TASKS = FakeSystem(name="tasks", power_state=PowerState.OFF)
SUSHY_SYSTEMS = (STARTS_OFF, STARTS_ON, BOOTS, MEDIA, TASKS)

# The only system of the session's other emulator (a service with one system, no auth).
PROBED = FakeSystem(name="probed", power_state=PowerState.ON)


class SushyForTest:
    """The session's sushy-tools emulator as one test sees it: ``received()`` holds the
    requests since the test began."""

    def __init__(self, emulator: SushyEmulator) -> None:
        self.emulator = emulator
        self.url = emulator.url
        self.system_ids = list(emulator.system_ids)
        self.username, self.password = SUSHY_USERNAME, SUSHY_PASSWORD
        self._seen = len(emulator.received())

    def system_id(self, system: FakeSystem) -> str:
        return self.system_ids[self.emulator.systems.index(system)]

    def received(self) -> list[tuple[str, str]]:
        return self.emulator.received()[self._seen:]


class GatewaySite:
    """One site's gateway core on simulated machines, against a broker; restartable on the
    same journal (and so the same persistent MQTT session). It pins the tests' plan key
    (``PLAN_KEYS``). ``settings``: more of the site's config (``observe_interval=0``,
    ``plan_keys``...)."""

    def __init__(self, tmp_path: Path, port: int, site: str,
                 machines: dict[str, SimulatedMachine], gateway_class: type[Gateway] = Gateway,
                 **settings: Any) -> None:
        self.site = site
        self.machines = machines
        self.gateway_class = gateway_class
        self.config = SiteConfig(
            site=site, journal=tmp_path / "journal.db",
            mqtt=MqttSettings(port=port, reconnect_min_delay=1, reconnect_max_delay=2),
            machines=tuple(
                MachineConfig(id=m, protocol=BmcProtocol.IPMI, power_timeout=5,
                              poll_interval=0.05, min_interval=0.0,
                              credentials=BmcCredentials(f"10.0.0.{i + 1}", "admin", "secret"))
                for i, m in enumerate(machines)),
            progress_interval=0.2, **{"plan_keys": PLAN_KEYS, **settings})
        self.gateway: Gateway | None = None

    def start(self) -> Gateway:
        self.gateway = self.gateway_class(
            self.config,
            transport_factory=lambda gw: MqttTransport(self.config.mqtt, self.site,
                                                       gw.subscriptions, gw.will),
            journal=Journal(self.config.journal), driver_factory=self.driver)
        self.gateway.start()
        assert self.gateway.transport.connected.wait(10)
        return self.gateway

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def driver(self, machine: MachineConfig) -> SimulatedDriver:
        return SimulatedDriver(machine.credentials, self.machines[machine.id])

    @property
    def machine(self) -> SimulatedMachine:
        """The site's machine, for a site of one."""
        (only,) = self.machines.values()
        return only
