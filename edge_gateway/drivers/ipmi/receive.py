"""A fix for pyghmi's I/O thread blocking in a receive, applied once per process."""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from pyghmi.ipmi.private import session as pyghmi_session

LOG = logging.getLogger(__name__)

_PATCH_LOCK = threading.Lock()
_patched = False


def receive_without_blocking() -> None:
    """Make pyghmi's I/O thread read its sockets without ever waiting in the read.

    pyghmi (1.6) drains a readable socket with ``setblocking(False)`` then ``recvfrom`` until
    the socket is empty, and every send first calls ``setblocking(True)`` on the same socket,
    from whichever thread sends. ``setblocking`` releases the GIL, so a send from another
    thread can land between the two, and the last ``recvfrom`` then waits on an empty socket
    until a packet comes to that socket. Meanwhile the I/O thread serves no other socket and
    no timer: in a process serving several BMCs (the simulator) every BMC falls silent until
    someone writes to that one, which may be never; in a client, retries stop until the next
    packet. Receiving with ``MSG_DONTWAIT`` never waits, whatever a send left the socket in.
    Applied once per process, and only if pyghmi still looks the same.
    """
    global _patched
    with _PATCH_LOCK:
        if _patched:
            return
        _patched = True
        dontwait = getattr(socket, "MSG_DONTWAIT", None)
        if dontwait is None or not all(hasattr(pyghmi_session, name) for name in (
                "_io_recvfrom", "_io_graball", "_io_sendto")):
            LOG.warning("pyghmi's session module changed, or this system has no "
                        "MSG_DONTWAIT: IPMI may stall while another thread sends")
            return

        def io_recvfrom(mysocket: Any, size: int) -> tuple[bytes, Any] | None:
            try:
                return mysocket.recvfrom(size, dontwait)
            except OSError:  # nothing left to read (or a refused port): done, as pyghmi's
                return None

        pyghmi_session._io_recvfrom = io_recvfrom
