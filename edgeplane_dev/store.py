"""The local stack's DynamoDB: dynalite, DynamoDB's API on LevelDB, run by node.

dynalite keeps its tables in a folder (``--path``), so the fleet survives a restart of the
stack and a crash of the store, and it serves requests concurrently while applying each
write atomically, as DynamoDB does (a conditional update sees the item as it is; two ADDs
both count). It is strict where DynamoDB is: tables are created asynchronously (CREATING,
then ACTIVE: ``chalicelib.models.create_tables`` waits), reserved words must be names in
placeholders, and a scan or query answers at most 1 MB per page.

It is installed from the repository's ``package-lock.json`` by ``npm ci`` (``make
install``). ``Store(folder).start()`` runs it on 127.0.0.1 and a free port and returns once
it answers; ``stop()`` ends it, ``kill()`` crashes it (SIGKILL, nothing flushed), and
``start()`` again serves the same folder on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.processes import is_running, spawn, stop

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DYNALITE = PROJECT_ROOT / "node_modules" / "dynalite" / "cli.js"
REGION = "us-east-1"
# The store checks signatures' shape, not their secret: any fixed pair does.
CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class StoreError(RuntimeError):
    pass


class StoreMissing(StoreError):
    pass


def store_command(port: int, data: Path) -> list[str]:
    """The command that serves ``data`` on ``port``; StoreMissing says how to install."""
    node = shutil.which("node")
    if node is None:
        raise StoreMissing("node is not installed: run `make install` (or `apt-get install "
                           "-y nodejs npm`)")
    if not DYNALITE.exists():
        raise StoreMissing(f"dynalite is not installed in {DYNALITE.parents[1]}: run "
                           "`make install` (or `npm ci` in the repository)")
    return [node, str(DYNALITE), "--host", LOOPBACK, "--port", str(port), "--path", str(data)]


def client(url: str, **config: Any) -> Any:
    """A boto3 DynamoDB client for the store at ``url``."""
    import boto3
    from botocore.config import Config

    return boto3.client("dynamodb", endpoint_url=url, region_name=REGION,
                        config=Config(**config), **CREDENTIALS)


def wait_until_answers(url: str, timeout: float, alive: Any = None) -> None:
    """Return once the store at ``url`` answers a request; TimeoutError if it does not.

    ``alive`` (a callable) is asked between tries: False ends the wait at once.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    probe = client(url, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe.list_tables(Limit=1)
            return
        except (BotoCoreError, ClientError) as exc:
            if alive is not None and not alive():
                raise StoreError(f"the store at {url} exited while starting") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"the store at {url} does not answer after "
                                   f"{timeout:.0f} s: {exc}") from exc
            time.sleep(0.05)


class Store:
    """dynalite serving the folder ``data`` (created if missing), its output in ``log``."""

    def __init__(self, data: Path, port: int | None = None, log: Path | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.log = log or data.with_name(f"{data.name}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise StoreError("the store is not running")
        return self.process.pid

    def start(self, timeout: float = 30.0) -> Store:
        if self.process is not None and self.process.poll() is None:
            raise StoreError(f"the store already runs (pid {self.process.pid})")
        self.data.mkdir(parents=True, exist_ok=True)
        self.process = spawn(store_command(self.port, self.data), self.log)
        try:
            wait_until_answers(self.url, timeout, alive=lambda: is_running(self.pid))
        except (StoreError, TimeoutError) as exc:
            self.stop()
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise StoreError(f"{exc}; its log ends:\n{tail}") from None
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def kill(self) -> None:
        """End the store as a crash would: SIGKILL, no chance to flush or close."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Store:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
