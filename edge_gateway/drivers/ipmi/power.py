"""Power: Chassis Control and Get Chassis Status (IPMI 2.0 28.2, 28.3).

The functions run in a worker on a pyghmi ``Command`` (see ``link``); ``IpmiPower`` runs
each as one call on the BMC's session.
"""

from __future__ import annotations

import logging

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.interfaces import PowerInterface
from edge_gateway.drivers.ipmi.errors import IpmiException, Refusal, completion_code
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.tables import (
    HARD_RESET,
    NO_POWER_CYCLE,
    NOT_IN_PRESENT_STATE,
    POWER_CYCLE,
    POWER_FROM_PYGHMI,
    POWER_TO_PYGHMI,
    SOFT_OFF,
)
from edgeplane.protocol import PowerState

LOG = logging.getLogger(__name__)

NETFN_CHASSIS = 0x00
CHASSIS_CONTROL = 0x02


class IpmiPower(PowerInterface):
    """The machine's power through the chassis commands."""

    _bmc: Connection

    def get_power_state(self) -> PowerState:
        return self._bmc.call("read power state", read_power)

    def request_power_state(self, state: PowerState) -> None:
        """Ask for ``state`` and return; no error (and no request sent) if already so."""
        self._bmc.call(f"power {state}", lambda cmd: request_power(cmd, state))

    def request_graceful_shutdown(self) -> None:
        """Chassis Control soft off (ACPI); nothing is sent if the machine is already off."""
        self._bmc.call("graceful shutdown",
                       lambda cmd: request_soft_off(cmd, self._bmc.address))

    def request_power_cycle(self) -> None:
        """Chassis Control power cycle; a hard reset where the BMC refuses a cycle (logged).
        Refused for a machine that is off, as IPMI requires. Not idempotent."""
        self._bmc.call("power cycle", lambda cmd: power_cycle(cmd, self._bmc.address))


def read_power(cmd: Command) -> PowerState:
    state = cmd.get_power().get("powerstate")
    try:
        return POWER_FROM_PYGHMI[state]
    except KeyError:
        raise Refusal(f"the BMC reports power state {state!r}, not on or off") from None


def request_power(cmd: Command, state: PowerState) -> None:
    """pyghmi reads the state first and sends nothing if the machine is already so."""
    cmd.set_power(POWER_TO_PYGHMI[state])


def request_soft_off(cmd: Command, address: str) -> None:
    """Chassis Control "soft off" (ACPI); nothing is sent if the machine is already off."""
    if read_power(cmd) == PowerState.OFF:
        LOG.debug("BMC %s: already off; no soft off sent", address)
        return
    _chassis_control(cmd, SOFT_OFF)


def power_cycle(cmd: Command, address: str) -> str:
    """Chassis Control "power cycle", or "hard reset" where the BMC has none; says which."""
    try:
        _chassis_control(cmd, POWER_CYCLE)
        return "power cycle"
    except IpmiException as exc:
        code = completion_code(exc)
        if code == NOT_IN_PRESENT_STATE:
            raise Refusal(f"the BMC power cycles only a machine that is on (completion code "
                          f"{code:#04x}: not in present state)") from None
        if code not in NO_POWER_CYCLE:
            raise
        LOG.info("BMC %s refuses a power cycle (completion code %#04x); hard reset instead",
                 address, code)
    _chassis_control(cmd, HARD_RESET)
    return "hard reset"


def _chassis_control(cmd: Command, action: int) -> None:
    cmd.xraw_command(netfn=NETFN_CHASSIS, command=CHASSIS_CONTROL, data=(action,))
