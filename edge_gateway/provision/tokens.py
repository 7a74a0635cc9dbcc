"""Phone-home tokens: one per machine being installed, used once, kept across restarts.

``os.seed`` asks for the machine's token (``token_for``: its unused one if it has one, so a
step run again builds the same seed) and keeps the seed with it (``set_seed``); the LAN
server serves that seed (``seed``) and takes the installed system's facts (``phone_home``)
once; ``os.wait_installed`` reads them (``latest``). A used token no longer serves its seed,
which is then dropped.

SQLite, in a file of its own beside the journal, mode 0600: a seed holds the cluster's join
token. Each machine keeps its last ``KEEP_USED`` used tokens (with their facts).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")
KEEP_USED = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS phone_home_tokens (
    token      TEXT PRIMARY KEY,
    machine    TEXT NOT NULL,
    seed       BLOB,
    created_at REAL NOT NULL,
    used_at    REAL,
    facts      TEXT
);
CREATE INDEX IF NOT EXISTS phone_home_tokens_machine
    ON phone_home_tokens (machine, created_at);
"""


@dataclass(frozen=True)
class TokenRecord:
    token: str
    machine: str
    created_at: float
    used_at: float | None
    facts: dict[str, str] | None

    def __repr__(self) -> str:  # the token is a secret until it is used
        return f"TokenRecord(machine={self.machine!r}, used_at={self.used_at!r})"


def tokens_path(journal: Path) -> Path:
    """Where a gateway with journal ``journal`` keeps its tokens."""
    return journal.with_name(journal.name + ".provision")


class TokenStore:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        path = str(path)
        if path != ":memory:":
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def token_for(self, machine: str) -> str:
        """The machine's unused token, or a new one."""
        with self._lock, self._db:
            row = self._db.execute(
                "SELECT token FROM phone_home_tokens WHERE machine = ? AND used_at IS NULL "
                "ORDER BY created_at DESC LIMIT 1", (machine,)).fetchone()
            if row is not None:
                return str(row[0])
            token = secrets.token_urlsafe(24)
            self._db.execute("INSERT INTO phone_home_tokens (token, machine, created_at) "
                             "VALUES (?, ?, ?)", (token, machine, self._clock()))
            return token

    def set_seed(self, token: str, seed: bytes) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE phone_home_tokens SET seed = ? WHERE token = ? AND "
                             "used_at IS NULL", (seed, token))

    def seed(self, token: str) -> bytes | None:
        """The seed of an unused token; None for an unknown or used one."""
        if not TOKEN_PATTERN.fullmatch(token):
            return None
        with self._lock:
            row = self._db.execute("SELECT seed FROM phone_home_tokens WHERE token = ? AND "
                                   "used_at IS NULL", (token,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def has_unused(self, token: str) -> bool:
        if not TOKEN_PATTERN.fullmatch(token):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM phone_home_tokens WHERE token = ? AND "
                                    "used_at IS NULL", (token,)).fetchone() is not None

    def phone_home(self, token: str, facts: dict[str, str]) -> str | None:
        """Record ``facts`` against an unused token, using it up: its machine's id; None if
        the token is unknown or used (whoever calls twice gets nothing the second time)."""
        if not TOKEN_PATTERN.fullmatch(token):
            return None
        with self._lock, self._db:
            row = self._db.execute("SELECT machine FROM phone_home_tokens WHERE token = ? "
                                   "AND used_at IS NULL", (token,)).fetchone()
            if row is None:
                return None
            machine = str(row[0])
            self._db.execute("UPDATE phone_home_tokens SET used_at = ?, facts = ?, seed = NULL "
                             "WHERE token = ?", (self._clock(), json.dumps(facts), token))
            self._db.execute(
                "DELETE FROM phone_home_tokens WHERE machine = ? AND used_at IS NOT NULL AND "
                "token NOT IN (SELECT token FROM phone_home_tokens WHERE machine = ? AND "
                "used_at IS NOT NULL ORDER BY used_at DESC LIMIT ?)",
                (machine, machine, KEEP_USED))
            return machine

    def latest(self, machine: str) -> TokenRecord | None:
        """The machine's newest token, used or not."""
        with self._lock:
            row = self._db.execute(
                "SELECT token, machine, created_at, used_at, facts FROM phone_home_tokens "
                "WHERE machine = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (machine,)).fetchone()
        if row is None:
            return None
        return TokenRecord(token=row[0], machine=row[1], created_at=row[2], used_at=row[3],
                           facts=json.loads(row[4]) if row[4] else None)
