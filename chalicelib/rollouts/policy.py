"""Deciding how a rollout moves through the fleet: pure functions, no storage, no clock.

- ``wave_sizes``: the canary, then waves that grow by a factor, until every site has one;
- ``in_window``: whether a site's maintenance window is open now, in its own time zone,
  and ``plan_window``: the window a site's plan carries for its gateway to hold it by;
- ``abort_reason``: whether the current wave's failures passed the threshold;
- ``room``: how many more sites may start now, under the in-flight and per-minute limits.

``advance``, ``dispatch`` and ``moves`` ask these and do what they say.
"""

from __future__ import annotations

import math
from typing import Any

from chalicelib.schemas import PolicyIn
from edgeplane.windows import Window


def wave_sizes(total: int, policy: PolicyIn) -> list[int]:
    """Sites per wave, canary first; they add up to ``total``."""
    if total <= 0:
        return []
    sizes: list[int] = []
    canary = policy.canary
    if canary is not None:
        size = canary.sites if canary.sites is not None else \
            math.ceil(total * (canary.percent or 0) / 100)
        sizes.append(max(1, min(total, size)))
    remaining = total - sum(sizes)
    if policy.first_wave is not None:
        next_size: float = policy.first_wave
    elif sizes:
        next_size = sizes[0] * policy.growth
    else:
        next_size = remaining  # no canary, no first wave: everything at once
    while remaining > 0:
        size = max(1, min(remaining, math.ceil(next_size)))
        sizes.append(size)
        remaining -= size
        next_size *= policy.growth
    return sizes


def in_window(window: dict[str, Any] | None, timezone: str | None, now: float) -> bool:
    """True if the site may be worked on at ``now`` (no window: always). The rule, DST and
    windows crossing midnight included, is the one gateways hold plans by
    (``edgeplane.windows``)."""
    return not window or Window.of(window, timezone).is_open(now)


def plan_window(window: dict[str, Any] | None, timezone: str | None,
                policy: PolicyIn) -> Window | None:
    """The window a site's plan carries (the gateway holds the plan outside it): the
    site's, when it has one and the policy respects windows."""
    if not window or not policy.maintenance_windows:
        return None
    return Window.of(window, timezone)


def abort_reason(wave: int, is_canary: bool, size: int, done: int, failed: int,
                 policy: PolicyIn) -> str | None:
    """Why the rollout must stop now, or None. A canary must pass whole: one failure aborts.
    Another wave aborts once ``min_sample`` of its sites finished and ``percent`` failed."""
    if failed <= 0:
        return None
    if is_canary:
        return f"the canary failed: {failed} of its {size} sites failed"
    threshold = policy.abort
    if done >= min(threshold.min_sample, size) and failed * 100 >= threshold.percent * done:
        return (f"wave {wave}: {failed} of {done} finished sites failed "
                f"(threshold {threshold.percent:g}% of at least {threshold.min_sample})")
    return None


def room(policy: PolicyIn, in_flight: int, started_last_minute: int) -> int:
    """How many more sites may start now."""
    limits = [math.inf]
    if policy.max_in_flight is not None:
        limits.append(policy.max_in_flight - in_flight)
    if policy.max_per_minute is not None:
        limits.append(policy.max_per_minute - started_last_minute)
    free = min(limits)
    return 1_000_000 if free == math.inf else max(0, int(free))


def retry_delay(policy: PolicyIn, attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` (``attempt`` is the one that failed)."""
    return float(policy.retries.backoff * policy.retries.factor ** max(0, attempt - 1))
