"""The vendor differences of virtual media, boot and power (docs/vendors.md), each on the
Redfish simulator configured to behave that way, driven through the real driver and tasks.
What the BMC ends up in is read back from the simulator itself."""

from __future__ import annotations

import pytest
import requests

from edge_gateway.errors import BmcError
from edge_gateway.tasks import TaskContext
from edge_gateway.tasks.media import removable_slot
from edgeplane.protocol import BmcProtocol
from edgeplane_dev.redfish_sim import BmcOptions
from tests.support import SimulatedRedfish, wait_until
from tests.test_tasks_on_emulators import Machine, sim_system, writes

AUTH = ("admin", "password")
FAST = {"power_delay": 0.2}
# The only slots of the BMCs below that do not keep the mockup's: an empty CD and a USB stick.
CD_AND_USB = ("CD/DVD", "USBStick")
# An image an earlier install left in every slot (never fetched: it is already inserted).
STALE = "http://192.0.2.10/images/old-installer.iso"


@pytest.fixture
def bmc_with(redfish_bmcs):
    """``bmc_with(**options)``: a fresh simulated BMC so configured and a machine driving it."""
    machines: list[Machine] = []

    def make(**options) -> tuple[SimulatedRedfish, Machine]:
        sim = redfish_bmcs.fresh(BmcOptions(**{**FAST, **options}))
        machine = Machine(BmcProtocol.REDFISH, sim.url, *AUTH)
        machines.append(machine)
        return sim, machine

    yield make
    for machine in machines:
        machine.driver.close()


def slot_document(sim: SimulatedRedfish, slot: str) -> dict:
    return sim.bmc.resources.get(slot)


def the_system(sim: SimulatedRedfish):
    (system,) = sim.bmc.systems.values()
    return system


# --- 1. where the VirtualMedia collection is -------------------------------------------------


@pytest.mark.parametrize("place", ["manager", "system"])
def test_media_listed_under_the_manager_or_the_system_is_found(bmc_with, images, place):
    sim, machine = bmc_with(media_place=place, media_slots=CD_AND_USB)
    system = sim_system(sim)
    manager = sim.bmc.resources.get(system["Links"]["ManagedBy"][0]["@odata.id"])
    owner = manager if place == "manager" else system
    other = system if place == "manager" else manager
    assert "VirtualMedia" in owner and "VirtualMedia" not in other

    image = images("installer.iso")
    outcome = machine.run("media.insert", image=image)
    assert outcome.data["slot"].startswith(owner["VirtualMedia"]["@odata.id"] + "/")
    assert slot_document(sim, outcome.data["slot"])["Image"] == image
    assert machine.run("media.eject").data["ejected"] == [outcome.data["slot"]]


# --- 2. InsertMedia action vs PATCH ----------------------------------------------------------


def test_a_bmc_without_the_actions_gets_a_patch_of_image_and_inserted(bmc_with, images):
    sim, machine = bmc_with(media_api="patch", stale_image=STALE, media_slots=CD_AND_USB)
    image = images("installer.iso")
    slot = machine.run("media.insert", image=image).data["slot"]
    machine.run("media.eject", slot=slot)
    assert writes(sim) == [("PATCH", slot)] * 3  # eject the stale image, insert, eject
    bodies = [body for method, path, body in sim.bmc.received if method == "PATCH"]
    assert bodies == [{"Image": None, "Inserted": False},
                      {"Image": image, "Inserted": True, "WriteProtected": True},
                      {"Image": None, "Inserted": False}]
    assert not slot_document(sim, slot)["Inserted"]


def test_a_bmc_with_only_the_actions_gets_insert_and_eject_actions(bmc_with, images):
    sim, machine = bmc_with(media_api="action", stale_image=STALE, media_slots=CD_AND_USB)
    image = images("installer.iso")
    slot = machine.run("media.insert", image=image).data["slot"]
    assert slot_document(sim, slot)["Image"] == image
    machine.run("media.eject", slot=slot)
    insert, eject = (f"{slot}/Actions/VirtualMedia.{name}Media" for name in ("Insert", "Eject"))
    assert writes(sim) == [("POST", eject), ("POST", insert), ("POST", eject)]
    # The simulated BMC refuses what the driver did not send: a PATCH of the image.
    refused = requests.patch(sim.url + slot, auth=AUTH, json={"Image": image}, timeout=10)
    assert refused.status_code == 400 and "InsertMedia" in refused.text


# --- 3. slots that are not CDs, slots that read NotConnected / Inserted null ----------------


def test_the_default_bmc_has_a_cd_and_a_removable_slot(bmc_with, images):
    sim, machine = bmc_with()
    slots = machine.driver.get_virtual_media()
    installer = machine.run("media.insert", image=images("installer.iso")).data["slot"]
    seed = removable_slot(TaskContext(machine.driver, machine.config), slots)
    assert "CD" in {s.media_types for s in slots if s.slot == installer}.pop()
    assert "USBStick" in seed.media_types and seed.slot != installer
    assert slots[0].slot == seed.slot, "the mockup lists its removable slot first: skipped"


@pytest.mark.parametrize(("slots", "cd", "removable"), [
    (("USBStick", "Floppy", "CD/DVD"), "CD1", "USB1"),
    (("Floppy", "CD"), "CD1", "Floppy1"),
    (("RemovableDisk", "DVD"), "CD1", "Removable1"),
    (("CD/DVD", "CD/DVD"), "CD1", "CD2"),
])
def test_the_installer_goes_to_a_cd_and_the_seed_to_a_removable_slot(bmc_with, images, slots,
                                                                     cd, removable):
    sim, machine = bmc_with(media_slots=slots)
    installer = machine.run("media.insert", image=images("installer.iso")).data["slot"]
    seed = removable_slot(TaskContext(machine.driver, machine.config),
                          machine.driver.get_virtual_media(), besides=installer)
    assert (installer.rsplit("/", 1)[-1], seed.slot.rsplit("/", 1)[-1]) == (cd, removable)
    outcome = machine.run("media.insert", image=images("seed.iso"), slot=seed.slot)
    assert slot_document(sim, outcome.data["slot"])["ImageName"] == "seed.iso"
    assert slot_document(sim, installer)["ImageName"] == "installer.iso"


def test_a_bmc_with_one_cd_and_nothing_else_names_its_slots(bmc_with):
    sim, machine = bmc_with(media_slots=("CD/DVD",))
    with pytest.raises(BmcError, match=r"no slot for a second image.*VirtualMedia/CD1 \(CD/DVD\)"):
        removable_slot(TaskContext(machine.driver, machine.config),
                       machine.driver.get_virtual_media())
    sim, machine = bmc_with(media_slots=("USBStick",))
    with pytest.raises(BmcError, match=r"no slot takes a CD or DVD.*USB1 \(USBStick\)"):
        machine.run("media.insert", image="http://192.0.2.10/installer.iso")


def test_an_ejected_slot_reading_inserted_null_and_not_connected_is_empty(bmc_with, images):
    sim, machine = bmc_with(eject_style="null", media_slots=CD_AND_USB)
    image = images("installer.iso")
    slot = machine.run("media.insert", image=image).data["slot"]
    assert machine.run("media.eject").changed
    document = slot_document(sim, slot)
    assert (document["Inserted"], document["ConnectedVia"], document["Image"]) == \
        (None, "NotConnected", image)
    assert not machine.run("media.eject").changed, "nothing is inserted any more"
    again = machine.run("media.insert", image=image)
    assert again.changed and slot_document(sim, slot)["Inserted"] is True


# --- 4. stale media, and BMCs that refuse an insert while connected -------------------------


def test_a_bmc_refusing_inserts_while_connected_gets_eject_then_insert(bmc_with, images):
    sim, machine = bmc_with(stale_image=STALE, insert_rule="refuse", media_slots=CD_AND_USB)
    cd = machine.driver.get_virtual_media()[0].slot
    new = images("installer.iso")
    refused = requests.patch(sim.url + cd, auth=AUTH, json={"Image": new, "Inserted": True},
                             timeout=10)
    assert refused.status_code == 409 and "already connected" in refused.text
    assert machine.run("media.eject").data["ejected"] == [
        s.slot for s in machine.driver.get_virtual_media()]  # both slots held the stale image
    assert machine.run("media.insert", image=new).changed
    assert slot_document(sim, cd)["Image"] == new


@pytest.mark.parametrize("rule", ["refuse", "refuse_other", "replace"])
def test_media_insert_alone_ejects_the_stale_image_first(bmc_with, images, rule):
    sim, machine = bmc_with(stale_image=STALE, insert_rule=rule, media_slots=CD_AND_USB)
    new = images("installer.iso")
    outcome = machine.run("media.insert", image=new)
    assert outcome.changed and slot_document(sim, outcome.data["slot"])["Image"] == new
    sent = [body for method, path, body in sim.bmc.received
            if method == "PATCH" and path == outcome.data["slot"]]
    assert sent[0] == {"Image": None, "Inserted": False}, "the stale image is ejected first"
    assert sent[1]["Image"] == new


# --- 5. boot-once ignored -----------------------------------------------------------------


def boot_and_read_source(sim: SimulatedRedfish, machine: Machine) -> str:
    """Power-cycle the machine and return what it booted from."""
    system = the_system(sim)
    before = len(system.boots_from)
    machine.run("power.cycle")

    def booted() -> bool:
        sim.bmc.settle()
        return len(system.boots_from) > before

    wait_until(booted, what="the machine to boot")
    return system.boots_from[-1]


def test_a_bmc_that_ignores_boot_once_boots_the_cd_when_it_is_continuous(bmc_with):
    sim, machine = bmc_with(boot_once_ignored=True)
    assert machine.run("boot.override", target="cd", mode="once").changed  # reads back Once
    assert sim_system(sim)["Boot"]["BootSourceOverrideEnabled"] == "Once"
    assert boot_and_read_source(sim, machine) == "Hdd", "boot-once ignored: the disk booted"
    assert sim_system(sim)["Boot"]["BootSourceOverrideEnabled"] == "Disabled"
    # The fallback: CD continuous does boot the CD, every time, until it is changed.
    machine.run("boot.override", target="cd", mode="continuous")
    assert [boot_and_read_source(sim, machine) for _ in range(2)] == ["Cd", "Cd"]
    machine.run("boot.override", target="disk", mode="continuous")
    assert boot_and_read_source(sim, machine) == "Hdd"


def test_a_bmc_that_obeys_boot_once_boots_the_cd_once(bmc_with):
    sim, machine = bmc_with()
    machine.run("boot.override", target="cd", mode="once")
    assert [boot_and_read_source(sim, machine) for _ in range(2)] == ["Cd", "Hdd"]


# --- 6. power-on refused for a while after a power-off -------------------------------------


def on_requests(sim: SimulatedRedfish) -> int:
    return sum(1 for method, path, body in sim.bmc.received
               if path.endswith("ComputerSystem.Reset") and body.get("ResetType") == "On")


def test_a_refused_power_on_is_retried_until_the_bmc_accepts_it(bmc_with):
    sim, machine = bmc_with(power_on_refused_s=2.0)
    machine.run("power.ensure", state="off", graceful=False)
    assert machine.run("power.ensure", state="on").changed
    assert sim_system(sim)["PowerState"] == "On"
    assert on_requests(sim) >= 2, "the first power-on was refused with 409"
    machine.run("power.ensure", state="off", graceful=False)
    before = on_requests(sim)
    assert "was off: powered on" in machine.run("power.cycle").message
    assert on_requests(sim) - before >= 2 and sim_system(sim)["PowerState"] == "On"


def test_a_power_on_refused_past_the_deadline_fails_with_what_the_bmc_said(bmc_with):
    sim, machine = bmc_with(power_on_refused_s=600.0)
    machine.run("power.ensure", state="off", graceful=False)
    machine.driver.power_on_patience = 1.0
    with pytest.raises(BmcError, match=r"still refused On after 1 s: HTTP 409 .*cannot be "
                                       r"powered on yet"):
        machine.run("power.ensure", state="on")
    assert sim_system(sim)["PowerState"] == "Off"


# --- image URLs some BMCs refuse -------------------------------------------------------------


@pytest.mark.parametrize(("name", "warning"), [
    ("installer.iso?token=abc&expires=1", "query string"),
    ("i" * 260 + ".iso", "characters long"),
])
def test_a_url_some_bmcs_refuse_is_inserted_with_a_warning(bmc_with, images, name, warning):
    sim, machine = bmc_with(media_slots=CD_AND_USB)
    outcome = machine.run("media.insert", image=images(name))
    assert outcome.changed and f"warning: the image URL {'has a' if '?' in name else 'is'}" \
        in outcome.message
    assert len(outcome.data["warnings"]) == 1 and warning in outcome.data["warnings"][0]
    plain = machine.run("media.insert", image=images("installer.iso"))
    assert "warning" not in plain.message and "warnings" not in plain.data


def test_a_vendor_option_with_an_unknown_value_is_named():
    with pytest.raises(ValueError, match="media slot 'Tape'.*CD, DVD, Floppy, USBStick"):
        BmcOptions(media_slots=("Tape",))
    with pytest.raises(ValueError, match="media_place 'chassis': use one of mockup, system"):
        BmcOptions(media_place="chassis")


def test_the_simulator_command_names_a_bad_vendor_option(capsys):
    from edgeplane_dev.redfish_sim import main

    with pytest.raises(SystemExit) as exited:
        main(["--port", "0", "--media-slot", "CD/Tape"])
    assert exited.value.code == 2 and "media slot 'CD/Tape'" in capsys.readouterr().err
