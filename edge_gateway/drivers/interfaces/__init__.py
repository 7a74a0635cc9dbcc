"""The hardware interfaces a driver is composed of: one small ABC per concern.

A driver class lists, as its bases, the interfaces it implements (through its protocol's
part for each concern); its ``capabilities`` are derived from them (``implemented``), so a
driver cannot claim a capability it has no methods for. ``INTERFACES`` is the one table of
which interface gives which capability. Each interface's module also holds the value types
its methods speak; every module imports only the wire contract.
"""

from __future__ import annotations

from edge_gateway.drivers.interfaces.bios import BiosAttribute, BiosInterface, BiosSettings
from edge_gateway.drivers.interfaces.bmc import BmcInterface
from edge_gateway.drivers.interfaces.boot import BootInterface, BootOverride
from edge_gateway.drivers.interfaces.firmware import (
    FirmwareComponent,
    FirmwareInterface,
    FirmwareJob,
    JobState,
)
from edge_gateway.drivers.interfaces.health import HealthInterface, HealthReport, SensorReading
from edge_gateway.drivers.interfaces.inventory import InventoryInterface
from edge_gateway.drivers.interfaces.logs import LogEntry, LogsInterface
from edge_gateway.drivers.interfaces.media import MediaInterface, VirtualMedia
from edge_gateway.drivers.interfaces.power import PowerInterface
from edgeplane.protocol import Capability

INTERFACES: dict[Capability, type] = {
    Capability.POWER: PowerInterface,
    Capability.BOOT: BootInterface,
    Capability.MEDIA: MediaInterface,
    Capability.BIOS: BiosInterface,
    Capability.FIRMWARE: FirmwareInterface,
    Capability.INVENTORY: InventoryInterface,
    Capability.HEALTH: HealthInterface,
    Capability.SEL: LogsInterface,
    Capability.BMC_RESET: BmcInterface,
}
assert set(INTERFACES) == set(Capability), "every capability has its interface"

CAPABILITY_OF: dict[type, Capability] = {kind: c for c, kind in INTERFACES.items()}


def implemented(cls: type) -> frozenset[Capability]:
    """The capabilities of the interfaces ``cls`` subclasses."""
    return frozenset(c for c, kind in INTERFACES.items() if issubclass(cls, kind))


__all__ = [
    "CAPABILITY_OF",
    "INTERFACES",
    "BiosAttribute",
    "BiosInterface",
    "BiosSettings",
    "BmcInterface",
    "BootInterface",
    "BootOverride",
    "FirmwareComponent",
    "FirmwareInterface",
    "FirmwareJob",
    "HealthInterface",
    "HealthReport",
    "InventoryInterface",
    "JobState",
    "LogEntry",
    "LogsInterface",
    "MediaInterface",
    "PowerInterface",
    "SensorReading",
    "VirtualMedia",
    "implemented",
]
