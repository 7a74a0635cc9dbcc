"""Who read what from the LAN server: GETs counted per (sha256, name), with the time of
the first and the last.

A machine's installer is handed to its BMC under a name of its own (``/a/<sha256>/<tag>.iso``),
so a read of that name is that machine's BMC reading its installer: ``os.wait_installed``
asks whether one happened since the machine was reset, to tell a boot from the CD (the
boot-once override took) from a boot from the disk (it did not). In memory only, bounded:
the least recently read names are forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_NAMES = 4096


@dataclass(frozen=True)
class Reads:
    count: int
    first_at: float  # wall-clock seconds
    last_at: float


class ReadLog:
    def __init__(self, clock: Callable[[], float] = time.time,
                 max_names: int = MAX_NAMES) -> None:
        self._clock = clock
        self._max = max_names
        self._lock = threading.Lock()
        self._reads: OrderedDict[tuple[str, str], Reads] = OrderedDict()

    def record(self, sha256: str, name: str) -> None:
        at = self._clock()
        key = (sha256, name)
        with self._lock:
            before = self._reads.pop(key, None)
            self._reads[key] = (Reads(before.count + 1, before.first_at, at) if before
                                else Reads(1, at, at))
            while len(self._reads) > self._max:
                self._reads.popitem(last=False)

    def reads(self, sha256: str, name: str) -> Reads | None:
        with self._lock:
            return self._reads.get((sha256, name))

    def read_since(self, sha256: str, name: str, since: float) -> bool:
        """Whether ``name`` of ``sha256`` was read at or after ``since`` (wall clock)."""
        reads = self.reads(sha256, name)
        return reads is not None and reads.last_at >= since
