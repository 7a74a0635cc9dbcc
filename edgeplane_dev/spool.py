"""The bridge's spool: reports taken from the broker while the store does not answer, kept
on disk until it does (what SQS is between the IoT rule and the Lambda in AWS).

One SQLite file. A batch is one transaction, on disk (WAL, ``synchronous=FULL``) before
``put`` returns: only then does the bridge acknowledge it to the broker. The spool is
bounded by its reports and their bytes: ``put`` refuses a batch that would pass either (and
writes none of it), so the bridge stops acknowledging and the broker keeps what comes next.

A report that failed for a reason of its own (not the store's) is kept too, as a dead letter
(as SQS's dead-letter queue keeps it in AWS), with the reason; dead letters are not taken
again until ``redrive`` puts them back, and are kept whatever the bounds say (they are few,
and losing one is what the spool is there to prevent).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

MAX_REPORTS = 200_000
MAX_BYTES = 512 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    received_at REAL NOT NULL,
    dead_reason TEXT,
    digest BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS waiting ON reports (id) WHERE dead_reason IS NULL;
CREATE INDEX IF NOT EXISTS same ON reports (digest);
"""

_SIZE = "LENGTH(CAST(topic AS BLOB)) + LENGTH(payload)"  # a report's bytes, as ``put`` counts
Report = tuple[int, str, bytes]  # (id in the spool, topic, payload)


class Spool:
    def __init__(self, path: Path, max_reports: int = MAX_REPORTS,
                 max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(f"SELECT COUNT(*), COALESCE(SUM({_SIZE}), 0) "  # noqa: S608
                               "FROM reports").fetchone()
        self._reports, self._bytes = int(row[0]), int(row[1])
        self._waiting = int(self._db.execute(
            "SELECT COUNT(*) FROM reports WHERE dead_reason IS NULL").fetchone()[0])

    @property
    def waiting(self) -> int:
        """Reports to store (dead letters excluded)."""
        return self._waiting

    @property
    def dead(self) -> int:
        return self._reports - self._waiting

    @property
    def size(self) -> tuple[int, int]:
        """(reports, bytes) held, dead letters included."""
        return self._reports, self._bytes

    def put(self, batch: list[tuple[str, bytes]]) -> bool:
        """Keep ``batch`` (on disk when this returns True); False, and nothing kept, if it
        would pass a bound. A report the spool already holds (the broker delivers at least
        once: one whose acknowledgement was lost comes again) is kept once."""
        with self._lock:
            batch = self._new(batch)
            size = sum(len(topic.encode()) + len(payload) for topic, payload in batch)
            if self._reports + len(batch) > self.max_reports or \
                    self._bytes + size > self.max_bytes:
                return False
            self._insert(batch, None)
            self._reports += len(batch)
            self._waiting += len(batch)
            self._bytes += size
            return True

    def take(self, limit: int) -> list[Report]:
        """The oldest ``limit`` reports waiting (they stay until ``remove``)."""
        with self._lock:
            rows = self._db.execute("SELECT id, topic, payload FROM reports WHERE dead_reason "
                                    "IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [(int(i), str(topic), bytes(payload)) for i, topic, payload in rows]

    def remove(self, ids: list[int]) -> None:
        """Forget these reports: they are stored."""
        marks = ",".join("?" * len(ids))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                count, size = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM({_SIZE}), 0) FROM reports WHERE "  # noqa: S608 - placeholders only
                    f"dead_reason IS NULL AND id IN ({marks})", ids).fetchone()
                self._db.execute(f"DELETE FROM reports WHERE dead_reason IS NULL AND "  # noqa: S608
                                 f"id IN ({marks})", ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._reports -= int(count)
            self._waiting -= int(count)
            self._bytes -= int(size)

    def bury(self, report_id: int, reason: str) -> None:
        """Make a waiting report a dead letter."""
        with self._lock:
            done = self._db.execute("UPDATE reports SET dead_reason = ? WHERE id = ? AND "
                                    "dead_reason IS NULL", (reason, report_id)).rowcount
            self._waiting -= done

    def bury_new(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a report that was never spooled as a dead letter."""
        with self._lock:
            self._insert([(topic, payload)], reason)
            self._reports += 1
            self._bytes += len(topic.encode()) + len(payload)

    def dead_letters(self) -> list[tuple[str, bytes, str]]:
        """(topic, payload, why) of every dead letter, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT topic, payload, dead_reason FROM reports WHERE "
                                    "dead_reason IS NOT NULL ORDER BY id").fetchall()
        return [(str(topic), bytes(payload), str(why)) for topic, payload, why in rows]

    def redrive(self) -> int:
        """Put every dead letter back to be stored (once its cause is fixed); how many."""
        with self._lock:
            done = self._db.execute("UPDATE reports SET dead_reason = NULL WHERE "
                                    "dead_reason IS NOT NULL").rowcount
            self._waiting += done
            return int(done)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _new(self, batch: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """The reports of ``batch`` the spool does not hold yet, each once."""
        fresh: dict[bytes, tuple[str, bytes]] = {}
        for topic, payload in batch:
            fresh.setdefault(_digest(topic, payload), (topic, payload))
        if fresh:
            marks = ",".join("?" * len(fresh))
            for (held,) in self._db.execute(
                    f"SELECT digest FROM reports WHERE digest IN ({marks})",  # noqa: S608
                    list(fresh)).fetchall():
                fresh.pop(bytes(held), None)
        return list(fresh.values())

    def _insert(self, batch: list[tuple[str, bytes]], reason: str | None) -> None:
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT INTO reports (topic, payload, received_at, "
                                 "dead_reason, digest) VALUES (?, ?, ?, ?, ?)",
                                 [(topic, payload, now, reason, _digest(topic, payload))
                                  for topic, payload in batch])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise


def _digest(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + payload).digest()
