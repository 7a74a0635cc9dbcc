"""``edge-gateway supervise``: the parent process that runs the site's gateway, restarts it,
and decides whether a new version stays.

systemd (``packaging/edge-gateway.service``), or the local stack, runs the supervisor; the
supervisor runs ``<root>/current/bin/edge-gateway run`` and starts it again whenever it
exits, at once when it asks to (``RESTART_EXIT_CODE``), after a growing pause when it
crashed. While a version is on trial (``trial.json``) it runs that version instead, and:

- keeps it once it proved healthy (``health.json``): ``previous`` then ``current`` are
  switched to it, and the outcome written;
- goes back when it did not in time (killed at the deadline), or exited ``max_starts``
  times before it did: ``current`` was never switched, so the previous version simply runs
  again, and the outcome says why, with the last lines the failed version wrote.

The judge of a trial must not be the version on trial: a version that cannot even start
could not roll itself back, and systemd alone would restart it for ever. So the supervisor
is the code of the version that was current when the service started, and it loads
nothing but the standard library and ``layout``.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from edge_gateway.upgrade.layout import (
    RESTART_EXIT_CODE,
    ROOT_ENV,
    Health,
    Layout,
    LayoutError,
    Outcome,
    Trial,
)

LOG = logging.getLogger(__name__)

POLL = 0.2  # seconds between two looks at the child and the trial
STOP_GRACE = 25.0  # seconds a stopped gateway has to finish (systemd waits 30)
TRIAL_RESTART_DELAY = 1.0
CRASH_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after 1, 2, 3... crashes in a row
LAST_WORDS = 12  # lines of a failed version's output its outcome quotes
MAX_LINE = 300  # characters kept of each
MAX_READ = 64 * 1024  # bytes of output read at once (a longer line comes in pieces)


class Supervisor:
    def __init__(self, layout: Layout, config_path: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.layout = layout
        self.config_path = config_path
        self.clock = clock
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._said: collections.deque[str] = collections.deque(maxlen=LAST_WORDS)
        self._crashes = 0

    def run(self) -> int:
        """Until SIGTERM or SIGINT: run the gateway, judge trials. 0 once stopped."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stopping.set())
        if self.layout.version_of("current") is None:
            LOG.error("no current version in %s: install or adopt one first (edge-gateway "
                      "versions adopt)", self.layout.root)
            return 2
        while not self._stopping.is_set():
            self._once()
        return 0

    def stop(self) -> None:
        self._stopping.set()

    # --- one start of the gateway ----------------------------------------------------

    def _once(self) -> None:
        trial = self._trial()
        if trial is not None:
            if self.layout.version_of("current") == trial.to_version:
                self._keep(trial)  # switched before a crash: finish what was begun
                return
            if self.clock() >= trial.deadline:
                self._roll_back(trial, f"it did not prove healthy within "
                                f"{trial.health_timeout:.0f} s ({self._missing()})")
                return
            if trial.starts >= trial.max_starts:
                self._roll_back(trial, f"it stopped at each of its {trial.starts} starts "
                                f"before it proved healthy ({self._missing()})")
                return
            trial.starts += 1
            self.layout.write_trial(trial)
            LOG.info("trying version %s (start %d of %d, %.0f s left)", trial.to_version,
                     trial.starts, trial.max_starts, trial.deadline - self.clock())
        code = self._run_child(trial)
        if self._stopping.is_set():
            return
        if code == RESTART_EXIT_CODE:
            self._crashes = 0
            return
        trial = self._trial()
        if trial is not None:
            LOG.warning("version %s on trial exited with status %s", trial.to_version, code)
            self._stopping.wait(TRIAL_RESTART_DELAY)
            return
        delay = CRASH_DELAYS[min(self._crashes, len(CRASH_DELAYS) - 1)]
        self._crashes += 1
        LOG.warning("the gateway exited with status %s; starting it again in %.0f s", code,
                    delay)
        self._stopping.wait(delay)

    def _run_child(self, trial: Trial | None) -> int | None:
        """Start the gateway (the trial's version, or current) and watch it until it exits,
        the supervisor stops, or the trial ends; its exit status."""
        version = trial.to_version if trial is not None else None
        command = [str(self.layout.executable(version)), "run", "--config",
                   str(self.config_path)]
        self.layout.clear(self.layout.health_file)
        self._said.clear()
        started = self.clock()
        try:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, ROOT_ENV: str(self.layout.root)})
        except OSError as exc:
            self._said.append(f"could not start {command[0]}: {exc}")
            LOG.error("could not start %s: %s", command[0], exc)
            return None
        self._child = child
        relay = threading.Thread(target=self._relay, args=(child.stdout,), daemon=True)
        relay.start()
        try:
            while (code := child.poll()) is None:
                if self._stopping.wait(POLL):
                    return self._end(child, "the supervisor is stopping")
                if trial is None:
                    if self.clock() - started > CRASH_DELAYS[-1]:
                        self._crashes = 0  # it ran a while: the next crash starts over
                    continue
                health = self._health()
                if health is not None and health.healthy and health.version == \
                        trial.to_version and health.pid == child.pid:
                    self._keep(trial)
                    trial = None
                elif self.clock() >= trial.deadline:
                    self._end(child, "its health deadline passed")
                    self._roll_back(trial, f"it did not prove healthy within "
                                    f"{trial.health_timeout:.0f} s ({self._missing()})")
                    return RESTART_EXIT_CODE  # the version before, at once
            return code
        finally:
            relay.join(timeout=2)
            self._child = None

    def _end(self, child: subprocess.Popen[bytes], why: str) -> int | None:
        LOG.info("stopping the gateway (pid %d): %s", child.pid, why)
        child.terminate()
        try:
            return child.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()

    def _relay(self, stream: IO[bytes] | None) -> None:
        """Pass the gateway's output on (to the journal of systemd, or the stack's log),
        keeping its last lines: the words a failed version's outcome quotes."""
        if stream is None:
            return
        out = sys.stdout.buffer
        for line in iter(lambda: stream.readline(MAX_READ), b""):
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):  # our output is gone: keep draining the pipe, or
                pass  # the gateway would block on a full one
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._said.append(text[:MAX_LINE])

    # --- verdicts --------------------------------------------------------------------

    def _keep(self, trial: Trial) -> None:
        """The version proved healthy: it becomes current, the one before previous."""
        took = self.clock() - trial.started_at
        if self.layout.version_of("current") != trial.to_version:
            self.layout.point("previous", trial.from_version)
            self.layout.point("current", trial.to_version)
        self._end_trial(trial, True, f"gateway upgraded from {trial.from_version} to "
                        f"{trial.to_version}: healthy after {took:.1f} s (journal, drivers, "
                        "self-test, connected)")
        self.layout.prune(keep=set())

    def _roll_back(self, trial: Trial, reason: str) -> None:
        said = " | ".join(list(self._said)[-5:])
        self._end_trial(trial, False, f"gateway upgrade to {trial.to_version} failed: "
                        f"{reason}; rolled back to {trial.from_version}"
                        + (f". Its last output: {said}" if said else ""))

    def _end_trial(self, trial: Trial, kept: bool, message: str) -> None:
        (LOG.info if kept else LOG.error)("%s", message)
        self.layout.write_outcome(Outcome(
            execution_id=trial.execution_id, succeeded=kept, message=message,
            from_version=trial.from_version, to_version=trial.to_version,
            detail=trial.detail, machines=trial.machines, at=self.clock()))
        self.layout.clear(self.layout.trial_file)
        self.layout.clear(self.layout.health_file)

    # --- records ---------------------------------------------------------------------

    def _trial(self) -> Trial | None:
        try:
            return self.layout.read_trial()
        except LayoutError as exc:  # current was never switched: dropping it is safe
            LOG.error("%s; the trial is dropped and the current version runs", exc)
            self.layout.clear(self.layout.trial_file)
            return None

    def _health(self) -> Health | None:
        try:
            return self.layout.read_health()
        except LayoutError:
            return None  # being written: read again at the next look

    def _missing(self) -> str:
        health = self._health()
        return f"not proved: {health.missing()}" if health is not None else \
            "it never reported its health"


def supervise(root: Path, config_path: Path) -> int:
    return Supervisor(Layout(root), config_path).run()
