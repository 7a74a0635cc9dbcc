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


def check_capable(site_id: str, machines: Sequence[Machine],
                  steps: Sequence[dict[str, Any]]) -> None:
    if not machines:
        raise Conflict(f"site {site_id!r} has no machines: declare them "
                       f"(PUT /sites/{site_id}/machines/<id>) or let its gateway report them")
    problems = []
    for machine in machines:
        if machine.capabilities is None:
            continue
        for index, step in enumerate(steps):
            needed = protocol.task_spec(step["task"]).capability
            if needed not in machine.capabilities:
                have = ", ".join(sorted(machine.capabilities)) or "none"
                problems.append(
                    f"site {site_id!r} machine {machine.machine_id!r} cannot run step {index} "
                    f"({step['task']}): it lacks capability {needed.value!r} (it has {have})")
    if problems:
        raise Conflict("; ".join(problems))


def render(rollout_id: str, site_id: str, machines: Sequence[Machine],
           steps: Sequence[dict[str, Any]]) -> protocol.Plan:
    """The plan for one site; raises Conflict if the site cannot run these steps."""
    check_capable(site_id, machines, steps)
    machine_ids = sorted(m.machine_id for m in machines)
    return protocol.Plan(
        site=site_id,
        execution_id=Execution.make_id(rollout_id, site_id),
        rollout_id=rollout_id,
        steps=[protocol.PlanStep(task=step["task"], params=dict(step["params"]),
                                 machines=list(machine_ids)) for step in steps],
    )
