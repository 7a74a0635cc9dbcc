"""Bare metal to k3s nodes on the whole local stack: one site, blueprint k3s-node's steps on
three Redfish machines, the installer fetched once into the site's cache, each BMC reading
it from there, each machine's seed from its gateway. Two installs phone home and become
nodes; one hangs at its installer (a simulator option) and fails with what its BMC shows,
while the others carry on."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edgeplane_cli.client import ApiClient
from edgeplane_cli.rollouts import wait_for_rollout
from edgeplane_dev.demo import k3s_node_steps, node_rows
from edgeplane_dev.stack import BMC_PASSWORD, BMC_USERNAME, LocalStack, SitePlan
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SITE = "site-001"
INSTALLER_BYTES = 6 * 1024 * 1024 + 12345  # not a whole number of the BMC's 1 MiB reads
NODES = ["srv-1", "srv-2"]
HUNG = "srv-3"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalStack]:
    plan = SitePlan(SITE, "Europe/Berlin", redfish=[], ipmi=[], servers=[*NODES, HUNG],
                    tags=["dev"], server_args={HUNG: ["--install-hangs"]})
    stack = LocalStack(tmp_path / "dev", [plan])
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


def system_of(address: str) -> dict[str, Any]:
    auth = (BMC_USERNAME, BMC_PASSWORD)
    systems = requests.get(f"{address}/redfish/v1/Systems", auth=auth, timeout=10).json()
    path = systems["Members"][0]["@odata.id"]
    return dict(requests.get(f"{address}{path}", auth=auth, timeout=10).json())


def test_two_machines_become_k3s_nodes_and_a_hung_install_fails_with_its_bmc_state(site):
    state = site.state
    assert state is not None
    api = ApiClient(state.context)
    installer = site.publish_installer(INSTALLER_BYTES)
    created = api.post("/rollouts", {
        "name": "k3s nodes", "sites": [SITE], "policy": {"report": "full"},
        "steps": k3s_node_steps(installer, [*NODES, HUNG], install_timeout=60)})
    data = wait_for_rollout(api, created["rollout"]["rollout_id"], timeout=240)

    rows = {row["machine"]: row for row in node_rows(data)}
    assert sorted(rows) == [*NODES, HUNG]
    for machine in NODES:
        assert rows[machine]["state"] == "succeeded", rows[machine]["message"]
        assert rows[machine]["facts"] == {"os": "Ubuntu 24.04.1 LTS",
                                          "kernel": "6.8.0-51-generic",
                                          "k3s_version": "v1.31.4+k3s1",
                                          "node_name": machine}
    hung = rows[HUNG]
    assert hung["state"] == "failed"
    assert "no phone-home within 60 s" in hung["message"]
    assert "power on" in hung["message"]
    assert "BootProgress OSBootStarted" in hung["message"]
    assert "installer waiting at a prompt" in hung["message"]
    steps = {m["machine"]: m["steps"] for e in data["executions"] for m in e["machines"]}
    for machine in NODES:  # after the node: the disk for every boot, the media out
        assert [s["state"] for s in steps[machine][-2:]] == ["succeeded", "succeeded"]

    # The origin served the installer once (a whole GET, no resumption needed), whatever
    # three BMCs read from the site's cache.
    gets = [r for r in site.artifact_stats()["requests"]
            if r[0] == "GET" and r[1] == "/installer.iso"]
    assert len(gets) == 1
    config = tomllib.loads((Path(state.directory) / "sites" / SITE / "gateway.toml")
                           .read_text())
    machines = {m["id"]: m for m in config["machines"]}
    # The installed systems say so on their BMCs, and boot their disks from now on.
    for machine in NODES:
        system = system_of(machines[machine]["address"])
        assert system["BootProgress"]["LastState"] == "OSRunning"
        assert system["Oem"]["Edgeplane"]["InstalledOS"] == "Ubuntu 24.04.1 LTS"
        assert system["Oem"]["Edgeplane"]["HostName"] == machine
        assert system["Boot"]["BootSourceOverrideTarget"] == "Hdd"
    assert system_of(machines[HUNG]["address"])["BootProgress"]["LastState"] == \
        "OSBootStarted"
    # The cache's report: the image came over the WAN once, and went to each BMC on the LAN.
    cache = wait_until(lambda: (api.get(f"/sites/{SITE}")["site"].get("cache") or {}),
                       timeout=30, interval=0.5, what="the site's cache report")
    assert cache["wire_bytes"] == INSTALLER_BYTES
    assert cache["served_bytes"] >= len([*NODES, HUNG]) * INSTALLER_BYTES
