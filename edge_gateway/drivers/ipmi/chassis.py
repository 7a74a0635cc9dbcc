"""Power and boot: Chassis Control, Get Chassis Status and the boot flags (IPMI 2.0 28).

Each function runs in a worker on a pyghmi ``Command`` (see ``link``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.base import BootOverride
from edge_gateway.drivers.ipmi.errors import IpmiException, Refusal, completion_code
from edge_gateway.drivers.ipmi.tables import (
    BOOT_EFI,
    BOOT_FLAGS_PARAM,
    BOOT_FROM_SELECTOR,
    BOOT_PERSISTENT,
    BOOT_TO_PYGHMI,
    BOOT_VALID,
    FIRMWARE_FROM_EFI,
    HARD_RESET,
    MODE_FROM_PERSIST,
    NO_POWER_CYCLE,
    NOT_IN_PRESENT_STATE,
    PARAM_LOCKED,
    PERSIST_FROM_MODE,
    POWER_CYCLE,
    POWER_FROM_PYGHMI,
    POWER_TO_PYGHMI,
    SOFT_OFF,
)
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, PowerState

LOG = logging.getLogger(__name__)

NETFN_CHASSIS = 0x00
CHASSIS_CONTROL, GET_BOOT_OPTIONS = 0x02, 0x09


def read_power(cmd: Command) -> PowerState:
    state = cmd.get_power().get("powerstate")
    try:
        return POWER_FROM_PYGHMI[state]
    except KeyError:
        raise Refusal(f"the BMC reports power state {state!r}, not on or off") from None


def request_power(cmd: Command, state: PowerState) -> None:
    """pyghmi reads the state first and sends nothing if the machine is already so."""
    cmd.set_power(POWER_TO_PYGHMI[state])


def request_soft_off(cmd: Command, address: str) -> None:
    """Chassis Control "soft off" (ACPI); nothing is sent if the machine is already off."""
    if read_power(cmd) == PowerState.OFF:
        LOG.debug("BMC %s: already off; no soft off sent", address)
        return
    _chassis_control(cmd, SOFT_OFF)


def power_cycle(cmd: Command, address: str) -> str:
    """Chassis Control "power cycle", or "hard reset" where the BMC has none; says which."""
    try:
        _chassis_control(cmd, POWER_CYCLE)
        return "power cycle"
    except IpmiException as exc:
        code = completion_code(exc)
        if code == NOT_IN_PRESENT_STATE:
            raise Refusal(f"the BMC power cycles only a machine that is on (completion code "
                          f"{code:#04x}: not in present state)") from None
        if code not in NO_POWER_CYCLE:
            raise
        LOG.info("BMC %s refuses a power cycle (completion code %#04x); hard reset instead",
                 address, code)
    _chassis_control(cmd, HARD_RESET)
    return "hard reset"


def _chassis_control(cmd: Command, action: int) -> None:
    cmd.xraw_command(netfn=NETFN_CHASSIS, command=CHASSIS_CONTROL, data=(action,))


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
