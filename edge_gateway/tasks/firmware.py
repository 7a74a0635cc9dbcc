"""firmware.inventory and firmware.update."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edge_gateway.drivers.base import FirmwareComponent, JobState, interface
from edge_gateway.tasks.artifacts import image_url
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edgeplane.protocol import Capability


def firmware_inventory(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    components = interface(ctx.driver, Capability.FIRMWARE).get_firmware()
    return Outcome(changed=False, message=f"{len(components)} components",
                   data={"components": [asdict(c) for c in components]})


def firmware_update(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    """Start SimpleUpdate, follow the BMC's task to its end, verify the version.

    A task that does not finish within ``timeout`` is reported as stalled with the BMC's own
    word for its state: the operator decides whether to reset the BMC (bmc.reset).
    """
    version, timeout = params.get("version"), params["timeout"]
    firmware = interface(ctx.driver, Capability.FIRMWARE)
    component = _find(ctx, firmware.get_firmware(), params.get("component"))
    if version and component and component.version == version:
        return Outcome(changed=False, message=f"{component.name} already at {version}")
    image = image_url(ctx, params)  # fetched into the site's cache only when needed
    job = firmware.start_firmware_update(image, [component.id] if component else None)
    deadline = ctx.monotonic() + timeout
    while job.state == JobState.RUNNING:
        if ctx.monotonic() >= deadline:
            progress = f" at {job.percent}%" if job.percent is not None else ""
            raise ctx.fail("firmware update", f"stalled: not finished after {timeout} s; the "
                           f"BMC's task is {job.bmc_state or 'running'}{progress}")
        ctx.sleep(ctx.machine.poll_interval)
        job = firmware.get_firmware_job(job)
    if job.state != JobState.COMPLETED:
        said = "; ".join(job.messages) or "no message"
        raise ctx.fail("firmware update", f"the BMC's task ended {job.bmc_state}: {said}")
    after = firmware.get_firmware()
    updated = _find(ctx, after, component.id) if component else None
    if version:
        holders = [c for c in ([updated] if updated else after) if c.version == version]
        if not holders:
            seen = updated.version if updated else ", ".join(f"{c.name} {c.version}"
                                                            for c in after)
            raise ctx.fail("firmware update", f"the task completed but the version reads "
                           f"{seen}, not {version}")
    name = updated.name if updated else "firmware"
    new_version = updated.version if updated else version
    return Outcome(changed=True, message=f"{name} updated to {new_version or 'a new version'}",
                   data={"component": updated.id if updated else None,
                         "version": new_version})


MAX_READOUT_COMPONENTS = 10  # components a re-check names (the rest are counted)


def recheck_update(ctx: TaskContext, params: dict[str, Any]) -> Recheck:
    """An update in flight is never started again (a second SimpleUpdate may meet the first
    still running on the BMC): done if the component reads the version the plan names,
    else uncertain with the versions the BMC shows."""
    version = params.get("version")
    components = interface(ctx.driver, Capability.FIRMWARE).get_firmware()
    wanted = _find(ctx, components, params.get("component"))
    shown = [wanted] if wanted else components
    if version and any(c.version == version for c in shown):
        holder = next(c for c in shown if c.version == version)
        return Recheck(done=True, readout=f"{holder.name} reads version {version}",
                       data={"component": holder.id, "version": version})
    names = ", ".join(f"{c.name} {c.version}" for c in shown[:MAX_READOUT_COMPONENTS])
    more = len(shown) - MAX_READOUT_COMPONENTS
    readout = f"firmware reads {names or 'no components'}" + \
        (f" and {more} more" if more > 0 else "")
    if version:
        readout += f", not {version}"
    return Recheck(done=False, readout=readout,
                   data={"components": [asdict(c) for c in shown[:MAX_READOUT_COMPONENTS]]})


def _find(ctx: TaskContext, components: list[FirmwareComponent],
          wanted: str | None) -> FirmwareComponent | None:
    if not wanted:
        return None
    for component in components:
        if wanted in (component.id, component.name) or \
                component.id.rstrip("/").rsplit("/", 1)[-1] == wanted:
            return component
    raise ctx.fail("firmware update", f"no firmware component {wanted!r}; the BMC lists "
                   + ", ".join(c.name for c in components))
