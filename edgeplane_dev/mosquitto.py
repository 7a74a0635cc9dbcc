"""A mosquitto broker of our own (not the system service), on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp
from edgeplane_dev.processes import spawn, stop

INSTALL_HINT = "mosquitto is not installed: run `apt-get install -y mosquitto` (Debian/Ubuntu)"


class MosquittoMissing(RuntimeError):
    pass


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)
    if found is None:
        raise MosquittoMissing(INSTALL_HINT)
    return found


def write_config(directory: Path, port: int, persistence: bool = True,
                 log_file: Path | None = None) -> Path:
    """A config with persistence on (unless told otherwise), so queued QoS 1 messages and
    retained ones survive a broker restart. The log goes to stdout, or to ``log_file``,
    where mosquitto writes each line as it happens (its stdout is block-buffered)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        f"listener {port} {LOOPBACK}",
        "allow_anonymous true",
        f"persistence {'true' if persistence else 'false'}",
    ]
    if persistence:
        lines.append(f"persistence_location {directory}/")
    lines += [
        # A site's plans and the ingest bridge's backlog wait here: after an outage of
        # 10,000 sites the bridge's session holds several messages per site.
        "max_queued_messages 1000000",
        # Unacknowledged QoS 1 messages to one client (default 20): the bridge takes
        # batches of up to 100 in each of its workers.
        "max_inflight_messages 1000",
        f"log_dest file {log_file}" if log_file else "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]
    if os.geteuid() == 0:  # as root, mosquitto drops to user "mosquitto" unless told not to
        lines.append("user root")
    config = directory / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


class Mosquitto:
    """Start with ``start()`` (or as a context manager); ``restart()`` keeps its data unless
    made with ``persistence=False``, when a restart forgets every session and retained
    message. It logs to ``log_path``, a line at a time."""

    def __init__(self, directory: Path, port: int | None = None,
                 persistence: bool = True) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.persistence = persistence
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Mosquitto:
        config = write_config(self.directory, self.port, self.persistence, self.log_path)
        self.process = spawn([mosquitto_binary(), "-c", str(config)], self.log_path)
        wait_for_tcp(self.port, timeout=10)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
