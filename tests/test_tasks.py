"""Task semantics (ensure, read back, refuse before touching, stall, not-idempotent) on the
simulated BMC, whose changes take time like a real one's. The same tasks run against the
Redfish and IPMI simulators in test_tasks_on_emulators.py."""

from __future__ import annotations

import pytest

from edge_gateway.config import MachineConfig
from edge_gateway.drivers.base import BmcCredentials, BootOverride
from edge_gateway.errors import BmcError, GatewayError
from edge_gateway.tasks import TaskContext, run_task
from edgeplane.protocol import BmcProtocol, BootMode, BootTarget, PowerState, ProtocolError
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine


@pytest.fixture
def machine():
    return SimulatedMachine(power_delay=0.05)


def context(machine: SimulatedMachine, power_timeout: float = 2.0) -> TaskContext:
    config = MachineConfig(id="m1", protocol=BmcProtocol.REDFISH, power_timeout=power_timeout,
                           poll_interval=0.01, min_interval=0.0,
                           credentials=BmcCredentials("10.0.0.9", "admin", "pw"))
    return TaskContext(SimulatedDriver(config.credentials, machine), config)


def run(machine, task, **params):
    return run_task(task, context(machine), params)


def writes(machine):
    return [c for c in machine.calls if not c.startswith(("get_", "read_", "describe"))]


def test_power_ensure_acts_once_then_reports_unchanged(machine):
    first = run(machine, "power.ensure", state="on")
    assert first.changed and first.message == "powered on (was off)"
    machine.calls.clear()
    second = run(machine, "power.ensure", state="on")
    assert not second.changed and writes(machine) == []


def test_graceful_off_that_does_not_finish_is_forced(machine):
    machine.power = PowerState.ON
    ctx = context(machine)
    ctx.driver.request_graceful_shutdown = lambda: None  # an OS that ignores ACPI
    outcome = run_task("power.ensure", ctx, {"state": "off", "graceful_timeout": 1})
    assert outcome.changed and "forced off" in outcome.message
    assert machine.power == PowerState.OFF


def test_power_cycle_is_not_idempotent_and_says_so(machine):
    machine.power = PowerState.ON
    for _ in range(2):
        outcome = run(machine, "power.cycle")
        assert outcome.changed and "not idempotent" in outcome.message
    assert machine.calls.count("request_power_cycle") == 2


def test_wait_for_times_out_with_the_state_named(machine):
    with pytest.raises(BmcError, match="10.0.0.9: wait for power on failed: still not on"):
        run(machine, "wait.for", power="on", timeout=1)


def test_boot_override_with_firmware_mode(machine):
    outcome = run(machine, "boot.override", target="usb", firmware_mode="uefi")
    assert outcome.changed and outcome.message == "next boot: usb (once, uefi)"
    assert machine.boot.target == BootTarget.USB
    assert not run(machine, "boot.override", target="usb").changed


def test_bios_apply_refuses_every_bad_attribute_before_touching_the_bmc(machine):
    with pytest.raises(GatewayError) as refused:
        run(machine, "bios.apply", attributes={"ProcTurboMode": "Maybe", "NoSuch": 1,
                                               "ProcCoreDisable": 99, "SerialNumber": "x"})
    message = str(refused.value)
    assert "10.0.0.9" in message
    assert "ProcTurboMode='Maybe': not allowed (allowed: Enabled, Disabled)" in message
    assert "NoSuch=1: not an attribute this BMC lists" in message
    assert "ProcCoreDisable=99: above the maximum 64" in message
    assert "SerialNumber='x': read-only" in message
    assert writes(machine) == [], "nothing was written"


def test_bios_apply_pending_then_verified_after_reboot(machine):
    pending = run(machine, "bios.apply", attributes={"ProcTurboMode": "Disabled"})
    assert pending.changed and pending.data == {"pending": {"ProcTurboMode": "Disabled"},
                                                "reboot_required": True}
    assert machine.bios["ProcTurboMode"] == "Enabled"
    applied = run(machine, "bios.apply", attributes={"ProcTurboMode": "Disabled"}, reboot=True)
    assert applied.changed and "verified after a reboot" in applied.message
    assert machine.bios["ProcTurboMode"] == "Disabled" and machine.power == PowerState.ON
    assert not run(machine, "bios.apply", attributes={"ProcTurboMode": "Disabled"}).changed


def test_firmware_update_follows_the_job_and_verifies_the_version(machine):
    machine.update_seconds = 0.05
    outcome = run(machine, "firmware.update", image="http://repo/bmc-1.2.3.bin",
                  component="BMC", version="1.2.3")
    assert outcome.changed and outcome.message == "BMC updated to 1.2.3"
    machine.calls.clear()
    again = run(machine, "firmware.update", image="http://repo/bmc-1.2.3.bin",
                component="BMC", version="1.2.3")
    assert not again.changed and writes(machine) == []


def test_a_stalled_firmware_update_is_reported_with_the_bmc_task_state(machine):
    machine.update_outcome = "running"
    with pytest.raises(BmcError, match=r"stalled: not finished after 10 s; the BMC's task is "
                                       r"Running at 50%"):
        run_task("firmware.update", _fast_clock(context(machine)),
                 {"image": "http://repo/bmc-2.0.bin", "timeout": 10})


def test_a_failed_firmware_update_says_what_the_bmc_said(machine):
    machine.update_outcome = "failed"
    with pytest.raises(BmcError, match="task ended Exception: image signature check failed"):
        run(machine, "firmware.update", image="http://repo/bmc-2.0.bin")


def test_media_insert_is_an_ensure_and_can_boot_from_it(machine):
    outcome = run(machine, "media.insert", image="http://repo/live.iso", boot=True)
    assert outcome.changed and outcome.data == {"slot": "cd", "image": "http://repo/live.iso"}
    assert machine.boot == BootOverride(BootTarget.CD, BootMode.ONCE)
    assert not run(machine, "media.insert", image="http://repo/live.iso").changed
    assert run(machine, "media.eject").message == "ejected cd"
    assert not run(machine, "media.eject").changed


def test_health_check_fails_on_a_critical_fan_naming_it(machine):
    assert run(machine, "health.check").message == "health ok"
    machine.fan_failed = True
    with pytest.raises(GatewayError, match="health is critical: Fan 1 critical, fans critical"):
        run(machine, "health.check")
    assert "fans critical" in run(machine, "health.check", fail_on="never").message


def test_sel_collect_and_clear(machine):
    run(machine, "power.ensure", state="on")
    collected = run(machine, "sel.collect", limit=10)
    assert collected.data["entries"] and not collected.changed
    cleared = run(machine, "sel.clear")
    assert cleared.changed and cleared.message.startswith("cleared ")
    assert [e.message for e in machine.sel] == ["Log cleared"]


def test_bmc_reset_waits_until_the_bmc_answers_again(machine):
    outcome = run(machine, "bmc.reset", timeout=5)
    assert outcome.changed and "not idempotent" in outcome.message


def test_inventory_collect_returns_the_sections(machine):
    outcome = run(machine, "inventory.collect")
    assert {"system", "processors", "memory", "nics", "storage", "bmc"} <= set(outcome.data)
    assert "2 processors" in outcome.message


@pytest.mark.parametrize("task, params, error", [
    ("power.ensure", {"state": "sideways"}, "allowed: on, off"),
    ("media.insert", {"image": "ftp://x/y.iso"}, "must be an http:// or https:// URL"),
    ("bios.apply", {"attributes": {}}, "must be a non-empty object"),
    ("sel.collect", {"limit": 0}, "the minimum is 1"),
    ("power.cycle", {"force": True}, "unknown parameter"),
])
def test_bad_parameters_never_reach_the_bmc(machine, task, params, error):
    with pytest.raises(ProtocolError, match=error):
        run(machine, task, **params)
    assert machine.calls == []


def _fast_clock(ctx: TaskContext) -> TaskContext:
    """A clock that jumps a second per sleep, so a 10 s timeout passes at once."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += 1.0

    return TaskContext(ctx.driver, ctx.machine, sleep=sleep, monotonic=lambda: now[0])
