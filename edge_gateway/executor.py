"""Runs one plan on a site's machines: machines in parallel (bounded), steps in order.

A failing step fails its machine only: that machine's later steps are skipped, the other
machines carry on. Each error names the site, machine, step, task, BMC and what it said.

Exactly once on the site: each step is journaled as it starts (before the BMC is asked
anything) and as it ends, so a plan resumed after a crash runs each step at most once that
acts every time; one that may or may not have happened is ``uncertain``, never repeated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from edge_gateway.cache.pins import pinned
from edge_gateway.config import MachineConfig, SiteConfig
from edge_gateway.drivers.base import Driver
from edge_gateway.errors import BmcError, BmcUnreachableError, GatewayError
from edge_gateway.journal import Journal, JournaledStep
from edge_gateway.tasks import RECHECKS, TaskContext, recheck_task, run_task
from edge_gateway.workers import WorkerPool, default_pool, run_bounded
from edgeplane.protocol import (
    MachineResult,
    MachineState,
    Plan,
    PlanStep,
    ProtocolError,
    StepResult,
    StepState,
    now,
    plain,
)

if TYPE_CHECKING:  # the cache's modules are loaded only by a site that has one
    from edge_gateway.cache.site import SiteCache

LOG = logging.getLogger(__name__)

_SERVER_ERROR = re.compile(r"\bHTTP 5\d\d\b")

DriverFactory = Callable[[MachineConfig], Driver]
ReportFunction = Callable[[MachineResult], None]


class PlanExecutor:
    """``pool``: where machines run (the process's ``default_pool()`` if not given).
    ``journal``: where each step is recorded as it starts and ends, and what a plan
    resumed after a restart starts from (none: nothing is recorded)."""

    def __init__(
        self,
        config: SiteConfig,
        driver_factory: DriverFactory,
        sleep: Callable[[float], None] = time.sleep,
        pool: WorkerPool | None = None,
        journal: Journal | None = None,
        artifacts: SiteCache | None = None,
    ) -> None:
        self.config = config
        self.driver_factory = driver_factory
        self.sleep = sleep
        self.pool = pool if pool is not None else default_pool()
        self.journal = journal
        self.artifacts = artifacts  # the site's artifact cache (steps fetch images into it)

    def execute(self, plan: Plan, report: ReportFunction,
                canceled: Callable[[], bool] = lambda: False) -> list[MachineResult]:
        """Run the plan; ``report`` gets a snapshot each time a machine's state changes.
        Once ``canceled()`` is true, each machine finishes its current step and skips the
        rest.

        A plan the journal has steps of resumes: a machine's steps that ended are not run
        again (their results come from the journal), and one that started but did not end
        (in flight when the gateway stopped) runs again if it is an "ensure", or else is
        re-checked (``tasks.recheck_task``): succeeded if the BMC shows it done, otherwise
        ``uncertain`` with what the BMC shows, and the machine stops there."""
        started = self.journal.steps(plan.execution_id) if self.journal is not None else {}
        with pinned(self.artifacts, plan):  # none of its artifacts leaves the cache
            return run_bounded(
                self.pool,
                lambda m: self._run_machine(plan, m, report, canceled, started.get(m, {})),
                plan.machines, max(1, self.config.max_parallel))

    def _run_machine(self, plan: Plan, machine_id: str, report: ReportFunction,
                     canceled: Callable[[], bool],
                     journaled: dict[int, JournaledStep]) -> MachineResult:
        """``journaled``: the machine's steps that started before a restart, by position."""
        steps = [(i, s) for i, s in enumerate(plan.steps) if machine_id in s.machines]
        results = [StepResult(task=s.task) for _, s in steps]
        for position, ended in journaled.items():
            if ended.result is not None and position < len(results):
                results[position] = decode_step(ended.result)
        snapshot = MachineResult(machine=machine_id, state=MachineState.RUNNING, steps=results)
        report(replace(snapshot, steps=list(results)))
        machine = self.config.machine(machine_id)
        if machine is None:
            failed = [replace(r, state=StepState.SKIPPED) for r in results]
            message = (f"site {self.config.site} machine {machine_id}: not in this site's "
                       "configuration")
            failed[0] = replace(failed[0], state=StepState.FAILED, message=message)
            return self._finish(machine_id, failed, report)
        drivers: list[Driver] = []

        def driver() -> Driver:
            if not drivers:
                drivers.append(self.driver_factory(machine))
            return drivers[0]

        stopped: str | None = None  # why the machine's later steps are skipped
        try:
            for position, (index, step) in enumerate(steps):
                record = journaled.get(position)
                if record is not None and record.result is not None:  # ended before
                    stopped = stopped or _stops(results[position])
                    continue
                if stopped:
                    results[position] = replace(results[position], state=StepState.SKIPPED,
                                                message=f"skipped: {stopped}")
                    continue
                # A step in flight is the machine's current step: a cancel lets it end.
                if record is None and canceled():
                    results[position] = replace(results[position], state=StepState.SKIPPED,
                                                message="skipped: the rollout was canceled")
                    continue
                results[position] = replace(
                    results[position], state=StepState.RUNNING,
                    started_at=record.started_at if record is not None else now())
                report(replace(snapshot, steps=list(results)))
                if self.journal is not None and record is None:
                    self.journal.step_started(plan.execution_id, machine_id, position,
                                              step.task)
                where = (f"site {self.config.site} machine {machine_id} step {index} "
                         f"{step.task}")
                results[position] = self._step(step, machine, driver, where,
                                               results[position], in_flight=record is not None,
                                               earlier=tuple(results[:position]))
                if self.journal is not None:
                    self.journal.step_ended(plan.execution_id, machine_id, position,
                                            step.task, encode_step(results[position]))
                stopped = _stops(results[position])
        finally:
            for opened in drivers:
                opened.close()
        return self._finish(machine_id, results, report)

    def _step(self, step: PlanStep, machine: MachineConfig, driver: Callable[[], Driver],
              where: str, result: StepResult, in_flight: bool,
              earlier: tuple[StepResult, ...] = ()) -> StepResult:
        """Run one step (or, in flight when the gateway stopped, re-check it): its result."""
        try:
            ctx = TaskContext(driver(), machine, self.sleep, artifacts=self.artifacts,
                              earlier=earlier)
            if in_flight and step.task in RECHECKS:
                return self._recheck(step, ctx, where, result)
            outcome = run_task(step.task, ctx, step.params)
        except (GatewayError, ProtocolError) as exc:
            message = f"{where}: {exc}"
            LOG.warning("%s", message)
            return replace(result, state=StepState.FAILED, message=message,
                           finished_at=now(), retryable=is_retryable(exc))
        except Exception as exc:  # a bug must fail the machine, not the gateway
            LOG.exception("unexpected error: %s", where)
            return replace(result, state=StepState.FAILED, finished_at=now(),
                           message=f"{where}: internal error: {exc!r}")
        return replace(result, state=StepState.SUCCEEDED, changed=outcome.changed,
                       message=outcome.message, finished_at=now(), data=outcome.data)

    @staticmethod
    def _recheck(step: PlanStep, ctx: TaskContext, where: str,
                 result: StepResult) -> StepResult:
        """A step in flight at a restart, of a task that could act twice: read, never act
        (unless its re-check says it may simply run again)."""
        said = f"{where}: in flight when the gateway stopped"
        try:
            checked = recheck_task(step.task, ctx, step.params)
        except (GatewayError, ProtocolError) as exc:
            message = f"{said}; not run again; the BMC could not be read: {exc}"
            LOG.warning("%s", message)
            return replace(result, state=StepState.UNCERTAIN, message=message,
                           finished_at=now())
        if checked is None:  # an "ensure" with these parameters: it runs again
            outcome = run_task(step.task, ctx, step.params)
            return replace(result, state=StepState.SUCCEEDED, changed=outcome.changed,
                           message=outcome.message, finished_at=now(), data=outcome.data)
        if checked.done:
            LOG.info("%s; the BMC shows it done: %s", said, checked.readout)
            return replace(result, state=StepState.SUCCEEDED, changed=True,
                           message=f"done before the gateway restarted: {checked.readout}",
                           finished_at=now(), data=checked.data)
        message = (f"{said}; it may or may not have happened, and is not run again (it "
                   f"could act twice); the BMC shows: {checked.readout}")
        LOG.warning("%s", message)
        return replace(result, state=StepState.UNCERTAIN, message=message, finished_at=now(),
                       data=checked.data)

    @staticmethod
    def _finish(machine_id: str, results: list[StepResult],
                report: ReportFunction) -> MachineResult:
        ok = all(r.state == StepState.SUCCEEDED for r in results)
        final = MachineResult(
            machine=machine_id,
            state=MachineState.SUCCEEDED if ok else MachineState.FAILED,
            steps=results,
        )
        report(final)
        return final


def _stops(result: StepResult) -> str | None:
    """Why a step's end stops its machine's later steps, or None."""
    if result.state == StepState.UNCERTAIN:
        return "an earlier step is uncertain"
    if result.state == StepState.FAILED:
        return "an earlier step failed"
    return None


def encode_step(result: StepResult) -> bytes:
    """A step's result as the journal keeps it."""
    return json.dumps(plain(result), separators=(",", ":")).encode()


def decode_step(data: bytes) -> StepResult:
    """A step's result from the journal (written by ``encode_step``)."""
    fields = json.loads(data)
    return StepResult(**{k: v for k, v in fields.items() if k in _STEP_FIELDS})


_STEP_FIELDS = frozenset(f.name for f in dataclasses.fields(StepResult))


class ProgressBatcher:
    """Collects machine snapshots and lets at most one Progress out per interval.

    Whatever is still pending when the plan ends goes out in the final Result, which
    carries every machine, so nothing is lost by holding snapshots back.
    """

    def __init__(self, interval: float, send: Callable[[list[MachineResult]], None],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.send = send
        self.monotonic = monotonic
        self._pending: dict[str, MachineResult] = {}
        self._last_sent = float("-inf")
        self._lock = threading.Lock()

    def update(self, snapshot: MachineResult) -> None:
        with self._lock:
            self._pending[snapshot.machine] = snapshot
            if self.monotonic() - self._last_sent < self.interval:
                return
            batch = list(self._pending.values())
            self._pending.clear()
            self._last_sent = self.monotonic()
        self.send(batch)


def is_retryable(exc: Exception) -> bool:
    """A failure another attempt may not meet: the BMC did not answer, or answered 5xx, or
    an image's download was cut.
    Refusals (credentials, parameters, capabilities) will fail again the same way."""
    if isinstance(exc, BmcUnreachableError):
        return True
    # An image's download cut by the WAN (the next attempt resumes it); only a site whose
    # cache has fetched something has the module, so a site without a cache never loads it.
    fetch = sys.modules.get("edge_gateway.cache.fetch")
    if fetch is not None and isinstance(exc, fetch.FetchInterrupted):
        return True
    return isinstance(exc, BmcError) and bool(_SERVER_ERROR.search(exc.detail))
