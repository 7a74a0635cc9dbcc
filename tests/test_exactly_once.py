"""Exactly once on the site: a gateway killed mid-plan (SIGKILL) and started again resumes
from the journal: steps that ended are not run again, a step that acts every time and was in
flight is re-checked (``uncertain``, with what the BMC shows), never repeated; a journaled
cancel survives the restart; report numbers go on growing.

Real parts: ``edge-gateway run`` as a process on mosquitto, the Redfish simulator (which
records every request it handled) with a ``latency`` fault holding a request in flight
while the gateway is killed. The cloud's side: an uncertain machine fails its execution for
good (never retried), like a failure that needs an operator.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, interface
from edge_gateway.executor import PlanExecutor, encode_step
from edge_gateway.journal import SCHEMA, Journal
from edgeplane import protocol
from edgeplane.protocol import (
    BmcProtocol,
    MachineResult,
    Plan,
    PlanStep,
    Progress,
    Result,
    StepResult,
)
from edgeplane_dev.processes import spawn, stop
from edgeplane_dev.redfish_sim import BmcOptions, Fault, RedfishBmc
from edgeplane_dev.stack import gateway_config
from tests.support import PLAN_KEYS, SimulatedRedfish, sign, up, wait_until

SITE = "shop-0077"
MACHINE = "srv-1"
BIN = Path(sys.executable).parent
RESET = r"/Actions/ComputerSystem\.Reset$"
HELD = 4.0  # seconds the simulator holds the request the gateway is killed during

pytestmark = pytest.mark.timeout(180)


# --- helpers ---------------------------------------------------------------------------------


class GatewayProcess:
    """``edge-gateway run`` for one site with one Redfish machine, killed and started again
    at will; its journal is a file beside its config."""

    def __init__(self, tmp_path: Path, broker_port: int, bmc_url: str) -> None:
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(gateway_config(SITE, broker_port, [
            {"id": MACHINE, "protocol": "redfish", "address": bmc_url}], None, PLAN_KEYS))
        self.config.chmod(0o600)
        self.journal = tmp_path / "journal.db"
        self.log = tmp_path / "gateway.log"
        self.process: subprocess.Popen | None = None

    def start(self, recorder) -> None:
        online = len([p for p in recorder.of_kind(protocol.Presence) if p.online])
        self.process = spawn([str(BIN / "edge-gateway"), "run", "--config", str(self.config)],
                             self.log)
        recorder.wait_for(lambda ms: len([p for p in ms if p.online]) > online,
                          protocol.Presence, timeout=30)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, grace=10)

    def journaled(self, query: str) -> list[tuple]:
        """What the running gateway's journal holds (read-only, beside it)."""
        with sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True) as db:
            return db.execute(query).fetchall()


@pytest.fixture
def simulated(redfish_bmcs) -> SimulatedRedfish:
    return redfish_bmcs.fresh(BmcOptions(power_delay=0.2))


@pytest.fixture
def bmc(simulated) -> RedfishBmc:
    return simulated.bmc


@pytest.fixture
def gateway(tmp_path, broker, simulated) -> Iterator[GatewayProcess]:
    process = GatewayProcess(tmp_path, broker.port, simulated.url)
    yield process
    process.stop()


def plan(execution_id: str, *steps: tuple[str, dict]) -> Plan:
    return Plan(site=SITE, execution_id=execution_id, rollout_id=execution_id.split(".")[0],
                observe=False, steps=[PlanStep(task, params, [MACHINE]) for task, params in steps])


def resets(bmc: RedfishBmc) -> int:
    return sum(1 for method, path, _ in bmc.received
               if method == "POST" and path.endswith("/Actions/ComputerSystem.Reset"))


def hold(bmc: RedfishBmc, method: str, path: str) -> Fault:
    """The next such request waits ``HELD`` s in the BMC before it is handled."""
    return bmc.faults.add(Fault("latency", path=path, method=method, count=1, seconds=HELD))


def in_flight(bmc: RedfishBmc) -> bool:
    """True once the held request has reached the BMC (its fault is used up)."""
    return not bmc.faults.listing()


def reports(recorder, execution_id: str) -> list[Progress]:
    return [m for _, m in recorder.messages
            if isinstance(m, Progress) and m.execution_id == execution_id]


def result_of(recorder, execution_id: str) -> Result:
    return recorder.wait_for(
        lambda ms: any(m.execution_id == execution_id for m in ms), Result, timeout=60)[-1]


# --- a gateway killed mid-plan -----------------------------------------------------------------


def test_a_power_cycle_in_flight_at_a_kill_is_uncertain_and_never_repeated(
        gateway, bmc, recorder):
    gateway.start(recorder)
    hold(bmc, "POST", RESET)
    execution = f"r-cycle.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(
        execution, ("power.cycle", {}), ("boot.override", {"target": "cd"}))))
    wait_until(lambda: in_flight(bmc), timeout=30, what="the reset reaching the BMC")
    gateway.kill()
    wait_until(lambda: resets(bmc) == 1, timeout=HELD + 5, what="the held reset handled")
    before = reports(recorder, execution)

    gateway.start(recorder)
    result = result_of(recorder, execution)
    (machine,) = result.machines
    cycle, boot = machine.steps
    assert (result.state, machine.state) == ("failed", "failed")
    assert result.message == "1 of 1 machines failed: srv-1; uncertain, for an operator to " \
        "check: srv-1"
    assert cycle.state == "uncertain" and cycle.retryable is False
    assert "in flight when the gateway stopped" in cycle.message
    assert "is not run again" in cycle.message and "the BMC shows: power is" in cycle.message
    assert cycle.data is not None and cycle.data["power"] in ("on", "off")
    assert (boot.state, boot.message) == ("skipped", "skipped: an earlier step is uncertain")
    assert resets(bmc) == 1, "the BMC got exactly one reset"
    assert not [p for m, p, _ in bmc.received if m == "PATCH"], "no later step ran"
    # Report numbers go on growing across the kill: no two reports share one (a report
    # the outbox sends again after the restart keeps its id and its number).
    numbers = {m.id: m.seq for m in reports(recorder, execution)}
    sent_before = {m.id for m in before}
    assert before and len(set(numbers.values())) == len(numbers)
    assert min(n for i, n in numbers.items() if i not in sent_before) > \
        max(m.seq for m in before)
    assert result.seq == max(numbers.values())


def test_after_a_kill_steps_that_ended_do_not_run_again(gateway, bmc, recorder):
    gateway.start(recorder)
    hold(bmc, "PATCH", r"/Systems/[^/]+$")  # the boot override: the second step
    execution = f"r-next.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(
        execution, ("power.cycle", {}), ("boot.override", {"target": "cd"}))))
    wait_until(lambda: in_flight(bmc), timeout=30, what="the boot override reaching the BMC")
    gateway.kill()
    wait_until(lambda: any(m == "PATCH" for m, _, _ in bmc.received), timeout=HELD + 5,
               what="the held boot override handled")
    handled = len(bmc.received)

    gateway.start(recorder)
    result = result_of(recorder, execution)
    cycle, boot = result.machines[0].steps
    assert result.state == "succeeded"
    assert cycle.state == "succeeded" and "power cycled" in cycle.message
    assert boot.state == "succeeded" and boot.changed is False, \
        "the boot override in flight ran again as an ensure: it read it was done"
    after = bmc.received[handled:]
    assert resets(bmc) == 1, "the power cycle that ended did not run again"
    assert not [p for m, p, _ in after if m == "PATCH" or "/Actions/" in p], \
        "after the restart the gateway only read"


def test_a_journaled_cancel_survives_a_kill(gateway, bmc, recorder):
    gateway.start(recorder)
    hold(bmc, "PATCH", r"/Systems/[^/]+$")
    execution = f"r-cancel.{SITE}"
    recorder.publish(protocol.plan_topic(SITE), sign(plan(
        execution, ("boot.override", {"target": "cd"}), ("power.cycle", {}))))
    wait_until(lambda: in_flight(bmc), timeout=30, what="the boot override reaching the BMC")
    recorder.publish(protocol.cancel_topic(SITE), sign(protocol.Cancel(
        site=SITE, execution_id=execution, reason="operator canceled")))
    wait_until(lambda: gateway.journaled("SELECT execution_id FROM cancels"), timeout=10,
               what="the cancel journaled")
    gateway.kill()

    gateway.start(recorder)
    result = result_of(recorder, execution)
    boot, cycle = result.machines[0].steps
    assert result.state == "canceled"
    assert boot.state == "succeeded", "the step in flight was the machine's current step"
    assert (cycle.state, cycle.message) == ("skipped", "skipped: the rollout was canceled")
    assert resets(bmc) == 0


def test_a_cancel_journaled_before_its_plan_started_holds_after_a_restart(
        gateway, bmc, recorder):
    execution = f"r-early.{SITE}"
    journal = Journal(gateway.journal)  # as a gateway stopped before the plan began left it
    journal.accept_plan(execution, sign(plan(execution, ("power.cycle", {}))))
    journal.cancel(execution, "operator canceled")
    journal.close()
    gateway.start(recorder)
    result = result_of(recorder, execution)
    assert (result.state, result.message) == ("canceled", "canceled before it started")
    assert resets(bmc) == 0


# --- the executor on a journal, in process ------------------------------------------------


def site_config(tmp_path: Path, address: str) -> SiteConfig:
    return SiteConfig(site=SITE, journal=tmp_path / "journal.db", mqtt=MqttSettings(),
                      machines=(MachineConfig(
                          id=MACHINE, protocol=BmcProtocol.REDFISH, timeout=5,
                          power_timeout=10, poll_interval=0.1, min_interval=0,
                          credentials=BmcCredentials(address, "admin", "password")),))


def run(tmp_path: Path, url: str, journal: Journal, the_plan: Plan) -> MachineResult:
    executor = PlanExecutor(site_config(tmp_path, url),
                            lambda m: create_driver(m.protocol, m.credentials, timeout=5),
                            journal=journal)
    (machine,) = executor.execute(the_plan, lambda snapshot: None)
    return machine


@pytest.fixture
def one_bmc(redfish_bmcs):
    return redfish_bmcs.fresh(BmcOptions(power_delay=0.1))


def test_a_plan_resumed_between_steps_starts_at_the_next_one(tmp_path, one_bmc):
    journal = Journal(tmp_path / "journal.db")
    the_plan = plan(f"r-between.{SITE}", ("power.cycle", {}),
                    ("boot.override", {"target": "cd"}))
    ended = StepResult(task="power.cycle", state="succeeded", changed=True,
                       message="power cycled (power.cycle is not idempotent)")
    journal.step_started(the_plan.execution_id, MACHINE, 0, "power.cycle")
    journal.step_ended(the_plan.execution_id, MACHINE, 0, "power.cycle", encode_step(ended))
    machine = run(tmp_path, one_bmc.url, journal, the_plan)
    assert machine.state == "succeeded"
    assert machine.steps[0] == ended, "the journal's result, not a second cycle"
    assert machine.steps[1].state == "succeeded" and machine.steps[1].changed is True
    assert resets(one_bmc.bmc) == 0
    journaled = journal.steps(the_plan.execution_id)[MACHINE]
    assert [s.result is not None for s in journaled.values()] == [True, True]


def test_a_failed_step_in_the_journal_still_stops_its_machine(tmp_path, one_bmc):
    journal = Journal(tmp_path / "journal.db")
    the_plan = plan(f"r-failed.{SITE}", ("boot.override", {"target": "cd"}),
                    ("power.cycle", {}))
    failed = StepResult(task="boot.override", state="failed", message="BMC said no")
    journal.step_ended(the_plan.execution_id, MACHINE, 0, "boot.override", encode_step(failed))
    machine = run(tmp_path, one_bmc.url, journal, the_plan)
    assert machine.state == "failed"
    assert machine.steps[1].message == "skipped: an earlier step failed"
    assert one_bmc.bmc.received == [], "nothing was asked of the BMC"


def test_a_bios_apply_with_reboot_in_flight_is_done_once_its_values_are_in_effect(
        tmp_path, one_bmc):
    journal = Journal(tmp_path / "journal.db")
    driver = create_driver(BmcProtocol.REDFISH,
                           BmcCredentials(one_bmc.url, "admin", "password"), timeout=5)
    try:
        current = interface(driver, protocol.Capability.BIOS).get_bios().current
    finally:
        driver.close()
    name, value = next((k, v) for k, v in sorted(current.items()) if isinstance(v, str))
    the_plan = plan(f"r-bios.{SITE}", ("bios.apply", {"attributes": {name: value},
                                                      "reboot": True}))
    journal.step_started(the_plan.execution_id, MACHINE, 0, "bios.apply")
    machine = run(tmp_path, one_bmc.url, journal, the_plan)
    (step,) = machine.steps
    assert step.state == "succeeded"
    assert step.message == "done before the gateway restarted: all 1 attributes in effect"
    assert resets(one_bmc.bmc) == 0


def test_a_bmc_reset_in_flight_is_uncertain_with_whether_the_bmc_answers(tmp_path, one_bmc):
    journal = Journal(tmp_path / "journal.db")
    the_plan = plan(f"r-bmc.{SITE}", ("bmc.reset", {}), ("power.ensure", {"state": "on"}))
    journal.step_started(the_plan.execution_id, MACHINE, 0, "bmc.reset")
    machine = run(tmp_path, one_bmc.url, journal, the_plan)
    reset, after = machine.steps
    assert reset.state == "uncertain"
    assert "the BMC shows: the BMC answers; power is" in reset.message
    assert after.state == "skipped"
    assert not [p for m, p, _ in one_bmc.bmc.received if "/Actions/" in p], "nothing was reset"


# --- the journal ------------------------------------------------------------------------------


def test_a_journal_written_by_an_older_gateway_opens_and_resumes(tmp_path):
    path = tmp_path / "journal.db"
    old_schema = SCHEMA[:SCHEMA.index("CREATE TABLE IF NOT EXISTS steps")]
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO plans (execution_id, payload, state, seq, received_at) "
                   "VALUES ('r-old.shop-0077', x'7b7d', 'running', 3, 1.0)")
    journal = Journal(path)
    assert [p.execution_id for p in journal.unfinished_plans()] == ["r-old.shop-0077"]
    assert journal.next_seq("r-old.shop-0077") == 4
    assert journal.steps("r-old.shop-0077") == {}
    assert journal.cancel("r-old.shop-0077", "canceled") is True
    assert journal.cancel("r-old.shop-0077", "canceled") is False
    journal.close()
    assert Journal(path).canceled() == ["r-old.shop-0077"]


def test_a_finished_plan_forgets_its_steps_but_keeps_its_result(tmp_path):
    journal = Journal(tmp_path / "journal.db")
    journal.accept_plan("r1.shop-0077", b"{}")
    journal.step_started("r1.shop-0077", MACHINE, 0, "power.cycle")
    assert journal.has_steps("r1.shop-0077")
    journal.finish_plan("r1.shop-0077", b"result")
    assert not journal.has_steps("r1.shop-0077")
    plan_row = journal.plan("r1.shop-0077")
    assert plan_row is not None and plan_row.result == b"result"


# --- the cloud's side ---------------------------------------------------------------------------


def test_the_cloud_never_retries_an_execution_with_an_uncertain_machine(aws, published):
    from chalicelib import ingest
    from chalicelib.models import Execution, Machine, Site
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn
    Site(SITE, name=SITE, tags=["fleet"], timezone="UTC", online=True).save()
    for machine in ("srv-1", "srv-2"):
        Machine(SITE, machine, protocol="redfish", address="10.0.0.1",
                capabilities=["power"]).save()
    body = RolloutIn.model_validate({
        "sites": [SITE], "steps": [{"task": "power.cycle", "params": {}}],
        "policy": {"retries": {"max": 3, "backoff": 10}}})
    rollout_id = create.create(body, published).rollout.rollout_id
    uncertain = StepResult(task="power.cycle", state="uncertain", message="power is on")
    unreachable = StepResult(task="power.cycle", state="failed", retryable=True,
                             message="BMC did not answer")
    result = Result(site=SITE, execution_id=Execution.make_id(rollout_id, SITE), seq=5,
                    state="failed", message="2 of 2 machines failed", machines=[
                        protocol.summarize(MachineResult("srv-1", "failed", [uncertain])),
                        MachineResult("srv-2", "failed", [unreachable])])
    ingest.handle_message(*up(result))
    execution = Execution.get(rollout_id, SITE, consistent_read=True)
    assert execution.state == "failed", "not queued again: the retry would cycle srv-1 again"
