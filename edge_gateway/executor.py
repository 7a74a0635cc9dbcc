"""Runs one plan on a site's machines: machines in parallel (bounded), steps in order.

A failing step fails its machine only: that machine's later steps are skipped, the other
machines carry on. Each error names the site, machine, step, task, BMC and what it said.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from edge_gateway.config import MachineConfig, SiteConfig
from edge_gateway.drivers.base import Driver
from edge_gateway.errors import BmcError, BmcUnreachableError, GatewayError
from edge_gateway.tasks import TaskContext, run_task
from edge_gateway.workers import WorkerPool, default_pool, run_bounded
from edgeplane.protocol import (
    MachineResult,
    MachineState,
    Plan,
    ProtocolError,
    StepResult,
    StepState,
    now,
)

LOG = logging.getLogger(__name__)

_SERVER_ERROR = re.compile(r"\bHTTP 5\d\d\b")

DriverFactory = Callable[[MachineConfig], Driver]
ReportFunction = Callable[[MachineResult], None]


class PlanExecutor:
    """``pool``: where machines run (the process's ``default_pool()`` if not given)."""

    def __init__(
        self,
        config: SiteConfig,
        driver_factory: DriverFactory,
        sleep: Callable[[float], None] = time.sleep,
        pool: WorkerPool | None = None,
    ) -> None:
        self.config = config
        self.driver_factory = driver_factory
        self.sleep = sleep
        self.pool = pool if pool is not None else default_pool()

    def execute(self, plan: Plan, report: ReportFunction,
                canceled: Callable[[], bool] = lambda: False) -> list[MachineResult]:
        """Run the plan; ``report`` gets a snapshot each time a machine's state changes.
        Once ``canceled()`` is true, each machine finishes its current step and skips the
        rest."""
        return run_bounded(self.pool, lambda m: self._run_machine(plan, m, report, canceled),
                           plan.machines, max(1, self.config.max_parallel))

    def _run_machine(self, plan: Plan, machine_id: str, report: ReportFunction,
                     canceled: Callable[[], bool]) -> MachineResult:
        steps = [(i, s) for i, s in enumerate(plan.steps) if machine_id in s.machines]
        results = [StepResult(task=s.task) for _, s in steps]
        snapshot = MachineResult(machine=machine_id, state=MachineState.RUNNING, steps=results)
        report(snapshot)
        machine = self.config.machine(machine_id)
        if machine is None:
            failed = [replace(r, state=StepState.SKIPPED) for r in results]
            message = (f"site {self.config.site} machine {machine_id}: not in this site's "
                       "configuration")
            failed[0] = replace(failed[0], state=StepState.FAILED, message=message)
            return self._finish(machine_id, failed, report)
        driver: Driver | None = None
        failed_already = False
        try:
            for position, (index, step) in enumerate(steps):
                if failed_already:
                    results[position] = replace(results[position], state=StepState.SKIPPED,
                                                message="skipped: an earlier step failed")
                    continue
                if canceled():
                    results[position] = replace(results[position], state=StepState.SKIPPED,
                                                message="skipped: the rollout was canceled")
                    continue
                started = now()
                results[position] = replace(results[position], state=StepState.RUNNING,
                                            started_at=started)
                report(replace(snapshot, steps=list(results)))
                try:
                    if driver is None:
                        driver = self.driver_factory(machine)
                    outcome = run_task(step.task, TaskContext(driver, machine, self.sleep),
                                       step.params)
                except (GatewayError, ProtocolError) as exc:
                    failed_already = True
                    message = (f"site {self.config.site} machine {machine_id} step {index} "
                               f"{step.task}: {exc}")
                    LOG.warning("%s", message)
                    results[position] = replace(results[position], state=StepState.FAILED,
                                                message=message, finished_at=now(),
                                                retryable=is_retryable(exc))
                except Exception as exc:  # a bug must fail the machine, not the gateway
                    LOG.exception("unexpected error on %s step %s", machine_id, index)
                    failed_already = True
                    results[position] = replace(
                        results[position], state=StepState.FAILED, finished_at=now(),
                        message=(f"site {self.config.site} machine {machine_id} step {index} "
                                 f"{step.task}: internal error: {exc!r}"),
                    )
                else:
                    results[position] = replace(
                        results[position], state=StepState.SUCCEEDED, changed=outcome.changed,
                        message=outcome.message, finished_at=now(), data=outcome.data,
                    )
        finally:
            if driver is not None:
                driver.close()
        return self._finish(machine_id, results, report)

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
    """A failure another attempt may not meet: the BMC did not answer, or answered 5xx.
    Refusals (credentials, parameters, capabilities) will fail again the same way."""
    if isinstance(exc, BmcUnreachableError):
        return True
    return isinstance(exc, BmcError) and bool(_SERVER_ERROR.search(exc.detail))
