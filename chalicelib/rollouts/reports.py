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

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from chalicelib import publisher
from chalicelib.clock import Clock
from chalicelib.models import Execution, conditional_update, update_returning
from chalicelib.recent import RecentKeys
from chalicelib.rollouts import states
from chalicelib.rollouts.advance import advance, needs_advance
from chalicelib.rollouts.bookkeeping import IN_FLIGHT, Changes
from chalicelib.rollouts.moves import get_rollout, policy_of, requeue, transition
from chalicelib.rollouts.tick import reconcile
from edgeplane import protocol
from edgeplane.protocol import ExecutionState, MachineResult, Progress, Result

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

    def add(self, message: Progress) -> None:
        if isinstance(message, Result):
            if self.result is None or message.seq > self.result.seq:
                self.result = message
            return
        self.seq = max(self.seq, message.seq)
        for machine in valid_machines(message):
            known = self.machines.get(machine.machine)
            if known is None or known[0] < message.seq:
                self.machines[machine.machine] = (message.seq, machine)


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
            if report.result is not None:
                _apply_result(report, report.result, now, batch)
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


def _snapshot(machine: MachineResult, seq: int, now: float) -> str:
    """What is stored of a machine's report: as it came (a summary stays one: the API
    expands it with the plan's tasks when it is read)."""
    stored: dict[str, Any] = {"state": str(machine.state),
                              "steps": [asdict(s) for s in machine.steps], "seq": seq,
                              "at": now}
    if machine.summary is not None:
        stored["summary"] = str(machine.summary)
    return json.dumps(stored, separators=(",", ":"), default=str)


# --- results ---------------------------------------------------------------------------


def _apply_result(report: _Report, message: Result, now: float, batch: _Batch) -> None:
    target = ExecutionState(message.state)  # a final state: _group dropped the others
    if target == ExecutionState.FAILED and _retryable(message):
        _retry_or_fail(report, message, now, batch)
        return
    text = str(message.message)
    machines = {m.machine: _snapshot(m, message.seq, now) for m in valid_machines(message)}
    actions = [
        Execution.state.set(target), Execution.message.set(text),
        Execution.finished_at.set(now), Execution.updated_at.set(now),
        Execution.started_at.set(Execution.started_at | now),
        Execution.last_seq.set(message.seq), Execution.machines.set(machines),
        Execution.report_count.add(1),
    ]
    condition = (Execution.execution_id == report.execution_id) & \
        Execution.state.is_in(*IN_FLIGHT)
    old = _update(report, actions, condition)
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
    elif transition(execution, target, lambda: now, message=text,
                           changes=batch.changes, started_at=execution.started_at or now,
                           last_seq=message.seq, machines=machines):
        CLOSED.add(report.execution_id)
        LOG.info("execution %s %s: %s", report.execution_id, target, text)


def _retry_or_fail(report: _Report, message: Result, now: float, batch: _Batch) -> None:
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
    machines = {m.machine: _snapshot(m, message.seq, now) for m in valid_machines(message)}
    if transition(execution, ExecutionState.FAILED, lambda: now,
                  message=str(message.message), changes=batch.changes,
                  started_at=execution.started_at or now, last_seq=message.seq,
                  machines=machines):
        CLOSED.add(report.execution_id)


def _retryable(message: Result) -> bool:
    """True when every failed step says a later attempt may pass."""
    failed = [step for machine in message.machines for step in machine.steps
              if step.state == "failed"]
    return bool(failed) and all(step.retryable is True for step in failed)


# --- progress --------------------------------------------------------------------------


def _apply_progress(report: _Report, now: float, batch: _Batch) -> None:
    if report.execution_id in CLOSED:
        return  # its result came first: a late progress never reopens it
    same = Execution.execution_id == report.execution_id
    newer = Execution.last_seq.does_not_exist() | (Execution.last_seq < report.seq)
    # Sent or running, it is running after its first report: the execution as it was
    # tells whether this one moved it (and started it: a retry starts without a start).
    actions = _machine_actions(report, report.machines, now) + [
        Execution.state.set(ExecutionState.RUNNING),
        Execution.started_at.set(Execution.started_at | now)]
    old = _update(report, actions, same & newer & Execution.state.is_in(*IN_FLIGHT))
    if old is not None:
        if old.state == ExecutionState.SENT:
            batch.changes.moved(old, ExecutionState.SENT, ExecutionState.RUNNING, now)
        return
    if report.execution_id not in CLOSED:  # its result may have come meanwhile
        _merge_progress(report, now, batch)


def _machine_actions(report: _Report, machines: dict[str, tuple[int, MachineResult]],
                     now: float, last_seq: int | None = None) -> list[Any]:
    actions = [Execution.machines[machine].set(_snapshot(result, seq, now))
               for machine, (seq, result) in machines.items()]
    return actions + [Execution.last_seq.set(last_seq or report.seq),
                      Execution.updated_at.set(now), Execution.report_count.add(1)]


def _merge_progress(report: _Report, now: float, batch: _Batch) -> None:
    """The slow path: read, then write only the machines whose stored report is older."""
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
        stored = execution.machine_reports()
        newer = {machine: found for machine, found in report.machines.items()
                 if machine not in stored or int(stored[machine].get("seq", 0)) < found[0]}
        if not newer:
            LOG.debug("execution %s: progress %s is not newer; ignored",
                      report.execution_id, report.seq)
            return
        actions = _machine_actions(report, newer, now,
                                   last_seq=max(report.seq, int(execution.last_seq or 0)))
        unchanged = Execution.report_count == execution.report_count \
            if execution.report_count is not None else Execution.report_count.does_not_exist()
        if conditional_update(execution, actions, unchanged & Execution.state.is_in(*IN_FLIGHT)):
            return
    LOG.warning("execution %s: progress %s lost a race three times; dropped",
                report.execution_id, report.seq)


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
