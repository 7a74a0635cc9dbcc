"""An IPMI BMC simulator on pyghmi's BMC server class, for the local stack and the tests.

It keeps one machine's state in memory: power (with an optional delay before a change reads
back, like a real chassis), the boot flags (device, "once" or persistent, consumed by the
next boot when "once"), device id and a FRU 0 with manufacturer, product and serial.
``ipmitool -I lanplus`` and pyghmi's own client both log in to it (cipher suite 3 only).

Run it from a shell (it binds loopback addresses only)::

    python -m edgeplane.dev.ipmi_sim --port 6230 [--port 6231 ...] \
        [--username admin --password password] [--power-delay 0.5]

It prints ``ready <port> ...`` on stdout once its sockets are bound, and exits cleanly on
SIGTERM or Ctrl-C. pyghmi keeps its sockets and event loop in process-wide state that cannot
be torn down, so a simulator runs in a process of its own: ``SimulatorProcess`` starts and
stops one for tests. Never run it in the process of a pyghmi client: both would share that
state.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pyghmi.ipmi import bmc
from pyghmi.ipmi.private import constants, serversession
from pyghmi.ipmi.private import session as ipmisession

from edgeplane.dev.ports import LOOPBACK, free_port
from edgeplane.dev.processes import stop

LOG = logging.getLogger(__name__)

DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "password"  # noqa: S105 - the simulator's well-known demo credential

# IANA enterprise number 32473 is reserved for documentation (RFC 5612): a realistic, non-zero
# manufacturer id that no client maps to a vendor's OEM extensions.
DOC_ENTERPRISE_NUMBER = 32473

# Completion codes (IPMI 2.0 table 5-2) and RMCP+ status codes (table 13-15).
CC_OK = 0x00
CC_PARAM_NOT_SUPPORTED = 0x80
CC_REQUEST_LENGTH_INVALID = 0xC7
CC_OUT_OF_RANGE = 0xC9
CC_NOT_PRESENT = 0xCB
CC_NOT_IN_PRESENT_STATE = 0xD5
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_UNAUTHORIZED_NAME = 0x0D

# Boot device selector (boot flags data 2, bits 5:2) <-> the names pyghmi and ipmitool use.
BOOT_DEVICES = {0: "default", 1: "network", 2: "hd", 3: "safe", 4: "diag", 5: "optical",
                6: "setup", 15: "floppy"}
BOOT_SELECTORS = {name: code for code, name in BOOT_DEVICES.items()}
# Boot option parameters we keep, with their data length (IPMI 2.0 table 28-14).
BOOT_PARAM_SIZES = {0: 1, 3: 1, 4: 2, 5: 5}
BOOT_FLAGS_PARAM = 5
BOOT_VALID, BOOT_PERSISTENT, BOOT_EFI = 0x80, 0x40, 0x20
FRU_EPOCH = datetime(1996, 1, 1, tzinfo=UTC)
BOARD_MADE = datetime(2024, 3, 1, tzinfo=UTC)  # fixed, so every run reads the same FRU


@dataclass(frozen=True)
class BootFlags:
    """The boot flags as the BIOS would read them at the next boot."""

    device: str  # one of BOOT_DEVICES' names ("default": no override)
    valid: bool  # False: no override is in force, whatever ``device`` says
    persistent: bool
    efi: bool


@dataclass(frozen=True)
class _Transition:
    on: bool  # the power state it ends in
    at: float  # when it reads back (monotonic clock)
    boots: bool  # the host boots when it completes, which consumes a "once" boot override


class _CipherSuite3Session(serversession.ServerSession):
    """pyghmi's server session, answering like a BMC that offers cipher suite 3 only.

    As shipped, pyghmi's server accepts any proposal and answers with suite 3, so pyghmi's
    client (which proposes RAKP-HMAC-SHA256 first) computes SHA-256 hashes over SHA-1 answers
    and fails in RAKP2. Refusing the proposal makes it retry with SHA-1, as ipmitool's suite 3
    does from the start. An unknown user name gets the "unauthorized name" status in RAKP2
    instead of silence, like real BMCs.
    """

    def create_open_session_response(self, request: bytearray) -> bytearray:
        if _proposes_suite_3(request):
            return super().create_open_session_response(request)
        self.clientsessionid = request[4:8]
        return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]

    def _got_rmcp_openrequest(self, data: bytearray) -> None:
        # pyghmi keys server sessions by the client's address and port, and its clients reuse
        # their socket for the next session: a new open request from that address starts a
        # new session (as on a real BMC), not a renegotiation under the old session's keys.
        self.close_server_session()
        _CipherSuite3Session(self.authdata, self.kg, self.sockaddr, self.socket, data,
                             self.uuid, bmc=self.bmc)

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        # pyghmi hands a packet queued for a session that has since closed to the session's
        # own sessionless_data, which only its IpmiServer has.
        self.bmc.sessionless_data(data, sockaddr)

    def close_server_session(self) -> None:
        """Forget this session: what comes next from its client is sessionless again."""
        handlers = ipmisession.Session.bmc_handlers.get(self.sockaddr, {})
        if handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
            if not handlers:
                ipmisession.Session.bmc_handlers.pop(self.sockaddr, None)

    def _got_rakp1(self, data: bytearray) -> None:
        namelength = data[27] if len(data) > 27 else 0
        name = bytes(data[28:28 + namelength]).decode("utf-8", "replace")
        if namelength and self.authdata.get(name) is None:
            LOG.info("IPMI login as unknown user %r refused", name)
            reply = bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0]) + self.clientsessionid
            self.send_payload(reply, constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)


def _proposes_suite_3(request: bytearray) -> bool:
    """True if an RMCP+ open session request accepts HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128.

    Each proposal is an 8-byte record (type, 2 reserved, length, algorithm, 3 reserved) at
    offsets 8, 16 and 24; a record of length 0 lets the BMC choose.
    """
    if len(request) < 32:
        return False
    for offset in (8, 16, 24):
        if request[offset + 3] and request[offset + 4] & 0x3F != 1:
            return False
    return True


class SimulatedBmc(bmc.Bmc):
    """One simulated machine behind an IPMI BMC on ``address``:``port`` (UDP, loopback only).

    ``power_delay`` seconds pass between accepting a power change and reading it back.
    ``clock`` is injectable for tests of the state logic.
    """

    def __init__(self, port: int, username: str = DEFAULT_USERNAME,
                 password: str = DEFAULT_PASSWORD, address: str = LOOPBACK, *,
                 power_delay: float = 0.0, power_on: bool = False, serial: str | None = None,
                 manufacturer: str = "Edgeplane", product: str = "Simulated Server",
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check_loopback(address)
        super().__init__({username: password}, port=port, address=address)
        self.address = address
        self.power_delay = power_delay
        self.serial = serial or f"EPSIM-{port:05d}"
        self.manufacturer = manufacturer
        self.product = product
        self.system_guid = uuid.uuid5(uuid.NAMESPACE_URL, f"edgeplane-sim:{self.serial}")
        self._clock = clock
        self._lock = threading.Lock()
        self._on = power_on
        self._transition: _Transition | None = None
        self._boot_params: dict[int, bytes] = {0: b"\x00", 3: b"\x00", 4: b"\x00\x00",
                                               5: bytes(5)}
        # What Get Device ID reports (pyghmi's IpmiServer reads these attributes).
        self.deviceid = 0x20
        self.revision = 0x01
        self.firmwaremajor, self.firmwareminor = 2, 0x41  # 2.41; the minor is BCD
        self.ipmiversion = 0x02  # 2.0, BCD with the digits swapped
        self.additionaldevices = 0x80 | 0x08  # chassis device, FRU inventory device
        self.mfgid = DOC_ENTERPRISE_NUMBER
        self.prodid = 0x0001
        self._fru = build_fru(manufacturer=manufacturer, product=product, serial=self.serial,
                              part_number="EP-SIM-1")

    # --- state, for tests and the operator -------------------------------------------

    @property
    def power(self) -> str:
        """The power state as a client reads it now: "on" or "off"."""
        return self.get_power_state()

    @property
    def boot(self) -> BootFlags:
        with self._lock:
            self._settle()
            flags = self._boot_params[BOOT_FLAGS_PARAM]
        code = (flags[1] >> 2) & 0x0F
        return BootFlags(device=BOOT_DEVICES.get(code, f"device-{code}"),
                         valid=bool(flags[0] & BOOT_VALID),
                         persistent=bool(flags[0] & BOOT_PERSISTENT),
                         efi=bool(flags[0] & BOOT_EFI))

    def set_boot_device(self, bootdevice: str, persistent: bool = False,
                        efi: bool = False) -> None:
        """Set the boot flags as a client would ("default" clears the override)."""
        code = BOOT_SELECTORS[bootdevice]
        first = 0
        if code:
            first = BOOT_VALID | (BOOT_PERSISTENT if persistent else 0) | (BOOT_EFI if efi else 0)
        with self._lock:
            self._boot_params[BOOT_FLAGS_PARAM] = bytes([first, code << 2, 0, 0, 0])

    def get_boot_device(self) -> str:
        flags = self.boot
        return flags.device if flags.valid else "default"

    # --- power (called by pyghmi's chassis control handler) ---------------------------

    def get_power_state(self) -> str:
        with self._lock:
            self._settle()
            return "on" if self._on else "off"

    def power_on(self) -> int:
        with self._lock:
            self._settle()
            if self._heading() is not True:  # asking again does not restart the clock
                self._begin(on=True, boots=not self._on)
        return CC_OK

    def power_off(self) -> int:
        with self._lock:
            self._settle()
            if self._heading() is not False:
                self._begin(on=False, boots=False)
        return CC_OK

    def power_shutdown(self) -> int:
        """Soft off: the OS is asked to shut down (it always agrees here)."""
        return self.power_off()

    def power_reset(self) -> int:
        with self._lock:
            self._settle()
            if not self._on:
                return CC_NOT_IN_PRESENT_STATE  # like most BMCs: no reset of a machine that is off
            self._begin(on=True, boots=True)
        return CC_OK

    def power_cycle(self) -> int:
        # IPMI 2.0 section 28.3: a power cycle must not power on a machine that is off.
        return self.power_reset()

    def pulse_diag(self) -> int:
        return CC_OK if self.get_power_state() == "on" else CC_NOT_IN_PRESENT_STATE

    def _heading(self) -> bool:
        """Whether the machine is (or is about to be) on. Call with the lock held."""
        return self._transition.on if self._transition else self._on

    def _begin(self, on: bool, boots: bool) -> None:
        """Start a power transition; the latest request wins. Call with the lock held."""
        self._transition = _Transition(on=on, at=self._clock() + self.power_delay, boots=boots)
        self._settle()

    def _settle(self) -> None:
        """Apply a transition whose time has come. Call with the lock held."""
        transition = self._transition
        if transition is None or self._clock() < transition.at:
            return
        self._on, self._transition = transition.on, None
        flags = self._boot_params[BOOT_FLAGS_PARAM]
        if transition.boots and flags[0] & BOOT_VALID and not flags[0] & BOOT_PERSISTENT:
            self._boot_params[BOOT_FLAGS_PARAM] = bytes([flags[0] & ~BOOT_VALID]) + flags[1:]

    # --- IPMI request handlers -------------------------------------------------------

    def get_system_guid(self) -> uuid.UUID:
        return self.system_guid

    def send_device_id(self, session: Any) -> None:
        # pyghmi packs the manufacturer id in 4 bytes and the product id in 4: the spec (and
        # every client) wants 3 and 2, then 4 bytes of auxiliary firmware revision.
        data = [self.deviceid, self.revision, self.firmwaremajor & 0x7F, self.firmwareminor,
                self.ipmiversion, self.additionaldevices]
        data += struct.pack("<I", self.mfgid)[:3] + struct.pack("<H", self.prodid) + bytes(4)
        session.send_ipmi_response(data=list(data))

    def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        selector = request["data"][0] & 0x7F if request["data"] else -1
        with self._lock:
            self._settle()
            value = self._boot_params.get(selector)
        if value is None:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        session.send_ipmi_response(data=[1, selector, *value])  # 1: parameter version

    def set_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        data = bytes(request["data"])
        selector = data[0] & 0x7F if data else -1
        size = BOOT_PARAM_SIZES.get(selector)
        if size is None:
            session.send_ipmi_response(code=CC_PARAM_NOT_SUPPORTED)
            return
        if len(data) < 1 + size:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH_INVALID)
            return
        with self._lock:
            self._boot_params[selector] = data[1:1 + size]
        LOG.debug("port %s: boot parameter %s set to %s", self.port, selector,
                  data[1:1 + size].hex())
        session.send_ipmi_response()

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        if request["netfn"] == 0x0A and request["command"] in (0x10, 0x11):
            self._handle_fru(request, session)
            return
        super().handle_raw_request(request, session)

    def _handle_fru(self, request: dict[str, Any], session: Any) -> None:
        data = bytes(request["data"])
        if not data:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH_INVALID)
        elif data[0] != 0:
            session.send_ipmi_response(code=CC_NOT_PRESENT)  # only FRU 0 exists
        elif request["command"] == 0x10:  # Get FRU Inventory Area Info; byte access
            session.send_ipmi_response(data=[*struct.pack("<H", len(self._fru)), 0])
        elif len(data) < 4:
            session.send_ipmi_response(code=CC_REQUEST_LENGTH_INVALID)
        else:  # Read FRU Data
            offset, count = struct.unpack_from("<HB", data, 1)
            if offset >= len(self._fru):
                session.send_ipmi_response(code=CC_OUT_OF_RANGE)
                return
            chunk = self._fru[offset:offset + count]
            session.send_ipmi_response(data=[len(chunk), *chunk])

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        packet = bytearray(data)
        # An RMCP+ open session request (IPMI 2.0 payload type 0x10) starts a session: make
        # it one of ours; pyghmi handles everything else that comes without a session.
        if (len(packet) >= 22 and packet[0] == 6 and packet[2:4] == b"\xff\x07"
                and packet[4] == 6 and packet[5] == 0x10):
            _CipherSuite3Session(self.authdata, self.kg, sockaddr, self.serversocket,
                                 packet[16:], self.uuid, bmc=self)
            return
        super().sessionless_data(data, sockaddr)


def _check_loopback(address: str) -> None:
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the IPMI simulator binds loopback addresses only, not {address!r}")


# --- FRU ---------------------------------------------------------------------------------


def build_fru(manufacturer: str, product: str, serial: str, part_number: str) -> bytes:
    """FRU 0 in the Platform Management FRU format 1.0: chassis, board and product areas."""
    chassis = _fru_area([0x17], [part_number, serial])  # 0x17: rack mount chassis
    minutes = int((BOARD_MADE - FRU_EPOCH).total_seconds() // 60)
    board = _fru_area([0, *struct.pack("<I", minutes)[:3]],  # language 0 (English), date
                      [manufacturer, f"{product} Board", f"B{serial}", f"{part_number}-MB",
                       ""])
    product_area = _fru_area([0],  # language
                             [manufacturer, product, part_number, "1", serial, "", ""])
    offset = 1  # in multiples of 8 bytes; the common header takes the first 8
    offsets = []
    for area in (chassis, board, product_area):
        offsets.append(offset)
        offset += len(area) // 8
    header = bytes([1, 0, *offsets, 0, 0])
    return _with_checksum(header) + chassis + board + product_area


def _fru_area(fixed: list[int], fields: list[str]) -> bytes:
    body = bytearray(fixed)
    for text in fields:
        encoded = text.encode("latin-1")[:63]
        body += bytes([0xC0 | len(encoded)]) + encoded  # type 3: 8-bit ASCII + Latin 1
    body.append(0xC1)  # end of fields
    length = -(-(len(body) + 3) // 8) * 8  # version, length and checksum bytes included
    area = bytes([1, length // 8]) + body + bytes(length - len(body) - 3)
    return _with_checksum(area)


def _with_checksum(data: bytes) -> bytes:
    return data + bytes([-sum(data) & 0xFF])


# --- serving -----------------------------------------------------------------------------


def serve(port: int, username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
          address: str = LOOPBACK, power_delay: float = 0.0) -> None:
    """Simulate one BMC on ``address``:``port`` (UDP) until SIGTERM or Ctrl-C.

    Blocks; call it from the main thread of a process of its own (the operator command
    ``edgeplane dev bmc ipmi --port P`` does), since pyghmi's sockets and event loop live as
    long as the process. ``power_delay``: seconds before a power change reads back. Prints
    ``ready <port>`` on stdout once bound; raises OSError if the port is taken and
    ValueError for an address that is not a loopback address.
    """
    serve_many([port], username=username, password=password, address=address,
               power_delay=power_delay)


def serve_many(ports: Sequence[int], username: str = DEFAULT_USERNAME,
               password: str = DEFAULT_PASSWORD, address: str = LOOPBACK,
               power_delay: float = 0.0) -> None:
    """Simulate one BMC per port, all served by this thread, until SIGTERM or SIGINT.

    Prints ``ready <port> ...`` on stdout once every socket is bound. Raises OSError if a
    port is taken and ValueError for an address that is not a loopback address.
    """
    bmcs = [SimulatedBmc(port, username, password, address, power_delay=power_delay)
            for port in ports]
    stop_event = threading.Event()
    restore: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            restore[signum] = signal.signal(signum, lambda *_: stop_event.set())
    LOG.info("IPMI simulator on %s, UDP port(s) %s, user %s", address,
             ", ".join(map(str, ports)), username)
    print("ready", *(b.port for b in bmcs), flush=True)
    try:
        while not stop_event.is_set():
            try:  # serves every session of the process; returns at least every 0.05 s
                ipmisession.Session.wait_for_rsp(timeout=0.05)
            except Exception:  # one bad packet must not take every simulated BMC down
                LOG.exception("IPMI simulator: a request failed")
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        LOG.info("IPMI simulator on port(s) %s stopped", ", ".join(map(str, ports)))


class SimulatorProcess:
    """An IPMI simulator in a child process, serving one BMC per port; a context manager.

    ``SimulatorProcess(count=5)`` picks free UDP ports; ``ports`` lists them once started.
    """

    def __init__(self, ports: Sequence[int] | None = None, count: int = 1,
                 username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
                 power_delay: float = 0.0, log_path: Path | None = None) -> None:
        self.ports = list(ports) if ports else [free_port(socket.SOCK_DGRAM)
                                                for _ in range(count)]
        self.username = username
        self.password = password
        self.power_delay = power_delay
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def addresses(self) -> list[str]:
        """What a driver's credentials name: "127.0.0.1:<port>" for each BMC."""
        return [f"{LOOPBACK}:{port}" for port in self.ports]

    def start(self, timeout: float = 10.0) -> SimulatorProcess:
        args = [sys.executable, "-m", "edgeplane.dev.ipmi_sim", "--username", self.username,
                "--password", self.password, "--power-delay", str(self.power_delay)]
        for port in self.ports:
            args += ["--port", str(port)]
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if log is not None:
                log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"IPMI simulator not ready after {timeout:.0f} s")
        line = self.process.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("ready"):
            code = self.process.wait(timeout=5)
            raise RuntimeError(f"IPMI simulator on port(s) {self.ports} exited with {code}: "
                               f"{line or 'no output'}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeplane.dev.ipmi_sim",
                                     description="Simulate IPMI BMCs on loopback UDP ports.")
    parser.add_argument("--port", type=int, action="append", required=True,
                        help="UDP port of one simulated BMC (repeat for more)")
    parser.add_argument("--username", default=DEFAULT_USERNAME)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--address", default=LOOPBACK, help="loopback address to bind")
    parser.add_argument("--power-delay", type=float, default=0.0,
                        help="seconds before a power change reads back")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_many(args.port, args.username, args.password, args.address, args.power_delay)
    except (OSError, ValueError) as exc:
        print(f"ipmi_sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
