"""The rollout engine: waves, limits, abort, timeouts, retries, windows, expiry, pause,
resume and cancel, with state in DynamoDB.

``waves.py`` decides; this module reads what the decision needs and does it. Every change
is a conditional update on the exact state it starts from, and its bookkeeping (the
rollout's and the wave's counters, the event log) is done only by the writer whose update
took, so racing writers (a result and the schedule tick, two Lambda retries) neither lose
nor double a change. Progress advances when results arrive — only when something can move
(a wave completed, capacity freed, a threshold crossed) — and on a tick (``tick``, every
minute from ``@app.schedule``) that catches timeouts, expiry and opening windows.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib import audit, states, waves
from chalicelib.changes import IN_FLIGHT, Changes
from chalicelib.errors import Conflict, NotFound, PublishFailed
from chalicelib.models import (
    Execution,
    Rollout,
    Site,
    Wave,
    conditional_update,
    conditional_write,
    queue_key,
)
from chalicelib.publisher import Publisher
from chalicelib.schemas import PolicyIn
from chalicelib.states import RolloutState
from edgeplane import protocol
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)

Clock = Callable[[], float]
DISPATCH_BATCH = 500  # queued executions read per query page
DISPATCH_WORKERS = 8  # claims and publishes in flight at once
DISPATCH_LEASE = 60.0  # s one writer may advance a rollout before another may take over
DISPATCH_ROUND = 1000  # sites claimed per round; the lease is renewed between rounds
RECOUNT_QUIET = 60.0  # s without a move before a rollout's counters may be recounted


def policy_of(rollout: Rollout) -> PolicyIn:
    return PolicyIn.model_validate(rollout.policy or {})


# --- executions move ---------------------------------------------------------------------


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
        if conditional_write(execution, actions, Execution.state == source):
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
    not_before = now + waves.retry_delay(policy, attempt - 1)
    actions = [
        Execution.state.set(ExecutionState.QUEUED), Execution.attempt.set(attempt),
        Execution.execution_id.set(Execution.make_id(execution.rollout_id, execution.site_id,
                                                     attempt)),
        Execution.not_before.set(not_before),
        Execution.queue_key.set(queue_key(int(execution.wave), not_before, execution.site_id)),
        Execution.message.set(f"attempt {attempt - 1} failed, retrying after "
                              f"{not_before - now:.0f} s: {reason}"),
        Execution.updated_at.set(now), Execution.machines.set({}),
        Execution.last_seq.remove(),
    ]
    if not conditional_update(execution, actions, Execution.state == source):
        return False
    _moved(execution, source, ExecutionState.QUEUED, now, changes)
    return True


# --- the rollout moves -------------------------------------------------------------------


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


def get_rollout(rollout_id: str) -> Rollout:
    try:
        return Rollout.get(rollout_id, consistent_read=True)
    except Rollout.DoesNotExist:
        raise NotFound(kind="rollout", id=rollout_id) from None


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
        sent = _dispatch(rollout, policy, publisher, clock) if go else 0
        rollout = get_rollout(rollout_id)
        if sent >= DISPATCH_ROUND:  # more may be due: keep the lease for another round
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


def needs_advance(rollout: Rollout, policy: PolicyIn, finished_in: Iterable[int]) -> bool:
    """After sites finished (in these waves): can anything move? (A read per wave instead
    of a full advance for each batch of results that changes nothing but counters.)"""
    if rollout.state != RolloutState.RUNNING or policy.max_in_flight or policy.max_per_minute:
        return rollout.state == RolloutState.RUNNING  # a place in flight was freed
    for wave in finished_in:
        counters = Wave.get(rollout.rollout_id, wave, consistent_read=True)
        if int(counters.done) >= int(counters.size) or int(counters.failed) > 0:
            return True
    return False


def _wave_gate(rollout: Rollout, policy: PolicyIn, clock: Clock) -> tuple[bool, Rollout]:
    """Abort or step to the next wave as the counters say; (True if dispatch may go on,
    the rollout as it is now)."""
    sizes = [int(size) for size in rollout.waves or []]
    while True:
        current = int(rollout.current_wave)
        if current >= len(sizes):
            return False, rollout
        try:
            wave = Wave.get(rollout.rollout_id, current, consistent_read=True)
        except Wave.DoesNotExist:  # the create is still writing the rollout's waves
            return False, rollout
        more = int(wave.done) < int(wave.size) or current + 1 < len(sizes)
        reason = more and waves.abort_reason(current, current == 0 and policy.canary is not None,
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


def _dispatch(rollout: Rollout, policy: PolicyIn, publisher: Publisher,
              clock: Clock) -> int:
    """Send the plans of the current wave's due, in-window queued sites, within the limits.

    Claims and publishes run ``DISPATCH_WORKERS`` at a time (each claim is one conditional
    update, a round trip of its own); their counters and events are written once per round.
    """
    now = clock()
    minute = int(now // 60)
    started = int(rollout.rate_count) if int(rollout.rate_minute) == minute else 0
    room = min(waves.room(policy, int(rollout.in_flight), started), DISPATCH_ROUND)
    if room <= 0:
        return 0
    chosen = _due(rollout.rollout_id, int(rollout.current_wave), now, room, policy)
    if not chosen:
        return 0
    with Changes() as changes:
        sender = _Sender(rollout, publisher, clock, changes)
        if len(chosen) == 1:
            sent = int(sender.send(chosen[0]))
        else:
            with ThreadPoolExecutor(min(DISPATCH_WORKERS, len(chosen)),
                                    thread_name_prefix="dispatch") as pool:
                sent = sum(pool.map(sender.send, chosen))
    if sent:
        rate = ([Rollout.rate_count.add(sent)] if int(rollout.rate_minute) == minute else
                [Rollout.rate_minute.set(minute), Rollout.rate_count.set(sent)])
        conditional_write(Rollout(rollout.rollout_id), rate)
    return sent


class _Sender:
    """Claims one queued execution and publishes its plan (one per thread at a time)."""

    def __init__(self, rollout: Rollout, publisher: Publisher, clock: Clock,
                 changes: Changes) -> None:
        self.rollout = rollout
        self.publisher = publisher
        self.clock = clock
        self.changes = changes
        self._source: Any = None
        self._lock = threading.Lock()

    def send(self, execution: Execution) -> bool:
        site_id = execution.site_id
        try:
            steps, desired = self._plan_of(execution)
        except Conflict as exc:  # a plan rendered now: the site changed since the create
            transition(execution, ExecutionState.FAILED, self.clock, message=exc.message,
                       changes=self.changes)
            return False
        plan = protocol.Plan(site=site_id, execution_id=execution.execution_id,
                             rollout_id=self.rollout.rollout_id, steps=steps,
                             expires_at=self.rollout.expires_at)
        # Claim first: of two writers dispatching at once (a result and the tick), only the
        # one whose queued -> sent update takes publishes the plan.
        if not transition(execution, ExecutionState.SENT, self.clock, message="",
                          changes=self.changes, plan_message_id=plan.id,
                          sent_at=self.clock()):
            return False
        try:
            self.publisher.publish(protocol.plan_topic(site_id), plan.encode())
        except PublishFailed as exc:
            LOG.error("rollout %s: plan for site %s not sent: %s", self.rollout.rollout_id,
                      site_id, exc.message)
            _unclaim(execution, f"plan not sent: {exc.message}", self.clock, self.changes)
            return False
        except Exception as exc:  # not a refusal we know: give the claim back, then raise
            _unclaim(execution, f"plan not sent: {exc}", self.clock, self.changes)
            raise
        if desired:
            from chalicelib import rollouts

            rollouts.set_desired(self.rollout.rollout_id, site_id, desired, self.clock)
        return True

    def _plan_of(self, execution: Execution) -> tuple[list[protocol.PlanStep],
                                                      dict[str, Any]]:
        """The plan rendered when the rollout was created (stored on the execution), or,
        for an execution stored without one, rendered now."""
        if execution.plan_steps is not None:
            return ([protocol.PlanStep(**step) for step in execution.plan_steps],
                    execution.desired or {})
        from chalicelib import rollouts  # rendering lives with rollout creation

        with self._lock:
            self._source = self._source or rollouts.source_of_rollout(self.rollout)
        found = rollouts.render_site(self.rollout.rollout_id, execution.site_id,
                                     self._source)
        return found.plan.steps, found.desired


def _unclaim(execution: Execution, message: str, clock: Clock, changes: Changes) -> None:
    """Back to queued after a plan could not be published (the next advance tries again)."""
    now = clock()
    execution.message = message
    actions = [Execution.state.set(ExecutionState.QUEUED), Execution.message.set(message),
               Execution.queue_key.set(queue_key(int(execution.wave), now, execution.site_id)),
               Execution.sent_at.remove(), Execution.updated_at.set(now)]
    if conditional_update(execution, actions, Execution.state == ExecutionState.SENT):
        changes.moved(execution, ExecutionState.SENT, ExecutionState.QUEUED, now)


def _due(rollout_id: str, wave: int, now: float, room: int,
         policy: PolicyIn) -> list[Execution]:
    """Up to ``room`` queued executions of ``wave`` whose time has come and whose site's
    maintenance window is open (unless the policy ignores windows)."""
    low, high = queue_key(wave, 0, ""), queue_key(wave, now, "~")
    chosen: list[Execution] = []
    page = Execution.queued.query(rollout_id, Execution.queue_key.between(low, high),
                                  page_size=DISPATCH_BATCH)
    batch: list[Execution] = []
    for execution in page:
        batch.append(execution)
        if len(batch) >= DISPATCH_BATCH:
            chosen += _open(batch, now, policy)[:room - len(chosen)]
            batch = []
            if len(chosen) >= room:
                return chosen
    chosen += _open(batch, now, policy)[:room - len(chosen)]
    return chosen


def _open(batch: list[Execution], now: float, policy: PolicyIn) -> list[Execution]:
    if not batch or not policy.maintenance_windows:
        return batch
    sites = {site.site_id: site for site in Site.batch_get([e.site_id for e in batch])}
    return [e for e in batch if e.site_id in sites and waves.in_window(
        sites[e.site_id].maintenance_window, sites[e.site_id].timezone, now)]


def finish_if_done(rollout: Rollout, clock: Clock = time.time) -> RolloutState | None:
    """Succeeded or failed, once every execution is terminal (by the counters)."""
    if rollout.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
        return None
    if int(rollout.done) < int(rollout.total):
        return None
    failed = sum(int(w.failed) for w in Wave.query(rollout.rollout_id, consistent_read=True))
    succeeded = all_succeeded(rollout.rollout_id) if not failed else False
    outcome = RolloutState.SUCCEEDED if succeeded else RolloutState.FAILED
    move_rollout(rollout, outcome, clock=clock)
    return outcome


def all_succeeded(rollout_id: str) -> bool:
    """Expired and canceled sites are not failures, but the rollout did not succeed there."""
    return all(e.state == ExecutionState.SUCCEEDED
               for e in Execution.query(rollout_id, attributes_to_get=["site_id", "state"]))


# --- operator actions --------------------------------------------------------------------


def pause(rollout_id: str, actor: str | None = None, clock: Clock = time.time) -> Rollout:
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.PAUSED, actor=actor, clock=clock) and \
            rollout.state != RolloutState.PAUSED:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: only a running rollout "
                       "can be paused")
    return get_rollout(rollout_id)


def resume(rollout_id: str, publisher: Publisher, actor: str | None = None,
           clock: Clock = time.time) -> Rollout:
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.RUNNING, actor=actor, clock=clock) and \
            rollout.state != RolloutState.RUNNING:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: only a paused rollout "
                       "can be resumed")
    advance(rollout_id, publisher, clock)
    return get_rollout(rollout_id)


def cancel(rollout_id: str, publisher: Publisher, actor: str | None = None,
           clock: Clock = time.time) -> Rollout:
    """Queued sites are canceled at once; sites with the plan are told to drop it (if they
    have not started) or to stop after the current step; they answer with a result."""
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.CANCELED, actor=actor, clock=clock) and \
            rollout.state != RolloutState.CANCELED:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: it cannot be canceled")
    cancel_queued(rollout, "rollout canceled", clock)
    for execution in in_flight(rollout_id):
        message = protocol.Cancel(site=execution.site_id, execution_id=execution.execution_id,
                                  reason=f"rollout {rollout_id} canceled")
        try:
            publisher.publish(protocol.cancel_topic(execution.site_id), message.encode())
        except PublishFailed as exc:  # the site will run the plan; its result still counts
            LOG.error("cancel of %s not sent: %s", execution.execution_id, exc.message)
    return get_rollout(rollout_id)


def cancel_queued(rollout: Rollout, reason: str, clock: Clock = time.time) -> int:
    canceled = 0
    with Changes() as changes:
        for execution in Execution.queued.query(rollout.rollout_id):
            canceled += transition(execution, ExecutionState.CANCELED, clock, message=reason,
                                   changes=changes)
    return canceled


def in_flight(rollout_id: str) -> Iterable[Execution]:
    return Execution.query(rollout_id, filter_condition=Execution.state.is_in(*IN_FLIGHT))


# --- the tick ----------------------------------------------------------------------------


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

    Counters move after the moves they count, once per batch (``changes.py``); a crash in
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
    if (done, in_flight, dict(by_state)) != (int(rollout.done), int(rollout.in_flight), stored):
        LOG.warning("rollout %s: counters were done=%s in_flight=%s %s, recounted %s, %s "
                    "and %s", rollout.rollout_id, rollout.done, rollout.in_flight, stored,
                    done, in_flight, dict(by_state))
        conditional_write(Rollout(rollout.rollout_id), [
            Rollout.done.set(done), Rollout.in_flight.set(in_flight),
            Rollout.state_counts.set(dict(by_state))])
    for wave in Wave.query(rollout.rollout_id, consistent_read=True):
        index = int(wave.wave)
        counted = (wave_done.get(index, 0), wave_failed.get(index, 0))
        if counted != (int(wave.done), int(wave.failed)):
            wave.update(actions=[Wave.done.set(counted[0]), Wave.failed.set(counted[1])])
    return True


def check_deadlines(rollout: Rollout, clock: Clock = time.time) -> tuple[int, int]:
    """Time out sites that took too long; expire those that never started before expiry.

    A site that is offline with the plan waiting for it in the broker is not timed out: it
    catches up when it returns, or expires. A timed-out site whose policy allows a retry is
    queued again.
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
