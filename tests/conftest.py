"""Fixtures shared across the suite: real brokers and emulators, always stopped afterwards."""

from __future__ import annotations

import http.server
import threading

import pytest

from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.ports import LOOPBACK


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto of our own on a free loopback port, stopped after the test."""
    with Mosquitto(tmp_path / "mosquitto") as running:
        yield running


@pytest.fixture
def images():
    """An HTTP image repository on loopback: ``images("bmc-1.2.bin")`` is a URL that serves
    a small file; names with "absent" in them answer 404. BMCs really fetch what they are
    given (virtual media, firmware), so tests give them something to fetch."""

    class Repository(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            if "absent" in self.path:
                self.send_error(404)
                return
            body = b"EDGEPLANE" * 256
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Repository)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield lambda name: f"http://{LOOPBACK}:{server.server_address[1]}/{name}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
