"""Reports larger than one message: sites of hundreds of machines asking for full reports.

A gateway publishes no message over ``MAX_REPORT_BYTES`` (AWS IoT Core refuses one over
128 KB): a result too large goes in parts, progress and observed state in several
messages, and one machine's output too large for a message is trimmed and says so. The
cloud stores the parts as they come (twice, in any order, again after the end) and ends the
execution once, when it has every part.

End to end on the real broker: the gateway with simulated BMCs, mosquitto, the local bridge
(the IoT rule's stand-in) and the ingest handler on moto. The cloud's side of parts alone
(duplicates, order, replays, malformed parts, another site's identity) against moto.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from edge_gateway.reporting import (
    MAX_KEPT_MESSAGE,
    fit_machine,
    progress_groups,
    split_inventory,
    split_observed,
    split_result,
)
from edgeplane import protocol
from edgeplane.protocol import (
    MAX_REPORT_BYTES,
    Inventory,
    MachineObservation,
    MachineReport,
    MachineResult,
    Observed,
    Presence,
    Progress,
    Result,
    StepResult,
)
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.simulated_driver import LogEntry, SimulatedMachine
from tests.support import GatewaySite, up, wait_until

SITE = "shop-0100"
STEPS = [{"task": "power.ensure", "params": {"state": "on"}},
         {"task": "boot.override", "params": {"target": "pxe"}},
         {"task": "inventory.collect"},
         {"task": "health.check"},
         {"task": "sel.collect", "params": {"limit": 10000}}]
TASKS = [step["task"] for step in STEPS]
CHATTY = "srv-7"  # a machine whose event log is larger than a message


# --- the gateway's side, alone ---------------------------------------------------------------


def machine(name: str, data_bytes: int = 1500, state: str = "succeeded",
            retryable: bool = False) -> MachineResult:
    """A machine's full result: power on, then a read task that found ``data_bytes``."""
    found = {"entries": [{"id": str(n), "message": "x" * 90} for n in range(data_bytes // 100)]}
    read = StepResult("sel.collect", state, message=f"{len(found['entries'])} entries",
                      started_at=2.0, finished_at=3.0,
                      data=found if state == "succeeded" else None, retryable=retryable)
    return MachineResult(name, state, [
        StepResult("power.ensure", "succeeded", True, "powered on (was off)", 1.0, 2.0), read])


def test_a_result_too_large_goes_in_parts_that_each_fit_and_hold_every_machine_once():
    whole = Result(site=SITE, execution_id="r-1.shop-0100", seq=4, message="300 succeeded",
                   machines=[machine(f"srv-{n}") for n in range(1, 301)])
    assert len(whole.encode()) > MAX_REPORT_BYTES
    parts = split_result(whole)
    total = len(parts)
    largest = max(protocol.encoded_size(m) for m in whole.machines)
    for number, part in enumerate(parts, start=1):
        payload = part.encode()
        assert len(payload) <= MAX_REPORT_BYTES
        if number < total:
            assert len(payload) > MAX_REPORT_BYTES - largest, "as few parts as fit"
        decoded = protocol.decode(payload, protocol.up_topic(SITE, "result"))
        assert (decoded.part, decoded.parts, decoded.seq, decoded.state, decoded.message) == \
            (number, total, 4, "succeeded", "300 succeeded")
    assert total > 1 and len({part.id for part in parts}) == total
    shuffled = random.Random(7).sample(parts + parts[:2], 6)
    assert protocol.join_parts(shuffled) == dataclasses.replace(whole, id=parts[0].id)
    assert protocol.join_parts(parts[1:]) is None, "a part missing: no whole yet"
    assert split_result(dataclasses.replace(whole, machines=whole.machines[:10])) == \
        [dataclasses.replace(whole, machines=whole.machines[:10])], "one that fits is whole"


@pytest.mark.parametrize("seed", range(5))
def test_every_message_fits_its_budget_however_its_machines_are_sized(seed):
    """Packed to the byte: machines of any size, in messages of any kind."""
    rng = random.Random(seed)
    budget = rng.randrange(6_000, 20_000)
    machines = [machine(f"srv-{n}", data_bytes=rng.randrange(0, 3_000))
                for n in range(rng.randrange(50, 200))]
    progress = Progress(site=SITE, execution_id="r-1.shop-0100", machines=machines)
    for group in progress_groups(progress, budget):
        sent = dataclasses.replace(progress, seq=rng.randrange(protocol.MAX_COUNT),
                                   machines=group)
        assert len(sent.encode()) <= budget
    result = Result(site=SITE, execution_id="r-1.shop-0100", seq=3, machines=machines)
    parts = split_result(result, budget)
    assert all(len(part.encode()) <= budget for part in parts)
    assert [m.machine for m in protocol.join_parts(parts).machines] == \
        [m.machine for m in machines]


def test_one_machine_too_large_for_a_message_keeps_its_outcome_and_says_what_it_lost():
    chatty = machine(CHATTY, data_bytes=600_000)
    long_failure = StepResult("bios.apply", "failed", message="BMC said: " + "e" * 200_000,
                              retryable=True)
    chatty = dataclasses.replace(chatty, steps=[*chatty.steps, long_failure])
    fitted = fit_machine(chatty, 100_000)
    assert protocol.encoded_size(fitted) <= 100_000
    on, read, failed = fitted.steps
    assert on == chatty.steps[0], "a step with little output is kept whole"
    assert (read.state, read.data, read.trimmed) == (
        "succeeded", None, {"data": protocol.encoded_size(chatty.steps[1].data)})
    assert read.message == chatty.steps[1].message
    assert (failed.state, failed.retryable, len(failed.message)) == \
        ("failed", True, MAX_KEPT_MESSAGE)
    assert failed.message.startswith("BMC said: eee") and failed.message.endswith("...")
    assert failed.trimmed == {"message": len(long_failure.message) - MAX_KEPT_MESSAGE + 3}
    assert fit_machine(machine("srv-1"), 100_000) == machine("srv-1")


def test_progress_observed_state_and_inventory_go_in_messages_that_each_fit():
    machines = [machine(f"srv-{n}") for n in range(1, 301)]
    groups = progress_groups(Progress(site=SITE, execution_id="r-1.shop-0100",
                                      machines=machines))
    assert [m for group in groups for m in group] == machines and len(groups) > 1
    for group in groups:
        largest = Progress(site=SITE, execution_id="r-1.shop-0100", seq=protocol.MAX_COUNT,
                           machines=group)
        assert len(largest.encode()) <= MAX_REPORT_BYTES

    bios = {f"Attribute{n:05d}": "x" * 40 for n in range(4000)}  # 200 KB of BIOS
    observed = Observed(site=SITE, execution_id="r-1.shop-0100", trigger="plan", machines=[
        MachineObservation("srv-1", power="on", bios=bios),
        *[MachineObservation(f"srv-{n}", power="on", bios={"A": "1"}) for n in range(2, 5)]])
    (alone,) = split_observed(observed)
    lost = alone.machines[0]
    assert (lost.power, lost.bios) == ("on", None)
    assert lost.error == f"bios left out: {protocol.encoded_size(bios)} bytes, over what " \
                         "one report holds"
    assert alone.machines[1:] == observed.machines[1:]

    reports = [MachineReport(f"srv-{n}", "redfish", f"https://10.0.{n // 250}.{n % 250}",
                             ["power", "boot"], "Contoso", "Rack " + "R" * 200, f"SN{n}")
               for n in range(1, 1001)]
    inventory = Inventory(site=SITE, gateway_version="1.0", machines=reports)
    parts = split_inventory(inventory)
    assert len(parts) == 3 and all(len(p.encode()) <= MAX_REPORT_BYTES for p in parts)
    assert [m for p in parts for m in p.machines] == reports
    assert [(p.part, p.parts) for p in parts] == [(1, 3), (2, 3), (3, 3)]


# --- end to end: a site of many machines, the broker, the bridge, the cloud --------------------


class Ingest:
    """The cloud's ingestion as the bridge calls it, keeping the size and kind of every
    message it stored."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[tuple[str, bytes]]) -> None:
        from chalicelib.ingest import handle_messages

        handle_messages(batch)
        with self._lock:
            self.stored += [(protocol.parse_topic(topic)[2], len(payload))
                            for topic, payload in batch]

    def count(self, kind: str) -> int:
        with self._lock:
            return sum(1 for stored, _ in self.stored if stored == kind)

    def largest(self) -> int:
        with self._lock:
            return max(size for _, size in self.stored)


@contextmanager
def bridged(port: int, recorder: Recorder) -> Iterator[Ingest]:
    """The local bridge from the broker to the cloud's ingestion, for the block: subscribed
    (a report of another site went through) before the block starts; on the way out, it
    stores what it took before it stops."""
    from edgeplane_dev.bridge import run_bridge

    ingest = Ingest()
    stop = threading.Event()
    thread = threading.Thread(target=run_bridge, args=(LOOPBACK, port), daemon=True, kwargs={
        "batch_handler": ingest, "client_id": "large-reports-bridge", "stop_event": stop})
    thread.start()
    try:
        probe = Presence(site="bridge-probe", online=True, session=1.0)
        wait_until(lambda: recorder.publish(*up(probe)) or ingest.count("presence"),
                   timeout=10, interval=0.5, what="the bridge subscribed")
        yield ingest
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def stored_machines() -> int:
    from chalicelib.models import Machine

    return sum(1 for _ in Machine.query(SITE, consistent_read=True))


def finished(rollout_id: str):
    from chalicelib.models import Execution
    from chalicelib.rollouts import states

    execution = Execution.get(rollout_id, SITE, consistent_read=True)
    return execution if execution.state in states.TERMINAL_EXECUTION_STATES else None


@pytest.mark.timeout(900)  # bounds, not targets: ~20 s alone, minutes on a busy machine
@pytest.mark.parametrize("count", [100, 1000])
def test_a_full_report_of_a_large_site_reaches_the_cloud_with_every_machine(
        tmp_path, broker, recorder, aws, published, count):
    from chalicelib import views
    from chalicelib.models import Rollout
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn

    machines = {f"srv-{n}": SimulatedMachine(serial=f"S{n}") for n in range(1, count + 1)}
    machines[CHATTY].sel = [LogEntry(str(n), None, "ok", f"event {n}: " + "x" * 100)
                            for n in range(20_000)]
    site = GatewaySite(tmp_path, broker.port, SITE, machines, observe_interval=0)
    with bridged(broker.port, recorder) as ingest:
        try:
            site.start()
            # What the gateway sent, then that the bridge stored it: in-process moto
            # serves one request at a time, so the store is read once, at the end.
            inventory = recorder.wait_for(lambda found: sum(
                len(m.machines) for m in found) >= count, Inventory, timeout=300)
            wait_until(lambda: ingest.count("inventory") >= len(inventory), timeout=120,
                       interval=0.2, what="the inventory stored")
            assert stored_machines() == count
            rollout_id = create.create(RolloutIn.model_validate({
                "sites": [SITE], "steps": STEPS, "policy": {"report": "full"}}),
                published).rollout.rollout_id
            (plan,) = published.sent
            recorder.publish(*plan)
            execution_id = f"{rollout_id}.{SITE}"
            parts = recorder.wait_for(lambda found: protocol.join_parts(
                r for r in found if r.execution_id == execution_id), Result, timeout=600)
            assert len(parts) == parts[0].parts > 1, "the result came in parts"
            wait_until(lambda: ingest.count("result") >= len(parts), timeout=300,
                       interval=0.2, what="the result stored")
            execution = finished(rollout_id)
            assert execution is not None, "the execution ended"
            recorder.publish(*plan)  # the plan again: the gateway sends its parts again
            wait_until(lambda: ingest.count("result") >= 2 * len(parts), timeout=300,
                       interval=0.2, what="the parts sent again, stored")
        finally:
            site.stop()
    assert ingest.largest() <= MAX_REPORT_BYTES, "no message over the budget reached the broker"
    assert (len(inventory) > 1) == (count == 1000), "1,000 machines' inventory in parts"

    assert everything(finished(rollout_id)) == everything(execution), \
        "the parts sent again after the end changed nothing"
    assert (execution.state, execution.message) == ("succeeded", f"{count} machines succeeded")
    assert Rollout.get(rollout_id).state == "succeeded"
    shown = views.execution(execution, with_machines=True)["machines"]
    assert sorted(m["machine"] for m in shown) == sorted(machines)
    assert all(m["state"] == "succeeded" for m in shown)
    assert {tuple(s["task"] for s in m["steps"]) for m in shown} == {tuple(TASKS)}
    by_name = {m["machine"]: m["steps"] for m in shown}
    inventory = by_name["srv-42"][2]
    assert inventory["data"]["system"]["serial"] == "S42", "a step's output in full"
    assert inventory["started_at"] and inventory["message"]
    sel = by_name[CHATTY][4]
    assert (sel["state"], sel["message"]) == ("succeeded", "10000 event log entries")
    assert "data" not in sel and sel["trimmed"]["data"] > MAX_REPORT_BYTES, \
        "the output that could not fit is left out, and says so"


# --- the cloud's side: parts in any order, twice, late, malformed, from another site ----------


@pytest.fixture
def execution_id(aws, published) -> str:
    """A rollout on the site, its plan sent: the id of the execution to report on."""
    from chalicelib.models import Machine, Site
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn

    Site(SITE, name=SITE, online=True).save()
    Machine(SITE, "srv-1", protocol="ipmi", address="10.0.0.1", capabilities=["power"]).save()
    created = create.create(RolloutIn.model_validate({
        "sites": [SITE], "steps": [{"task": "power.ensure", "params": {"state": "on"}}],
        "policy": {"report": "full", "retries": {"max": 2}}}), published)
    return f"{created.rollout.rollout_id}.{SITE}"


def parts_of(execution_id: str, machines: list[MachineResult] | None = None,
             state: str = "succeeded") -> list[Result]:
    machines = machines or [machine(f"srv-{n}") for n in range(1, 301)]
    parts = split_result(Result(site=SITE, execution_id=execution_id, seq=9, state=state,
                                message=f"{len(machines)} machines, {state}",
                                machines=machines))
    assert len(parts) >= 3
    return parts


def stored(execution_id: str):
    from chalicelib.models import Execution

    return Execution.get(execution_id.split(".")[0], SITE, consistent_read=True)


def everything(execution) -> dict[str, object]:
    """Every stored value of the execution, its machines' reports (parts and all) read."""
    return {**execution.attribute_values, "machines": execution.machine_reports()}


def moves(execution_id: str) -> list[str]:
    from chalicelib import audit

    return [e["detail"]["state"] for e in audit.log_of(execution_id.split(".")[0])
            if e["type"] == "Execution State Changed"]


def test_parts_out_of_order_and_twice_end_the_execution_once(execution_id):
    from chalicelib import ingest
    from chalicelib.models import Rollout

    parts = parts_of(execution_id)
    last, *others = parts[::-1]
    for part in others + others:  # every part but one, twice, last first
        ingest.handle_message(*up(part))
        assert stored(execution_id).state == "sent", "not all parts in: it goes on"
    ingest.handle_message(*up(last))
    ingest.handle_message(*up(last))
    execution = stored(execution_id)
    assert (execution.state, execution.message) == ("succeeded", "300 machines, succeeded")
    assert moves(execution_id) == ["sent", "succeeded"], "ended once"
    rollout = Rollout.get(execution_id.split(".")[0], consistent_read=True)
    assert (rollout.done, rollout.state) == (1, "succeeded")
    reports = execution.machine_reports()
    assert sorted(reports, key=lambda m: int(m[4:])) == [f"srv-{n}" for n in range(1, 301)]
    assert reports["srv-250"]["steps"][1]["data"] == machine("srv-250").steps[1].data


def test_every_part_in_one_batch_shuffled_and_doubled_ends_it_once(execution_id):
    from chalicelib import ingest

    parts = parts_of(execution_id)
    ingest.handle_messages([up(p) for p in random.Random(3).sample(parts * 2, len(parts) * 2)])
    assert stored(execution_id).state == "succeeded"
    assert moves(execution_id) == ["sent", "succeeded"]
    assert len(stored(execution_id).machine_reports()) == 300


def test_a_part_replayed_after_the_end_changes_nothing(execution_id):
    from chalicelib import ingest
    from chalicelib.rollouts import reports

    parts = parts_of(execution_id)
    ingest.handle_messages([up(p) for p in parts])
    before = everything(stored(execution_id))
    ingest.handle_message(*up(parts[1]))
    reports.CLOSED.clear()  # as another process would: it has not seen the end
    ingest.handle_message(*up(parts[0]))
    assert everything(stored(execution_id)) == before
    assert moves(execution_id) == ["sent", "succeeded"]


@pytest.mark.parametrize("retryable_everywhere, ends", [(True, "queued"), (False, "failed")])
def test_whether_a_failure_is_retried_is_judged_on_every_part(execution_id,
                                                              retryable_everywhere, ends):
    from chalicelib import ingest

    machines = [machine(f"srv-{n}") for n in range(1, 301)]
    machines[0] = machine("srv-1", state="failed", retryable=True)  # in the first part
    machines[-1] = machine("srv-300", state="failed", retryable=retryable_everywhere)
    ingest.handle_messages([up(p) for p in parts_of(execution_id, machines, "failed")])
    execution = stored(execution_id)
    assert execution.state == ends
    if ends == "queued":  # the next attempt starts afresh: no part of this one is kept
        assert (execution.attempt, execution.result_parts) == (2, None)


@pytest.mark.parametrize("changes, logged", [
    ({"parts": None}, "has field 'part' but no 'parts'"),
    ({"part": None}, "has field 'parts' but no 'part'"),
    ({"part": 5, "parts": 4}, "field 'part' is 5; it must be from 1 to 4"),
    ({"part": 0}, "field 'part' is 0"),
    ({"parts": protocol.MAX_MACHINES + 1}, "field 'parts' is 1001"),
    ({"part": "1"}, "'part' must be a non-negative integer"),
])
def test_a_malformed_part_is_dropped_like_any_malformed_report(execution_id, caplog, changes,
                                                               logged):
    from chalicelib import ingest

    first, *_ = parts_of(execution_id)
    data = {**first.to_dict(), **changes}
    payload = json.dumps({k: v for k, v in data.items() if v is not None}).encode()
    dropped = ingest.DROPPED_REPORTS["malformed"]
    with caplog.at_level(logging.ERROR, logger="chalicelib.ingest"):
        ingest.handle_message(protocol.up_topic(SITE, "result"), payload)
    assert logged in caplog.text
    assert ingest.DROPPED_REPORTS["malformed"] == dropped + 1
    assert (stored(execution_id).state, stored(execution_id).result_parts) == ("sent", None)


def test_a_part_from_another_sites_identity_changes_nothing(execution_id):
    from chalicelib import ingest

    parts = parts_of(execution_id)
    topic, payload = up(parts[0])
    forged = json.dumps({**json.loads(payload), "topic": topic, "client_id": "shop-0200"})
    records = ingest.DROPPED_REPORTS["record"]
    ingest.handle_sqs_records([("record-1", forged)])  # the IoT rule names the publisher
    assert ingest.DROPPED_REPORTS["record"] == records + 1
    # Another site on its own topic, naming this site's execution: refused too.
    other = dataclasses.replace(parts[1], site="shop-0200")
    ingest.handle_messages([up(other)])
    for part in parts[2:]:
        ingest.handle_message(*up(part))
    execution = stored(execution_id)
    assert execution.state == "sent", "the parts of this site are not all in"
    assert execution.result_parts == {f"9:{n}:ok" for n in range(3, len(parts) + 1)}


def test_progress_that_would_overflow_the_execution_keeps_every_machines_outcome(execution_id,
                                                                                caplog):
    """An execution is one item of 400 KB at most: full reports of many machines do not fit
    it. Progress keeps what fits in full, the rest as outcomes; the result carries every
    machine anyway."""
    from chalicelib import ingest

    machines = [machine(f"srv-{n}", data_bytes=6000) for n in range(1, 301)]
    groups = progress_groups(Progress(site=SITE, execution_id=execution_id, machines=machines))
    with caplog.at_level(logging.WARNING, logger="chalicelib.rollouts.reports"):
        for seq, group in enumerate(groups, start=1):
            ingest.handle_message(*up(Progress(site=SITE, execution_id=execution_id, seq=seq,
                                               machines=group)))
    assert "would pass the item size" in caplog.text
    reports = stored(execution_id).machine_reports()
    assert len(reports) == 300 and {r["state"] for r in reports.values()} == {"succeeded"}
    forms = Counter("steps" in r for r in reports.values())
    assert forms[True] and forms[False], "some in full, the others as their outcome"
    assert all(r["summary"] == "cu" for r in reports.values() if "steps" not in r)


def running(count: int, first: int = 1) -> list[MachineResult]:
    return [MachineResult(f"srv-{n}", "running", [StepResult("power.ensure", "running")])
            for n in range(first, first + count)]


def test_progress_of_many_machines_is_written_in_updates_dynamodb_takes(execution_id):
    """DynamoDB takes an update expression of 4 KB at most: a report of 250 machines is
    written in three updates, each newer than what it finds."""
    from chalicelib import ingest
    from tests.store_requests import counting_requests

    with counting_requests() as sent:
        ingest.handle_message(*up(Progress(site=SITE, execution_id=execution_id, seq=1,
                                           machines=running(250))))
    assert sent["UpdateItem"] == 3 + 1, "three for the machines, one to count the move"
    execution = stored(execution_id)
    assert (execution.state, execution.last_seq) == ("running", 1)
    assert len(execution.machine_reports()) == 250
    assert moves(execution_id) == ["sent", "running"]


def test_an_older_progress_of_many_machines_merges_only_what_is_newer(execution_id):
    from chalicelib import ingest

    newer = [dataclasses.replace(m, state="succeeded") for m in running(50)]
    ingest.handle_message(*up(Progress(site=SITE, execution_id=execution_id, seq=5,
                                       machines=newer)))
    ingest.handle_message(*up(Progress(site=SITE, execution_id=execution_id, seq=3,
                                       machines=running(250))))
    reports = stored(execution_id).machine_reports()
    assert len(reports) == 250
    assert {(r["seq"], r["state"]) for m, r in reports.items() if int(m[4:]) <= 50} == \
        {(5, "succeeded")}
    assert {(r["seq"], r["state"]) for m, r in reports.items() if int(m[4:]) > 50} == \
        {(3, "running")}
    assert stored(execution_id).last_seq == 5


def test_an_inventory_in_parts_registers_every_machine_and_once_known_writes_none(aws):
    from chalicelib import ingest
    from chalicelib.models import Machine, Site

    reports = [MachineReport(f"srv-{n}", "ipmi", f"10.0.{n // 250}.{n % 250}", ["power"],
                             "Contoso", "E1", f"SN{n}") for n in range(1, 301)]

    def register(session: float, at: float) -> None:
        parts = split_inventory(Inventory(site=SITE, ts=session, machines=reports), 20_000)
        assert len(parts) > 2
        ingest.handle_messages([up(Presence(site=SITE, online=True, session=session)),
                                *[up(part) for part in reversed(parts)]], clock=lambda: at)

    register(1.0, 100.0)
    written = {m.machine_id: m.updated_at for m in Machine.query(SITE, consistent_read=True)}
    assert written == {f"srv-{n}": 100.0 for n in range(1, 301)}
    site = Site.get(SITE, consistent_read=True)
    assert len(site.machine_ids) == 300 and site.inventory_digest is None
    register(2.0, 200.0)  # a reconnect: the same machines, in parts again
    assert {m.machine_id: m.updated_at for m in Machine.query(SITE)} == written
