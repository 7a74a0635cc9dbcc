"""The one clock type of the cloud: a function that answers the time in epoch seconds.

Everything that decides by time takes one (``clock=time.time`` by default), so tests move
time instead of waiting for it."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
