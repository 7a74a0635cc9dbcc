"""Boot: the boot flags of the system boot options (IPMI 2.0 28.12, 28.13, table 28-14).

The functions run in a worker on a pyghmi ``Command`` (see ``link``); ``IpmiBoot`` runs
each as one call on the BMC's session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.interfaces import BootInterface, BootOverride
from edge_gateway.drivers.ipmi.errors import Refusal
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.tables import (
    BOOT_EFI,
    BOOT_FLAGS_PARAM,
    BOOT_FROM_SELECTOR,
    BOOT_PERSISTENT,
    BOOT_TO_PYGHMI,
    BOOT_VALID,
    FIRMWARE_FROM_EFI,
    MODE_FROM_PERSIST,
    PARAM_LOCKED,
    PERSIST_FROM_MODE,
)
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget

LOG = logging.getLogger(__name__)

NETFN_CHASSIS = 0x00
GET_BOOT_OPTIONS = 0x09


class IpmiBoot(BootInterface):
    """The boot override as the BMC's boot flags."""

    _bmc: Connection

    def get_boot_override(self) -> BootOverride:
        return self._bmc.call("read boot override",
                              lambda cmd: read_boot(cmd, self._bmc.address))

    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        """USB boots as IPMI's "primary removable media", BIOS as "setup". Without
        ``firmware_mode`` the BMC's UEFI/legacy flag is kept."""
        what = f"set boot override {target} ({mode}{f', {firmware_mode}' if firmware_mode else ''})"
        self._bmc.call(what, lambda cmd: set_boot(cmd, target, mode, firmware_mode))


@dataclass(frozen=True)
class BootFlags:
    """Boot flags parameter (IPMI 2.0 table 28-14, parameter 5), whether valid or not."""

    valid: bool
    persistent: bool
    efi: bool
    selector: int  # the boot device selector (data 2, bits 5:2)


def read_boot_flags(cmd: Command) -> BootFlags:
    """Read raw: pyghmi's ``get_bootdev`` hides the EFI bit when no override is valid."""
    data = bytes(cmd.xraw_command(netfn=NETFN_CHASSIS, command=GET_BOOT_OPTIONS,
                                  data=(BOOT_FLAGS_PARAM, 0, 0))["data"])
    # parameter version, parameter selector, then the 5 bytes of the boot flags
    if len(data) < 4 or data[1] & 0x7F != BOOT_FLAGS_PARAM:
        raise Refusal(f"the BMC answered {data.hex() or 'nothing'} for the boot flags")
    first, second = data[2], data[3]
    return BootFlags(valid=bool(first & BOOT_VALID) and not data[1] & PARAM_LOCKED,
                     persistent=bool(first & BOOT_PERSISTENT), efi=bool(first & BOOT_EFI),
                     selector=(second >> 2) & 0x0F)


def read_boot(cmd: Command, address: str) -> BootOverride:
    flags = read_boot_flags(cmd)
    if not flags.valid:
        return BootOverride(target=None, mode=None)
    target = BOOT_FROM_SELECTOR.get(flags.selector)
    if target is None:  # safe mode, diagnostics, selector 0 with the valid bit...
        LOG.warning("BMC %s: boot device selector %s is none of ours; reading it as no "
                    "override", address, flags.selector)
        return BootOverride(target=None, mode=None)
    return BootOverride(target=target, mode=MODE_FROM_PERSIST[flags.persistent],
                        firmware_mode=FIRMWARE_FROM_EFI[flags.efi])


def set_boot(cmd: Command, target: BootTarget, mode: BootMode,
             firmware_mode: BootFirmwareMode | None) -> None:
    """Write the boot flags (pyghmi also stops the BMC's 60 s valid-bit timer first)."""
    if firmware_mode is None:
        # Keep the BIOS/UEFI flag the BMC has: an override without it asks for a legacy
        # BIOS boot, and some BMCs (Supermicro among them) switch to legacy.
        uefi = read_boot_flags(cmd).efi
    else:
        uefi = firmware_mode == BootFirmwareMode.UEFI
    answer = cmd.set_bootdev(BOOT_TO_PYGHMI[target], persist=PERSIST_FROM_MODE[mode],
                             uefiboot=uefi)
    if "error" in answer:
        raise Refusal(str(answer["error"]))
