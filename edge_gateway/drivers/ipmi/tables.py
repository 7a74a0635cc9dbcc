"""Translation tables: pyghmi's words and IPMI's numbers <-> Edgeplane's enums and words."""

from __future__ import annotations

from pyghmi.constants import Health

from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, PowerState

# --- power --------------------------------------------------------------------------------

POWER_FROM_PYGHMI = {"on": PowerState.ON, "off": PowerState.OFF}
# "off" is a hard power off (chassis control 0), like Redfish's ForceOff; the graceful kind
# is chassis control 5 (soft off), which needs the OS's cooperation and may never complete.
POWER_TO_PYGHMI = {PowerState.ON: "on", PowerState.OFF: "off"}

# Chassis Control data byte (IPMI 2.0 section 28.3).
POWER_CYCLE, HARD_RESET, SOFT_OFF = 0x02, 0x03, 0x05
# Completion codes with which a BMC says it has no power cycle: invalid command, parameter
# out of range, invalid data field, command disabled. A hard reset stands in for it.
NO_POWER_CYCLE = frozenset({0xC1, 0xC9, 0xCC, 0xD6})
NOT_IN_PRESENT_STATE = 0xD5  # e.g. a power cycle or reset of a machine that is off

# --- boot ---------------------------------------------------------------------------------

# pyghmi's names for setting the boot device. IPMI has no USB device: selector 15 is
# "remotely connected floppy / primary removable media", where BMCs put a USB stick (and
# ipmitool calls it "floppy"). BIOS is "setup": the firmware's setup menu.
BOOT_TO_PYGHMI = {BootTarget.PXE: "network", BootTarget.DISK: "hd", BootTarget.CD: "optical",
                  BootTarget.USB: "usb", BootTarget.BIOS: "setup"}
# Boot device selector (boot flags data 2, bits 5:2) -> target. 3 (disk, safe mode) and
# 4 (diagnostic partition) are none of ours.
BOOT_FROM_SELECTOR = {1: BootTarget.PXE, 2: BootTarget.DISK, 5: BootTarget.CD,
                      6: BootTarget.BIOS, 15: BootTarget.USB}
PERSIST_FROM_MODE = {BootMode.ONCE: False, BootMode.CONTINUOUS: True}
MODE_FROM_PERSIST = {persist: mode for mode, persist in PERSIST_FROM_MODE.items()}
FIRMWARE_FROM_EFI = {True: BootFirmwareMode.UEFI, False: BootFirmwareMode.LEGACY}
BOOT_FLAGS_PARAM = 5
BOOT_VALID, BOOT_PERSISTENT, BOOT_EFI = 0x80, 0x40, 0x20
PARAM_LOCKED = 0x80  # Get System Boot Options: the parameter is invalid or locked

# --- inventory ----------------------------------------------------------------------------

# IANA enterprise numbers of server vendors, to name a manufacturer when the FRU has none.
IANA_VENDORS = {2: "IBM", 9: "Cisco", 11: "Hewlett-Packard", 343: "Intel", 674: "Dell",
                2011: "Huawei", 7244: "Quanta", 10876: "Supermicro", 19046: "Lenovo",
                20301: "IBM", 47196: "Hewlett Packard Enterprise"}
# Get Device ID, "additional device support" bits.
DEVICE_SUPPORT = {0x01: "sensor", 0x02: "sdr_repository", 0x04: "sel", 0x08: "fru_inventory",
                  0x10: "ipmb_event_receiver", 0x20: "ipmb_event_generator", 0x40: "bridge",
                  0x80: "chassis"}
# pyghmi's FRU field names -> (area, our name).
FRU_FIELDS = {
    "Chassis type": ("chassis", "type"),
    "Chassis part number": ("chassis", "part_number"),
    "Chassis serial number": ("chassis", "serial"),
    "chassis_extra": ("chassis", "extra"),
    "Board manufacture date": ("board", "manufactured"),
    "Board manufacturer": ("board", "manufacturer"),
    "Board product name": ("board", "product"),
    "Board serial number": ("board", "serial"),
    "Board model": ("board", "part_number"),
    "Board FRU Id": ("board", "fru_file_id"),
    "board_extra": ("board", "extra"),
    "Manufacturer": ("product", "manufacturer"),
    "Product name": ("product", "name"),
    "Model": ("product", "part_number"),
    "Hardware Version": ("product", "version"),
    "Serial Number": ("product", "serial"),
    "Asset Number": ("product", "asset_tag"),
    "FRU ID": ("product", "fru_file_id"),
    "product_extra": ("product", "extra"),
}

# --- health -------------------------------------------------------------------------------

HEALTH_ORDER = {"ok": 0, "warning": 1, "critical": 2}
# pyghmi's sensor types -> SensorReading.kind; and the component the kind rolls up into.
SENSOR_KINDS = {"Temperature": "temperature", "Fan": "fan", "Voltage": "voltage",
                "Power": "power", "Current": "power", "Power Supply": "power"}
COMPONENTS = {"temperature": "temperatures", "fan": "fans", "voltage": "voltages",
              "power": "power", "other": "other"}
# pyghmi's unit suffixes -> the units the Redfish driver reports (UCUM, as Redfish does).
UNITS_FROM_PYGHMI = {"°C": "Cel", "°F": "[degF]", "RPM": "RPM", "V": "V", "W": "W",
                     "A": "A", "%": "%"}


def health_word(pyghmi_health: int | None) -> str:
    """Our word ("ok", "warning", "critical") for pyghmi's health bits; Failed is critical."""
    if pyghmi_health is None:
        return "unknown"
    if pyghmi_health & (Health.Failed | Health.Critical):
        return "critical"
    return "warning" if pyghmi_health & Health.Warning else "ok"


def worst(healths: list[str]) -> str:
    """The worst of some health words; "unknown" if none is known."""
    known = [h for h in healths if h in HEALTH_ORDER]
    return max(known, key=HEALTH_ORDER.__getitem__) if known else "unknown"
