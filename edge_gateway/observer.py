"""Observed state: what one machine's BMC reads now, for the cloud's drift check.

Power and the boot override are read on every machine; BIOS attributes and firmware
versions where the driver has those interfaces. A machine that has the driver's interface
but not the resource (a Redfish BMC without a Bios) reports None there, not an error: the
cloud judges only what was read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_gateway.drivers.base import Driver, interface
from edge_gateway.errors import GatewayError
from edgeplane.protocol import Capability, MachineObservation

LOG = logging.getLogger(__name__)


def observe_machine(machine_id: str, driver: Driver) -> MachineObservation:
    """Read the machine through ``driver`` (closed afterwards)."""
    try:
        power = str(driver.get_power_state())
        boot = driver.get_boot_override()
        found: dict[str, Any] = {}
        if Capability.BIOS in driver.capabilities:
            bios = interface(driver, Capability.BIOS)
            found["bios"] = _optional(lambda: dict(bios.get_bios().current))
        if Capability.FIRMWARE in driver.capabilities:
            firmware = interface(driver, Capability.FIRMWARE)
            found["firmware"] = _optional(lambda: [
                {"id": c.id, "name": c.name, "version": c.version}
                for c in firmware.get_firmware()])
    except GatewayError as exc:
        return MachineObservation(machine=machine_id, error=str(exc))
    finally:
        driver.close()
    boot_state = {} if boot.target is None else {
        "target": str(boot.target), "mode": str(boot.mode) if boot.mode else None}
    return MachineObservation(machine=machine_id, power=power, boot=boot_state, **found)


def _optional(read: Callable[[], Any]) -> Any:
    """A read the machine may not offer (no Bios resource, say): None, not a failure."""
    try:
        return read()
    except GatewayError as exc:
        LOG.info("observing: %s", exc)
        return None
