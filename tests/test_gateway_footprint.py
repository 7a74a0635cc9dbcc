"""What a gateway process loads and how it sets up its memory.

A site runs one gateway on a small box: it loads the driver of each protocol its machines
use and no other (pyghmi for IPMI, sushy and requests for Redfish), and ``edge-gateway run``
leaves out what it never uses (requests' character set detector) and starts with glibc's
per-thread malloc caches off. The import checks run in a bare interpreter, as
``test_layers`` does, so that nothing this test process imported counts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway import bytecode, cli
from edgeplane.protocol import Plan, PlanStep
from edgeplane_dev.ports import free_port
from edgeplane_dev.processes import environment_of, spawn, stop
from tests.support import PLAN_KEYS, sign, wait_until

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


@pytest.fixture
def restarts(monkeypatch):
    """What ``restart_lean`` would start again with: (executable, argv, environment)."""
    started: list[tuple[str, list[str], dict[str, str | None]]] = []
    # A copy of the environment: what the restart sets must not reach this process's later
    # children (a PYTHONOPTIMIZE=2 left behind runs every later tool without its asserts).
    names = ("GLIBC_TUNABLES", "PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES")
    monkeypatch.setattr(os, "environ", {key: value for key, value in os.environ.items()
                                        if key not in names})
    monkeypatch.setattr(os, "execv", lambda path, argv: started.append((path, list(argv), {
        name: os.environ.get(name)
        for name in ("GLIBC_TUNABLES", "PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES")})))
    monkeypatch.setattr(sys, "orig_argv", ["python", "edge-gateway", "run", "--config", "x"])
    return started


@pytest.mark.parametrize("libc, lean, expected", [
    ("glibc 2.36", False, {"GLIBC_TUNABLES": cli.MALLOC_TUNABLES, "PYTHONOPTIMIZE": None,
                           "PYTHONNODEBUGRANGES": None}),
    ("glibc 2.36", True, {"GLIBC_TUNABLES": cli.MALLOC_TUNABLES, "PYTHONOPTIMIZE": "2",
                          "PYTHONNODEBUGRANGES": "1"}),
    ("", True, {"GLIBC_TUNABLES": None, "PYTHONOPTIMIZE": "2", "PYTHONNODEBUGRANGES": "1"}),
])
def test_run_starts_again_with_what_keeps_it_small(monkeypatch, restarts, libc, lean,
                                                   expected):
    monkeypatch.setattr(os, "confstr", lambda name: libc)
    monkeypatch.setattr(bytecode, "lean_bytecode_installed", lambda: lean)
    cli.restart_lean()
    assert restarts == [(sys.executable, ["python", "edge-gateway", "run", "--config", "x"],
                         expected)]


@pytest.mark.parametrize("tunables, optimize, libc, lean", [
    ("glibc.malloc.arena_max=4", "0", "glibc 2.36", True),  # the operator's own: kept
    (None, None, "", False),  # not glibc (musl answers nothing), and no lean bytecode
])
def test_run_does_not_start_again(monkeypatch, restarts, tunables, optimize, libc, lean):
    for name, value in (("GLIBC_TUNABLES", tunables), ("PYTHONOPTIMIZE", optimize)):
        if value is not None:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, "confstr", lambda name: libc)
    monkeypatch.setattr(bytecode, "lean_bytecode_installed", lambda: lean)
    cli.restart_lean()
    assert restarts == []
    assert os.environ.get("GLIBC_TUNABLES") == tunables


def test_lean_bytecode_is_found_only_once_written(tmp_path, monkeypatch):
    package = tmp_path / "leanprobe"
    package.mkdir()
    (package / "__init__.py").write_text('"""A docstring -OO leaves out."""\nVALUE = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not bytecode.lean_bytecode_installed(("leanprobe",))
    assert not bytecode.lean_bytecode_installed(("no_such_module_here",))
    py_compile.compile(str(package / "__init__.py"), optimize=2, doraise=True,
                       cfile=importlib.util.cache_from_source(str(package / "__init__.py"),
                                                              optimization=2))
    assert bytecode.lean_bytecode_installed(("leanprobe",))


def test_the_gateway_runs_its_modules_under_minus_OO(tmp_path):
    """No module of the gateway (drivers, cache, upgrade, provisioning) nor what they load
    relies on a docstring or an assert: each imports under -OO, and a plan's wire contract
    still refuses what it must."""
    code = (
        "import importlib, pkgutil, sys, edge_gateway\n"
        "if sys.flags.optimize != 2: sys.exit('not -OO')\n"
        "for m in pkgutil.walk_packages(edge_gateway.__path__, 'edge_gateway.'):\n"
        "    importlib.import_module(m.name)\n"
        "from edgeplane.protocol import Plan, ProtocolError\n"
        "try:\n"
        "    Plan.from_dict({'execution_id': '', 'steps': []})\n"
        "except ProtocolError as exc:\n"
        "    print('refused:', exc)\n"
        "print(len(sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-OO", "-c", code], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "refused:" in result.stdout


def test_main_called_as_a_library_never_starts_again(monkeypatch, tmp_path):
    """``main(argv)`` (a test, a caller of its own) is not the process's command line."""
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("started again"))
    assert cli.main(["run", "--config", str(tmp_path / "missing.toml")]) == 2


def test_edge_gateway_run_starts_itself_lean_where_its_bytecode_is_installed(tmp_path,
                                                                              monkeypatch):
    """The real command: started again (same pid) with the malloc tunables, and with
    ``-OO`` exactly where ``edge-gateway lean-bytecode`` has written that bytecode (as
    ``make install`` does). (glibc cuts the tunables' string where it reads it, so only
    that it is there is checked.)"""
    for name in ("GLIBC_TUNABLES", "PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES"):
        monkeypatch.delenv(name, raising=False)
    config = site_config(tmp_path, "redfish")
    config.write_text(config.read_text().replace(
        '[mqtt]\nhost = "127.0.0.1"\n', f'[mqtt]\nhost = "127.0.0.1"\nport = {free_port()}\n'))
    process = spawn([str(Path(sys.executable).parent / "edge-gateway"), "run", "--config",
                     str(config)], tmp_path / "gateway.log")
    try:
        wait_until(lambda: "GLIBC_TUNABLES" in environment_of(process.pid), timeout=20,
                   what="the gateway started again with its tunables")
        running = environment_of(process.pid)
        assert process.poll() is None, (tmp_path / "gateway.log").read_text()
    finally:
        stop(process, grace=10)
    lean = bytecode.lean_bytecode_installed()
    assert running.get("PYTHONOPTIMIZE") == ("2" if lean else None)
    assert running.get("PYTHONNODEBUGRANGES") == ("1" if lean else None)
