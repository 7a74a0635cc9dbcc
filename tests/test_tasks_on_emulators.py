"""Every task through the real drivers: on the Redfish simulator serving DMTF's
public-rackmount1, power/boot/media also on sushy-tools' emulator, and the IPMI tasks on the
IPMI simulator. What the BMC ends up in is read back from the simulator itself."""

from __future__ import annotations

import time

import pytest

from edge_gateway.config import MachineConfig
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.errors import BmcError, GatewayError
from edge_gateway.tasks import TaskContext, run_task
from edgeplane.protocol import BmcProtocol, Capability
from edgeplane_dev.redfish_sim import BmcOptions
from tests.support import TASKS, SimulatedRedfish

FAST = BmcOptions(power_delay=0.2, update_seconds=0.5, reset_seconds=0.5)


class Machine:
    """One machine's driver and task runner; the driver is closed by the fixture."""

    def __init__(self, protocol: BmcProtocol, address: str, username: str, password: str,
                 system_id: str | None = None, power_timeout: float = 10.0) -> None:
        self.config = MachineConfig(
            id="m1", protocol=protocol, timeout=5, power_timeout=power_timeout,
            poll_interval=0.1, min_interval=0.0,
            credentials=BmcCredentials(address, username, password, system_id=system_id))
        self.driver = create_driver(protocol, self.config.credentials, timeout=5)

    def run(self, task: str, **params):
        return run_task(task, TaskContext(self.driver, self.config), params)

    def run_fast_clock(self, task: str, **params):
        """Run with a clock that jumps a second per 0.1 s slept: long timeouts pass soon."""
        now = [0.0]

        def sleep(seconds: float) -> None:
            time.sleep(0.1)
            now[0] += 1.0

        context = TaskContext(self.driver, self.config, sleep=sleep, monotonic=lambda: now[0])
        return run_task(task, context, params)


@pytest.fixture
def redfish_sim(redfish_bmcs) -> SimulatedRedfish:
    """A simulated BMC of this test's own."""
    return redfish_bmcs.fresh(FAST)


@pytest.fixture
def server(redfish_sim):
    machine = Machine(BmcProtocol.REDFISH, redfish_sim.url, "admin", "password")
    yield machine
    machine.driver.close()


def sim_system(sim: SimulatedRedfish) -> dict:
    """The simulated system's document as the BMC holds it now."""
    bmc = sim.bmc
    bmc.settle()
    (path,) = bmc.systems
    return bmc.resources.get(path)


def writes(sim: SimulatedRedfish) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in sim.bmc.received if m in ("POST", "PATCH", "DELETE")
            and not p.endswith("/Sessions") and "/Sessions/" not in p]


# --- power ------------------------------------------------------------------------------


def test_power_ensure_off_gracefully_then_on(redfish_sim, server):
    off = server.run("power.ensure", state="off")
    assert off.changed and sim_system(redfish_sim)["PowerState"] == "Off"
    assert not server.run("power.ensure", state="off").changed
    on = server.run("power.ensure", state="on")
    assert on.changed and sim_system(redfish_sim)["PowerState"] == "On"
    resets = [body["ResetType"] for method, path, body in redfish_sim.bmc.received
              if path.endswith("ComputerSystem.Reset")]
    assert resets == ["GracefulShutdown", "On"]


def test_an_os_that_ignores_acpi_is_forced_off(redfish_bmcs):
    sim = redfish_bmcs.fresh(BmcOptions(power_delay=0.2, acpi=False))
    machine = Machine(BmcProtocol.REDFISH, sim.url, "admin", "password")
    outcome = machine.run("power.ensure", state="off", graceful_timeout=1)
    machine.driver.close()
    assert "forced off" in outcome.message and sim_system(sim)["PowerState"] == "Off"


def test_power_cycle_falls_back_to_force_restart_and_is_not_idempotent(redfish_sim, server):
    for _ in range(2):
        outcome = server.run("power.cycle")
        assert outcome.changed and "not idempotent" in outcome.message
    resets = [body["ResetType"] for method, path, body in redfish_sim.bmc.received
              if path.endswith("ComputerSystem.Reset")]
    assert resets == ["ForceRestart", "ForceRestart"]  # the mockup offers no PowerCycle


def test_wait_for_a_power_state(redfish_sim, server):
    assert not server.run("wait.for", power="on", timeout=2).changed
    with pytest.raises(BmcError, match="still not off"):
        server.run("wait.for", power="off", timeout=1)


# --- boot and media ---------------------------------------------------------------------


def test_boot_override_once_continuous_and_firmware_mode(redfish_sim, server):
    server.run("boot.override", target="disk", mode="continuous", firmware_mode="legacy")
    boot = sim_system(redfish_sim)["Boot"]
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"],
            boot["BootSourceOverrideMode"]) == ("Hdd", "Continuous", "Legacy")
    assert not server.run("boot.override", target="disk", mode="continuous").changed
    server.run("boot.override", target="bios", mode="once")
    boot = sim_system(redfish_sim)["Boot"]
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"]) == \
        ("BiosSetup", "Once")


def test_media_insert_ejects_the_old_image_and_boots_from_the_new_once(redfish_sim, server,
                                                                        images):
    image = images("installer.iso")
    outcome = server.run("media.insert", image=image, boot=True)
    assert outcome.changed
    slot = redfish_sim.bmc.resources.get(outcome.data["slot"])
    assert slot["Inserted"] and slot["Image"] == image
    boot = sim_system(redfish_sim)["Boot"]
    assert (boot["BootSourceOverrideTarget"], boot["BootSourceOverrideEnabled"]) == ("Cd",
                                                                                      "Once")
    assert not server.run("media.insert", image=image).changed
    assert server.run("media.eject").changed
    assert not redfish_sim.bmc.resources.get(outcome.data["slot"])["Inserted"]


def test_media_insert_of_an_image_the_bmc_cannot_fetch_names_it(server, images):
    missing = images("absent.iso")
    with pytest.raises(BmcError, match=f"HTTP 400 .*{missing} could not be fetched"):
        server.run("media.insert", image=missing)


# --- BIOS -------------------------------------------------------------------------------


def test_bios_read_shows_current_and_pending(server):
    outcome = server.run("bios.read")
    assert outcome.data["current"]["ProcTurboMode"] == "Enabled"
    assert outcome.data["pending"]["ProcTurboMode"] == "Disabled"  # the mockup's own


def test_bios_apply_refuses_values_outside_the_registry_before_writing(redfish_sim, server):
    with pytest.raises(GatewayError) as refused:
        server.run("bios.apply", attributes={"PowerProfile": "Ludicrous", "Overclock": "On",
                                             "ProcCoreDisable": 12})
    message = str(refused.value)
    assert "PowerProfile='Ludicrous': not allowed (allowed: MaxPerf, Balanced, PowerSaver)" \
        in message
    assert "Overclock='On': not an attribute this BMC lists" in message
    assert "ProcCoreDisable=12" in message
    assert writes(redfish_sim) == [], "nothing reached the BMC"


def test_bios_apply_pending_then_with_a_reboot_verified(redfish_sim, server):
    pending = server.run("bios.apply", attributes={"PowerProfile": "Balanced"})
    assert pending.data == {"pending": {"PowerProfile": "Balanced"}, "reboot_required": True}
    bios_path = next(iter(redfish_sim.bmc.systems.values())).bios_path
    assert redfish_sim.bmc.resources.get(bios_path)["Attributes"]["PowerProfile"] == "MaxPerf"
    applied = server.run("bios.apply", attributes={"PowerProfile": "Balanced",
                                                   "UsbControl": "UsbDisabled"},
                         reboot=True, timeout=10)
    assert "verified after a reboot" in applied.message
    current = redfish_sim.bmc.resources.get(bios_path)["Attributes"]
    assert (current["PowerProfile"], current["UsbControl"]) == ("Balanced", "UsbDisabled")
    assert not server.run("bios.apply", attributes={"PowerProfile": "Balanced"}).changed


# --- firmware ---------------------------------------------------------------------------


def test_firmware_inventory(server):
    components = server.run("firmware.inventory").data["components"]
    assert {c["name"]: c["version"] for c in components}["Contoso BMC Firmware"] == \
        "1.45.455b66-rev4"


@pytest.mark.parametrize("style", ["standard", "always-200", "empty-202"])
def test_firmware_update_follows_every_kind_of_task_monitor(redfish_bmcs, images, style):
    options = BmcOptions(power_delay=0.2, update_seconds=0.5, monitor_style=style)
    sim = redfish_bmcs.fresh(options)
    machine = Machine(BmcProtocol.REDFISH, sim.url, "admin", "password")
    image = images("bmc-1.46.0.bin")
    outcome = machine.run("firmware.update", image=image, component="BMC",
                          version="1.46.0")
    assert outcome.changed and outcome.message == "Contoso BMC Firmware updated to 1.46.0"
    again = machine.run("firmware.update", image=image, component="BMC", version="1.46.0")
    machine.driver.close()
    assert not again.changed
    updates = [body for method, path, body in sim.bmc.received
               if path.endswith("UpdateService.SimpleUpdate")]
    assert updates == [{"ImageURI": image, "TransferProtocol": "HTTP",
                        "Targets": ["/redfish/v1/UpdateService/FirmwareInventory/BMC"]}]


def test_a_stalled_firmware_update_is_reported_with_the_task_state(redfish_bmcs, images):
    sim = redfish_bmcs.fresh(BmcOptions(update_seconds=0.5, update_stalls_at=40))
    machine = Machine(BmcProtocol.REDFISH, sim.url, "admin", "password")
    with pytest.raises(BmcError, match=r"stalled: not finished after 10 s; the BMC's task "
                                       r"is Running at 40%"):
        machine.run_fast_clock("firmware.update", image=images("bmc-2.0.bin"), timeout=10)
    machine.driver.close()


def test_a_firmware_update_that_fails_says_what_the_bmc_said(server, images):
    with pytest.raises(BmcError, match="task ended Exception: .*absent-2.0.bin could not be "
                                       "fetched"):
        server.run("firmware.update", image=images("absent-2.0.bin"))


def test_a_version_that_does_not_read_back_fails_the_update(server, images):
    with pytest.raises(BmcError, match="the version reads 3.1, not 3.2"):
        server.run("firmware.update", image=images("bmc-3.1.bin"), component="BMC",
                   version="3.2")


# --- read-outs and the BMC ------------------------------------------------------------------


def test_inventory_collect(server):
    data = server.run("inventory.collect").data
    assert data["system"]["serial"] == "437XR1138R2"
    assert len(data["processors"]) >= 2 and data["memory"]
    assert "12:44:6A:3B:04:11" in {nic["mac"] for nic in data["nics"]}
    assert data["bmc"]["firmware_version"] == "1.45.455b66-rev4"


def test_health_check_reports_the_mockups_warning(server):
    report = server.run("health.check")
    assert "warning" in report.message
    with pytest.raises(GatewayError, match="health is warning"):
        server.run("health.check", fail_on="warning")


def test_sel_collect_and_clear(redfish_sim, server):
    entries = server.run("sel.collect").data["entries"]
    assert [e["message"] for e in entries][:1] == ["Temperature threshold exceeded"]
    assert server.run("sel.clear").changed
    assert [e["message"] for e in server.run("sel.collect").data["entries"]] == ["Log cleared"]


def test_bmc_reset_waits_until_the_bmc_answers_again(redfish_sim, server):
    outcome = server.run("bmc.reset", timeout=10)
    assert outcome.changed and "not idempotent" in outcome.message
    assert server.run("power.ensure", state="on").message.startswith("already on")


# --- sushy-tools' emulator ------------------------------------------------------------------


def test_power_boot_and_media_tasks_on_sushy_tools(sushy, images):
    machine = Machine(BmcProtocol.REDFISH, sushy.url, sushy.username, sushy.password,
                      system_id=sushy.system_id(TASKS), power_timeout=30)
    try:
        assert machine.run("power.ensure", state="on").changed  # 1-11 s on this emulator
        assert not machine.run("power.ensure", state="on").changed
        assert machine.run("boot.override", target="pxe").changed
        image = images("rescue.iso")
        assert machine.run("media.insert", image=image).changed
        assert not machine.run("media.insert", image=image).changed
        assert machine.run("media.eject").changed
    finally:
        machine.driver.close()


# --- IPMI -----------------------------------------------------------------------------------


@pytest.fixture
def ipmi(ipmi_bmcs):
    """A machine on a simulated IPMI BMC of this test's own."""
    machine = Machine(BmcProtocol.IPMI, ipmi_bmcs.fresh(power_delay=0.2).address, "admin",
                      "password")
    yield machine
    machine.driver.close()


def test_ipmi_power_boot_and_cycle(ipmi):
    ipmi.run("power.ensure", state="off")
    assert ipmi.run("power.ensure", state="on").changed
    assert not ipmi.run("power.ensure", state="on").changed
    assert ipmi.run("boot.override", target="pxe", mode="once").changed
    assert not ipmi.run("boot.override", target="pxe", mode="once").changed
    assert "not idempotent" in ipmi.run("power.cycle").message


def test_ipmi_readouts(ipmi):
    inventory = ipmi.run("inventory.collect").data
    assert inventory["fru"]["product"]["manufacturer"] == "Edgeplane"
    assert ipmi.run("health.check").data["sensors"]
    ipmi.run("power.ensure", state="on")  # the power-on event is in the SEL to clear
    assert ipmi.run("sel.clear").changed
    ipmi.run("power.ensure", state="off")
    messages = [e["message"] for e in ipmi.run("sel.collect").data["entries"]]
    assert len(messages) >= 2 and any("off" in m.lower() or "power" in m.lower()
                                      for m in messages)


def test_ipmi_bmc_reset_and_refusals(ipmi):
    assert "not idempotent" in ipmi.run("bmc.reset", timeout=20).message
    with pytest.raises(GatewayError, match="cannot do bios.apply"):
        ipmi.run("bios.apply", attributes={"ProcTurboMode": "Disabled"})


# --- a BMC of another shape -----------------------------------------------------------------


def test_a_bmc_without_bios_firmware_or_logs_says_so_and_still_works(redfish_bmcs, other_mockup,
                                                                      images):
    sim = redfish_bmcs.fresh(BmcOptions(power_delay=0.1), mockup=other_mockup)
    machine = Machine(BmcProtocol.REDFISH, sim.url, "admin", "password",
                      system_id="/redfish/v1/Systems/node-b")
    try:
        assert machine.driver.machine_capabilities() == {
            Capability.POWER, Capability.BOOT, Capability.MEDIA, Capability.INVENTORY}
        inventory = machine.run("inventory.collect").data
        assert inventory["system"]["manufacturer"] == "Other"
        assert machine.run("power.ensure", state="on").changed
        image = images("rescue.iso")
        assert machine.run("media.insert", image=image).changed  # under the manager
        inserts = [p for m, p, _ in sim.bmc.received if p.endswith("/Actions/Insert")]
        assert inserts == ["/redfish/v1/Managers/mgr/VM/usb0/Actions/Insert"]
        with pytest.raises(GatewayError, match="no Bios resource|no bios"):
            machine.run("bios.read")
    finally:
        machine.driver.close()


def test_bios_apply_overwrites_another_pending_value_of_a_wanted_attribute(redfish_sim, server):
    # The mockup has ProcTurboMode Enabled in effect and Disabled pending (written by someone
    # else): the reboot for PowerProfile would flip it unless bios.apply writes it too.
    applied = server.run("bios.apply", attributes={"ProcTurboMode": "Enabled",
                                                   "PowerProfile": "Balanced"},
                         reboot=True, timeout=10)
    assert "verified after a reboot" in applied.message
    bios_path = next(iter(redfish_sim.bmc.systems.values())).bios_path
    current = redfish_sim.bmc.resources.get(bios_path)["Attributes"]
    assert (current["ProcTurboMode"], current["PowerProfile"]) == ("Enabled", "Balanced")
    only_stale = server.run("bios.apply", attributes={"ProcTurboMode": "Enabled"})
    assert not only_stale.changed, "nothing pending any more"
