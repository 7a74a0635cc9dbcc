"""The gateway core against a real mosquitto, with simulated BMCs behind it."""

from __future__ import annotations

import dataclasses

import pytest

from edge_gateway.drivers.base import BootOverride
from edgeplane import protocol
from edgeplane.protocol import (
    BootMode,
    BootTarget,
    Capability,
    Inventory,
    Plan,
    PlanStep,
    PowerState,
    Presence,
    Progress,
    Result,
)
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine
from tests.support import GatewaySite, sign

SITE = "shop-0001"


@pytest.fixture
def site(tmp_path, broker):
    machines = {"srv-1": SimulatedMachine(power_delay=0.2, serial="S1"),
                "srv-2": SimulatedMachine(power=PowerState.ON, serial="S2")}
    s = GatewaySite(tmp_path, broker.port, SITE, machines)
    yield s
    s.stop()


def power_on_pxe_plan(execution_id: str = "r1.shop-0001",
                      machines: tuple[str, ...] = ("srv-1", "srv-2")) -> Plan:
    return Plan(site=SITE, execution_id=execution_id, rollout_id="r1", steps=[
        PlanStep("power.ensure", {"state": "on"}, list(machines)),
        PlanStep("boot.override", {"target": "pxe", "mode": "once"}, list(machines)),
    ])


def test_connect_reports_presence_and_inventory_without_credentials(site, recorder):
    site.start()
    presence = recorder.wait_for(lambda ms: any(m.online for m in ms), Presence)
    assert presence[-1].site == SITE
    inventory = recorder.wait_for(lambda ms: len(ms) == 1, Inventory)[0]
    by_id = {m.id: m for m in inventory.machines}
    assert set(by_id) == {"srv-1", "srv-2"}
    assert by_id["srv-2"].power == "on" and by_id["srv-1"].serial == "S1"
    assert by_id["srv-1"].capabilities == sorted(Capability)
    raw = [m for _, m in recorder.messages]
    assert "secret" not in repr(raw)


def test_plan_runs_and_reports_progress_then_result(site, recorder):
    site.start()
    recorder.publish(protocol.plan_topic(SITE), sign(power_on_pxe_plan()))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert result.state == "succeeded"
    machines = {m.machine: m for m in result.machines}
    srv1, srv2 = machines["srv-1"], machines["srv-2"]
    assert [s.state for s in srv1.steps] == ["succeeded", "succeeded"]
    assert srv1.steps[0].changed is True
    assert srv2.steps[0].changed is False and "already on" in srv2.steps[0].message
    assert site.machines["srv-1"].power == PowerState.ON
    assert site.machines["srv-1"].boot == BootOverride(BootTarget.PXE, BootMode.ONCE)
    progress = recorder.of_kind(Progress)
    assert progress, "progress is streamed before the result"
    seqs = [p.seq for p in progress] + [result.seq]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_a_failing_bmc_fails_only_its_machine_with_a_clear_message(site, recorder):
    site.machines["srv-2"].fail_with = "HTTP 503 Service Unavailable"
    site.start()
    recorder.publish(protocol.plan_topic(SITE), sign(power_on_pxe_plan()))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert result.state == "failed"
    machines = {m.machine: m for m in result.machines}
    assert machines["srv-1"].state == "succeeded"
    failed = machines["srv-2"]
    assert failed.state == "failed"
    assert [s.state for s in failed.steps] == ["failed", "skipped"]
    message = failed.steps[0].message
    for expected in (SITE, "srv-2", "power.ensure", "10.0.0.2", "HTTP 503"):
        assert expected in message


def test_duplicate_plan_does_not_run_twice_and_resends_the_result(site, recorder):
    site.start()
    plan = power_on_pxe_plan()
    recorder.publish(protocol.plan_topic(SITE), sign(plan))
    recorder.wait_for(lambda ms: len(ms) == 1, Result)
    assert site.gateway.idle.wait(10)  # the plan and the observation after it are done
    calls_before = len(site.machines["srv-1"].calls)
    again = dataclasses.replace(plan, id=protocol.new_id())
    recorder.publish(protocol.plan_topic(SITE), sign(again))
    results = recorder.wait_for(lambda ms: len(ms) == 2, Result)
    assert results[0].encode() == results[1].encode()
    assert len(site.machines["srv-1"].calls) == calls_before


def test_plan_for_a_machine_the_site_does_not_have_fails_that_machine(site, recorder):
    site.start()
    plan = power_on_pxe_plan(machines=("srv-1", "ghost"))
    recorder.publish(protocol.plan_topic(SITE), sign(plan))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    machines = {m.machine: m for m in result.machines}
    assert machines["srv-1"].state == "succeeded"
    assert machines["ghost"].state == "failed"
    assert "not in this site's configuration" in machines["ghost"].steps[0].message


def test_plan_sent_while_offline_arrives_on_reconnect(site, recorder):
    site.start()
    recorder.wait_for(lambda ms: len(ms) == 1, Inventory)
    site.stop()
    recorder.wait_for(lambda ms: any(not m.online for m in ms), Presence)
    recorder.publish(protocol.plan_topic(SITE), sign(power_on_pxe_plan()))
    site.start()
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert result.state == "succeeded"


def test_last_will_marks_the_site_offline_when_the_link_drops(site, recorder):
    gateway = site.start()
    recorder.wait_for(lambda ms: any(m.online for m in ms), Presence)
    online = [m for m in recorder.of_kind(Presence) if m.online][-1]
    gateway.transport._client._sock.close()  # the link dies without a DISCONNECT
    offline = recorder.wait_for(lambda ms: any(not m.online for m in ms), Presence)
    will = [m for m in offline if not m.online][0]
    assert will.session == online.session and will.order > online.order
    again = recorder.wait_for(
        lambda ms: any(m.online and m.session > online.session for m in ms), Presence)
    latest = max(again, key=lambda m: m.order)
    assert latest.online, "after reconnecting, the newest presence says online"


def test_results_survive_a_restart_while_the_broker_is_down(site, broker, recorder):
    gateway = site.start()
    recorder.wait_for(lambda ms: len(ms) == 1, Inventory)
    recorder.close()
    broker.stop()
    # The plan arrived just before the WAN went down; it runs, the result stays journaled.
    gateway.handle_message(protocol.plan_topic(SITE), sign(power_on_pxe_plan()))
    assert gateway.idle.wait(10)
    assert any(m.topic.endswith("/result") for m in gateway.journal.pending())
    site.stop()  # and the gateway restarts before the link is back
    broker.start()
    late = Recorder(broker.port, client_id="late-recorder")
    try:
        site.start()
        result = late.wait_for(lambda ms: len(ms) >= 1, Result)[0]
        assert result.execution_id == "r1.shop-0001" and result.state == "succeeded"
    finally:
        late.close()


def test_cancel_stops_a_running_plan_after_its_current_step(site, recorder):
    site.machines["srv-1"].power_delay = 1.0  # the first step takes a while
    site.start()
    plan = power_on_pxe_plan(machines=("srv-1",))
    recorder.publish(protocol.plan_topic(SITE), sign(plan))
    recorder.wait_for(lambda ms: len(ms) >= 1, Progress)
    recorder.publish(protocol.cancel_topic(SITE),
                     sign(protocol.Cancel(site=SITE, execution_id=plan.execution_id,
                                          reason="operator")))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert result.state == "canceled"
    steps = result.machines[0].steps
    assert [s.state for s in steps] == ["succeeded", "skipped"]
    assert steps[1].message == "skipped: the rollout was canceled"
    assert site.machines["srv-1"].boot.target is None, "the skipped step did not run"


def test_a_plan_asking_for_outcomes_gets_a_letter_per_step_and_no_observed_state(
        site, recorder):
    site.start()
    site.gateway.driver_factory = lambda m: _Broken(m, _refuse) if m.id == "srv-2" \
        else SimulatedDriver(m.credentials, site.machines[m.id])
    plan = dataclasses.replace(power_on_pxe_plan(), detail=protocol.Detail.OUTCOMES,
                               observe=False)
    recorder.publish(protocol.plan_topic(SITE), sign(plan))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    machines = {m.machine: m for m in result.machines}
    assert (machines["srv-1"].summary, machines["srv-1"].steps) == ("cc", [])
    assert machines["srv-2"].summary == "fs"  # the failure in full, the skip by its letter
    (failed,) = machines["srv-2"].steps
    assert (failed.index, failed.task) == (0, "power.ensure")
    assert "BMC said no" in failed.message
    recorder.publish(protocol.plan_topic(SITE), sign(dataclasses.replace(
        power_on_pxe_plan("r2.shop-0001"), observe=True)))
    recorder.wait_for(lambda ms: len(ms) == 2, Result)
    (observed,) = recorder.wait_for(lambda ms: len(ms) >= 1, protocol.Observed)
    assert observed.execution_id == "r2.shop-0001"  # only the plan that asked for it


def _refuse(*args, **kwargs):
    from edge_gateway.errors import BmcError

    raise BmcError("10.0.0.2", "set power", "BMC said no")


def test_a_plan_past_its_expiry_is_not_run(site, recorder):
    site.start()
    expired = dataclasses.replace(power_on_pxe_plan(), expires_at=1.0)
    recorder.publish(protocol.plan_topic(SITE), sign(expired))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert (result.state, result.machines) == ("expired", [])
    assert site.machines["srv-1"].power == PowerState.OFF


def test_an_unreachable_bmc_fails_as_retryable(site, recorder):
    from edge_gateway.errors import BmcUnreachableError

    def unreachable(*args, **kwargs):
        raise BmcUnreachableError("10.0.0.2", "read power state", "timed out after 5 s")

    site.start()
    site.gateway.driver_factory = lambda m: _Broken(m, unreachable) if m.id == "srv-2" \
        else SimulatedDriver(m.credentials, site.machines[m.id])
    recorder.publish(protocol.plan_topic(SITE), sign(power_on_pxe_plan()))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    failed = {m.machine: m for m in result.machines}["srv-2"].steps[0]
    assert failed.state == "failed" and failed.retryable is True


class _Broken(SimulatedDriver):
    def __init__(self, machine, fail) -> None:
        super().__init__(machine.credentials, SimulatedMachine())
        self.get_power_state = fail
