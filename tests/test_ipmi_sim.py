"""The IPMI simulator, driven by the real ipmitool (an independent IPMI client)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from edgeplane.dev.ipmi_sim import SimulatorProcess

pytestmark = pytest.mark.skipif(shutil.which("ipmitool") is None,
                                reason="ipmitool is not installed (apt-get install ipmitool)")


@pytest.fixture
def sim():
    with SimulatorProcess() as running:
        yield running


def ipmitool(sim: SimulatorProcess, *args: str, username: str = "admin",
             password: str = "password") -> subprocess.CompletedProcess[str]:
    # -R 1 -N 1: one attempt, 1 s timeout, so a refused login fails fast.
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(sim.port), "-U", username,
         "-P", password, "-R", "1", "-N", "1", *args],
        capture_output=True, text=True, timeout=20)


def ok(sim: SimulatorProcess, *args: str) -> str:
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


def test_power_change_reads_back_after_the_delay():
    with SimulatorProcess(power_delay=0.3) as sim:
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
    assert "Product Manufacturer  : Edgeplane" in fru
    assert "Product Name          : Simulated Server" in fru
    assert f"Product Serial        : EPSIM-{sim.port:05d}" in fru


def test_wrong_password_is_refused(sim):
    result = ipmitool(sim, "power", "status", password="wrong")
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr


def test_unknown_user_is_refused(sim):
    started = time.monotonic()
    result = ipmitool(sim, "power", "status", username="nobody")
    assert result.returncode != 0
    assert "Unable to establish IPMI v2 / RMCP+ session" in result.stderr
    assert time.monotonic() - started < 1.0  # refused at once (RAKP2 status), not timed out


def test_only_cipher_suite_3_is_offered(sim):
    result = ipmitool(sim, "-C", "17", "power", "status")
    assert result.returncode != 0
    assert "Chassis Power is" in ok(sim, "-C", "3", "power", "status")


def test_sigterm_stops_the_simulator_cleanly():
    sim = SimulatorProcess().start()
    assert sim.process is not None
    process = sim.process
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(timeout=5) == 0
    assert time.monotonic() - started < 1.0
    sim.stop()
