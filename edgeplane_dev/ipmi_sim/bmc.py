"""One simulated BMC: the IPMI face of a simulated machine (``chassis``), a BMC that
restarts, and the table routing each request to the part of the machine that answers it."""

from __future__ import annotations

import ipaddress
import logging
import math
import struct
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

from pyghmi.ipmi import bmc

from edge_gateway.drivers.ipmi.receive import receive_without_blocking
from edgeplane_dev.ipmi_sim import session as sessions
from edgeplane_dev.ipmi_sim.chassis import BOOT_PARAM_SIZES, BootFlags, Chassis
from edgeplane_dev.ipmi_sim.codes import (
    CC_NOT_IN_PRESENT_STATE,
    CC_OK,
    CC_PARAM_NOT_SUPPORTED,
    CC_REQUEST_LENGTH_INVALID,
    NETFN_SENSOR,
    NETFN_STORAGE,
    Answer,
)
from edgeplane_dev.ipmi_sim.fru import FruDevice, build_fru
from edgeplane_dev.ipmi_sim.sel import EventLog
from edgeplane_dev.ipmi_sim.sensors import THRESHOLD_SENSORS, SensorDevice
from edgeplane_dev.ports import LOOPBACK

LOG = logging.getLogger(__name__)

DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "password"  # noqa: S105 - the simulator's well-known demo credential
# IANA enterprise number 32473 is reserved for documentation (RFC 5612): a realistic, non-zero
# manufacturer id that no client maps to a vendor's OEM extensions.
DOC_ENTERPRISE_NUMBER = 32473
RESET_SECONDS = 1.0  # how long a cold reset keeps the BMC silent

FAULTS = {
    "fan-failed": "FAN2 reads 0 RPM while the host runs (health critical; a SEL event)",
    "no-power-cycle": "chassis control refuses a power cycle (0xCC); a reset still works",
    "no-sdr": "no SDR repository and no sensors",
    "no-sel": "no system event log",
}
# Get Device ID "additional device support" bits.
CHASSIS_DEVICE, FRU_DEVICE, SEL_DEVICE, SDR_DEVICE, SENSOR_DEVICE = 0x80, 0x08, 0x04, 0x02, 0x01


class SimulatedBmc(bmc.Bmc):
    """One simulated machine behind an IPMI BMC on ``address``:``port`` (UDP, loopback only).

    ``power_delay`` seconds pass between accepting a power change and reading it back.
    ``faults`` names entries of ``FAULTS``. ``clock`` is injectable for tests of the state
    logic; SEL timestamps use the wall clock.
    """

    def __init__(self, port: int, username: str = DEFAULT_USERNAME,
                 password: str = DEFAULT_PASSWORD, address: str = LOOPBACK, *,
                 power_delay: float = 0.0, power_on: bool = False, serial: str | None = None,
                 manufacturer: str = "Edgeplane", product: str = "Simulated Server",
                 faults: Collection[str] = (), reset_seconds: float = RESET_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check_loopback(address)
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(FAULTS)}")
        # pyghmi's one I/O thread reads the sockets of every BMC in the process: a reply sent
        # while it reads could leave it waiting on one BMC's socket, and every BMC silent.
        receive_without_blocking()
        super().__init__({username: password}, port=port, address=address)
        self.address = address
        self.power_delay = power_delay
        self.reset_seconds = reset_seconds
        self.faults = frozenset(faults)
        self.serial = serial or f"EPSIM-{port:05d}"
        self.manufacturer = manufacturer
        self.product = product
        self.system_guid = uuid.uuid5(uuid.NAMESPACE_URL, f"edgeplane-sim:{self.serial}")
        self._clock = clock
        self._silent_until = -math.inf
        # What Get Device ID reports (pyghmi's IpmiServer reads these attributes).
        self.deviceid = 0x20
        self.revision = 0x01
        self.firmwaremajor, self.firmwareminor = 2, 0x41  # 2.41; the minor is BCD
        self.ipmiversion = 0x02  # 2.0, BCD with the digits swapped
        self.mfgid = DOC_ENTERPRISE_NUMBER
        self.prodid = 0x0001
        self._fru = FruDevice(build_fru(manufacturer=manufacturer, product=product,
                                        serial=self.serial, part_number="EP-SIM-1"))
        self._sel = EventLog()
        self.chassis = Chassis(power_delay, power_on, self.faults,
                               None if "no-sel" in self.faults else self._sel, clock)
        self._sensors = SensorDevice(THRESHOLD_SENSORS, self.chassis.sensor_value_locked)
        self._sdr = self._sensors.repository()
        self.additionaldevices = CHASSIS_DEVICE | FRU_DEVICE
        self._handlers = self._command_table()

    def _command_table(self) -> dict[tuple[int, int], Callable[[bytes], Answer]]:
        table = {(NETFN_STORAGE, 0x10): self._fru.area_info, (NETFN_STORAGE, 0x11): self._fru.read}
        if "no-sdr" not in self.faults:
            self.additionaldevices |= SDR_DEVICE | SENSOR_DEVICE
            table.update({
                (NETFN_STORAGE, 0x20): self._sdr.info, (NETFN_STORAGE, 0x22): self._sdr.reserve,
                (NETFN_STORAGE, 0x23): self._sdr.get,
                (NETFN_SENSOR, 0x25): self._sensors.hysteresis,
                (NETFN_SENSOR, 0x27): self._sensors.thresholds,
                (NETFN_SENSOR, 0x2D): self._sensors.reading,
            })
        if "no-sel" not in self.faults:
            self.additionaldevices |= SEL_DEVICE
            table.update({
                (NETFN_STORAGE, 0x40): self._sel.info, (NETFN_STORAGE, 0x42): self._sel.reserve,
                (NETFN_STORAGE, 0x43): self._sel.get_entry,
                (NETFN_STORAGE, 0x44): self._sel.add_entry,
                (NETFN_STORAGE, 0x47): self._sel.clear, (NETFN_STORAGE, 0x48): self._sel.get_time,
            })
        return table

    # --- state, for tests and the operator -------------------------------------------

    @property
    def power(self) -> str:
        """The power state as a client reads it now: "on" or "off"."""
        return self.get_power_state()

    @property
    def boot(self) -> BootFlags:
        return self.chassis.boot

    def set_boot_device(self, bootdevice: str, persistent: bool = False,
                        efi: bool = False) -> None:
        """Set the boot flags as a client would ("default" clears the override)."""
        self.chassis.set_boot_device(bootdevice, persistent, efi)

    def get_boot_device(self) -> str:
        flags = self.boot
        return flags.device if flags.valid else "default"

    @property
    def answering(self) -> bool:
        """False for a while after a cold reset."""
        return self._clock() >= self._silent_until

    # --- power (called by pyghmi's chassis control handler) ---------------------------

    def get_power_state(self) -> str:
        return "on" if self.chassis.on else "off"

    def power_on(self) -> int:
        return self.chassis.power_on()

    def power_off(self) -> int:
        return self.chassis.power_off()

    def power_shutdown(self) -> int:
        """Soft off: the OS is asked to shut down (it always agrees here). Off: nothing to do."""
        return self.chassis.power_off(soft=True)

    def power_reset(self) -> int:
        return self.chassis.reset()

    def power_cycle(self) -> int:
        return self.chassis.cycle()

    def pulse_diag(self) -> int:
        return CC_OK if self.chassis.on else CC_NOT_IN_PRESENT_STATE

    # --- the BMC itself ----------------------------------------------------------------

    def cold_reset(self) -> int:
        """Answer, then go silent for ``reset_seconds`` and forget every session."""
        with self.chassis.lock:
            self._silent_until = self._clock() + self.reset_seconds
            self._sdr.reservation = self._sel.reservation = 0
        dropped = sessions.forget_sessions(self)
        LOG.info("port %s: cold reset; %s session(s) forgotten, silent for %.1f s", self.port,
                 dropped, self.reset_seconds)
        return CC_OK

    def get_system_guid(self) -> uuid.UUID:
        return self.system_guid

    # --- IPMI request handlers -------------------------------------------------------

    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        handler = self._handlers.get((request["netfn"], request["command"]))
        if handler is None:  # pyghmi's own: device id, chassis, cold reset, boot options
            super().handle_raw_request(request, session)
            return
        with self.chassis.lock:  # the chassis logs its events and feeds its sensors
            self.chassis.settle()
            code, data = handler(bytes(request["data"]))
        session.send_ipmi_response(code=code, data=list(data))

    def send_device_id(self, session: Any) -> None:
        # pyghmi packs the manufacturer id in 4 bytes and the product id in 4: the spec (and
        # every client) wants 3 and 2, then 4 bytes of auxiliary firmware revision.
        data = [self.deviceid, self.revision, self.firmwaremajor & 0x7F, self.firmwareminor,
                self.ipmiversion, self.additionaldevices]
        data += struct.pack("<I", self.mfgid)[:3] + struct.pack("<H", self.prodid) + bytes(4)
        session.send_ipmi_response(data=list(data))

    def get_system_boot_options(self, request: dict[str, Any], session: Any) -> None:
        selector = request["data"][0] & 0x7F if request["data"] else -1
        value = self.chassis.boot_param(selector)
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
        self.chassis.set_boot_param(selector, data[1:1 + size])
        LOG.debug("port %s: boot parameter %s set to %s", self.port, selector,
                  data[1:1 + size].hex())
        session.send_ipmi_response()

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        if not self.answering:
            return  # restarting: nothing answers, not even a ping
        packet = bytearray(data)
        # An RMCP+ open session request starts a session: make it one of ours; pyghmi handles
        # everything else that comes without a session (pings, cipher suite lists).
        if sessions.is_open_session_request(packet):
            sessions.open_session(self, packet, sockaddr)
            return
        super().sessionless_data(data, sockaddr)


def _check_loopback(address: str) -> None:
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the IPMI simulator binds loopback addresses only, not {address!r}")
