"""sushy-tools' Redfish emulator, run with its fake driver (no libvirt) on 127.0.0.1.

For the local stack and the tests: a real HTTP Redfish service, an independent peer for the
Redfish driver. What it does not do like a real BMC (sushy-tools 2.2, measured):

- A power change is accepted at once but takes effect after a random 1-11 s; poll for it.
  Asking for the state the system is already in (or is already heading to) does nothing.
- ``BootSourceOverrideEnabled`` is ignored: an override set "Once" reads back as
  "Continuous", and a fresh system reads as Hdd / Continuous (never "no override").
- Systems have no Model, SerialNumber, Bios, Processors or SimpleStorage; the Manufacturer
  is "Sushy Emulator".
- State persists in sqlite under the state dir: a fresh dir gives fresh systems, a reused
  one keeps the systems (and power states) of the last run.
- Basic auth (``SUSHY_EMULATOR_AUTH_FILE``, bcrypt htpasswd) guards everything but the
  service root, which answers without credentials. There is no SessionService, so sushy
  falls back to basic auth.
- It leaks sqlite connections under many concurrent clients: keep <= 10 per process.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeplane.protocol import PowerState
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.processes import spawn, stop

LOG = logging.getLogger(__name__)

START_TIMEOUT = 20.0
# werkzeug's access log: ... "POST /redfish/v1/... HTTP/1.1" 204 (colour codes around it)
_REQUEST_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*(?P<method>[A-Z]+) (?P<path>\S+) HTTP/')


def _mac_for(system_uuid: str) -> str:
    """A locally administered MAC derived from the system's UUID (stable across runs)."""
    tail = uuid.UUID(system_uuid).hex[-6:]
    return "52:54:00:" + ":".join(tail[i:i + 2] for i in range(0, 6, 2))


@dataclass(frozen=True)
class FakeSystem:
    """One ComputerSystem of the emulator's fake driver."""

    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    name: str = ""  # default: "fake-" and the start of the UUID
    power_state: PowerState = PowerState.OFF
    mac: str = ""  # default: derived from the UUID

    def to_config(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "name": self.name or f"fake-{self.uuid[:8]}",
            "power_state": "On" if self.power_state == PowerState.ON else "Off",
            "external_notifier": False,
            "nics": [{"mac": self.mac or _mac_for(self.uuid)}],
        }


def emulator_binary() -> Path:
    """``sushy-emulator`` from the running interpreter's environment."""
    binary = Path(sys.executable).parent / "sushy-emulator"
    if not binary.exists():
        raise RuntimeError(f"{binary} not found: install sushy-tools into this environment "
                           "(pip install 'sushy-tools>=2,<3')")
    return binary


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """The emulator accepts bcrypt digests only."""
    import bcrypt  # a dependency of sushy-tools; needed only when auth is on

    digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{username}:{digest}\n")


class SushyEmulator:
    """Start with ``start()`` or as a context manager; ``stop()`` always reaps the process."""

    def __init__(self, systems: list[FakeSystem] | int, port: int | None = None,
                 state_dir: Path | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        if isinstance(systems, int):
            systems = [FakeSystem(name=f"fake-{i}") for i in range(systems)]
        if not systems:
            raise ValueError("the emulator needs at least one system")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.systems = list(systems)
        self.port = port or free_port()
        self.username, self.password = username, password
        self._owns_dir = state_dir is None
        self.directory = state_dir or Path(tempfile.mkdtemp(prefix="sushy-emulator-"))
        self.process: subprocess.Popen | None = None
        self.system_ids: list[str] = []
        self.startup_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "sushy-emulator.log"

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        settings: dict[str, Any] = {
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [s.to_config() for s in self.systems],
            "SUSHY_EMULATOR_STATE_DIR": str(self.directory / "state"),
            "SUSHY_EMULATOR_LISTEN_IP": LOOPBACK,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
        }
        if self.username is not None and self.password is not None:
            auth_file = self.directory / "htpasswd"
            write_htpasswd(auth_file, self.username, self.password)
            settings["SUSHY_EMULATOR_AUTH_FILE"] = str(auth_file)
        config = self.directory / "emulator.conf"
        # The config file is Python; repr() of these plain values is valid Python.
        config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
        return config

    def start(self) -> SushyEmulator:
        config = self.write_config()
        started = time.monotonic()
        self.process = spawn(
            [str(emulator_binary()), "--config", str(config),
             "--interface", LOOPBACK, "--port", str(self.port)],
            self.log_path,
        )
        try:
            self._wait_ready(started + START_TIMEOUT)
            self.system_ids = self._find_system_ids()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        LOG.info("sushy-emulator on %s with %d systems, ready in %.2f s", self.url,
                 len(self.systems), self.startup_seconds)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None
        if self._owns_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SushyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received(self) -> list[tuple[str, str]]:
        """(method, path) of every request the emulator has logged so far, oldest first."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [(m["method"], m["path"]) for m in _REQUEST_LINE.finditer(text)]

    # --- internals ------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path)  # noqa: S310 - http://127.0.0.1
        if self.username is not None and self.password is not None:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.load(response)

    def _wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited with {self.process.returncode}:\n"
                                   f"{self._log_tail()}")
            try:
                self._get("/redfish/v1")
                return
            except (OSError, ValueError):  # URLError is an OSError
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sushy-emulator on {self.url} did not answer within "
                                       f"{START_TIMEOUT:.0f} s:\n{self._log_tail()}") from None
                time.sleep(0.05)

    def _find_system_ids(self) -> list[str]:
        """Each system's @odata.id, in the order of ``systems`` (found by the links)."""
        root = self._get("/redfish/v1")
        collection = self._get(root["Systems"]["@odata.id"])
        by_uuid = {}
        for member in collection["Members"]:
            system = self._get(member["@odata.id"])
            by_uuid[system["UUID"]] = system["@odata.id"]
        try:
            return [by_uuid[s.uuid] for s in self.systems]
        except KeyError as exc:
            raise RuntimeError(f"sushy-emulator on {self.url} does not list system {exc}; it "
                               f"lists {sorted(by_uuid)} (a reused state dir?)") from None

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
