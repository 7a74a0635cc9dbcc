"""Gateways sharing one worker pool keep their own semantics: order, bounds, cancel, journal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.journal import Journal
from edge_gateway.workers import WorkerPool
from edgeplane import protocol
from edgeplane.protocol import BmcProtocol, Cancel, Plan, PlanStep, PowerState
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine
from tests.support import PLAN_KEYS, sign, wait_until

MACHINES = ["m1", "m2", "m3", "m4"]


class RecordingTransport:
    """Stands in for MQTT: keeps what is published, acknowledges it at once."""

    def __init__(self) -> None:
        self.session = 1.0
        self.connected = threading.Event()
        self.messages: list[protocol.Message] = []
        self._delivered = None
        self._lock = threading.Lock()

    def start(self, on_connect, on_message, on_delivered) -> None:
        self._delivered = on_delivered

    def publish(self, topic: str, payload: bytes, key: str, retain: bool = False) -> None:
        with self._lock:
            self.messages.append(protocol.decode(payload, topic))
        self._delivered(key)

    def stop(self) -> None:
        pass

    def kinds(self, execution_id: str | None = None) -> list[str]:
        with self._lock:
            return [m.KIND for m in self.messages
                    if execution_id is None or getattr(m, "execution_id", None) == execution_id]


class Busy:
    """Counts machines of one site inside a power request at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()


class SlowDriver(SimulatedDriver):
    """A power request takes a while, so that machines running at once overlap."""

    def __init__(self, machine: MachineConfig, state: SimulatedMachine, busy: Busy) -> None:
        super().__init__(machine.credentials, state)
        self.busy = busy

    def request_power_state(self, state: PowerState) -> None:
        with self.busy.lock:
            self.busy.now += 1
            self.busy.peak = max(self.busy.peak, self.busy.now)
        time.sleep(0.05)
        with self.busy.lock:
            self.busy.now -= 1
        super().request_power_state(state)


class PooledSite:
    def __init__(self, site: str, pool: WorkerPool, max_parallel: int) -> None:
        machines = tuple(
            MachineConfig(id=m, protocol=BmcProtocol.IPMI, power_timeout=5, poll_interval=0.01,
                          min_interval=0.0,
                          credentials=BmcCredentials(f"10.0.0.{i + 1}", "admin", "secret"))
            for i, m in enumerate(MACHINES))
        self.config = SiteConfig(site=site, journal=Path(":memory:"), mqtt=MqttSettings(),
                                 machines=machines, max_parallel=max_parallel,
                                 progress_interval=0.0, observe_interval=0,
                                 plan_keys=PLAN_KEYS)
        self.state = {m: SimulatedMachine() for m in MACHINES}
        self.busy = Busy()
        self.transport = RecordingTransport()
        self.gateway = Gateway(
            self.config, transport_factory=lambda gw: self.transport,
            journal=Journal(":memory:"),
            driver_factory=lambda m: SlowDriver(m, self.state[m.id], self.busy), pool=pool)

    def plan(self, execution_id: str, state: str = "on") -> None:
        plan = Plan(site=self.config.site, execution_id=execution_id, rollout_id="r1",
                    steps=[PlanStep("power.ensure", {"state": state}, MACHINES),
                           PlanStep("boot.override", {"target": "pxe", "mode": "once"},
                                    MACHINES)])
        self.gateway.handle_message(protocol.plan_topic(self.config.site), sign(plan))


@pytest.fixture
def pool():
    made = WorkerPool(6, idle_timeout=0.2, name="pooled")
    yield made
    made.shutdown()


@pytest.fixture
def sites(pool):
    made = [PooledSite(f"shop-{n:04d}", pool, max_parallel=2) for n in range(1, 4)]
    for site in made:
        site.gateway.start()
    yield made
    for site in made:
        site.gateway.stop()


def test_an_idle_gateway_holds_no_thread(sites, pool):
    assert all(s.gateway.idle.is_set() for s in sites)
    assert pool.threads == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("shop-")]


def test_each_site_runs_its_plans_in_order_each_followed_by_its_observation(sites, pool):
    for site in sites:
        for n in range(3):
            site.plan(f"r{n}.{site.config.site}", "on" if n % 2 == 0 else "off")
    assert all(s.gateway.idle.wait(10) for s in sites)
    for site in sites:
        kinds = [(m.KIND, m.execution_id) for m in site.transport.messages
                 if m.KIND in ("result", "observed")]
        executions = [f"r{n}.{site.config.site}" for n in range(3)]
        assert kinds == [(kind, e) for e in executions for kind in ("result", "observed")]
        results = [m for m in site.transport.messages if m.KIND == "result"]
        assert [r.state for r in results] == ["succeeded"] * 3
        assert all(m.power == PowerState.ON for m in site.state.values())  # the last plan: on
        for execution in executions:  # progress, then the result, then the observation
            kinds_of_one = site.transport.kinds(execution)
            assert kinds_of_one[0] == "progress" and kinds_of_one[-2:] == ["result", "observed"]


def test_a_site_works_on_at_most_max_parallel_machines_and_sites_share_the_pool(sites, pool):
    for site in sites:
        site.plan(f"r1.{site.config.site}")
    assert all(s.gateway.idle.wait(10) for s in sites)
    assert [s.busy.peak for s in sites] == [2, 2, 2]
    assert pool.peak_threads <= 6
    wait_until(lambda: pool.threads == 0, what="the threads ending once the sites are idle")


def test_a_canceled_plan_stops_and_the_next_plan_of_the_site_still_runs(sites):
    site = sites[0]
    site.plan("r1.shop-0001")
    site.plan("r2.shop-0001")
    site.gateway.handle_message(
        protocol.cancel_topic(site.config.site),
        sign(Cancel(site=site.config.site, execution_id="r1.shop-0001", reason="test")))
    assert site.gateway.idle.wait(10)
    results = {m.execution_id: m for m in site.transport.messages if m.KIND == "result"}
    assert results["r1.shop-0001"].state == "canceled"
    assert results["r2.shop-0001"].state == "succeeded"


def test_a_plan_arriving_after_stop_stays_journaled_for_the_restart(pool):
    site = PooledSite("shop-0009", pool, max_parallel=4)
    site.gateway.start()
    journal = site.gateway.journal
    site.gateway.journal.close = lambda: None  # keep it readable after stop
    site.gateway.stop()
    site.plan("late.shop-0009")
    assert [p.execution_id for p in journal.unfinished_plans()] == ["late.shop-0009"]
    assert "result" not in site.transport.kinds()
