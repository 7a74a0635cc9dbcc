"""``RedfishDriver``: the Driver interface, one concern module per capability group.

``credentials.address`` is the BMC's base URL (``https://10.0.0.11``); ``system_id`` is the
``@odata.id`` of the ComputerSystem to drive, or None for "the only one". Everything is
found by following links from the service root, never by building paths from ids.
"""

from __future__ import annotations

import time
from typing import Any

from edge_gateway.drivers.base import (
    CAPABILITIES_TTL,
    BiosSettings,
    BmcCredentials,
    BootOverride,
    Driver,
    FirmwareComponent,
    FirmwareJob,
    HealthReport,
    LogEntry,
    MachineInfo,
    VirtualMedia,
)
from edge_gateway.drivers.redfish.bios import Bios
from edge_gateway.drivers.redfish.bmc import Bmc
from edge_gateway.drivers.redfish.boot import Boot
from edge_gateway.drivers.redfish.documents import Document, links
from edge_gateway.drivers.redfish.firmware import Firmware
from edge_gateway.drivers.redfish.health import Health
from edge_gateway.drivers.redfish.inventory import Inventory
from edge_gateway.drivers.redfish.logs import Logs
from edge_gateway.drivers.redfish.media import Media
from edge_gateway.drivers.redfish.power import Power
from edge_gateway.drivers.redfish.service import RETRIES, RETRY_DELAY, RedfishService
from edgeplane.protocol import (
    BmcProtocol,
    BootFirmwareMode,
    BootMode,
    BootTarget,
    Capability,
    PowerState,
)


class RedfishDriver(Driver):
    protocol = BmcProtocol.REDFISH.value
    capabilities = frozenset(Capability)

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0,
                 retries: int = RETRIES, retry_delay: float = RETRY_DELAY) -> None:
        super().__init__(credentials, timeout)
        self._service = RedfishService(credentials, timeout, retries, retry_delay)
        self._power = Power(self._service)
        self._boot = Boot(self._service)
        self._media = Media(self._service)
        self._bios = Bios(self._service)
        self._firmware = Firmware(self._service)
        self._inventory = Inventory(self._service)
        self._health = Health(self._service)
        self._logs = Logs(self._service)
        self._bmc = Bmc(self._service)
        self._offered: tuple[float, frozenset[Capability]] | None = None

    def machine_capabilities(self) -> frozenset[Capability]:
        """Read from the BMC (kept for ``CAPABILITIES_TTL``): a link or action missing
        means the capability is (no Bios link: no BIOS; no VirtualMedia: no MEDIA...)."""
        with self._service.call("read capabilities"):
            return self._read_capabilities(self._service.system().json)

    def _read_capabilities(self, system: Document) -> frozenset[Capability]:
        now = time.monotonic()
        if self._offered is not None and now - self._offered[0] < CAPABILITIES_TTL:
            return self._offered[1]
        offered = {Capability.INVENTORY}
        checks = {
            Capability.POWER: lambda: "#ComputerSystem.Reset" in (system.get("Actions") or {}),
            Capability.BOOT: lambda: bool(system.get("Boot")),
            Capability.MEDIA: lambda: self._media.offered(system),
            Capability.BIOS: lambda: self._bios.offered(system),
            Capability.FIRMWARE: self._firmware.offered,
            Capability.HEALTH: lambda: bool(system.get("Status")
                                            or links(system, "Links", "Chassis")),
            Capability.SEL: lambda: self._logs.offered(system),
            Capability.BMC_RESET: lambda: self._bmc.offered(system),
        }
        offered.update(capability for capability, check in checks.items() if check())
        self._offered = (now, frozenset(offered))
        return self._offered[1]

    # --- power ---------------------------------------------------------------------------

    def get_power_state(self) -> PowerState:
        return self._power.get_state()

    def request_power_state(self, state: PowerState) -> None:
        self._power.request_state(state)

    def request_graceful_shutdown(self) -> None:
        self._power.request_graceful_shutdown()

    def request_power_cycle(self) -> None:
        self._power.request_power_cycle()

    # --- boot ----------------------------------------------------------------------------

    def get_boot_override(self) -> BootOverride:
        return self._boot.get_override()

    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        self._boot.set_override(target, mode, firmware_mode)

    # --- virtual media -------------------------------------------------------------------

    def get_virtual_media(self) -> list[VirtualMedia]:
        return self._media.list()

    def insert_media(self, image: str, slot: str | None = None) -> None:
        self._media.insert(image, slot)

    def eject_media(self, slot: str) -> None:
        self._media.eject(slot)

    # --- BIOS ----------------------------------------------------------------------------

    def get_bios(self) -> BiosSettings:
        return self._bios.read()

    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        self._bios.set_pending(attributes)

    # --- firmware ------------------------------------------------------------------------

    def get_firmware(self) -> list[FirmwareComponent]:
        return self._firmware.inventory()

    def start_firmware_update(self, image: str, targets: list[str] | None = None) -> FirmwareJob:
        return self._firmware.start_update(image, targets)

    def get_firmware_job(self, job: FirmwareJob) -> FirmwareJob:
        return self._firmware.follow(job)

    # --- inventory, health, logs, the BMC ------------------------------------------------

    def describe(self) -> MachineInfo:
        """Identify the system; its capabilities are those ``machine_capabilities`` reads."""
        with self._service.call("describe"):
            system = self._service.system()
            return self._inventory.machine_info(system, self._read_capabilities(system.json))

    def collect_inventory(self) -> dict[str, Any]:
        return self._inventory.collect()

    def check_health(self) -> HealthReport:
        return self._health.check()

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        return self._logs.read(limit)

    def clear_sel(self) -> None:
        self._logs.clear()

    def reset_bmc(self) -> None:
        self._bmc.reset()

    def close(self) -> None:
        """Delete the Redfish session (if one was made) and close the HTTP connection."""
        self._offered = None
        self._service.close()

    # --- Redfish only --------------------------------------------------------------------

    def system_ids(self) -> list[str]:
        """The ``@odata.id`` of every ComputerSystem the service lists."""
        with self._service.call("list systems"):
            return self._service.system_paths()
