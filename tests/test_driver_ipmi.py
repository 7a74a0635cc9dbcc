"""The IPMI driver against simulated BMCs (each a real IPMI server in a child process)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from pyghmi.ipmi.private import session as pyghmi_session

from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, BootOverride
from edge_gateway.drivers.ipmi import IpmiDriver, parse_address, wait_for_calls
from edge_gateway.drivers.ipmi.ping import ping_packet
from edge_gateway.drivers.ipmi.receive import receive_without_blocking
from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError, ConfigError
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, Capability, PowerState
from edgeplane_dev.ports import free_port
from tests.support import IpmiBmc, wait_until

POWER_DELAY = 0.2  # the simulated chassis takes this long to read back a power change
LEGACY, UEFI = BootFirmwareMode.LEGACY, BootFirmwareMode.UEFI
ALL_CAPABILITIES = {Capability.POWER, Capability.BOOT, Capability.INVENTORY, Capability.HEALTH,
                    Capability.SEL, Capability.BMC_RESET}


@pytest.fixture(scope="module", autouse=True)
def no_call_outlives_the_tests():
    yield
    assert wait_for_calls(timeout=10), "an IPMI call outlived the tests"


@pytest.fixture
def bmc(ipmi_bmcs) -> IpmiBmc:
    """A simulated BMC of this test's own: off, no boot override, an empty SEL."""
    return ipmi_bmcs.fresh(power_delay=POWER_DELAY)


@pytest.fixture
def faulty(ipmi_bmcs) -> IpmiBmc:
    """A BMC whose FAN2 has failed and that refuses a power cycle."""
    return ipmi_bmcs.fresh(power_delay=0.05, faults=["fan-failed", "no-power-cycle"])


@pytest.fixture
def bare(ipmi_bmcs) -> IpmiBmc:
    """A BMC without SDR repository and SEL."""
    return ipmi_bmcs.fresh(faults=["no-sdr", "no-sel"])


@pytest.fixture
def make_driver():
    drivers: list[IpmiDriver] = []

    def make(address: str, username: str = "admin", password: str = "password",
             timeout: float = 5.0) -> IpmiDriver:
        driver = IpmiDriver(BmcCredentials(address, username, password), timeout=timeout)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def wait_for_power(driver: IpmiDriver, state: PowerState) -> None:
    wait_until(lambda: driver.get_power_state() == state, what=f"power reading back {state}")


def test_nothing_listening_is_unreachable_at_once(make_driver):
    address = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    with pytest.raises(BmcUnreachableError) as caught:
        make_driver(address, timeout=5).get_power_state()
    # The port is refused: said at once, not after waiting out the timeout for an answer.
    assert "nothing listens on UDP port" in str(caught.value)
    assert address in str(caught.value)
    assert "read power state" in str(caught.value)


def test_a_bmc_that_never_answers_is_unreachable_within_the_timeout(make_driver):
    """Within its timeout the driver only pings: pyghmi's login, which retries for 5 s, never
    begins against a BMC that does not answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(BmcUnreachableError) as caught:
            make_driver(address, timeout=0.5).describe()
        assert wait_for_calls(timeout=10), "the call ended: nothing more will be sent"
        received = datagrams(silent)
    assert address in str(caught.value) and "no answer" in str(caught.value)
    assert received and set(received) == {ping_packet()}, "pings, and nothing else"


def datagrams(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on the socket."""
    sock.setblocking(False)
    received = []
    while True:
        try:
            received.append(sock.recv(4096))
        except BlockingIOError:
            return received


def test_power_on_and_off_read_back_after_the_chassis_delay(bmc, make_driver):
    driver = make_driver(bmc.address)
    assert driver.get_power_state() == PowerState.OFF
    driver.request_power_state(PowerState.ON)
    assert driver.get_power_state() == PowerState.OFF  # accepted, not done yet
    wait_for_power(driver, PowerState.ON)
    driver.request_power_state(PowerState.ON)  # already on: nothing to do, no error
    assert driver.get_power_state() == PowerState.ON
    driver.request_power_state(PowerState.OFF)
    wait_for_power(driver, PowerState.OFF)


def test_boot_override_once_and_continuous_read_back(bmc, make_driver):
    driver = make_driver(bmc.address)
    assert driver.get_boot_override() == BootOverride(target=None, mode=None)
    for target, mode in [(BootTarget.PXE, BootMode.ONCE), (BootTarget.DISK, BootMode.CONTINUOUS),
                         (BootTarget.CD, BootMode.ONCE)]:
        driver.set_boot_override(target, mode)
        assert driver.get_boot_override() == BootOverride(target, mode, LEGACY)


def test_once_override_is_gone_after_the_next_boot(bmc, make_driver):
    driver = make_driver(bmc.address)
    driver.set_boot_override(BootTarget.DISK, BootMode.CONTINUOUS)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    assert driver.get_boot_override() == BootOverride(BootTarget.DISK, BootMode.CONTINUOUS,
                                                      LEGACY)
    driver.set_boot_override(BootTarget.PXE, BootMode.ONCE)
    driver.request_power_state(PowerState.OFF)
    wait_for_power(driver, PowerState.OFF)
    assert driver.get_boot_override() == BootOverride(BootTarget.PXE, BootMode.ONCE, LEGACY)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    assert driver.get_boot_override() == BootOverride(target=None, mode=None)


def test_describe_reads_device_id_fru_and_power(bmc, make_driver):
    driver = make_driver(bmc.address)
    info = driver.describe()
    assert info.protocol == "ipmi"
    assert (info.manufacturer, info.model) == ("Edgeplane", "Simulated Server")
    assert info.serial == f"EPSIM-{bmc.port:05d}"
    assert info.power == PowerState.OFF
    assert info.capabilities == ALL_CAPABILITIES
    assert info.extra["manufacturer_id"] == "32473"
    assert info.extra["bmc_firmware"] == "2.41"
    assert len(info.extra["system_guid"]) == 36


def test_wrong_password_is_an_auth_error_naming_the_bmc(bmc, make_driver):
    driver = make_driver(bmc.address, password="wrong")
    with pytest.raises(BmcAuthError) as caught:
        driver.get_power_state()
    assert bmc.address in str(caught.value)
    assert caught.value.address == bmc.address


def test_unknown_user_is_an_auth_error(bmc, make_driver):
    with pytest.raises(BmcAuthError):
        make_driver(bmc.address, username="nobody").describe()


def test_good_credentials_still_work_after_bad_ones(bmc, make_driver):
    with pytest.raises(BmcAuthError):
        make_driver(bmc.address, password="wrong").get_power_state()
    assert make_driver(bmc.address).get_power_state() in set(PowerState)


def test_a_login_after_a_failed_one_leaves_the_sessions_with_other_bmcs_alone(ipmi_bmcs, bmc,
                                                                             make_driver):
    """A failed login leaves a half-open session on its BMC, which the next login there
    replaces; the simulator, which tells clients apart by address and port, keeps this
    client's sessions with its other BMCs."""
    other = make_driver(ipmi_bmcs.fresh(power_delay=POWER_DELAY).address, timeout=2)
    assert other.get_power_state() in set(PowerState)
    with pytest.raises(BmcAuthError):
        make_driver(bmc.address, password="wrong").get_power_state()
    assert make_driver(bmc.address).get_power_state() in set(PowerState)
    assert other.get_power_state() in set(PowerState)  # on the session it had


def test_drivers_of_one_bmc_share_its_session_until_the_last_closes(bmc, make_driver):
    first, second = make_driver(bmc.address), make_driver(bmc.address)
    first.get_power_state()
    second.get_power_state()
    first.close()
    first.close()  # twice is fine
    assert second.get_power_state() in set(PowerState)  # its session was not logged out
    second.close()
    assert first.get_power_state() in set(PowerState)  # a closed driver logs in again


def test_created_through_the_driver_registry(bmc):
    credentials = BmcCredentials(f"ipmi://{bmc.address}", "admin", "password")
    driver = create_driver("ipmi", credentials, timeout=5)
    try:
        assert isinstance(driver, IpmiDriver)
        assert driver.get_power_state() in set(PowerState)
    finally:
        driver.close()


def test_many_bmcs_from_many_threads_at_once(ipmi_bmcs, make_driver):
    """Each BMC gets one thread that sets and reads back boot overrides, one that reads."""
    addresses = [ipmi_bmcs.fresh(power_delay=POWER_DELAY).address for _ in range(5)]
    errors: list[BaseException] = []
    plan = [(BootTarget.PXE, BootMode.ONCE), (BootTarget.DISK, BootMode.CONTINUOUS),
            (BootTarget.CD, BootMode.CONTINUOUS)]

    def writer(address: str) -> None:
        driver = make_driver(address)
        for i in range(10):
            target, mode = plan[i % len(plan)]
            driver.set_boot_override(target, mode)
            if driver.get_boot_override().target != target:
                errors.append(AssertionError(f"{address}: override {target} did not read back"))

    def reader(address: str) -> None:
        driver = make_driver(address)
        for _ in range(10):
            driver.get_power_state()
        driver.describe()

    def guarded(work, address: str) -> None:
        try:
            work(address)
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(work, address))
               for address in addresses for work in (writer, reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


class SendComesBetween(socket.socket):
    """A socket on which another thread's send always comes between pyghmi's making it
    non-blocking and its read: every pyghmi send makes the socket blocking again."""

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        if not flag:
            super().setblocking(True)


def test_pyghmi_reads_a_socket_without_waiting_whatever_a_send_left_it_in():
    """pyghmi's I/O thread drains every socket until a read finds it empty; a read that waits
    instead silences every BMC on that thread (the simulator's, or the gateway's retries)."""
    receive_without_blocking()
    with SendComesBetween(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        read: list[object] = []
        reader = threading.Thread(target=lambda: read.append(
            pyghmi_session._io_recvfrom(sock, 3000)), daemon=True)
        reader.start()
        reader.join(timeout=2)
        if reader.is_alive():  # it waits for a packet: give it one, then fail
            sock.sendto(b"wake", sock.getsockname())
            reader.join(timeout=2)
        assert read == [None]


@pytest.mark.parametrize(("address", "expected"), [
    ("10.0.0.5", ("10.0.0.5", 623)),
    ("10.0.0.5:6230", ("10.0.0.5", 6230)),
    ("ipmi://bmc-7.example.net:624", ("bmc-7.example.net", 624)),
    ("ipmi://bmc-7.example.net", ("bmc-7.example.net", 623)),
    ("[fd00::12]:6231", ("fd00::12", 6231)),
    ("fd00::12", ("fd00::12", 623)),
])
def test_addresses(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "host:", "host:port", "host:70000", "ipmi://"])
def test_bad_addresses_are_config_errors(address):
    with pytest.raises(ConfigError):
        IpmiDriver(BmcCredentials(address, "admin", "password"))


def test_unresolvable_host_is_unreachable(make_driver):
    with pytest.raises(BmcError) as caught:
        make_driver("no-such-bmc.invalid:623", timeout=2).get_power_state()
    assert isinstance(caught.value, BmcUnreachableError)
    assert "no-such-bmc.invalid" in str(caught.value)


# --- boot targets and firmware mode -------------------------------------------------------


def test_usb_and_bios_targets_with_the_firmware_mode(bmc, make_driver):
    driver = make_driver(bmc.address)
    driver.set_boot_override(BootTarget.USB, BootMode.ONCE, UEFI)
    assert driver.get_boot_override() == BootOverride(BootTarget.USB, BootMode.ONCE, UEFI)
    driver.set_boot_override(BootTarget.BIOS, BootMode.CONTINUOUS)  # keeps UEFI
    assert driver.get_boot_override() == BootOverride(BootTarget.BIOS, BootMode.CONTINUOUS,
                                                      UEFI)
    driver.set_boot_override(BootTarget.PXE, BootMode.ONCE, LEGACY)
    assert driver.get_boot_override() == BootOverride(BootTarget.PXE, BootMode.ONCE, LEGACY)


def test_the_firmware_mode_is_kept_after_the_override_is_consumed(bmc, make_driver):
    driver = make_driver(bmc.address)
    driver.set_boot_override(BootTarget.CD, BootMode.ONCE, UEFI)
    driver.request_power_state(PowerState.ON)  # the boot consumes the override
    wait_for_power(driver, PowerState.ON)
    assert driver.get_boot_override() == BootOverride(target=None, mode=None)
    driver.set_boot_override(BootTarget.DISK, BootMode.ONCE)
    assert driver.get_boot_override() == BootOverride(BootTarget.DISK, BootMode.ONCE, UEFI)


# --- power: graceful shutdown, power cycle; the SEL they write ------------------------------


def test_power_cycle_and_graceful_shutdown_are_logged_in_the_sel(bmc, make_driver):
    driver = make_driver(bmc.address)
    driver.request_graceful_shutdown()  # off already: nothing is sent, no error
    assert driver.read_sel() == []
    with pytest.raises(BmcError) as caught:  # IPMI cycles only a machine that is on
        driver.request_power_cycle()
    assert bmc.address in str(caught.value) and "power cycle" in str(caught.value)

    logged_from = datetime.now(UTC).replace(microsecond=0)  # the SEL counts whole seconds
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    driver.request_power_cycle()
    assert driver.get_power_state() == PowerState.ON
    time.sleep(POWER_DELAY + 0.05)  # let the cycle finish, or the shutdown supersedes it
    driver.request_graceful_shutdown()
    wait_for_power(driver, PowerState.OFF)

    entries = driver.read_sel()
    logged_until = datetime.now(UTC)
    assert [entry.message for entry in entries] == [
        "Power Unit: Power on", "Power Unit: Power cycle", "ACPI State: Off",
        "Power Unit: Power off"]
    assert [int(entry.id) for entry in entries] == [1, 2, 3, 4]
    assert {entry.severity for entry in entries} == {"ok"}
    for entry in entries:
        assert entry.created is not None
        assert logged_from <= datetime.fromisoformat(entry.created) <= logged_until
    assert driver.read_sel(limit=2) == entries[-2:]
    assert driver.read_sel(limit=0) == []

    driver.clear_sel()
    assert driver.read_sel() == []
    driver.clear_sel()  # empty already: no error


def test_power_cycle_falls_back_to_a_reset_where_the_bmc_has_none(faulty, make_driver,
                                                                  caplog):
    driver = make_driver(faulty.address)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    with caplog.at_level(logging.INFO, logger="edge_gateway.drivers.ipmi"):
        driver.request_power_cycle()
    assert "refuses a power cycle (completion code 0xcc); hard reset instead" in caplog.text
    wait_until(lambda: driver.read_sel()[-1].message == "Sys Boot: Hard reset",
               what="the hard reset in the SEL")


# --- inventory and health -----------------------------------------------------------------


def test_collect_inventory_is_json_ready(bmc, make_driver):
    driver = make_driver(bmc.address)
    inventory = driver.collect_inventory()
    assert json.loads(json.dumps(inventory)) == inventory
    serial = f"EPSIM-{bmc.port:05d}"
    assert inventory["system"] == {"manufacturer": "Edgeplane", "model": "Simulated Server",
                                   "serial": serial, "uuid": inventory["system_guid"],
                                   "power": "off"}
    assert inventory["fru"]["product"] == {"manufacturer": "Edgeplane",
                                           "name": "Simulated Server",
                                           "part_number": "EP-SIM-1", "version": "1",
                                           "serial": serial}
    assert inventory["fru"]["board"]["part_number"] == "EP-SIM-1-MB"
    assert inventory["fru"]["board"]["manufactured"] == "2024-03-01T00:00"
    assert inventory["fru"]["chassis"] == {"type": "Rack Mount Chassis",
                                           "part_number": "EP-SIM-1", "serial": serial}
    device = inventory["device_id"]
    assert (device["manufacturer_id"], device["product_id"]) == (32473, 1)
    assert (device["firmware_revision"], device["ipmi_version"]) == ("2.41", "2.0")
    assert {"sdr_repository", "sel", "fru_inventory", "chassis"} <= set(
        device["additional_devices"])
    assert inventory["bmc"] == {"firmware": "2.41", "ipmi_version": "2.0"}
    assert inventory["system_guid"] == driver.describe().extra["system_guid"]


def test_health_reads_the_sensors_of_a_machine_off_and_on(bmc, make_driver):
    driver = make_driver(bmc.address)
    off = driver.check_health()
    readings = {sensor.name: sensor for sensor in off.sensors}
    assert list(readings) == ["CPU Temp", "Inlet Temp", "FAN1", "FAN2", "12V"]
    assert (readings["Inlet Temp"].value, readings["Inlet Temp"].health) == (24.0, "ok")
    assert (readings["FAN1"].value, readings["FAN1"].health) == (None, "unknown")
    assert off.health == "ok"  # what reads is fine; the rest has no power

    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    on = driver.check_health()
    assert on.health == "ok"
    assert on.components == {"temperatures": "ok", "fans": "ok", "voltages": "ok"}
    assert [(s.kind, s.value, s.units) for s in on.sensors] == [
        ("temperature", 45.0, "Cel"), ("temperature", 24.0, "Cel"), ("fan", 8400.0, "RPM"),
        ("fan", 8500.0, "RPM"), ("voltage", 12.06, "V")]


def test_a_failed_fan_makes_health_critical_and_is_in_the_sel(faulty, make_driver):
    driver = make_driver(faulty.address)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    report = driver.check_health()
    assert report.health == "critical"
    assert report.components["fans"] == "critical"
    fan2 = next(sensor for sensor in report.sensors if sensor.name == "FAN2")
    assert (fan2.value, fan2.health) == (0.0, "critical")
    failed = [entry for entry in driver.read_sel() if entry.message.startswith("FAN2")]
    assert [(entry.message, entry.severity) for entry in failed] == [
        ("FAN2: Lower non-recoverable", "critical")]


# --- what the BMC offers; the BMC itself --------------------------------------------------


def test_machine_capabilities_follow_what_the_bmc_answers(bmc, bare, make_driver):
    assert make_driver(bmc.address).machine_capabilities() == ALL_CAPABILITIES
    driver = make_driver(bare.address)
    assert driver.machine_capabilities() == ALL_CAPABILITIES - {Capability.HEALTH,
                                                                Capability.SEL}
    assert driver.describe().capabilities == driver.machine_capabilities()
    with pytest.raises(BmcError, match="check health failed: the BMC has no SDR repository"):
        driver.check_health()
    with pytest.raises(BmcError, match="read event log failed: the BMC has no system event"):
        driver.read_sel()
    with pytest.raises(BmcError) as caught:
        driver.clear_sel()
    assert caught.value.address == bare.address
    assert driver.collect_inventory()["fru"]["product"]["name"] == "Simulated Server"


def test_reset_bmc_drops_the_session_and_the_bmc_comes_back(bmc, make_driver):
    address = bmc.address
    driver = make_driver(address)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    driver.reset_bmc()
    with pytest.raises(BmcUnreachableError) as caught:  # silent while it restarts
        make_driver(address, timeout=0.3).get_power_state()
    assert address in str(caught.value)
    # A new session once it is back (the old one would time out: the BMC forgot it).
    assert driver.get_power_state() == PowerState.ON


# --- every method names the BMC and the operation when it fails ------------------------------

CALLS = {
    "machine_capabilities": lambda d: d.machine_capabilities(),
    "get_power_state": lambda d: d.get_power_state(),
    "request_power_state": lambda d: d.request_power_state(PowerState.ON),
    "request_graceful_shutdown": lambda d: d.request_graceful_shutdown(),
    "request_power_cycle": lambda d: d.request_power_cycle(),
    "get_boot_override": lambda d: d.get_boot_override(),
    "set_boot_override": lambda d: d.set_boot_override(BootTarget.USB, BootMode.ONCE, UEFI),
    "describe": lambda d: d.describe(),
    "collect_inventory": lambda d: d.collect_inventory(),
    "check_health": lambda d: d.check_health(),
    "read_sel": lambda d: d.read_sel(10),
    "clear_sel": lambda d: d.clear_sel(),
    "reset_bmc": lambda d: d.reset_bmc(),
}


@pytest.mark.parametrize("method", CALLS)
def test_every_method_is_unreachable_where_nothing_listens(method, make_driver):
    address = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    with pytest.raises(BmcUnreachableError) as caught:
        CALLS[method](make_driver(address, timeout=2))
    assert caught.value.address == address
    assert str(caught.value).startswith(f"BMC {address}: {caught.value.what} failed: ")


@pytest.mark.parametrize("method", CALLS)
def test_every_method_refuses_a_wrong_password(bmc, method, make_driver):
    with pytest.raises(BmcAuthError) as caught:
        CALLS[method](make_driver(bmc.address, password="wrong"))
    assert caught.value.address == bmc.address
    assert "credentials rejected" in str(caught.value)
