"""The system event log: read and clear."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class LogEntry:
    id: str
    created: str | None
    severity: str  # "ok", "warning", "critical", "unknown"
    message: str


class LogsInterface(abc.ABC):
    """The system event log (``Capability.SEL``)."""

    @abc.abstractmethod
    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        """The newest ``limit`` entries (all if None), oldest first."""

    @abc.abstractmethod
    def clear_sel(self) -> None:
        """Empty the log. Idempotent; the BMC may log the clearing itself as a new entry."""
