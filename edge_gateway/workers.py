"""Threads for the gateway core: one elastic pool per process, lent to every gateway in it.

A gateway needs threads only while it works: a plan, the observation after it, an inventory.
Rather than a permanent plan thread per gateway and a new ``ThreadPoolExecutor`` per plan
and per observation, every gateway of a process borrows threads from one ``WorkerPool``:
threads start when work is queued and no thread is free, and end after ``idle_timeout``
seconds without work. Two helpers give a gateway its semantics on a shared pool:

- ``SerialLane``: items (a site's plans) run one after another, in order, with no thread of
  their own while the lane is empty;
- ``run_bounded``: a function over items (machines), at most ``limit`` at once, the calling
  thread working too, so that a caller waiting on a full pool still makes progress.

``default_pool()`` is the process's pool, made on first use: what ``edge-gateway run`` uses.
A fleet simulator or a test gives its gateways a pool of its own and shuts it down after.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

LOG = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_WORKERS = 1024  # above any sane max_parallel: a real site is never held back
DEFAULT_IDLE_TIMEOUT = 10.0

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class WorkerPool:
    """Up to ``max_workers`` threads, started on demand, ended after ``idle_timeout`` idle."""

    def __init__(self, max_workers: int = DEFAULT_MAX_WORKERS,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, name: str = "edge-worker") -> None:
        if max_workers < 1:
            raise ValueError("a pool needs at least one worker")
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.name = name
        self._queue: deque[_Work] = deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads: set[threading.Thread] = set()
        self._idle = 0  # threads waiting for work
        self._closed = False
        self._numbers = itertools.count(1)
        self.peak_threads = 0

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, function: Callable[..., R], *args: Any) -> Future[R]:
        future = self._submit(function, args, only_if_free=False)
        assert future is not None
        return future

    def submit_if_free(self, function: Callable[..., R], *args: Any) -> Future[R] | None:
        """Like ``submit`` if a thread can start on it now; None if it would have to queue."""
        return self._submit(function, args, only_if_free=True)

    def _submit(self, function: Callable[..., R], args: tuple[Any, ...],
                only_if_free: bool) -> Future[R] | None:
        with self._ready:
            if self._closed:
                raise RuntimeError(f"worker pool {self.name} is shut down")
            # Each idle thread takes one queued item; a thread is started for the rest.
            idle = self._idle > len(self._queue)
            can_start = len(self._threads) < self.max_workers
            if only_if_free and not (idle or can_start):
                return None
            future: Future[R] = Future()
            self._queue.append((future, function, args))
            if not idle and can_start:
                self._start_thread()
            else:
                self._ready.notify()
        return future

    def shutdown(self, wait: bool = True, timeout: float | None = 30.0) -> None:
        """Refuse new work; the threads finish what is queued, then end."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join(timeout)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _start_thread(self) -> None:
        """Start a thread for the item just queued; if none can start, take the item back."""
        thread = threading.Thread(target=self._work, name=f"{self.name}-{next(self._numbers)}",
                                  daemon=True)
        self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": out of memory maps or pids
            self._threads.discard(thread)
            self._queue.pop()
            raise
        self.peak_threads = max(self.peak_threads, len(self._threads))

    def _work(self) -> None:
        while True:
            work = self._next()
            if work is None:
                return
            future, function, args = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # the caller gets it from the future
                future.set_exception(exc)
            del work, future, function, args  # hold no results while idle

    def _next(self) -> _Work | None:
        """The next queued item, or None once this thread should end (idle, or shut down)."""
        with self._ready:
            while not self._queue:
                if self._closed:
                    break
                self._idle += 1
                woken = self._ready.wait(self.idle_timeout)
                self._idle -= 1
                if not woken and not self._queue:
                    break
            if self._queue:
                return self._queue.popleft()
            self._threads.discard(threading.current_thread())
            return None


_default_pool: WorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WorkerPool:
    """The process's pool (made on first use), for gateways not given one."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = WorkerPool()
        return _default_pool


class SerialLane(Generic[T]):
    """Runs ``handle(item)`` for each item put, one after another in order, on a pool.

    A thread is borrowed only while items are queued. ``idle`` is set exactly when nothing
    is queued or running; after ``close()`` new items are refused (``put`` returns False)
    while those queued still run.
    """

    def __init__(self, pool: WorkerPool, handle: Callable[[T], None],
                 name: str = "lane") -> None:
        self.pool = pool
        self.handle = handle
        self.name = name
        self.idle = threading.Event()
        self.idle.set()
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._draining = False
        self._closed = False

    def put(self, item: T) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._items.append(item)
            self.idle.clear()
            if self._draining:
                return True
            self._draining = True
        try:
            self.pool.submit(self._drain)
        except RuntimeError:  # the pool is shut down: nothing will run this lane again
            with self._lock:
                self._items.clear()
                self._draining = False
                self.idle.set()
            raise
        return True

    def close(self, discard: bool = False) -> None:
        """Refuse new items; with ``discard``, drop those queued too (one running ends)."""
        with self._lock:
            self._closed = True
            if discard:
                self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._items:
                    self._draining = False
                    self.idle.set()
                    return
                item = self._items.popleft()
            try:
                self.handle(item)
            except Exception:  # the lane goes on with the next item
                LOG.exception("%s: an item failed", self.name)


def run_bounded(pool: WorkerPool, function: Callable[[T], R], items: Iterable[T],
                limit: int) -> list[R]:
    """``[function(item) for item in items]``, at most ``limit`` at once, results in order.

    The calling thread takes items too and up to ``limit - 1`` pool threads help, as many
    as the pool can start at once: on a busy pool, a helper queued behind other work would
    mostly be canceled unstarted (as those still queued when the caller runs out of items
    are), at the cost of thread hand-offs. So a caller that itself runs on the pool never
    waits for a free thread (no deadlock on a full pool), and a busy pool only makes the
    items run more one after another. Every item runs; if some
    raised, the first of them (in item order) is raised once all have ended.
    """
    work = list(items)
    results: list[Any] = [None] * len(work)
    errors: dict[int, BaseException] = {}
    positions = iter(range(len(work)))
    lock = threading.Lock()

    def take() -> None:
        while True:
            with lock:
                position = next(positions, None)
            if position is None:
                return
            try:
                results[position] = function(work[position])
            except BaseException as exc:  # the others still run, as with pool.map
                errors[position] = exc

    helpers = []
    for _ in range(min(limit, len(work)) - 1):
        helper = pool.submit_if_free(take)
        if helper is None:
            break
        helpers.append(helper)
    take()
    for helper in helpers:
        if not helper.cancel():
            helper.result()
    if errors:
        raise errors[min(errors)]
    return results
