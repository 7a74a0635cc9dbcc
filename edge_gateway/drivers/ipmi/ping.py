"""An IPMI ping: does anything answer at the BMC's address before pyghmi tries to log in?

pyghmi's login retries for 5 s against a dead address, and logins go one at a time (see
``link``): a ping that fails in a second keeps one dead BMC from holding up the others.
"""

from __future__ import annotations

import selectors
import socket
import time

from edge_gateway.drivers.ipmi.errors import NoAnswer

PING_TIMEOUT = 1.0  # per attempt; two attempts


def ping_packet() -> bytes:
    """Get Channel Authentication Capabilities, outside any session (IPMI 2.0 22.13): what
    ipmitool sends first, and what every BMC answers without credentials."""
    header = bytes([0x20, 0x06 << 2])  # to the BMC, netfn application
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])  # from software id 0x81: cmd 38h, admin
    message = header + _checksum(header) + body + _checksum(body)
    return bytes([0x06, 0x00, 0xFF, 0x07, 0x00]) + bytes(8) + bytes([len(message)]) + message


def _checksum(data: bytes) -> bytes:
    return bytes([-sum(data) & 0xFF])


def ping(host: str, port: int, deadline: float) -> None:
    """Return once the BMC answers a ping at any of its addresses; else raise NoAnswer."""
    targets = {(info[0], info[4]) for info in
               socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)}
    with selectors.DefaultSelector() as selector:
        try:
            for family, sockaddr in targets:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                selector.register(sock, selectors.EVENT_READ, data=sock)
                try:  # connected, so an ICMP "port unreachable" fails the next call at once
                    sock.connect(sockaddr)
                except OSError:  # e.g. no route to an IPv6 address: try the others
                    _drop(selector, sock)
            for _ in range(2):
                attempt_ends = min(time.monotonic() + PING_TIMEOUT, deadline)
                for key in list(selector.get_map().values()):
                    _exchange(selector, key.data, send=True)
                while selector.get_map() and (wait := attempt_ends - time.monotonic()) > 0:
                    for key, _ in selector.select(wait):
                        if _exchange(selector, key.data, send=False):
                            return
                if not selector.get_map():
                    raise NoAnswer(f"nothing listens on UDP port {port}")
        finally:
            for key in list(selector.get_map().values()):
                _drop(selector, key.data)
    raise NoAnswer("no answer to an IPMI ping (Get Channel Authentication Capabilities)")


def _exchange(selector: selectors.BaseSelector, sock: socket.socket, send: bool) -> bool:
    """Send the ping, or read an answer (True); a refused address is dropped."""
    try:
        if send:
            sock.send(ping_packet())
            return False
        sock.recv(512)
        return True
    except ConnectionRefusedError:
        _drop(selector, sock)
        return False


def _drop(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    selector.unregister(sock)
    sock.close()
