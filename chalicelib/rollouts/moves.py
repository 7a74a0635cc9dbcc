"""How an execution and a rollout move: one conditional update along the state table each.

Every change is a conditional update on the exact state it starts from, and its bookkeeping
(the rollout's and the wave's counters, the event log) is done only by the writer whose update
took, so racing writers (a result and the schedule tick, two Lambda retries) neither lose nor
double a change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib import audit
from chalicelib.clock import Clock
from chalicelib.errors import NotFound
from chalicelib.models import (
    Execution,
    Rollout,
    conditional_update,
    conditional_write,
    queue_key,
    too_large,
)
from chalicelib.rollouts import snapshots, states
from chalicelib.rollouts.bookkeeping import IN_FLIGHT, Changes
from chalicelib.rollouts.policy import retry_delay
from chalicelib.rollouts.states import RolloutState
from chalicelib.schemas import PolicyIn
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)


def policy_of(rollout: Rollout) -> PolicyIn:
    return PolicyIn.model_validate(rollout.policy or {})


def get_rollout(rollout_id: str) -> Rollout:
    try:
        return Rollout.get(rollout_id, consistent_read=True)
    except Rollout.DoesNotExist:
        raise NotFound(kind="rollout", id=rollout_id) from None


def transition(execution: Execution, target: ExecutionState, clock: Clock = time.time,
               message: str | None = None, changes: Changes | None = None,
               **fields: Any) -> bool:
    """Move one execution along the state table; False if it cannot (anymore).

    The update is conditional on the state just read, so the source is known exactly and
    the move is counted once: a terminal state adds to the rollout's and the wave's ``done``
    (and ``failed``), leaving sent/running frees a place in flight. With ``changes`` the
    counting and logging wait for the caller's ``changes.flush()`` (a batch of moves);
    without, they are written at once.
    """
    for _ in range(3):
        if execution.state is None:  # only the key is known: read it
            try:
                execution.refresh(consistent_read=True)
            except Execution.DoesNotExist:
                return False
        source = ExecutionState(execution.state)
        if not states.can_move(states.EXECUTION_TRANSITIONS, source, target):
            return False
        now = clock()
        actions = [Execution.state.set(target), Execution.updated_at.set(now)]
        if message is not None:
            actions.append(Execution.message.set(message))
        if source == ExecutionState.QUEUED:
            actions.append(Execution.queue_key.remove())
        if target in states.TERMINAL_EXECUTION_STATES:
            actions.append(Execution.finished_at.set(now))
        actions += [getattr(Execution, name).set(value) for name, value in fields.items()]
        try:
            written = conditional_write(execution, actions, Execution.state == source)
        except PynamoDBException as exc:
            if not too_large(exc) or "machines" in fields:
                raise
            # Full of its machines' progress: they are kept as outcomes, and it moves.
            LOG.warning("execution %s: its machines kept as outcomes to make room to move",
                        execution.execution_id)
            execution.refresh(consistent_read=True)  # every machine, as stored
            fields = {**fields, "machines": snapshots.compacted(
                execution.machine_reports(with_parts=False), now)}
            clear_machines(execution, Execution.state == source)
            continue
        if written:
            execution.state, execution.updated_at = target, now  # what was written
            if message is not None:
                execution.message = message
            if source == ExecutionState.QUEUED:
                execution.queue_key = None
            if target in states.TERMINAL_EXECUTION_STATES:
                execution.finished_at = now
            for name, value in fields.items():
                setattr(execution, name, value)
            _moved(execution, source, target, now, changes)
            return True
        execution.refresh(consistent_read=True)
    return False


def clear_machines(execution: Execution, condition: Any) -> bool:
    """Empty what the execution holds of its machines (if ``condition`` holds): the map
    removed, then set again, empty. In two writes, so that no store that checks the size
    clause by clause (moto does) counts the old map with what replaces it."""
    return conditional_update(execution, [Execution.machines.remove()], condition) and \
        conditional_update(execution, [Execution.machines.set({})], condition)


def _moved(execution: Execution, source: ExecutionState, target: ExecutionState,
           now: float, changes: Changes | None) -> None:
    batch = changes if changes is not None else Changes()
    batch.moved(execution, source, target, now)
    if changes is None:
        batch.flush()


def requeue(execution: Execution, policy: PolicyIn, reason: str,
            clock: Clock = time.time, changes: Changes | None = None) -> bool:
    """Give a retryable failure its next attempt, after the policy's backoff. The next
    attempt is a new execution id: the gateway would only resend a known one's result."""
    source = ExecutionState(execution.state)
    if source not in states.RETRY_SOURCES:
        return False
    attempt = int(execution.attempt) + 1
    now = clock()
    not_before = now + retry_delay(policy, attempt - 1)
    actions = [
        Execution.state.set(ExecutionState.QUEUED), Execution.attempt.set(attempt),
        Execution.execution_id.set(Execution.make_id(execution.rollout_id, execution.site_id,
                                                     attempt)),
        Execution.not_before.set(not_before),
        Execution.queue_key.set(queue_key(int(execution.wave), not_before, execution.site_id)),
        Execution.message.set(f"attempt {attempt - 1} failed, retrying after "
                              f"{not_before - now:.0f} s: {reason}"),
        Execution.updated_at.set(now), Execution.machines.set({}),
        Execution.last_seq.remove(), Execution.started_at.remove(),  # not started yet
        Execution.result_parts.remove(),
    ]
    if not conditional_update(execution, actions, Execution.state == source):
        return False
    _moved(execution, source, ExecutionState.QUEUED, now, changes)
    return True


def move_rollout(rollout: Rollout, target: RolloutState, message: str | None = None,
                 actor: str | None = None, clock: Clock = time.time) -> bool:
    source = RolloutState(rollout.state)
    if not states.can_move(states.ROLLOUT_TRANSITIONS, source, target):
        return False
    now = clock()
    actions = [Rollout.state.set(target), Rollout.updated_at.set(now)]
    if message is not None:
        actions.append(Rollout.message.set(message))
    if not conditional_write(rollout, actions, Rollout.state == source):
        return False
    rollout.state, rollout.updated_at = str(target), now
    if message is not None:
        rollout.message = message
    LOG.info("rollout %s %s -> %s%s", rollout.rollout_id, source, target,
             f": {message}" if message else "")
    audit.record(rollout.rollout_id, audit.ROLLOUT_STATE, {
        "state": str(target), "previous": str(source), "message": message, "actor": actor},
        now)
    return True


def cancel_queued(rollout: Rollout, reason: str, clock: Clock = time.time) -> int:
    canceled = 0
    with Changes() as changes:
        for execution in Execution.queued.query(rollout.rollout_id):
            canceled += transition(execution, ExecutionState.CANCELED, clock, message=reason,
                                   changes=changes)
    return canceled


def in_flight(rollout_id: str) -> Iterable[Execution]:
    return Execution.query(rollout_id, filter_condition=Execution.state.is_in(*IN_FLIGHT))
