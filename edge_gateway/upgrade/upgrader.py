"""The gateway's side of a field upgrade: what the gateway core asks of it.

A plan's last step may be ``gateway.upgrade`` (the contract refuses one that is not last).
The site's plans run one after another, so when that step runs every plan before it has
finished; the gateway then fetches and installs the version (``artifact``, ``install``),
writes down the trial (``trial.json``: the execution, the machines' results so far, the
deadline), stops taking plans (those queued stay in the journal) and exits with
``RESTART_EXIT_CODE``. Its supervisor starts the new version, which proves its health
(``health.TrialWatch``); the supervisor keeps it (``current`` switched) or goes back to the
previous one, and writes the outcome. Whichever version runs then reports the outcome as
the execution's result (``settle``), once: the journal says when it has.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.config import SiteConfig
from edge_gateway.errors import GatewayError
from edge_gateway.journal import Journal, PlanState
from edge_gateway.upgrade.health import TrialWatch
from edge_gateway.upgrade.layout import ROOT_ENV, Layout, LayoutError, Outcome, new_trial
from edgeplane.protocol import (
    ExecutionState,
    MachineResult,
    Plan,
    PlanStep,
    ProtocolError,
    Result,
    plain,
    task_spec,
)

LOG = logging.getLogger(__name__)

UPGRADE_TASK = "gateway.upgrade"
OUTCOME_POLL = 0.2  # seconds between two looks for the supervisor's verdict, on trial

Finish = Callable[[str, list[MachineResult], ExecutionState, str, str], Result]


class UpgradeError(GatewayError):
    """The upgrade could not start: the running version carries on, and says why."""


@dataclass(frozen=True)
class Done:
    """The step ended without a restart (the version runs already): its message."""

    message: str


class Upgrades:
    """``layout`` None: this gateway was not started by ``edge-gateway supervise``, so
    nothing would start another version: an upgrade step fails, saying so."""

    def __init__(self, layout: Layout | None, config_path: Path | None, version: str,
                 request_restart: Callable[[], None] = lambda: None) -> None:
        self.layout = layout
        self.config_path = config_path
        self.version = version
        self.request_restart = request_restart
        self.restart_due = False
        self._watch: TrialWatch | None = None
        self._held: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls, config_path: Path, version: str,
                         request_restart: Callable[[], None]) -> Upgrades:
        root = os.environ.get(ROOT_ENV)
        return cls(Layout(root) if root else None, config_path, version, request_restart)

    # --- at start --------------------------------------------------------------------

    def holds(self, execution_id: str) -> bool:
        """An execution the upgrade reports (a trial's, or one whose outcome is written):
        the gateway must not run its plan again."""
        return execution_id in self._held

    def settle(self, config: SiteConfig, journal: Journal, finish: Finish) -> None:
        """At the gateway's start: report an outcome the supervisor wrote; on trial, start
        proving health and wait for the verdict, to report it."""
        if self.layout is None:
            return
        try:
            outcome = self.layout.read_outcome()
            trial = self.layout.read_trial()
        except LayoutError as exc:
            LOG.error("field upgrade records unreadable, ignored: %s", exc)
            return
        self._held = {record.execution_id for record in (outcome, trial) if record is not None}
        if outcome is not None:
            self._report(outcome, journal, finish)
        if trial is None:
            return
        if trial.to_version != self.version:
            LOG.warning("version %s on trial, but this is %s: the trial is the supervisor's "
                        "to end", trial.to_version, self.version)
            return
        LOG.info("on trial as version %s (execution %s): proving health within %.0f s",
                 self.version, trial.execution_id, trial.health_timeout)
        self._watch = TrialWatch(self.layout, trial, self.version, config, journal)
        self._watch.start()
        threading.Thread(target=self._await_verdict, args=(journal, finish),
                         name="upgrade-verdict", daemon=True).start()

    def connected(self) -> None:
        if self._watch is not None:
            self._watch.connected()

    def _await_verdict(self, journal: Journal, finish: Finish) -> None:
        assert self.layout is not None
        while True:
            try:
                outcome = self.layout.read_outcome()
                if outcome is None and self.layout.read_trial() is None:
                    return  # ended, and reported by another start
            except LayoutError as exc:
                LOG.error("field upgrade records unreadable: %s", exc)
                return
            if outcome is not None:
                self._report(outcome, journal, finish)
                return
            threading.Event().wait(OUTCOME_POLL)

    def _report(self, outcome: Outcome, journal: Journal, finish: Finish) -> None:
        """The outcome as its execution's result, unless the journal says it was sent."""
        assert self.layout is not None
        with self._lock:
            journaled = journal.plan(outcome.execution_id)
            if journaled is not None and journaled.state != PlanState.DONE:
                try:
                    machines = [MachineResult.from_dict(m) for m in outcome.machines]
                except ProtocolError as exc:
                    LOG.error("upgrade outcome: machines unreadable (%s); reported without",
                              exc)
                    machines = []
                state = ExecutionState.SUCCEEDED if outcome.succeeded else \
                    ExecutionState.FAILED
                LOG.info("execution %s: %s", outcome.execution_id, outcome.message)
                finish(outcome.execution_id, machines, state, outcome.message, outcome.detail)
            elif journaled is None:
                LOG.warning("upgrade outcome for execution %s, which the journal does not "
                            "hold: not reported", outcome.execution_id)
            self.layout.clear(self.layout.outcome_file)

    # --- the step --------------------------------------------------------------------

    @staticmethod
    def step_of(plan: Plan) -> PlanStep | None:
        """The plan's upgrade step (its last, if any)."""
        if plan.steps and task_spec(plan.steps[-1].task).on_gateway:
            return plan.steps[-1]
        return None

    def begin(self, plan: Plan, step: PlanStep, machines: list[MachineResult]) -> Done | None:
        """Install the step's version and write its trial: None once it is ready for
        ``hand_over``; ``Done`` if there is nothing to do. UpgradeError (or
        another GatewayError) if it cannot start; the running version is untouched."""
        params = task_spec(step.task).validate(step.params)
        version, sha256 = params["version"], params["sha256"]
        if version == self.version:
            return Done(f"the gateway runs version {version} already")
        if self.layout is None or self.config_path is None:
            raise UpgradeError(f"this gateway was not started by `edge-gateway supervise` "
                               f"({ROOT_ENV} is not set): nothing would start version "
                               f"{version}")
        layout = self.layout
        try:
            if layout.read_trial() is not None:
                raise UpgradeError("another upgrade is on trial; try again once it ended")
            layout.prune(keep={version} if layout.installed_from(version) == sha256 else set())
            if layout.installed_from(version) != sha256:
                # Loaded for an upgrade only: a gateway that never upgrades never holds them.
                from edge_gateway.upgrade.artifact import check_wheel, download
                from edge_gateway.upgrade.install import install

                shutil.rmtree(layout.downloads, ignore_errors=True)
                LOG.info("upgrade to %s: downloading %s", version, params["url"])
                wheel = check_wheel(download(params["url"], sha256, layout.downloads), version)
                try:
                    install(layout, wheel, sha256, self.config_path)
                finally:
                    shutil.rmtree(layout.downloads, ignore_errors=True)
            trial = new_trial(plan.execution_id, self.version, version,
                              params["health_timeout"], plan.detail,
                              [plain(machine) for machine in machines])
            layout.clear(layout.health_file)
            layout.write_trial(trial)
        except LayoutError as exc:
            raise UpgradeError(f"the versions' folder {layout.root}: {exc}") from None
        except OSError as exc:
            raise UpgradeError(f"the versions' folder {layout.root}: {exc}") from None
        LOG.info("upgrade to %s installed; restarting into it (execution %s)", version,
                 plan.execution_id)
        return None

    def hand_over(self) -> None:
        """Ask for the restart into the version on trial (once the plans stopped)."""
        self.restart_due = True
        self.request_restart()
