"""boot.override."""

from __future__ import annotations

from typing import Any

from edge_gateway.drivers.base import interface
from edge_gateway.tasks.context import Outcome, TaskContext
from edgeplane.protocol import BootFirmwareMode, BootMode, BootTarget, Capability


def boot_override(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    target, mode = BootTarget(params["target"]), BootMode(params["mode"])
    firmware_mode = (BootFirmwareMode(params["firmware_mode"])
                     if params.get("firmware_mode") else None)
    boot = interface(ctx.driver, Capability.BOOT)
    current = boot.get_boot_override()
    if (current.target == target and current.mode == mode
            and firmware_mode in (None, current.firmware_mode)):
        return Outcome(changed=False, message=f"already boots {target} ({mode})")
    if firmware_mode:
        boot.set_boot_override(target, mode, firmware_mode)
    else:
        boot.set_boot_override(target, mode)
    observed = boot.get_boot_override()
    if observed.target != target:
        raise ctx.fail(f"boot override {target}",
                       f"accepted the request but reads back {observed.target or 'no override'}")
    if firmware_mode and observed.firmware_mode not in (None, firmware_mode):
        raise ctx.fail(f"boot override {target} ({firmware_mode})",
                       f"reads back boot mode {observed.firmware_mode}")
    # The mode is not compared: sushy-tools (and some BMCs) report a "Once" override as
    # "Continuous" right after it is set.
    suffix = f", {firmware_mode}" if firmware_mode else ""
    return Outcome(changed=True, message=f"next boot: {target} ({mode}{suffix})")
