"""What a gateway process loads and how it sets up its memory.

A site runs one gateway on a small box: it loads the driver of each protocol its machines
use and no other (pyghmi for IPMI, sushy and requests for Redfish), and ``edge-gateway run``
leaves out what it never uses (requests' character set detector) and starts with glibc's
per-thread malloc caches off. The import checks run in a bare interpreter, as
``test_layers`` does, so that nothing this test process imported counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway import cli
from edgeplane.protocol import Plan, PlanStep
from tests.support import PLAN_KEYS, sign

ROOT = Path(__file__).resolve().parent.parent

MACHINES = {
    "redfish": ('protocol = "redfish"\naddress = "http://127.0.0.1:9"\n'),
    "ipmi": ('protocol = "ipmi"\naddress = "127.0.0.1:9"\n'),
}


def site_config(tmp_path: Path, *protocols: str) -> Path:
    machines = "".join(
        f'\n[[machines]]\nid = "srv-{number}"\n{MACHINES[protocol]}'
        'username = "admin"\npassword = "password"\n'
        for number, protocol in enumerate(protocols, start=1))
    path = tmp_path / "gateway.toml"
    path.write_text(f'site = "lab"\njournal = "{tmp_path / "journal.db"}"\n'
                    '[mqtt]\nhost = "127.0.0.1"\n'
                    f'[trust]\nplan_keys = {json.dumps(list(PLAN_KEYS))}\n{machines}')
    path.chmod(0o600)
    return path


def loaded_by_a_gateway(config: Path, prepare: str = "", then: str = "") -> set[str]:
    """The top-level packages a fresh interpreter holds once a gateway for ``config`` is
    made and has a driver for each of its machines (none is connected), and ``then`` ran."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"{prepare}"
        "from edge_gateway.agent import Gateway\n"
        "from edge_gateway.config import load_config\n"
        f"config = load_config({str(config)!r})\n"
        "gateway = Gateway(config, transport_factory=lambda gateway: None)\n"
        "drivers = [gateway.driver_factory(machine) for machine in config.machines]\n"
        f"{then}"
        "print(json.dumps(sorted({name.split('.')[0] for name, module in sys.modules.items()\n"
        "                         if module is not None})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=config.parent)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_a_redfish_site_loads_no_ipmi_library(tmp_path):
    loaded = loaded_by_a_gateway(site_config(tmp_path, "redfish", "redfish"))
    assert {"sushy", "requests"} <= loaded
    assert "pyghmi" not in loaded


def test_an_ipmi_site_loads_no_redfish_library(tmp_path):
    loaded = loaded_by_a_gateway(site_config(tmp_path, "ipmi"))
    assert "pyghmi" in loaded
    assert not loaded & {"sushy", "requests", "urllib3"}


def test_a_mixed_site_loads_both(tmp_path):
    loaded = loaded_by_a_gateway(site_config(tmp_path, "ipmi", "redfish"))
    assert {"pyghmi", "sushy"} <= loaded


def test_a_site_without_a_cache_or_upgrades_loads_neither(tmp_path):
    """The artifact cache's LAN server and a field upgrade's installer are loaded by a site
    that has a cache, or when an upgrade runs: not by every gateway."""
    loaded_by_a_gateway(site_config(tmp_path, "redfish"), then=(
        "open('modules.json', 'w').write(json.dumps(sorted(sys.modules)))\n"))
    modules = set(json.loads((tmp_path / "modules.json").read_text()))
    assert "edge_gateway.agent" in modules
    assert not modules & {"edge_gateway.cache.site", "edge_gateway.cache.server",
                          "edge_gateway.cache.fetch", "http.server",
                          "edge_gateway.upgrade.install", "edge_gateway.upgrade.artifact"}


def test_checking_a_plan_s_signature_loads_no_second_openssl(tmp_path):
    """The ssl module's libcrypto checks the signature: ``cryptography`` (an OpenSSL of its
    own, about 7 MiB) stays out of a Redfish site."""
    plan = Plan(site="lab", execution_id="x-1", rollout_id="r-1",
                steps=[PlanStep("power.ensure", {"state": "on"}, ["srv-1"])])
    check = ("from edge_gateway.trust import PlanVerifier\n"
             f"assert PlanVerifier(config.plan_keys).verify(json.loads({sign(plan)!r}))\n")
    loaded = loaded_by_a_gateway(site_config(tmp_path, "redfish"), then=check)
    assert "ssl" in loaded
    assert "cryptography" not in loaded


def test_the_gateway_process_leaves_out_character_set_detection(tmp_path):
    """What ``edge-gateway run`` does before it loads the gateway: requests then decodes a
    body that declares no charset as UTF-8, without a detector (and says nothing of it)."""
    prepare = "from edge_gateway.cli import leave_out_charset_detection\n" \
              "leave_out_charset_detection()\n"
    loaded = loaded_by_a_gateway(site_config(tmp_path, "redfish"), prepare)
    assert "requests" in loaded
    assert not loaded & {"charset_normalizer", "chardet"}

    code = (
        f"import sys, warnings\nsys.path.insert(0, {str(ROOT)!r})\n"
        "warnings.simplefilter('error')\n"
        "from edge_gateway.cli import leave_out_charset_detection\n"
        "leave_out_charset_detection()\n"
        "import requests\n"
        "response = requests.models.Response()\n"
        "response._content = 'r\\u00e9ponse'.encode()\n"
        "print(response.text)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "r\u00e9ponse"


def test_run_starts_again_with_the_malloc_tunables(monkeypatch):
    started: list[tuple[str, list[str], str | None]] = []
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(os, "confstr", lambda name: "glibc 2.36")
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append(
        (path, list(argv), os.environ.get("GLIBC_TUNABLES"))))
    monkeypatch.setattr(sys, "orig_argv", ["python", "edge-gateway", "run", "--config", "x"])

    cli.restart_with_malloc_tunables()
    assert started == [(sys.executable, ["python", "edge-gateway", "run", "--config", "x"],
                        cli.MALLOC_TUNABLES)]


@pytest.mark.parametrize("tunables, libc", [
    ("glibc.malloc.arena_max=4", "glibc 2.36"),  # the operator's own: kept as they are
    (None, ""),  # not glibc (musl answers nothing)
])
def test_run_does_not_start_again(monkeypatch, tunables, libc):
    if tunables is None:
        monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    else:
        monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    monkeypatch.setattr(os, "confstr", lambda name: libc)
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("started again"))
    cli.restart_with_malloc_tunables()
    assert os.environ.get("GLIBC_TUNABLES") == tunables


def test_main_called_as_a_library_never_starts_again(monkeypatch, tmp_path):
    """``main(argv)`` (a test, a caller of its own) is not the process's command line."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("started again"))
    assert cli.main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
