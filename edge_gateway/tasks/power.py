"""power.ensure, power.cycle and wait.for."""

from __future__ import annotations

import logging
from typing import Any

from edge_gateway.drivers.base import interface
from edge_gateway.errors import UnsupportedError
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edgeplane.protocol import Capability, PowerState

LOG = logging.getLogger(__name__)


def power_ensure(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    """On, or off (gracefully first if asked, forced when that does not finish in time)."""
    target = PowerState(params["state"])
    power = interface(ctx.driver, Capability.POWER)
    current = power.get_power_state()
    if current == target:
        return Outcome(changed=False, message=f"already {target}")
    graceful_timeout = params.get("graceful_timeout", 0)
    if target == PowerState.OFF and params.get("graceful") and graceful_timeout > 0:
        try:
            power.request_graceful_shutdown()
        except UnsupportedError:
            LOG.info("BMC %s: no graceful shutdown; forcing off", ctx.driver.address)
        else:
            if ctx.wait_power(PowerState.OFF, graceful_timeout):
                return Outcome(changed=True, message="shut down gracefully (was on)")
            LOG.warning("BMC %s: still on %s s after a graceful shutdown; forcing off",
                        ctx.driver.address, graceful_timeout)
            power.request_power_state(PowerState.OFF)
            _wait(ctx, PowerState.OFF)
            return Outcome(changed=True, message=f"forced off: a graceful shutdown did not "
                                                 f"finish in {graceful_timeout} s")
    power.request_power_state(target)
    _wait(ctx, target)
    return Outcome(changed=True, message=f"powered {target} (was {current})")


def power_cycle(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    """Not idempotent: it acts every time it runs, and says so."""
    power = interface(ctx.driver, Capability.POWER)
    if power.get_power_state() == PowerState.OFF:
        power.request_power_state(PowerState.ON)
        how = "was off: powered on"
    else:
        power.request_power_cycle()
        how = "power cycled"
    _wait(ctx, PowerState.ON)
    return Outcome(changed=True, message=f"{how} (power.cycle is not idempotent)")


def recheck_cycle(ctx: TaskContext, params: dict[str, Any]) -> Recheck:
    """A cycle may or may not have happened: the power state cannot tell which."""
    state = interface(ctx.driver, Capability.POWER).get_power_state()
    return Recheck(done=False, readout=f"power is {state}", data={"power": str(state)})


def wait_for(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    target = PowerState(params["power"])
    if not ctx.wait_power(target, params["timeout"]):
        raise ctx.fail(f"wait for power {target}",
                       f"still not {target} after {params['timeout']} s")
    return Outcome(changed=False, message=f"power is {target}")


def _wait(ctx: TaskContext, target: PowerState) -> None:
    timeout = ctx.machine.power_timeout
    if not ctx.wait_power(target, timeout):
        observed = interface(ctx.driver, Capability.POWER).get_power_state()
        raise ctx.fail(f"power {target}", f"still reads {observed} after {timeout:.0f} s")
