"""The Redfish simulator's OS install, against the gateway's real site cache and seed routes:
a boot from the CD reads the installer from the cache, reads the seed, reboots into the disk
and phones home; a CD boot again installs again; no seed or a bad one hangs where a BMC
shows it. The test plays the gateway's steps with plain Redfish requests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import requests

from edge_gateway.cache.artifact import Artifact
from edge_gateway.cache.settings import CacheSettings
from edge_gateway.cache.site import SiteCache
from edge_gateway.provision.settings import ProvisionSettings
from edge_gateway.provision.site import Provisioning
from edge_gateway.provision.tokens import TokenStore
from edgeplane_dev.artifacts import ArtifactServer, make_installer
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.redfish_sim import BmcOptions, RedfishSimulator
from tests.support import wait_until

MIB = 1024 * 1024
IMAGE_BYTES = 3 * MIB + 5
AUTH = ("admin", "password")
SYSTEM = "/redfish/v1/Systems/437XR1138R2"
MEDIA = f"{SYSTEM}/VirtualMedia"
FAST = BmcOptions(power_delay=0.2, install_seconds=0.3)


@dataclass
class Site:
    cache: SiteCache
    provisioning: Provisioning
    artifact: Artifact
    origin: ArtifactServer


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    image = make_installer(tmp_path / "origin", IMAGE_BYTES)
    origin = ArtifactServer(image.parent).start()
    token = tmp_path / "k3s.token"
    token.write_text("K10abc::server:0123456789")
    token.chmod(0o600)
    provisioning = Provisioning(ProvisionSettings("https://k3s.example.net:6443", token),
                                TokenStore(tmp_path / "tokens.db"))
    cache = SiteCache(CacheSettings(tmp_path / "cache", 64 * MIB, LOOPBACK, 0, LOOPBACK),
                      provisioning=provisioning)
    cache.start()
    artifact = Artifact(hashlib.sha256(image.read_bytes()).hexdigest(),
                        origin.url(image.name), IMAGE_BYTES)
    cache.ensure(artifact)
    try:
        yield Site(cache, provisioning, artifact, origin)
    finally:
        cache.stop()
        provisioning.close()
        origin.stop()


def call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.request(method, url, json=body, auth=AUTH, timeout=10)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def insert(bmc: str, slot: str, image: str) -> None:
    call("PATCH", f"{bmc}{MEDIA}/{slot}", {"Inserted": False})
    call("PATCH", f"{bmc}{MEDIA}/{slot}", {"Image": image, "Inserted": True})


def eject_others(bmc: str) -> None:
    """Empty the slots the mockup fills, as the flow's first step (media.eject) does."""
    for slot in ("Floppy1", "CD2"):
        call("PATCH", f"{bmc}{MEDIA}/{slot}", {"Inserted": False})


def boot_cd(bmc: str, enabled: str = "Once") -> None:
    call("PATCH", f"{bmc}{SYSTEM}", {"Boot": {"BootSourceOverrideTarget": "Cd",
                                              "BootSourceOverrideEnabled": enabled}})
    call("POST", f"{bmc}{SYSTEM}/Actions/ComputerSystem.Reset", {"ResetType": "ForceRestart"})


def progress(bmc: str) -> dict[str, Any]:
    return dict(call("GET", f"{bmc}{SYSTEM}")["BootProgress"])


def facts(site: Site, machine: str = "srv-1") -> dict[str, str] | None:
    record = site.provisioning.tokens.latest(machine)
    return record.facts if record is not None else None


def test_a_cd_boot_installs_from_the_cache_and_the_node_phones_home(site):
    seed = site.provisioning.prepare("srv-1", "node-7", None, site.cache.base_url)
    with RedfishSimulator(options=FAST) as simulator:
        bmc = simulator.url
        insert(bmc, "CD1", site.cache.machine_url(site.artifact, "srv-1"))
        insert(bmc, "Floppy1", seed.seed_url)
        boot_cd(bmc)
        got = wait_until(lambda: facts(site), timeout=30, what="the phone-home")
        system = call("GET", f"{bmc}{SYSTEM}")
        installer = simulator.bmc.installers[SYSTEM]
    assert got == {"os": "Ubuntu 24.04.1 LTS", "kernel": "6.8.0-51-generic",
                   "k3s_version": "v1.31.4+k3s1", "node_name": "node-7"}
    assert system["BootProgress"]["LastState"] == "OSRunning"
    assert system["Oem"]["Edgeplane"]["HostName"] == "node-7"
    assert system["Oem"]["Edgeplane"]["InstanceId"] == seed.instance_id
    assert simulator.bmc.systems[SYSTEM].boots_from == ["Cd", "Hdd"]
    assert installer.image_bytes == IMAGE_BYTES and installer.phoned_home == [204]
    # The whole image in 1 MiB ranges (4), besides the first bytes read at the insert.
    name = site.cache.machine_url(site.artifact, "srv-1").rsplit("/", 1)[1]
    reads = site.cache.reads.reads(site.artifact.sha256, name)
    assert reads is not None and reads.count == 1 + 4


def test_a_cd_boot_after_the_install_installs_again_until_the_disk_boots(site):
    seed = site.provisioning.prepare("srv-1", "node-1", None, site.cache.base_url)
    with RedfishSimulator(options=FAST) as simulator:
        bmc = simulator.url
        insert(bmc, "CD1", site.cache.machine_url(site.artifact, "srv-1"))
        insert(bmc, "Floppy1", seed.seed_url)
        boot_cd(bmc, enabled="Continuous")
        installer = simulator.bmc.installers[SYSTEM]
        wait_until(lambda: installer.installs >= 3, timeout=30, what="three installs")
        assert facts(site) is None  # every reboot landed on the installer again
        call("PATCH", f"{bmc}{SYSTEM}", {"Boot": {"BootSourceOverrideTarget": "Hdd"}})
        wait_until(lambda: facts(site), timeout=30, what="the phone-home")
        assert simulator.bmc.systems[SYSTEM].boots_from[-1] == "Hdd"


@pytest.mark.parametrize("seed_slot, says", [
    (None, "no seed: no NoCloud datasource found"),
    ("installer", "bad seed"),
])
def test_an_install_without_a_good_seed_hangs_where_the_bmc_shows_it(site, seed_slot, says):
    installer_url = site.cache.machine_url(site.artifact, "srv-1")
    with RedfishSimulator(options=FAST) as simulator:
        bmc = simulator.url
        insert(bmc, "CD1", installer_url)
        eject_others(bmc)
        if seed_slot == "installer":  # an image in the seed's slot that is not a seed
            insert(bmc, "Floppy1", installer_url)
        boot_cd(bmc)
        shown = wait_until(lambda: (p := progress(bmc)).get("OemLastState", "")
                           .startswith("install hangs") and p, timeout=30,
                           what="the install to stop")
    assert shown["LastState"] == "OSBootStarted"
    assert says in shown["OemLastState"]
    assert simulator.bmc.installers[SYSTEM].phoned_home == []


def test_a_bounded_read_stops_where_told_and_an_unreachable_image_is_retried(site):
    with RedfishSimulator(options=replace(FAST, install_read_bytes=MIB + 1)) as sim:
        installer = sim.bmc.installers[SYSTEM]
        insert(sim.url, "CD1", site.cache.machine_url(site.artifact, "srv-1"))
        eject_others(sim.url)
        boot_cd(sim.url)  # no seed: it stops after the image
        wait_until(lambda: "no seed" in progress(sim.url).get("OemLastState", ""),
                   timeout=30, what="the install to stop")
        assert installer.image_bytes == MIB + 1
    gone = f"http://{LOOPBACK}:9/a/{site.artifact.sha256}/x.iso"
    with RedfishSimulator(options=FAST) as simulator:
        document = simulator.bmc.resources.edit(f"{MEDIA}/CD1")
        document.update(Image=gone, Inserted=True)  # as if the server went away after
        boot_cd(simulator.url)
        shown = wait_until(lambda: (p := progress(simulator.url)).get("OemLastState", "")
                           .startswith("installer cannot read") and p, timeout=30,
                           what="the installer to retry its reads")
    assert shown["LastState"] == "OSBootStarted"
    assert "retrying" in shown["OemLastState"]
