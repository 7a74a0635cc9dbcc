"""Moving a rollout on: abort, start the next wave, dispatch, finish.

``policy.py`` decides; this module reads what the decision needs and does it. Progress
advances when results arrive (only when something can move: a wave completed, capacity
freed, a threshold crossed) and on the tick (``tick.py``) that catches timeouts, expiry and
opening windows. One writer at a time advances a rollout: it holds the rollout's lease.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from chalicelib import audit
from chalicelib.clock import Clock
from chalicelib.models import Execution, Rollout, Wave, conditional_write
from chalicelib.publisher import Publisher
from chalicelib.rollouts import dispatch, states, wave_counters
from chalicelib.rollouts.moves import cancel_queued, get_rollout, move_rollout, policy_of
from chalicelib.rollouts.policy import abort_reason
from chalicelib.rollouts.states import RolloutState
from chalicelib.schemas import PolicyIn
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)


DISPATCH_LEASE = 60.0  # s one writer may advance a rollout before another may take over


def advance(rollout_id: str, publisher: Publisher, clock: Clock = time.time,
            lease: str | None = None) -> Rollout:
    """Do whatever can be done now: abort, start the next wave, dispatch, finish.

    One writer at a time does it for a rollout (a lease on the rollout): when a wave ends,
    every ingest batch that finished one of its sites, the tick and the create may all
    want to dispatch the next one, and each would query the queue and race for the same
    claims. One that finds the lease taken asks its holder for one more round instead
    (``advance_wanted``), so nothing it would have done is lost.
    """
    rollout = get_rollout(rollout_id)
    if rollout.state in states.STOPPED_ROLLOUT_STATES:
        cancel_queued(rollout, f"rollout {rollout.state}", clock)
        return rollout
    if rollout.state != RolloutState.RUNNING:
        return rollout
    token = lease or _take_lease(rollout, clock)  # a new rollout is created with its lease
    if token is None:
        return rollout
    try:
        return _advance_holding(rollout, token, publisher, clock)
    except Exception:  # free the rollout for the next writer now, not when the lease ends
        conditional_write(Rollout(rollout_id), [Rollout.lease_until.remove(),
                                                Rollout.lease_token.remove()],
                          Rollout.lease_token == token)
        raise


def _advance_holding(rollout: Rollout, token: str, publisher: Publisher,
                     clock: Clock) -> Rollout:
    rollout_id = rollout.rollout_id
    while True:
        policy = policy_of(rollout)
        go, rollout = _wave_gate(rollout, policy, clock)
        sent = dispatch.send_due(rollout, policy, publisher, clock) if go else 0
        rollout = get_rollout(rollout_id)
        if sent >= dispatch.DISPATCH_ROUND:  # more may be due: keep the lease for another round
            if not conditional_write(rollout, [Rollout.lease_until.set(
                    clock() + DISPATCH_LEASE)], Rollout.lease_token == token):
                return rollout  # taken over (this round took longer than the lease)
            continue
        finish_if_done(rollout, clock)
        if _release_lease(rollout, token):
            return rollout
        rollout = get_rollout(rollout_id)  # asked for another round while dispatching


def _take_lease(rollout: Rollout, clock: Clock) -> str | None:
    """The lease's token, or None (after asking its holder for another round)."""
    now = clock()
    token = uuid.uuid4().hex
    free = Rollout.lease_until.does_not_exist() | (Rollout.lease_until < now)
    if conditional_write(rollout, [Rollout.lease_token.set(token),
                                   Rollout.lease_until.set(now + DISPATCH_LEASE),
                                   Rollout.advance_wanted.remove()], free):
        return token
    if not conditional_write(rollout, [Rollout.advance_wanted.set(True)],
                             Rollout.lease_until >= now):
        return _take_lease(rollout, clock)  # released meanwhile: take it
    return None


def _release_lease(rollout: Rollout, token: str) -> bool:
    """False while another writer asked for a round (the request is then taken)."""
    ours = Rollout.lease_token == token
    if conditional_write(rollout, [Rollout.lease_until.remove(), Rollout.lease_token.remove()],
                         ours & Rollout.advance_wanted.does_not_exist()):
        return True
    return not conditional_write(rollout, [Rollout.advance_wanted.remove()], ours)


def needs_advance(rollout: Rollout, policy: PolicyIn, finished_in: Iterable[Wave]) -> bool:
    """After sites finished (in these waves, with their counters as the batch's counting
    left them, ``bookkeeping.Counted``): can anything move? (Instead of a full advance
    for each batch of results that changes nothing but counters.)"""
    if rollout.state != RolloutState.RUNNING or policy.max_in_flight or policy.max_per_minute:
        return rollout.state == RolloutState.RUNNING  # a place in flight was freed
    return any(int(wave.done) >= int(wave.size) or int(wave.failed) > 0
               for wave in finished_in)


def _wave_gate(rollout: Rollout, policy: PolicyIn, clock: Clock) -> tuple[bool, Rollout]:
    """Abort or step to the next wave as the counters say; (True if dispatch may go on,
    the rollout as it is now)."""
    sizes = [int(size) for size in rollout.waves or []]
    while True:
        current = int(rollout.current_wave)
        if current >= len(sizes):
            return False, rollout
        wave = wave_counters.of(rollout, current)
        if wave is None:  # the create is still writing the rollout's waves
            return False, rollout
        more = int(wave.done) < int(wave.size) or current + 1 < len(sizes)
        reason = more and abort_reason(current, current == 0 and policy.canary is not None,
                                             int(wave.size), int(wave.done), int(wave.failed),
                                             policy)
        if reason:  # a wave that is the last and complete just finishes (failed)
            if move_rollout(rollout, RolloutState.ABORTED, reason, clock=clock):
                cancel_queued(rollout, f"rollout aborted: {reason}", clock)
            return False, rollout
        if int(wave.done) < int(wave.size):
            return True, rollout
        if current + 1 >= len(sizes):
            return False, rollout
        if conditional_write(rollout, [Rollout.current_wave.set(current + 1)],
                             Rollout.current_wave == current):
            audit.record(rollout.rollout_id, audit.WAVE_STARTED,
                         {"wave": current + 1, "size": sizes[current + 1]}, clock())
        rollout = get_rollout(rollout.rollout_id)


def finish_if_done(rollout: Rollout, clock: Clock = time.time) -> RolloutState | None:
    """Succeeded or failed, once every execution is terminal (by the counters)."""
    if rollout.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
        return None
    if int(rollout.done) < int(rollout.total):
        return None
    failed = sum(int(w.failed) for w in wave_counters.all_of(rollout))
    succeeded = all_succeeded(rollout.rollout_id) if not failed else False
    outcome = RolloutState.SUCCEEDED if succeeded else RolloutState.FAILED
    move_rollout(rollout, outcome, clock=clock)
    return outcome


def all_succeeded(rollout_id: str) -> bool:
    """Expired and canceled sites are not failures, but the rollout did not succeed there."""
    return all(e.state == ExecutionState.SUCCEEDED
               for e in Execution.query(rollout_id, attributes_to_get=["site_id", "state"]))
