"""The IPMI driver, on pyghmi's client (``pyghmi.ipmi.command.Command``).

pyghmi keeps its sockets, its I/O thread and its sessions in process-wide state, shares one
session between every ``Command`` made for the same BMC and credentials (as bytes: with str
credentials a second ``Command`` hangs), and was written for green threads. With OS threads
that costs three precautions here:

- one ``_BmcLink`` per BMC in the process: the drivers of a BMC share its session and take
  turns on it, and the last one to close logs it out;
- logins go one at a time (``_LOGIN_LOCK``): a login runs pyghmi's event loop, which handles
  the packets of every session, and two loops at once trip over each other. A BMC must first
  answer a ping (Get Channel Authentication Capabilities, what ipmitool sends first), so a
  dead BMC fails at once instead of holding the lock through pyghmi's 5 s of retries;
- ``_close_lost_wakeup`` fixes a race in pyghmi's waiting (see there).

Each call runs in a worker thread, so the caller gets an answer within ``timeout`` even
while pyghmi is still retrying. Nothing of pyghmi leaves this module: its strings map to our
enums through the tables below and its exceptions become ``BmcError`` and subclasses.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyghmi import exceptions as pyghmi_exceptions
from pyghmi.ipmi import command as pyghmi_command
from pyghmi.ipmi import fru as pyghmi_fru
from pyghmi.ipmi.private import session as pyghmi_session

from edge_gateway.drivers.base import BmcCredentials, BootOverride, Driver, MachineInfo
from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError, ConfigError
from edgeplane.protocol import BmcProtocol, BootMode, BootTarget, Capability, PowerState

LOG = logging.getLogger(__name__)

DEFAULT_PORT = 623

# --- translation tables: pyghmi <-> the wire contract ------------------------------------

POWER_FROM_PYGHMI = {"on": PowerState.ON, "off": PowerState.OFF}
# "off" is a hard power off (chassis control 0), like Redfish's ForceOff; pyghmi's
# "shutdown" needs the OS's cooperation and may never complete.
POWER_TO_PYGHMI = {PowerState.ON: "on", PowerState.OFF: "off"}
BOOT_FROM_PYGHMI = {"network": BootTarget.PXE, "hd": BootTarget.DISK,
                    "optical": BootTarget.CD}
BOOT_TO_PYGHMI = {target: name for name, target in BOOT_FROM_PYGHMI.items()}
PERSIST_FROM_MODE = {BootMode.ONCE: False, BootMode.CONTINUOUS: True}
MODE_FROM_PERSIST = {persist: mode for mode, persist in PERSIST_FROM_MODE.items()}
NO_OVERRIDE = "default"  # pyghmi's name for "no boot device override in force"

# IANA enterprise numbers of server vendors, to name a manufacturer when the FRU has none.
IANA_VENDORS = {2: "IBM", 9: "Cisco", 11: "Hewlett-Packard", 343: "Intel", 674: "Dell",
                2011: "Huawei", 7244: "Quanta", 10876: "Supermicro", 19046: "Lenovo",
                20301: "IBM", 47196: "Hewlett Packard Enterprise"}

# pyghmi raises IpmiException with a text only; these texts mean "wrong credentials" and
# "no answer". IpmiException(None) is how its login reports running out of retries.
_AUTH_FAILURES = ("incorrect password", "unauthorized name", "unauthorized role",
                  "invalid role", "privelege level", "privilege level")
_NO_ANSWER = ("timeout", "session no longer connected", "unable to transmit")
# What pyghmi lets escape besides its own exceptions when a BMC answers nonsense.
_MALFORMED = (struct.error, AssertionError, IndexError, KeyError, TypeError, ValueError)

T = TypeVar("T")


class IpmiDriver(Driver):
    """A machine's BMC over IPMI 2.0 (RMCP+, "lanplus"). The address is "host", "host:port",
    "[v6 address]:port" or "ipmi://host:port"; the port defaults to 623."""

    protocol = BmcProtocol.IPMI.value
    capabilities = frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY})

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self.host, self.port = parse_address(credentials.address)
        self._link: _BmcLink | None = None

    def get_power_state(self) -> PowerState:
        return self._call("read power state", _read_power)

    def request_power_state(self, state: PowerState) -> None:
        """Ask for ``state`` and return; no error (and no request sent) if already so."""
        self._call(f"power {state}", lambda cmd: cmd.set_power(POWER_TO_PYGHMI[state]))

    def get_boot_override(self) -> BootOverride:
        return self._call("read boot override", self._read_boot_override)

    def set_boot_override(self, target: BootTarget, mode: BootMode) -> None:
        def work(cmd: Any) -> None:
            # Keep the BIOS/UEFI flag the BMC reports: an override without it asks for a
            # legacy BIOS boot, and some BMCs (Supermicro among them) switch to legacy.
            uefi = bool(cmd.get_bootdev().get("uefimode", False))
            answer = cmd.set_bootdev(BOOT_TO_PYGHMI[target], persist=PERSIST_FROM_MODE[mode],
                                     uefiboot=uefi)
            if "error" in answer:
                raise pyghmi_exceptions.IpmiException(answer["error"])

        self._call(f"set boot override {target} ({mode})", work)

    def describe(self) -> MachineInfo:
        return self._call("describe", self._describe)

    def close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.release()

    # --- work done in a worker thread, on pyghmi's Command -----------------------------

    def _read_boot_override(self, cmd: Any) -> BootOverride:
        answer = cmd.get_bootdev()
        device = answer.get("bootdev", NO_OVERRIDE)
        if device == NO_OVERRIDE:
            return BootOverride(target=None, mode=None)
        target = BOOT_FROM_PYGHMI.get(device)
        if target is None:  # BIOS setup, floppy...: nothing Edgeplane sets or reports
            LOG.warning("BMC %s: boot override %r is none of ours; reading it as none",
                        self.address, device)
            return BootOverride(target=None, mode=None)
        return BootOverride(target=target, mode=MODE_FROM_PERSIST[bool(answer["persistent"])])

    def _describe(self, cmd: Any) -> MachineInfo:
        device = bytes(cmd.xraw_command(netfn=0x06, command=0x01)["data"])  # Get Device ID
        manufacturer_id = int.from_bytes(device[6:9], "little")
        extra = {"bmc_firmware": f"{device[2] & 0x7F}.{device[3]:02x}",  # minor is BCD
                 "manufacturer_id": str(manufacturer_id),
                 "product_id": str(int.from_bytes(device[9:11], "little"))}
        fru = self._fru0(cmd)
        if fru.get("Model"):
            extra["part_number"] = fru["Model"]
        guid = cmd.raw_command(netfn=0x06, command=0x37)  # Get System GUID
        if "error" not in guid and len(guid.get("data", b"")) == 16:
            extra["system_guid"] = str(uuid.UUID(bytes_le=bytes(guid["data"])))
        return MachineInfo(
            protocol=self.protocol,
            manufacturer=(fru.get("Manufacturer") or fru.get("Board manufacturer")
                          or IANA_VENDORS.get(manufacturer_id)),
            model=fru.get("Product name") or fru.get("Board product name") or fru.get("Model"),
            serial=(fru.get("Serial Number") or fru.get("Board serial number")
                    or fru.get("Chassis serial number")),
            power=_read_power(cmd),
            capabilities=self.capabilities,
            extra=extra,
        )

    def _fru0(self, cmd: Any) -> dict[str, str]:
        """FRU 0's text fields, or nothing if the BMC keeps no (readable) FRU."""
        try:
            info = pyghmi_fru.FRU(ipmicmd=cmd, fruid=0).info or {}
        except (pyghmi_exceptions.IpmiException, *_MALFORMED) as exc:
            LOG.info("BMC %s: no FRU 0 (%s)", self.address, exc)
            return {}
        return {k: v.strip() for k, v in info.items() if isinstance(v, str) and v.strip()}

    # --- calls ------------------------------------------------------------------------

    def _call(self, what: str, work: Callable[[Any], T]) -> T:
        """Run ``work(command)`` on this BMC's session within the timeout; convert failures."""
        if self._link is None:
            self._link = _BmcLink.acquire(self.host, self.port, self.credentials)
        link, started = self._link, time.monotonic()
        future: Future[T] = Future()
        _start_worker(f"ipmi {self.address}",
                      lambda: link.run(work, started + self.timeout), future)
        try:
            result = future.result(timeout=self.timeout)
        except TimeoutError:
            raise BmcUnreachableError(self.address, what,
                                      f"no answer within {self.timeout:g} s") from None
        except _NoAnswer as exc:
            raise BmcUnreachableError(self.address, what, str(exc)) from None
        except _Busy as exc:
            raise BmcError(self.address, what, str(exc)) from None
        except (pyghmi_exceptions.PyghmiException, OSError, *_MALFORMED) as exc:
            raise convert_error(self.address, what, exc) from exc
        except Exception as exc:  # a pyghmi bug (it has races): still the driver's error
            LOG.warning("BMC %s: %s failed inside pyghmi", self.address, what, exc_info=True)
            raise convert_error(self.address, what, exc) from exc
        LOG.debug("BMC %s: %s took %.1f ms", self.address, what,
                  (time.monotonic() - started) * 1000)
        return result


def _read_power(cmd: Any) -> PowerState:
    state = cmd.get_power().get("powerstate")
    try:
        return POWER_FROM_PYGHMI[state]
    except KeyError:
        raise ValueError(f"unknown power state {state!r}") from None


# --- addresses and errors ---------------------------------------------------------------


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


def convert_error(address: str, what: str, exc: BaseException) -> BmcError:
    """The gateway's error for a pyghmi failure, naming the BMC and what failed."""
    if isinstance(exc, socket.gaierror):
        return BmcUnreachableError(address, what, f"cannot resolve the host name ({exc})")
    if isinstance(exc, OSError):
        return BmcUnreachableError(address, what, f"network error ({exc})")
    if isinstance(exc, pyghmi_exceptions.IpmiException):
        text = str(exc.args[0]) if exc.args and exc.args[0] else ""
        lowered = text.lower()
        if any(marker in lowered for marker in _AUTH_FAILURES):
            return BmcAuthError(address, what, f"credentials rejected ({text})")
        if not text or any(marker in lowered for marker in _NO_ANSWER):
            return BmcUnreachableError(address, what,
                                       f"no answer ({text})" if text else "no answer")
        code = getattr(exc, "ipmicode", 0)
        return BmcError(address, what,
                        f"{text} (completion code {code:#04x})" if code else text)
    if isinstance(exc, pyghmi_exceptions.PyghmiException):
        return BmcError(address, what, str(exc) or type(exc).__name__)
    return BmcError(address, what, f"unexpected answer ({type(exc).__name__}: {exc})")


class _NoAnswer(Exception):
    """Raised in a worker: the BMC did not answer (becomes BmcUnreachableError)."""


class _Busy(Exception):
    """Raised in a worker: the gateway gave up waiting for its own turn (becomes BmcError)."""


# --- one session per BMC, shared by its drivers -----------------------------------------

# pyghmi sends keepalives only from its event loop, which synchronous callers leave once
# logged in, and BMCs drop a session after about 60 s idle. Past this, ask pyghmi again: it
# reuses the session while it still trusts it, else logs in anew (no waiting on a dead one).
IDLE_RECHECK = 20.0
PING_TIMEOUT = 1.0  # per attempt; two attempts

_LINKS: dict[tuple[str, int, bytes, bytes], _BmcLink] = {}
_LINKS_LOCK = threading.Lock()
_LOGIN_LOCK = threading.Lock()


@dataclass(eq=False)
class _BmcLink:
    host: str
    port: int
    userid: bytes
    password: bytes = field(repr=False)
    users: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    command: Any = None
    last_used: float = 0.0
    retired: bool = False

    @classmethod
    def acquire(cls, host: str, port: int, credentials: BmcCredentials) -> _BmcLink:
        _close_lost_wakeup()
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

    def run(self, work: Callable[[Any], T], deadline: float) -> T:
        """``work(command)`` with this BMC to ourselves, logging in first if need be."""
        if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _NoAnswer("an earlier call to this BMC is still waiting for its answer")
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
            if self.retired:
                self._logout()
            self.lock.release()

    def _login(self, deadline: float) -> Any:
        _ping(self.host, self.port, deadline)
        if not _LOGIN_LOCK.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _Busy("gave up waiting for the logins to other BMCs to finish")
        try:
            return pyghmi_command.Command(bmc=self.host, port=self.port, userid=self.userid,
                                          password=self.password)
        finally:
            _LOGIN_LOCK.release()

    def _stale(self) -> bool:
        return (getattr(self.command.ipmi_session, "broken", True)
                or time.monotonic() - self.last_used > IDLE_RECHECK)

    def _logout(self) -> None:
        command, self.command = self.command, None
        if command is None:
            return
        with _LINKS_LOCK:  # a new link to this BMC may have been handed the same session
            shared = any(link.command is not None
                         and link.command.ipmi_session is command.ipmi_session
                         for link in _LINKS.values())
        if shared:
            return
        try:
            command.ipmi_session.logout()  # sends Close Session; does not wait for the answer
        except (pyghmi_exceptions.PyghmiException, OSError, *_MALFORMED) as exc:
            LOG.debug("BMC %s:%s: logout failed: %s", self.host, self.port, exc)


def _ping_packet() -> bytes:
    """Get Channel Authentication Capabilities, outside any session (IPMI 2.0 22.13)."""
    header = bytes([0x20, 0x06 << 2])  # to the BMC, netfn application
    body = bytes([0x81, 0x00, 0x38, 0x8E, 0x04])  # from software id 0x81: cmd 38h, admin
    message = header + _checksum(header) + body + _checksum(body)
    return bytes([0x06, 0x00, 0xFF, 0x07, 0x00]) + bytes(8) + bytes([len(message)]) + message


def _checksum(data: bytes) -> bytes:
    return bytes([-sum(data) & 0xFF])


def _ping(host: str, port: int, deadline: float) -> None:
    """Return once the BMC answers a ping at any of its addresses; else raise _NoAnswer."""
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
                    raise _NoAnswer(f"nothing listens on UDP port {port}")
        finally:
            for key in list(selector.get_map().values()):
                _drop(selector, key.data)
    raise _NoAnswer("no answer to an IPMI ping (Get Channel Authentication Capabilities)")


def _exchange(selector: selectors.BaseSelector, sock: socket.socket, send: bool) -> bool:
    """Send the ping, or read an answer (True); a refused address is dropped."""
    try:
        if send:
            sock.send(_ping_packet())
            return False
        sock.recv(512)
        return True
    except ConnectionRefusedError:
        _drop(selector, sock)
        return False


def _drop(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    selector.unregister(sock)
    sock.close()


# --- pyghmi's lost wakeup -----------------------------------------------------------------

_PATCH_LOCK = threading.Lock()
_patched = False


def _close_lost_wakeup() -> None:
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
