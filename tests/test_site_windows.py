"""Maintenance windows held on the site: the window rule (DST, midnight), a plan that
carries its site's window, a gateway that holds a plan received outside it (reports
``waiting``, asks nothing of the BMC) until it opens, ends it ``expired`` past its expiry or
``canceled`` on a cancel, holds it again after a restart; and the whole path: the cloud
dispatches inside the window, the site gets the plan late, outside it, and does not run it.

Real parts: mosquitto, the Redfish simulator (which records every request it handled), the
rollout engine on moto's DynamoDB. The clocks (the cloud's and the gateway's) are shifted,
not mocked: they run at the real pace from a chosen instant, a few seconds before a window
opens where a test waits for the opening.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from chalicelib import ingest, views
from chalicelib.models import Execution, Machine, Site
from chalicelib.rollouts import create, tick
from chalicelib.rollouts import policy as rules
from chalicelib.schemas import PolicyIn, RolloutIn
from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.journal import Journal
from edge_gateway.transport import MqttTransport
from edgeplane import protocol
from edgeplane.protocol import (
    BmcProtocol,
    Cancel,
    Plan,
    PlanStep,
    Progress,
    ProtocolError,
    Result,
)
from edgeplane.windows import Window, WindowError
from edgeplane_cli.render import rollout_table
from edgeplane_dev.redfish_sim import BmcOptions, RedfishBmc
from tests.support import PLAN_KEYS, SimulatedRedfish, sign, up, wait_until

SITE = "shop-0901"
MACHINE = "srv-1"
HOUR = 3600.0

pytestmark = pytest.mark.timeout(120)


def at(text: str, zone: str = "UTC") -> float:
    """``"2026-06-01 01:30"`` in ``zone``, as seconds since the epoch."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(zone)).timestamp()


# --- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize("local, zone, window, expected", [
    ("2026-06-01 01:30", "Europe/Berlin", Window("01:00", "03:00"), True),
    ("2026-06-01 03:00", "Europe/Berlin", Window("01:00", "03:00"), False),
    ("2026-06-01 00:59", "Europe/Berlin", Window("01:00", "03:00"), False),
    # across midnight: open late in the evening and early the next morning
    ("2026-06-01 23:30", "Asia/Tokyo", Window("23:00", "02:00"), True),
    ("2026-06-02 01:59", "Asia/Tokyo", Window("23:00", "02:00"), True),
    ("2026-06-02 02:00", "Asia/Tokyo", Window("23:00", "02:00"), False),
    # Sunday night into Monday: the window belongs to Sunday, the day it starts
    ("2026-06-01 01:00", "UTC", Window("22:00", "02:00", ["sun"]), True),
    ("2026-06-01 23:00", "UTC", Window("22:00", "02:00", ["sun"]), False),
])
def test_a_window_is_open_in_the_sites_local_time(local, zone, window, expected):
    window = Window(window.start, window.end, window.days, zone)
    assert window.is_open(at(local, zone)) is expected
    # the cloud's dispatch asks the same rule
    assert rules.in_window({"start": window.start, "end": window.end, "days": window.days},
                           zone, at(local, zone)) is expected


def test_a_window_follows_daylight_saving_time():
    berlin = Window("01:00", "04:00", timezone="Europe/Berlin")
    # 2026-03-29: Berlin goes from 02:00 CET to 03:00 CEST; 02:30 UTC is 04:30 CEST.
    spring = datetime(2026, 3, 29, tzinfo=UTC).timestamp()
    assert berlin.is_open(spring + 0.5 * HOUR)
    assert not berlin.is_open(spring + 2.5 * HOUR)
    # 2026-10-25: back from 03:00 CEST to 02:00 CET: 02:30 UTC is 03:30 CET, still open
    autumn = datetime(2026, 10, 25, tzinfo=UTC).timestamp()
    assert berlin.is_open(autumn + 2.5 * HOUR)


def test_when_a_window_opens_next():
    window = Window("01:00", "02:00", timezone="Europe/Berlin")
    inside = at("2026-06-01 01:15", "Europe/Berlin")
    assert window.opens_at(inside) == inside, "open: now"
    assert window.opens_at(at("2026-06-01 14:00", "Europe/Berlin")) == \
        at("2026-06-02 01:00", "Europe/Berlin"), "the next night"
    sundays = Window("22:00", "02:00", ["sun"], "UTC")  # 2026-06-01 is a Monday
    assert sundays.opens_at(at("2026-06-01 03:00")) == at("2026-06-07 22:00")
    # a start the clocks skip: 02:30 does not exist in Berlin on 2026-03-29; the window
    # opens when the clocks jump to 03:00 (01:00 UTC), inside it
    skipped = Window("02:30", "04:00", timezone="Europe/Berlin")
    assert skipped.opens_at(at("2026-03-29 00:00", "Europe/Berlin")) == \
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()


def test_an_unknown_zone_is_an_error_that_names_it():
    with pytest.raises(WindowError, match="'Mars/Olympus_Mons' is not in this machine's"):
        Window("01:00", "02:00", timezone="Mars/Olympus_Mons").is_open(time.time())


# --- the wire -------------------------------------------------------------------------------


def plan(execution_id: str, window: Window | None = None,
         expires_at: float | None = None) -> Plan:
    return Plan(site=SITE, execution_id=execution_id, rollout_id=execution_id.split(".")[0],
                steps=[PlanStep("power.ensure", {"state": "off"}, [MACHINE])],
                observe=False, window=window, expires_at=expires_at)


def test_a_plan_carries_its_window_and_a_plan_without_one_is_unchanged():
    window = Window("01:00", "02:00", ["sat", "sun"], "Europe/Berlin")
    decoded = protocol.decode(plan(f"r1.{SITE}", window).encode())
    assert isinstance(decoded, Plan) and decoded.window == window
    assert "window" not in json.loads(plan(f"r1.{SITE}").encode())


@pytest.mark.parametrize("window, says", [
    ({"start": "25:00", "end": "02:00"}, "window start must be a time as HH:MM, not '25:00'"),
    ({"start": "01:00", "end": "01:00"}, "start and end are equal"),
    ({"start": "01:00", "end": "02:00", "days": ["moon"]}, "unknown day(s) 'moon'"),
    ({"start": "01:00", "end": "02:00", "timezone": "x" * 300}, "window timezone must be"),
    ({"end": "02:00"}, "must have a start and an end"),
    ("01:00-02:00", "field 'window' must be an object"),
])
def test_a_malformed_window_is_refused_naming_what_is_wrong(window, says):
    data = {**plan(f"r1.{SITE}").to_dict(), "window": window}
    with pytest.raises(ProtocolError) as refused:
        protocol.decode(json.dumps(data))
    assert says in str(refused.value)
    assert refused.value.execution_id == f"r1.{SITE}", "answered with a rejected result"


def test_a_plan_carries_the_window_only_when_the_policy_respects_windows():
    stored = {"days": [], "start": "01:00", "end": "02:00"}
    assert rules.plan_window(stored, "Asia/Tokyo", PolicyIn()) == \
        Window("01:00", "02:00", [], "Asia/Tokyo")
    assert rules.plan_window(stored, None, PolicyIn()).timezone == "UTC"
    assert rules.plan_window(stored, "UTC", PolicyIn(maintenance_windows=False)) is None
    assert rules.plan_window(None, "UTC", PolicyIn()) is None


# --- the gateway ----------------------------------------------------------------------------


class ShiftedClock:
    """Real time, moved by ``offset`` seconds (which a test may change)."""

    def __init__(self, now: float) -> None:
        self.offset = now - time.time()

    def set(self, now: float) -> None:
        self.offset = now - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset


class WindowedSite:
    """One site's gateway core, with one Redfish machine and a shifted clock, on a journal
    that outlives it (restartable)."""

    def __init__(self, tmp_path: Path, port: int, simulated: SimulatedRedfish,
                 clock: ShiftedClock) -> None:
        self.clock = clock
        self.config = SiteConfig(
            site=SITE, journal=tmp_path / "journal.db",
            mqtt=MqttSettings(port=port, reconnect_min_delay=1, reconnect_max_delay=2),
            machines=(MachineConfig(id=MACHINE, protocol=BmcProtocol.REDFISH, timeout=5,
                                    power_timeout=20, poll_interval=0.1, min_interval=0,
                                    credentials=BmcCredentials(simulated.url, "admin",
                                                               "password")),),
            progress_interval=0.2, observe_interval=0, plan_keys=PLAN_KEYS)
        self.gateway: Gateway | None = None

    def start(self) -> Gateway:
        self.gateway = Gateway(
            self.config, transport_factory=lambda gw: MqttTransport(
                self.config.mqtt, SITE, gw.subscriptions, gw.will),
            journal=Journal(self.config.journal), clock=self.clock)
        self.gateway.start()
        assert self.gateway.transport.connected.wait(10)
        assert self.gateway.wait_for_inventory(30)
        return self.gateway

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None


@pytest.fixture
def simulated(redfish_bmcs) -> SimulatedRedfish:
    return redfish_bmcs.fresh(BmcOptions(power_delay=0.1))


@pytest.fixture
def bmc(simulated) -> RedfishBmc:
    return simulated.bmc


# The day the clocks are shifted to: near now, as the signatures on plans are checked by
# the real clock (and may stand at most 30 days).
DAY = datetime.now(UTC).date() + timedelta(days=2)


def on(day: int, clock: str, zone: str = "UTC") -> float:
    """``clock`` ("HH:MM") in ``zone`` on ``DAY`` + ``day``, as seconds since the epoch."""
    return at(f"{DAY + timedelta(days=day)} {clock}", zone)


OPENS = on(0, "01:00")  # the window's opening the gateway tests wait for
WINDOW = Window("01:00", "02:00")  # every day, UTC


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock(OPENS - 10 * HOUR)  # 15:00 the day before: closed


@pytest.fixture
def site(tmp_path, broker, simulated, clock, recorder) -> Iterator[WindowedSite]:
    s = WindowedSite(tmp_path, broker.port, simulated, clock)
    yield s
    s.stop()


def reports(recorder, execution_id: str, kind: type[Progress]) -> list:
    return [m for m in recorder.of_kind(kind) if m.execution_id == execution_id]


def waiting(recorder, execution_id: str, count: int = 1) -> list[Progress]:
    """The reports that the gateway holds the plan, once there are ``count`` of them."""
    def held() -> list[Progress] | None:
        found = [p for p in reports(recorder, execution_id, Progress)
                 if p.waiting_until is not None]
        return found if len(found) >= count else None
    return wait_until(held, timeout=20, what=f"{count} waiting report(s) of {execution_id}")


def result_of(recorder, execution_id: str) -> Result:
    return wait_until(lambda: reports(recorder, execution_id, Result), timeout=40,
                      what=f"the result of {execution_id}")[0]


def test_a_plan_outside_its_window_waits_without_a_bmc_request_then_runs(
        site, recorder, bmc, clock):
    gateway = site.start()
    bmc.forget_requests()  # what the inventory on connect asked
    execution = f"r-held.{SITE}"
    clock.set(OPENS - 4)  # 00:59:56: the window opens in four seconds
    recorder.publish(protocol.plan_topic(SITE), sign(plan(execution, WINDOW)))
    (held,) = waiting(recorder, execution)
    assert held.waiting_until == OPENS and held.machines == []
    assert bmc.received == [], "nothing is asked of the BMC while the plan waits"
    assert gateway.holds.held() == [execution] or reports(recorder, execution, Result)
    result = result_of(recorder, execution)
    assert result.state == "succeeded", result.message
    assert clock() >= OPENS
    assert bmc.received, "it ran: the BMC was asked"
    seqs = [p.seq for p in reports(recorder, execution, Progress)]
    assert seqs[0] == held.seq and result.seq > max(seqs), "waiting came first"


def test_a_held_plan_past_its_expiry_ends_expired_unrun(site, recorder, bmc, clock):
    site.start()
    bmc.forget_requests()
    execution = f"r-expiring.{SITE}"
    # The window opens in ten hours; the rollout expires in two seconds.
    recorder.publish(protocol.plan_topic(SITE),
                     sign(plan(execution, WINDOW, expires_at=clock() + 2)))
    (held,) = waiting(recorder, execution)
    assert held.waiting_until == OPENS
    result = result_of(recorder, execution)
    assert (result.state, result.message) == (
        "expired", "the plan expired before the site could start it")
    assert bmc.received == []


def test_a_held_plan_is_canceled_at_once(site, recorder, bmc):
    gateway = site.start()
    bmc.forget_requests()
    execution = f"r-canceled.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(execution, WINDOW)))
    waiting(recorder, execution)
    recorder.publish(protocol.cancel_topic(SITE), sign(Cancel(
        site=SITE, execution_id=execution, reason="operator canceled")))
    result = result_of(recorder, execution)
    assert (result.state, result.message) == ("canceled", "canceled before it started")
    assert gateway.holds.held() == [] and bmc.received == []


def test_a_held_plan_survives_a_restart_and_runs_when_its_window_opens(
        site, recorder, bmc, clock):
    site.start()
    execution = f"r-restarted.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(execution, WINDOW)))
    waiting(recorder, execution)
    site.stop()
    bmc.forget_requests()
    clock.set(OPENS - 5)  # the gateway comes back five seconds before the window opens
    gateway = site.start()
    assert gateway.holds.held() == [execution] or reports(recorder, execution, Result)
    waiting(recorder, execution, count=2)  # held again, from the journal
    result = result_of(recorder, execution)
    assert result.state == "succeeded", result.message
    assert bmc.received, "it ran once its window opened"


def test_a_window_in_a_zone_the_gateway_does_not_know_is_refused(site, recorder, bmc):
    site.start()
    bmc.forget_requests()
    execution = f"r-mars.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(
        execution, Window("01:00", "02:00", timezone="Mars/Olympus_Mons"))))
    result = result_of(recorder, execution)
    assert result.state == "rejected"
    assert "time zone 'Mars/Olympus_Mons' is not in this machine's time zone database" \
        in result.message
    assert bmc.received == []


# --- the whole path: cloud dispatch, a site back late -----------------------------------------


def test_an_offline_site_back_outside_its_window_does_not_run_the_plan(
        aws, published, site, recorder, bmc, clock):
    Site(SITE, name=SITE, tags=["fleet"], timezone="Europe/Berlin", online=True,
         maintenance_window={"days": [], "start": "01:00", "end": "02:00"}).save()
    Machine(SITE, MACHINE, protocol="redfish", address="10.0.0.1",
            capabilities=["power"]).save()
    cloud = ShiftedClock(on(0, "01:30", "Europe/Berlin"))  # inside the window
    body = RolloutIn.model_validate({"sites": [SITE], "policy": {"site_timeout": 600},
                                     "steps": [{"task": "power.ensure",
                                                "params": {"state": "off"}}]})
    rollout_id = create.create(body, published, cloud).rollout.rollout_id
    ((topic, payload),) = [(t, p) for t, p in published.sent if t.endswith("/down/plan")]
    sent = protocol.decode(payload, topic)
    assert isinstance(sent, Plan)
    assert sent.window == Window("01:00", "02:00", [], "Europe/Berlin")
    # The site was offline; it comes back at 14:00, its time, and gets the plan then.
    clock.set(on(0, "14:00", "Europe/Berlin"))
    site.start()
    bmc.forget_requests()
    recorder.publish(topic, payload)
    (held,) = waiting(recorder, sent.execution_id)
    opens = on(1, "01:00", "Europe/Berlin")
    assert held.waiting_until == opens
    assert bmc.received == [], "outside its window, the site does not run the plan"
    ingest.handle_message(*up(held), clock=cloud)
    stored = Execution.get(rollout_id, SITE, consistent_read=True)
    shown = views.execution(stored)
    assert shown["state"] == "sent"
    in_utc = datetime.fromtimestamp(opens, UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert shown["message"] == ("waiting for the site's maintenance window, which opens at "
                                f"{in_utc} UTC")
    table = rollout_table({"rollout": {"rollout_id": rollout_id, "state": "running"},
                           "executions": [shown]})
    out = Console(width=300, record=True)
    out.print(table)
    assert f"waiting for the site's maintenance window, which opens at {in_utc} UTC" in \
        out.export_text(), "edgeplane rollouts status shows it"
    # Hours later, long past the site timeout, it is not timed out: it waits for its window.
    cloud.set(on(0, "20:00", "Europe/Berlin"))
    tick.tick(published, cloud)
    assert Execution.get(rollout_id, SITE, consistent_read=True).state == "sent"
    # The window opens on the site: the plan runs, and the cloud takes its result.
    site.stop()
    clock.set(opens - 4)
    site.start()
    result = result_of(recorder, sent.execution_id)
    assert result.state == "succeeded", result.message
    for message in reports(recorder, sent.execution_id, Progress) + [result]:
        ingest.handle_message(*up(message), clock=cloud)
    finished = Execution.get(rollout_id, SITE, consistent_read=True)
    assert finished.state == "succeeded"
    assert finished.waiting_until is None
