"""The IPMI driver against simulated BMCs (each a real IPMI server in a child process)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, BootOverride
from edge_gateway.drivers.ipmi import IpmiDriver, parse_address, wait_for_calls
from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError, ConfigError
from edgeplane.dev.ipmi_sim import SimulatorProcess
from edgeplane.dev.ports import free_port
from edgeplane.protocol import BootMode, BootTarget, Capability, PowerState

POWER_DELAY = 0.2  # the simulated chassis takes this long to read back a power change


@pytest.fixture(scope="module")
def sim():
    """Five simulated BMCs in one child process; no IPMI call is left running afterwards."""
    with SimulatorProcess(count=5, power_delay=POWER_DELAY) as running:
        yield running
        assert wait_for_calls(timeout=10), "an IPMI call outlived the tests"


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


def wait_for_power(driver: IpmiDriver, state: PowerState, within: float = 3.0) -> float:
    started = time.monotonic()
    while driver.get_power_state() != state:
        assert time.monotonic() - started < within, f"power never read back {state}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_nothing_listening_is_unreachable_at_once(make_driver):
    address = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    started = time.monotonic()
    with pytest.raises(BmcUnreachableError) as caught:
        make_driver(address, timeout=5).get_power_state()
    assert time.monotonic() - started < 1.0  # the port is refused: no need to wait
    assert address in str(caught.value)
    assert "read power state" in str(caught.value)


def test_a_bmc_that_never_answers_is_unreachable_within_the_timeout(make_driver):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(BmcUnreachableError) as caught:
            make_driver(address, timeout=0.5).describe()
        assert 0.4 < time.monotonic() - started < 0.8
    assert address in str(caught.value)


def test_power_on_and_off_read_back_after_the_chassis_delay(sim, make_driver):
    driver = make_driver(sim.addresses[0])
    assert driver.get_power_state() == PowerState.OFF
    driver.request_power_state(PowerState.ON)
    assert driver.get_power_state() == PowerState.OFF  # accepted, not done yet
    assert wait_for_power(driver, PowerState.ON) >= POWER_DELAY / 2
    driver.request_power_state(PowerState.ON)  # already on: nothing to do, no error
    assert driver.get_power_state() == PowerState.ON
    driver.request_power_state(PowerState.OFF)
    wait_for_power(driver, PowerState.OFF)


def test_boot_override_once_and_continuous_read_back(sim, make_driver):
    driver = make_driver(sim.addresses[1])
    assert driver.get_boot_override() == BootOverride(target=None, mode=None)
    for target, mode in [(BootTarget.PXE, BootMode.ONCE), (BootTarget.DISK, BootMode.CONTINUOUS),
                         (BootTarget.CD, BootMode.ONCE)]:
        driver.set_boot_override(target, mode)
        assert driver.get_boot_override() == BootOverride(target=target, mode=mode)


def test_once_override_is_gone_after_the_next_boot(sim, make_driver):
    driver = make_driver(sim.addresses[2])
    driver.set_boot_override(BootTarget.DISK, BootMode.CONTINUOUS)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    assert driver.get_boot_override() == BootOverride(BootTarget.DISK, BootMode.CONTINUOUS)
    driver.set_boot_override(BootTarget.PXE, BootMode.ONCE)
    driver.request_power_state(PowerState.OFF)
    wait_for_power(driver, PowerState.OFF)
    assert driver.get_boot_override() == BootOverride(BootTarget.PXE, BootMode.ONCE)
    driver.request_power_state(PowerState.ON)
    wait_for_power(driver, PowerState.ON)
    assert driver.get_boot_override() == BootOverride(target=None, mode=None)


def test_describe_reads_device_id_fru_and_power(sim, make_driver):
    driver = make_driver(sim.addresses[3])
    info = driver.describe()
    assert info.protocol == "ipmi"
    assert (info.manufacturer, info.model) == ("Edgeplane", "Simulated Server")
    assert info.serial == f"EPSIM-{sim.ports[3]:05d}"
    assert info.power == PowerState.OFF
    assert info.capabilities == {Capability.POWER, Capability.BOOT, Capability.INVENTORY}
    assert info.extra["manufacturer_id"] == "32473"
    assert info.extra["bmc_firmware"] == "2.41"
    assert len(info.extra["system_guid"]) == 36


def test_wrong_password_is_an_auth_error_naming_the_bmc(sim, make_driver):
    driver = make_driver(sim.addresses[4], password="wrong")
    with pytest.raises(BmcAuthError) as caught:
        driver.get_power_state()
    assert sim.addresses[4] in str(caught.value)
    assert caught.value.address == sim.addresses[4]


def test_unknown_user_is_an_auth_error(sim, make_driver):
    with pytest.raises(BmcAuthError):
        make_driver(sim.addresses[4], username="nobody").describe()


def test_good_credentials_still_work_after_bad_ones(sim, make_driver):
    with pytest.raises(BmcAuthError):
        make_driver(sim.addresses[4], password="wrong").get_power_state()
    assert make_driver(sim.addresses[4]).get_power_state() in set(PowerState)


def test_drivers_of_one_bmc_share_its_session_until_the_last_closes(sim, make_driver):
    first, second = make_driver(sim.addresses[4]), make_driver(sim.addresses[4])
    first.get_power_state()
    second.get_power_state()
    first.close()
    first.close()  # twice is fine
    assert second.get_power_state() in set(PowerState)  # its session was not logged out
    second.close()
    assert first.get_power_state() in set(PowerState)  # a closed driver logs in again


def test_created_through_the_driver_registry(sim):
    credentials = BmcCredentials(f"ipmi://{sim.addresses[4]}", "admin", "password")
    driver = create_driver("ipmi", credentials, timeout=5)
    try:
        assert isinstance(driver, IpmiDriver)
        assert driver.get_power_state() in set(PowerState)
    finally:
        driver.close()


def test_many_bmcs_from_many_threads_at_once(sim, make_driver):
    """Each BMC gets one thread that sets and reads back boot overrides, one that reads."""
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
               for address in sim.addresses for work in (writer, reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


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
