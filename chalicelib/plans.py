"""Render the one message a site gets for a rollout: the protocol.Plan, steps x machines.

Rendering is also the check that a site can run the rollout at all: a site with no machines,
or a machine whose reported capabilities lack a step's, is refused here, naming the site, the
machine and the task. A machine whose capabilities are not known yet (declared through the
API, never inventoried) is given the benefit of the doubt; the gateway checks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from chalicelib.errors import Conflict
from chalicelib.models import Execution, Machine
from edgeplane import protocol


def select_machines(machines: Sequence[Machine], step: dict[str, Any]) -> list[Machine]:
    """The machines a step applies to at one site (all of them when it selects nothing;
    none for a task on the gateway itself, such as gateway.upgrade)."""
    select = step.get("select") or {}
    needed = protocol.task_spec(step["task"]).capability
    if needed is None:
        return []
    chosen = []
    for machine in machines:
        if select.get("ids") and machine.machine_id not in select["ids"]:
            continue
        if select.get("protocol") and machine.protocol != select["protocol"]:
            continue
        if select.get("machine_class") and machine.machine_class != select["machine_class"]:
            continue
        if select.get("capable") and needed not in (machine.capabilities or ()):
            continue
        labels = machine.label_dict
        if any(labels.get(key) != value for key, value in (select.get("labels") or {}).items()):
            continue
        chosen.append(machine)
    return chosen


def check_capable(site_id: str, machines: Sequence[Machine],
                  steps: Sequence[dict[str, Any]]) -> list[list[Machine]]:
    """Each step's machines at this site; Conflict naming every machine that cannot run one.
    A step on the gateway itself (gateway.upgrade) needs no machine."""
    on_gateway = any(protocol.task_spec(step["task"]).on_gateway for step in steps)
    if not machines and not on_gateway:
        raise Conflict(f"site {site_id!r} has no machines: declare them "
                       f"(PUT /sites/{site_id}/machines/<id>) or let its gateway report them")
    problems, selected = [], []
    for index, step in enumerate(steps):
        needed = protocol.task_spec(step["task"]).capability
        chosen = select_machines(machines, step)
        selected.append(chosen)
        for machine in chosen:  # none for a step on the gateway (needed is None)
            if needed is not None and machine.capabilities is not None and \
                    needed not in machine.capabilities:
                have = ", ".join(sorted(machine.capabilities)) or "none"
                problems.append(
                    f"site {site_id!r} machine {machine.machine_id!r} cannot run step {index} "
                    f"({step['task']}): it lacks capability {needed.value!r} (it has {have})")
    if problems:
        raise Conflict("; ".join(problems))
    if not any(selected) and not on_gateway:
        raise Conflict(f"site {site_id!r}: no machine matches any step's selection")
    return selected


def render(rollout_id: str, site_id: str, machines: Sequence[Machine],
           steps: Sequence[dict[str, Any]]) -> protocol.Plan:
    """The plan for one site; raises Conflict if the site cannot run these steps.

    A step that selects none of this site's machines is left out of its plan; a step on
    the gateway itself names none, and stays.
    """
    selected = check_capable(site_id, machines, steps)
    plan = protocol.Plan(
        site=site_id,
        execution_id=Execution.make_id(rollout_id, site_id),
        rollout_id=rollout_id,
        steps=[protocol.PlanStep(task=step["task"], params=dict(step["params"]),
                                 machines=sorted(m.machine_id for m in chosen))
               for step, chosen in zip(steps, selected, strict=True)
               if chosen or protocol.task_spec(step["task"]).on_gateway],
    )
    size = len(plan.encode())
    if size > PLAN_BYTES:  # the gateway would refuse it: say so now, naming the site
        raise Conflict(f"site {site_id!r}: its plan would be {size} bytes; a gateway takes "
                       f"at most {protocol.MAX_MESSAGE_BYTES}")
    return plan


# What a rendered plan may weigh: the contract's bound, less what dispatch adds: the
# rollout's expiry, the detail and observe flags (under 70 bytes), the site's maintenance
# window (at most 170 bytes, with a zone name of 64 characters) and the signature (170
# bytes: its key id, expiry and value; BENCHMARKS.md, "Plan signatures").
PLAN_BYTES = protocol.MAX_MESSAGE_BYTES - 512
