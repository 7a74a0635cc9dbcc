"""What a batch of execution moves does besides the moves themselves: counters and events.

A dispatch round claims hundreds of executions and an ingest batch finishes as many. Each
move is its own conditional update (that is what makes it happen once), but its bookkeeping
need not cost requests of its own: ``Changes`` collects the moves that took and ``flush``
writes, per rollout, one ADD of the rollout's counters and its waves' (``wave_counters``),
and one event-log item and one EventBridge event per ``EVENT_CHUNK`` moves.

A crash between the moves and the flush loses counts (never moves): the tick recounts every
live rollout from its executions (``tick.reconcile``), as it did for a lost single ADD.

Where sites finished, the ADDs answer the counters as they left them (``counted``): what
tells the batch whether it made anything possible (a wave complete, a failure to judge),
with no read after its writes. Of batches finishing a wave's last sites at once, the one
whose ADD completes it is the one that sees it complete.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib import audit
from chalicelib.models import Execution, Rollout, Wave, update_returning
from chalicelib.rollouts import states, wave_counters
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)

IN_FLIGHT = frozenset({ExecutionState.SENT, ExecutionState.RUNNING})


@dataclass
class _RolloutChanges:
    in_flight: int = 0
    done: int = 0
    wave_done: Counter[int] = field(default_factory=Counter)
    wave_failed: Counter[int] = field(default_factory=Counter)
    states: Counter[str] = field(default_factory=Counter)  # executions per state, +/-
    moves: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Counted:
    """A rollout in which sites finished, and the waves they finished in, with their
    counters as this batch's ADDs left them."""

    rollout: Rollout
    waves: list[Wave]


class Changes:
    """Execution moves that took, to be counted and logged together: one per dispatch
    round or ingest batch (``moved`` may be called from several threads). As a context
    manager, it flushes on the way out, raised or not. ``counted``: what the flush
    answered, per rollout in which sites finished."""

    def __init__(self) -> None:
        self._by_rollout: dict[str, _RolloutChanges] = defaultdict(_RolloutChanges)
        self._lock = threading.Lock()
        self.counted: dict[str, Counted] = {}

    def __enter__(self) -> Changes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()  # what took is counted and logged, even when the batch raised

    def __bool__(self) -> bool:
        return bool(self._by_rollout)

    def moved(self, execution: Execution, source: ExecutionState, target: ExecutionState,
              now: float) -> None:
        """``execution`` (its values after the move) went from ``source`` to ``target``."""
        with self._lock:
            self._moved(execution, source, target, now)

    def _moved(self, execution: Execution, source: ExecutionState, target: ExecutionState,
               now: float) -> None:
        counts = self._by_rollout[execution.rollout_id]
        counts.states[str(source)] -= 1
        counts.states[str(target)] += 1
        if target in IN_FLIGHT and source not in IN_FLIGHT:
            counts.in_flight += 1
        if source in IN_FLIGHT and target not in IN_FLIGHT:
            counts.in_flight -= 1
        wave = int(execution.wave or 0)
        if target in states.TERMINAL_EXECUTION_STATES:
            counts.done += 1
            counts.wave_done[wave] += 1
            if target in states.FAILED_EXECUTION_STATES:
                counts.wave_failed[wave] += 1
        counts.moves.append({
            "site_id": execution.site_id, "execution_id": execution.execution_id,
            "state": str(target), "previous": str(source), "wave": wave,
            "attempt": int(execution.attempt or 1), "message": execution.message, "at": now})

    def flush(self) -> None:
        """Write the log and the events, then the counters; forget what was written. The
        log first: a reader who sees a rollout finished by its counters finds every move
        that finished it in the log (a writer that stops between the two leaves counters
        short, which the tick's recount heals, never a log short of what was counted)."""
        while self._by_rollout:
            rollout_id, counts = self._by_rollout.popitem()
            if not counts.moves:
                continue
            audit.record_moves(rollout_id, counts.moves)
            actions: list[Action] = [Rollout.moved_at.set(max(move["at"] for move in counts.moves))]
            if counts.in_flight:
                actions.append(Rollout.in_flight.add(counts.in_flight))
            if counts.done:
                actions.append(Rollout.done.add(counts.done))
            per_state = [Rollout.state_counts[state].add(delta)
                         for state, delta in sorted(counts.states.items()) if delta]
            per_wave = wave_counters.adding(counts.wave_done, counts.wave_failed)
            stored, waves_counted = _count(rollout_id, actions, per_state, per_wave,
                                           "ALL_NEW" if counts.done else "NONE")
            # A rollout whose Wave items keep its waves' counters: an ADD each.
            waves = [] if waves_counted else _count_wave_items(rollout_id, counts)
            if stored:
                rollout = Rollout.from_raw_data(stored)
                if waves_counted:
                    waves = [wave_counters.from_rollout(rollout, wave)
                             for wave in counts.wave_done]
                self.counted[rollout_id] = Counted(rollout, waves)


def _count(rollout_id: str, actions: list[Action], per_state: list[Action],
           per_wave: list[Action], answer: str) -> tuple[dict[str, Any] | None, bool]:
    """One ADD of the rollout's counters, its waves' with them; (what it answered, whether
    the waves were counted there). A rollout stored before it kept per-state or per-wave
    counts refuses their ADD: it is counted without them (the next recount writes its
    per-state counts; its Wave items count its waves)."""
    attempts = [actions + per_state + per_wave, actions + per_state, actions]
    for number, attempt in enumerate(attempts):
        if number and attempt == attempts[number - 1]:
            continue
        try:
            return (update_returning(Rollout(rollout_id), attempt, values=answer),
                    number == 0 or not per_wave)
        except PynamoDBException as exc:
            if exc.cause_response_code != "ValidationException" or number == 2:
                raise
            LOG.info("rollout %s keeps no %s; counted without them", rollout_id,
                     "wave counters" if number == 0 and per_wave else "state_counts")
    raise AssertionError("unreachable: the last attempt returns or raises")


def _count_wave_items(rollout_id: str, counts: _RolloutChanges) -> list[Wave]:
    """One ADD per wave in which sites finished, each answering the counters it left."""
    waves = []
    for wave, done in counts.wave_done.items():
        wave_actions: list[Action] = [Wave.done.add(done)]
        if counts.wave_failed[wave]:
            wave_actions.append(Wave.failed.add(counts.wave_failed[wave]))
        counters = Wave(rollout_id, wave)
        counters.update(actions=wave_actions)
        waves.append(counters)
    return waves
