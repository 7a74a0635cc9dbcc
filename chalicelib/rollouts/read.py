"""Reading rollouts and their executions back, as the API shows them."""

from __future__ import annotations

from chalicelib.models import Execution, Rollout


def list_rollouts() -> list[Rollout]:
    return sorted(Rollout.scan(), key=lambda r: r.created_at, reverse=True)


# What the API shows of an execution (not its stored plan).
EXECUTION_FIELDS = ["site_id", "execution_id", "state", "wave", "attempt", "message",
                    "plan_message_id", "not_before", "sent_at", "started_at", "finished_at",
                    "last_seq", "updated_at"]


def executions_of(rollout_id: str, with_machines: bool = False) -> list[Execution]:
    fields = EXECUTION_FIELDS + (["machines", "plan_steps", "result_parts"] if with_machines
                                 else [])
    return list(Execution.query(rollout_id, consistent_read=True, attributes_to_get=fields))


def get_or_none(rollout_id: str) -> Rollout | None:
    try:
        return Rollout.get(rollout_id, consistent_read=True)
    except Rollout.DoesNotExist:
        return None
