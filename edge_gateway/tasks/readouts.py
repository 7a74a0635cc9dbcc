"""Tasks that read what a machine is and how it is: inventory, health, the event log."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edge_gateway.drivers.base import interface
from edge_gateway.errors import GatewayError
from edge_gateway.tasks.context import Outcome, TaskContext
from edgeplane.protocol import Capability

SEVERITY = {"ok": 0, "unknown": 0, "warning": 1, "critical": 2}


def inventory_collect(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    inventory = interface(ctx.driver, Capability.INVENTORY).collect_inventory()
    parts = [f"{len(v)} {k}" for k, v in sorted(inventory.items()) if isinstance(v, list)]
    return Outcome(changed=False, message="inventory: " + (", ".join(parts) or "collected"),
                   data=inventory)


def health_check(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    report = interface(ctx.driver, Capability.HEALTH).check_health()
    bad = {**{name: health for name, health in report.components.items()
              if SEVERITY.get(health, 0) > 0},
           **{s.name: s.health for s in report.sensors if SEVERITY.get(s.health, 0) > 0}}
    data = {"health": report.health, "components": report.components,
            "sensors": [asdict(s) for s in report.sensors]}
    fail_on = params["fail_on"]
    if fail_on != "never" and SEVERITY.get(report.health, 0) >= SEVERITY[fail_on]:
        details = ", ".join(f"{k} {v}" for k, v in sorted(bad.items())) or "no detail"
        raise GatewayError(f"BMC {ctx.driver.address}: health is {report.health}: {details}")
    summary = f"health {report.health}"
    if bad:
        summary += ": " + ", ".join(f"{k} {v}" for k, v in sorted(bad.items()))
    return Outcome(changed=False, message=summary, data=data)


def sel_collect(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    entries = interface(ctx.driver, Capability.SEL).read_sel(params["limit"])
    return Outcome(changed=False, message=f"{len(entries)} event log entries",
                   data={"entries": [asdict(e) for e in entries]})


def sel_clear(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    logs = interface(ctx.driver, Capability.SEL)
    before = logs.read_sel(None)
    if not before:
        return Outcome(changed=False, message="event log already empty")
    logs.clear_sel()
    after = logs.read_sel(None)
    # Many BMCs log the clearing itself as the first entry of the new log.
    if len(after) > 1:
        raise ctx.fail("clear event log", f"still holds {len(after)} entries")
    return Outcome(changed=True, message=f"cleared {len(before)} event log entries")
