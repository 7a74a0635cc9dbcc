"""Free loopback ports, and waiting until a server listens on one."""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
LOWEST = 10_000  # below: ports other software on a developer's machine tends to use
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (TCP by default; SOCK_DGRAM for UDP).

    Chosen below the kernel's ephemeral range where there is room: every outgoing connection
    takes its local port from that range, so a port chosen there (as ``bind(0)`` chooses)
    can be taken by someone's connection before the server that was meant to listen on it
    starts, which happens when tests run side by side."""
    first_ephemeral = _first_ephemeral_port()
    if first_ephemeral - LOWEST >= 1000:
        for _ in range(100):
            port = random.randrange(LOWEST, first_ephemeral)  # noqa: S311 - not a secret
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _first_ephemeral_port() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: let the kernel choose
        return LOWEST


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
