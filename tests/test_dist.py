"""What a site installs: the gateway's wheel holds the gateway and the wire contract only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gateway_wheel_holds_only_the_gateway_and_the_contract(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_dists.py"), "--only",
                    "gateway", "--dist", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("edge_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = Parser().parsestr(archive.read(
            next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = archive.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    code = [n for n in names if ".dist-info/" not in n]
    assert {n.split("/")[0] for n in code} == {"edge_gateway", "edgeplane"}
    assert sorted(n for n in code if n.startswith("edgeplane/")) == [
        "edgeplane/__init__.py", "edgeplane/protocol.py", "edgeplane/windows.py"]
    assert all(n.endswith(".py") for n in code), "no data files, mockups or caches"
    assert "edge_gateway/agent.py" in code and "edge_gateway/drivers/redfish/__init__.py" in code
    requires = sorted(r.split(";")[0].split("<")[0].split(">")[0].strip()
                      for r in metadata.get_all("Requires-Dist"))
    assert requires == ["cryptography", "paho-mqtt", "pyghmi", "sushy"]
    assert "edge-gateway = edge_gateway.cli:main" in entry_points
    # The whole site agent: drivers, journal, cache, upgrader and OS provisioning.
    assert wheel.stat().st_size < 256 * 1024
