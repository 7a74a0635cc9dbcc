"""Progress and results of executions, applied a batch at a time.

Gateways report an execution's machines as they go (``progress``, seq 1, 2, ...) and once
at the end (``result``, every machine). Delivery is at least once and unordered, so:

- the reports of one execution in a batch are merged first: a result supersedes the
  progress before it (it carries every machine), progress reports merge per machine by seq;
- each execution is then one conditional UpdateItem, without reading it first: a result
  moves sent/running to its final state (``ReturnValues=ALL_OLD`` tells from which), a
  progress moves sent to running or only updates the machines of a running one, when its
  seq is newer (ALL_OLD tells which it did);
- a result ``rejected`` (the site's gateway refused the plan) is final at once, like a
  failure that is not retryable: the same plan would be refused again;
- a result in parts (one message could not hold it) is stored part by part, and the
  execution finished by the writer that applies its last part (``parts``);
- what a report stores of each machine keeps the execution within DynamoDB's item size:
  in full while there is room, else as its outcome (``snapshots``);
- only what the conditions refuse is read and sorted out: a report of an earlier attempt or
  of an unknown execution (dropped and logged), a duplicate of a final result (the rollout
  is recounted: a crash may have come between the move and its counting), a report for an
  execution still queued (moved by the engine), a progress older than the stored one
  (merged per machine, optimistically on ``report_count``); a progress of an execution
  this process saw finish is dropped unread (``CLOSED``);
- the moves' counters and events are written once per batch (``Changes``), and each
  rollout in which sites finished is advanced once, if anything can move: the counting's
  answer tells, without a read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pynamodb.exceptions import PynamoDBException

from chalicelib import publisher
from chalicelib.clock import Clock
from chalicelib.models import Execution, conditional_update, too_large, update_returning
from chalicelib.recent import RecentKeys
from chalicelib.rollouts import parts, snapshots, states
from chalicelib.rollouts.advance import advance, needs_advance
from chalicelib.rollouts.bookkeeping import IN_FLIGHT, Changes
from chalicelib.rollouts.moves import (
    clear_machines,
    get_rollout,
    policy_of,
    requeue,
    transition,
)
from chalicelib.rollouts.snapshots import Form
from chalicelib.rollouts.tick import reconcile
from edgeplane import protocol
from edgeplane.protocol import ExecutionState, MachineResult, Progress, Result, StepState

LOG = logging.getLogger(__name__)

MAX_STEPS = protocol.MAX_STEPS  # a plan's steps at most (schemas.RolloutIn)


# Executions no report can change anymore, that this process saw closed: finished (a final
# state is never left) or replaced by their retry (which has an id of its own); an id is
# never used for another execution. A progress arrives after its result when the two come
# in batches handled side by side: one of these is dropped without a request.
CLOSED = RecentKeys(10_000)


@dataclass
class _Report:
    """What one batch says of one execution."""

    site: str
    execution_id: str
    rollout_id: str
    seq: int = 0
    machines: dict[str, tuple[int, MachineResult]] = field(default_factory=dict)
    result: Result | None = None
    parts: dict[int, Result] = field(default_factory=dict)  # of ``result``, if in parts
    waiting_until: float | None = None  # the newest progress says the site holds the plan

    def add(self, message: Progress) -> None:
        if isinstance(message, Result):
            self._add_result(message)
            return
        if message.seq >= self.seq:
            self.waiting_until = message.waiting_until
        self.seq = max(self.seq, message.seq)
        for machine in valid_machines(message):
            known = self.machines.get(machine.machine)
            if known is None or known[0] < message.seq:
                self.machines[machine.machine] = (message.seq, machine)

    def _add_result(self, message: Result) -> None:
        """Keep the result of the greatest seq (a whole one over its parts), with its parts
        when it came in parts."""
        current = self.result
        if current is None or message.seq > current.seq or \
                (message.seq == current.seq and message.parts is None):
            self.result, self.parts = message, {}
        result = self.result
        assert result is not None
        if message.parts is not None and message.seq == result.seq and \
                message.parts == result.parts:
            self.parts[message.part or 0] = message


@dataclass
class _Batch:
    changes: Changes = field(default_factory=Changes)
    recount: set[str] = field(default_factory=set)  # rollouts that got a duplicate result


def apply(messages: list[Progress], clock: Clock = time.time) -> None:
    """Store a batch of progress and result reports, then advance the rollouts touched.

    The reports are stored at the batch's time; the engine is given the clock itself, not
    that time: an advance may wait for its turn and hold the rollout for several rounds, and
    what it does must be stamped when it is done (a wave started with the batch's time would
    be logged before the last sends of the wave it follows).
    """
    now = clock()
    batch = _Batch()
    with batch.changes:  # a report that raises leaves the moves before it counted
        for report in _group(messages):
            if report.parts:
                _apply_parts(report, now, batch)
            elif report.result is not None:
                _apply_result(report, report.result, now, batch)
            elif report.waiting_until is not None and not report.machines:
                _apply_waiting(report, now)
            else:
                _apply_progress(report, now, batch)
    # Where sites finished, the counting answered the counters it left: no read of them.
    counted = batch.changes.counted
    for rollout_id in sorted(set(counted) | batch.recount):
        if rollout_id in batch.recount:
            reconcile(get_rollout(rollout_id), clock)
        elif not needs_advance(counted[rollout_id].rollout,
                               policy_of(counted[rollout_id].rollout),
                               counted[rollout_id].waves):
            continue  # nothing can move
        advance(rollout_id, publisher.current(), clock)


def _group(messages: list[Progress]) -> list[_Report]:
    reports: dict[str, _Report] = {}
    for message in messages:
        if isinstance(message, Result) and \
                message.state not in states.TERMINAL_EXECUTION_STATES:
            LOG.error("site %s: result for execution %s has state %r, not a final state; "
                      "dropped", message.site, message.execution_id, message.state)
            continue
        rollout_id = _rollout_of(message)
        if rollout_id is None:
            continue
        key = str(message.execution_id)
        if key not in reports:
            reports[key] = _Report(message.site, key, rollout_id)
        reports[key].add(message)
    return list(reports.values())


def _rollout_of(message: Progress) -> str | None:
    """The rollout of the execution reported on, if the id is well-formed and the site's."""
    try:
        rollout_id, site_id = Execution.split_id(str(message.execution_id))
    except ValueError as exc:
        LOG.error("site %s: %s; report dropped", message.site, exc)
        return None
    if site_id != message.site:
        LOG.error("site %s reported on execution %s of another site; dropped", message.site,
                  message.execution_id)
        return None
    return rollout_id


def valid_machines(message: Progress) -> list[MachineResult]:
    """The report's machines whose id and summary are well-formed (the others are logged)."""
    valid = []
    for machine in message.machines:
        if not isinstance(machine.machine, str) or \
                not protocol.MACHINE_ID_PATTERN.fullmatch(machine.machine):
            LOG.error("execution %s: report names an invalid machine id %r; skipped",
                      message.execution_id, machine.machine)
        elif machine.summary is not None and not _valid_summary(machine):
            LOG.error("execution %s: machine %s: malformed summary %r; skipped",
                      message.execution_id, machine.machine, machine.summary)
        else:
            valid.append(machine)
    return valid


def _valid_summary(machine: MachineResult) -> bool:
    """A letter per step of a plan (at most ``MAX_STEPS``), and each step sent in full
    placed at one of them."""
    summary = machine.summary
    if not isinstance(summary, str) or len(summary) > MAX_STEPS or \
            not set(summary) <= set(protocol.STEP_LETTERS):
        return False
    return all(isinstance(step.index, int) and not isinstance(step.index, bool)
               and 0 <= step.index < len(summary) for step in machine.steps)


def _stored(machines: list[MachineResult], seq: int, now: float,
            form: Form) -> dict[str, str]:
    return {m.machine: snapshots.stored(m, seq, now, form) for m in machines}


T = TypeVar("T")


def _fitting(write: Callable[[Form | None], T], what: str,
             forms: tuple[Form | None, ...] = (Form.FULL, Form.OUTCOME)) -> T:
    """``write(form)`` with the machines in the first of ``forms`` the store takes: in full,
    else as their outcomes (None: not at all), when more would take the execution past
    DynamoDB's item size."""
    for form in forms[:-1]:
        try:
            return write(form)
        except PynamoDBException as exc:
            if not too_large(exc):
                raise
        LOG.warning("%s: its machines in %s would pass the item size; stored with less",
                    what, form.value if form else "no form")
    return write(forms[-1])


# --- results ---------------------------------------------------------------------------


# What a move stores of the machines, in the form it is given.
Machines = Callable[[Form], dict[str, str]]


def _apply_result(report: _Report, message: Result, now: float, batch: _Batch) -> None:
    """A whole result: its machines stored with it, as the execution ends."""
    valid = valid_machines(message)
    _finish(report, message, now, batch,
            lambda form: _stored(valid, message.seq, now, form), _retryable(message))


def _finish(report: _Report, message: Result, now: float, batch: _Batch,
            machines: Machines, retryable: bool) -> None:
    """End the execution as ``message`` says, once, storing ``machines``."""
    target = ExecutionState(message.state)  # a final state: _group dropped the others
    if target == ExecutionState.FAILED and retryable:
        _retry_or_fail(report, message, now, batch, machines)
        return
    text = str(message.message)
    condition = (Execution.execution_id == report.execution_id) & \
        Execution.state.is_in(*IN_FLIGHT)

    def end(form: Form | None) -> Execution | None:
        actions = [
            Execution.state.set(target), Execution.message.set(text),
            Execution.finished_at.set(now), Execution.updated_at.set(now),
            Execution.started_at.set(Execution.started_at | now),
            Execution.last_seq.set(message.seq), Execution.report_count.add(1),
        ]
        actions += _machines_set(machines, form)
        return _update(report, actions, condition)

    old = _fitting(end, f"execution {report.execution_id}")
    if old is not None:
        old.message = text
        batch.changes.moved(old, ExecutionState(old.state), target, now)
        CLOSED.add(report.execution_id)
        LOG.info("execution %s %s: %s", report.execution_id, target, text)
        return
    execution = _read(report)
    if execution is None:
        return
    if execution.state in states.TERMINAL_EXECUTION_STATES:
        CLOSED.add(report.execution_id)
        batch.recount.add(report.rollout_id)  # a duplicate: make sure it was counted
    elif _fitting(lambda form: transition(
            execution, target, lambda: now, message=text, changes=batch.changes,
            started_at=execution.started_at or now, last_seq=message.seq,
            **_machines_field(machines, form)), f"execution {report.execution_id}"):
        CLOSED.add(report.execution_id)
        LOG.info("execution %s %s: %s", report.execution_id, target, text)


def _machines_set(machines: Machines, form: Form | None) -> list[Any]:
    return [] if form is None else [Execution.machines.set(machines(form))]


def _machines_field(machines: Machines, form: Form | None) -> dict[str, Any]:
    """The ``machines`` a move stores, as ``transition`` takes them."""
    return {} if form is None else {"machines": machines(form)}


def _retry_or_fail(report: _Report, message: Result, now: float, batch: _Batch,
                   machines: Machines) -> None:
    """A retryable failure: queued again while the policy allows, else failed."""
    execution = _read(report)
    if execution is None:
        return
    if execution.state in states.TERMINAL_EXECUTION_STATES:
        batch.recount.add(report.rollout_id)
        return
    rollout = get_rollout(report.rollout_id)
    policy = policy_of(rollout)
    if int(execution.attempt) <= policy.retries.max and \
            rollout.state not in states.STOPPED_ROLLOUT_STATES:
        if requeue(execution, policy, str(message.message), lambda: now,
                          batch.changes):
            CLOSED.add(report.execution_id)  # the next attempt has an id of its own
            LOG.info("execution %s failed (retryable): queued again", report.execution_id)
        return  # the tick dispatches it after the backoff
    if _fitting(lambda form: transition(
            execution, ExecutionState.FAILED, lambda: now, message=str(message.message),
            changes=batch.changes, started_at=execution.started_at or now,
            last_seq=message.seq, **_machines_field(machines, form)),
            f"execution {report.execution_id}"):
        CLOSED.add(report.execution_id)


def _retryable(message: Result) -> bool:
    """True when every failed step says a later attempt may pass. An uncertain step (it
    may have acted) is never retried: an operator decides."""
    failed = [step for machine in message.machines for step in machine.steps
              if step.state in (StepState.FAILED, StepState.UNCERTAIN)]
    return bool(failed) and all(step.state == StepState.FAILED and step.retryable is True
                                for step in failed)


# --- results in parts ------------------------------------------------------------------


def _apply_parts(report: _Report, now: float, batch: _Batch) -> None:
    """Store the parts of a result this batch has (``parts``), and finish the execution if
    they were its last. The update on the execution is of a few attributes whatever the
    number of machines (DynamoDB takes an expression of 4 KB at most): the machines are
    written once, as the execution ends, read back from their parts."""
    received = [report.parts[number] for number in sorted(report.parts)]
    first = received[0]
    if report.execution_id not in CLOSED:  # closed: its parts are stored, or too late
        parts.store(report.rollout_id, report.site, received,
                    [valid_machines(part) for part in received], now)
    actions = [
        Execution.result_parts.add({parts.entry(part) for part in received}),
        Execution.last_seq.set(first.seq), Execution.updated_at.set(now),
        Execution.started_at.set(Execution.started_at | now), Execution.report_count.add(1)]
    condition = (Execution.execution_id == report.execution_id) & \
        Execution.state.is_in(*IN_FLIGHT)
    key = Execution(report.rollout_id, report.site)
    answer = _add_parts(key, actions, condition, report)
    if answer is None:
        execution = _read(report)
        if execution is None:
            return
        if execution.state in states.TERMINAL_EXECUTION_STATES:
            CLOSED.add(report.execution_id)
            batch.recount.add(report.rollout_id)  # a part again: make sure it was counted
            return
        if execution.state != ExecutionState.QUEUED:
            LOG.warning("execution %s: result part(s) %s not applied (%s); dropped",
                        report.execution_id, sorted(report.parts), execution.state)
            return
        # The site answered before the cloud marked the plan sent.
        transition(execution, ExecutionState.RUNNING, lambda: now, changes=batch.changes,
                   started_at=now)
        answer = _add_parts(key, actions, condition, report)
        if answer is None:
            return
    entries = set(answer.get("result_parts", {}).get("SS", []))
    total = int(first.parts or 0)
    if not parts.complete(entries, first.seq, total):
        LOG.info("execution %s: result part(s) %s of %d stored", report.execution_id,
                 ", ".join(map(str, sorted(report.parts))), total)
        return
    outcomes = parts.outcomes(report.execution_id, first.seq, now)
    # What progress left is replaced by every machine's outcome: emptied first, so that
    # the execution never holds both (a large site's progress alone may fill it).
    clear_machines(key, condition)
    _finish(report, first, now, batch, lambda form: outcomes,
            parts.retryable(entries, first.seq))


def _add_parts(key: Execution, actions: list[Any], condition: Any,
               report: _Report) -> dict[str, Any] | None:
    """The parts' update, answering what it changed (None: refused). If the execution
    holds so much of its machines' progress that even this does not fit, the progress goes:
    the result supersedes it."""
    try:
        return update_returning(key, actions, condition, values="UPDATED_NEW")
    except PynamoDBException as exc:
        if not too_large(exc):
            raise
    LOG.warning("execution %s: its machines' progress cleared to make room for its result",
                report.execution_id)
    if not clear_machines(key, condition):
        return None
    return update_returning(key, actions, condition, values="UPDATED_NEW")


# --- progress --------------------------------------------------------------------------


def waiting_message(until: float) -> str:
    opens = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(until))
    return f"waiting for the site's maintenance window, which opens at {opens} UTC"


def _apply_waiting(report: _Report, now: float) -> None:
    """The site holds the plan until its maintenance window opens: the execution stays
    sent, says until when, and is not timed out before then (``tick``). A report older than
    the one stored, or of an execution that moved on, changes nothing."""
    if report.execution_id in CLOSED or report.waiting_until is None:
        return
    newer = Execution.last_seq.does_not_exist() | (Execution.last_seq < report.seq)
    _update(report, [
        Execution.message.set(waiting_message(report.waiting_until)),
        Execution.waiting_until.set(report.waiting_until), Execution.last_seq.set(report.seq),
        Execution.updated_at.set(now), Execution.report_count.add(1)],
        (Execution.execution_id == report.execution_id) & newer &
        (Execution.state == ExecutionState.SENT))


def _stop_waiting(report: _Report, old: Execution) -> None:
    """The site started a plan it held: its waiting message goes (unless changed since)."""
    if old.waiting_until is None:
        return
    conditional_update(Execution(report.rollout_id, report.site), [
        Execution.message.set(""), Execution.waiting_until.remove()],
        (Execution.execution_id == report.execution_id) &
        (Execution.message == waiting_message(float(old.waiting_until))))


def _apply_progress(report: _Report, now: float, batch: _Batch) -> None:
    """A batch's progress of an execution; dropped (logged) if the execution holds all it
    can of its machines' progress: its result will say how each one ended."""
    try:
        _write_progress(report, now, batch)
    except PynamoDBException as exc:
        if not too_large(exc):
            raise
        LOG.warning("execution %s: progress %s dropped: the execution holds all it can of "
                    "its machines' progress", report.execution_id, report.seq)


def _write_progress(report: _Report, now: float, batch: _Batch) -> None:
    """One conditional update if the report is the newest (and of at most
    ``MACHINES_PER_UPDATE`` machines; the rest follow, each on condition that no newer
    report came meanwhile), else merged machine by machine."""
    if report.execution_id in CLOSED:
        return  # its result came first: a late progress never reopens it
    same = Execution.execution_id == report.execution_id
    newer = Execution.last_seq.does_not_exist() | (Execution.last_seq < report.seq)
    first, *rest = _chunks(report.machines)
    what = f"progress {report.seq} of execution {report.execution_id}"
    # Sent or running, it is running after its first report: the execution as it was
    # tells whether this one moved it (and started it: a retry starts without a start).
    old = _fitting(lambda form: _update(
        report, _machine_actions(report, first, now, form=form) + [
            Execution.state.set(ExecutionState.RUNNING),
            Execution.started_at.set(Execution.started_at | now)],
        same & newer & Execution.state.is_in(*IN_FLIGHT)), what, PROGRESS_FORMS)
    if old is None:
        if report.execution_id not in CLOSED:  # its result may have come meanwhile
            _merge_progress(report, now, batch)
        return
    if old.state == ExecutionState.SENT:
        batch.changes.moved(old, ExecutionState.SENT, ExecutionState.RUNNING, now)
        _stop_waiting(report, old)
    still = same & (Execution.last_seq == report.seq) & Execution.state.is_in(*IN_FLIGHT)
    key = Execution(report.rollout_id, report.site)
    for number, chunk in enumerate(rest):
        if not _fitting(_merging(key, report, chunk, now, report.seq, still), what,
                        PROGRESS_FORMS):
            left = {m: found for later in rest[number:] for m, found in later.items()}
            _merge_progress(dataclasses.replace(report, machines=left), now, batch)
            return


# DynamoDB takes an update expression of 4 KB at most: each machine's entry is a clause of
# its own (about 16 characters), so a report of more machines is written in several.
MACHINES_PER_UPDATE = 100


def _chunks(machines: dict[str, tuple[int, MachineResult]]
            ) -> list[dict[str, tuple[int, MachineResult]]]:
    """``machines`` in groups of ``MACHINES_PER_UPDATE`` (one, empty, for none)."""
    items = list(machines.items())
    return [dict(items[start:start + MACHINES_PER_UPDATE])
            for start in range(0, len(items), MACHINES_PER_UPDATE)] or [{}]


# What progress keeps of its machines: in full, else their outcomes, else (the execution is
# full of what earlier reports left) none: its result will carry every machine.
PROGRESS_FORMS = (Form.FULL, Form.OUTCOME, None)


def _machine_actions(report: _Report, machines: dict[str, tuple[int, MachineResult]],
                     now: float, last_seq: int | None = None,
                     form: Form | None = Form.FULL) -> list[Any]:
    actions = [] if form is None else [
        Execution.machines[machine].set(snapshots.stored(result, seq, now, form))
        for machine, (seq, result) in machines.items()]
    return actions + [Execution.last_seq.set(last_seq or report.seq),
                      Execution.updated_at.set(now), Execution.report_count.add(1)]


def _merge_progress(report: _Report, now: float, batch: _Batch) -> None:
    """The slow path: read, then write only the machines whose stored report is older (in
    updates of ``MACHINES_PER_UPDATE``, each on condition that no other report was applied
    since the read or the update before)."""
    what = f"progress {report.seq} of execution {report.execution_id}"
    for _ in range(3):
        execution = _read(report)
        if execution is None or execution.state in states.TERMINAL_EXECUTION_STATES:
            if execution is not None:
                CLOSED.add(report.execution_id)
            return  # a late progress never reopens a finished execution
        if execution.state == ExecutionState.QUEUED:
            transition(execution, ExecutionState.RUNNING, lambda: now,
                              changes=batch.changes, started_at=now)
            continue
        stored = execution.machine_reports(with_parts=False)
        newer = {machine: found for machine, found in report.machines.items()
                 if machine not in stored or int(stored[machine].get("seq", 0)) < found[0]}
        if not newer:
            LOG.debug("execution %s: progress %s is not newer; ignored",
                      report.execution_id, report.seq)
            return
        last_seq = max(report.seq, int(execution.last_seq or 0))
        count = execution.report_count
        for chunk in _chunks(newer):
            unchanged = Execution.report_count == count if count is not None \
                else Execution.report_count.does_not_exist()
            merge = _merging(execution, report, chunk, now, last_seq,
                             unchanged & Execution.state.is_in(*IN_FLIGHT))
            if not _fitting(merge, what, PROGRESS_FORMS):
                break  # another report came between: read again
            count = int(count or 0) + 1
        else:
            return
    LOG.warning("execution %s: progress %s lost a race three times; dropped",
                report.execution_id, report.seq)


def _merging(execution: Execution, report: _Report,
             machines: dict[str, tuple[int, MachineResult]], now: float, last_seq: int,
             condition: Any) -> Callable[[Form | None], bool]:
    """A conditional write of ``machines`` to ``execution``, in the form it is given."""
    def write(form: Form | None) -> bool:
        return conditional_update(execution, _machine_actions(report, machines, now,
                                                              last_seq, form), condition)
    return write


# --- the store -------------------------------------------------------------------------


def _update(report: _Report, actions: list[Any], condition: Any) -> Execution | None:
    """One conditional update; the execution as it was before, or None if refused."""
    old = update_returning(Execution(report.rollout_id, report.site), actions, condition)
    return Execution.from_raw_data(old) if old is not None else None


def _read(report: _Report) -> Execution | None:
    """The execution reported on, if it exists and this is its current attempt."""
    try:
        execution = Execution.get(report.rollout_id, report.site, consistent_read=True)
    except Execution.DoesNotExist:
        LOG.warning("site %s reported on unknown execution %s; dropped", report.site,
                    report.execution_id)
        return None
    if execution.execution_id != report.execution_id:
        LOG.info("site %s reported on %s, an earlier attempt than %s; dropped", report.site,
                 report.execution_id, execution.execution_id)
        return None
    return execution
