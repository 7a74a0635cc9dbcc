"""Power: read the state, ask for on / hard off, graceful shutdown, power cycle.

iDRAC answers 409 to a power-on for about a minute after a power-off. A power-on (and a
power cycle, which powers on a machine that is off) is therefore sent again, further apart
each time, until the BMC accepts it or ``power_on_patience`` seconds have passed; then it
fails with what the BMC said.
"""

from __future__ import annotations

import logging
import time

import sushy
from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from edge_gateway.drivers.interfaces import PowerInterface
from edge_gateway.drivers.redfish.documents import Document
from edge_gateway.drivers.redfish.service import RedfishService, Refusal, http_detail
from edge_gateway.drivers.redfish.tables import (
    POWER_CYCLE_RESETS,
    POWER_FROM_REDFISH,
    RESET_FOR,
    SETTLED_OR_ON_THE_WAY,
)
from edgeplane.protocol import PowerState

LOG = logging.getLogger(__name__)

POWER_ON_PATIENCE = 120.0  # seconds a refused (409) power-on is retried
RETRY_FIRST, RETRY_LONGEST = 1.0, 10.0  # seconds between those retries: doubling, capped


class RedfishPower(PowerInterface):
    """Power by ComputerSystem.Reset, checked against the reset types the BMC allows."""

    _service: RedfishService
    power_on_patience: float = POWER_ON_PATIENCE  # a driver may be given its own

    def get_power_state(self) -> PowerState:
        with self._service.call("read power state"):
            return read_power(self._service.system())

    def request_power_state(self, state: PowerState) -> None:
        """Ask for ``state``; no request is sent if the system is there or on its way."""
        with self._service.call(f"power {state}"):
            system = self._service.system()
            if system.power_state in SETTLED_OR_ON_THE_WAY[state]:
                LOG.debug("BMC %s: %s already reads %s", self._service.address, system.path,
                          system.power_state.value)
                return
            patience = self.power_on_patience if state == PowerState.ON else 0.0
            _reset(self._service, system, RESET_FOR[state], patience=patience)

    def request_graceful_shutdown(self) -> None:
        """ResetType GracefulShutdown (ACPI soft off); nothing is sent if already off."""
        with self._service.call("graceful shutdown"):
            system = self._service.system()
            if system.power_state in SETTLED_OR_ON_THE_WAY[PowerState.OFF]:
                LOG.debug("BMC %s: %s already reads %s; no shutdown sent",
                          self._service.address, system.path, system.power_state.value)
                return
            _reset(self._service, system, sushy.ResetType.GRACEFUL_SHUTDOWN)

    def request_power_cycle(self) -> None:
        """PowerCycle where the BMC offers it, else ForceRestart. Not idempotent."""
        with self._service.call("power cycle"):
            # What it allows, not its state: a cycle acts whatever the state.
            system = self._service.system(fresh=False)
            allowed = _allowed(system)
            for reset in POWER_CYCLE_RESETS:
                if reset in allowed:
                    break
            else:
                raise Refusal(_not_offered(POWER_CYCLE_RESETS, allowed))
            if reset != POWER_CYCLE_RESETS[0]:
                LOG.info("BMC %s: %s offers no %s; power cycle by %s", self._service.address,
                         system.path, POWER_CYCLE_RESETS[0].value, reset.value)
            _reset(self._service, system, reset, allowed, self.power_on_patience)


def offered(system: Document) -> bool:
    return "#ComputerSystem.Reset" in (system.get("Actions") or {})


def read_power(system: System) -> PowerState:
    state = POWER_FROM_REDFISH.get(system.power_state)
    if state is None:
        raise Refusal(f"the system reports PowerState {system.json.get('PowerState')!r}, "
                      "not a known power state")
    return state


def _reset(service: RedfishService, system: System, reset: sushy.ResetType,
           allowed: set[sushy.ResetType] | None = None, patience: float = 0.0) -> None:
    """Send the reset; a 409 is sent again until accepted or ``patience`` s have passed."""
    allowed = _allowed(system) if allowed is None else allowed
    if reset not in allowed:
        raise Refusal(_not_offered((reset,), allowed))
    LOG.info("BMC %s: reset %s by %s", service.address, system.path, reset.value)
    deadline, pause = time.monotonic() + patience, RETRY_FIRST
    while True:
        try:
            system.reset_system(reset)
            return
        except sushy_exc.HTTPError as exc:
            if exc.status_code != 409 or patience <= 0:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise Refusal(f"the BMC still refused {reset.value} after {patience:g} s: "
                              f"{http_detail(exc)}") from None
            LOG.warning("BMC %s: %s refused (%s); again in %.1f s", service.address,
                        reset.value, http_detail(exc), min(pause, left))
        service.connector.close()  # no connection kept open while we wait
        time.sleep(min(pause, left))
        pause = min(2 * pause, RETRY_LONGEST)


def _allowed(system: System) -> set[sushy.ResetType]:
    """What ResetType@Redfish.AllowableValues lists (sushy: every type if none)."""
    if not offered(system.json):
        raise Refusal("the system has no ComputerSystem.Reset action")
    return system.get_allowed_reset_system_values()


def _not_offered(wanted: tuple[sushy.ResetType, ...], allowed: set[sushy.ResetType]) -> str:
    names = " or ".join(w.value for w in wanted)
    offered = ", ".join(sorted(v.value for v in allowed)) or "none"
    return f"the BMC does not offer reset type {names}; it offers {offered}"
