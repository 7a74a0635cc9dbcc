"""``probe()`` against sushy-tools' emulator with a single system (no auth)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway.errors import BmcError, BmcUnreachableError, ConfigError
from edge_gateway.probe import parse_bmc_url, probe
from edgeplane.protocol import BmcProtocol
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.sushy_emulator import SushyEmulator


@pytest.fixture
def emulator(sushy_one_system) -> SushyEmulator:
    """The session's emulator of one system (on), which probing changes nothing of."""
    return sushy_one_system


def test_probe_redfish(emulator):
    result = probe(emulator.url, "admin", "password", timeout=5)

    assert json.loads(json.dumps(result)) == result
    identity = {
        "url": emulator.url,
        "protocol": "redfish",
        "manufacturer": "Sushy Emulator",
        "model": None,
        "serial": None,
        "power": "on",
    }
    assert {key: result[key] for key in identity} == identity
    assert {"boot", "inventory", "power"} <= set(result["capabilities"])


def test_probe_url_may_name_the_system(emulator):
    url = emulator.url + emulator.system_ids[0]
    assert probe(url, "admin", "password", timeout=5)["power"] == "on"


def test_probe_of_a_system_the_bmc_does_not_have(emulator):
    with pytest.raises(BmcError, match="no-such-system"):
        probe(emulator.url + "/redfish/v1/Systems/no-such-system", "admin", "password",
              timeout=5)


def test_probe_of_nothing_listening():
    with pytest.raises(BmcUnreachableError):
        probe(f"http://{LOOPBACK}:{free_port()}", "admin", "password", timeout=2)


@pytest.mark.parametrize("url", ["ftp://10.0.0.1", "10.0.0.1", "ipmi://"])
def test_probe_needs_a_known_scheme_and_a_host(url):
    with pytest.raises(ConfigError):
        probe(url, "admin", "password")


def test_parse_bmc_url():
    protocol, credentials = parse_bmc_url("ipmi://10.0.0.12:623", "admin", "pw")
    assert (protocol, credentials.address) == (BmcProtocol.IPMI, "10.0.0.12:623")

    protocol, credentials = parse_bmc_url("https://bmc.example/redfish/v1/", "admin", "pw")
    assert (protocol, credentials.address) == (BmcProtocol.REDFISH, "https://bmc.example")
    assert credentials.system_id is None

    _, credentials = parse_bmc_url("https://bmc.example/redfish/v1/Systems/1", "admin", "pw")
    assert credentials.system_id == "/redfish/v1/Systems/1"


def edge_gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "edge-gateway"), *args],
                          capture_output=True, text=True, timeout=60)


def test_the_probe_command_prints_json_for_a_redfish_bmc(emulator):
    result = edge_gateway_cli("bmc", "probe", emulator.url, "-u", "admin", "-p", "password")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["protocol"] == "redfish" and printed["power"] == "on"


def test_the_probe_command_prints_json_for_an_ipmi_bmc(ipmi_bmcs):
    bmc = ipmi_bmcs.fresh()
    result = edge_gateway_cli("bmc", "probe", f"ipmi://{bmc.address}",
                              "-u", "admin", "-p", "password")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["protocol"] == "ipmi"
    assert printed["manufacturer"] == "Edgeplane" and printed["serial"].startswith("EPSIM-")
    assert printed["capabilities"] == ["bmc_reset", "boot", "health", "inventory", "power",
                                       "sel"]
    assert printed["inventory"]["fru"]["product"]["serial"] == printed["serial"]


def test_the_probe_command_names_the_bmc_when_the_password_is_wrong(ipmi_bmcs):
    bmc = ipmi_bmcs.fresh()
    result = edge_gateway_cli("bmc", "probe", f"ipmi://{bmc.address}",
                              "-u", "admin", "-p", "wrong", "--timeout", "5")
    assert result.returncode == 2
    assert bmc.address in result.stderr and "Traceback" not in result.stderr
