"""The IPMI simulator, driven by the real ipmitool (an independent IPMI client)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from edge_gateway.drivers.ipmi.errors import NoAnswer
from edge_gateway.drivers.ipmi.ping import ping
from edgeplane_dev.ipmi_sim import SimulatorProcess
from tests.support import IpmiBmc, wait_until

pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None,
                                reason="ipmitool is not installed (apt-get install ipmitool)")


@pytest.fixture
def sim(ipmi_bmcs) -> IpmiBmc:
    """A BMC of the test's own, never used before."""
    return ipmi_bmcs.fresh()


def ipmitool(sim: IpmiBmc | SimulatorProcess, *args: str, username: str = "admin",
             password: str = "password") -> subprocess.CompletedProcess[str]:
    # -R 1 -N 1: one attempt, 1 s timeout, so a refused login fails fast.
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(sim.port), "-U", username,
         "-P", password, "-R", "1", "-N", "1", *args],
        capture_output=True, text=True, timeout=20)


def ok(sim: IpmiBmc | SimulatorProcess, *args: str) -> str:
    result = ipmitool(sim, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_power_status_on_off(sim):
    assert "Chassis Power is off" in ok(sim, "power", "status")
    assert "Up/On" in ok(sim, "power", "on")
    assert "Chassis Power is on" in ok(sim, "power", "status")
    assert "Down/Off" in ok(sim, "power", "off")
    assert "Chassis Power is off" in ok(sim, "power", "status")


def test_reset_of_a_machine_that_is_off_is_refused(sim):
    result = ipmitool(sim, "power", "reset")
    assert result.returncode != 0
    assert "not supported in present state" in result.stderr


def test_bootdev_pxe_reads_back_in_the_boot_flags(sim):
    ok(sim, "chassis", "bootdev", "pxe")
    flags = ok(sim, "chassis", "bootparam", "get", "5")
    assert "Boot parameter data: 8004000000" in flags
    assert "Boot Flag Valid" in flags
    assert "Options apply to only next boot" in flags
    assert "Force PXE" in flags


def test_once_override_is_consumed_by_the_next_boot(sim):
    ok(sim, "chassis", "bootdev", "pxe")
    ok(sim, "power", "on")
    flags = ok(sim, "chassis", "bootparam", "get", "5")
    assert "Boot Flag Invalid" in flags


def test_persistent_override_survives_a_power_cycle(sim):
    ok(sim, "chassis", "bootdev", "disk", "options=persistent")
    ok(sim, "power", "on")
    ok(sim, "power", "cycle")
    flags = ok(sim, "chassis", "bootparam", "get", "5")
    assert "Boot Flag Valid" in flags
    assert "Options apply to all future boots" in flags
    assert "Force Boot from default Hard-Drive" in flags


def test_power_change_reads_back_after_the_delay(ipmi_bmcs):
    sim = ipmi_bmcs.fresh(power_delay=0.3)
    ok(sim, "power", "on")
    assert "Chassis Power is off" in ok(sim, "power", "status")  # not yet
    time.sleep(0.35)
    assert "Chassis Power is on" in ok(sim, "power", "status")


def test_device_id_and_fru_look_like_a_server(sim):
    info = ok(sim, "mc", "info")
    assert "IPMI Version              : 2.0" in info
    assert "Manufacturer ID           : 32473" in info
    assert "Chassis Device" in info
    fru = ok(sim, "fru", "print", "0")
    assert "Chassis Type          : Rack Mount Chassis" in fru
    assert "Board Mfg             : Edgeplane" in fru
    assert "Board Part Number     : EP-SIM-1-MB" in fru
    assert "Product Manufacturer  : Edgeplane" in fru
    assert "Product Name          : Simulated Server" in fru
    assert f"Product Serial        : EPSIM-{sim.port:05d}" in fru


def test_wrong_password_is_refused(sim):
    result = ipmitool(sim, "power", "status", password="wrong")
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr


def test_unknown_user_is_refused(sim):
    result = ipmitool(sim, "-v", "power", "status", username="nobody")
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr
    # Refused by the BMC's answer (RAKP 2 status), not for want of one.
    assert "RAKP 2 message indicates an error : unauthorized name" in result.stderr


def test_only_cipher_suite_3_is_offered(sim):
    result = ipmitool(sim, "-C", "17", "power", "status")
    assert result.returncode != 0
    assert "Chassis Power is" in ok(sim, "-C", "3", "power", "status")


def test_sigterm_stops_the_simulator_cleanly(tmp_path):
    log = tmp_path / "ipmi-sim.log"
    sim = SimulatorProcess(log_path=log).start()
    assert sim.process is not None
    process = sim.process
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=5) == 0, "it handled the signal (else: -SIGTERM)"
    assert "stopped" in log.read_text().splitlines()[-1]
    sim.stop()


def rows(listing: str) -> dict[str, list[str]]:
    """ipmitool's "name | a | b" table rows by name."""
    table = {}
    for line in listing.splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 1:
            table[cells[0]] = cells[1:]
    return table


def test_sdr_lists_the_sensors_and_main_power_ones_read_only_while_on(sim):
    sensors = rows(ok(sim, "sdr", "list"))
    assert list(sensors) == ["CPU Temp", "Inlet Temp", "FAN1", "FAN2", "12V"]
    assert sensors["Inlet Temp"] == ["24 degrees C", "ok"]  # on standby power
    assert sensors["FAN1"] == ["no reading", "ns"]
    ok(sim, "power", "on")
    sensors = rows(ok(sim, "sdr", "list"))
    assert sensors == {"CPU Temp": ["45 degrees C", "ok"], "Inlet Temp": ["24 degrees C", "ok"],
                       "FAN1": ["8400 RPM", "ok"], "FAN2": ["8500 RPM", "ok"],
                       "12V": ["12.06 Volts", "ok"]}


def test_sensor_list_shows_the_thresholds(sim):
    ok(sim, "power", "on")
    sensors = rows(ok(sim, "sensor", "list"))
    # value, units, status, lnr, lc, lnc, unc, uc, unr
    assert sensors["CPU Temp"] == ["45.000", "degrees C", "ok", "na", "na", "na", "85.000",
                                   "90.000", "95.000"]
    assert sensors["FAN2"][3:6] == ["300.000", "500.000", "800.000"]
    assert sensors["12V"][4:8] == ["10.800", "11.400", "12.600", "13.200"]


def test_a_failed_fan_reads_non_recoverable_and_is_logged(ipmi_bmcs):
    faulty = ipmi_bmcs.fresh(faults=["fan-failed"])
    ok(faulty, "power", "on")
    assert rows(ok(faulty, "sdr", "list"))["FAN2"] == ["0 RPM", "nr"]
    assert "Lower Non-recoverable going low" in ok(faulty, "sel", "list")


def test_power_changes_are_logged_in_the_sel(sim):
    assert "SEL has no entries" in ipmitool(sim, "sel", "list").stderr
    ok(sim, "power", "on")
    ok(sim, "power", "cycle")
    ok(sim, "power", "reset")
    ok(sim, "power", "soft")
    events = [row[2:] for row in rows(ok(sim, "sel", "list")).values()]
    assert events == [["Power Unit #0x60", "Power off/down", "Deasserted"],
                      ["Power Unit #0x60", "Power cycle", "Asserted"],
                      ["System Boot Initiated #0x61", "Initiated by hard reset", "Asserted"],
                      ["System ACPI Power State #0x62", "S5/G2: soft-off", "Asserted"],
                      ["Power Unit #0x60", "Power off/down", "Asserted"]]
    assert "Chassis Power is off" in ok(sim, "power", "status")
    assert "Entries          : 5" in ok(sim, "sel", "info")


def test_sel_clear_empties_it(sim):
    ok(sim, "power", "on")
    assert "Entries          : 1" in ok(sim, "sel", "info")
    ok(sim, "sel", "clear")
    assert "SEL has no entries" in ipmitool(sim, "sel", "list").stderr
    assert "Entries          : 0" in ok(sim, "sel", "info")


def test_bootdev_bios_with_efi_reads_back_in_the_boot_flags(sim):
    ok(sim, "chassis", "bootdev", "bios", "options=efiboot")
    flags = ok(sim, "chassis", "bootparam", "get", "5")
    assert "Boot parameter data: a018000000" in flags
    assert "BIOS EFI boot" in flags
    assert "Force Boot into BIOS Setup" in flags
    ok(sim, "chassis", "bootdev", "floppy", "options=persistent")  # where a USB stick boots
    flags = ok(sim, "chassis", "bootparam", "get", "5")
    assert "BIOS PC Compatible (legacy) boot" in flags
    assert "Force Boot from Floppy/primary removable media" in flags


def test_a_bmc_without_sdr_and_sel_refuses_their_commands(ipmi_bmcs):
    bare = ipmi_bmcs.fresh(faults=["no-sdr", "no-sel"])
    assert "Chassis Power is off" in ok(bare, "power", "status")
    assert "Invalid command" in ipmitool(bare, "sdr", "list").stderr
    assert "Invalid command" in ipmitool(bare, "sel", "list").stderr
    assert "Sensor Device" not in ok(bare, "mc", "info")


def test_cold_reset_silences_the_bmc_then_it_answers_again(sim):
    ok(sim, "power", "on")
    assert "Sent cold reset command to MC" in ok(sim, "mc", "reset", "cold")
    with pytest.raises(NoAnswer):  # not even a ping is answered
        ping("127.0.0.1", sim.port, deadline=time.monotonic() + 0.3)
    wait_until(lambda: answers_ping(sim), timeout=5, what="the BMC back after its reset")
    assert "Chassis Power is on" in ok(sim, "power", "status")  # the host ran on


def answers_ping(sim: IpmiBmc) -> bool:
    try:
        ping("127.0.0.1", sim.port, deadline=time.monotonic() + 0.05)
    except NoAnswer:
        return False
    return True
