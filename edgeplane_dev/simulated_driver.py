"""A simulated BMC for the fleet simulator and for tests of the gateway core and the tasks.

It behaves like a slow, real BMC: a power change is accepted at once but reads back only
after ``power_delay`` seconds; a "once" boot override is consumed by the next power on;
BIOS settings written are pending until the next power on or cycle; a firmware update runs
for ``update_seconds`` and then changes the version (or stalls or fails, when told to). It
can be told to fail every call (``fail_with``) to exercise error paths. A site's config file
cannot name it: it is used only where a test or the fleet simulator injects it.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from edge_gateway.drivers.base import BmcCredentials, Driver, MachineInfo
from edge_gateway.drivers.interfaces import (
    BiosAttribute,
    BiosInterface,
    BiosSettings,
    BmcInterface,
    BootOverride,
    FirmwareComponent,
    FirmwareInterface,
    FirmwareJob,
    HealthInterface,
    HealthReport,
    InventoryInterface,
    JobState,
    LogEntry,
    LogsInterface,
    MediaInterface,
    SensorReading,
    VirtualMedia,
)
from edge_gateway.errors import BmcError, BmcUnreachableError
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, PowerState

BIOS_REGISTRY = {
    "BootMode": BiosAttribute("BootMode", "Enumeration", ("Uefi", "LegacyBios")),
    "ProcTurboMode": BiosAttribute("ProcTurboMode", "Enumeration", ("Enabled", "Disabled")),
    "ProcHyperthreading": BiosAttribute("ProcHyperthreading", "Enumeration",
                                        ("Enabled", "Disabled")),
    "ProcCoreDisable": BiosAttribute("ProcCoreDisable", "Integer", minimum=0, maximum=64),
    "AdminPhone": BiosAttribute("AdminPhone", "String"),
    "SerialNumber": BiosAttribute("SerialNumber", "String", read_only=True),
}


def _default_bios() -> dict[str, Any]:
    return {"BootMode": "Uefi", "ProcTurboMode": "Enabled", "ProcHyperthreading": "Enabled",
            "ProcCoreDisable": 0, "AdminPhone": "", "SerialNumber": "SIM-0001"}


def _default_firmware() -> dict[str, FirmwareComponent]:
    components = [FirmwareComponent("bmc", "BMC", "1.0.0", updateable=True),
                  FirmwareComponent("bios", "BIOS", "2.1.0", updateable=True)]
    return {c.id: c for c in components}


@dataclass
class SimulatedMachine:
    """The state of one simulated server, shared by every driver that talks to it."""

    power: PowerState = PowerState.OFF
    boot: BootOverride = BootOverride(target=None, mode=None)
    power_delay: float = 0.0
    serial: str = "SIM-0001"
    fail_with: str | None = None
    bios: dict[str, Any] = field(default_factory=_default_bios)
    bios_pending: dict[str, Any] = field(default_factory=dict)
    firmware: dict[str, FirmwareComponent] = field(default_factory=_default_firmware)
    update_seconds: float = 0.0
    update_outcome: str = JobState.COMPLETED  # or FAILED, or RUNNING (a stalled update)
    media: dict[str, str | None] = field(default_factory=lambda: {"cd": None, "usb": None})
    sel: list[LogEntry] = field(default_factory=list)
    fan_failed: bool = False
    bmc_down_until: float = 0.0
    calls: list[str] = field(default_factory=list)
    _pending_power: tuple[PowerState, float] | None = None
    _jobs: dict[str, tuple[float, str, str | None]] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def observed_power(self) -> PowerState:
        with self._lock:
            if self._pending_power and time.monotonic() >= self._pending_power[1]:
                self.power = self._pending_power[0]
                self._pending_power = None
                if self.power == PowerState.ON:
                    self.boot_up()
            return self.power

    def boot_up(self) -> None:
        """What happens when the machine starts: pending BIOS applies, a once override goes."""
        with self._lock:
            self.bios.update(self.bios_pending)
            self.bios_pending.clear()
            if self.boot.mode == BootMode.ONCE:
                self.boot = BootOverride(target=None, mode=None)
            self.log("ok", "System boot")

    def log(self, severity: str, message: str) -> None:
        self.sel.append(LogEntry(str(len(self.sel) + 1), None, severity, message))


class SimulatedDriver(MediaInterface, BiosInterface, FirmwareInterface, InventoryInterface,
                      HealthInterface, LogsInterface, BmcInterface, Driver):
    """Every interface, one section each; power and boot come with the driver core."""

    protocol = "simulated"

    def __init__(self, credentials: BmcCredentials, machine: SimulatedMachine,
                 timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self.machine = machine

    def _call(self, what: str) -> None:
        self.machine.calls.append(what)
        if self.machine.fail_with:
            raise BmcError(self.address, what, self.machine.fail_with)
        if time.monotonic() < self.machine.bmc_down_until:
            raise BmcUnreachableError(self.address, what, "no answer (the BMC is restarting)")

    # --- power ---------------------------------------------------------------------------

    def get_power_state(self) -> PowerState:
        self._call("get_power_state")
        return self.machine.observed_power()

    def request_power_state(self, state: PowerState) -> None:
        self._call(f"request_power_state:{state}")
        with self.machine._lock:
            self.machine._pending_power = (state, time.monotonic() + self.machine.power_delay)
            self.machine.log("ok", f"Power {state} requested")

    def request_graceful_shutdown(self) -> None:
        self.request_power_state(PowerState.OFF)

    def request_power_cycle(self) -> None:
        self._call("request_power_cycle")
        with self.machine._lock:
            self.machine.boot_up()
            self.machine.log("ok", "Power cycle")

    # --- boot ----------------------------------------------------------------------------

    def get_boot_override(self) -> BootOverride:
        self._call("get_boot_override")
        return self.machine.boot

    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        self._call(f"set_boot_override:{target}:{mode}")
        self.machine.boot = BootOverride(target=target, mode=mode,
                                         firmware_mode=firmware_mode)

    # --- media ---------------------------------------------------------------------------

    def get_virtual_media(self) -> list[VirtualMedia]:
        self._call("get_virtual_media")
        types = {"cd": ("CD", "DVD"), "usb": ("USBStick",)}
        return [VirtualMedia(slot, types[slot], image is not None, image)
                for slot, image in self.machine.media.items()]

    def insert_media(self, image: str, slot: str | None = None) -> None:
        self._call(f"insert_media:{image}")
        self.machine.media[slot or "cd"] = image

    def eject_media(self, slot: str) -> None:
        self._call(f"eject_media:{slot}")
        self.machine.media[slot] = None

    # --- BIOS ----------------------------------------------------------------------------

    def get_bios(self) -> BiosSettings:
        self._call("get_bios")
        return BiosSettings(dict(self.machine.bios), dict(self.machine.bios_pending),
                            BIOS_REGISTRY)

    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        self._call(f"set_bios_pending:{sorted(attributes)}")
        self.machine.bios_pending.update(attributes)

    # --- firmware ------------------------------------------------------------------------

    def get_firmware(self) -> list[FirmwareComponent]:
        self._call("get_firmware")
        return list(self.machine.firmware.values())

    def start_firmware_update(self, image: str, targets: list[str] | None = None) -> FirmwareJob:
        self._call(f"start_firmware_update:{image}")
        target = (targets or ["bmc"])[0]
        found = re.search(r"(\d+(?:\.\d+)+)", image.rsplit("/", 1)[-1])
        job_id = f"job-{len(self.machine._jobs) + 1}"
        self.machine._jobs[job_id] = (time.monotonic() + self.machine.update_seconds, target,
                                      found.group(1) if found else None)
        return FirmwareJob(monitor=job_id, bmc_state="New", percent=0)

    def get_firmware_job(self, job: FirmwareJob) -> FirmwareJob:
        self._call(f"get_firmware_job:{job.monitor}")
        ends, target, version = self.machine._jobs[str(job.monitor)]
        outcome = self.machine.update_outcome
        if time.monotonic() < ends or outcome == JobState.RUNNING:
            return FirmwareJob(job.monitor, JobState.RUNNING, 50, "Running")
        if outcome == JobState.FAILED:
            return FirmwareJob(job.monitor, JobState.FAILED, 100, "Exception",
                               ("image signature check failed",))
        component = self.machine.firmware[target]
        if version:
            self.machine.firmware[target] = FirmwareComponent(
                component.id, component.name, version, component.updateable)
        return FirmwareJob(job.monitor, JobState.COMPLETED, 100, "Completed")

    # --- inventory, health, logs, BMC ----------------------------------------------------

    def describe(self) -> MachineInfo:
        self._call("describe")
        return MachineInfo(protocol=self.protocol, manufacturer="Edgeplane",
                           model="Simulated Server", serial=self.machine.serial,
                           power=self.machine.observed_power(),
                           capabilities=self.capabilities)

    def collect_inventory(self) -> dict[str, Any]:
        self._call("collect_inventory")
        return {
            "system": {"manufacturer": "Edgeplane", "model": "Simulated Server",
                       "serial": self.machine.serial, "bios_version":
                       self.machine.firmware["bios"].version},
            "processors": [{"model": "Sim CPU", "cores": 8, "threads": 16}] * 2,
            "memory": [{"capacity_mib": 16384, "type": "DDR4"}] * 4,
            "nics": [{"id": "nic1", "mac": "52:54:00:00:00:01", "speed_mbps": 10000}],
            "storage": [{"name": "disk1", "capacity_bytes": 480 * 10**9}],
            "bmc": {"firmware": self.machine.firmware["bmc"].version},
        }

    def check_health(self) -> HealthReport:
        self._call("check_health")
        fan = "critical" if self.machine.fan_failed else "ok"
        sensors = (SensorReading("CPU Temp", "temperature", 45.0, "Cel", "ok"),
                   SensorReading("Fan 1", "fan", 0.0 if self.machine.fan_failed else 5400.0,
                                 "RPM", fan))
        return HealthReport(health=fan, components={"processors": "ok", "memory": "ok",
                                                    "fans": fan}, sensors=sensors)

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        self._call("read_sel")
        entries = list(self.machine.sel)
        return entries[-limit:] if limit else entries

    def clear_sel(self) -> None:
        self._call("clear_sel")
        self.machine.sel = [LogEntry("1", None, "ok", "Log cleared")]

    def reset_bmc(self) -> None:
        self._call("reset_bmc")
        self.machine.bmc_down_until = time.monotonic() + 0.2
