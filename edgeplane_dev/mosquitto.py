"""A mosquitto broker of our own (not the system service), on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgeplane import protocol
from edgeplane_dev.pki import Identity, cloud_identity
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


# The ingest processes of the bridge send plans too (a result that ends a wave dispatches
# the next), each as an identity of its own: ``ingest_process_part(n)``, up to this many.
INGEST_PROCESS_IDENTITIES = 8


def ingest_process_part(number: int) -> str:
    """The part of the cloud ingest process ``number`` (from 0) sends plans as."""
    return f"bridge-{number + 1}"


def write_acl(path: Path) -> Path:
    """The broker's ACL: the rule the infra's IoT policy expresses with
    ``${iot:Connection.Thing.ThingName}``. ``%u`` is the client's identity (its
    certificate's common name): a site publishes only under its own ``up`` topics and reads
    only its own ``down`` topics. The cloud's parts: ingest reads every site's reports,
    the parts that send plans and cancels (the API, the ticker, the bridge and each of its
    ingest processes) write every site's ``down`` topics."""
    root = protocol.TOPIC_ROOT
    lines = [
        f"pattern write {root}/%u/up/#",
        f"pattern read {root}/%u/down/#",
        "",
        f"user {cloud_identity('ingest')}",
        f"topic read {root}/+/up/#",
    ]
    senders = [ingest_process_part(n) for n in range(INGEST_PROCESS_IDENTITIES)]
    for part in ("api", "ticker", "bridge", *senders):
        lines += ["", f"user {cloud_identity(part)}", f"topic write {root}/+/down/#"]
    # What an operator's tools (and the benchmarks' fleet-only baseline) need: sending
    # plans, and seeing what every site is sent and reports.
    lines += ["", f"user {cloud_identity('operator')}", f"topic readwrite {root}/+/down/#",
              f"topic read {root}/+/up/#"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(directory: Path, port: int, persistence: bool = True,
                 log_file: Path | None = None, tls: Identity | None = None) -> Path:
    """A config with persistence on (unless told otherwise), so queued QoS 1 messages and
    retained ones survive a broker restart. The log goes to stdout, or to ``log_file``,
    where mosquitto writes each line as it happens (its stdout is block-buffered).

    With ``tls`` (the broker's identity from the stack's CA) the broker behaves like AWS
    IoT Core: TLS only, a client certificate from that CA required of every client (no
    anonymous client), the certificate's common name taken as the username the ACL scopes
    (``write_acl``) and as the client id, so a client id can only be used by its owner."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"listener {port} {LOOPBACK}"]
    if tls is None:
        lines.append("allow_anonymous true")
    else:
        lines += [
            f"cafile {tls.ca_file}",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "allow_anonymous false",
            f"acl_file {write_acl(directory / 'acl')}",
        ]
    lines.append(f"persistence {'true' if persistence else 'false'}")
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
                 persistence: bool = True, tls: Identity | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.persistence = persistence
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Mosquitto:
        config = write_config(self.directory, self.port, self.persistence, self.log_path,
                              self.tls)
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
