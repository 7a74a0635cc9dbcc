"""The way to one BMC: a pyghmi session shared per process, taken in turns, one worker
thread per call so the caller gets an answer within its timeout, and the error boundary.

pyghmi keeps its sockets, its I/O thread and its sessions in process-wide state, shares one
session between every ``Command`` made for the same BMC and credentials (as bytes: with str
credentials a second ``Command`` hangs), and was written for green threads. With OS threads
that costs three precautions:

- one ``BmcLink`` per BMC and credentials in the process: the drivers of a BMC share its
  session and take turns on it, and the last one to close logs it out;
- logins go one at a time (``_LOGIN_LOCK``): a login runs pyghmi's event loop, which handles
  the packets of every session, and two loops at once trip over each other. A BMC must first
  answer a ping (``ping``), so a dead BMC fails at once instead of holding the lock through
  pyghmi's 5 s of retries;
- ``wakeup.close_lost_wakeup`` fixes a race in pyghmi's waiting, and
  ``receive.receive_without_blocking`` one in its reading of the shared socket.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi.command import Command

from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.drivers.ipmi.errors import (
    LIBRARY_ERRORS,
    Busy,
    NoAnswer,
    Refusal,
    convert_error,
)
from edge_gateway.drivers.ipmi.ping import ping
from edge_gateway.drivers.ipmi.receive import receive_without_blocking
from edge_gateway.drivers.ipmi.wakeup import close_lost_wakeup
from edge_gateway.errors import BmcUnreachableError, ConfigError

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 623
# pyghmi sends keepalives only from its event loop, which synchronous callers leave once
# logged in, and BMCs drop a session after about 60 s idle. Past this, ask pyghmi again: it
# reuses the session while it still trusts it, else logs in anew (no waiting on a dead one).
IDLE_RECHECK = 20.0

T = TypeVar("T")
Work = Callable[[Command], T]


def parse_address(address: str) -> tuple[str, int]:
    """Split "host", "host:port", "[v6]:port", a bare IPv6 address or "ipmi://..."."""
    rest = address.strip()
    if rest.lower().startswith("ipmi://"):
        rest = rest[len("ipmi://"):]
    rest = rest.rstrip("/")
    host, port = rest, str(DEFAULT_PORT)
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail:
            port = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"IPMI address {address!r} is not host, host:port or "
                          "ipmi://host:port")
    return host, int(port)


class Connection:
    """One driver's way to its BMC: ``call`` runs work on the shared session."""

    def __init__(self, credentials: BmcCredentials, timeout: float) -> None:
        self.address = credentials.address
        self.host, self.port = parse_address(credentials.address)
        self.credentials = credentials
        self.timeout = timeout
        self._link: BmcLink | None = None

    def call(self, what: str, work: Work[T], *, forget_session: bool = False) -> T:
        """Run ``work(command)`` on this BMC's session within the timeout; convert failures.

        ``forget_session``: the BMC forgets the session after this work (a cold reset), so
        log it out here too, and the next call logs in anew.
        """
        if self._link is None:
            self._link = BmcLink.acquire(self.host, self.port, self.credentials)
        link, started = self._link, time.monotonic()
        future: Future[T] = Future()
        _start_worker(f"ipmi {self.address}",
                      lambda: link.run(work, started + self.timeout, forget_session), future)
        try:
            result = future.result(timeout=self.timeout)
        except TimeoutError:
            raise BmcUnreachableError(self.address, what,
                                      f"no answer within {self.timeout:g} s") from None
        except (NoAnswer, Busy, Refusal) as exc:  # ours: their message says it all
            raise convert_error(self.address, what, exc) from None
        except LIBRARY_ERRORS as exc:
            raise convert_error(self.address, what, exc) from exc
        except Exception as exc:  # a pyghmi bug (it has races): still the driver's error
            LOG.warning("BMC %s: %s failed inside pyghmi", self.address, what, exc_info=True)
            raise convert_error(self.address, what, exc) from exc
        LOG.debug("BMC %s: %s took %.1f ms", self.address, what,
                  (time.monotonic() - started) * 1000)
        return result

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.release()


# --- one session per BMC, shared by its drivers -----------------------------------------

_LINKS: dict[tuple[str, int, bytes, bytes], BmcLink] = {}
_LINKS_LOCK = threading.Lock()
_LOGIN_LOCK = threading.Lock()


@dataclass(eq=False)
class BmcLink:
    host: str
    port: int
    userid: bytes
    password: bytes = field(repr=False)
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    command: Command | None = None
    last_used: float = 0.0
    retired: bool = False

    @classmethod
    def acquire(cls, host: str, port: int, credentials: BmcCredentials) -> BmcLink:
        close_lost_wakeup()
        receive_without_blocking()
        key = (host, port, credentials.username.encode(), credentials.password.encode())
        with _LINKS_LOCK:
            link = _LINKS.get(key)
            if link is None:
                link = _LINKS[key] = cls(*key)
            link.users += 1
            return link

    def release(self) -> None:
        with _LINKS_LOCK:
            self.users -= 1
            if self.users > 0:
                return
            _LINKS.pop((self.host, self.port, self.userid, self.password), None)
            self.retired = True
        if self.lock.acquire(blocking=False):  # else the call in progress logs out after
            try:
                self._logout()
            finally:
                self.lock.release()

    def run(self, work: Work[T], deadline: float, forget_session: bool = False) -> T:
        """``work(command)`` with this BMC to ourselves, logging in first if need be."""
        if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise NoAnswer("an earlier call to this BMC is still waiting for its answer")
        try:
            if self.command is None or self._stale():
                self.command = self._login(deadline)
            result = work(self.command)
            self.last_used = time.monotonic()
            return result
        except BaseException:
            self.command = None  # the next call asks pyghmi for a session again
            raise
        finally:
            if self.retired or forget_session:
                self._logout(shared_ok=forget_session)
            self.lock.release()

    def _login(self, deadline: float) -> Command:
        ping(self.host, self.port, deadline)
        if not _LOGIN_LOCK.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Busy("gave up waiting for the logins to other BMCs to finish")
        try:
            return pyghmi_command.Command(bmc=self.host, port=self.port, userid=self.userid,
                                          password=self.password)
        finally:
            _LOGIN_LOCK.release()

    def _stale(self) -> bool:
        return (getattr(self.command.ipmi_session, "broken", True)
                or time.monotonic() - self.last_used > IDLE_RECHECK)

    def _logout(self, shared_ok: bool = False) -> None:
        """Log the session out, unless another link was handed it (``shared_ok``: even so)."""
        command, self.command = self.command, None
        if command is None:
            return
        if not shared_ok:
            with _LINKS_LOCK:  # a new link to this BMC may have been handed the same session
                if any(link.command is not None
                       and link.command.ipmi_session is command.ipmi_session
                       for link in _LINKS.values()):
                    return
        try:
            # Sends Close Session without waiting for the answer, and marks the session
            # broken so that pyghmi hands it to nobody again.
            command.ipmi_session.logout()
        except LIBRARY_ERRORS as exc:
            LOG.debug("BMC %s:%s: logout failed: %s", self.host, self.port, exc)


# --- worker threads -----------------------------------------------------------------------

_WORKERS: set[threading.Thread] = set()


def _start_worker(name: str, work: Callable[[], T], future: Future[T]) -> None:
    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to the caller, who converts it
            future.set_exception(exc)
        finally:
            with _LINKS_LOCK:
                _WORKERS.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _LINKS_LOCK:
        _WORKERS.add(thread)
    thread.start()


def wait_for_calls(timeout: float) -> bool:
    """Wait until no IPMI call is in progress; True if none is left. Calls whose caller
    gave up run on until pyghmi gives up too. For a clean shutdown, and for tests."""
    deadline = time.monotonic() + timeout
    while True:
        with _LINKS_LOCK:
            workers = list(_WORKERS)
        if not workers:
            return True
        if time.monotonic() >= deadline:
            return False
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
