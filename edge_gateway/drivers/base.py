"""The driver core: what every driver is, whatever its protocol and interfaces.

A driver is created per machine and talks to that machine's BMC only. It is composed of
the hardware interfaces it implements (``edge_gateway.drivers.interfaces``: one small ABC
per concern). Power and boot are part of the core: the gateway reads both on every machine.
The others (media, BIOS, firmware, inventory, health, event log, the BMC's reset) are the
bases a driver class adds for what its protocol can do. ``capabilities`` is derived from
those bases, never declared; per machine, ``machine_capabilities()`` says which of them the
BMC really offers.

Callers reach an interface by capability with ``interface(driver, Capability.BIOS)``. Drivers
never let a protocol library's exceptions or constants escape: they raise
``edge_gateway.errors.BmcError`` (or a subclass) and speak the enums of the wire contract
(``edgeplane.protocol``) and the value types of the interfaces (importable from here too).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, overload

from edge_gateway.drivers.interfaces import (
    BiosAttribute,
    BiosInterface,
    BiosSettings,
    BmcInterface,
    BootInterface,
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
    PowerInterface,
    SensorReading,
    VirtualMedia,
    implemented,
)
from edge_gateway.errors import UnsupportedError
from edgeplane.protocol import Capability, PowerState


@dataclass(frozen=True)
class BmcCredentials:
    """What a driver needs to reach a BMC. Read from the site's config; never sent upstream."""

    address: str
    username: str
    password: str = field(repr=False)
    # Redfish: which ComputerSystem under the service (its @odata.id); None = the only one.
    system_id: str | None = None
    # HTTPS BMCs: True checks the certificate against the system's CAs, a path against that
    # CA bundle; False (an explicit opt-out, for self-signed BMCs) does not check it.
    verify_tls: bool | str = True
    # HTTPS BMCs: the SHA-256 fingerprint of the one certificate to accept (``sha256:AB:..``,
    # see ``edge_gateway.fingerprints``). It replaces the checks above (chain, host name):
    # any other certificate is refused.
    tls_fingerprint: str | None = None
    # Redfish: the requests of one driver call share one connection (closed when the call
    # ends); False: a connection per request, for a BMC that mishandles persistent ones.
    keep_alive: bool = True


# What a BMC offers changes only with its firmware: drivers read it again after this long.
CAPABILITIES_TTL = 300.0


@dataclass(frozen=True)
class MachineInfo:
    """What the BMC says the machine is (the short form; see ``collect_inventory``)."""

    protocol: str
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    power: PowerState | None = None
    capabilities: frozenset[Capability] = frozenset()
    extra: dict[str, str] = field(default_factory=dict)


class Driver(PowerInterface, BootInterface):
    """One machine's BMC, through one protocol. A driver class lists its protocol's parts,
    one per interface, before the core: ``class IpmiDriver(IpmiPower, IpmiBoot, ...,
    Driver)``."""

    protocol: ClassVar[str]
    # Derived from the interfaces the class implements (see __init_subclass__).
    capabilities: ClassVar[frozenset[Capability]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "capabilities" in vars(cls):
            raise TypeError(f"{cls.__name__} declares its capabilities; they follow from "
                            "the interfaces it implements")
        cls.capabilities = implemented(cls)

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout

    @property
    def address(self) -> str:
        return self.credentials.address

    def machine_capabilities(self) -> frozenset[Capability]:
        """What this machine's BMC really offers, a subset of ``capabilities`` (may read the
        BMC). Default: all of them."""
        return self.capabilities

    @abc.abstractmethod
    def describe(self) -> MachineInfo:
        """Identify the machine: manufacturer, model, serial, power state, capabilities."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or sockets. Safe to call twice."""


@overload
def interface(driver: Driver, capability: Literal[Capability.POWER]) -> PowerInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.BOOT]) -> BootInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.MEDIA]) -> MediaInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.BIOS]) -> BiosInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.FIRMWARE]) -> FirmwareInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.INVENTORY]) -> InventoryInterface:
    ...
@overload
def interface(driver: Driver, capability: Literal[Capability.HEALTH]) -> HealthInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.SEL]) -> LogsInterface: ...
@overload
def interface(driver: Driver, capability: Literal[Capability.BMC_RESET]) -> BmcInterface: ...


def interface(driver: Driver, capability: Capability) -> object:
    """``driver``'s interface for ``capability`` (``Capability.BIOS``: its
    ``BiosInterface``); ``UnsupportedError`` naming the capability if it has none.

    Decided by the driver's capabilities, not ``isinstance``: the driver may be wrapped (the
    gateway paces every call to a BMC), and its capabilities are those of its interfaces.
    The interface is the driver itself, so every call still goes through the wrapper.
    """
    if capability not in driver.capabilities:
        raise UnsupportedError(f"the {driver.protocol} driver has no {capability} capability")
    return driver


__all__ = [
    "CAPABILITIES_TTL",
    "BiosAttribute",
    "BiosSettings",
    "BmcCredentials",
    "BootOverride",
    "Driver",
    "FirmwareComponent",
    "FirmwareJob",
    "HealthReport",
    "JobState",
    "LogEntry",
    "MachineInfo",
    "SensorReading",
    "VirtualMedia",
    "interface",
]
