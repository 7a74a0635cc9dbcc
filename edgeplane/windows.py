"""Maintenance windows: when a site may be worked on, in its own time zone.

One rule for both sides: the cloud dispatches a plan only inside its site's window, and a
gateway that receives a plan outside the window the plan carries holds it until the window
opens (``Window.opens_at``). Standard library only (``zoneinfo``): the time zone database
is the system's (``/usr/share/zoneinfo``) or, where there is none, the ``tzdata`` package.

The window is wall-clock time in the site's zone, so it follows DST: 01:00-05:00 is four
hours on most days, three on the night clocks go forward, five when they go back. A window
that ends before it starts crosses midnight; its day is the day it starts. No days listed:
every day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK_PATTERN = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
ZONE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+./-]{0,63}$")


class WindowError(ValueError):
    """A window that cannot be used: malformed, or in a zone this machine does not know."""


@dataclass(frozen=True)
class Window:
    """``start`` and ``end`` as "HH:MM" local time in ``timezone`` (an IANA name)."""

    start: str
    end: str
    days: list[str] = field(default_factory=list)
    timezone: str = "UTC"

    @classmethod
    def of(cls, window: dict[str, Any], timezone: str | None) -> Window:
        """A site's window as stored ({days, start, end}) with the site's zone (None: UTC)."""
        return cls(start=window["start"], end=window["end"], days=list(window.get("days") or []),
                   timezone=timezone or "UTC")

    def check(self) -> None:
        """Raise WindowError naming what is wrong with the window's fields (not its zone:
        whether a zone is known is the receiving machine's affair, ``zone``)."""
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, str) or not CLOCK_PATTERN.fullmatch(value):
                raise WindowError(f"window {name} must be a time as HH:MM, not {value!r:.40}")
        if self.start == self.end:
            raise WindowError("window start and end are equal: the window would be empty")
        if not isinstance(self.days, list) or len(self.days) > len(DAYS):
            raise WindowError(f"window days must be a list of at most {len(DAYS)} days")
        wrong = [day for day in self.days if day not in DAYS]
        if wrong:
            raise WindowError(f"window days: unknown day(s) {', '.join(map(repr, wrong))[:80]}; "
                              f"use {', '.join(DAYS)}")
        if not isinstance(self.timezone, str) or not ZONE_PATTERN.fullmatch(self.timezone):
            raise WindowError(f"window timezone must be an IANA time zone name, not "
                              f"{self.timezone!r:.80}")

    def zone(self) -> ZoneInfo:
        """The window's time zone; WindowError if this machine's database does not have it."""
        # Imported here: zoneinfo reads sysconfig as it loads, and the wire contract (which
        # imports this module) must load nothing beyond the standard library's own modules.
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise WindowError(f"time zone {self.timezone!r} is not in this machine's time zone "
                              "database (install the system's tzdata, or the tzdata Python "
                              "package)") from None

    def is_open(self, now: float) -> bool:
        """True if the site may be worked on at ``now`` (seconds since the epoch)."""
        local = datetime.fromtimestamp(now, self.zone())
        start, end = _minutes(self.start), _minutes(self.end)
        minute = local.hour * 60 + local.minute
        days = self.days or list(DAYS)
        today = DAYS[local.weekday()]
        yesterday = DAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in days and start <= minute < end
        return (today in days and minute >= start) or (yesterday in days and minute < end)

    def opens_at(self, now: float) -> float:
        """``now`` if the window is open, else when it next opens.

        Candidates are the local start times of the coming days. A start the clocks skip
        (02:30 on the night they go forward) opens the window when the clocks reach a time
        inside it: that instant is found minute by minute within the skipped hour.
        """
        if self.is_open(now):
            return now
        zone = self.zone()
        today = datetime.fromtimestamp(now, zone).date()
        hours, minutes = map(int, self.start.split(":"))
        for offset in range(-1, 9):  # one day back: a window crossing midnight
            day = today + timedelta(days=offset)
            for moment in self._openings(day, time(hours, minutes), zone, now):
                return moment
        raise WindowError(f"window {self.start}-{self.end} on {self.days or 'every day'} "
                          "never opens")  # a checked window always opens within 8 days

    def _openings(self, day: date, start: time, zone: ZoneInfo, now: float) -> list[float]:
        """The first instant after ``now`` at which the window opens with its start on
        ``day``, if there is one (a list of at most one)."""
        earliest, latest = sorted(datetime.combine(day, start, zone).replace(fold=fold)
                                  .timestamp() for fold in (0, 1))
        moment = max(earliest, _next_minute(now))
        while moment <= latest:  # once, unless the start falls in a gap the clocks skip
            if self.is_open(moment):
                return [moment]
            moment = _next_minute(moment + 1)
        return []


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _next_minute(moment: float) -> float:
    """The first whole minute (UTC, and so local: zones move by whole minutes now) at or
    after ``moment``."""
    whole = datetime.fromtimestamp(moment, UTC).replace(second=0, microsecond=0).timestamp()
    return whole if whole >= moment else whole + 60
