"""``RedfishDriver``: the driver core composed with one part per concern module.

``credentials.address`` is the BMC's base URL (``https://10.0.0.11``); ``system_id`` is the
``@odata.id`` of the ComputerSystem to drive, or None for "the only one". Everything is
found by following links from the service root, never by building paths from ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_gateway.drivers.base import CAPABILITIES_TTL, BmcCredentials, Driver, MachineInfo
from edge_gateway.drivers.redfish import bios, bmc, boot, firmware, health, logs, media, power
from edge_gateway.drivers.redfish.bios import RedfishBios
from edge_gateway.drivers.redfish.bmc import RedfishBmc
from edge_gateway.drivers.redfish.boot import RedfishBoot
from edge_gateway.drivers.redfish.documents import Document
from edge_gateway.drivers.redfish.firmware import RedfishFirmware
from edge_gateway.drivers.redfish.health import RedfishHealth
from edge_gateway.drivers.redfish.inventory import RedfishInventory, machine_info
from edge_gateway.drivers.redfish.logs import RedfishLogs
from edge_gateway.drivers.redfish.media import RedfishMedia
from edge_gateway.drivers.redfish.power import RedfishPower
from edge_gateway.drivers.redfish.service import RETRIES, RETRY_DELAY, RedfishService
from edgeplane.protocol import BmcProtocol, Capability


class RedfishDriver(RedfishPower, RedfishBoot, RedfishMedia, RedfishBios, RedfishFirmware,
                    RedfishInventory, RedfishHealth, RedfishLogs, RedfishBmc, Driver):
    protocol = BmcProtocol.REDFISH.value

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0,
                 retries: int = RETRIES, retry_delay: float = RETRY_DELAY) -> None:
        super().__init__(credentials, timeout)
        self._service = RedfishService(credentials, timeout, retries, retry_delay)
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
        checks: dict[Capability, Callable[[], bool]] = {
            Capability.POWER: lambda: power.offered(system),
            Capability.BOOT: lambda: boot.offered(system),
            Capability.MEDIA: lambda: media.offered(self._service, system),
            Capability.BIOS: lambda: bios.offered(system),
            Capability.FIRMWARE: lambda: firmware.offered(self._service),
            Capability.INVENTORY: lambda: True,  # the system itself is its inventory
            Capability.HEALTH: lambda: health.offered(system),
            Capability.SEL: lambda: logs.offered(self._service, system),
            Capability.BMC_RESET: lambda: bmc.offered(self._service, system),
        }
        offered = frozenset(capability for capability, check in checks.items()
                            if capability in self.capabilities and check())
        self._offered = (now, offered)
        return offered

    def describe(self) -> MachineInfo:
        """Identify the system; its capabilities are those ``machine_capabilities`` reads."""
        with self._service.call("describe"):
            system = self._service.system()
            return machine_info(system, self._read_capabilities(system.json))

    def close(self) -> None:
        """Delete the Redfish session (if one was made) and close the HTTP connection."""
        self._offered = None
        self._service.close()

    # --- Redfish only --------------------------------------------------------------------

    def system_ids(self) -> list[str]:
        """The ``@odata.id`` of every ComputerSystem the service lists."""
        with self._service.call("list systems"):
            return self._service.system_paths()
