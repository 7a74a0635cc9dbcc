"""bios.read and bios.apply.

Attributes are checked against what the BMC publishes (its attribute registry, else the
names and types of the current attributes) before anything is written, and every problem
is reported at once: a typo in a site's overrides never reaches the BMC half-applied.
"""

from __future__ import annotations

from typing import Any

from edge_gateway.drivers.base import BiosAttribute, BiosSettings, interface
from edge_gateway.errors import GatewayError
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edgeplane.protocol import Capability, PowerState


def bios_read(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    bios = interface(ctx.driver, Capability.BIOS).get_bios()
    message = f"{len(bios.current)} attributes"
    if bios.pending:
        message += f", {len(bios.pending)} pending a reboot"
    return Outcome(changed=False, message=message,
                   data={"current": bios.current, "pending": bios.pending})


def bios_apply(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    wanted: dict[str, Any] = params["attributes"]
    settings = interface(ctx.driver, Capability.BIOS)
    bios = settings.get_bios()
    problems = check_attributes(wanted, bios)
    if problems:
        raise GatewayError(f"BMC {ctx.driver.address}: BIOS settings refused before writing: "
                           + "; ".join(problems))
    differs = {k: v for k, v in wanted.items() if bios.current.get(k) != v}
    # A wanted value already in effect, with another value pending (written earlier by
    # someone else), would flip at the next reboot: write the wanted value over it.
    overridden = {k: v for k, v in wanted.items()
                  if k not in differs and k in bios.pending and bios.pending[k] != v}
    if not differs and not overridden:
        return Outcome(changed=False, message=f"all {len(wanted)} attributes already in effect",
                       data={"applied": {}})
    if overridden or any(bios.pending.get(k) != v for k, v in differs.items()):
        settings.set_bios_pending({**differs, **overridden})
        after = settings.get_bios()
        missing = [k for k, v in differs.items()
                   if after.pending.get(k) != v and after.current.get(k) != v]
        stale = [k for k, v in overridden.items() if after.pending.get(k, v) != v]
        if missing or stale:
            raise ctx.fail("BIOS settings", f"accepted but does not show "
                           f"{', '.join(missing + stale)} as pending")
    if not differs:  # only stale pending values were replaced: nothing changes at reboot
        names = ", ".join(f"{k}={v}" for k, v in sorted(overridden.items()))
        return Outcome(changed=True, message=f"in effect; replaced other pending values: "
                       f"{names}", data={"applied": {}, "pending_replaced": overridden})
    names = ", ".join(f"{k}={v}" for k, v in sorted(differs.items()))
    if not params.get("reboot"):
        return Outcome(changed=True, message=f"pending until the next reboot: {names}",
                       data={"pending": differs, "reboot_required": True})
    _reboot(ctx)
    timeout = params["timeout"]
    if not ctx.wait_until(lambda: _in_effect(ctx, wanted), timeout):
        current = settings.get_bios().current
        wrong = {k: current.get(k) for k, v in wanted.items() if current.get(k) != v}
        raise ctx.fail("BIOS settings", f"after the reboot these are not in effect: {wrong}")
    return Outcome(changed=True, message=f"applied and verified after a reboot: {names}",
                   data={"applied": differs})


def recheck_apply(ctx: TaskContext, params: dict[str, Any]) -> Recheck | None:
    """Without ``reboot``, bios.apply compares before it writes: it simply runs again
    (None). With it, the reboot may have happened: done if every value is in effect, else
    uncertain with what is in effect, what is pending, and the power state (running again
    could reboot the machine a second time)."""
    if not params.get("reboot"):
        return None
    wanted: dict[str, Any] = params["attributes"]
    bios = interface(ctx.driver, Capability.BIOS).get_bios()
    wrong = sorted(k for k, v in wanted.items() if bios.current.get(k) != v)
    if not wrong:
        return Recheck(done=True, readout=f"all {len(wanted)} attributes in effect",
                       data={"applied": wanted})
    pending = sorted(k for k in wrong if bios.pending.get(k) == wanted[k])
    power = interface(ctx.driver, Capability.POWER).get_power_state()
    readout = f"not in effect: {', '.join(wrong)}"
    if pending:
        readout += f" (pending a reboot: {', '.join(pending)})"
    return Recheck(done=False, readout=f"{readout}; power is {power}",
                   data={"not_in_effect": wrong, "pending": pending, "power": str(power)})


def check_attributes(wanted: dict[str, Any], bios: BiosSettings) -> list[str]:
    """Every problem with the wanted attributes, e.g. "ProcTurbo='On': not allowed (...)"."""
    problems = []
    for name, value in sorted(wanted.items()):
        problem = _problem(name, value, bios)
        if problem:
            problems.append(f"{name}={value!r}: {problem}")
    return problems


def _problem(name: str, value: Any, bios: BiosSettings) -> str | None:
    if bios.registry is not None:
        spec = bios.registry.get(name)
        return "not an attribute this BMC lists" if spec is None else _check_value(spec, value)
    if name not in bios.current:
        return "not an attribute this BMC lists"
    if type(bios.current[name]) is not type(value):
        return (f"must be a {type(bios.current[name]).__name__} like the current value "
                f"{bios.current[name]!r}")
    return None


def _check_value(spec: BiosAttribute, value: Any) -> str | None:
    if spec.read_only:
        return "read-only"
    if spec.type == "Enumeration":
        if spec.allowed_values is not None and value not in spec.allowed_values:
            return f"not allowed (allowed: {', '.join(spec.allowed_values)})"
    elif spec.type == "Integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if spec.minimum is not None and value < spec.minimum:
            return f"below the minimum {spec.minimum}"
        if spec.maximum is not None and value > spec.maximum:
            return f"above the maximum {spec.maximum}"
    elif spec.type == "Boolean":
        if not isinstance(value, bool):
            return "must be true or false"
    elif not isinstance(value, str):
        return "must be a string"
    return None


def _reboot(ctx: TaskContext) -> None:
    power = interface(ctx.driver, Capability.POWER)
    if power.get_power_state() == PowerState.ON:
        power.request_power_cycle()
    else:
        power.request_power_state(PowerState.ON)
    if not ctx.wait_power(PowerState.ON, ctx.machine.power_timeout):
        raise ctx.fail("reboot for BIOS settings",
                       f"not on again after {ctx.machine.power_timeout:.0f} s")


def _in_effect(ctx: TaskContext, differs: dict[str, Any]) -> bool:
    current = interface(ctx.driver, Capability.BIOS).get_bios().current
    return all(current.get(k) == v for k, v in differs.items())
