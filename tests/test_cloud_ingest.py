"""Ingestion of gateway reports: presence, inventory, progress and results.

Duplicates and reordering are the normal case for at-least-once delivery; these tests send
messages twice and out of order and check that nothing regresses.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from chalice.test import Client

from chalicelib import audit, ingest
from chalicelib.models import Execution, Machine, Rollout, Site, Wave
from chalicelib.recent import RecentKeys
from chalicelib.rollouts import create, tick, wave_counters
from chalicelib.schemas import RolloutIn
from edgeplane import protocol
from edgeplane.protocol import Inventory, MachineReport, Presence, Progress, Result
from tests.store_requests import counting_requests
from tests.support import ROOT, machine_result, up

SITE = "shop-1"


def send(message: protocol.Message) -> None:
    ingest.handle_message(*up(message))


def site() -> Site:
    return Site.get(SITE, consistent_read=True)


# --- presence --------------------------------------------------------------------------


def test_presence_creates_an_unknown_site_and_marks_it_online(aws):
    send(Presence(site=SITE, online=True, session=100.0, gateway_version="1.2.0"))
    stored = site()
    assert stored.online is True and stored.gateway_version == "1.2.0"
    assert stored.name == SITE and stored.created_at is not None
    assert stored.last_seen_at is not None


def test_presence_follows_the_protocol_order_not_arrival(aws):
    online = Presence(site=SITE, online=True, session=100.0)
    will = Presence(site=SITE, online=False, session=100.0)
    reconnect = Presence(site=SITE, online=True, session=200.0)
    send(online)
    send(will)
    assert site().online is False
    send(online)  # a duplicate of the first, redelivered late
    assert site().online is False
    send(reconnect)
    assert site().online is True
    send(will)  # the old connection's will, arriving after the new connection
    assert site().online is True
    assert site().presence_session == 200.0


def test_a_presence_session_from_the_far_future_cannot_pin_the_site(aws):
    """A session numbered years ahead (a broken clock or a forgery) counts as only a few
    minutes ahead: once those pass, the gateway's next real connection wins again."""
    now = time.time()
    forged = Presence(site=SITE, online=False, session=now + 10 * 365 * 86400)
    ingest.handle_message(*up(forged), clock=lambda: now)
    assert site().online is False
    assert site().presence_session == pytest.approx(now + ingest.MAX_CLOCK_AHEAD)
    later = now + ingest.MAX_CLOCK_AHEAD + 1
    real = Presence(site=SITE, online=True, session=later)
    ingest.handle_message(*up(real), clock=lambda: later)
    assert site().online is True


def test_presence_keeps_what_the_operator_declared(aws):
    Site(SITE, name="Shop One", tags=["paris"], timezone="Europe/Paris").save()
    send(Presence(site=SITE, online=True, session=1.0))
    stored = site()
    assert (stored.name, stored.tags, stored.timezone) == ("Shop One", ["paris"],
                                                           "Europe/Paris")


# --- inventory -------------------------------------------------------------------------


def report(machine: str = "srv-1", **fields) -> MachineReport:
    return MachineReport(**{"id": machine, "protocol": "redfish",
                            "address": f"https://{machine}", "capabilities": ["boot", "power"],
                            "manufacturer": "Contoso", "model": "E1", "serial": "SN1",
                            "power": "on", **fields})


def test_inventory_creates_the_site_and_its_machines(aws):
    send(Inventory(site=SITE, gateway_version="1.0", machines=[report("srv-1"),
                                                                report("srv-2")]))
    assert site().gateway_version == "1.0"
    machines = {m.machine_id: m for m in Machine.query(SITE)}
    assert sorted(machines) == ["srv-1", "srv-2"]
    srv1 = machines["srv-1"]
    assert (srv1.source, srv1.protocol, srv1.capabilities, srv1.serial) == (
        "inventory", "redfish", ["boot", "power"], "SN1")


def test_inventory_keeps_the_operators_declaration_and_drops_older_reports(aws):
    # A machine is stored under a site stored before it (the API refuses a machine of an
    # unknown site); this site keeps neither machine ids nor digests, as sites stored
    # before they did.
    Site(SITE, name=SITE).save()
    Machine(SITE, "srv-1", protocol="ipmi", address="10.0.0.5", source="api").save()
    newer = Inventory(site=SITE, ts=2000.0, machines=[report(power="off")])
    older = Inventory(site=SITE, ts=1000.0, machines=[report(power="on", serial="OLD")])
    send(newer)
    send(older)
    stored = Machine.get(SITE, "srv-1")
    assert (stored.source, stored.protocol, stored.address) == ("api", "ipmi", "10.0.0.5")
    assert (stored.power, stored.serial) == ("off", "SN1")


def test_inventory_error_keeps_known_facts(aws):
    send(Inventory(site=SITE, ts=1.0, machines=[report()]))
    send(Inventory(site=SITE, ts=2.0, machines=[MachineReport(
        id="srv-1", protocol="redfish", address="https://srv-1", error="BMC timed out")]))
    stored = Machine.get(SITE, "srv-1")
    assert stored.inventory_error == "BMC timed out"
    assert (stored.serial, stored.capabilities) == ("SN1", ["boot", "power"])
    send(Inventory(site=SITE, ts=3.0, machines=[report()]))
    assert Machine.get(SITE, "srv-1").inventory_error is None


def written_at() -> dict[str, float]:
    return {m.machine_id: m.updated_at for m in Machine.query(SITE, consistent_read=True)}


def test_an_unchanged_inventory_writes_no_machine_only_the_site(aws):
    machines = [report("srv-1"), report("srv-2")]
    ingest.handle_message(*up(Inventory(site=SITE, ts=1.0, machines=machines)),
                          clock=lambda: 100.0)
    ingest.handle_message(*up(Inventory(site=SITE, ts=2.0, machines=machines)),
                          clock=lambda: 200.0)  # a reconnect: the same machines again
    assert written_at() == {"srv-1": 100.0, "srv-2": 100.0}
    assert site().last_seen_at == 200.0


def test_a_changed_inventory_writes_only_the_machines_that_changed(aws):
    ingest.handle_message(*up(Inventory(site=SITE, ts=1.0, machines=[
        report("srv-1"), report("srv-2")])), clock=lambda: 100.0)
    ingest.handle_message(*up(Inventory(site=SITE, ts=2.0, machines=[
        report("srv-1"), report("srv-2", power="off"), report("srv-3")])), clock=lambda: 200.0)
    assert written_at() == {"srv-1": 100.0, "srv-2": 200.0, "srv-3": 200.0}
    assert Machine.get(SITE, "srv-2").power == "off"
    ingest.handle_message(*up(Inventory(site=SITE, ts=1.5, machines=[
        report("srv-1"), report("srv-2")])), clock=lambda: 300.0)  # older, arriving late
    assert Machine.get(SITE, "srv-2").power == "off"
    ingest.handle_message(*up(Inventory(site=SITE, ts=3.0, machines=[
        report("srv-1"), report("srv-2", power="off"), report("srv-3")])), clock=lambda: 400.0)
    assert written_at() == {"srv-1": 100.0, "srv-2": 200.0, "srv-3": 200.0}


def four_machines() -> list[MachineReport]:
    return [report(f"srv-{n}") for n in range(1, 5)]


def registration(session: float) -> list[tuple[str, bytes]]:
    """What a gateway sends when it connects: its presence, then its inventory."""
    return [up(Presence(site=SITE, online=True, session=session)),
            up(Inventory(site=SITE, ts=session, machines=four_machines()))]


def test_a_new_site_registers_in_three_requests_and_reconnects_in_two(aws):
    """Its presence finds the site unknown, so nothing of it is stored to read or to keep:
    its machines go in one batch, then the site's digests. A reconnect with the same
    inventory is its presence and one write of the site."""
    with counting_requests() as sent:
        ingest.handle_messages(registration(1.0), clock=lambda: 100.0)
    assert sent == {"UpdateItem": 2, "BatchWriteItem": 1, "PutEvents": 1}
    stored = site()
    names = [f"srv-{n}" for n in range(1, 5)]
    assert (stored.online, stored.last_seen_at, stored.inventory_ts) == (True, 100.0, 1.0)
    assert sorted(stored.machine_ids) == sorted(stored.machine_digests.as_dict()) == names
    assert stored.inventory_digest is not None
    assert written_at() == dict.fromkeys(names, 100.0)

    with counting_requests() as sent:
        ingest.handle_messages(registration(2.0), clock=lambda: 200.0)
    assert sent == {"UpdateItem": 2, "PutEvents": 1}
    assert written_at() == dict.fromkeys(names, 100.0), "no machine written again"
    assert site().last_seen_at == 200.0


def test_a_registration_storm_writes_the_new_sites_machines_together(aws):
    """Ten sites registering in one batch: every machine and digest stored, the machines of
    several sites in each batch write (40 machines: two requests at the least, ten if each
    site wrote its own)."""
    sites = [f"storm-{n}" for n in range(10)]
    messages = [up(message) for site_id in sites for message in (
        Presence(site=site_id, online=True, session=1.0),
        Inventory(site=site_id, ts=1.0, machines=four_machines()))]
    with counting_requests() as sent:
        ingest.handle_messages(messages, clock=lambda: 100.0)
    assert sent["BatchWriteItem"] < len(sites)
    assert sent["UpdateItem"] == 2 * len(sites)
    for site_id in sites:
        stored = Site.get(site_id)
        assert stored.online and sorted(stored.machine_ids) == [f"srv-{n}" for n in range(1, 5)]
        assert sorted(m.machine_id for m in Machine.query(site_id)) == \
            [f"srv-{n}" for n in range(1, 5)]


def test_an_inventory_of_an_unknown_site_reads_nothing_first(aws):
    """Without its presence before it: the site's write finds nothing was stored."""
    with counting_requests() as sent:
        send(Inventory(site=SITE, ts=1.0, machines=four_machines()))
    assert sent == {"UpdateItem": 2, "BatchWriteItem": 1}
    assert sorted(site().machine_ids) == [f"srv-{n}" for n in range(1, 5)]


@pytest.mark.parametrize("presence_stored_here, cost", [
    # Stored by this process: as if they came together (the site's write is its digests').
    (True, {"UpdateItem": 1, "BatchWriteItem": 1}),
    # By another process: a site stored without machine ids or digests may have machines
    # stored before sites kept them; one query tells (none here).
    (False, {"UpdateItem": 2, "Query": 1, "BatchWriteItem": 1}),
])
def test_a_site_whose_presence_came_in_an_earlier_batch_gets_its_machines(
        aws, monkeypatch, presence_stored_here, cost):
    send(Presence(site=SITE, online=True, session=1.0))
    if not presence_stored_here:
        monkeypatch.setattr(ingest, "STORED_FIRST", RecentKeys(10))
    with counting_requests() as sent:
        send(Inventory(site=SITE, ts=1.0, machines=four_machines()))
    assert sent == cost
    assert sorted(site().machine_ids) == [f"srv-{n}" for n in range(1, 5)]
    assert site().online is True


def test_what_a_process_remembers_of_the_store_goes_with_its_tables(aws):
    from chalicelib import models

    send(Presence(site=SITE, online=True, session=1.0))
    assert SITE in ingest.STORED_FIRST
    models.delete_tables()
    models.create_tables()
    assert SITE not in ingest.STORED_FIRST


def test_a_registration_cut_between_its_machines_and_its_site_completes_when_sent_again(
        aws, monkeypatch):
    write = ingest.conditional_write

    def crash(*args, **kwargs):
        raise RuntimeError("the consumer died here")

    monkeypatch.setattr(ingest, "conditional_write", crash)
    with pytest.raises(RuntimeError, match="died"):
        ingest.handle_messages(registration(1.0), clock=lambda: 100.0)
    assert len(written_at()) == 4 and site().machine_ids is None
    monkeypatch.setattr(ingest, "conditional_write", write)
    ingest.handle_messages(registration(1.0), clock=lambda: 110.0)  # delivered again
    stored = site()
    assert sorted(stored.machine_ids) == [f"srv-{n}" for n in range(1, 5)]
    assert stored.inventory_digest is not None
    ingest.handle_messages(registration(2.0), clock=lambda: 200.0)
    assert set(written_at().values()) == {110.0}, "the reconnect writes no machine"


def test_a_machine_declared_by_the_operator_gets_the_next_inventory_in_full(aws):
    from chalicelib import fleet
    from chalicelib.schemas import MachineIn

    machines = [report("srv-1")]
    ingest.handle_message(*up(Inventory(site=SITE, ts=1.0, machines=machines)),
                          clock=lambda: 100.0)
    fleet.put_machine(SITE, "srv-1", MachineIn(protocol="ipmi", address="10.0.0.9"),
                      clock=lambda: 150.0)
    ingest.handle_message(*up(Inventory(site=SITE, ts=2.0, machines=machines)),
                          clock=lambda: 200.0)
    stored = Machine.get(SITE, "srv-1")
    assert (stored.source, stored.address, stored.updated_at) == ("api", "10.0.0.9", 200.0)


# --- progress and results --------------------------------------------------------------


@pytest.fixture
def rollout(aws, published) -> Rollout:
    """A rollout on two sites, their plans sent."""
    for name in (SITE, "shop-2"):
        send(Inventory(site=name, machines=[report("srv-1"), report("srv-2")]))
    created = create.create(RolloutIn.model_validate({
        "sites": [SITE, "shop-2"],
        "steps": [{"task": "power.ensure", "params": {"state": "on"}}]}), published)
    return created.rollout


def execution(rollout: Rollout, site_id: str = SITE) -> Execution:
    return Execution.get(rollout.rollout_id, site_id, consistent_read=True)


def results(rollout: Rollout, site_id: str = SITE) -> dict[str, tuple[int, str]]:
    reports = execution(rollout, site_id).machine_reports()
    return {machine: (report["seq"], report["state"]) for machine, report in reports.items()}


def stored(rollout: Rollout, site_id: str = SITE) -> dict[str, object]:
    """Every stored value of the execution (its machines' reports decoded)."""
    item = execution(rollout, site_id)
    return {**item.attribute_values, "machines": item.machine_reports()}


def progress(rollout: Rollout, seq: int, site_id: str = SITE, **states: str) -> Progress:
    return Progress(site=site_id, execution_id=Execution.make_id(rollout.rollout_id, site_id),
                    seq=seq, machines=[machine_result(m, s) for m, s in states.items()])


def result(rollout: Rollout, seq: int, site_id: str = SITE, state: str = "succeeded",
           **states: str) -> Result:
    return Result(site=site_id, execution_id=Execution.make_id(rollout.rollout_id, site_id),
                  seq=seq, machines=[machine_result(m, s) for m, s in states.items()],
                  state=state, message=f"{site_id} {state}")


def test_progress_moves_the_execution_to_running(rollout):
    assert execution(rollout).state == "sent"
    send(progress(rollout, 1, **{"srv-1": "running"}))
    assert execution(rollout).state == "running"
    assert execution(rollout).last_seq == 1
    assert results(rollout) == {"srv-1": (1, "running")}


def test_the_same_result_twice_changes_nothing_the_second_time(rollout):
    final = result(rollout, 5, **{"srv-1": "succeeded", "srv-2": "succeeded"})
    send(final)
    first = stored(rollout)
    send(final)
    assert stored(rollout) == first
    assert execution(rollout).state == "succeeded"
    assert Rollout.get(rollout.rollout_id).state == "running"  # shop-2 is not done


def test_a_late_progress_does_not_regress_a_result(rollout):
    send(result(rollout, 5, **{"srv-1": "succeeded", "srv-2": "failed"}, state="failed"))
    send(progress(rollout, 3, **{"srv-1": "running", "srv-2": "running"}))
    assert results(rollout) == {"srv-1": (5, "succeeded"), "srv-2": (5, "failed")}
    stored = execution(rollout)
    assert (stored.state, stored.last_seq, stored.message) == ("failed", 5, "shop-1 failed")


def test_a_late_progress_after_a_terminal_state_does_not_reopen_it(rollout):
    send(result(rollout, 2, **{"srv-1": "succeeded", "srv-2": "succeeded"}))
    send(progress(rollout, 7, **{"srv-1": "running"}))  # a newer seq, but after the end
    assert execution(rollout).state == "succeeded"
    send(result(rollout, 8, state="failed"))  # a second, different "final" result
    assert execution(rollout).state == "succeeded"


def test_results_read_nothing_back_and_the_last_of_a_wave_moves_the_rollout(rollout):
    """A batch's counting answers the counters it left: a wave not yet complete costs no
    read, and the batch whose count completes it is the one that moves the rollout on."""
    with counting_requests() as sent:
        send(result(rollout, 3, **{"srv-1": "succeeded"}))
    # the execution, the rollout's counters (its waves' with them); the log and the event
    assert sent == {"UpdateItem": 2, "BatchWriteItem": 1, "PutEvents": 1}
    assert Rollout.get(rollout.rollout_id).state == "running"
    send(result(rollout, 3, site_id="shop-2", **{"srv-1": "succeeded"}))
    assert Rollout.get(rollout.rollout_id).state == "succeeded"


def waves(rollout: Rollout) -> list[tuple[int, int, int]]:
    """Each wave's (size, done, failed), as the API shows them."""
    return [(int(w.size), int(w.done), int(w.failed)) for w in wave_counters.all_of(
        Rollout.get(rollout.rollout_id, consistent_read=True))]


def test_a_batch_of_reports_again_and_in_another_order_counts_once(aws, published):
    """The waves' counters are on the rollout, counted in the ADD of its own: a batch
    delivered again, or its reports in another order, changes none of them."""
    sites = ["shop-a", "shop-b", "shop-c", "shop-d", "shop-e"]
    for name in sites:
        send(Inventory(site=name, machines=[report("srv-1")]))
    rollout = create.create(RolloutIn.model_validate({
        "sites": sites, "steps": [{"task": "power.ensure", "params": {"state": "on"}}],
        "policy": {"canary": {"sites": 1}, "growth": 4}}), published).rollout
    send(result(rollout, 2, site_id="shop-a", **{"srv-1": "succeeded"}))  # the canary
    assert waves(rollout) == [(1, 1, 0), (4, 0, 0)]
    batch = [
        up(progress(rollout, 1, site_id="shop-d", **{"srv-1": "running"})),
        up(result(rollout, 2, site_id="shop-b", **{"srv-1": "succeeded"})),
        up(result(rollout, 2, site_id="shop-c", state="failed", **{"srv-1": "failed"})),
        up(result(rollout, 3, site_id="shop-d", **{"srv-1": "succeeded"})),
    ]
    ingest.handle_messages(batch)
    ingest.handle_messages(batch)  # delivered again
    ingest.handle_messages(batch[::-1])  # and again, its progress after its result
    for message in batch:  # and again, one by one
        ingest.handle_messages([message])

    stored = Rollout.get(rollout.rollout_id, consistent_read=True)
    assert waves(rollout) == [(1, 1, 0), (4, 3, 1)]
    assert (stored.done, stored.in_flight, stored.state) == (4, 1, "running")
    assert {state: n for state, n in stored.state_counts.as_dict().items() if n} == \
        {"sent": 1, "succeeded": 3, "failed": 1}
    assert not list(Wave.query(rollout.rollout_id)), "no wave item to keep counting"


def test_a_rollout_stored_with_wave_items_counts_its_waves_there(rollout):
    """A rollout stored before its waves were counted on it keeps counting in its Wave
    items."""
    Rollout(rollout.rollout_id).update(actions=[Rollout.wave_done.remove(),
                                                Rollout.wave_failed.remove()])
    Wave(rollout.rollout_id, 0, size=2).save()
    send(result(rollout, 3, **{"srv-1": "succeeded"}))
    send(result(rollout, 3, **{"srv-1": "succeeded"}))  # again
    assert waves(rollout) == [(2, 1, 0)]
    send(result(rollout, 3, site_id="shop-2", state="failed", **{"srv-1": "failed"}))
    assert waves(rollout) == [(2, 2, 1)]
    assert Rollout.get(rollout.rollout_id).state == "failed"


def test_a_progress_after_its_result_costs_nothing(rollout):
    send(result(rollout, 5, **{"srv-1": "succeeded"}))
    with counting_requests() as sent:
        send(progress(rollout, 3, **{"srv-1": "running"}))  # from a batch handled later
    assert sent == {}
    assert (execution(rollout).state, results(rollout)) == ("succeeded",
                                                            {"srv-1": (5, "succeeded")})


def test_a_progress_after_a_result_another_process_stored_is_read_and_dropped(
        rollout, monkeypatch):
    from chalicelib.rollouts import reports

    send(result(rollout, 5, **{"srv-1": "succeeded"}))
    monkeypatch.setattr(reports, "CLOSED", RecentKeys(10))  # not seen here
    with counting_requests() as sent:
        send(progress(rollout, 3, **{"srv-1": "running"}))
    assert sent == {"UpdateItem": 1, "GetItem": 1}, "refused, then read"
    assert execution(rollout).state == "succeeded"
    assert Execution.make_id(rollout.rollout_id, SITE) in reports.CLOSED, "known now"


def test_what_a_process_remembers_is_bounded_and_forgets_the_oldest_first():
    recent = RecentKeys(2)
    for key in ("r-1.a", "r-1.b", "r-1.a", "r-1.c"):
        recent.add(key)
    assert ("r-1.a" in recent, "r-1.b" in recent, "r-1.c" in recent) == (True, False, True)
    assert len(recent) == 2
    recent.discard("r-1.a")
    assert "r-1.a" not in recent and len(recent) == 1


def test_the_first_progress_moves_a_sent_execution_in_one_request(rollout):
    with counting_requests() as sent:
        send(progress(rollout, 2, **{"srv-1": "running"}))  # the first to arrive, seq 2
    assert sent == {"UpdateItem": 2, "BatchWriteItem": 1, "PutEvents": 1}, \
        "the execution, the rollout's counters of the move, its log and event"
    stored = execution(rollout)
    assert (stored.state, stored.last_seq, stored.started_at is not None) == \
        ("running", 2, True)
    started = stored.started_at
    with counting_requests() as sent:
        send(progress(rollout, 3, **{"srv-1": "succeeded"}))
    assert sent == {"UpdateItem": 1}, "running already: no move to count"
    assert execution(rollout).started_at == started


def test_out_of_order_progress_keeps_the_newest_snapshot_per_machine(rollout):
    send(progress(rollout, 4, **{"srv-1": "succeeded"}))
    send(progress(rollout, 2, **{"srv-1": "running", "srv-2": "running"}))
    assert results(rollout) == {"srv-1": (4, "succeeded"), "srv-2": (2, "running")}
    assert execution(rollout).last_seq == 4


def test_a_result_before_any_progress_or_sent_mark_is_accepted(rollout):
    Execution(rollout.rollout_id, SITE).update(actions=[Execution.state.set("queued")])
    send(result(rollout, 1, **{"srv-1": "succeeded"}))
    assert execution(rollout).state == "succeeded"


def test_the_rollout_finishes_when_every_execution_has(rollout):
    send(result(rollout, 3, **{"srv-1": "succeeded", "srv-2": "succeeded"}))
    assert Rollout.get(rollout.rollout_id).state == "running"
    send(result(rollout, 3, site_id="shop-2", **{"srv-1": "succeeded"}))
    assert Rollout.get(rollout.rollout_id).state == "succeeded"


def test_one_failed_site_fails_the_rollout_once_all_are_done(rollout):
    send(result(rollout, 3, site_id="shop-2", state="failed", **{"srv-1": "failed"}))
    assert Rollout.get(rollout.rollout_id).state == "running"
    send(result(rollout, 3, **{"srv-1": "succeeded"}))
    assert Rollout.get(rollout.rollout_id).state == "failed"
    send(result(rollout, 3, **{"srv-1": "succeeded"}))  # duplicates change nothing
    assert Rollout.get(rollout.rollout_id).state == "failed"


def test_a_duplicate_result_completes_a_rollout_left_running_by_a_crash(rollout):
    final = result(rollout, 3, **{"srv-1": "succeeded"})
    send(result(rollout, 3, site_id="shop-2", **{"srv-1": "succeeded"}))
    # As if the consumer stored this execution's end and crashed before the rollout's.
    Execution(rollout.rollout_id, SITE).update(actions=[Execution.state.set("succeeded")])
    assert Rollout.get(rollout.rollout_id).state == "running"
    send(final)  # delivered again at once: a batch may be between its moves and counters
    assert Rollout.get(rollout.rollout_id).state == "running"
    later = time.time() + tick.RECOUNT_QUIET
    ingest.handle_message(*up(final), clock=lambda: later)  # SQS delivers it again, later
    assert Rollout.get(rollout.rollout_id).state == "succeeded"


# --- batches: what a Lambda gets from SQS, what the bridge takes from the broker ---------


def test_a_batch_counts_each_execution_once_and_puts_its_moves_in_one_event(rollout,
                                                                           bus_events):
    bus_events("")  # what the rollout's creation put on the bus
    first = result(rollout, 2, **{"srv-1": "succeeded", "srv-2": "succeeded"})
    ingest.handle_messages([
        up(progress(rollout, 1, **{"srv-1": "running"})),
        up(first),
        up(result(rollout, 2, site_id="shop-2", state="failed", **{"srv-1": "failed"})),
        up(first),  # the same report twice in one batch
    ])
    assert (execution(rollout).state, execution(rollout, "shop-2").state) == \
        ("succeeded", "failed")
    assert results(rollout) == {"srv-1": (2, "succeeded"), "srv-2": (2, "succeeded")}, \
        "the result supersedes the progress before it"
    stored = Rollout.get(rollout.rollout_id)
    assert (stored.done, stored.in_flight, stored.state) == (2, 0, "failed")
    assert waves(stored) == [(2, 2, 1)]

    (moves,) = bus_events("Execution States Changed")
    changes = [(c["site_id"], c["previous"], c["state"]) for c in moves["detail"]["changes"]]
    assert sorted(changes) == [(SITE, "sent", "succeeded"), ("shop-2", "sent", "failed")]
    log = [(e["detail"]["site_id"], e["detail"]["state"]) for e in
           audit.log_of(rollout.rollout_id) if e["type"] == "Execution State Changed"]
    assert sorted(log) == [(SITE, "sent"), (SITE, "succeeded"), ("shop-2", "failed"),
                           ("shop-2", "sent")], "the log has one entry per move"


def test_progress_reports_in_one_batch_merge_per_machine(rollout):
    ingest.handle_messages([up(progress(rollout, 4, **{"srv-1": "succeeded"})),
                            up(progress(rollout, 2, **{"srv-1": "running",
                                                       "srv-2": "running"}))])
    assert results(rollout) == {"srv-1": (4, "succeeded"), "srv-2": (2, "running")}
    assert (execution(rollout).state, execution(rollout).last_seq) == ("running", 4)


# --- what is dropped, and said so ------------------------------------------------------


@pytest.mark.parametrize("topic, payload, logged", [
    (protocol.up_topic(SITE, "presence"), b"{nope", "not valid JSON"),
    (protocol.up_topic(SITE, "presence"), b'{"v": 9, "kind": "presence", "site": "shop-1"}',
     "protocol version 9 is not supported"),
    (protocol.up_topic("shop-2", "presence"), Presence(site=SITE).encode(),
     "arrived on topic"),
    (protocol.up_topic(SITE, "presence"),
     json.dumps({**Presence(site=SITE).to_dict(), "session": "soon"}).encode(),
     "field 'session' must be a number"),
    (protocol.up_topic(SITE, "progress"),
     json.dumps({**Progress(site=SITE, execution_id="r-x.shop-1").to_dict(),
                 "seq": "3"}).encode(), "'seq' must be a non-negative integer"),
    (protocol.up_topic(SITE, "progress"),
     Progress(site=SITE, execution_id="no-dot", seq=1).encode(), "is not <rollout>.<site>"),
    (protocol.up_topic(SITE, "progress"),
     Progress(site=SITE, execution_id="r-x.shop-2", seq=1).encode(),
     "reported on execution r-x.shop-2 of another site"),
    (protocol.up_topic(SITE, "progress"),
     Progress(site=SITE, execution_id="r-x.shop-1", seq=1).encode(), "unknown execution"),
    (protocol.up_topic(SITE, "result"),
     Result(site=SITE, execution_id="r-x.shop-1", seq=1, state="running").encode(),
     "not a final state"),
    ("edgeplane/v1/sites/shop-1/down/plan", protocol.Plan(
        site=SITE, execution_id="r-x.shop-1",
        steps=[protocol.PlanStep("power.ensure", {"state": "on"}, ["a"])]).encode(),
     "cloud-to-site topic"),
    ("some/other/topic", Presence(site=SITE).encode(), "not an Edgeplane topic"),
])
def test_bad_messages_are_logged_and_dropped(aws, caplog, topic, payload, logged):
    with caplog.at_level(logging.WARNING, logger="chalicelib.ingest"):
        ingest.handle_message(topic, payload)
    assert logged in caplog.text
    assert list(Site.scan()) == []


# --- the SQS consumer --------------------------------------------------------------------


def rule_record(message: protocol.Message) -> str:
    """What the IoT rule `SELECT *, topic() AS topic` puts on the queue."""
    topic, payload = up(message)
    return json.dumps({**json.loads(payload), "topic": topic})


def test_sqs_records_are_ingested(aws, monkeypatch):
    from app import app

    with Client(app, project_dir=str(ROOT)) as client:
        event = client.events.generate_sqs_event([
            rule_record(Presence(site=SITE, online=True, session=5.0)),
            "not json at all",
            json.dumps({"v": 1, "kind": "presence"}),  # no topic
            rule_record(Inventory(site="shop-2", machines=[report()])),
        ], queue_name="edgeplane-ingest")
        response = client.lambda_.invoke("ingest_reports", event)
    assert response.payload == {"batchItemFailures": []}, "malformed records are not retried"
    assert site().online is True
    assert [m.machine_id for m in Machine.query("shop-2")] == ["srv-1"]


def test_a_record_whose_topic_names_another_site_than_its_sender_is_dropped(aws):
    """The rule adds the publisher's client id (bound to its certificate): site shop-2
    reporting on shop-1's topic changes nothing, even with a payload that says shop-1."""
    forged = json.loads(rule_record(Presence(site=SITE, online=True, session=5.0)))
    genuine = json.loads(rule_record(Inventory(site="shop-2", machines=[report()])))
    before = ingest.DROPPED_REPORTS["record"]
    ingest.handle_sqs_records(numbered([json.dumps({**forged, "client_id": "shop-2"}),
                                        json.dumps({**genuine, "client_id": "shop-2"})]))
    assert ingest.DROPPED_REPORTS["record"] == before + 1
    with pytest.raises(Site.DoesNotExist):
        site()
    assert [m.machine_id for m in Machine.query("shop-2")] == ["srv-1"]


def lifecycle(kind: str, version: int, site_id: str = SITE) -> str:
    """An AWS IoT lifecycle event as its rule forwards it (SELECT *, topic() AS topic)."""
    return json.dumps({"clientId": site_id, "timestamp": 1795550000000 + version,
                       "eventType": kind, "sessionIdentifier": "a1b2", "principalIdentifier":
                       "12345", "versionNumber": version,
                       "topic": f"$aws/events/presence/{kind}/{site_id}"})


def numbered(bodies: list[str]) -> list[tuple[str, str]]:
    """SQS records as the consumer takes them: (message id, body)."""
    return [(f"m{index}", body) for index, body in enumerate(bodies)]


def test_iot_lifecycle_events_are_presence_in_connection_order(aws):
    ingest.handle_sqs_records(numbered([lifecycle("connected", 7)]))
    assert site().online is True
    ingest.handle_sqs_records(numbered([lifecycle("disconnected", 6)]))  # an older one's, late
    assert site().online is True
    ingest.handle_sqs_records(numbered([lifecycle("disconnected", 7)]))
    assert site().online is False
    ingest.handle_sqs_records(numbered([lifecycle("connected", 8), "{\"topic\": \"$aws/"
                                        "events/presence/connected/x\"}"]))  # malformed: dropped
    assert site().online is True


def test_a_store_failure_hands_back_only_the_records_that_failed(aws, monkeypatch):
    batches, calls = [], []

    def failing_batch(messages, clock=None) -> None:
        batches.append(list(messages))
        raise RuntimeError("DynamoDB throttled")

    def flaky(topic: str, payload: bytes) -> None:
        calls.append(topic)
        if len(calls) == 1:
            raise RuntimeError("DynamoDB throttled")

    monkeypatch.setattr(ingest, "handle_messages", failing_batch)
    monkeypatch.setattr(ingest, "handle_message", flaky)
    failed = ingest.handle_sqs_records([("first", rule_record(Presence(site=SITE))),
                                        ("second", rule_record(Presence(site="shop-2")))])
    assert len(batches[0]) == 2, "the records were tried as one batch first"
    assert len(calls) == 2, "then one by one: the rest of the batch was still tried"
    assert failed == ["first"], "only the record that failed goes back to the queue"


def test_the_lambda_reports_the_failed_records_as_a_partial_batch(aws, monkeypatch):
    """What ingest_reports returns is Lambda's partial batch response: SQS hands back the
    records it names, and deletes the others."""
    from app import app

    def failing_batch(messages, clock=None) -> None:
        raise RuntimeError("DynamoDB throttled")

    def shop_2_fails(topic: str, payload: bytes) -> None:
        if "/shop-2/" in topic:
            raise RuntimeError("DynamoDB throttled")

    monkeypatch.setattr(ingest, "handle_messages", failing_batch)
    monkeypatch.setattr(ingest, "handle_message", shop_2_fails)
    event = {"Records": [
        {"messageId": message_id, "receiptHandle": f"handle-{message_id}", "body": body,
         "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:edgeplane-dev-ingest"}
        for message_id, body in [("a", rule_record(Presence(site=SITE))),
                                 ("b", rule_record(Presence(site="shop-2"))),
                                 ("c", "not json at all")]]}
    with Client(app, project_dir=str(ROOT)) as client:
        response = client.lambda_.invoke("ingest_reports", event)
    assert response.payload == {"batchItemFailures": [{"itemIdentifier": "b"}]}


def test_a_batch_that_fails_half_way_counts_what_it_stored_and_its_retry_the_rest(
        rollout, monkeypatch):
    from chalicelib.rollouts import reports

    update = reports._update

    def throttled_on_shop_2(report, actions, condition):
        if report.site == "shop-2":
            raise RuntimeError("DynamoDB throttled")
        return update(report, actions, condition)

    batch = [up(result(rollout, 2, **{"srv-1": "succeeded"})),
             up(result(rollout, 2, site_id="shop-2", **{"srv-1": "succeeded"}))]
    monkeypatch.setattr(reports, "_update", throttled_on_shop_2)
    with pytest.raises(RuntimeError, match="throttled"):
        ingest.handle_messages(batch)
    stored = Rollout.get(rollout.rollout_id, consistent_read=True)
    assert (stored.done, stored.in_flight) == (1, 1), "the stored move is counted"
    monkeypatch.setattr(reports, "_update", update)
    for message in batch:  # SQS, or the bridge, hands them over again one by one
        ingest.handle_messages([message])
    stored = Rollout.get(rollout.rollout_id, consistent_read=True)
    assert (stored.done, stored.in_flight, stored.state) == (2, 0, "succeeded")
    moves = [(e["detail"]["site_id"], e["detail"]["state"]) for e in
             audit.log_of(rollout.rollout_id) if e["type"] == "Execution State Changed"]
    assert sorted(moves) == [(SITE, "sent"), (SITE, "succeeded"), ("shop-2", "sent"),
                             ("shop-2", "succeeded")], "each move logged once"
