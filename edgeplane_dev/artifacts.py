"""The local stack's artifact server: the files in one folder, read-only over HTTP on
loopback, where a field upgrade's gateway downloads its wheel from (in AWS: a bucket or a
CDN the sites reach). ``publish`` puts a file there and gives its URL and SHA-256, the two
parameters a ``gateway.upgrade`` step needs besides the version.

Run it with ``python -m edgeplane_dev.artifacts --port P --directory D``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import os
import shutil
import signal
import threading
from pathlib import Path

from edgeplane_dev.ports import LOOPBACK


class _Files(http.server.SimpleHTTPRequestHandler):
    """GET and HEAD of the folder's files; no listings, no log lines per request."""

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "no listings")
        return None

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's
        pass


def publish(source: Path, directory: Path, port: int) -> tuple[str, str]:
    """Copy ``source`` into the served ``directory``: its URL and its SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.name
    shutil.copyfile(source, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    return f"http://{LOOPBACK}:{port}/{target.name}", digest


def serve(port: int, directory: Path, stop: threading.Event) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(_Files, directory=str(directory))
    server = http.server.ThreadingHTTPServer((LOOPBACK, port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(args.port, args.directory, stop)


if __name__ == "__main__":
    main()
