"""Faults a simulated BMC injects on request, the way real BMCs misbehave.

- ``latency``: wait ``seconds`` before answering;
- ``error``: answer ``status`` (503 by default) with a Redfish error body;
- ``hang``: accept the request and never answer (until ``seconds`` pass, then drop it);
- ``drop``: close the connection without an answer;
- ``malformed``: answer 200 with JSON cut short.

A fault applies to requests whose method and path match (``method``: one HTTP method or any;
``path``: a regular expression searched in the path, or any), ``count`` times (or always).
Faults are set through the simulator's control API (``POST /_sim/faults``) or in process.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("latency", "error", "hang", "drop", "malformed")
_ids = itertools.count(1)


@dataclass
class Fault:
    kind: str
    path: str | None = None
    method: str | None = None
    count: int | None = None  # None: every matching request
    status: int = 503
    seconds: float = 30.0
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if self.path is not None:
            try:
                re.compile(self.path)
            except re.error as exc:
                raise ValueError(f"fault path {self.path!r} is not a regular expression: "
                                 f"{exc}") from None
        if self.count is not None and self.count < 1:
            raise ValueError("a fault's count must be at least 1 (or absent: always)")
        if not 100 <= self.status <= 599:
            raise ValueError(f"fault status {self.status} is not an HTTP status")
        if self.method:
            self.method = self.method.upper()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        known = {"kind", "path", "method", "count", "status", "seconds"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault field(s) {', '.join(sorted(unknown))}; a fault "
                             f"has {', '.join(sorted(known))}")
        if "kind" not in data:
            raise ValueError("a fault needs a kind: " + ", ".join(KINDS))
        return cls(**data)

    def matches(self, method: str, path: str) -> bool:
        return (self.method in (None, method)) and \
            (self.path is None or re.search(self.path, path) is not None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultBook:
    """The faults in force on one BMC; ``take`` finds (and counts) the one for a request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def take(self, method: str, path: str) -> list[Fault]:
        """Every fault for this request (latency adds up with the others), counted."""
        taken = []
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                taken.append(fault)
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return taken
