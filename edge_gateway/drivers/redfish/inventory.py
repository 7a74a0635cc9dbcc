"""Inventory: what the machine is made of, as JSON-ready data.

Read from the raw documents (a few fields of many resources; sushy has no Memory class and
would turn every word into its own enums only for us to turn them back). A section whose
link the BMC does not have, or whose resource it does not serve (404/501), is left out; a
section the BMC fails to serve is named under ``errors`` with what it said, so one broken
sub-resource (sushy-tools' Storage answers 500) does not hide the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from edge_gateway.drivers.base import MachineInfo
from edge_gateway.drivers.interfaces import InventoryInterface
from edge_gateway.drivers.redfish.documents import (
    Document,
    link,
    links,
    status_health,
    status_state,
)
from edge_gateway.drivers.redfish.service import RedfishService, http_detail
from edge_gateway.drivers.redfish.tables import NOT_PRESENT_STATES, POWER_FROM_REDFISH
from edgeplane.protocol import BmcProtocol, Capability

LOG = logging.getLogger(__name__)

Section = list[dict[str, Any]] | dict[str, Any] | None


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields the BMC filled in."""
    return {key: value for key, value in fields.items() if value not in (None, "", [], {})}


def present(document: Document) -> bool:
    return status_state(document) not in NOT_PRESENT_STATES


class RedfishInventory(InventoryInterface):
    """The system and the collections it links to, section by section."""

    _service: RedfishService

    def collect_inventory(self) -> dict[str, Any]:
        with self._service.call("collect inventory"):
            sushy_system = self._service.system()
            system = sushy_system.json
            inventory: dict[str, Any] = {"system": _system_section(system)}
            power = POWER_FROM_REDFISH.get(sushy_system.power_state)
            if power is not None:
                inventory["system"]["power"] = str(power)
            errors: dict[str, str] = {}
            readers: dict[str, Callable[[RedfishService, Document], Section]] = {
                "processors": _processors, "memory": _memory, "nics": _nics,
                "storage": _storage, "bmc": _bmc,
            }
            for name, read in readers.items():
                try:
                    section = read(self._service, system)
                except sushy_exc.AccessError:
                    raise
                except sushy_exc.HTTPError as exc:
                    LOG.warning("BMC %s: inventory section %s failed: %s",
                                self._service.address, name, exc)
                    errors[name] = http_detail(exc)
                    continue
                if section is not None:
                    inventory[name] = section
            if errors:
                inventory["errors"] = errors
            return inventory


def machine_info(system: System, capabilities: frozenset[Capability]) -> MachineInfo:
    extra = {"system_id": system.path, "name": system.name, "uuid": system.uuid}
    return MachineInfo(
        protocol=BmcProtocol.REDFISH.value,
        manufacturer=system.manufacturer,
        model=system.model,
        serial=system.serial_number,
        power=POWER_FROM_REDFISH.get(system.power_state),
        capabilities=capabilities,
        extra={k: str(v) for k, v in extra.items() if v},
    )


# --- sections ----------------------------------------------------------------------------


def _collection(service: RedfishService, system: Document, name: str) -> list[Document] | None:
    members = service.optional_members(link(system, name))
    return None if members is None else [member for member in members if present(member)]


def _processors(service: RedfishService, system: Document) -> Section:
    members = _collection(service, system, "Processors")
    return None if members is None else [compact({
        "id": p.get("Id"), "socket": p.get("Socket"), "type": p.get("ProcessorType"),
        "manufacturer": p.get("Manufacturer"), "model": p.get("Model"),
        "cores": p.get("TotalCores"), "threads": p.get("TotalThreads"),
        "speed_mhz": p.get("OperatingSpeedMHz"), "max_speed_mhz": p.get("MaxSpeedMHz"),
    }) for p in members]


def _memory(service: RedfishService, system: Document) -> Section:
    members = _collection(service, system, "Memory")
    return None if members is None else [compact({
        "id": m.get("Id"), "location": _memory_location(m),
        "capacity_mib": m.get("CapacityMiB"),
        "type": m.get("MemoryDeviceType") or m.get("MemoryType"),
        "speed_mhz": m.get("OperatingSpeedMhz"), "manufacturer": m.get("Manufacturer"),
        "part_number": m.get("PartNumber"), "serial": m.get("SerialNumber"),
    }) for m in members]


def _nics(service: RedfishService, system: Document) -> Section:
    members = _collection(service, system, "EthernetInterfaces")
    return None if members is None else [compact({
        "id": n.get("Id"), "name": n.get("Name"), "mac": n.get("MACAddress"),
        "permanent_mac": n.get("PermanentMACAddress"), "speed_mbps": n.get("SpeedMbps"),
        "link": n.get("LinkStatus"), "enabled": n.get("InterfaceEnabled"),
    }) for n in members]


def _storage(service: RedfishService, system: Document) -> Section:
    """Drives of the Storage controllers, else the devices of SimpleStorage.

    Many BMCs publish the same disks under both: the newer Storage wins.
    """
    controllers = _collection(service, system, "Storage")
    if controllers:
        drives = []
        for controller in controllers:
            for path in links(controller, "Drives"):
                drive = service.optional_json(path)
                if drive is not None and present(drive):
                    drives.append(compact({
                        "controller": controller.get("Id"), "name": drive.get("Name"),
                        "model": drive.get("Model"),
                        "manufacturer": drive.get("Manufacturer"),
                        "serial": drive.get("SerialNumber"),
                        "capacity_bytes": drive.get("CapacityBytes"),
                        "media": drive.get("MediaType"), "protocol": drive.get("Protocol"),
                    }))
        return drives
    simple = _collection(service, system, "SimpleStorage")
    if simple is None:
        return None if controllers is None else []
    return [compact({
        "controller": controller.get("Id"), "name": device.get("Name"),
        "model": device.get("Model"), "manufacturer": device.get("Manufacturer"),
        "capacity_bytes": device.get("CapacityBytes"),
    }) for controller in simple for device in controller.get("Devices") or []
        if isinstance(device, dict) and present(device)]


def _bmc(service: RedfishService, system: Document) -> Section:
    for path in service.manager_paths(system):
        manager = service.optional_json(path)
        if manager is not None:
            return compact({
                "id": manager.get("@odata.id") or path, "model": manager.get("Model"),
                "firmware_version": manager.get("FirmwareVersion"),
                "type": manager.get("ManagerType"), "uuid": manager.get("UUID"),
            })
    return None


def _system_section(system: Document) -> dict[str, Any]:
    processors = system.get("ProcessorSummary") or {}
    memory = system.get("MemorySummary") or {}
    return compact({
        "id": system.get("@odata.id"), "name": system.get("Name"),
        "manufacturer": system.get("Manufacturer"), "model": system.get("Model"),
        "serial": system.get("SerialNumber"), "sku": system.get("SKU"),
        "uuid": system.get("UUID"), "bios_version": system.get("BiosVersion"),
        "memory_gib": memory.get("TotalSystemMemoryGiB"),
        "processor_count": processors.get("Count"), "processor_model": processors.get("Model"),
        "cores": processors.get("CoreCount"),
        "logical_processors": processors.get("LogicalProcessorCount"),
        "health": status_health(system),
    })


def _memory_location(memory: Document) -> str | None:
    label = ((memory.get("Location") or {}).get("PartLocation") or {}).get("ServiceLabel")
    if label:
        return str(label)
    if memory.get("DeviceLocator"):
        return str(memory["DeviceLocator"])
    where = memory.get("MemoryLocation") or {}
    parts = [f"{key.lower()} {where[key]}" for key in ("Socket", "Channel", "Slot")
             if key in where]
    return ", ".join(parts) or None
