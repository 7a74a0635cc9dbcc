"""Translation tables between Redfish's words (and sushy's constants) and Edgeplane's.

sushy's constants appear here and in the modules of this package only; the driver speaks
``edgeplane.protocol`` enums and the value types of ``edge_gateway.drivers.interfaces``.
"""

from __future__ import annotations

import sushy

from edge_gateway.drivers.interfaces import JobState
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, PowerState

# --- power -------------------------------------------------------------------------------

# A transitional state reads as the state being left, so a caller waiting for the new
# state keeps polling until the BMC says it is reached.
POWER_FROM_REDFISH: dict[sushy.PowerState, PowerState] = {
    sushy.PowerState.ON: PowerState.ON,
    sushy.PowerState.OFF: PowerState.OFF,
    sushy.PowerState.POWERING_ON: PowerState.OFF,
    sushy.PowerState.POWERING_OFF: PowerState.ON,
    sushy.PowerState.PAUSED: PowerState.ON,  # powered, execution suspended
}

RESET_FOR: dict[PowerState, sushy.ResetType] = {
    PowerState.ON: sushy.ResetType.ON,
    PowerState.OFF: sushy.ResetType.FORCE_OFF,
}

# Already there, or on the way: asking again is not needed (some BMCs answer it with 409).
SETTLED_OR_ON_THE_WAY: dict[PowerState, frozenset[sushy.PowerState]] = {
    PowerState.ON: frozenset({sushy.PowerState.ON, sushy.PowerState.POWERING_ON}),
    PowerState.OFF: frozenset({sushy.PowerState.OFF, sushy.PowerState.POWERING_OFF}),
}

# A power cycle, best first: a real off-then-on where offered, else a hard restart.
POWER_CYCLE_RESETS: tuple[sushy.ResetType, ...] = (
    sushy.ResetType.POWER_CYCLE,
    sushy.ResetType.FORCE_RESTART,
)

# --- boot --------------------------------------------------------------------------------

BOOT_SOURCE_FOR: dict[BootTarget, sushy.BootSource] = {
    BootTarget.PXE: sushy.BootSource.PXE,
    BootTarget.DISK: sushy.BootSource.HDD,
    BootTarget.CD: sushy.BootSource.CD,
    BootTarget.USB: sushy.BootSource.USB,
    BootTarget.BIOS: sushy.BootSource.BIOS_SETUP,
}

BOOT_TARGET_FROM_REDFISH: dict[sushy.BootSource, BootTarget] = {
    **{source: target for target, source in BOOT_SOURCE_FOR.items()},
    # sushy itself replaces Cd by UsbCd on Supermicro X11/X12 (virtual media is a USB CD there).
    sushy.BootSource.USB_CD: BootTarget.CD,
}

OVERRIDE_ENABLED_FOR: dict[BootMode, sushy.BootSourceOverrideEnabled] = {
    BootMode.ONCE: sushy.BootSourceOverrideEnabled.ONCE,
    BootMode.CONTINUOUS: sushy.BootSourceOverrideEnabled.CONTINUOUS,
}

BOOT_MODE_FROM_REDFISH: dict[sushy.BootSourceOverrideEnabled, BootMode] = {
    enabled: mode for mode, enabled in OVERRIDE_ENABLED_FOR.items()
}

OVERRIDE_MODE_FOR: dict[BootFirmwareMode, sushy.BootSourceOverrideMode] = {
    BootFirmwareMode.UEFI: sushy.BootSourceOverrideMode.UEFI,
    BootFirmwareMode.LEGACY: sushy.BootSourceOverrideMode.LEGACY,
}

FIRMWARE_MODE_FROM_REDFISH: dict[sushy.BootSourceOverrideMode, BootFirmwareMode] = {
    mode: firmware for firmware, mode in OVERRIDE_MODE_FOR.items()
}

# --- the BMC itself ----------------------------------------------------------------------

# Manager.Reset, best first: let the BMC finish what it is doing, else restart it now.
BMC_RESETS: tuple[sushy.ResetType, ...] = (
    sushy.ResetType.GRACEFUL_RESTART,
    sushy.ResetType.FORCE_RESTART,
)

# --- virtual media -----------------------------------------------------------------------

CD_MEDIA_TYPES = frozenset({"CD", "DVD"})

# --- firmware tasks ----------------------------------------------------------------------

# Task.TaskState. Completed covers "with warnings"; Exception, Killed and Cancelled end it
# badly. Any other (or unknown) state is still running: the caller's deadline decides.
JOB_STATE_FROM_TASK: dict[str, str] = {
    "New": JobState.RUNNING,
    "Starting": JobState.RUNNING,
    "Running": JobState.RUNNING,
    "Pending": JobState.RUNNING,
    "Suspended": JobState.RUNNING,
    "Interrupted": JobState.RUNNING,
    "Service": JobState.RUNNING,
    "Stopping": JobState.RUNNING,
    "Cancelling": JobState.RUNNING,
    "Completed": JobState.COMPLETED,
    "Exception": JobState.FAILED,
    "Killed": JobState.FAILED,
    "Cancelled": JobState.FAILED,
}

# --- health and logs ---------------------------------------------------------------------

# Status.Health and LogEntry.Severity share the words OK / Warning / Critical.
HEALTH_FROM_REDFISH: dict[str, str] = {
    "OK": "ok",
    "Warning": "warning",
    "Critical": "critical",
}

HEALTH_ORDER: dict[str, int] = {"unknown": 0, "ok": 0, "warning": 1, "critical": 2}

# Resources that are not there are not judged (an empty DIMM slot is not a fault).
NOT_PRESENT_STATES = frozenset({"Absent", "Disabled", "UnavailableOffline"})


def health_word(value: object) -> str:
    """``"ok"``, ``"warning"``, ``"critical"`` or ``"unknown"`` for a Redfish health word."""
    return HEALTH_FROM_REDFISH.get(value, "unknown") if isinstance(value, str) else "unknown"


def worst(healths: list[str]) -> str:
    """The worst of some health words; "unknown" if none is known."""
    known = [h for h in healths if h != "unknown"]
    return max(known, key=HEALTH_ORDER.__getitem__) if known else "unknown"
