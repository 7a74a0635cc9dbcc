"""A fix for pyghmi's lost wakeup, applied once per process."""

from __future__ import annotations

import logging
import threading
from typing import Any

from pyghmi.ipmi.private import session as pyghmi_session

LOG = logging.getLogger(__name__)

_PATCH_LOCK = threading.Lock()
_patched = False


def close_lost_wakeup() -> None:
    """Make pyghmi's synchronous calls notice an answer that came before they waited for it.

    A synchronous pyghmi call sends its request, then registers with pyghmi's I/O thread to
    be woken by the next packet from the BMC. If the answer arrives in between (a fast BMC,
    or a busy interpreter: with 15 threads on 5 simulated BMCs, a third of the calls), the
    I/O thread has already queued it, nothing wakes the caller, and it sleeps until its
    retry timer (0.5-1 s). This wraps pyghmi's ``_io_wait`` (pyghmi 1.6) to return at once
    when a packet from that BMC is already queued, checked after registering so that none
    falls in between. Applied once per process, and only if pyghmi still looks the same.
    """
    global _patched
    with _PATCH_LOCK:
        if _patched:
            return
        _patched = True
        original = getattr(pyghmi_session, "_io_wait", None)
        if original is None or not all(hasattr(pyghmi_session, name) for name in (
                "ioqueue", "sessionqueue", "selectdeadline", "iosockets", "myself",
                "_monotonic_time")):
            LOG.warning("pyghmi's session module changed: IPMI calls may stall for up to "
                        "1 s now and then")
            return

        def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
            if evq is not None:  # waiting for a command of another thread to end
                original(timeout, myaddr, evq)
                return
            event = threading.Event()
            deadline = timeout + pyghmi_session._monotonic_time()
            pyghmi_session.ioqueue.append((deadline, event, myaddr))
            if myaddr is None:  # the event loop, waiting for a packet to any session
                if pyghmi_session.sessionqueue:
                    return
            elif any(getattr(s, "pktqueue", None) for s in list(
                    pyghmi_session.Session.bmc_handlers.get(myaddr, {}).values())):
                return  # the answer is already here: the caller processes it now
            if deadline < pyghmi_session.selectdeadline:  # wake the I/O thread, as pyghmi does
                wakeup = pyghmi_session.iosockets[0]
                wakeup = getattr(wakeup, "fd", wakeup)
                wakeup.sendto(b"\x01", (pyghmi_session.myself,
                                        pyghmi_session.iosockets[0].getsockname()[1]))
            event.wait()

        pyghmi_session._io_wait = io_wait
