"""Messages sent to do harm: none stops a gateway, before or after a restart, and none holds
back the cloud's ingestion.

The gateway runs on the real broker with a simulated machine; each poison message is sent to
it while it runs and again while it is offline (the broker keeps it for the site's
persistent session and delivers it at the next connection), and the gateway must still run
a plan afterwards. Plans it refuses are answered with a ``rejected`` result, which the cloud
takes as a final failure at once.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_gateway.agent import Gateway
from edge_gateway.config import MqttSettings
from edge_gateway.journal import Journal
from edge_gateway.transport import MqttTransport
from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep, ProtocolError, Result, decode
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.simulated_driver import SimulatedMachine
from tests.support import ROOT, GatewaySite, machine_result, sign, up, wait_until

SITE = "shop-0666"
MACHINE = "srv-1"
PLAN_TOPIC = protocol.plan_topic(SITE)


# --- a gateway on the real broker ----------------------------------------------------------


class CountingGateway(Gateway):
    """A gateway that keeps every payload its transport hands it: what the broker delivered."""

    def __init__(self, *args, **kwargs) -> None:
        self.received: list[bytes] = []
        super().__init__(*args, **kwargs)

    def handle_message(self, topic: str, payload: bytes) -> None:
        self.received.append(bytes(payload))
        super().handle_message(topic, payload)


class HostileSite(GatewaySite):
    """One site's gateway with one simulated machine, keeping what the broker delivered."""

    def __init__(self, tmp_path: Path, port: int) -> None:
        super().__init__(tmp_path, port, SITE, {MACHINE: SimulatedMachine()},
                         gateway_class=CountingGateway, observe_interval=0)


@pytest.fixture
def site(tmp_path, broker):
    running = HostileSite(tmp_path, broker.port)
    yield running
    running.stop()


def good_plan(execution_id: str) -> Plan:
    return Plan(site=SITE, execution_id=execution_id, rollout_id="r-good", observe=False,
                steps=[PlanStep("power.ensure", {"state": "on"}, [MACHINE]),
                       PlanStep("boot.override", {"target": "pxe"}, [MACHINE])])


def results_of(recorder: Recorder, execution_id: str, count: int = 1) -> list[Result]:
    """The results of this execution, once there are ``count``."""
    found = recorder.wait_for(
        lambda found: len([r for r in found if r.execution_id == execution_id]) >= count,
        Result)
    return [r for r in found if r.execution_id == execution_id]


def result_of(recorder: Recorder, execution_id: str) -> Result:
    return results_of(recorder, execution_id)[0]


def runs_a_plan(recorder: Recorder, execution_id: str) -> None:
    recorder.publish(PLAN_TOPIC, sign(good_plan(execution_id)))
    result = result_of(recorder, execution_id)
    assert result.state == "succeeded", result.message


# --- the poison messages ---------------------------------------------------------------------


def plan_dict(execution_id: str, /, **changes: object) -> dict:
    return {**good_plan(execution_id).to_dict(), **changes}


def encoded(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Poison:
    name: str
    payload: bytes
    rejected: str | None = None  # the execution the gateway answers as rejected
    reason: str = ""  # what the rejection (or the decode error) says

    def __str__(self) -> str:
        return self.name


def _many_steps() -> bytes:
    """A signed plan of 5000 steps that is within the size bound: refused for its steps."""
    step = {"task": "sel.clear", "params": {}, "machines": ["m"]}
    payload = sign(plan_dict(f"p-steps.{SITE}", steps=[step] * 5000))
    assert len(payload) <= protocol.MAX_MESSAGE_BYTES
    return payload


POISONS = [
    Poison("site-is-a-number", sign(plan_dict(f"p-site.{SITE}", site=123)),
           rejected=f"p-site.{SITE}", reason="field 'site' must be a site id"),
    Poison("execution-id-is-an-object",
           sign(plan_dict("x", execution_id={"$gt": ""})),
           reason="field 'execution_id' must be an execution id"),
    Poison("nested-100000-deep", b"[" * 100_000 + b"]" * 100_000,
           reason="nested more than 32 levels deep"),
    Poison("5000-steps", _many_steps(), rejected=f"p-steps.{SITE}",
           reason="plan has 5000 steps; at most 50"),
    Poison("10-MB", encoded(plan_dict(f"p-big.{SITE}", rollout_id="x" * 10_000_000)),
           reason="at most 262144"),
    Poison("invalid-utf-8", b'{"v":1,"kind":"plan","site":"\xff\xfe","execution_id":"a"}',
           reason="not UTF-8"),
    Poison("json-array", b"[" + good_plan(f"p-array.{SITE}").encode() + b"]",
           reason="not a JSON object"),
]


@pytest.mark.parametrize("poison", POISONS, ids=str)
def test_the_contract_refuses_each_poison_naming_what_is_wrong(poison):
    with pytest.raises(ProtocolError, match=re.escape(poison.reason)) as refused:
        decode(poison.payload, PLAN_TOPIC)
    assert refused.value.execution_id == poison.rejected
    assert len(str(refused.value)) < 500, "an error shows a bounded excerpt of what came"


@pytest.mark.parametrize("poison", POISONS, ids=str)
def test_a_poison_message_cannot_stop_the_gateway_even_after_a_restart(site, recorder,
                                                                       poison):
    site.start()
    recorder.publish(PLAN_TOPIC, poison.payload)
    runs_a_plan(recorder, "r-1.shop-0666")  # sent after the poison, on the same link
    if poison.rejected:
        rejected = result_of(recorder, poison.rejected)
        assert rejected.state == "rejected" and rejected.machines == []
        assert poison.reason in rejected.message

    site.stop()  # the broker keeps what comes now for the site's persistent session
    recorder.publish(PLAN_TOPIC, poison.payload)
    gateway = site.start()  # same journal: the poison is delivered again at once
    wait_until(lambda: poison.payload in gateway.received, what="the poison delivered again")
    runs_a_plan(recorder, "r-2.shop-0666")
    if poison.rejected:  # the copy gets the journaled answer again
        first, again = results_of(recorder, poison.rejected, count=2)[-2:]
        assert first.encode() == again.encode()

    site.stop()
    gateway = site.start()
    runs_a_plan(recorder, "r-3.shop-0666")
    assert poison.payload not in gateway.received, "acknowledged: not delivered again"


# --- plans the gateway refuses ---------------------------------------------------------------


def test_refused_plans_are_answered_at_once_with_a_rejected_result(site, recorder):
    assert site.start().wait_for_inventory(10)
    calls = list(site.machine.calls)
    refused = {
        f"p-task.{SITE}": (plan_dict(f"p-task.{SITE}", steps=[
            {"task": "power.toggle", "params": {}, "machines": [MACHINE]}]),
            "plan step 0: unknown task 'power.toggle'"),
        f"p-params.{SITE}": (plan_dict(f"p-params.{SITE}", steps=[
            {"task": "power.ensure", "params": {"state": "sideways"}, "machines": [MACHINE]}]),
            "parameter 'state' is 'sideways'; allowed: on, off"),
        f"p-machines.{SITE}": (plan_dict(f"p-machines.{SITE}", steps=[
            {"task": "power.cycle", "params": {}, "machines": ["../../etc"]}]),
            "field 'machines'[0] must be a machine id"),
        f"p-version.{SITE}": (plan_dict(f"p-version.{SITE}", v=2),
                              "protocol version 2 is not supported"),
        "p-site.shop-0667": (plan_dict("p-site.shop-0667", site="shop-0667"),
                             "plan message for site 'shop-0667' arrived on topic"),
    }
    for data, _ in refused.values():
        recorder.publish(PLAN_TOPIC, sign(data))
    for execution_id, (_, reason) in refused.items():
        result = result_of(recorder, execution_id)
        assert (result.site, result.state) == (SITE, "rejected")
        assert result.message.startswith("the site's gateway refused the plan: ")
        assert reason in result.message
    assert site.machine.calls == calls, "nothing of a refused plan ran"
    runs_a_plan(recorder, "r-1.shop-0666")


def test_a_5000_step_plan_is_rejected_before_any_step_runs(site, recorder):
    assert site.start().wait_for_inventory(10)
    calls = list(site.machine.calls)
    recorder.publish(PLAN_TOPIC, _many_steps())
    result = result_of(recorder, f"p-steps.{SITE}")
    assert result.state == "rejected" and "5000 steps" in result.message
    assert site.machine.calls == calls
    assert site.gateway.idle.is_set(), "nothing was queued"


def test_a_malformed_copy_of_an_accepted_plan_does_not_end_it(site, recorder):
    site.start()
    runs_a_plan(recorder, "r-1.shop-0666")
    copy = sign(plan_dict("r-1.shop-0666", steps=[{"task": "power.toggle", "params": {},
                                                   "machines": [MACHINE]}]))
    recorder.publish(PLAN_TOPIC, copy)
    first, again = results_of(recorder, "r-1.shop-0666", count=2)[-2:]
    assert (first.state, again.state) == ("succeeded", "succeeded")
    assert first.encode() == again.encode(), "the journaled result, sent again"


def test_a_journaled_plan_the_gateway_now_refuses_is_rejected_at_start(site, recorder):
    journal = Journal(site.config.journal)  # as an older gateway without bounds left it
    journal.accept_plan(f"p-steps.{SITE}", _many_steps())
    journal.close()
    site.start()
    result = result_of(recorder, f"p-steps.{SITE}")
    assert result.state == "rejected" and "5000 steps" in result.message
    runs_a_plan(recorder, "r-1.shop-0666")


# --- nothing escapes the MQTT callbacks ---------------------------------------------------------


def test_an_unexpected_error_costs_the_message_not_the_link(site, recorder, caplog):
    gateway = site.start()
    accept = gateway.journal.accept_plan
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def failing_once(execution_id: str, payload: bytes) -> bool:
        error = next(failures, None)
        if error is not None:
            raise error
        return accept(execution_id, payload)

    gateway.journal.accept_plan = failing_once
    lost = sign(good_plan("r-lost.shop-0666"))
    with caplog.at_level(logging.ERROR, logger="edge_gateway.agent"):
        recorder.publish(PLAN_TOPIC, lost)
        runs_a_plan(recorder, "r-1.shop-0666")
    assert re.search(r"handling a message on \S+/down/plan'? failed", caplog.text)
    site.stop()
    gateway = site.start()
    runs_a_plan(recorder, "r-2.shop-0666")
    assert lost not in gateway.received, "acknowledged although its handling failed"


def test_the_transport_acknowledges_a_message_its_handler_fails_on(broker, recorder):
    topic = protocol.plan_topic("shop-0668")
    received: list[bytes] = []
    marker = threading.Event()

    def handler(_topic: str, payload: bytes) -> None:
        received.append(payload)
        if payload == b"marker":
            marker.set()
        raise RuntimeError("a bug in the handler")

    def connect() -> MqttTransport:
        transport = MqttTransport(
            MqttSettings(port=broker.port), "shop-0668", [protocol.down_filter("shop-0668")],
            lambda session: (protocol.up_topic("shop-0668", "presence"), protocol.Presence(
                site="shop-0668", online=False, session=session).encode()))
        transport.start(lambda: None, handler, lambda key: None)
        assert transport.connected.wait(10)
        return transport

    transport = connect()
    recorder.publish(topic, b"first")
    recorder.publish(topic, b"second")
    wait_until(lambda: received == [b"first", b"second"], what="both messages handled")
    assert transport._client._thread.is_alive(), "paho's network thread goes on"
    transport.stop()
    transport = connect()
    try:
        recorder.publish(topic, b"marker")
        assert marker.wait(10)
        assert received == [b"first", b"second", b"marker"], "nothing was delivered twice"
    finally:
        transport.stop()


# --- the cloud: rejected results --------------------------------------------------------------


POWER_ON = [{"task": "power.ensure", "params": {"state": "on"}}]


def make_sites(count: int, first: int = 0) -> list[str]:
    from chalicelib.models import Machine, Site

    ids = [f"shop-{n:03d}" for n in range(first, first + count)]
    for site_id in ids:
        Site(site_id, name=site_id, tags=["fleet"], timezone="UTC", online=True).save()
        Machine(site_id, "srv-1", protocol="ipmi", address="10.0.0.1",
                capabilities=["power"]).save()
    return ids


def start_rollout(published, sites: list[str], **policy: object) -> str:
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn

    body = RolloutIn.model_validate({"sites": sites, "steps": POWER_ON, "policy": policy})
    return create.create(body, published).rollout.rollout_id


def rejected(rollout_id: str, site_id: str) -> tuple[str, bytes]:
    from chalicelib.models import Execution

    return up(Result(site=site_id, execution_id=Execution.make_id(rollout_id, site_id),
                     seq=1, state="rejected",
                     message="the site's gateway refused the plan: plan has 5000 steps; "
                             "at most 50"))


def test_a_rejected_result_fails_the_execution_at_once_and_is_not_retried(aws, published):
    from chalicelib import ingest
    from chalicelib.models import Execution, Rollout
    from chalicelib.rollouts import wave_counters

    sites = make_sites(2)
    rollout_id = start_rollout(published, sites, retries={"max": 3, "backoff": 10})
    ingest.handle_messages([rejected(rollout_id, sites[0])])
    execution = Execution.get(rollout_id, sites[0], consistent_read=True)
    assert execution.state == "rejected", "final at once: not queued for a retry"
    assert execution.message.endswith("plan has 5000 steps; at most 50")
    assert execution.finished_at is not None
    rollout = Rollout.get(rollout_id, consistent_read=True)
    assert (rollout.done, rollout.state_counts.as_dict().get("rejected")) == (1, 1)
    assert wave_counters.from_rollout(rollout, 0).failed == 1, "counted as failed"
    ingest.handle_message(*up(Result(site=sites[1], execution_id=Execution.make_id(
        rollout_id, sites[1]), seq=1, machines=[machine_result("srv-1")])))
    assert Rollout.get(rollout_id, consistent_read=True).state == "failed"


def test_a_rejected_canary_aborts_the_rollout(aws, published):
    from chalicelib import ingest
    from chalicelib.models import Execution, Rollout

    sites = make_sites(4)
    rollout_id = start_rollout(published, sites, canary={"sites": 1})
    ingest.handle_messages([rejected(rollout_id, sites[0])])
    rollout = Rollout.get(rollout_id, consistent_read=True)
    assert rollout.state == "aborted" and "the canary failed" in rollout.message
    assert {Execution.get(rollout_id, s).state for s in sites[1:]} == {"canceled"}


# --- the cloud: malformed reports do not hold a batch ------------------------------------------


def nested_record(site_id: str, execution_id: str, depth: int = 100_000) -> str:
    """An SQS record of the IoT rule whose report nests ``depth`` levels deep."""
    head = json.dumps({"topic": protocol.up_topic(site_id, "result"), "v": 1,
                       "kind": "result", "site": site_id, "execution_id": execution_id})
    return head[:-1] + ', "machines": ' + "[" * depth + "]" * depth + "}"


def test_deeply_nested_reports_are_dropped_once_without_holding_their_batch(
        aws, published, monkeypatch):
    from chalicelib import ingest
    from chalicelib.models import Execution

    (site_id,) = make_sites(1)
    rollout_id = start_rollout(published, [site_id])
    execution_id = Execution.make_id(rollout_id, site_id)
    one_by_one: list[str] = []
    monkeypatch.setattr(ingest, "handle_message",
                        lambda topic, payload, clock=None: one_by_one.append(topic))
    genuine = Result(site=site_id, execution_id=execution_id, seq=2,
                     machines=[machine_result("srv-1")], message="1 machines succeeded")
    topic, payload = up(genuine)
    bodies = [nested_record(site_id, execution_id) for _ in range(80)]
    bodies.append(json.dumps({**json.loads(payload), "topic": topic}))
    dropped = ingest.DROPPED_REPORTS.total()

    failed = ingest.handle_sqs_records((f"m{index}", body) for index, body in enumerate(bodies))

    assert failed == [], "a malformed report is dropped, not handed back to the queue"
    assert Execution.get(rollout_id, site_id, consistent_read=True).state == "succeeded"
    assert ingest.DROPPED_REPORTS.total() - dropped == 80
    assert one_by_one == [], "the batch passed at once: no message was tried again"


def test_malformed_reports_in_a_bridge_batch_are_dropped_and_the_rest_applied(
        aws, published, caplog):
    from chalicelib import ingest
    from chalicelib.models import Execution

    (site_id,) = make_sites(1)
    rollout_id = start_rollout(published, [site_id])
    execution_id = Execution.make_id(rollout_id, site_id)
    topic = protocol.up_topic(site_id, "result")
    hostile = [
        (topic, b'{"v":1,"kind":"result","machines":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        (topic, b'{"v":1,"kind":"result","site":"' + b"x" * 300_000 + b'"}'),
        (topic, encoded({"v": 1, "kind": "result", "site": site_id, "execution_id": {"a": 1}})),
        (topic, encoded({**Result(site=site_id, execution_id=execution_id).to_dict(),
                         "seq": 10**30})),
        (topic, b'{"v":1,"kind":"result","site":"' + site_id.encode() + b'","ts":NaN}'),
        (topic, b"\xff\xfe"),
        (protocol.up_topic(site_id, "presence"), b'{"v":1,"kind":"presence","site":"'
         + site_id.encode() + b'","session":1e999}'),
    ]
    genuine = up(Result(site=site_id, execution_id=execution_id, seq=2,
                        machines=[machine_result("srv-1")]))
    dropped = ingest.DROPPED_REPORTS["malformed"]
    with caplog.at_level(logging.ERROR, logger="chalicelib.ingest"):
        ingest.handle_messages([*hostile, genuine])
    assert Execution.get(rollout_id, site_id, consistent_read=True).state == "succeeded"
    assert ingest.DROPPED_REPORTS["malformed"] - dropped == len(hostile)
    drops = [r for r in caplog.records if getattr(r, "dropped_reports", 0)]
    assert len(drops) == len(hostile) and all(not r.exc_info for r in drops)


# --- the bounds, as documented ------------------------------------------------------------------


def test_the_documented_bounds_are_the_contracts():
    text = (ROOT / "docs" / "protocol.md").read_text()
    rows = re.findall(r"^\| `(M(?:AX|IN)_[A-Z_]+)` \| ([^|]+) \|", text, flags=re.MULTILINE)
    documented = {name: value.split(" (")[0].strip() for name, value in rows}
    defined = {name: getattr(protocol, name) for name in dir(protocol)
               if name.startswith(("MAX_", "MIN_"))}
    assert set(documented) == set(defined)
    for name, value in defined.items():
        shown = documented[name].replace("2^53 − 1", str(2**53 - 1))
        assert float(shown) == value, f"{name}: {documented[name]} in the doc, {value} here"
