"""The local stack's artifact server: the files in one folder, read-only over HTTP on
loopback, where gateways download wheels, installer images and firmware from (in AWS: a
bucket or a CDN the sites reach). ``publish`` puts a file there and gives its URL and
SHA-256, the parameters a ``gateway.upgrade`` step or a cached image needs.

It answers GET and HEAD with single byte ranges (206, 416), as S3 does, so a gateway can
resume a download. For tests and benchmarks it records each request (``requests``), can
cut the next responses short (``cut_after``: close the connection after that many body
bytes, as a WAN cut does) and can pace what it sends (``rate``: bytes per second, a
simulated WAN link); ``GET /_stats`` answers them as JSON (``requests``: method, path and
Range of each; ``body_bytes``: what it sent), for a test or benchmark in another process.
``make_installer`` writes a generated installer image of a given size (the same bytes for
the same size and name).

Run it with ``python -m edgeplane_dev.artifacts --port P --directory D [--rate BYTES]``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import random
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgeplane_dev.ports import LOOPBACK

# A wheel with a local version carries "+" in its name (edge_gateway-0.2.0+site.1-...).
_NAME = re.compile(r"^/([A-Za-z0-9][A-Za-z0-9._+-]{0,200})$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024
STATS = "/_stats"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ArtifactServer

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        server = self.server
        if self.path == STATS:
            stats = json.dumps(server.stats()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(stats)))
            self.end_headers()
            if body:
                self.wfile.write(stats)
            return
        server.record(Request(self.command, self.path, self.headers.get("Range")))
        match = _NAME.fullmatch(self.path)
        path = server.directory / match[1] if match else None
        if path is None or not path.is_file():
            self.send_error(404, "no such file")
            return
        size = path.stat().st_size
        first, last, status = 0, size - 1, 200
        wanted = _RANGE.fullmatch(self.headers.get("Range", "").strip())
        if wanted and (wanted[1] or wanted[2]):
            if wanted[1]:
                first = int(wanted[1])
                last = min(int(wanted[2]), size - 1) if wanted[2] else size - 1
            else:
                first = max(0, size - int(wanted[2]))
            if first >= size or last < first:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if body:
            self._send(path, first, last - first + 1)

    def _send(self, path: Path, offset: int, count: int) -> None:
        cut = self.server.take_cut()
        rate = self.server.rate
        started, sent = time.monotonic(), 0
        with open(path, "rb") as source:
            source.seek(offset)
            while sent < count:
                size = min(CHUNK, count - sent)
                if cut is not None:
                    size = min(size, cut - sent)
                    if size <= 0:
                        self.close_connection = True
                        self.connection.shutdown(2)  # the link drops mid-body
                        return
                chunk = source.read(size)
                if not chunk:
                    return
                try:
                    self.wfile.write(chunk)
                except OSError:
                    self.close_connection = True
                    return
                sent += len(chunk)
                self.server.count(len(chunk))
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's
        pass


class ArtifactServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, directory: Path, port: int = 0, rate: float | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.requests: list[Request] = []
        self.body_bytes = 0
        self._cuts: list[int] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__((LOOPBACK, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.port}/{name}"

    def cut_after(self, *counts: int) -> None:
        """Close each of the next responses after so many body bytes."""
        with self._lock:
            self._cuts.extend(counts)

    def take_cut(self) -> int | None:
        with self._lock:
            return self._cuts.pop(0) if self._cuts else None

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, sent: int) -> None:
        with self._lock:
            self.body_bytes += sent

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"requests": [[r.method, r.path, r.range] for r in self.requests],
                    "body_bytes": self.body_bytes}

    def start(self) -> ArtifactServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def publish(source: Path, directory: Path, port: int) -> tuple[str, str]:
    """Copy ``source`` into the served ``directory``: its URL and its SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / source.name
    if target != source:
        shutil.copyfile(source, target)
    return f"http://{LOOPBACK}:{port}/{target.name}", sha256_of(target)


def make_installer(directory: Path, size: int, name: str = "installer.iso") -> Path:
    """A generated installer image of ``size`` bytes in ``directory`` (kept if one of that
    size is there): each MiB a block of pseudo-random bytes led by its index, so every MiB
    differs and the same size and name always give the same bytes."""
    target = directory / name
    if target.is_file() and target.stat().st_size == size:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    block = random.Random(name).randbytes(MIB)  # noqa: S311 - filler, not a secret
    partial = target.with_name(f".{name}.part")
    with open(partial, "wb") as out:
        for index in range(0, size, MIB):
            piece = index.to_bytes(8, "big") + block[8:]
            out.write(piece[:min(MIB, size - index)])
    partial.replace(target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def serve(port: int, directory: Path, stop: threading.Event, rate: float | None = None) -> None:
    server = ArtifactServer(directory, port, rate).start()
    stop.wait()
    server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=None, metavar="BYTES",
                        help="bytes per second each response is paced to (a WAN link)")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be more than 0 bytes per second")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(args.port, args.directory, stop, args.rate)


if __name__ == "__main__":
    main()
