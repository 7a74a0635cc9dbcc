"""Which rollouts still need a machine: those with an unfinished execution at its site whose
plan names it. A machine is not removed from under them (``fleet.delete_machine``).

An execution that has not started and has no plan yet (a large rollout renders each later
wave's plans when it dispatches them) does not need it: its plan will be rendered from the
machines there are then. One that was sent without a stored plan is taken to need every
machine of its site.
"""

from __future__ import annotations

from chalicelib.models import Execution, Rollout
from chalicelib.rollouts.states import RolloutState, is_terminal_execution
from edgeplane.protocol import ExecutionState

BATCH = 100  # keys per BatchGetItem


def rollouts_needing(site_id: str, machine_id: str) -> list[str]:
    """Ids of the rollouts that need ``machine_id`` of ``site_id``, sorted."""
    # Running or paused rollouts, and stopped ones whose sites still run a plan.
    condition = (Rollout.state.is_in(RolloutState.RUNNING, RolloutState.PAUSED)
                 | (Rollout.in_flight > 0))
    rollout_ids = [r.rollout_id for r in Rollout.scan(condition, attributes_to_get=[
        "rollout_id"], consistent_read=True)]
    needing = []
    for start in range(0, len(rollout_ids), BATCH):
        keys = [(rollout_id, site_id) for rollout_id in rollout_ids[start:start + BATCH]]
        for execution in Execution.batch_get(keys, consistent_read=True, attributes_to_get=[
                "rollout_id", "site_id", "state", "plan_steps"]):
            if _needs(execution, machine_id):
                needing.append(execution.rollout_id)
    return sorted(needing)


def _needs(execution: Execution, machine_id: str) -> bool:
    if is_terminal_execution(execution.state):
        return False
    if execution.plan_steps is None:
        return execution.state != ExecutionState.QUEUED
    return any(machine_id in (step.get("machines") or []) for step in execution.plan_steps)
