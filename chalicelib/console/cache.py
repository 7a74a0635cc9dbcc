"""What the console's aggregates remember between requests: one reading of the fleet serves
every view and every poll of every open console in this process for ``seconds()`` (15 s by
default, ``EDGEPLANE_CONSOLE_CACHE_S``; 0: nothing is remembered). The answers say when
they were computed.

Once a reading is older than that, the next request still gets it, at once, while a thread
reads the fleet again (one at a time per key): a fleet of 10,000 sites takes seconds to
read, and no view should wait for it but the first one of a process. (On Lambda the thread
runs while the instance serves requests, and is frozen between them.)

A reading given with a ``Saved`` (``chalicelib.console.readings``) is also kept in the store:
a process with nothing in memory answers from the saved one (with when it was taken) and
computes a new one behind it, and a computation that was slow is saved for the next process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar

LOG = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_SECONDS = 15.0

_values: dict[Hashable, tuple[float, float, Any]] = {}  # key: (started, finished, value)
_refreshing: set[Hashable] = set()
_lock = threading.Lock()
_first_builds: dict[Hashable, threading.Lock] = {}
_generation = 0  # forget() makes readings started before it count for nothing
SLOW_S = 0.5  # a computation slower than this is saved, for a reading that can be


class Saved(Protocol[T]):
    """Where a reading is kept beyond this process."""

    def load(self) -> tuple[T, float] | None: ...  # the value and when it was taken

    def save(self, value: T, taken_at: float) -> None: ...


def seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("EDGEPLANE_CONSOLE_CACHE_S", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def get(key: Hashable, build: Callable[[], T],
        saved: Saved[T] | None = None) -> tuple[T, float]:
    """(the value, when its reading started): remembered, remembered while a new one is
    read, (the first time) the one ``saved`` in the store, or read now."""
    ttl = seconds()
    if ttl == 0:
        started = time.time()
        return build(), started
    with _lock:
        found = _values.get(key)
        builder = _first_builds.setdefault(key, threading.Lock())
    if found is not None:
        if time.time() - found[1] >= ttl:
            _refresh_in_background(key, build, saved)
        return found[2], found[0]
    with builder:  # the first requests wait for one reading, not one each
        with _lock:
            found = _values.get(key)
        if found is not None:
            return found[2], found[0]
        stored = saved.load() if saved is not None else None
        if stored is None:
            return _build(key, build, saved)
        value, taken_at = stored
        with _lock:
            _values[key] = (taken_at, taken_at, value)
        if time.time() - taken_at >= ttl:
            _refresh_in_background(key, build, saved)
        return value, taken_at


def computed(build: Callable[[], T], saved: Saved[T] | None) -> tuple[T, float, float]:
    """(``build()``, when it started, when it finished); saved too where it can be, if it
    took ``SLOW_S`` or more."""
    started = time.time()
    value = build()
    finished = time.time()
    if saved is not None and finished - started >= SLOW_S:
        saved.save(value, started)
    return value, started, finished


def _build(key: Hashable, build: Callable[[], T], saved: Saved[T] | None) -> tuple[T, float]:
    generation = _generation
    value, started, finished = computed(build, saved)
    with _lock:
        if generation == _generation:
            _values[key] = (started, finished, value)
    return value, started


def _refresh_in_background(key: Hashable, build: Callable[[], Any],
                           saved: Saved[Any] | None) -> None:
    with _lock:
        if key in _refreshing:
            return
        _refreshing.add(key)

    def refresh() -> None:
        try:
            _build(key, build, saved)
        except Exception:  # the old reading stays; the next request tries again
            LOG.exception("reading %s for the console failed", key)
        finally:
            with _lock:
                _refreshing.discard(key)

    threading.Thread(target=refresh, name=f"console-{key}", daemon=True).start()


def forget() -> None:
    """Compute everything again on the next request (another store, in tests)."""
    global _generation
    with _lock:
        _values.clear()
        _generation += 1
