"""RedfishDriver against sushy-tools' emulator: a real HTTP Redfish service, fake hardware.

The session's emulator (several systems, basic auth on) serves these tests; a test that
changes a system has it to itself. Its power changes take effect after a random 1-11 s, so
the power test makes one transition per system, both at once, and polls for the read-back.
"""

from __future__ import annotations

import gc
import json
import socket
import weakref

import pytest
import requests

from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, BootOverride
from edge_gateway.drivers.redfish import RedfishDriver
from edge_gateway.drivers.redfish import service as service_module
from edge_gateway.drivers.redfish.service import RETRIES
from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError
from edge_gateway.probe import probe
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, Capability, PowerState
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.redfish_sim.bmc import DEFAULT_PASSWORD, DEFAULT_USERNAME
from edgeplane_dev.sushy_emulator import FakeSystem
from tests.support import (
    BOOTS,
    MEDIA,
    STARTS_OFF,
    STARTS_ON,
    SUSHY_MAX_CLIENTS,
    SUSHY_PASSWORD,
    SUSHY_USERNAME,
    SushyForTest,
    wait_until,
)

USERNAME, PASSWORD = SUSHY_USERNAME, SUSHY_PASSWORD
POWER_WAIT = 30.0  # the emulator applies a power change 1-11 s after the request

OFF_SYSTEM, ON_SYSTEM, BOOT_SYSTEM, MEDIA_SYSTEM = STARTS_OFF, STARTS_ON, BOOTS, MEDIA


@pytest.fixture
def emulator(sushy) -> SushyForTest:
    """The session's emulator; ``received()`` holds this test's requests."""
    return sushy


@pytest.fixture
def connect(emulator):
    """Make drivers for the emulator; all are closed after the test."""
    drivers: list[RedfishDriver] = []

    def make(system_id: str | None, password: str = PASSWORD, address: str | None = None,
             timeout: float = 5.0) -> RedfishDriver:
        assert len(drivers) < SUSHY_MAX_CLIENTS, "the emulator leaks past 10 clients"
        credentials = BmcCredentials(address=address or emulator.url, username=USERNAME,
                                     password=password, system_id=system_id)
        driver = create_driver("redfish", credentials, timeout=timeout)
        assert isinstance(driver, RedfishDriver)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


def system_id(emulator: SushyForTest, system: FakeSystem) -> str:
    return emulator.system_id(system)


def test_power_on_and_off_read_back(emulator, connect):
    turn_on = connect(system_id(emulator, OFF_SYSTEM))
    turn_off = connect(system_id(emulator, ON_SYSTEM))
    assert turn_on.get_power_state() == PowerState.OFF
    assert turn_off.get_power_state() == PowerState.ON

    wanted = {turn_on: PowerState.ON, turn_off: PowerState.OFF}
    for driver, state in wanted.items():
        driver.request_power_state(state)

    wait_until(lambda: {driver: driver.get_power_state() for driver in wanted} == wanted,
               timeout=POWER_WAIT, interval=0.25, what="both power changes read back")

    # Asking for the state a system is in sends nothing: one reset per system in all.
    for driver, state in wanted.items():
        driver.request_power_state(state)
        driver.get_power_state()
    resets = [path for method, path in emulator.received()
              if method == "POST" and path.endswith("/Actions/ComputerSystem.Reset")]
    assert len(resets) == 2
    for system in (OFF_SYSTEM, ON_SYSTEM):
        assert sum(path.startswith(system_id(emulator, system) + "/") for path in resets) == 1


def test_boot_override_read_back_compares_target(emulator, connect):
    driver = connect(system_id(emulator, BOOT_SYSTEM))

    driver.set_boot_override(BootTarget.PXE, BootMode.ONCE)
    once = driver.get_boot_override()
    assert once.target == BootTarget.PXE
    # sushy-tools reports "Once" as "Continuous": only the target is reliable here.
    assert once.mode in (BootMode.ONCE, BootMode.CONTINUOUS)

    driver.set_boot_override(BootTarget.DISK, BootMode.CONTINUOUS)
    # The fake driver reports BootSourceOverrideMode UEFI: the driver passes it on.
    assert driver.get_boot_override() == BootOverride(BootTarget.DISK, BootMode.CONTINUOUS,
                                                      BootFirmwareMode.UEFI)
    driver.set_boot_override(BootTarget.DISK, BootMode.CONTINUOUS)  # already so: no error


def test_media_insert_and_eject_read_back(emulator, connect, images):
    driver = connect(system_id(emulator, MEDIA_SYSTEM))
    slots = driver.get_virtual_media()
    cd = next(slot for slot in slots if "CD" in slot.media_types)
    assert not cd.inserted and cd.image is None
    image = images("boot.iso")

    driver.insert_media(image)  # no slot named: the first that takes a CD
    inserted = {slot.slot: slot for slot in driver.get_virtual_media()}[cd.slot]
    assert inserted.inserted and inserted.image == image
    driver.insert_media(image, cd.slot)  # already there: nothing sent

    driver.eject_media(cd.slot)
    ejected = {slot.slot: slot for slot in driver.get_virtual_media()}[cd.slot]
    assert not ejected.inserted and ejected.image is None
    driver.eject_media(cd.slot)  # nothing inserted: nothing sent

    # The InsertMedia/EjectMedia actions the slot advertises, once each.
    actions = [(method, path) for method, path in emulator.received()
               if path.startswith(cd.slot + "/Actions/")]
    assert actions == [("POST", cd.slot + "/Actions/VirtualMedia.InsertMedia"),
                       ("POST", cd.slot + "/Actions/VirtualMedia.EjectMedia")]


def test_describe(emulator, connect):
    wanted_id = system_id(emulator, OFF_SYSTEM)
    info = connect(wanted_id).describe()

    assert info.protocol == "redfish"
    assert info.manufacturer == "Sushy Emulator"
    assert info.model is None and info.serial is None  # the emulator reports neither
    assert info.power in (PowerState.ON, PowerState.OFF)
    # Read from the BMC: the fake driver has VirtualMedia, an UpdateService with
    # SimpleUpdate and a Status, but no Bios link, no LogServices and no Manager.Reset.
    assert info.capabilities == {Capability.POWER, Capability.BOOT, Capability.MEDIA,
                                 Capability.FIRMWARE, Capability.HEALTH, Capability.INVENTORY}
    assert info.extra["system_id"] == wanted_id
    assert info.extra["name"] == OFF_SYSTEM.name


def test_system_ids_follow_the_links(emulator, connect):
    assert sorted(connect(None).system_ids()) == sorted(emulator.system_ids)


def test_unknown_system_id_is_named(emulator, connect):
    missing = "/redfish/v1/Systems/no-such-system"
    with pytest.raises(BmcError) as caught:
        connect(missing).get_power_state()
    message = str(caught.value)
    assert missing in message and emulator.url in message
    assert all(known in message for known in emulator.system_ids)


def test_several_systems_and_none_named_lists_them(emulator, connect):
    with pytest.raises(BmcError) as caught:
        connect(None).describe()
    assert "none was named" in str(caught.value)
    assert all(known in str(caught.value) for known in emulator.system_ids)


def test_wrong_password_is_an_auth_error(emulator, connect):
    with pytest.raises(BmcAuthError) as caught:
        connect(emulator.system_ids[0], password="wrong").get_power_state()
    assert emulator.url in str(caught.value) and USERNAME in str(caught.value)


def test_nothing_listening_is_unreachable(connect):
    address = f"http://{LOOPBACK}:{free_port()}"
    with pytest.raises(BmcUnreachableError) as caught:
        connect(None, address=address).get_power_state()
    assert address in str(caught.value) and "refused" in str(caught.value)


def test_silent_bmc_times_out_as_unreachable(connect):
    """A BMC that accepts the connection but never answers: each attempt ends at the
    driver's timeout, and the driver gives up after its few attempts."""
    with socket.socket() as silent:
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        address = f"http://{LOOPBACK}:{silent.getsockname()[1]}"
        with pytest.raises(BmcUnreachableError) as caught:
            connect(None, address=address, timeout=0.3).get_power_state()
        attempts = accept_all(silent)
    assert "timed out" in str(caught.value)
    assert attempts == RETRIES, "one connection per attempt, then no more"


def accept_all(listening: socket.socket) -> int:
    """How many connections wait to be accepted (accepting and closing them)."""
    listening.setblocking(False)
    accepted = 0
    while True:
        try:
            connection, _ = listening.accept()
        except BlockingIOError:
            return accepted
        connection.close()
        accepted += 1


def test_close_is_idempotent_and_the_driver_reconnects(emulator, connect):
    driver = connect(emulator.system_ids[0])
    driver.get_power_state()
    driver.close()
    driver.close()
    assert driver.get_power_state() in (PowerState.ON, PowerState.OFF)


def test_a_closed_driver_is_freed_without_the_garbage_collector(redfish_bmcs):
    """Its connection (sushy's root, connector and session auth, requests' session) goes
    when the driver does: a gateway that closes a site's drivers does not hold them until
    the collector's next full pass. (Our simulator: it has a session service.)"""
    credentials = BmcCredentials(address=redfish_bmcs.fresh().url,
                                 username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD)
    driver = create_driver("redfish", credentials, timeout=5.0)
    assert isinstance(driver, RedfishDriver)
    gc.disable()
    try:
        driver.get_power_state()
        service = driver._service
        parts = [weakref.ref(part) for part in (service.root(), service.connector,
                                                service.connector._session)]
        driver.close()
        del driver, service
        assert [part() for part in parts] == [None, None, None]
    finally:
        gc.enable()


def test_bmcs_that_publish_the_same_registry_share_one_parsed_copy(redfish_bmcs):
    """Machines of one model send the same attribute registry: it is parsed once and every
    driver reads that copy. A registry that differs (here a BMC lists one attribute fewer)
    is a registry of its own, whatever its name."""
    bmcs = redfish_bmcs.fresh(count=3)
    (registry,) = [path for path in bmcs.bmcs[2].resources.paths()
                   if path.endswith("/BiosAttributeRegistryP89.v1_0_0.json")]
    fewer = bmcs.bmcs[2].resources.get(registry)  # a copy of its own
    entries = fewer["RegistryEntries"]["Attributes"]
    entries[:] = [entry for entry in entries if entry["AttributeName"] != "PowerProfile"]
    bmcs.bmcs[2].resources.put(registry, fewer)
    drivers = [create_driver("redfish", BmcCredentials(
        address=url, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD), timeout=5.0)
        for url in bmcs.urls]
    try:
        first, second, third = (driver.get_bios().registry for driver in drivers)
    finally:
        for driver in drivers:
            driver.close()
    assert first is not None and third is not None
    assert second is first
    assert "PowerProfile" in first and "PowerProfile" not in third
    with pytest.raises(TypeError):
        first["PowerProfile"] = first["ProcTurboMode"]  # type: ignore[index]


def redfish_driver(url: str, keep_alive: bool = True) -> RedfishDriver:
    driver = create_driver("redfish", BmcCredentials(
        address=url, username=DEFAULT_USERNAME, password=DEFAULT_PASSWORD,
        keep_alive=keep_alive), timeout=5.0)
    assert isinstance(driver, RedfishDriver)
    return driver


def test_the_requests_of_one_call_share_one_connection(redfish_bmcs):
    """A call's requests (an inventory reads about twenty documents, the first call also
    logs in) go over one connection, closed when the call ends: the next call opens its
    own. With ``keep_alive = false`` every request has a connection of its own."""
    bmcs = redfish_bmcs.fresh(count=2)
    kept, fresh = (redfish_driver(url, keep_alive) for url, keep_alive
                   in zip(bmcs.urls, (True, False), strict=True))
    try:
        for driver, bmc in zip((kept, fresh), bmcs.bmcs, strict=True):
            driver.collect_inventory()
            inventory = bmc.connections, len(bmc.received)
            driver.get_power_state()
            driver.get_power_state()
            calls = bmc.connections - inventory[0], len(bmc.received) - inventory[1]
            if driver is kept:
                assert inventory[0] == 1 and inventory[1] >= 15
                assert calls == (2, 2)
            else:
                assert inventory[0] == inventory[1] >= 15
                assert calls == (2, 2)
    finally:
        kept.close()
        fresh.close()


def test_documents_of_machines_of_one_model_share_their_names(redfish_bmcs):
    """What two BMCs of one model send is parsed into the same strings (names, states,
    links), not a copy per machine; the documents read as they were sent. And the answers
    of a call are freed when it ends, without waiting for the garbage collector."""
    bmcs = redfish_bmcs.fresh(count=2)
    drivers = [redfish_driver(url) for url in bmcs.urls]
    gc.collect()  # what earlier tests left in cycles is not this test's to count
    gc.disable()
    try:
        first, second = (driver._service.system().json for driver in drivers)
        assert [id(key) for key in first] == [id(key) for key in second]
        assert first["PowerState"] is second["PowerState"]
        system = bmcs.bmcs[0].resources.get(drivers[0]._service.system().path)
        assert first == json.loads(json.dumps(system))
        assert not [o for o in gc.get_objects() if isinstance(o, requests.Response)]
    finally:
        gc.enable()
        for driver in drivers:
            driver.close()


def test_probe_lists_every_system_of_a_multi_system_service(emulator):
    # Lives here because this module's emulator is the one with several systems.
    result = probe(emulator.url, USERNAME, PASSWORD, timeout=5)
    json.dumps(result)
    assert result["protocol"] == "redfish"
    assert result["power"] is None  # no system named: nothing to describe at the top
    assert sorted(s["id"] for s in result["systems"]) == sorted(emulator.system_ids)
    assert {s["manufacturer"] for s in result["systems"]} == {"Sushy Emulator"}


def bmc_requests(bmc, since: int = 0) -> list[tuple[str, str]]:
    """What the simulated BMC received from request ``since`` on, without the logins."""
    return [(method, path) for method, path, _ in bmc.received[since:]
            if not path.endswith("/Sessions") and "/Sessions/" not in path]


def test_a_bios_write_is_checked_against_what_was_read_and_reads_no_more(redfish_bmcs):
    """Writing pending BIOS values after reading them sends the PATCH alone, conditioned on
    the settings object as read (its ETag): the links to it are not read again. If the
    settings changed in between, the BMC refuses (412) and the write goes once more without
    the condition, as for a BMC whose ETags are unusable."""
    sim = redfish_bmcs.fresh()
    bmc = sim.bmc
    driver = redfish_driver(sim.url)
    try:
        driver.get_bios()
        read = len(bmc.received)
        driver.set_bios_pending({"PowerProfile": "Balanced"})
        (settings,) = {s.settings_path for s in bmc.systems.values()}
        assert bmc_requests(bmc, read) == [("PATCH", settings)]
        assert driver.get_bios().pending["PowerProfile"] == "Balanced"

        read = len(bmc.received)
        bmc.resources.edit(settings)["Attributes"]["UsbControl"] = "UsbDisabled"  # someone
        driver.set_bios_pending({"PowerProfile": "MaxPerf"})
        assert bmc_requests(bmc, read) == [("PATCH", settings)] * 2
        pending = driver.get_bios().pending
        assert pending["UsbControl"] == "UsbDisabled" and "PowerProfile" not in pending
    finally:
        driver.close()
    unread = redfish_driver(sim.url)  # nothing read before: it finds the object itself
    try:
        unread.set_bios_pending({"PowerProfile": "Balanced"})
        assert unread.get_bios().pending["PowerProfile"] == "Balanced"
    finally:
        unread.close()


def test_a_bmc_s_registry_is_found_once_and_searched_again_if_it_moves(redfish_bmcs):
    """The first driver finds the attribute registry through the Registries collection; the
    next ones read it where it was. A BMC that no longer serves it there (a firmware update
    moved it) is searched again."""
    sim = redfish_bmcs.fresh()
    bmc = sim.bmc
    (uri,) = [path for path in bmc.resources.paths()
              if path.endswith("/BiosAttributeRegistryP89.v1_0_0.json")]
    searched = []
    for _ in range(2):
        driver = redfish_driver(sim.url)
        since = len(bmc.received)
        try:
            assert driver.get_bios().registry is not None
        finally:
            driver.close()
        searched.append([path for _, path in bmc_requests(bmc, since)
                         if "/Registries" in path])
    assert searched[0][-1] == uri and len(searched[0]) == 3
    assert searched[1] == [uri]

    moved = uri.replace(".json", ".v2.json")
    bmc.resources.put(moved, bmc.resources.get(uri))
    bmc.resources.delete(uri)
    (file,) = [path for path in bmc.resources.paths() if path == uri[:-len(".json")]]
    bmc.resources.edit(file)["Location"][0]["Uri"] = moved
    driver = redfish_driver(sim.url)
    since = len(bmc.received)
    try:
        registry = driver.get_bios().registry
    finally:
        driver.close()
    assert registry is not None and "PowerProfile" in registry
    assert [path for _, path in bmc_requests(bmc, since) if "/Registries" in path][-1] == moved


def test_a_bmc_is_reached_directly_whatever_the_environment_says(redfish_bmcs, monkeypatch):
    """No proxy, netrc or CA bundle from the environment: a BMC is reached and checked as
    the site's config says (here: directly, though every proxy variable points at a port
    where nothing listens)."""
    nowhere = f"http://{LOOPBACK}:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.setenv(name, nowhere)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    driver = redfish_driver(redfish_bmcs.fresh().url)
    try:
        assert driver.get_power_state() == PowerState.ON
    finally:
        driver.close()


def test_a_bmc_s_system_is_chosen_once_and_again_if_it_is_gone(redfish_bmcs, monkeypatch):
    """A BMC's next driver reads the system chosen before without listing the systems; if
    the BMC no longer has it (here: the path remembered is one it never had), it lists them
    and chooses again."""
    sim = redfish_bmcs.fresh()
    listed = []
    for _ in range(2):
        since = len(sim.bmc.received)
        driver = redfish_driver(sim.url)
        try:
            assert driver.get_power_state() == PowerState.ON
        finally:
            driver.close()
        listed.append(("GET", "/redfish/v1/Systems") in bmc_requests(sim.bmc, since))
    assert listed == [True, False]

    monkeypatch.setitem(service_module._SYSTEM_PATHS, (sim.url, None),
                        "/redfish/v1/Systems/gone")
    since = len(sim.bmc.received)
    driver = redfish_driver(sim.url)
    try:
        assert driver.get_power_state() == PowerState.ON
    finally:
        driver.close()
    asked = bmc_requests(sim.bmc, since)
    gone, listing = ("GET", "/redfish/v1/Systems/gone"), ("GET", "/redfish/v1/Systems")
    assert gone in asked and listing in asked and asked.index(gone) < asked.index(listing)
