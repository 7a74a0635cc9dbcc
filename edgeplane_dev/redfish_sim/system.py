"""One ComputerSystem of a simulated BMC: power that changes after a delay, the boot
override, and the BIOS settings object, applied when the host next boots.

A power change is accepted at once and reads back ``power_delay`` seconds later; meanwhile
the system reports ``PoweringOn``/``PoweringOff``. Every boot (power on, restart, cycle)
consumes a "Once" boot override and applies the pending BIOS settings, like a real host
whose firmware reads them at POST. A host whose OS ignores ACPI (``acpi=False``) accepts a
GracefulShutdown and never powers off.

Two vendor differences (docs/vendors.md): ``boot_once_ignored`` (Supermicro) accepts and
reads back a "Once" override, clears it at the next boot, and boots the disk anyway;
``power_on_refused_s`` (iDRAC) answers 409 to a power-on for that long after a power-off.
``boots_from`` records what each boot booted from, for tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgeplane_dev.redfish_sim.replies import RedfishError, bad_value
from edgeplane_dev.redfish_sim.resources import Document, Resources

BOOT_ENABLED = ("Once", "Continuous", "Disabled")
BOOT_MODES = ("UEFI", "Legacy")
# Resets that power on a system that is off.
POWERS_ON = frozenset({"On", "ForceOn", "PushPowerButton", "ForceRestart", "GracefulRestart",
                       "PowerCycle"})
# Properties a client may PATCH on a ComputerSystem, where the mockup has them.
WRITABLE = frozenset({"AssetTag", "IndicatorLED", "LocationIndicatorActive", "Boot"})
BOOT_WRITABLE = frozenset({"BootSourceOverrideTarget", "BootSourceOverrideEnabled",
                           "BootSourceOverrideMode", "UefiTargetBootSourceOverride",
                           "BootNext"})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class _Transition:
    on: bool  # the state it ends in
    at: float  # when it reads back (monotonic)
    boots: bool  # the host boots when it completes


class System:
    def __init__(self, resources: Resources, path: str, clock: Callable[[], float],
                 power_delay: float, acpi: bool,
                 on_event: Callable[[str, str, str], None], boot_once_ignored: bool = False,
                 power_on_refused_s: float = 0.0) -> None:
        self.resources = resources
        self.path = path
        self.clock = clock
        self.power_delay = power_delay
        self.acpi = acpi
        self._on_event = on_event  # (system path, severity, message): the BMC logs it
        self._transition: _Transition | None = None
        document = resources.get_raw(path) or {}
        self.bios_path = resources.link(document, "Bios")
        bios = resources.get_raw(self.bios_path) if self.bios_path else None
        self.settings_path = resources.link(bios, "@Redfish.Settings", "SettingsObject")
        self.boots = 0  # how many times the host booted (tests read it)
        self.boots_from: list[str] = []  # each boot's source: "Cd", "Hdd", "Pxe"...
        self.boot_once_ignored = boot_once_ignored
        self.power_on_refused_s = power_on_refused_s
        self._off_since: float | None = None  # when the last power-off read back
        # Called with each boot's source once the firmware ran (the simulated install).
        self.on_boot: Callable[[str], None] | None = None

    # --- power ---------------------------------------------------------------------

    @property
    def powered(self) -> bool:
        return (self.resources.get_raw(self.path) or {}).get("PowerState") in ("On",
                                                                               "PoweringOff")

    def settle(self) -> None:
        """Complete a power change whose time has come."""
        transition = self._transition
        if transition is None or self.clock() < transition.at:
            return
        self._transition = None
        self._set_power("On" if transition.on else "Off")
        self._off_since = None if transition.on else transition.at
        self._on_event(self.path, "OK", f"System power {'on' if transition.on else 'off'}")
        if transition.boots:
            self._boot()

    def reset(self, body: dict[str, Any], allowed: list[str] | None) -> None:
        kind = body.get("ResetType")
        if not isinstance(kind, str):
            raise RedfishError(400, "ActionParameterMissing",
                               "The action ComputerSystem.Reset requires the parameter "
                               "ResetType.")
        if allowed is not None and kind not in allowed:
            raise bad_value("ResetType", kind, allowed)
        on = self.powered
        if not on and kind in POWERS_ON:
            self._check_power_on_allowed()
        if kind in ("On", "ForceOn") or (kind == "PushPowerButton" and not on):
            if not on:
                self._begin(True, self.power_delay, boots=True)
        elif kind in ("ForceOff",) or (kind == "PushPowerButton" and on):
            if on:
                self._begin(False, self.power_delay, boots=False)
        elif kind == "GracefulShutdown":
            if on and self.acpi:
                self._begin(False, 2 * self.power_delay, boots=False)
        elif kind in ("ForceRestart", "GracefulRestart", "PowerCycle"):
            # The host goes down and comes straight back: it reads On throughout, and its
            # firmware runs (once-overrides, pending BIOS) when the delay is over.
            if on:
                self._on_event(self.path, "OK", f"System reset ({kind})")
                self._transition = _Transition(True, self.clock() + self.power_delay, True)
            else:
                self._begin(True, self.power_delay, boots=True)
        elif kind == "Nmi":
            if not on:
                raise RedfishError(409, "ActionNotSupported",
                                   "An NMI cannot be sent to a system that is off.")
        else:
            raise bad_value("ResetType", kind, allowed)

    @property
    def settles_at(self) -> float | None:
        """When the power change under way completes (clock time), if one is."""
        return None if self._transition is None else self._transition.at

    def _check_power_on_allowed(self) -> None:
        """iDRAC refuses a power-on for about a minute after a power-off (409)."""
        if self._off_since is None or self.power_on_refused_s <= 0:
            return
        left = self._off_since + self.power_on_refused_s - self.clock()
        if left > 0:
            raise RedfishError(409, "ResourceInUse",
                               "The system cannot be powered on yet: it powered off "
                               f"moments ago; retry in {left:.0f} seconds.")

    def _begin(self, on: bool, delay: float, boots: bool) -> None:
        self._transition = _Transition(on, self.clock() + delay, boots)
        if delay > 0:
            self._set_power("PoweringOn" if on else "PoweringOff")
        else:
            self.settle()

    def _set_power(self, state: str) -> None:
        self.resources.edit(self.path)["PowerState"] = state

    def _boot(self) -> None:
        self.boots += 1
        document = self.resources.edit(self.path)
        boot = document.get("Boot") or {}
        enabled = boot.get("BootSourceOverrideEnabled")
        target = boot.get("BootSourceOverrideTarget")
        overridden = enabled in ("Once", "Continuous") and target not in (None, "None")
        source = str(target) if overridden else "Hdd"
        if enabled == "Once":
            boot["BootSourceOverrideEnabled"] = "Disabled"
            boot["BootSourceOverrideTarget"] = "None"
            if self.boot_once_ignored:  # Supermicro: the override is consumed, not obeyed
                source = "Hdd"
        self.boots_from.append(source)
        document["LastResetTime"] = now()
        self._apply_pending_bios()
        if self.on_boot is not None:
            self.on_boot(source)

    def host_reboot(self) -> str | None:
        """The host's OS restarts it (an installer at its end): the firmware runs again,
        as at a reset. What it booted, or None if the host is off."""
        if not self.powered or self._transition is not None:
            return None
        self._on_event(self.path, "OK", "System restarted by its operating system")
        self._boot()
        return self.boots_from[-1]

    # --- PATCH ---------------------------------------------------------------------

    def patch(self, body: dict[str, Any]) -> None:
        document = self.resources.get_raw(self.path) or {}
        for name in body:
            if name not in document:
                raise RedfishError(400, "PropertyUnknown",
                                   f"The property {name} is not in the list of valid "
                                   "properties for the resource.")
            if name not in WRITABLE:
                raise RedfishError(400, "PropertyNotWritable",
                                   f"The property {name} is a read only property and "
                                   "cannot be assigned a value.")
        boot = body.get("Boot")
        if boot is not None:
            self._check_boot(boot, document.get("Boot") or {})
        edited = self.resources.edit(self.path)
        for name, value in body.items():
            if name == "Boot":
                edited["Boot"].update(value)
            else:
                edited[name] = value

    @staticmethod
    def _check_boot(boot: Any, current: Document) -> None:
        if not isinstance(boot, dict):
            raise RedfishError(400, "PropertyValueTypeError",
                               "The value for the property Boot must be an object.")
        for name, value in boot.items():
            if name not in BOOT_WRITABLE or (name not in current
                                             and f"{name}@Redfish.AllowableValues"
                                             not in current):
                raise RedfishError(400, "PropertyUnknown",
                                   f"The property Boot/{name} is not supported by this "
                                   "system.")
            allowed = current.get(f"{name}@Redfish.AllowableValues")
            if name == "BootSourceOverrideEnabled":
                allowed = allowed or list(BOOT_ENABLED)
            elif name == "BootSourceOverrideMode":
                allowed = allowed or list(BOOT_MODES)
            if isinstance(allowed, list) and value not in allowed:
                raise bad_value(f"Boot/{name}", value, allowed)

    # --- BIOS ----------------------------------------------------------------------

    def patch_bios_settings(self, body: dict[str, Any],
                            registry: dict[str, Document] | None) -> None:
        """Write pending attributes, checked like a BMC checks them (registry, else the
        current attributes' names and types); nothing is written if one is wrong."""
        attributes = body.get("Attributes")
        if not isinstance(attributes, dict) or set(body) - {"Attributes"}:
            raise RedfishError(400, "PropertyUnknown",
                               "The BIOS settings object takes only an Attributes object.")
        current = (self.resources.get_raw(self.bios_path or "") or {}).get("Attributes") or {}
        for name, value in attributes.items():
            _check_attribute(name, value, current, registry)
        assert self.settings_path is not None
        settings = self.resources.edit(self.settings_path)
        settings.setdefault("Attributes", {}).update(attributes)
        bios = self.resources.edit(self.bios_path or "")
        marker = bios.get("@Redfish.Settings")
        if isinstance(marker, dict):
            marker["Time"] = now()
            marker["Messages"] = []

    def _apply_pending_bios(self) -> None:
        if not self.bios_path or not self.settings_path:
            return
        settings = self.resources.get_raw(self.settings_path) or {}
        pending = settings.get("Attributes") or {}
        bios = self.resources.edit(self.bios_path)
        current = bios.setdefault("Attributes", {})
        changed = {k: v for k, v in pending.items() if current.get(k) != v}
        current.update(changed)
        self.resources.edit(self.settings_path)["Attributes"] = copy.deepcopy(current)
        bios.pop("ResetBiosToDefaultsPending", None)
        if changed:
            marker = bios.get("@Redfish.Settings")
            if isinstance(marker, dict):
                marker["Messages"] = [{"MessageId": "Base.1.15.Success",
                                       "Message": "Successfully Completed Request"}]
            self._on_event(self.path, "OK", "BIOS settings applied: "
                           + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))


def _check_attribute(name: str, value: Any, current: Document,
                     registry: dict[str, Document] | None) -> None:
    if registry is not None:
        entry = registry.get(name)
        if entry is None:
            raise RedfishError(400, "PropertyUnknown",
                               f"The property {name} is not in the attribute registry.")
        if entry.get("ReadOnly") or entry.get("Immutable"):
            raise RedfishError(400, "PropertyNotWritable",
                               f"The property {name} is a read only property.")
        kind = entry.get("Type")
        if kind == "Enumeration":
            allowed = [v.get("ValueName") for v in entry.get("Value") or []]
            if value not in allowed:
                raise bad_value(name, value, allowed)
        elif kind == "Integer":
            low, high = entry.get("LowerBound"), entry.get("UpperBound")
            if not isinstance(value, int) or isinstance(value, bool) or \
                    (low is not None and value < low) or (high is not None and value > high):
                raise RedfishError(400, "PropertyValueOutOfRange",
                                   f"The value {value!r} for the property {name} is not in "
                                   f"the supported range {low}-{high}.")
        elif kind == "Boolean" and not isinstance(value, bool):
            raise RedfishError(400, "PropertyValueTypeError",
                               f"The value {value!r} for the property {name} must be a "
                               "boolean.")
        elif kind in ("String", "Password") and not isinstance(value, str):
            raise RedfishError(400, "PropertyValueTypeError",
                               f"The value {value!r} for the property {name} must be a "
                               "string.")
        return
    if name not in current:
        raise RedfishError(400, "PropertyUnknown",
                           f"The property {name} is not a BIOS attribute of this system.")
    if type(current[name]) is not type(value):
        raise RedfishError(400, "PropertyValueTypeError",
                           f"The value {value!r} for the property {name} is of a different "
                           "type than the property can accept.")
