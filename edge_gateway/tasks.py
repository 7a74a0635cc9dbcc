"""The tasks a plan step can name, carried out on one machine through its driver.

Every task is an "ensure": it reads the current state first, acts only if it differs, and
declares success only once a read-back agrees. The outcome says whether anything changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_gateway.config import MachineConfig
from edge_gateway.drivers.base import Driver
from edge_gateway.errors import BmcError, GatewayError
from edgeplane.protocol import BootMode, BootTarget, PowerState, task_spec


@dataclass(frozen=True)
class Outcome:
    changed: bool
    message: str


@dataclass(frozen=True)
class TaskContext:
    driver: Driver
    machine: MachineConfig
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic


TaskFunction = Callable[[TaskContext, dict[str, str]], Outcome]


def power_ensure(ctx: TaskContext, params: dict[str, str]) -> Outcome:
    target = PowerState(params["state"])
    current = ctx.driver.get_power_state()
    if current == target:
        return Outcome(changed=False, message=f"already {target}")
    ctx.driver.request_power_state(target)
    deadline = ctx.monotonic() + ctx.machine.power_timeout
    while True:
        ctx.sleep(ctx.machine.poll_interval)
        observed = ctx.driver.get_power_state()
        if observed == target:
            return Outcome(changed=True, message=f"powered {target} (was {current})")
        if ctx.monotonic() > deadline:
            raise BmcError(
                ctx.driver.address, f"power {target}",
                f"still reads {observed} after {ctx.machine.power_timeout:.0f} s",
            )


def boot_override(ctx: TaskContext, params: dict[str, str]) -> Outcome:
    target, mode = BootTarget(params["target"]), BootMode(params["mode"])
    current = ctx.driver.get_boot_override()
    if current.target == target and current.mode == mode:
        return Outcome(changed=False, message=f"already boots {target} ({mode})")
    ctx.driver.set_boot_override(target, mode)
    observed = ctx.driver.get_boot_override()
    if observed.target != target:
        raise BmcError(
            ctx.driver.address, f"boot override {target}",
            f"accepted the request but reads back {observed.target or 'no override'}",
        )
    # Only the target is compared: sushy-tools (and some BMCs) report a "Once" override as
    # "Continuous" right after it is set.
    return Outcome(changed=True, message=f"next boot: {target} ({mode})")


TASK_FUNCTIONS: dict[str, TaskFunction] = {
    "power.ensure": power_ensure,
    "boot.override": boot_override,
}


def run_task(name: str, ctx: TaskContext, params: dict[str, str]) -> Outcome:
    """Validate the parameters against the task's schema, check the driver can do it, run it."""
    spec = task_spec(name)
    if spec.capability not in ctx.driver.capabilities:
        raise GatewayError(
            f"the {ctx.driver.protocol} driver cannot do {name} (needs {spec.capability})"
        )
    return TASK_FUNCTIONS[name](ctx, spec.validate(params))
