"""The driver interface: what the gateway asks of any BMC, whatever its protocol.

A driver is created per machine and talks to that machine's BMC only. The interface is one
small group of methods per hardware concern (power, boot, media, BIOS, firmware, inventory,
health, logs, the BMC itself), each group tied to a ``Capability``. A driver declares the
capabilities it implements (``capabilities``, known without touching a BMC) and, per
machine, those the BMC really offers (``machine_capabilities()``); a method of a group the
driver does not implement raises ``UnsupportedError`` naming the capability.

Every method that changes something is an "ensure" or a plain request: asking for the state
the machine is already in is not an error. Drivers never let a protocol library's
exceptions or constants escape: they raise ``edge_gateway.errors.BmcError`` (or a subclass)
and speak the enums of the wire contract (``edgeplane.protocol``) and the value types below.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from edge_gateway.errors import UnsupportedError
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, Capability, PowerState


@dataclass(frozen=True)
class BmcCredentials:
    """What a driver needs to reach a BMC. Read from the site's config; never sent upstream."""

    address: str
    username: str
    password: str = field(repr=False)
    # Redfish: which ComputerSystem under the service (its @odata.id); None = the only one.
    system_id: str | None = None
    verify_tls: bool = False


# What a BMC offers changes only with its firmware: drivers read it again after this long.
CAPABILITIES_TTL = 300.0


# --- value types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BootOverride:
    target: BootTarget | None  # None: no override is set, the machine boots normally
    mode: BootMode | None
    firmware_mode: BootFirmwareMode | None = None  # UEFI or legacy, where the BMC says


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


@dataclass(frozen=True)
class VirtualMedia:
    """One virtual media slot of the BMC."""

    slot: str  # the BMC's id of the slot (Redfish: the VirtualMedia resource's @odata.id)
    media_types: tuple[str, ...]  # e.g. ("CD", "DVD") or ("USBStick",)
    inserted: bool
    image: str | None = None


@dataclass(frozen=True)
class BiosAttribute:
    """What the BMC says one BIOS attribute may be (from its attribute registry)."""

    name: str
    type: str  # "Enumeration", "String", "Integer", "Boolean", "Password"
    allowed_values: tuple[str, ...] | None = None
    read_only: bool = False
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class BiosSettings:
    current: dict[str, Any]
    pending: dict[str, Any]  # written, not yet in effect (until the next reset)
    # None: the BMC publishes no registry; attributes are then checked against ``current``
    registry: dict[str, BiosAttribute] | None = None


@dataclass(frozen=True)
class FirmwareComponent:
    id: str  # the BMC's id (Redfish: the FirmwareInventory member's @odata.id)
    name: str
    version: str | None
    updateable: bool = False


class JobState:
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class FirmwareJob:
    """A firmware update the BMC is running; ``monitor`` is how to ask about it again."""

    monitor: str | None
    state: str = JobState.RUNNING
    percent: int | None = None
    bmc_state: str | None = None  # the BMC's own word for the state (e.g. "Running")
    messages: tuple[str, ...] = ()


@dataclass(frozen=True)
class SensorReading:
    name: str
    kind: str  # "temperature", "fan", "voltage", "power", "other"
    value: float | None
    units: str | None
    health: str  # "ok", "warning", "critical", "unknown"


@dataclass(frozen=True)
class HealthReport:
    health: str  # the roll-up: "ok", "warning", "critical", "unknown"
    components: dict[str, str] = field(default_factory=dict)  # e.g. {"processors": "ok"}
    sensors: tuple[SensorReading, ...] = ()


@dataclass(frozen=True)
class LogEntry:
    id: str
    created: str | None
    severity: str  # "ok", "warning", "critical", "unknown"
    message: str


# --- the interface ---------------------------------------------------------------------------


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

    def machine_capabilities(self) -> frozenset[Capability]:
        """What this machine's BMC really offers (may read the BMC). Default: all declared."""
        return self.capabilities

    def _unsupported(self, capability: Capability) -> UnsupportedError:
        return UnsupportedError(f"the {self.protocol} driver has no {capability} capability")

    # --- power (Capability.POWER) ----------------------------------------------------------

    @abc.abstractmethod
    def get_power_state(self) -> PowerState:
        """Read the machine's power state."""

    @abc.abstractmethod
    def request_power_state(self, state: PowerState) -> None:
        """Ask for ON, or a hard OFF; does not wait. The caller reads back."""

    def request_graceful_shutdown(self) -> None:
        """Ask the OS to shut down (ACPI soft off); does not wait; may never complete."""
        raise self._unsupported(Capability.POWER)

    def request_power_cycle(self) -> None:
        """Power off then on again (a hard reset where the BMC has no cycle). Not idempotent."""
        raise self._unsupported(Capability.POWER)

    # --- boot (Capability.BOOT) --------------------------------------------------------------

    @abc.abstractmethod
    def get_boot_override(self) -> BootOverride:
        """Read the boot source override."""

    @abc.abstractmethod
    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        """Boot ``target`` at the next boot (ONCE) or every boot; UEFI/legacy if given."""

    # --- virtual media (Capability.MEDIA) ----------------------------------------------------

    def get_virtual_media(self) -> list[VirtualMedia]:
        raise self._unsupported(Capability.MEDIA)

    def insert_media(self, image: str, slot: str | None = None) -> None:
        """Insert the image (by URL) into ``slot``, or the first slot that takes a CD/DVD."""
        raise self._unsupported(Capability.MEDIA)

    def eject_media(self, slot: str) -> None:
        raise self._unsupported(Capability.MEDIA)

    # --- BIOS (Capability.BIOS) ---------------------------------------------------------------

    def get_bios(self) -> BiosSettings:
        raise self._unsupported(Capability.BIOS)

    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        """Write attributes to the pending settings; they take effect at the next reset."""
        raise self._unsupported(Capability.BIOS)

    # --- firmware (Capability.FIRMWARE) -------------------------------------------------------

    def get_firmware(self) -> list[FirmwareComponent]:
        raise self._unsupported(Capability.FIRMWARE)

    def start_firmware_update(self, image: str, targets: list[str] | None = None) -> FirmwareJob:
        raise self._unsupported(Capability.FIRMWARE)

    def get_firmware_job(self, job: FirmwareJob) -> FirmwareJob:
        raise self._unsupported(Capability.FIRMWARE)

    # --- inventory (Capability.INVENTORY) -----------------------------------------------------

    @abc.abstractmethod
    def describe(self) -> MachineInfo:
        """Identify the machine: manufacturer, model, serial, power state, capabilities."""

    def collect_inventory(self) -> dict[str, Any]:
        """The full inventory as JSON-ready data: system, processors, memory, nics (with
        MACs), storage, bmc (firmware); IPMI: fru and device id. Missing parts are left out."""
        raise self._unsupported(Capability.INVENTORY)

    # --- health (Capability.HEALTH) ------------------------------------------------------------

    def check_health(self) -> HealthReport:
        raise self._unsupported(Capability.HEALTH)

    # --- system event log (Capability.SEL) -----------------------------------------------------

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        """The newest ``limit`` entries (all if None), oldest first."""
        raise self._unsupported(Capability.SEL)

    def clear_sel(self) -> None:
        raise self._unsupported(Capability.SEL)

    # --- the BMC itself (Capability.BMC_RESET) -------------------------------------------------

    def reset_bmc(self) -> None:
        """Restart the BMC (Redfish Manager reset / IPMI cold reset); it is gone for a while."""
        raise self._unsupported(Capability.BMC_RESET)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or sockets. Safe to call twice."""
