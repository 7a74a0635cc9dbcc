"""Boot source override: target, once/continuous, and UEFI/Legacy where the BMC offers it."""

from __future__ import annotations

import logging
from typing import Any

import sushy

from edge_gateway.drivers.interfaces import BootInterface, BootOverride
from edge_gateway.drivers.redfish.documents import Document
from edge_gateway.drivers.redfish.service import RedfishService, Refusal
from edge_gateway.drivers.redfish.tables import (
    BOOT_MODE_FROM_REDFISH,
    BOOT_SOURCE_FOR,
    BOOT_TARGET_FROM_REDFISH,
    FIRMWARE_MODE_FROM_REDFISH,
    OVERRIDE_ENABLED_FOR,
    OVERRIDE_MODE_FOR,
)
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget

LOG = logging.getLogger(__name__)

_ALLOWED = "@Redfish.AllowableValues"


class RedfishBoot(BootInterface):
    """The ComputerSystem's Boot property, checked against its AllowableValues."""

    _service: RedfishService

    def get_boot_override(self) -> BootOverride:
        with self._service.call("read boot override"):
            system = self._service.system()
            boot = system.boot
            if boot is None or not system.json.get("Boot"):
                raise Refusal("the system has no Boot property")
            firmware_mode = FIRMWARE_MODE_FROM_REDFISH.get(boot.mode) if boot.mode else None
            if (boot.enabled == sushy.BootSourceOverrideEnabled.DISABLED
                    or boot.target in (None, sushy.BootSource.NONE)):
                return BootOverride(target=None, mode=None, firmware_mode=firmware_mode)
            target = BOOT_TARGET_FROM_REDFISH.get(boot.target)
            if target is None:
                # An override we cannot name (UefiHttp, Diags...): reading it as "none"
                # lets a boot.override step replace it.
                LOG.info("BMC %s: boot override target %s has no Edgeplane equivalent",
                         self._service.address, boot.target.value)
                return BootOverride(target=None, mode=None, firmware_mode=firmware_mode)
            # sushy-tools 2.x (fake and libvirt drivers) ignores BootSourceOverrideEnabled
            # and always reports "Continuous": an override set "Once" reads back as
            # CONTINUOUS. The boot.override task therefore compares the target only.
            return BootOverride(target=target, mode=BOOT_MODE_FROM_REDFISH.get(boot.enabled),
                                firmware_mode=firmware_mode)

    def get_boot_progress(self) -> str | None:
        """BootProgress.LastState (and OemLastState), and an OEM POST code where the system
        document has one (``Oem.<vendor>.PostCode`` or ``LastPostCode``)."""
        with self._service.call("read boot progress"):
            document = self._service.system().json
        parts = []
        progress = document.get("BootProgress")
        if isinstance(progress, dict):
            for key in ("LastState", "OemLastState"):
                if isinstance(progress.get(key), str) and progress[key]:
                    parts.append(f"BootProgress {progress[key][:64]}")
        oem = document.get("Oem")
        for vendor in (oem.values() if isinstance(oem, dict) else ()):
            for key in ("PostCode", "LastPostCode"):
                code = vendor.get(key) if isinstance(vendor, dict) else None
                if isinstance(code, str | int) and not isinstance(code, bool):
                    parts.append(f"POST code {str(code)[:16]}")
        return ", ".join(parts) or None

    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        """No PATCH if the override is already so."""
        suffix = f", {firmware_mode}" if firmware_mode else ""
        with self._service.call(f"set boot override {target} ({mode}{suffix})"):
            system = self._service.system()
            document: dict[str, Any] = system.json.get("Boot") or {}
            if not document:
                raise Refusal("the system has no Boot property")
            source, enabled = BOOT_SOURCE_FOR[target], OVERRIDE_ENABLED_FOR[mode]
            override_mode = OVERRIDE_MODE_FOR[firmware_mode] if firmware_mode else None
            boot = system.boot
            if (boot is not None and BOOT_TARGET_FROM_REDFISH.get(boot.target) == target
                    and boot.enabled == enabled
                    and (override_mode is None or boot.mode == override_mode)):
                LOG.debug("BMC %s: boot override already %s %s", self._service.address,
                          source.value, enabled.value)
                return
            _check_allowed(document, "BootSourceOverrideTarget", source.value,
                           f"boot target {source.value} (for {target})")
            _check_allowed(document, "BootSourceOverrideEnabled", enabled.value,
                           f"override mode {enabled.value}")
            if override_mode is not None:
                if ("BootSourceOverrideMode" not in document
                        and "BootSourceOverrideMode" + _ALLOWED not in document):
                    raise Refusal("the BMC does not offer BootSourceOverrideMode: it cannot "
                                  f"choose {firmware_mode} for the override")
                _check_allowed(document, "BootSourceOverrideMode", override_mode.value,
                               f"boot mode {override_mode.value}")
            LOG.info("BMC %s: boot override of %s to %s %s%s", self._service.address,
                     system.path, source.value, enabled.value,
                     f" {override_mode.value}" if override_mode else "")
            # Supermicro accepts a "Once" override and reads it back, then boots the disk
            # anyway; nothing here can tell. The provisioning flow sees it by whether the
            # installer is read from the site cache after the reset (docs/vendors.md).
            system.set_system_boot_options(target=source, enabled=enabled, mode=override_mode)


def offered(system: Document) -> bool:
    return bool(system.get("Boot"))


def _check_allowed(boot: dict[str, Any], name: str, value: str, what: str) -> None:
    """Refuse ``value`` if the BMC lists the values it allows for ``name`` without it."""
    allowed = boot.get(name + _ALLOWED)
    if isinstance(allowed, list) and allowed and value not in allowed:
        raise Refusal(f"the BMC does not offer {what}; {name} allows "
                      f"{', '.join(map(str, allowed))}")
