"""Which state may follow which, for executions and rollouts: one table each.

Every transition in the store is a conditional update whose condition is "the current
state is one of ``sources(target)``", so two writers racing (a late progress report and a
result, two Lambda retries) cannot move a record backwards or out of a terminal state.

Executions may skip states: a gateway can answer before the cloud has recorded that it sent
the plan (queued -> running), or finish before any progress arrives (sent -> succeeded).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from edgeplane.protocol import ExecutionState

S = TypeVar("S", bound=enum.StrEnum)


class RolloutState(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"  # nothing new is dispatched; what runs, runs on
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every site is done, some did not succeed
    ABORTED = "aborted"  # failures passed the threshold: nothing more is dispatched
    CANCELED = "canceled"  # an operator canceled it


TERMINAL_EXECUTION_STATES = frozenset({
    ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.TIMED_OUT,
    ExecutionState.CANCELED, ExecutionState.EXPIRED, ExecutionState.REJECTED,
})
# The outcomes that count against a wave's abort threshold (expired is not the site's fault;
# rejected is: the site's gateway refused the plan, and would refuse it again).
FAILED_EXECUTION_STATES = frozenset({ExecutionState.FAILED, ExecutionState.TIMED_OUT,
                                     ExecutionState.REJECTED})

EXECUTION_TRANSITIONS: Mapping[ExecutionState, frozenset[ExecutionState]] = {
    ExecutionState.QUEUED: frozenset({ExecutionState.SENT, ExecutionState.RUNNING}
                                     | TERMINAL_EXECUTION_STATES),
    ExecutionState.SENT: frozenset({ExecutionState.RUNNING} | TERMINAL_EXECUTION_STATES),
    ExecutionState.RUNNING: TERMINAL_EXECUTION_STATES,
    **{state: frozenset() for state in TERMINAL_EXECUTION_STATES},
}
# A retryable failure sends the execution back to queued for its next attempt instead.
RETRY_SOURCES = (ExecutionState.SENT, ExecutionState.RUNNING)

TERMINAL_ROLLOUT_STATES = frozenset({RolloutState.SUCCEEDED, RolloutState.FAILED,
                                     RolloutState.ABORTED, RolloutState.CANCELED})
# No new dispatch in these; executions already out still report and finish.
STOPPED_ROLLOUT_STATES = frozenset({RolloutState.ABORTED, RolloutState.CANCELED})

ROLLOUT_TRANSITIONS: Mapping[RolloutState, frozenset[RolloutState]] = {
    RolloutState.RUNNING: frozenset({RolloutState.PAUSED} | TERMINAL_ROLLOUT_STATES),
    RolloutState.PAUSED: frozenset({RolloutState.RUNNING, RolloutState.CANCELED,
                                    RolloutState.ABORTED}),
    **{state: frozenset() for state in TERMINAL_ROLLOUT_STATES},
}


def can_move(table: Mapping[S, frozenset[S]], source: S, target: S) -> bool:
    return target in table[source]


def sources(table: Mapping[S, frozenset[S]], target: S) -> list[S]:
    """The states a record must be in for ``target`` to be its next state."""
    return sorted(state for state, targets in table.items() if target in targets)


def is_terminal_execution(state: str) -> bool:
    return state in TERMINAL_EXECUTION_STATES


def rollout_outcome(execution_states: list[str]) -> RolloutState | None:
    """What a rollout becomes once every execution is terminal; None while any is not."""
    if not execution_states or not all(map(is_terminal_execution, execution_states)):
        return None
    if all(state == ExecutionState.SUCCEEDED for state in execution_states):
        return RolloutState.SUCCEEDED
    return RolloutState.FAILED
