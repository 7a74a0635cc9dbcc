"""The rollout engine on moto DynamoDB with a controllable clock: waves, limits, abort,
timeouts, retries, maintenance windows (and DST), pause/resume/cancel, expiry, events."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from chalicelib import audit, ingest
from chalicelib.errors import NotFound
from chalicelib.models import Execution, Machine, Rollout, Site
from chalicelib.rollouts import advance, control, create, dispatch, read, tick
from chalicelib.rollouts import policy as rules
from chalicelib.schemas import PolicyIn, RolloutIn
from edgeplane import protocol
from edgeplane.protocol import Presence, Progress, Result, StepResult
from tests.store_requests import counting_requests
from tests.support import call, up

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 12:00 UTC
POWER_ON = [{"task": "power.ensure", "params": {"state": "on"}}]


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def make_sites(count: int, **site_fields) -> list[str]:
    ids = [f"shop-{n:03d}" for n in range(count)]
    for site_id in ids:
        Site(site_id, name=site_id, tags=["fleet"], timezone="UTC", online=True,
             **site_fields).save()
        Machine(site_id, "srv-1", protocol="ipmi", address="10.0.0.1",
                capabilities=["power"]).save()
    return ids


def start(published, clock, sites, **policy) -> str:
    body = RolloutIn.model_validate({"sites": sites, "steps": POWER_ON, "policy": policy})
    return create.create(body, published, clock).rollout.rollout_id


def sent_sites(published) -> list[str]:
    """The sites sent a plan, in the order of the dispatch rounds (a round sends its plans
    in parallel, in no particular order)."""
    return [plan.site for plan in published.plans() if isinstance(plan, protocol.Plan)]


def finish(rollout_id: str, site: str, clock, state: str = "succeeded",
           retryable: bool = False, attempt: int = 1) -> None:
    step = StepResult(task="power.ensure", state="succeeded" if state == "succeeded"
                      else "failed", retryable=retryable, message="x")
    machine = protocol.MachineResult(machine="srv-1", state=state, steps=[step])
    message = Result(site=site, execution_id=Execution.make_id(rollout_id, site, attempt),
                     seq=9, machines=[machine], state=state, message=f"{site} {state}")
    ingest.handle_message(*up(message), clock=clock)


def state_of(rollout_id: str) -> str:
    return Rollout.get(rollout_id, consistent_read=True).state


def execution(rollout_id: str, site: str) -> Execution:
    return Execution.get(rollout_id, site, consistent_read=True)


# --- pure decisions -----------------------------------------------------------------------


def test_wave_sizes():
    assert rules.wave_sizes(10, PolicyIn()) == [10]
    assert rules.wave_sizes(10, PolicyIn(canary={"sites": 1})) == [1, 2, 4, 3]
    assert rules.wave_sizes(1000, PolicyIn(canary={"percent": 1}, growth=4)) == \
        [10, 40, 160, 640, 150]
    assert rules.wave_sizes(7, PolicyIn(first_wave=3, growth=1)) == [3, 3, 1]
    assert sum(rules.wave_sizes(10_000, PolicyIn(canary={"sites": 5}))) == 10_000


@pytest.mark.parametrize("local, zone, window, expected", [
    ("2026-06-01 01:30", "Europe/Berlin", {"start": "01:00", "end": "03:00"}, True),
    ("2026-06-01 03:00", "Europe/Berlin", {"start": "01:00", "end": "03:00"}, False),
    ("2026-06-01 23:30", "Asia/Tokyo", {"start": "23:00", "end": "02:00"}, True),
    ("2026-06-02 01:59", "Asia/Tokyo", {"start": "23:00", "end": "02:00"}, True),
    # Sunday night into Monday: the window belongs to Sunday, the day it starts
    ("2026-06-01 01:00", "UTC", {"days": ["sun"], "start": "22:00", "end": "02:00"}, True),
    ("2026-06-01 23:00", "UTC", {"days": ["sun"], "start": "22:00", "end": "02:00"}, False),
])
def test_maintenance_windows_in_local_time(local, zone, window, expected):
    moment = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone))
    assert rules.in_window(window, zone, moment.timestamp()) is expected


def test_windows_follow_daylight_saving_time():
    window = {"start": "01:00", "end": "04:00"}
    # 2026-03-29: Berlin goes from 02:00 CET to 03:00 CEST. 00:30 UTC is 01:30 CET (open);
    # 02:30 UTC is 04:30 CEST (closed) although it is only 3.5 hours after local 01:00.
    spring = datetime(2026, 3, 29, tzinfo=UTC).timestamp()
    assert rules.in_window(window, "Europe/Berlin", spring + 0.5 * 3600)
    assert not rules.in_window(window, "Europe/Berlin", spring + 2.5 * 3600)
    # 2026-10-25: back from 03:00 CEST to 02:00 CET: 02:30 UTC is 03:30 CET (still open)
    autumn = datetime(2026, 10, 25, tzinfo=UTC).timestamp()
    assert rules.in_window(window, "Europe/Berlin", autumn + 2.5 * 3600)
    # and New York, a different date for the same change
    spring_ny = datetime(2026, 3, 8, 7, 30, tzinfo=UTC).timestamp()  # 03:30 EDT
    assert rules.in_window(window, "America/New_York", spring_ny)


def test_abort_threshold_needs_its_minimum_sample():
    policy = PolicyIn(abort={"percent": 30, "min_sample": 4})
    assert rules.abort_reason(1, False, 10, done=3, failed=3, policy=policy) is None
    assert "2 of 4 finished sites failed" in rules.abort_reason(1, False, 10, 4, 2, policy)
    assert rules.abort_reason(1, False, 10, 4, 1, policy) is None
    assert "the canary failed" in rules.abort_reason(0, True, 2, 1, 1, policy)


# --- the engine ---------------------------------------------------------------------------


def test_a_canary_then_growing_waves(aws, published, clock):
    sites = make_sites(10)
    rollout_id = start(published, clock, sites, canary={"sites": 1})
    assert sent_sites(published) == ["shop-000"], "only the canary moves first"
    assert Rollout.get(rollout_id).waves == [1, 2, 4, 3]
    finish(rollout_id, "shop-000", clock)
    assert sorted(sent_sites(published)[1:]) == ["shop-001", "shop-002"]
    finish(rollout_id, "shop-001", clock)
    assert len(sent_sites(published)) == 3, "a wave starts once the previous one is done"
    finish(rollout_id, "shop-002", clock)
    assert len(sent_sites(published)) == 7
    for site in sent_sites(published)[3:]:
        finish(rollout_id, site, clock)
    for site in sent_sites(published)[7:]:
        finish(rollout_id, site, clock)
    assert sorted(sent_sites(published)) == sites
    assert state_of(rollout_id) == "succeeded"
    status, body = call_view(rollout_id)
    assert body["rollout"]["wave_counts"] == [{"succeeded": 1}, {"succeeded": 2},
                                              {"succeeded": 4}, {"succeeded": 3}]
    assert body["rollout"]["state_counts"] == body["rollout"]["counts"] == {"succeeded": 10}


def test_a_round_of_many_sites_is_rendered_and_sent_chunk_by_chunk(aws, published, clock):
    """A wave past the canary is rendered when it starts, a chunk at a time, each chunk's
    plans sent while the next is rendered: every site gets its one plan, and asks for
    observed state exactly where a rollout desired something of it."""
    sites = make_sites(2 * dispatch.PREPARE_CHUNK + 50)
    desired = set(sites[::3])
    for site_id in desired:
        Site(site_id).update(actions=[Site.has_desired.set(True)])
    rollout_id = start(published, clock, sites, canary={"sites": 1},
                       first_wave=len(sites) - 1)
    finish(rollout_id, sites[0], clock)
    plans = [plan for plan in published.plans() if isinstance(plan, protocol.Plan)]
    assert sorted(plan.site for plan in plans) == sites
    assert {plan.site for plan in plans if plan.observe} == desired
    assert all(len(plan.steps) == 1 for plan in plans)


def call_view(rollout_id: str):
    from chalicelib import views
    rollout = Rollout.get(rollout_id, consistent_read=True)
    return 200, {"rollout": views.rollout(rollout, read.executions_of(rollout_id))}


def test_a_large_target_is_checked_whole_while_its_first_wave_is_rendered(
        aws, published, clock, monkeypatch):
    monkeypatch.setattr(create, "RENDER_ALL_UP_TO", 2)  # above: the first wave is rendered
    monkeypatch.setattr(create, "WRITE_PART", 2)
    sites = make_sites(6)
    for target in ([*sites, "shop-404"], ["shop-404", *sites]):  # later, or in the canary
        with pytest.raises(NotFound, match=r"site\(s\) 'shop-404' do not exist"):
            start(published, clock, target, canary={"sites": 1})
    assert published.sent == [] and list(Rollout.scan()) == []
    rollout_id = start(published, clock, sites, canary={"sites": 1})
    assert execution(rollout_id, sites[0]).plan_steps is not None, "rendered at the create"
    assert execution(rollout_id, sites[1]).plan_steps is None, "rendered when dispatched"


def test_many_listed_sites_are_checked_by_reading_the_fleets_ids(aws, published, clock,
                                                                monkeypatch):
    monkeypatch.setattr(create, "RENDER_ALL_UP_TO", 2)
    monkeypatch.setattr(create, "SCAN_FROM", 3)
    sites = make_sites(8, machine_ids={"srv-1"})
    with pytest.raises(NotFound, match=r"site\(s\) 'shop-404' do not exist"):
        start(published, clock, [*sites[:4], "shop-404", *sites[4:]], canary={"sites": 1})
    with counting_requests() as sent:
        start(published, clock, sites, canary={"sites": 1})
    assert sent["Scan"] == create.WRITERS, "one page of each segment: no lookup"


def test_a_fleet_much_larger_than_the_target_is_looked_up_instead_of_read(aws, monkeypatch):
    from pynamodb.connection import TableConnection

    sites = make_sites(6)
    scan = TableConnection.scan

    def small_pages(self, *args, **kwargs):  # as a fleet of many pages would give
        return scan(self, *args, **{**kwargs, "limit": 1})

    monkeypatch.setattr(TableConnection, "scan", small_pages)
    monkeypatch.setattr(create, "SCAN_FROM", 3)
    assert create._scan_ids(0, pages=20) is not None, "a segment read whole"
    with counting_requests() as sent:
        found = create.existing_sites([*sites[:3], "shop-404"])
    assert found == set(sites[:3])
    assert sent["Scan"] <= create.WRITERS and sent["BatchGetItem"] == 1, \
        "a page per segment, then the lookup"


def test_a_new_rollout_looks_up_no_wave_or_execution_before_writing_them(aws, published,
                                                                         clock):
    sites = make_sites(3, machine_ids={"srv-1"})
    with counting_requests() as sent:
        start(published, clock, sites, canary={"sites": 1})
    assert sent["Query"] == 2, "the dispatch's of the queued sites, and the answer's list"


def test_a_failed_canary_aborts_and_nothing_else_moves(aws, published, clock):
    sites = make_sites(6)
    rollout_id = start(published, clock, sites, canary={"sites": 2})
    finish(rollout_id, "shop-000", clock, "failed")
    assert state_of(rollout_id) == "aborted"
    assert "the canary failed" in Rollout.get(rollout_id).message
    finish(rollout_id, "shop-001", clock)  # the other canary site still reports
    assert sorted(sent_sites(published)) == ["shop-000", "shop-001"]
    assert {execution(rollout_id, s).state for s in sites[2:]} == {"canceled"}


def test_failures_past_the_threshold_abort_the_wave(aws, published, clock):
    sites = make_sites(20)
    rollout_id = start(published, clock, sites, first_wave=10,
                       abort={"percent": 30, "min_sample": 4})
    assert len(sent_sites(published)) == 10
    for site, state in zip(sites, ["succeeded", "failed", "succeeded"], strict=False):
        finish(rollout_id, site, clock, state)
    assert state_of(rollout_id) == "running", "3 finished: below the minimum sample"
    finish(rollout_id, sites[3], clock, "failed")
    assert state_of(rollout_id) == "aborted"
    assert {execution(rollout_id, s).state for s in sites[10:]} == {"canceled"}
    assert execution(rollout_id, sites[5]).state == "sent", "running sites carry on"


def test_sites_in_flight_are_limited(aws, published, clock):
    sites = make_sites(5)
    rollout_id = start(published, clock, sites, max_in_flight=2)
    assert sorted(sent_sites(published)) == ["shop-000", "shop-001"]
    finish(rollout_id, "shop-000", clock)
    assert sent_sites(published)[2:] == ["shop-002"]
    assert Rollout.get(rollout_id).in_flight == 2


def test_one_writer_advances_a_rollout_and_a_second_gets_its_round_done(aws, published,
                                                                       clock):
    sites = make_sites(4)
    rollout_id = start(published, clock, sites, max_in_flight=1)
    holder = Rollout.get(rollout_id)
    token = advance._take_lease(holder, clock)
    assert token is not None
    finish(rollout_id, "shop-000", clock)  # its advance finds the lease taken
    assert len(sent_sites(published)) == 1, "the holder dispatches, not the second writer"
    assert Rollout.get(rollout_id).advance_wanted is True
    assert not advance._release_lease(holder, token), "asked for one more round"
    assert advance._release_lease(holder, token)
    advance.advance(rollout_id, published, clock)
    assert len(sent_sites(published)) == 2


def test_a_lease_left_by_a_crashed_writer_expires(aws, published, clock):
    sites = make_sites(2)
    rollout_id = start(published, clock, sites, max_in_flight=1)
    assert advance._take_lease(Rollout.get(rollout_id), clock) is not None  # never released
    finish(rollout_id, "shop-000", clock)
    assert len(sent_sites(published)) == 1
    clock.now += advance.DISPATCH_LEASE + 1
    tick.tick(published, clock)
    assert len(sent_sites(published)) == 2


def test_a_tick_during_the_create_leaves_its_counters_alone(aws, published, clock,
                                                           monkeypatch):
    sites = make_sites(3)
    write_executions = create.ensure_executions
    late = Clock(clock.now + advance.DISPATCH_LEASE + tick.RECOUNT_QUIET)

    def tick_first(*args, **kwargs):  # the tick comes while the create writes executions
        tick.tick(published, late)
        write_executions(*args, **kwargs)

    monkeypatch.setattr(create, "ensure_executions", tick_first)
    rollout_id = start(published, clock, sites, canary={"sites": 1})
    stored = Rollout.get(rollout_id, consistent_read=True)
    assert stored.state_counts.as_dict() == {"queued": 2, "sent": 1}
    assert (stored.done, stored.in_flight) == (0, 1)


def test_the_tick_recounts_what_a_crash_did_not_count_once_the_rollout_is_quiet(
        aws, published, clock):
    sites = make_sites(2)
    rollout_id = start(published, clock, sites)
    finish(rollout_id, "shop-000", clock)
    # as if the consumer had stored the move and crashed before counting it
    Execution(rollout_id, "shop-001").update(actions=[Execution.state.set("succeeded")])
    tick.tick(published, clock)
    assert state_of(rollout_id) == "running", "too early: a batch may be counting it"
    clock.now += tick.RECOUNT_QUIET
    tick.tick(published, clock)
    stored = Rollout.get(rollout_id, consistent_read=True)
    assert (stored.done, stored.in_flight, stored.state) == (2, 0, "succeeded")
    assert stored.state_counts.as_dict() == {"succeeded": 2}


def test_a_broken_rollout_does_not_hold_up_the_tick_for_the_others(aws, published, clock,
                                                                  caplog):
    sites = make_sites(2)
    broken = start(published, clock, sites[:1], site_timeout=600)
    healthy = start(published, clock, sites[1:], site_timeout=600)
    Rollout(broken).update(actions=[Rollout.policy.set({"growth": "fast"})])
    clock.now += 601
    assert tick.tick(published, clock)["failed"] == 1
    assert execution(healthy, sites[1]).state == "timed_out"
    assert f"rollout {broken} failed" in caplog.text


class MovingClock(Clock):
    """Every reading is a second after the one before."""

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_a_wave_started_by_a_batch_of_results_is_logged_after_them(aws, published):
    clock = MovingClock()
    sites = make_sites(2)
    rollout_id = start(published, clock, sites, canary={"sites": 1})
    finish(rollout_id, "shop-000", clock)
    log = [(e["type"], e["detail"].get("site_id"), e["detail"].get("state"), e["ts"])
           for e in audit.log_of(rollout_id)]
    canary_done = next(ts for _, site, state, ts in log if (site, state) == ("shop-000",
                                                                            "succeeded"))
    started = next(ts for kind, *_, ts in log if kind == "Rollout Wave Started")
    sent = next(ts for _, site, state, ts in log if (site, state) == ("shop-001", "sent"))
    assert canary_done < started <= sent, "stamped when done, not with the batch's time"


def test_a_dispatch_that_raises_half_way_logs_what_it_sent_and_frees_the_rollout(
        aws, published, clock, monkeypatch):
    sites = make_sites(3)
    publish = published.publish

    def breaks_on_the_last(topic: str, payload: bytes) -> None:
        if "shop-002" in topic:
            raise RuntimeError("connection reset by peer")
        publish(topic, payload)

    monkeypatch.setattr(published, "publish", breaks_on_the_last)
    with pytest.raises(RuntimeError, match="connection reset"):
        start(published, clock, sites)
    (rollout,) = Rollout.scan(consistent_read=True)
    assert rollout.lease_token is None, "the next writer need not wait for the lease to end"
    log = {(e["detail"]["site_id"], e["detail"]["state"]) for e in
           audit.log_of(rollout.rollout_id) if e["type"] == "Execution State Changed"}
    assert {("shop-000", "sent"), ("shop-001", "sent")} <= log, "what was sent is logged"
    assert execution(rollout.rollout_id, "shop-002").state == "queued", "and the claim given back"
    assert rollout.state_counts.as_dict() == {"queued": 1, "sent": 2}
    monkeypatch.setattr(published, "publish", publish)
    advance.advance(rollout.rollout_id, published, clock)
    assert sorted(sent_sites(published)) == sites


def test_a_large_wave_is_dispatched_in_rounds(aws, published, clock, monkeypatch):
    monkeypatch.setattr(dispatch, "DISPATCH_ROUND", 2)
    sites = make_sites(5)
    rollout_id = start(published, clock, sites)
    assert sorted(sent_sites(published)) == sites, "every round in one advance"
    assert Rollout.get(rollout_id).lease_token is None, "and the lease released"


def test_sites_started_per_minute_are_limited(aws, published, clock):
    sites = make_sites(5)
    rollout_id = start(published, clock, sites, max_per_minute=2)
    assert len(sent_sites(published)) == 2
    clock.now += 30
    tick.tick(published, clock)
    assert len(sent_sites(published)) == 2, "the same minute"
    clock.now += 31
    tick.tick(published, clock)
    assert len(sent_sites(published)) == 4
    assert state_of(rollout_id) == "running"


def test_a_silent_site_times_out_and_a_retry_gets_a_new_execution_id(aws, published, clock):
    (site,) = make_sites(1)
    rollout_id = start(published, clock, [site], site_timeout=600,
                       retries={"max": 1, "backoff": 120})
    clock.now += 599
    tick.tick(published, clock)
    assert execution(rollout_id, site).state == "sent"
    clock.now += 2
    tick.tick(published, clock)
    retry = execution(rollout_id, site)
    assert (retry.state, retry.attempt) == ("queued", 2)
    assert "retrying after 120 s" in retry.message
    clock.now += 121
    tick.tick(published, clock)
    plans = [p for p in published.plans() if isinstance(p, protocol.Plan)]
    assert [p.execution_id for p in plans] == [f"{rollout_id}.{site}",
                                              f"{rollout_id}.{site}.2"]
    finish(rollout_id, site, clock, "succeeded", attempt=1)  # the first attempt, late
    assert execution(rollout_id, site).state == "sent", "an old attempt's result is ignored"
    clock.now += 601
    tick.tick(published, clock)
    assert execution(rollout_id, site).state == "timed_out", "no retries left"
    assert state_of(rollout_id) == "failed"


def test_a_retry_is_timed_from_its_own_start(aws, published, clock):
    (site,) = make_sites(1)
    rollout_id = start(published, clock, [site], site_timeout=600,
                       retries={"max": 1, "backoff": 10})
    step = StepResult(task="power.ensure", state="running")
    first = Progress(site=site, execution_id=Execution.make_id(rollout_id, site), seq=1,
                     machines=[protocol.MachineResult(machine="srv-1", state="running",
                                                      steps=[step])])
    ingest.handle_message(*up(first), clock=clock)
    assert execution(rollout_id, site).started_at == T0
    clock.now += 100
    finish(rollout_id, site, clock, "failed", retryable=True)
    assert execution(rollout_id, site).started_at is None, "the retry has not started"
    clock.now += 11
    tick.tick(published, clock)
    assert execution(rollout_id, site).state == "sent"
    clock.now = T0 + 650  # past the timeout from the first attempt's start, not the retry's
    tick.tick(published, clock)
    assert execution(rollout_id, site).state == "sent"
    retry = Progress(site=site, execution_id=Execution.make_id(rollout_id, site, 2), seq=1,
                     machines=first.machines)
    ingest.handle_message(*up(retry), clock=clock)
    assert (execution(rollout_id, site).state, execution(rollout_id, site).started_at) == \
        ("running", T0 + 650)


def test_retryable_failures_are_retried_and_others_are_not(aws, published, clock):
    sites = make_sites(2)
    rollout_id = start(published, clock, sites, retries={"max": 2, "backoff": 10})
    finish(rollout_id, sites[0], clock, "failed", retryable=True)
    finish(rollout_id, sites[1], clock, "failed", retryable=False)
    assert execution(rollout_id, sites[0]).state == "queued"
    assert execution(rollout_id, sites[1]).state == "failed"
    clock.now += 11
    tick.tick(published, clock)
    finish(rollout_id, sites[0], clock, "succeeded", attempt=2)
    assert execution(rollout_id, sites[0]).state == "succeeded"
    assert state_of(rollout_id) == "failed", "one site failed for good"


def test_a_site_outside_its_window_waits_for_it(aws, published, clock):
    window = {"days": [], "start": "02:00", "end": "04:00"}
    (site,) = make_sites(1, maintenance_window=window)
    Site(site).update(actions=[Site.timezone.set("Asia/Tokyo")])
    rollout_id = start(published, clock, [site])  # 12:00 UTC is 21:00 in Tokyo
    assert sent_sites(published) == []
    clock.now += 5 * 3600 + 30 * 60  # 17:30 UTC = 02:30 Tokyo
    tick.tick(published, clock)
    assert sent_sites(published) == [site]
    finish(rollout_id, site, clock)
    assert state_of(rollout_id) == "succeeded"


def test_pause_resume_and_cancel(aws, published, clock):
    sites = make_sites(6)
    rollout_id = start(published, clock, sites, canary={"sites": 1})
    control.pause(rollout_id, "ops")
    finish(rollout_id, "shop-000", clock)
    assert len(sent_sites(published)) == 1, "paused: the next wave waits"
    control.resume(rollout_id, published, "ops", clock)
    assert sorted(sent_sites(published)[1:]) == ["shop-001", "shop-002"]
    control.cancel(rollout_id, published, "ops", clock)
    assert state_of(rollout_id) == "canceled"
    cancels = [protocol.decode(payload, topic) for topic, payload in published.sent
               if topic.endswith("/down/cancel")]
    assert sorted(c.site for c in cancels) == ["shop-001", "shop-002"]
    assert {execution(rollout_id, s).state for s in sites[3:]} == {"canceled"}
    finish(rollout_id, "shop-001", clock, "canceled")
    assert execution(rollout_id, "shop-001").state == "canceled"
    with pytest.raises(Exception, match="cannot be canceled|is canceled"):
        control.resume(rollout_id, published, "ops", clock)


def test_an_offline_site_is_not_timed_out_but_expires(aws, published, clock):
    sites = make_sites(2)
    ingest.handle_message(*up(Presence(site=sites[1], online=False, session=1.0)),
                          clock=clock)
    rollout_id = start(published, clock, sites, site_timeout=600, expires_in=3600)
    clock.now += 700
    tick.tick(published, clock)
    assert execution(rollout_id, sites[0]).state == "timed_out"
    assert execution(rollout_id, sites[1]).state == "sent", "offline: its plan waits for it"
    clock.now += 3000
    tick.tick(published, clock)
    expired = execution(rollout_id, sites[1])
    assert expired.state == "expired" and "before the rollout expired" in expired.message
    assert state_of(rollout_id) == "failed"


def test_every_change_is_in_the_event_log(aws, published, clock):
    sites = make_sites(2)
    rollout_id = start(published, clock, sites)
    finish(rollout_id, sites[0], clock)
    finish(rollout_id, sites[1], clock, "failed")
    from chalicelib import audit
    log = audit.log_of(rollout_id)
    kinds = [(e["type"], e["detail"].get("site_id"), e["detail"].get("state")) for e in log]
    assert kinds[0] == ("Rollout State Changed", None, "running")
    assert ("Execution State Changed", sites[0], "sent") in kinds
    assert ("Execution State Changed", sites[0], "succeeded") in kinds
    assert ("Execution State Changed", sites[1], "failed") in kinds
    assert kinds[-1] == ("Rollout State Changed", None, "failed")
    finish(rollout_id, sites[1], clock, "failed")  # delivered again
    assert len(audit.log_of(rollout_id)) == len(log), "a duplicate logs nothing"


def test_the_api_pauses_resumes_cancels_and_lists_events(api, published):
    make_sites(3)
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-000", "shop-001",
                                                             "shop-002"],
                                                   "steps": POWER_ON,
                                                   "policy": {"canary": {"sites": 1}}})
    assert status == 201 and body["rollout"]["waves"] == [1, 2]
    rollout_id = body["rollout"]["rollout_id"]
    assert call(api, "POST", f"/rollouts/{rollout_id}/pause", {})[1]["rollout"]["state"] == \
        "paused"
    assert call(api, "POST", f"/rollouts/{rollout_id}/resume", {})[1]["rollout"]["state"] == \
        "running"
    assert call(api, "POST", f"/rollouts/{rollout_id}/cancel", {})[1]["rollout"]["state"] == \
        "canceled"
    status, body = call(api, "POST", f"/rollouts/{rollout_id}/pause", {})
    assert status == 409 and "only a running rollout" in body["error"]["message"]
    status, events = call(api, "GET", f"/rollouts/{rollout_id}/events")
    states = [e["detail"]["state"] for e in events["events"]
              if e["type"] == "Rollout State Changed"]
    assert states == ["running", "paused", "running", "canceled"]
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-000"], "steps": POWER_ON,
                                                   "policy": {"canary": {"sites": 0}}})
    assert status == 400 and "policy.canary.sites" in body["error"]["message"]

