"""A simulated BMC for the fleet simulator and for tests of the gateway core.

It behaves like a slow, real BMC: a power change is accepted at once but reads back only
after ``power_delay`` seconds, and a "once" boot override is consumed by the next power on.
It can be told to fail (``fail_with``) to exercise error paths. It is never used for a real
site: the config file cannot name it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from edge_gateway.drivers.base import BmcCredentials, BootOverride, Driver, MachineInfo
from edge_gateway.errors import BmcError
from edgeplane.protocol import BootMode, BootTarget, Capability, PowerState


@dataclass
class SimulatedMachine:
    """The state of one simulated server, shared by every driver that talks to it."""

    power: PowerState = PowerState.OFF
    boot: BootOverride = BootOverride(target=None, mode=None)
    power_delay: float = 0.0
    serial: str = "SIM-0001"
    fail_with: str | None = None
    calls: list[str] = field(default_factory=list)
    _pending: tuple[PowerState, float] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def observed_power(self) -> PowerState:
        with self._lock:
            if self._pending and time.monotonic() >= self._pending[1]:
                self.power = self._pending[0]
                self._pending = None
                if self.power == PowerState.ON and self.boot.mode == BootMode.ONCE:
                    self.boot = BootOverride(target=None, mode=None)
            return self.power


class SimulatedDriver(Driver):
    protocol = "simulated"
    capabilities = frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY})

    def __init__(self, credentials: BmcCredentials, machine: SimulatedMachine,
                 timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self.machine = machine

    def _call(self, what: str) -> None:
        self.machine.calls.append(what)
        if self.machine.fail_with:
            raise BmcError(self.address, what, self.machine.fail_with)

    def get_power_state(self) -> PowerState:
        self._call("get_power_state")
        return self.machine.observed_power()

    def request_power_state(self, state: PowerState) -> None:
        self._call(f"request_power_state:{state}")
        with self.machine._lock:
            self.machine._pending = (state, time.monotonic() + self.machine.power_delay)

    def get_boot_override(self) -> BootOverride:
        self._call("get_boot_override")
        return self.machine.boot

    def set_boot_override(self, target: BootTarget, mode: BootMode) -> None:
        self._call(f"set_boot_override:{target}:{mode}")
        self.machine.boot = BootOverride(target=target, mode=mode)

    def describe(self) -> MachineInfo:
        self._call("describe")
        return MachineInfo(protocol=self.protocol, manufacturer="Edgeplane",
                           model="Simulated Server", serial=self.machine.serial,
                           power=self.machine.observed_power(),
                           capabilities=self.capabilities)
