"""Gateway versions for field-upgrade tests: a wheel built from this tree, and variants of
it stamped with other versions, some broken on purpose."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import ROOT

GOOD = "0.1.1+up"
CRASHES = "0.1.2+crashes"  # exits as soon as it is run
MUTE = "0.1.3+mute"  # runs, but never connects to the broker


def build_versions(folder: Path) -> dict[str, Path]:
    """The wheels of ``GOOD`` (built from this tree), ``CRASHES`` and ``MUTE``, in
    ``folder``."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_dists.py"), "--only",
                    "gateway", "--dist", str(folder), "--version", GOOD],
                   check=True, capture_output=True)
    (good,) = folder.glob("*.whl")
    return {
        GOOD: good,
        CRASHES: variant(good, CRASHES, folder, {"edge_gateway/cli.py": (
            "def run_gateway(config_path: str) -> int:\n",
            "def run_gateway(config_path: str) -> int:\n"
            "    raise SystemExit('this build is broken on purpose')\n")}),
        MUTE: variant(good, MUTE, folder, {"edge_gateway/transport.py": (
            "        self._handlers = (on_connect, on_message, on_delivered)\n",
            "        return  # this build never connects, on purpose\n")}),
    }


def variant(wheel: Path, version: str, folder: Path,
            patches: dict[str, tuple[str, str]] | None = None) -> Path:
    """A copy of ``wheel`` stamped ``version``, with text replaced in some of its files
    (``path: (old, new)``), its RECORD written again as a wheel's must be."""
    files: dict[str, bytes] = {}
    with zipfile.ZipFile(wheel) as archive:
        (info,) = {n.split("/")[0] for n in archive.namelist() if ".dist-info/" in n}
        for name in archive.namelist():
            if name.endswith(".dist-info/RECORD"):
                continue
            data = archive.read(name)
            if name == "edge_gateway/__init__.py":
                data = re.sub(rb'__version__ = ".*"', f'__version__ = "{version}"'.encode(), data)
            elif name == f"{info}/METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), data)
            for path, (old, new) in (patches or {}).items():
                if name == path:
                    assert old in data.decode(), f"{old!r} is not in {path}"
                    data = data.decode().replace(old, new).encode()
            files[name.replace(info, f"edge_gateway-{version}.dist-info")] = data
    record_name = f"edge_gateway-{version}.dist-info/RECORD"
    lines = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    lines.append(f"{record_name},,")
    files[record_name] = ("\n".join(lines) + "\n").encode()
    made = folder / f"edge_gateway-{version}-py3-none-any.whl"
    with zipfile.ZipFile(made, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return made


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
