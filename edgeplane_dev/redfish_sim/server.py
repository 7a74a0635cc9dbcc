"""Serving simulated Redfish BMCs over HTTP, or HTTPS with a given certificate and key,
on loopback ports, one BMC per port.

Besides the Redfish service, each port answers a small control API for tests and
operators (no auth, loopback only):

- ``GET /_sim/requests``: every request received, ``[[method, path, body], ...]``;
  ``DELETE /_sim/requests`` forgets them, and the connections counted;
- ``GET /_sim/connections``: ``{"count": n}``, the connections that carried a Redfish
  request (the control API's are not counted);
- ``POST /_sim/faults`` with a fault (or a list of them, see ``faults``); ``GET`` lists
  them, ``DELETE`` clears them.
"""

from __future__ import annotations

import argparse
import json
import logging
import selectors
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.redfish_sim.bmc import (
    DEFAULT_OPTIONS,
    BmcOptions,
    RedfishBmc,
    load_registries,
)
from edgeplane_dev.redfish_sim.faults import Fault
from edgeplane_dev.redfish_sim.media import EJECT_STYLES, INSERT_RULES
from edgeplane_dev.redfish_sim.replies import Reply
from edgeplane_dev.redfish_sim.resources import SHIPPED, Mockup, MockupError
from edgeplane_dev.redfish_sim.update import MONITOR_STYLES
from edgeplane_dev.redfish_sim.vendors import MEDIA_APIS, MEDIA_PLACES

LOG = logging.getLogger(__name__)
CONTROL = "/_sim/"
HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take over its TLS handshake


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    timeout = 0  # handle_request() is called when a connection waits: take it, or none

    def __init__(self, port: int, bmc: RedfishBmc, stopping: threading.Event,
                 tls: ssl.SSLContext | None = None) -> None:
        self.bmc = bmc
        self.stopping = stopping
        self.tls = tls
        super().__init__((LOOPBACK, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        if self.tls is None:
            return connection, address
        # The handshake runs in the request's thread (_Handler.setup), not in the one that
        # accepts: a client slow to shake hands holds up no other.
        return self.tls.wrap_socket(connection, server_side=True,
                                    do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ssl.SSLError, ConnectionError, TimeoutError)):
            # A client that refuses the certificate ends the handshake: as a BMC, say nothing.
            LOG.debug("%s: connection from %s ended: %s", self.server_address[1],
                      client_address, error)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as BMCs and sushy use it
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(HANDSHAKE_TIMEOUT)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        LOG.debug("%s " + format, self.server.server_address[1], *args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        bmc = self.server.bmc
        if self.path.startswith(CONTROL):
            self._send(self._control(method, self.path[len(CONTROL):].rstrip("/"), body))
            return
        if not getattr(self, "_counted", False):  # one handler per connection
            self._counted = True
            bmc.count_connection()
        if bmc.down:  # restarting after Manager.Reset: nobody answers
            self._drop()
            return
        faults = bmc.faults.take(method, self.path.split("?", 1)[0])
        delay = bmc.options.latency + sum(f.seconds for f in faults if f.kind == "latency")
        if delay > 0 and self.server.stopping.wait(delay):
            self._drop()
            return
        for fault in faults:
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "hang":
                self.server.stopping.wait(fault.seconds)
                self._drop()
                return
            if fault.kind == "error":
                self._send(_error(fault.status))
                return
        reply = bmc.handle(method, self.path, self.headers, body)
        if any(f.kind == "malformed" for f in faults):
            self._send(Reply(200, b'{"@odata.id": "' + self.path.encode() + b'", "Name": '))
            return
        self._send(reply, head_only=method == "HEAD")

    def _control(self, method: str, what: str, body: bytes) -> Reply:
        bmc = self.server.bmc
        try:
            if what == "requests" and method == "GET":
                return Reply(200, [list(r) for r in bmc.received])
            if what == "requests" and method == "DELETE":
                bmc.forget_requests()
                return Reply(204)
            if what == "connections" and method == "GET":
                return Reply(200, {"count": bmc.connections})
            if what == "faults" and method == "GET":
                return Reply(200, bmc.faults.listing())
            if what == "faults" and method == "DELETE":
                bmc.faults.clear()
                return Reply(204)
            if what == "faults" and method == "POST":
                data = json.loads(body or b"null")
                items = data if isinstance(data, list) else [data]
                faults = [Fault.from_dict(item) for item in items]  # all valid, or none
                return Reply(201, [bmc.faults.add(f).as_dict() for f in faults])
        except (ValueError, TypeError) as exc:
            return Reply(400, {"error": {"message": f"bad fault: {exc}"}})
        return Reply(404, {"error": {"message": f"no control endpoint {method} {CONTROL}{what}"
                                                "; there are requests, connections and faults"}})

    def _send(self, reply: Reply, head_only: bool = False) -> None:
        if isinstance(reply.body, bytes):
            payload = reply.body
            content_type = reply.headers.pop("Content-Type", "application/json")
        elif reply.body is None:
            payload, content_type = b"", None
        else:
            payload = json.dumps(reply.body).encode()
            content_type = "application/json; charset=utf-8"
        self.send_response(reply.status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("OData-Version", "4.0")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:  # the client asked to close (sushy does): say we will
            self.send_header("Connection", "close")
        self.end_headers()
        if payload and not head_only:
            self.wfile.write(payload)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(2)
        except OSError:
            pass


def _error(status: int) -> Reply:
    text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}.get(status, "Error")
    return Reply(status, {"error": {"code": "Base.1.15.GeneralError",
                                    "message": f"{status} {text} (injected fault)"}})


class RedfishSimulator:
    """Simulated BMCs in this process, one per port, each on its own copy of the mockup;
    a context manager. ``bmcs[i]`` is the BMC on ``ports[i]``. With ``tls_cert`` and
    ``tls_key`` (PEM files) every port serves HTTPS with that certificate, as a BMC with its
    own (often self-signed) certificate does."""

    def __init__(self, ports: Sequence[int] = (0,), mockup: Path | str | None = None,
                 options: BmcOptions = DEFAULT_OPTIONS, registries: bool = True,
                 tls_cert: Path | str | None = None, tls_key: Path | str | None = None) -> None:
        tls = server_tls(tls_cert, tls_key)
        shared = Mockup.load(mockup or SHIPPED)
        extra = load_registries() if registries else []
        self.bmcs = [RedfishBmc(shared, options, extra) for _ in ports]
        self._stopping = threading.Event()
        self._servers = [_Server(port, bmc, self._stopping, tls)
                         for port, bmc in zip(ports, self.bmcs, strict=True)]
        self.scheme = "https" if tls else "http"
        self.ports = [server.server_address[1] for server in self._servers]
        self._accepting: threading.Thread | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()

    @property
    def urls(self) -> list[str]:
        return [f"{self.scheme}://{LOOPBACK}:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def bmc(self) -> RedfishBmc:
        return self.bmcs[0]

    def start(self) -> RedfishSimulator:
        if self._accepting is None:
            self._accepting = threading.Thread(target=self._accept, daemon=True,
                                               name=f"redfish-sim-{self.ports[0]}")
            self._accepting.start()
        return self

    def _accept(self) -> None:
        """Accept on every port from one thread (each connection is then served by a
        thread of its own): idle BMCs cost nothing, not a thread each polling for a stop."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_reader, selectors.EVENT_READ, None)
            for server in self._servers:
                selector.register(server, selectors.EVENT_READ, server)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.data is not None and not self._stopping.is_set():
                        key.data.handle_request()

    def stop(self) -> None:
        self._stopping.set()  # hung and slow requests end now
        if self._accepting is not None:
            self._wake_writer.send(b"x")
            self._accepting.join(timeout=5)
            self._accepting = None
        for server in self._servers:
            server.server_close()
        for bmc in self.bmcs:
            bmc.close()
        self._wake_reader.close()
        self._wake_writer.close()

    def __enter__(self) -> RedfishSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def server_tls(cert: Path | str | None, key: Path | str | None) -> ssl.SSLContext | None:
    """The server side of TLS with this certificate and key (PEM); None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("HTTPS needs both a certificate and its key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def serve(ports: Sequence[int], mockup: Path | str | None = None,
          options: BmcOptions = DEFAULT_OPTIONS, tls_cert: Path | str | None = None,
          tls_key: Path | str | None = None) -> None:
    """Serve one BMC per port until SIGTERM or Ctrl-C; prints ``ready <port> ...`` once
    listening. Raises OSError if a port is taken or the certificate cannot be read,
    MockupError for a bad mockup."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    with RedfishSimulator(ports, mockup, options, tls_cert=tls_cert,
                          tls_key=tls_key) as simulator:
        LOG.info("Redfish simulator on %s, %s port(s) %s, user %s, mockup %s", LOOPBACK,
                 simulator.scheme.upper(), ", ".join(map(str, simulator.ports)),
                 options.username, mockup or SHIPPED)
        print("ready", *simulator.ports, flush=True)
        while not stop.wait(0.5):
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeplane_dev.redfish_sim",
        description="Simulate stateful Redfish BMCs from a DMTF mockup on loopback ports.")
    parser.add_argument("--port", type=int, action="append", required=True,
                        help="TCP port of one simulated BMC (repeat for more)")
    parser.add_argument("--mockup", type=Path, default=None,
                        help="a DMTF mockup directory (default: the shipped public-rackmount1)")
    parser.add_argument("--username", default=BmcOptions.username)
    parser.add_argument("--password", default=BmcOptions.password)
    parser.add_argument("--power-delay", type=float, default=BmcOptions.power_delay,
                        help="seconds before a power change reads back")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every Redfish request")
    parser.add_argument("--update-seconds", type=float, default=BmcOptions.update_seconds,
                        help="how long a firmware update task runs")
    parser.add_argument("--update-stalls-at", type=int, default=None, metavar="PERCENT",
                        help="firmware update tasks stop at this percentage forever")
    parser.add_argument("--monitor-style", choices=MONITOR_STYLES, default="standard",
                        help="how the firmware task monitor answers")
    parser.add_argument("--no-acpi", action="store_true",
                        help="the OS ignores GracefulShutdown")
    vendor = parser.add_argument_group("vendor differences (docs/vendors.md)")
    vendor.add_argument("--media-place", choices=MEDIA_PLACES, default="mockup",
                        help="list VirtualMedia under the system or the manager")
    vendor.add_argument("--media-api", choices=MEDIA_APIS, default="mockup",
                        help="insert by PATCH only, by the actions only, or both")
    vendor.add_argument("--media-slot", action="append", default=[], metavar="TYPES",
                        help="a slot instead of the mockup's, e.g. CD/DVD or USBStick "
                             "(repeat for more)")
    vendor.add_argument("--stale-image", default=None, metavar="URL",
                        help="every slot starts holding this image")
    vendor.add_argument("--insert-rule", choices=INSERT_RULES, default="refuse_other",
                        help="what an insert into a slot holding an image does")
    vendor.add_argument("--eject-style", choices=EJECT_STYLES, default="cleared",
                        help="how an ejected slot reads")
    vendor.add_argument("--boot-once-ignored", action="store_true",
                        help="a Once boot override is consumed but the disk boots")
    vendor.add_argument("--power-on-refused", type=float, default=0.0, metavar="SECONDS",
                        help="answer 409 to a power-on for this long after a power-off")
    install = parser.add_argument_group("the simulated OS install (install.py)")
    install.add_argument("--install-seconds", type=float, default=BmcOptions.install_seconds,
                         help="how long the installer works once it has its seed")
    install.add_argument("--install-read-bytes", type=int, default=None, metavar="BYTES",
                         help="installer bytes the BMC reads (default: the whole image)")
    install.add_argument("--media-read-bps", type=float, default=0.0, metavar="BYTES",
                         help="bytes per second the BMC reads virtual media at (0: no limit)")
    install.add_argument("--install-hangs", action="store_true",
                         help="the installer stops at a prompt and never phones home")
    parser.add_argument("--tls-cert", type=Path, default=None,
                        help="serve HTTPS with this certificate (PEM; with --tls-key)")
    parser.add_argument("--tls-key", type=Path, default=None,
                        help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        options = BmcOptions(username=args.username, password=args.password,
                             power_delay=args.power_delay, latency=args.latency,
                             update_seconds=args.update_seconds,
                             update_stalls_at=args.update_stalls_at,
                             monitor_style=args.monitor_style, acpi=not args.no_acpi,
                             media_place=args.media_place, media_api=args.media_api,
                             media_slots=tuple(args.media_slot), stale_image=args.stale_image,
                             insert_rule=args.insert_rule, eject_style=args.eject_style,
                             boot_once_ignored=args.boot_once_ignored,
                             power_on_refused_s=args.power_on_refused,
                             install_seconds=args.install_seconds,
                             install_read_bytes=args.install_read_bytes,
                             media_read_bps=args.media_read_bps,
                             install_hangs=args.install_hangs)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(args.port, args.mockup, options, tls_cert=args.tls_cert, tls_key=args.tls_key)
    except (OSError, MockupError) as exc:
        print(f"redfish_sim: {exc}", file=sys.stderr)
        return 1
    return 0

