"""The gateway's durable memory (SQLite): plans received and messages not yet acknowledged.

A site finishes what it started: a plan is journaled before it runs, so a gateway that
restarts resumes it (every step is an "ensure", so running one again is safe); every message
for the cloud goes through the outbox and stays there until the broker acknowledges it
(MQTT PUBACK), so results survive a restart with the WAN down.

Plans are never deleted: an execution is how a plan received again is recognized, and a
signed plan may be sent again (replayed) until its signature expires, up to
``protocol.MAX_SIGNATURE_TTL`` after it was received. Pruning, if it comes, must keep every
plan received less than that long ago.
"""

from __future__ import annotations

import sqlite3
import threading
import time
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
"""


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
class JournaledPlan:
    execution_id: str
    payload: bytes  # as received, signature and all
    state: PlanState
    result: bytes | None
    received_at: float


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
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- plans ---------------------------------------------------------------------

    def accept_plan(self, execution_id: str, payload: bytes) -> bool:
        """Record a received plan; False if this execution was already received."""
        with self._lock:
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
        one message could not hold it), one a line: what a plan received again gets."""
        with self._lock:
            self._db.execute(
                "UPDATE plans SET state = ?, result = ?, finished_at = ? WHERE execution_id = ?",
                (PlanState.DONE, result, time.time(), execution_id),
            )

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
