"""Boot: the boot source override (target, once or continuous, UEFI or legacy)."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget


@dataclass(frozen=True)
class BootOverride:
    target: BootTarget | None  # None: no override is set, the machine boots normally
    mode: BootMode | None
    firmware_mode: BootFirmwareMode | None = None  # UEFI or legacy, where the BMC says


class BootInterface(abc.ABC):
    """The boot source override (``Capability.BOOT``)."""

    @abc.abstractmethod
    def get_boot_override(self) -> BootOverride:
        """Read the boot source override."""

    @abc.abstractmethod
    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        """Boot ``target`` at the next boot (ONCE) or every boot; UEFI or legacy if given,
        else the BMC's current choice is kept. Idempotent: no error if that override is
        already set."""

    def get_boot_progress(self) -> str | None:
        """What the BMC says of the host's boot, for an operator reading a failure (e.g.
        "BootProgress OSRunning, POST code 0x92"); None if it says nothing."""
        return None
