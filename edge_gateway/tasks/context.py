"""What a task gets to work with, and what it gives back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_gateway.config import MachineConfig
from edge_gateway.drivers.base import Driver, interface
from edge_gateway.errors import BmcError
from edgeplane.protocol import Capability, PowerState, StepResult

if TYPE_CHECKING:
    from edge_gateway.cache.site import SiteCache


@dataclass(frozen=True)
class Outcome:
    changed: bool
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Recheck:
    """What the BMC shows of a step that was in flight when the gateway stopped, read by
    the task's re-check (``tasks.RECHECKS``) instead of running the step again.

    ``done``: the BMC shows the step's whole effect (e.g. the firmware version it was to
    install), so the step counts as succeeded; otherwise it is uncertain. ``readout``: what
    the BMC shows, in the step's message, for the operator who decides."""

    done: bool
    readout: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class TaskContext:
    """A task reaches the driver's interfaces by capability:
    ``interface(ctx.driver, Capability.BIOS).get_bios()``."""

    driver: Driver
    machine: MachineConfig
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    artifacts: SiteCache | None = None  # the site's artifact cache, if it has one
    # The machine's earlier steps in this plan, as they ended (os.wait_installed finds the
    # reset it follows there).
    earlier: tuple[StepResult, ...] = ()

    def fail(self, what: str, detail: str) -> BmcError:
        """An error about this machine's BMC, in the one format every step error uses."""
        return BmcError(self.driver.address, what, detail)

    def wait_power(self, target: PowerState, timeout: float) -> bool:
        """Poll until the BMC reads ``target``; False if it still does not after ``timeout``."""
        power = interface(self.driver, Capability.POWER)
        deadline = self.monotonic() + timeout
        while True:
            if power.get_power_state() == target:
                return True
            if self.monotonic() >= deadline:
                return False
            self.sleep(self.machine.poll_interval)

    def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = self.monotonic() + timeout
        while not done():
            if self.monotonic() >= deadline:
                return False
            self.sleep(self.machine.poll_interval)
        return True
