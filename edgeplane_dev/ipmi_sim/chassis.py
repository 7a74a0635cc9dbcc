"""The simulated machine itself: power that takes a while to change, the boot flags the next
boot reads (and consumes), what its sensors read, and the SEL events its power changes log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from edgeplane_dev.ipmi_sim.codes import CC_INVALID_DATA, CC_NOT_IN_PRESENT_STATE, CC_OK
from edgeplane_dev.ipmi_sim.sel import EventLog
from edgeplane_dev.ipmi_sim.sensors import (
    ACPI_SENSOR,
    FAN2,
    POWER_UNIT_SENSOR,
    SYSTEM_BOOT_SENSOR,
    THRESHOLD_BASED,
    ThresholdSensor,
)

# Boot device selector (boot flags data 2, bits 5:2) <-> the names pyghmi and ipmitool use.
# 15 is "remotely connected floppy / primary removable media": what a USB stick boots as.
BOOT_DEVICES = {0: "default", 1: "network", 2: "hd", 3: "safe", 4: "diag", 5: "optical",
                6: "setup", 15: "floppy"}
BOOT_SELECTORS = {name: code for code, name in BOOT_DEVICES.items()}
# Boot option parameters we keep, with their data length (IPMI 2.0 table 28-14).
BOOT_PARAM_SIZES = {0: 1, 3: 1, 4: 2, 5: 5}
BOOT_FLAGS_PARAM = 5
BOOT_VALID, BOOT_PERSISTENT, BOOT_EFI = 0x80, 0x40, 0x20


@dataclass(frozen=True)
class BootFlags:
    """The boot flags as the BIOS would read them at the next boot."""

    device: str  # one of BOOT_DEVICES' names ("default": no override)
    valid: bool  # False: no override is in force, whatever ``device`` says
    persistent: bool
    efi: bool


@dataclass(frozen=True)
class Event:
    """A SEL event logged when a power change completes (sensor-specific by default)."""

    sensor_type: int
    sensor: int
    offset: int
    deassert: bool = False
    event_type: int = 0x6F
    data2: int = 0xFF
    data3: int = 0xFF


POWERED_ON = Event(POWER_UNIT_SENSOR.sensor_type, POWER_UNIT_SENSOR.number, 0, deassert=True)
POWERED_OFF = Event(POWER_UNIT_SENSOR.sensor_type, POWER_UNIT_SENSOR.number, 0)
POWER_CYCLED = Event(POWER_UNIT_SENSOR.sensor_type, POWER_UNIT_SENSOR.number, 1)
HARD_RESET = Event(SYSTEM_BOOT_SENSOR.sensor_type, SYSTEM_BOOT_SENSOR.number, 1)
SOFT_OFF = Event(ACPI_SENSOR.sensor_type, ACPI_SENSOR.number, 5)  # S5/G2 soft-off
FAN_FAILED = Event(FAN2.sensor_type, FAN2.number, 4, event_type=THRESHOLD_BASED,  # LNR low
                   data2=0, data3=FAN2.raw(FAN2.thresholds["lnr"]))


@dataclass(frozen=True)
class _Transition:
    on: bool  # the power state it ends in
    at: float  # when it reads back (monotonic clock)
    boots: bool  # the host boots when it completes, which consumes a "once" boot override
    events: tuple[Event, ...] = ()  # logged in the SEL when it completes


class Chassis:
    """Power, boot flags and sensor values of one machine. Methods ending in ``_locked``,
    and ``settle``, expect ``lock`` to be held; the others take it."""

    def __init__(self, power_delay: float, power_on: bool, faults: Collection[str],
                 sel: EventLog | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.power_delay = power_delay
        self.faults = frozenset(faults)
        self.sel = sel  # None: power changes log nothing
        self.lock = threading.Lock()
        self._clock = clock
        self._on = power_on
        self._transition: _Transition | None = None
        self._boot_params: dict[int, bytes] = {0: b"\x00", 3: b"\x00", 4: b"\x00\x00",
                                               5: bytes(5)}

    # --- power -------------------------------------------------------------------------

    @property
    def on(self) -> bool:
        with self.lock:
            self.settle()
            return self._on

    def power_on(self) -> int:
        with self.lock:
            self.settle()
            if self._heading() is not True:  # asking again does not restart the clock
                events = () if self._on else self._power_on_events()
                self._begin(on=True, boots=not self._on, events=events)
        return CC_OK

    def power_off(self, soft: bool = False) -> int:
        """Hard off, or soft off (the OS is asked to shut down; it always agrees here)."""
        with self.lock:
            self.settle()
            if self._heading() is not False:
                events = (SOFT_OFF, POWERED_OFF) if soft else (POWERED_OFF,)
                self._begin(on=False, boots=False, events=events if self._on else ())
        return CC_OK

    def reset(self) -> int:
        return self._restart(HARD_RESET)

    def cycle(self) -> int:
        if "no-power-cycle" in self.faults:
            return CC_INVALID_DATA  # what BMCs without a power cycle answer
        # IPMI 2.0 section 28.3: a power cycle must not power on a machine that is off.
        return self._restart(POWER_CYCLED)

    def _restart(self, event: Event) -> int:
        with self.lock:
            self.settle()
            if not self._on:
                return CC_NOT_IN_PRESENT_STATE  # like most BMCs: no reset of a machine that is off
            self._begin(on=True, boots=True, events=(event,))
        return CC_OK

    def _power_on_events(self) -> tuple[Event, ...]:
        return (POWERED_ON, FAN_FAILED) if "fan-failed" in self.faults else (POWERED_ON,)

    def _heading(self) -> bool:
        """Whether the machine is (or is about to be) on."""
        return self._transition.on if self._transition else self._on

    def _begin(self, on: bool, boots: bool, events: tuple[Event, ...]) -> None:
        """Start a power transition; the latest request wins."""
        self._transition = _Transition(on=on, at=self._clock() + self.power_delay, boots=boots,
                                       events=events)
        self.settle()

    def settle(self) -> None:
        """Apply a transition whose time has come: power, boot flags, SEL."""
        transition, now = self._transition, self._clock()
        if transition is None or now < transition.at:
            return
        self._on, self._transition = transition.on, None
        flags = self._boot_params[BOOT_FLAGS_PARAM]
        if transition.boots and flags[0] & BOOT_VALID and not flags[0] & BOOT_PERSISTENT:
            self._boot_params[BOOT_FLAGS_PARAM] = bytes([flags[0] & ~BOOT_VALID]) + flags[1:]
        if self.sel is not None:
            when = time.time() - (now - transition.at)
            for event in transition.events:
                self.sel.log(event.sensor_type, event.sensor, event.offset,
                             deassert=event.deassert, event_type=event.event_type,
                             data2=event.data2, data3=event.data3, when=when)

    def sensor_value_locked(self, sensor: ThresholdSensor) -> float | None:
        """What a sensor reads now; None while it has no power."""
        if not (self._on or sensor.standby):
            return None
        if sensor is FAN2 and "fan-failed" in self.faults:
            return 0.0
        return sensor.nominal

    # --- boot options ------------------------------------------------------------------

    @property
    def boot(self) -> BootFlags:
        flags = self.boot_param(BOOT_FLAGS_PARAM) or bytes(5)
        code = (flags[1] >> 2) & 0x0F
        return BootFlags(device=BOOT_DEVICES.get(code, f"device-{code}"),
                         valid=bool(flags[0] & BOOT_VALID),
                         persistent=bool(flags[0] & BOOT_PERSISTENT),
                         efi=bool(flags[0] & BOOT_EFI))

    def set_boot_device(self, device: str, persistent: bool = False, efi: bool = False) -> None:
        """Set the boot flags as a client would ("default" clears the override)."""
        code = BOOT_SELECTORS[device]
        first = 0
        if code:
            first = BOOT_VALID | (BOOT_PERSISTENT if persistent else 0) | (BOOT_EFI if efi else 0)
        self.set_boot_param(BOOT_FLAGS_PARAM, bytes([first, code << 2, 0, 0, 0]))

    def boot_param(self, selector: int) -> bytes | None:
        with self.lock:
            self.settle()
            return self._boot_params.get(selector)

    def set_boot_param(self, selector: int, value: bytes) -> None:
        with self.lock:
            self._boot_params[selector] = value
