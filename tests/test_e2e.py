"""The whole local stack with 2 sites, driven as an operator would: through the CLI."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from edgeplane_dev.channel_checks import run_checks
from edgeplane_dev.processes import is_running
from edgeplane_dev.stack import (
    BMC_PASSWORD,
    BMC_USERNAME,
    LocalStack,
    load_state,
    pinned_keys,
    plan_key_file,
)

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
STEPS = ["--step", "power.ensure state=on", "--step", "boot.override target=pxe mode=once"]


def edgeplane(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "edgeplane"), *args], capture_output=True, text=True,
                            env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"edgeplane {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def ipmitool(address: str, *command: str) -> str:
    host, port = address.rsplit(":", 1)
    return subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", host, "-p", port, "-U", BMC_USERNAME,
         "-P", BMC_PASSWORD, *command], capture_output=True, text=True, check=True,
        timeout=30).stdout


def gateway_config(stack_dir: Path, site_id: str) -> dict[str, Any]:
    """The site's own config."""
    import tomllib

    return tomllib.loads((stack_dir / "sites" / site_id / "gateway.toml").read_text())


def gateway_machines(stack_dir: Path, site_id: str) -> dict[str, dict[str, str]]:
    """What the site's own config says about its machines (addresses, system ids)."""
    return {m["id"]: m for m in gateway_config(stack_dir, site_id)["machines"]}


def tmp_home(stack_dir):
    return stack_dir.parent


@pytest.fixture
def stack_env(tmp_path):
    env = {**os.environ, "EDGEPLANE_HOME": str(tmp_path / "home")}
    stack_dir = tmp_path / "home" / "dev"
    yield env, stack_dir
    LocalStack(stack_dir, []).down()  # whatever happened, leave no process behind


def test_rollout_through_the_whole_local_stack(stack_env):
    env, stack_dir = stack_env
    edgeplane(env, "dev", "up", "--sites", "2")
    state = load_state(stack_dir)
    assert state is not None and len(state.processes) >= 9
    # What holds secrets (the API token, BMC passwords, the plan key) only its owner may read.
    for private in (stack_dir / "stack.json", stack_dir / "sites" / "site-001" / "gateway.toml",
                    tmp_home(stack_dir) / "config.json", plan_key_file(stack_dir)):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
        assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700, private.parent
    # Every plan is signed with the stack's key, which each gateway pins.
    assert gateway_config(stack_dir, "site-001")["trust"]["plan_keys"] == \
        pinned_keys(stack_dir)

    sites = json.loads(edgeplane(env, "sites", "list", "--json").stdout)["sites"]
    assert sorted(s["site_id"] for s in sites) == ["site-001", "site-002"]
    assert all(s["online"] for s in sites)
    shown = json.loads(edgeplane(env, "sites", "show", "site-001", "--json").stdout)
    protocols = sorted(m["protocol"] for m in shown["machines"])
    # rf-1 on sushy-tools' emulator, srv-1 on the mockup simulator, ipmi-1 on the IPMI one
    assert protocols == ["ipmi", "redfish", "redfish"], \
        "machines arrive through the inventory report"
    assert all(m.get("capabilities") for m in shown["machines"])

    run = edgeplane(env, "rollout", "start", "--tag", "dev", *STEPS, "--wait", "--json")
    data = json.loads(run.stdout)
    assert data["rollout"]["state"] == "succeeded"
    assert len(data["executions"]) == 2
    for execution in data["executions"]:
        assert execution["state"] == "succeeded"
        assert len(execution["machines"]) == 3
        for machine in execution["machines"]:
            assert machine["state"] == "succeeded"
            assert [s["task"] for s in machine["steps"]] == ["power.ensure", "boot.override"]
            assert all(s["state"] == "succeeded" for s in machine["steps"])

    # The BMCs really are on and set to PXE: ask them with clients of our own.
    for site_id in ("site-001", "site-002"):
        machines = gateway_machines(stack_dir, site_id)
        ipmi = machines["ipmi-1"]["address"]
        assert "on" in ipmitool(ipmi, "power", "status").lower()
        assert "pxe" in ipmitool(ipmi, "chassis", "bootparam", "get", "5").lower()
        redfish = machines["rf-1"]
        system = requests.get(redfish["address"] + redfish["system_id"], timeout=10).json()
        assert system["PowerState"] == "On"
        assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        server, auth = machines["srv-1"]["address"], (BMC_USERNAME, BMC_PASSWORD)
        systems = requests.get(server + "/redfish/v1/Systems", timeout=10, auth=auth).json()
        system = requests.get(server + systems["Members"][0]["@odata.id"], timeout=10,
                              auth=auth).json()
        assert system["PowerState"] == "On"
        assert system["Boot"]["BootSourceOverrideTarget"] == "Pxe"
        assert system["Boot"]["BootSourceOverrideEnabled"] == "Once"

    # The same rollout again changes nothing: every step is an "ensure".
    again = json.loads(edgeplane(env, "rollout", "start", "--site", "site-001", "--step",
                                 "power.ensure state=on", "--wait", "--json").stdout)
    assert again["rollout"]["state"] == "succeeded"
    steps = [s for m in again["executions"][0]["machines"] for s in m["steps"]]
    assert steps and not any(s["changed"] for s in steps)

    # The demo's three attacks on the device channel are refused, and did nothing: the
    # unsigned plan asked srv-1 to power off.
    checks = run_checks(state, "site-001")
    assert [check.refused for check in checks] == [True, True, True], checks
    server = gateway_machines(stack_dir, "site-001")["srv-1"]["address"]
    auth = (BMC_USERNAME, BMC_PASSWORD)
    systems = requests.get(server + "/redfish/v1/Systems", timeout=10, auth=auth).json()
    system = requests.get(server + systems["Members"][0]["@odata.id"], timeout=10,
                          auth=auth).json()
    assert system["PowerState"] == "On"

    down = edgeplane(env, "dev", "down")
    assert "stopped" in down.stdout
    pids = list(state.processes.values())
    alive = [pid for pid in pids if is_running(pid)]
    assert not alive, f"processes left behind: {alive}"
