"""The gateway's durable memory (SQLite): plans received, the steps they ran, the cancels
received, and messages not yet acknowledged.

A site finishes what it started, exactly once: a plan is journaled before it runs, and each
step of each machine is journaled as it starts (committed before the BMC is asked anything)
and as it ends, so a gateway that restarts resumes each machine from its first unfinished
step, and knows which step was in flight (``executor`` decides what to do with it). A cancel
is journaled before it is acted on, so a restart does not resume a canceled plan. Every
message for the cloud goes through the outbox and stays there until the broker acknowledges
it (MQTT PUBACK), so results survive a restart with the WAN down.

Every commit survives the gateway's crash. The ones whose loss would lose a plan the broker
counts delivered or make a step run twice (a plan accepted, a step's start, a cancel) are
also fsynced before they return (``synchronous=FULL``), so they survive a power cut; the
others (``NORMAL``, one fsync per WAL checkpoint) may lose the last moments before one: a
step that ended then looks in flight (re-checked, not repeated), and a report the broker
had not acknowledged may be sent again (its id lets the cloud drop it) or not at all (the
cloud's timeout and a plan sent again cover it).

The schema only grows (``CREATE TABLE IF NOT EXISTS``): a journal written by an older
gateway opens as it is, with the new tables added empty.

Plans are never deleted: an execution is how a plan received again is recognized, and a
signed plan may be sent again (replayed) until its signature expires, up to
``protocol.MAX_SIGNATURE_TTL`` after it was received. Pruning, if it comes, must keep every
plan received less than that long ago.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    execution_id TEXT PRIMARY KEY,
    payload      BLOB NOT NULL,
    state        TEXT NOT NULL,
    seq          INTEGER NOT NULL DEFAULT 0,
    result       BLOB,
    received_at  REAL NOT NULL,
    finished_at  REAL
);
CREATE TABLE IF NOT EXISTS outbox (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    topic      TEXT NOT NULL,
    payload    BLOB NOT NULL,
    retain     INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL,
    machine      TEXT NOT NULL,
    position     INTEGER NOT NULL,
    task         TEXT NOT NULL,
    started_at   REAL NOT NULL,
    result       BLOB,
    PRIMARY KEY (execution_id, machine, position)
);
CREATE TABLE IF NOT EXISTS cancels (
    execution_id TEXT PRIMARY KEY,
    reason       TEXT NOT NULL,
    received_at  REAL NOT NULL
);
"""

MAX_CANCELS = 10_000  # cancels kept; the oldest are forgotten first


class PlanState(StrEnum):
    RUNNING = "running"
    DONE = "done"


@dataclass(frozen=True)
class OutboxMessage:
    message_id: str
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True)
class JournaledStep:
    """A step of one machine that started: ``result`` (the step's result as JSON) is None
    while it has not ended, which after a restart means it was in flight."""

    position: int  # among the machine's steps in the plan
    task: str
    started_at: float
    result: bytes | None


@dataclass(frozen=True)
class JournaledPlan:
    execution_id: str
    payload: bytes  # as received, signature and all
    state: PlanState
    result: bytes | None
    received_at: float


CACHE_KIB = 256  # SQLite's page cache for the journal (see ``Journal.__init__``)


class Journal:
    """One site's journal. Thread-safe: the MQTT thread and plan workers share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The journal is written far more than it is read: a small page cache (SQLite's
        # default holds up to 2 MiB) keeps a plan's step records from staying resident.
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        """Commits made inside are fsynced before they return (hold ``_lock``)."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")

    # --- plans ---------------------------------------------------------------------

    def accept_plan(self, execution_id: str, payload: bytes) -> bool:
        """Record a received plan; False if this execution was already received."""
        with self._lock, self._synced():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO plans (execution_id, payload, state, received_at) "
                "VALUES (?, ?, ?, ?)",
                (execution_id, payload, PlanState.RUNNING, time.time()),
            )
            return cursor.rowcount == 1

    def plan(self, execution_id: str) -> JournaledPlan | None:
        with self._lock:
            row = self._db.execute(
                "SELECT execution_id, payload, state, result, received_at FROM plans "
                "WHERE execution_id = ?",
                (execution_id,),
            ).fetchone()
        return _plan(row) if row else None

    def unfinished_plans(self) -> list[JournaledPlan]:
        with self._lock:
            rows = self._db.execute(
                "SELECT execution_id, payload, state, result, received_at FROM plans "
                "WHERE state = ? ORDER BY received_at",
                (PlanState.RUNNING,),
            ).fetchall()
        return [_plan(row) for row in rows]

    def next_seq(self, execution_id: str) -> int:
        """The next report number for an execution; it keeps growing across restarts."""
        with self._lock:
            self._db.execute("UPDATE plans SET seq = seq + 1 WHERE execution_id = ?",
                             (execution_id,))
            row = self._db.execute("SELECT seq FROM plans WHERE execution_id = ?",
                                   (execution_id,)).fetchone()
        if row is None:
            raise KeyError(f"execution {execution_id} is not in the journal")
        return int(row[0])

    def finish_plan(self, execution_id: str, result: bytes) -> None:
        """``result``: the payloads of the messages the result was sent in (its parts, when
        one message could not hold it), one a line: what a plan received again gets. Its
        steps are forgotten with it: the result holds what they did."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "UPDATE plans SET state = ?, result = ?, finished_at = ? WHERE execution_id = ?",
                (PlanState.DONE, result, time.time(), execution_id),
            )
            self._db.execute("DELETE FROM steps WHERE execution_id = ?", (execution_id,))

    # --- steps ---------------------------------------------------------------------

    def step_started(self, execution_id: str, machine: str, position: int, task: str) -> None:
        """Record that a step starts; committed when this returns, before the BMC is asked.
        Starting a step again (after a restart) keeps its first start."""
        with self._lock, self._synced():
            self._db.execute(
                "INSERT OR IGNORE INTO steps (execution_id, machine, position, task, "
                "started_at) VALUES (?, ?, ?, ?, ?)",
                (execution_id, machine, position, task, time.time()),
            )

    def step_ended(self, execution_id: str, machine: str, position: int, task: str,
                   result: bytes) -> None:
        """Record how a step ended (``result``: its result as JSON)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO steps (execution_id, machine, position, task, started_at, "
                "result) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id, machine, "
                "position) DO UPDATE SET result = excluded.result",
                (execution_id, machine, position, task, time.time(), result),
            )

    def steps(self, execution_id: str) -> dict[str, dict[int, JournaledStep]]:
        """The steps of an execution that started: machine -> position -> step."""
        with self._lock:
            rows = self._db.execute(
                "SELECT machine, position, task, started_at, result FROM steps "
                "WHERE execution_id = ?", (execution_id,)).fetchall()
        found: dict[str, dict[int, JournaledStep]] = {}
        for machine, position, task, started_at, result in rows:
            found.setdefault(machine, {})[int(position)] = JournaledStep(
                int(position), task, float(started_at), None if result is None else bytes(result))
        return found

    def has_steps(self, execution_id: str) -> bool:
        """True once a step of the execution has started on some machine."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM steps WHERE execution_id = ? LIMIT 1",
                                   (execution_id,)).fetchone()
        return row is not None

    # --- cancels -------------------------------------------------------------------

    def cancel(self, execution_id: str, reason: str) -> bool:
        """Record a cancel (before it is acted on); False if it was recorded already. A
        cancel may come before its plan. The oldest beyond ``MAX_CANCELS`` are forgotten."""
        with self._lock, self._synced(), self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO cancels (execution_id, reason, received_at) "
                "VALUES (?, ?, ?)", (execution_id, reason, time.time()))
            self._db.execute(
                "DELETE FROM cancels WHERE execution_id NOT IN (SELECT execution_id FROM "
                "cancels ORDER BY received_at DESC LIMIT ?)", (MAX_CANCELS,))
            return cursor.rowcount == 1

    def canceled(self) -> list[str]:
        """The executions canceled, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT execution_id FROM cancels ORDER BY received_at").fetchall()
        return [str(r[0]) for r in rows]

    # --- outbox --------------------------------------------------------------------

    def enqueue(self, message_id: str, topic: str, payload: bytes, retain: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (message_id, topic, payload, retain, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (message_id, topic, payload, int(retain), time.time()),
            )

    def delivered(self, message_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE message_id = ?", (message_id,))

    def pending(self) -> list[OutboxMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT message_id, topic, payload, retain FROM outbox ORDER BY position"
            ).fetchall()
        return [OutboxMessage(r[0], r[1], bytes(r[2]), bool(r[3])) for r in rows]


def _plan(row: tuple[str, bytes, str, bytes | None, float]) -> JournaledPlan:
    return JournaledPlan(row[0], bytes(row[1]), PlanState(row[2]), row[3], float(row[4]))
