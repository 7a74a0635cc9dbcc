"""The systemd unit a site box runs the gateway with (packaging/edge-gateway.service)."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from tests.support import ROOT

UNIT = ROOT / "packaging" / "edge-gateway.service"


def service() -> dict[str, list[str]]:
    """[Service]'s settings, every value of a key that is given more than once."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_gateway_runs_unprivileged_and_writes_only_its_journal():
    unit = service()
    assert unit["User"] == ["edge-gateway"] and unit["Group"] == ["edge-gateway"]
    assert unit["ExecStart"][0].split() == [
        "/var/lib/edge-gateway/current/bin/edge-gateway", "supervise", "--root",
        "/var/lib/edge-gateway", "--config", "/etc/edge-gateway/gateway.toml"]
    assert unit["ExecStartPre"][0].split()[1:] == ["versions", "--root",
                                                  "/var/lib/edge-gateway", "adopt"]
    assert unit["ProtectSystem"] == ["strict"] and unit["ProtectHome"] == ["yes"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["CapabilityBoundingSet"] == [""]
    assert unit["StateDirectory"] == ["edge-gateway"], "the journal's folder, writable"
    assert "ReadWritePaths" not in unit
    assert unit["Restart"] == ["always"]
    assert set(unit["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6",
                                                               "AF_UNIX"}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path):
    gateway = tmp_path / "edge-gateway"
    gateway.write_text("#!/bin/sh\n")
    gateway.chmod(0o755)
    unit = tmp_path / "edge-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-gateway/bin/edge-gateway", str(gateway))
                    .replace("/var/lib/edge-gateway/current/bin/edge-gateway", str(gateway)))
    answer = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, check=False)
    assert answer.returncode == 0, answer.stderr
    assert "Unknown" not in answer.stderr and "ignoring" not in answer.stderr.lower(), \
        answer.stderr


def test_the_unit_parses_as_ini():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"
