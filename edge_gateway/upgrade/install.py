"""Installing a version beside the running one, offline, never touching the running one.

Each version is a virtual environment of its own under ``<root>/versions/<version>``,
holding only the gateway's wheel (installed by pip, ``--no-index --no-deps``: nothing is
fetched). Its dependencies (paho-mqtt, sushy, pyghmi, cryptography) are those of the
site's first installation, reused through a ``.pth`` file: a version is a few hundred KiB,
and a site needs no package index. So a new version must need nothing the site's first
installation lacks; its self-test (``edge-gateway self-test``, run before any switch) finds
out if it does, and the upgrade fails there, with the running version untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from edge_gateway.errors import GatewayError
from edge_gateway.upgrade.artifact import Wheel
from edge_gateway.upgrade.layout import INSTALLED_MARK, Layout

DEPENDENCIES_PTH = "edge_gateway_dependencies.pth"
OUTPUT_TAIL = 800  # characters of a failed command's output an error quotes
TIMEOUTS = {"venv": 120.0, "pip": 300.0, "lean-bytecode": 120.0, "self-test": 120.0}


class InstallError(GatewayError):
    """A version could not be installed, or does not pass its self-test."""


def dependency_paths() -> list[str]:
    """Where the running version finds its dependencies: the folders its own ``.pth``
    names, if it is one of the layout's versions; else (the first installation) its own
    site-packages."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    own = purelib / DEPENDENCIES_PTH
    if own.is_file():
        return [line for line in own.read_text().splitlines() if line.strip()]
    platlib = Path(sysconfig.get_paths()["platlib"])
    return list(dict.fromkeys(str(p) for p in (purelib, platlib)))


def install(layout: Layout, wheel: Wheel, sha256: str, config_path: Path,
            python: str = sys.executable) -> Path:
    """Install ``wheel`` (of SHA-256 ``sha256``) as its version's folder and self-test it
    there against the site's config; the folder, marked installed with the digest.
    InstallError (and nothing left) otherwise."""
    folder = layout.version_dir(wheel.version)
    layout.remove(wheel.version)  # what an install cut short left
    layout.versions.mkdir(parents=True, exist_ok=True)
    try:
        _run("venv", [python, "-m", "venv", "--without-pip", str(folder)])
        site_packages = folder / "lib" / f"python{sys.version_info.major}." \
            f"{sys.version_info.minor}" / "site-packages"
        if not site_packages.is_dir():
            raise InstallError(f"the new environment has no {site_packages}")
        (site_packages / DEPENDENCIES_PTH).write_text("\n".join(dependency_paths()) + "\n")
        _run("pip", [str(folder / "bin" / "python"), "-m", "pip", "install", "--no-index",
                     "--no-deps", "--ignore-installed", "--no-input", "--quiet",
                     "--disable-pip-version-check", "--no-warn-script-location",
                     str(wheel.path)])
        # Its -OO bytecode, so that it runs as lean as the version before (edge_gateway.bytecode).
        _run("lean-bytecode", [str(layout.executable(wheel.version)), "lean-bytecode"])
        answer = _run("self-test", [str(layout.executable(wheel.version)), "self-test",
                                    "--config", str(config_path)])
        try:
            reported = json.loads(answer)["version"]
        except (ValueError, KeyError, TypeError):
            raise InstallError(f"its self-test answered {answer[-OUTPUT_TAIL:]!r}, not the "
                               "JSON of a version") from None
        if reported != wheel.version:
            raise InstallError(f"it says it is version {reported!r}, not {wheel.version}")
        (folder / INSTALLED_MARK).write_text(json.dumps({"wheel": wheel.path.name,
                                                         "sha256": sha256}) + "\n")
    except BaseException:
        layout.remove(wheel.version)
        raise
    return folder


def _run(step: str, command: list[str]) -> str:
    """Run one step of the install; its standard output, or InstallError quoting what it
    said when it failed."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PIP_", "PYTHON"))}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PYTHONNOUSERSITE": "1"})
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=TIMEOUTS[step], check=False)
    except subprocess.TimeoutExpired:
        raise InstallError(f"{step} did not finish within {TIMEOUTS[step]:.0f} s") from None
    except OSError as exc:
        raise InstallError(f"{step} could not start: {exc}") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-OUTPUT_TAIL:]
        raise InstallError(f"{step} failed (exit status {done.returncode}): {said}")
    return done.stdout
