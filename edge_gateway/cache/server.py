"""The LAN side of the cache: the site's BMCs fetch artifacts from the gateway over HTTP.

``GET``/``HEAD /a/<sha256>`` (or ``/a/<sha256>/<name>``, for BMCs that want a file name
such as ``installer.iso``; the name is not looked at beyond its characters) serve a
complete artifact: 200 with the whole file, or 206 with one byte range (``Range:
bytes=A-B``, ``A-``, ``-N``), 416 for a range past the end. Anything else is 404: another
path, a query string, an artifact not (yet) complete. The body is streamed from the file
(``sendfile`` where the socket allows it), never read into memory; a bounded number of
requests are served at once, and the others get 503 at once. Each GET of a named artifact
is counted per (sha256, name) (``reads``): a machine's installer has a name of its own.

With provisioning (``edge_gateway.provision``), two more routes: ``GET``/``HEAD
/s/<token>/seed.iso``, a machine's seed while its token is unused, and ``POST /p/<token>``,
the installed system's facts (204; 404 for an unknown or used token, 413 over the size
limit, 400 naming what is wrong with the body).
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Protocol

from edge_gateway.cache.reads import ReadLog
from edge_gateway.cache.store import ArtifactStore

LOG = logging.getLogger(__name__)

PATH = re.compile(r"^/a/(?P<sha256>[0-9a-f]{64})(?:/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63}))?$")
SEED_PATH = re.compile(r"^/s/(?P<token>[A-Za-z0-9_-]{32})/seed\.iso$")
PHONE_HOME_PATH = re.compile(r"^/p/(?P<token>[A-Za-z0-9_-]{32})$")
RANGE = re.compile(r"^bytes=(?P<first>\d{0,19})-(?P<last>\d{0,19})$")
IDLE_TIMEOUT = 60.0  # seconds a BMC may keep a connection without a request, or stall
SEND_BYTES = 1024 * 1024  # bytes sent per sendfile call


class ProvisionRoutes(Protocol):
    """What serves the seed and phone-home routes (``edge_gateway.provision.site``)."""

    max_body: int

    def seed(self, token: str) -> bytes | None: ...

    def phone_home(self, token: str, body: bytes, content_type: str | None,
                   peer: str) -> tuple[int, str]: ...

    def close(self) -> None: ...


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a BMC reading an ISO sends many ranges
    server_version = "edge-gateway-cache"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: LanServer

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=True)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        match = PHONE_HOME_PATH.fullmatch(self.path)
        routes = self.server.provisioning
        if match is None or routes is None:
            self.close_connection = True  # its body is not read
            self._refuse(404, "no such path")
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit() or len(length) > 12:
            self.close_connection = True
            self._refuse(400, "a phone-home call needs a Content-Length (no chunked body)")
            return
        if int(length) > routes.max_body:
            self.close_connection = True
            self._refuse(413, f"body of {length} bytes is larger than {routes.max_body}")
            return
        try:
            body = self.rfile.read(int(length))  # the socket's timeout bounds a slow peer
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        status, text = routes.phone_home(match["token"], body,
                                         self.headers.get("Content-Type"),
                                         self.client_address[0])
        if status == 204:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._refuse(status, text)

    def _serve_seed(self, token: str, body: bool) -> None:
        routes = self.server.provisioning
        seed = routes.seed(token) if routes is not None else None
        if seed is None:
            self._refuse(404, "no such seed (unknown token, or the machine phoned home)")
            return
        span = _span(self.headers.get("Range"), len(seed))
        if span is None:
            self._refuse(416, "range not satisfiable", {"Content-Range": f"bytes */{len(seed)}"})
            return
        first, last = span if span else (0, len(seed) - 1)
        self.send_response(206 if span else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        if span:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(seed)}")
        self.end_headers()
        if body:
            self.wfile.write(seed[first:last + 1])

    def _serve(self, body: bool) -> None:
        seed_match = SEED_PATH.fullmatch(self.path)
        if seed_match is not None:
            self._serve_seed(seed_match["token"], body)
            return
        match = PATH.fullmatch(self.path)
        if match is None:
            self._refuse(404, "no such artifact")
            return
        digest = match["sha256"]
        store = self.server.store
        with store.reading(digest) as size:
            if size is None:
                self._refuse(404, "no such artifact")
                return
            span = _span(self.headers.get("Range"), size)
            if span is None:
                self._refuse(416, "range not satisfiable",
                             {"Content-Range": f"bytes */{size}"})
                return
            first, last = span if span else (0, size - 1)
            if body and match["name"]:  # counted as it starts: an ISO is read for long
                self.server.reads.record(digest, match["name"])
            self.send_response(206 if span else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{digest}"')
            if span:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            sent = self._send_file(store.path(digest), first, last - first + 1) if body else 0
        store.served(1, sent)

    def _send_file(self, path: Path, offset: int, count: int) -> int:
        self.wfile.flush()
        try:
            with open(path, "rb") as source:
                return int(self.connection.sendfile(source, offset, count))
        except (ConnectionError, TimeoutError, OSError) as exc:
            LOG.info("artifact cache: %s stopped reading %s: %s", self.client_address[0],
                     path.name, exc)
            self.close_connection = True
            return 0

    def _refuse(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        data = f"{status} {text}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's
        LOG.debug("artifact cache: %s " + format, self.client_address[0], *args)


def _span(header: str | None, size: int) -> tuple[int, int] | None | tuple[()]:
    """The byte range asked for: ``()`` for the whole file (no Range, or one this server
    ignores, as HTTP allows: several ranges, another unit), None if unsatisfiable."""
    if header is None:
        return ()
    match = RANGE.fullmatch(header.strip())
    if match is None or not (match["first"] or match["last"]):
        return ()
    if not match["first"]:  # the last N bytes
        count = int(match["last"])
        return (max(0, size - count), size - 1) if count else None
    first = int(match["first"])
    last = min(int(match["last"]), size - 1) if match["last"] else size - 1
    if first >= size:
        return None
    if last < first:
        return ()  # an invalid range is ignored
    return first, last


class LanServer(http.server.ThreadingHTTPServer):
    """At most ``max_clients`` requests at once; a connection over that is answered 503."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], store: ArtifactStore, max_clients: int,
                 tls: ssl.SSLContext | None = None, reads: ReadLog | None = None,
                 provisioning: ProvisionRoutes | None = None) -> None:
        self.store = store
        self.tls = tls
        self.reads = reads or ReadLog()
        self.provisioning = provisioning
        self._slots = threading.BoundedSemaphore(max_clients)
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock.settimeout(IDLE_TIMEOUT)
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            threading.Thread(target=self._busy, args=(request,), daemon=True).start()
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if isinstance(request, ssl.SSLSocket):
                request.do_handshake()
            super().process_request_thread(request, client_address)
        except (OSError, ssl.SSLError) as exc:
            LOG.info("artifact cache: %s: %s", client_address[0], exc)
            self.shutdown_request(request)
        finally:
            self._slots.release()

    def _busy(self, request: socket.socket) -> None:
        try:
            request.settimeout(5)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\n"
                            b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
