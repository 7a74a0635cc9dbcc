"""The driver interface: what the gateway asks of any BMC, whatever its protocol.

A driver is created per machine and talks to that machine's BMC only. Every method that
changes something is an "ensure": asking for the state the machine is already in is not an
error and does nothing. Drivers never let a protocol library's exceptions or constants
escape: they raise ``edge_gateway.errors.BmcError`` (or a subclass) and speak the enums of
the wire contract (``edgeplane.protocol``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from edgeplane.protocol import BootMode, BootTarget, Capability, PowerState


@dataclass(frozen=True)
class BmcCredentials:
    """What a driver needs to reach a BMC. Read from the site's config; never sent upstream."""

    address: str
    username: str
    password: str = field(repr=False)
    # Redfish: which ComputerSystem under the service (its @odata.id); None = the only one.
    system_id: str | None = None
    verify_tls: bool = False


@dataclass(frozen=True)
class BootOverride:
    target: BootTarget | None  # None: no override is set, the machine boots normally
    mode: BootMode | None


@dataclass(frozen=True)
class MachineInfo:
    """What the BMC says the machine is."""

    protocol: str
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    power: PowerState | None = None
    capabilities: frozenset[Capability] = frozenset()
    extra: dict[str, str] = field(default_factory=dict)


class Driver(abc.ABC):
    """One machine's BMC, through one protocol."""

    protocol: str
    capabilities: frozenset[Capability]

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout

    @property
    def address(self) -> str:
        return self.credentials.address

    @abc.abstractmethod
    def get_power_state(self) -> PowerState:
        """Read the machine's power state."""

    @abc.abstractmethod
    def request_power_state(self, state: PowerState) -> None:
        """Ask the BMC to move to ``state``; does not wait. The caller reads back."""

    @abc.abstractmethod
    def get_boot_override(self) -> BootOverride:
        """Read the boot source override."""

    @abc.abstractmethod
    def set_boot_override(self, target: BootTarget, mode: BootMode) -> None:
        """Set the boot source override for the next boot (``ONCE``) or every boot."""

    @abc.abstractmethod
    def describe(self) -> MachineInfo:
        """Identify the machine: manufacturer, model, serial, power state, capabilities."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or sockets. Safe to call twice."""
