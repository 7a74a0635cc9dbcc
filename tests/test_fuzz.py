"""Generated messages against both receivers: the gateway's message handler and the cloud's
ingestion. Random JSON-ish documents, random bytes and mutations of valid plans, cancels and
reports (a field set to anything, removed, nested past the bound, repeated past it; the
bytes cut, flipped or wrapped); none may crash either side, and each must still do its work
afterwards. Plans and cancels are changed after they were signed (what the signature check
refuses) and signed after they were changed (what gets past it to the contract's checks).

"Crash" means more than an exception out of the handler (the handlers catch everything):
it is any error logged with a traceback, i.e. anything that got past the contract's checks
and failed further in. Runs are derandomized, so CI sees the same messages every time.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_gateway.agent import Gateway
from edge_gateway.journal import Journal
from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep
from tests.support import machine_result, sign, signed, up, wait_until
from tests.test_hostile_messages import (
    MACHINE,
    PLAN_TOPIC,
    SITE,
    HostileSite,
    make_sites,
    runs_a_plan,
    start_rollout,
)

CANCEL_TOPIC = protocol.cancel_topic(SITE)
GHOSTS = ["ghost-1", "ghost-2", "ghost-3"]  # machines the site does not have: a plan fails fast
FIELD_NAMES = ["v", "kind", "site", "id", "ts", "execution_id", "rollout_id", "steps", "task",
               "params", "machines", "machine", "state", "message", "seq", "summary", "index",
               "online", "session", "detail", "observe", "expires_at", "data", "retryable"]


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


class Crashes(logging.Handler):
    """Keeps every record logged with a traceback: what got past the contract and failed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture
def site(tmp_path, broker) -> Iterator[HostileSite]:
    running = HostileSite(tmp_path, broker.port)
    yield running
    running.stop()


@pytest.fixture
def crashes() -> Iterator[Crashes]:
    handler = Crashes()
    loggers = [logging.getLogger(name) for name in ("edge_gateway", "chalicelib")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)


# --- what is generated ---------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
           | st.text(max_size=12)
           | st.sampled_from(["", "on", "pxe", "srv-1\n", "../x", "\x00", "\udc00", "x" * 300,
                              "r-1.shop-0666", "shop-0666", "rejected", "failed", "ccfu"]))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


ODD_VALUES = [None, True, False, 0, -1, 2**70, -2**63, 1.5, 1e308, -0.0, float("nan"),
              float("inf"), "", "on", "pxe", "srv-1\n", "../x", "\x00", "\udc00", "x" * 300,
              "r-1.shop-0666", "shop-0666", "rejected", "failed", "ccfu", [], {}]


def random_text(rng: random.Random) -> str:
    return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(12)))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A JSON-ish value: odd scalars, random text (any code point), small containers."""
    roll = rng.random()
    if depth >= 3 or roll < 0.5:
        return copy.copy(rng.choice(ODD_VALUES))
    if roll < 0.7:
        return random_text(rng)
    if roll < 0.85:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELD_NAMES) if rng.random() < 0.5 else random_text(rng):
            random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _spots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a document, at every depth."""
    found: list[tuple[Any, Any]] = []
    keys = value.keys() if isinstance(value, dict) else \
        range(len(value)) if isinstance(value, list) else ()
    for key in list(keys):
        found.append((value, key))
        found += _spots(value[key])
    return found


def mutate(doc: dict[str, Any], rng: random.Random, then_sign: bool = False) -> bytes:
    """``doc`` changed one to three times (a field set to anything, removed, nested past the
    bound, repeated past it, an unknown one added), signed if ``then_sign`` (unless it holds
    what no signer can encode), then perhaps its bytes damaged."""
    for _ in range(rng.randint(1, 3)):
        spots = _spots(doc)
        if not spots:
            break
        container, key = rng.choice(spots)
        value = container[key]
        change = rng.choice(["set", "set", "delete", "deepen", "repeat", "add"])
        if change == "set":
            container[key] = random_json(rng)
        elif change == "delete":
            del container[key]
        elif change == "deepen":
            depth = protocol.MAX_DEPTH + rng.randint(-8, 8)
            for _ in range(depth):
                value = [value]
            container[key] = value
        elif change == "repeat":
            times = rng.randint(2, 60)
            container[key] = value * times if isinstance(value, list | str) else [value] * times
        elif isinstance(container, dict):
            container[rng.choice(FIELD_NAMES)] = random_json(rng)
    if then_sign:
        try:
            doc = signed(doc)
        except UnicodeEncodeError:  # half of a surrogate pair: it goes unsigned
            pass
    payload = encode(doc)
    damage = rng.choice(["none"] * 6 + ["cut", "flip", "wrap"])
    if damage == "cut":
        payload = payload[:rng.randint(0, len(payload))]
    elif damage == "flip" and payload:
        at = rng.randrange(len(payload))
        payload = payload[:at] + bytes([rng.randrange(256)]) + payload[at + 1:]
    elif damage == "wrap":
        payload = b"[" + payload + b"]"
    return payload


STEPS = [
    ("power.ensure", {"state": "on"}),
    ("power.ensure", {"state": "off", "graceful": False, "graceful_timeout": "30"}),
    ("power.cycle", {}),
    ("boot.override", {"target": "pxe", "mode": "once", "firmware_mode": "uefi"}),
    ("bios.apply", {"attributes": {"ProcTurboMode": "Disabled", "ProcCoreDisable": 2},
                    "reboot": True}),
    ("media.insert", {"image": "http://images.example/boot.iso", "boot": "true"}),
    ("sel.collect", {"limit": 20}),
    ("wait.for", {"power": "on", "timeout": 5}),
    ("firmware.update", {"image": "https://images.example/bmc.bin", "version": "1.2"}),
]


def plan_doc(rng: random.Random) -> dict[str, Any]:
    """A valid plan for the site's ghost machines (it fails at once: no BMC is touched)."""
    number = rng.randrange(10**9)
    machines = rng.sample(GHOSTS, rng.randint(1, len(GHOSTS)))
    return Plan(site=SITE, id=f"m-{number}", ts=1_800_000_000.0,
                execution_id=f"r-{number}.{SITE}", rollout_id=f"r-{number}",
                steps=[PlanStep(task, dict(params), list(machines))
                       for task, params in rng.choices(STEPS, k=rng.randint(1, 4))],
                expires_at=rng.choice([None, 1_000_000.0, 4e9]),
                detail=rng.choice(["full", "outcomes"])).to_dict()


def cancel_doc(rng: random.Random) -> dict[str, Any]:
    number = rng.randrange(10**9)
    return protocol.Cancel(site=SITE, id=f"m-{number}", ts=1_800_000_000.0,
                           execution_id=f"r-{number}.{SITE}", reason="rollout canceled").to_dict()


# One draw seeds each message's mutations: reproducible, and cheaper than a draw per choice.
RANDOMS = st.integers(0, 2**64 - 1).map(random.Random)
SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats()
           | st.text(max_size=12))
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4),
    max_leaves=8)


TOPICS = [PLAN_TOPIC, CANCEL_TOPIC, protocol.plan_topic("shop-0777"),
          protocol.up_topic(SITE, "result"), f"{protocol.TOPIC_ROOT}/{SITE}/down/presence",
          f"{protocol.TOPIC_ROOT}/+/down/plan", "", "edgeplane", PLAN_TOPIC + "/more"]
DOWN_TOPICS = [PLAN_TOPIC, CANCEL_TOPIC, f"{protocol.TOPIC_ROOT}/{SITE}/down/presence",
               f"{protocol.TOPIC_ROOT}/{SITE}/down/inventory"]


def gateway_messages(topics: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.sampled_from(topics), st.binary(max_size=64)),
        st.tuples(st.sampled_from(topics), JSON.map(encode)),
        RANDOMS.map(lambda rng: (PLAN_TOPIC, mutate(signed(plan_doc(rng)), rng))),
        RANDOMS.map(lambda rng: (PLAN_TOPIC, mutate(plan_doc(rng), rng, then_sign=True))),
        RANDOMS.map(lambda rng: (CANCEL_TOPIC, mutate(cancel_doc(rng), rng,
                                                      then_sign=rng.random() < 0.5))),
        RANDOMS.map(lambda rng: (PLAN_TOPIC, sign(plan_doc(rng)))),
    )


# --- the gateway ---------------------------------------------------------------------------


class RecordingTransport:
    """A transport that keeps what the gateway publishes; the broker acknowledges at once."""

    session = 1.0

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self._delivered: Any = None

    def start(self, on_connect: Any, on_message: Any, on_delivered: Any) -> None:
        self._delivered = on_delivered
        on_connect()

    def publish(self, topic: str, payload: bytes, key: str, retain: bool = False) -> None:
        self.published.append((topic, payload))
        self._delivered(key)

    def stop(self) -> None:
        pass

    def results(self) -> list[protocol.Result]:
        return [protocol.decode(payload, topic) for topic, payload in list(self.published)
                if topic.endswith("/up/result")]


def test_the_gateway_handles_10000_generated_messages_and_still_runs_a_plan(
        tmp_path, crashes):
    site = HostileSite(tmp_path, port=1)  # its configuration and simulated machine
    transport = RecordingTransport()
    gateway = Gateway(site.config, transport_factory=lambda gw: transport,
                      journal=Journal(site.config.journal),
                      driver_factory=site.driver)
    gateway.start()
    handled = 0

    @fuzz_settings(examples=1000)
    @given(st.lists(gateway_messages(TOPICS), min_size=10, max_size=10))
    def handle(batch: list[tuple[str, bytes]]) -> None:
        nonlocal handled
        for topic, payload in batch:
            gateway.handle_message(topic, payload)
            handled += 1

    try:
        handle()
        assert handled >= 10_000
        assert gateway.idle.wait(60), "every plan accepted has run"
        gateway.handle_message(PLAN_TOPIC, sign(Plan(
            site=SITE, execution_id=f"r-final.{SITE}", observe=False,
            steps=[PlanStep("power.ensure", {"state": "on"}, [MACHINE])])))
        final = wait_until(lambda: [r for r in transport.results()
                                    if r.execution_id == f"r-final.{SITE}"], timeout=30)
        assert final[0].state == "succeeded", final[0].message
    finally:
        gateway.stop()
    outcomes = Counter(r.state for r in transport.results())
    assert outcomes["rejected"] >= 500, f"refused plans are answered: {outcomes}"
    assert outcomes["failed"] + outcomes["expired"] >= 500, f"plans were run: {outcomes}"
    assert crashes.records == [], [r.getMessage() for r in crashes.records[:5]]


def test_the_gateway_takes_generated_messages_from_the_broker_and_still_runs_a_plan(
        site, recorder, crashes):
    gateway = site.start()
    sent = 0

    @fuzz_settings(examples=30)
    @given(st.lists(gateway_messages(DOWN_TOPICS), min_size=10, max_size=10))
    def publish(batch: list[tuple[str, bytes]]) -> None:
        nonlocal sent
        for topic, payload in batch:
            recorder.publish(topic, payload)
            sent += 1

    publish()
    assert sent >= 300
    runs_a_plan(recorder, f"r-final.{SITE}")  # published last: handled last
    assert len(gateway.received) >= sent
    assert gateway.transport.connected.is_set()
    assert crashes.records == [], [r.getMessage() for r in crashes.records[:5]]


# --- the cloud ---------------------------------------------------------------------------------


def test_ingestion_handles_10000_generated_reports_and_still_applies_a_genuine_one(
        aws, published, crashes):
    from chalicelib import ingest
    from chalicelib.models import Execution

    sites = make_sites(2)
    rollout_id = start_rollout(published, sites)
    executions = [Execution.make_id(rollout_id, s, attempt) for s in sites
                  for attempt in (1, 2)]

    def machines(rng: random.Random) -> list[protocol.MachineResult]:
        return [machine_result(m, rng.choice(["succeeded", "failed", "running"]))
                for m in rng.sample(["srv-1", "srv-2"], rng.randint(0, 2))]

    def report(rng: random.Random) -> protocol.Message:
        site, execution_id = rng.choice(sites), rng.choice(executions)
        sent = {"site": site, "id": f"m-{rng.randrange(10**6)}", "ts": rng.uniform(0, 2e9)}
        kind = rng.choice(["presence", "inventory", "progress", "result", "observed"])
        if kind == "presence":
            return protocol.Presence(**sent, online=rng.random() < 0.5,
                                     session=rng.uniform(0, 1e10))
        if kind == "inventory":
            return protocol.Inventory(**sent, machines=[protocol.MachineReport(
                id="srv-1", protocol="ipmi", address="10.0.0.1", capabilities=["power"])])
        if kind == "progress":
            return protocol.Progress(**sent, execution_id=execution_id,
                                     seq=rng.randint(0, 10), machines=machines(rng))
        if kind == "result":
            state = rng.choice([*protocol.ExecutionState, "bogus"])
            return protocol.Result(**sent, execution_id=execution_id, state=state,
                                   seq=rng.randint(0, 10), machines=machines(rng),
                                   message=f"{site} {state}")
        return protocol.Observed(**sent, trigger="plan", execution_id=execution_id,
                                 machines=[protocol.MachineObservation("srv-1", power="on")])

    def hostile(rng: random.Random) -> tuple[str, bytes]:
        message = report(rng)
        topic, payload = up(message)
        choice = rng.choice(["mutated"] * 4 + ["valid"] * 2 + ["json", "topic"])
        if choice == "mutated":
            payload = mutate(message.to_dict(), rng)
        elif choice == "json":
            payload = encode(random_json(rng))
        elif choice == "topic":
            topic = rng.choice(TOPICS + [protocol.up_topic(sites[1], "result")])
        return topic, payload

    messages = st.one_of(RANDOMS.map(hostile), RANDOMS.map(hostile), RANDOMS.map(hostile),
                         st.tuples(st.sampled_from(TOPICS), st.binary(max_size=64)),
                         st.tuples(st.just(protocol.up_topic(sites[0], "result")),
                                   JSON.map(encode)))

    handled = 0
    unreadable = ingest.DROPPED_REPORTS["unreadable"]

    @fuzz_settings(examples=500)
    @given(st.lists(messages, min_size=20, max_size=20))
    def ingest_batch(batch: list[tuple[str, bytes]]) -> None:
        nonlocal handled
        ingest.handle_messages(batch)
        handled += len(batch)

    malformed = ingest.DROPPED_REPORTS["malformed"]
    ingest_batch()
    assert handled >= 10_000
    dropped = ingest.DROPPED_REPORTS["malformed"] - malformed
    assert 5_000 <= dropped <= handled - 1_000, "both paths are taken: dropped and applied"
    assert ingest.DROPPED_REPORTS["unreadable"] == unreadable
    assert crashes.records == [], [r.getMessage() for r in crashes.records[:5]]

    (fresh,) = make_sites(1, first=2)  # a site of its own: a new rollout
    second = start_rollout(published, [fresh])
    ingest.handle_messages([up(protocol.Result(
        site=fresh, execution_id=Execution.make_id(second, fresh), seq=1,
        machines=[machine_result("srv-1")]))])
    assert Execution.get(second, fresh, consistent_read=True).state == "succeeded"
