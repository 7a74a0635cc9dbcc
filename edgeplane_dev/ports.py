"""Free loopback ports, and waiting until a server listens on one."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (TCP by default; SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_tcp(port: int, timeout: float = 20.0, host: str = LOOPBACK) -> None:
    """Return once something accepts TCP connections on the port; raise TimeoutError if not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                message = f"nothing listens on {host}:{port} after {timeout:.0f} s"
                raise TimeoutError(message) from None
            time.sleep(0.05)
