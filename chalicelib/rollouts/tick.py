"""Every minute: what no result triggers (timeouts, expiry, windows that opened), and a
recount of counters a crash may have left behind."""

from __future__ import annotations

import logging
import time
from collections import Counter

from chalicelib.clock import Clock
from chalicelib.models import Execution, Rollout, Site, Wave, conditional_write
from chalicelib.publisher import Publisher
from chalicelib.rollouts import states, wave_counters
from chalicelib.rollouts.advance import advance
from chalicelib.rollouts.bookkeeping import IN_FLIGHT, Changes
from chalicelib.rollouts.moves import in_flight, policy_of, requeue, transition
from chalicelib.rollouts.states import RolloutState
from chalicelib.schemas import PolicyIn
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)


RECOUNT_QUIET = 60.0  # s without a move before a rollout's counters may be recounted


def tick(publisher: Publisher, clock: Clock = time.time) -> dict[str, int]:
    """Every minute: time out, expire and advance every rollout still moving."""
    counts = {"rollouts": 0, "timed_out": 0, "expired": 0, "failed": 0}
    live = Rollout.scan(Rollout.state.is_in(RolloutState.RUNNING, RolloutState.PAUSED))
    for rollout in live:
        counts["rollouts"] += 1
        try:
            reconcile(rollout, clock)
            timed_out, expired = check_deadlines(rollout, clock)
            counts["timed_out"] += timed_out
            counts["expired"] += expired
            advance(rollout.rollout_id, publisher, clock)
        except Exception:  # one rollout's failure must not hold up the others
            LOG.exception("tick: rollout %s failed; the next tick tries again",
                          rollout.rollout_id)
            counts["failed"] += 1
    return counts


def reconcile(rollout: Rollout, clock: Clock = time.time) -> bool:
    """Recount the counters from the executions themselves; False if it was too early.

    Counters move after the moves they count, once per batch (``bookkeeping.py``); a crash in
    between loses those ADDs. The tick recounts every live rollout (one query of its
    executions), and so does a duplicate report of an execution already terminal, so a lost
    ADD neither leaves a rollout running forever nor holds a wave. A recount while a batch
    is between its moves and its counters would count those moves twice, so it waits until
    no execution of the rollout changed for ``RECOUNT_QUIET`` seconds: a rollout held up by
    a lost count is quiet. Nor is a rollout recounted while a writer holds its lease (a
    dispatch round, or the create writing its executions) or before all its executions
    exist: counting a half-written rollout would zero the counts the create wrote.
    """
    now = clock()
    if now - max(float(rollout.moved_at or 0), float(rollout.created_at or 0)) < RECOUNT_QUIET \
            or float(rollout.lease_until or 0) > now:
        return False  # known without reading the executions
    executions = list(Execution.query(
        rollout.rollout_id, consistent_read=True,
        attributes_to_get=["site_id", "state", "wave", "updated_at"]))
    latest = max((float(e.updated_at or 0) for e in executions), default=0.0)
    if now - latest < RECOUNT_QUIET or len(executions) < int(rollout.total):
        return False
    done = in_flight = 0
    by_state = Counter(str(e.state) for e in executions)
    wave_done: dict[int, int] = {}
    wave_failed: dict[int, int] = {}
    for execution in executions:
        wave = int(execution.wave or 0)
        if execution.state in states.TERMINAL_EXECUTION_STATES:
            done += 1
            wave_done[wave] = wave_done.get(wave, 0) + 1
            if execution.state in states.FAILED_EXECUTION_STATES:
                wave_failed[wave] = wave_failed.get(wave, 0) + 1
        elif execution.state in IN_FLIGHT:
            in_flight += 1
    stored = {k: int(v) for k, v in (rollout.state_counts.as_dict()
                                     if rollout.state_counts else {}).items() if int(v)}
    waves = wave_counters.all_of(rollout)
    waves_wrong = [wave for wave in waves if (int(wave.done), int(wave.failed)) != (
        wave_done.get(int(wave.wave), 0), wave_failed.get(int(wave.wave), 0))]
    on_rollout = wave_counters.on_rollout(rollout)
    if (done, in_flight, dict(by_state)) != (int(rollout.done), int(rollout.in_flight),
                                             stored) or (on_rollout and waves_wrong):
        LOG.warning("rollout %s: counters were done=%s in_flight=%s %s, recounted %s, %s "
                    "and %s", rollout.rollout_id, rollout.done, rollout.in_flight, stored,
                    done, in_flight, dict(by_state))
        conditional_write(Rollout(rollout.rollout_id), [
            Rollout.done.set(done), Rollout.in_flight.set(in_flight),
            Rollout.state_counts.set(dict(by_state)),
            *(wave_counters.setting(wave_done, wave_failed, len(waves)) if on_rollout
              else [])])
    for stored_wave in [] if on_rollout else waves_wrong:
        index = int(stored_wave.wave)
        stored_wave.update(actions=[Wave.done.set(wave_done.get(index, 0)),
                                    Wave.failed.set(wave_failed.get(index, 0))])
    return True


def check_deadlines(rollout: Rollout, clock: Clock = time.time) -> tuple[int, int]:
    """Time out sites that took too long; expire those that never started before expiry.

    A site that is offline with the plan waiting for it in the broker is not timed out: it
    catches up when it returns, or expires. Nor is a site that holds the plan until its
    maintenance window opens: its timeout counts from the opening. A timed-out site whose
    policy allows a retry is queued again.
    """
    policy = policy_of(rollout)
    now = clock()
    expires_at = float(rollout.expires_at or float("inf"))
    if now < expires_at and now - float(rollout.created_at) < policy.site_timeout:
        return 0, 0  # no site can have been sent its plan longer ago than the timeout
    with Changes() as changes:
        return _time_out_and_expire(rollout, policy, now, expires_at, clock, changes)


def _time_out_and_expire(rollout: Rollout, policy: PolicyIn, now: float, expires_at: float,
                         clock: Clock, changes: Changes) -> tuple[int, int]:
    timed_out = expired = 0
    flying = list(in_flight(rollout.rollout_id))
    online = {s.site_id: bool(s.online) for s in Site.batch_get(
        list({e.site_id for e in flying}))} if flying else {}
    for execution in flying:
        started = execution.started_at is not None
        since = float(execution.started_at or execution.sent_at or execution.created_at)
        if not started and execution.waiting_until is not None:  # held for its window
            since = max(since, float(execution.waiting_until))
        if not started and now >= expires_at:
            expired += transition(execution, ExecutionState.EXPIRED, clock,
                                  message="the site did not start the plan before the "
                                  "rollout expired", changes=changes)
        elif (started or online.get(execution.site_id)) and now - since >= policy.site_timeout:
            reason = (f"no result {policy.site_timeout:.0f} s after the site "
                      f"{'started' if started else 'was sent'} the plan")
            if int(execution.attempt) <= policy.retries.max:
                requeue(execution, policy, f"timed out: {reason}", clock, changes)
            else:
                timed_out += transition(execution, ExecutionState.TIMED_OUT, clock,
                                        message=reason, changes=changes)
    if now >= expires_at:
        for execution in Execution.queued.query(rollout.rollout_id):
            expired += transition(execution, ExecutionState.EXPIRED, clock,
                                  message="the rollout expired before the site's turn came",
                                  changes=changes)
    return timed_out, expired
