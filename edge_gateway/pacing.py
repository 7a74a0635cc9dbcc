"""Being gentle with BMCs: one call in flight per BMC, and a pause between calls.

Real BMCs answer slowly and fall over when hammered; several machines may sit behind one
BMC address (a chassis manager, an emulator). Every driver call of a gateway goes through
the ``BmcPacer`` of its BMC address, so calls to one BMC never overlap and start at least
``min_interval`` seconds after the previous one ended, while calls to different BMCs run in
parallel. The pacers belong to one gateway (no globals).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edge_gateway.drivers.base import Driver

# Driver methods that talk to the BMC; properties and bookkeeping are not paced.
_NOT_PACED = frozenset({"close", "address"})


class BmcPacer:
    def __init__(self, min_interval: float, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.min_interval = min_interval
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_end = float("-inf")
        self.calls = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._lock:
            wait = self._last_end + self.min_interval - self._monotonic()
            if wait > 0:
                self._sleep(wait)
            try:
                yield
            finally:
                self.calls += 1
                self._last_end = self._monotonic()


class PacerRegistry:
    """The pacers of one gateway, by BMC address."""

    def __init__(self) -> None:
        self._pacers: dict[str, BmcPacer] = {}
        self._lock = threading.Lock()

    def for_address(self, address: str, min_interval: float) -> BmcPacer:
        with self._lock:
            pacer = self._pacers.get(address)
            if pacer is None:
                pacer = self._pacers[address] = BmcPacer(min_interval)
            else:  # machines sharing a BMC: the most careful setting wins
                pacer.min_interval = max(pacer.min_interval, min_interval)
            return pacer


class PacedDriver:
    """Wraps a driver so each of its BMC calls takes its turn with the BMC's pacer."""

    def __init__(self, driver: Driver, pacer: BmcPacer) -> None:
        self._driver = driver
        self._pacer = pacer

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)
        if name.startswith("_") or name in _NOT_PACED or not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def paced(*args: Any, **kwargs: Any) -> Any:
            with self._pacer.turn():
                return attribute(*args, **kwargs)

        return paced
