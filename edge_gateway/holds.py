"""Plans held until their site's maintenance window opens.

A plan carries its site's window (``Plan.window``) when the rollout respects windows. The
cloud sends it inside the window, but a site offline then gets it when it comes back,
perhaps at 14:00 for a window of 01:00-02:00: the gateway holds such a plan, and releases
it when the window opens, or at the plan's ``expires_at`` if that comes first (the plan then
ends ``expired``, unrun). The site's clock is the gateway's (``clock``).

Holding keeps nothing of its own on disk: a held plan is a journaled plan that has not
finished, so a gateway that restarts reads it from the journal and holds it again. One
thread per gateway sleeps while plans are held (none while none is); it looks at the clock
at least every ``MAX_SLEEP`` seconds, so a clock set forward or back is noticed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from edgeplane.protocol import Plan

LOG = logging.getLogger(__name__)

MAX_SLEEP = 60.0  # seconds between looks at the clock while plans are held


class Holds:
    """One site's held plans. ``release(plan)`` is called, on the holds' thread, when a plan
    may go (its window opened, it expired, or ``release`` was asked for it)."""

    def __init__(self, release: Callable[[Plan], None],
                 clock: Callable[[], float] = time.time, name: str = "holds") -> None:
        self._release = release
        self.clock = clock
        self.name = name
        self._held: dict[str, tuple[float, Plan]] = {}  # execution id -> (wake at, plan)
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def hold(self, plan: Plan) -> float | None:
        """Hold the plan if its window is closed now, and answer when it opens; None if the
        plan may start now (no window, the window is open, or the plan expired already:
        it ends as expired at once)."""
        if plan.window is None:
            return None
        now = self.clock()
        opens = plan.window.opens_at(now)
        expires = plan.expires_at if plan.expires_at is not None else math.inf
        if opens <= now or expires <= now:
            return None
        with self._changed:
            if self._closed:
                return opens  # stopping: it stays journaled, and is held again at restart
            self._held[plan.execution_id] = (min(opens, expires), plan)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._changed.notify()
        return opens

    def release(self, execution_id: str) -> bool:
        """Let a held plan go now (a cancel came for it); False if it is not held."""
        with self._changed:
            found = self._held.pop(execution_id, None)
        if found is not None:
            self._release(found[1])
        return found is not None

    def held(self) -> list[str]:
        """The executions held, in no particular order."""
        with self._changed:
            return list(self._held)

    def close(self) -> None:
        """Release nothing more: the plans held stay journaled for the next start."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(5)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._closed or not self._held:
                    self._thread = None
                    return
                now = self.clock()
                due = [plan for wake, plan in self._held.values() if wake <= now]
                for plan in due:
                    del self._held[plan.execution_id]
                if not due:
                    first = min(wake for wake, _ in self._held.values())
                    self._changed.wait(min(first - now, MAX_SLEEP))
                    continue
            for plan in due:  # outside the lock: releasing queues the plan to run
                try:
                    self._release(plan)
                except Exception:  # one plan's failure must not strand the others
                    LOG.exception("%s: releasing execution %s failed", self.name,
                                  plan.execution_id)
