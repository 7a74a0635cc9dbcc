"""bmc.reset: restart a wedged BMC and wait until it answers again."""

from __future__ import annotations

from typing import Any

from edge_gateway.drivers.base import interface
from edge_gateway.errors import BmcError
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edgeplane.protocol import Capability


def bmc_reset(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    started = ctx.monotonic()
    interface(ctx.driver, Capability.BMC_RESET).reset_bmc()
    ctx.sleep(ctx.machine.poll_interval)  # let it go down before asking whether it is back

    power = interface(ctx.driver, Capability.POWER)

    def answers() -> bool:
        try:
            power.get_power_state()
        except BmcError:
            return False
        return True

    if not ctx.wait_until(answers, params["timeout"]):
        raise ctx.fail("BMC reset", f"the BMC does not answer {params['timeout']} s after "
                       "its reset")
    return Outcome(changed=True, message=f"BMC reset; answering again after "
                   f"{ctx.monotonic() - started:.0f} s (bmc.reset is not idempotent)")


def recheck_reset(ctx: TaskContext, params: dict[str, Any]) -> Recheck:
    """A reset may or may not have happened: whether the BMC answers now cannot tell which
    (it may be back already, or not yet gone)."""
    try:
        state = interface(ctx.driver, Capability.POWER).get_power_state()
    except BmcError as exc:
        return Recheck(done=False, readout=f"the BMC does not answer: {exc.detail}",
                       data={"answers": False})
    return Recheck(done=False, readout=f"the BMC answers; power is {state}",
                   data={"answers": True, "power": str(state)})
