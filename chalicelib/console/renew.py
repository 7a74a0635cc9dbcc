"""The console's readings that are saved for the next process (``readings``), and their
renewal: what the schedule runs every 10 minutes."""

from __future__ import annotations

from typing import Any

from chalicelib.console import failures, fleet, matrix, readings

SAVED: tuple[readings.Kept[Any], ...] = (fleet.FLEET, failures.NEWEST, matrix.NEWEST)


def renew() -> dict[str, float]:
    """Compute every saved reading again (saving the slow ones); how long each took."""
    return readings.refresh(SAVED)
