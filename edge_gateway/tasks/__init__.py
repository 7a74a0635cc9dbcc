"""The tasks a plan step can name, carried out on one machine through its driver.

A task needs its capability (``task_spec(name).capability``), checked before it runs, and
works through the driver's interfaces, each picked by capability
(``interface(ctx.driver, Capability.POWER)``): a task touches only the interfaces it names,
never the driver's protocol.

Every task reads the current state first, acts only if it differs, and declares success
only once a read-back agrees; the outcome says whether anything changed. The two tasks that
act every time (power.cycle, bmc.reset) say so in their message.

A step in flight when the gateway stopped (``journal``) runs again if its task is an
"ensure": running it again reads first. A task that would act a second time has a re-check
in ``RECHECKS`` instead: it reads what the BMC shows and says whether the step's effect is
there (``Recheck.done``) or cannot be known; it never acts. Every task the contract calls
not idempotent has one; firmware.update and bios.apply (with a reboot) have one too, since
running them again could flash or reboot a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edge_gateway.errors import GatewayError
from edge_gateway.tasks import bios, bmc, boot, firmware, media, power, provision, readouts
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edgeplane.protocol import TASKS, task_spec

TaskFunction = Callable[[TaskContext, dict[str, Any]], Outcome]
# None: the step may simply run again (its parameters make it an "ensure").
RecheckFunction = Callable[[TaskContext, dict[str, Any]], Recheck | None]

TASK_FUNCTIONS: dict[str, TaskFunction] = {
    "power.ensure": power.power_ensure,
    "power.cycle": power.power_cycle,
    "wait.for": power.wait_for,
    "boot.override": boot.boot_override,
    "media.insert": media.media_insert,
    "media.eject": media.media_eject,
    "bios.read": bios.bios_read,
    "bios.apply": bios.bios_apply,
    "firmware.inventory": firmware.firmware_inventory,
    "firmware.update": firmware.firmware_update,
    "inventory.collect": readouts.inventory_collect,
    "health.check": readouts.health_check,
    "sel.collect": readouts.sel_collect,
    "sel.clear": readouts.sel_clear,
    "bmc.reset": bmc.bmc_reset,
    "os.seed": provision.os_seed,
    "os.wait_installed": provision.os_wait_installed,
}
RECHECKS: dict[str, RecheckFunction] = {
    "power.cycle": power.recheck_cycle,
    "bmc.reset": bmc.recheck_reset,
    "firmware.update": firmware.recheck_update,
    "bios.apply": bios.recheck_apply,
    "os.wait_installed": provision.recheck_wait_installed,
}
# Tasks on the gateway itself (gateway.upgrade) are the gateway's (``edge_gateway.upgrade``).
assert set(TASK_FUNCTIONS) == {name for name, spec in TASKS.items() if not spec.on_gateway}, \
    "every machine task of the wire contract has a function"

assert all(name in RECHECKS for name, spec in TASKS.items()
           if not spec.idempotent and not spec.on_gateway), \
    "every task that acts every time is re-checked, never run again, after a restart"


def run_task(name: str, ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    """Validate the parameters against the task's schema, check the driver can do it, run it."""
    spec = task_spec(name)
    if spec.capability is None or spec.capability not in ctx.driver.capabilities:
        raise GatewayError(
            f"the {ctx.driver.protocol} driver cannot do {name} (needs {spec.capability})"
        )
    return TASK_FUNCTIONS[name](ctx, spec.validate(params))


def recheck_task(name: str, ctx: TaskContext, params: dict[str, Any]) -> Recheck | None:
    """What the BMC shows of a step of ``name`` that was in flight when the gateway
    stopped, without acting; None if the step may simply run again."""
    recheck = RECHECKS.get(name)
    if recheck is None:
        return None
    return recheck(ctx, task_spec(name).validate(params))


__all__ = ["Outcome", "Recheck", "TaskContext", "run_task", "recheck_task", "RECHECKS",
           "TASK_FUNCTIONS"]
