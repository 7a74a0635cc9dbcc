"""Inventory: Get Device ID, FRU 0 and the system GUID, as MachineInfo or JSON-ready data.

IPMI knows far less than Redfish: no processors, memory, NICs or storage (FRUs beyond 0
are vendor-specific and mostly describe PSUs and boards), so the inventory is what FRU 0
and the BMC say about themselves.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from pyghmi.ipmi import fru as pyghmi_fru
from pyghmi.ipmi.command import Command

from edge_gateway.drivers.base import MachineInfo
from edge_gateway.drivers.interfaces import InventoryInterface
from edge_gateway.drivers.ipmi.errors import MALFORMED, IpmiException, Refusal
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.power import read_power
from edge_gateway.drivers.ipmi.tables import DEVICE_SUPPORT, FRU_FIELDS, IANA_VENDORS
from edgeplane.protocol import BmcProtocol, Capability, PowerState

LOG = logging.getLogger(__name__)

NETFN_APP = 0x06
GET_DEVICE_ID, GET_SYSTEM_GUID = 0x01, 0x37


class IpmiInventory(InventoryInterface):
    """What FRU 0 and the BMC say about themselves."""

    _bmc: Connection

    def collect_inventory(self) -> dict[str, Any]:
        """{"system", "fru": {"chassis", "board", "product"}, "device_id", "system_guid",
        "bmc": {"firmware", "ipmi_version"}}; parts the BMC does not keep are left out."""
        return self._bmc.call("collect inventory", lambda cmd: collect(cmd, self._bmc.address))


@dataclass(frozen=True)
class DeviceId:
    """Get Device ID's answer (IPMI 2.0 20.1)."""

    device_id: int
    revision: int
    firmware: str
    update_in_progress: bool
    ipmi_version: str
    support: int  # the "additional device support" bits
    manufacturer_id: int
    product_id: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id, "device_revision": self.revision,
            "firmware_revision": self.firmware, "ipmi_version": self.ipmi_version,
            "manufacturer_id": self.manufacturer_id,
            "manufacturer": IANA_VENDORS.get(self.manufacturer_id),
            "product_id": self.product_id,
            "additional_devices": [name for bit, name in DEVICE_SUPPORT.items()
                                   if self.support & bit],
            "firmware_update_in_progress": self.update_in_progress,
        }


def read_device_id(cmd: Command) -> DeviceId:
    data = bytes(cmd.xraw_command(netfn=NETFN_APP, command=GET_DEVICE_ID)["data"])
    if len(data) < 11:
        raise Refusal(f"Get Device ID answered {len(data)} bytes, not at least 11")
    return DeviceId(device_id=data[0], revision=data[1] & 0x0F,
                    firmware=f"{data[2] & 0x7F}.{data[3]:02x}",  # the minor is BCD
                    update_in_progress=bool(data[2] & 0x80),
                    ipmi_version=f"{data[4] & 0x0F}.{data[4] >> 4}",  # BCD, digits swapped
                    support=data[5], manufacturer_id=int.from_bytes(data[6:9], "little"),
                    product_id=int.from_bytes(data[9:11], "little"))


def read_fru0(cmd: Command, address: str) -> dict[str, dict[str, Any]]:
    """FRU 0's areas ("chassis", "board", "product"), or nothing if the BMC keeps none."""
    try:
        info = pyghmi_fru.FRU(ipmicmd=cmd, fruid=0).info or {}
    except (IpmiException, *MALFORMED) as exc:
        LOG.info("BMC %s: no FRU 0 (%s)", address, exc)
        return {}
    areas: dict[str, dict[str, Any]] = {}
    for key, value in info.items():
        area, name = FRU_FIELDS.get(key, ("product", key))
        cleaned = _text(value)
        if cleaned:
            areas.setdefault(area, {})[name] = cleaned
    return areas


def _text(value: Any) -> str | list[str] | None:
    """A FRU field as text: binary fields as hex, extra fields as a list; None if empty."""
    if isinstance(value, list):
        texts = [t for t in map(_text, value) if isinstance(t, str)]
        return texts or None
    if isinstance(value, bytes | bytearray):
        return value.hex() or None
    if isinstance(value, str):
        return value.strip() or None
    return None if value is None else str(value)


def read_guid(cmd: Command) -> str | None:
    answer = cmd.raw_command(netfn=NETFN_APP, command=GET_SYSTEM_GUID)
    data = bytes(answer.get("data", b"")) if "error" not in answer else b""
    return str(uuid.UUID(bytes_le=data)) if len(data) == 16 else None


def describe(cmd: Command, address: str, capabilities: frozenset[Capability]) -> MachineInfo:
    return _machine_info(read_device_id(cmd), read_fru0(cmd, address), read_guid(cmd),
                         read_power(cmd), capabilities)


def collect(cmd: Command, address: str) -> dict[str, Any]:
    """system, fru, device_id, system_guid and bmc; what the BMC does not keep is left out."""
    device, fru, guid = read_device_id(cmd), read_fru0(cmd, address), read_guid(cmd)
    info = _machine_info(device, fru, guid, read_power(cmd), frozenset())
    system = {"manufacturer": info.manufacturer, "model": info.model, "serial": info.serial,
              "uuid": guid, "power": str(info.power) if info.power else None}
    inventory: dict[str, Any] = {
        "system": {key: value for key, value in system.items() if value},
        "device_id": device.as_dict(),
        "bmc": {"firmware": device.firmware, "ipmi_version": device.ipmi_version},
    }
    if fru:
        inventory["fru"] = fru
    if guid:
        inventory["system_guid"] = guid
    return inventory


def _machine_info(device: DeviceId, fru: dict[str, dict[str, Any]], guid: str | None,
                  power: PowerState, capabilities: frozenset[Capability]) -> MachineInfo:
    product, board, chassis = (fru.get(area, {}) for area in ("product", "board", "chassis"))
    extra = {"bmc_firmware": device.firmware, "manufacturer_id": str(device.manufacturer_id),
             "product_id": str(device.product_id)}
    if product.get("part_number"):
        extra["part_number"] = product["part_number"]
    if guid:
        extra["system_guid"] = guid
    return MachineInfo(
        protocol=BmcProtocol.IPMI.value,
        manufacturer=(product.get("manufacturer") or board.get("manufacturer")
                      or IANA_VENDORS.get(device.manufacturer_id)),
        model=product.get("name") or board.get("product") or product.get("part_number"),
        serial=product.get("serial") or board.get("serial") or chassis.get("serial"),
        power=power,
        capabilities=capabilities,
        extra=extra,
    )
