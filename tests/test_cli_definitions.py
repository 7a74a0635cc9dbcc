"""``edgeplane apply|get|describe|delete|params`` as an operator types them, against the real
API (chalice local on moto server) of a local stack without sites."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeplane_cli.client import ApiClient
from edgeplane_dev.stack import LocalStack

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "fleet"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-home")
    stack = LocalStack(home / "dev", [])
    state = stack.up()
    env = {**os.environ, "EDGEPLANE_API_URL": state.api_url, "EDGEPLANE_TOKEN": state.token,
           "EDGEPLANE_HOME": str(home)}
    try:
        yield env, ApiClient(state.context)
    finally:
        stack.down()


def edgeplane(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "edgeplane"), *args], capture_output=True, text=True,
                            env={**env, "COLUMNS": "200"}, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"edgeplane {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def test_apply_the_example_fleet_then_again_changes_nothing(cloud):
    env, _ = cloud
    first = json.loads(edgeplane(env, "apply", "-f", str(EXAMPLES), "--json").stdout)
    assert {r["action"] for r in first["results"]} == {"created"}
    kinds = sorted({r["kind"] for r in first["results"]})
    assert kinds == ["blueprint", "group", "machine-class", "profile", "site"]
    again = edgeplane(env, "apply", "-f", str(EXAMPLES))
    assert "0 changed" in again.stdout

    listed = json.loads(edgeplane(env, "get", "profiles", "--json").stdout)["items"]
    assert "europe-energy" in {item["name"] for item in listed}
    table = edgeplane(env, "get", "group").stdout
    assert "flagship" in table and "sites tagged flagship" in table
    described = edgeplane(env, "describe", "blueprint", "server-baseline").stdout
    assert "revision 1 of 1" in described and "task: bios.apply" in described


def test_dry_run_prints_the_diff_and_changes_nothing(cloud, tmp_path):
    env, api = cloud
    edgeplane(env, "apply", "-f", str(EXAMPLES))
    changed = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, changed)
    profiles = changed / "profiles.yaml"
    profiles.write_text(profiles.read_text().replace("params: {turbo: Disabled}",
                                                     "params: {turbo: Enabled}"))
    result = edgeplane(env, "apply", "-f", str(changed), "--dry-run")
    assert "profile site-003-thermal: updated" in result.stdout
    assert '~ spec.params.turbo: "Disabled" -> "Enabled"' in result.stdout
    assert "dry run: nothing written" in result.stdout
    stored = api.get("/definitions/profile/site-003-thermal")["item"]["spec"]["params"]
    assert stored == {"turbo": "Disabled"}


def test_errors_name_the_file(cloud, tmp_path):
    env, _ = cloud
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: group\nname: x\nspec: {tags: [a]\n")
    result = edgeplane(env, "apply", "-f", str(broken), check=False)
    assert result.returncode == 2 and f"{broken}: line" in result.stderr
    assert "not valid YAML" in result.stderr and "Traceback" not in result.stderr

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("kind: group\nname: ok\nspec: {tags: [a]}\n---\n"
                     "kind: blueprint\nname: b\nspec: {steps: [{task: power.toggle}]}\n")
    result = edgeplane(env, "apply", "-f", str(wrong), check=False)
    assert result.returncode == 2
    assert f"{wrong}#2 (blueprint b): spec.steps[0]: unknown task 'power.toggle'" in \
        result.stderr
    assert edgeplane(env, "get", "group", "ok", check=False).returncode == 2, \
        "nothing of the batch was written"


def test_explain_and_variation(cloud):
    env, api = cloud
    edgeplane(env, "apply", "-f", str(EXAMPLES))
    api.put("/sites/site-001/machines/srv-1", {"protocol": "redfish",
                                               "address": "https://bmc-1.site-001",
                                               "machine_class": "rackmount-3500"})
    explained = json.loads(edgeplane(env, "params", "explain", "--site", "site-001",
                                     "--machine", "srv-1", "--blueprint", "server-baseline",
                                     "--json").stdout)
    values = {p["name"]: p for p in explained["params"]}
    assert (values["boot_target"]["value"], values["boot_target"]["level"]) == \
        ("disk", "machine")
    assert values["power_profile"]["profile"] == "flagship-performance"
    assert [o["profile"] for o in values["power_profile"]["overrides"]][:2] == \
        ["europe-energy", "fleet-defaults"]
    table = edgeplane(env, "params", "explain", "--site", "site-003").stdout
    assert "site-003-thermal" in table and "groups: asia" in table

    report = json.loads(edgeplane(env, "params", "variation", "--json").stdout)
    assert report["sites"] == 3 and report["customized_sites"] == 1
    redundant = {p["name"]: p["redundant_overrides"] for p in report["parameters"]}
    assert redundant["power_profile"] == ["site-002-defaults"]
    assert "3 sites; 1 with overrides" in edgeplane(env, "params", "variation").stdout


def test_delete(cloud):
    env, _ = cloud
    edgeplane(env, "apply", "-f", str(EXAMPLES))
    refused = edgeplane(env, "delete", "group", "europe", check=False)
    assert refused.returncode == 2 and "API error 409" in refused.stderr
    assert "europe-energy" in refused.stderr
    assert edgeplane(env, "delete", "machine-class", "edge-1u", check=False).returncode == 2
    assert edgeplane(env, "delete", "profile", "edge-1u-health").returncode == 0
    assert "machine-class edge-1u deleted" in edgeplane(env, "delete", "machine-class",
                                                        "edge-1u").stdout
