"""The event log: every state change of a rollout and its executions, and every operator
action, appended to the rollout's log (``GET /rollouts/{id}/events``) and put on EventBridge.

Records are written only by the writer whose conditional update made the change, so a
duplicated report or a retried request never logs a change twice.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from chalicelib import events
from chalicelib.models import RolloutEvent

ROLLOUT_STATE = "Rollout State Changed"
WAVE_STARTED = "Rollout Wave Started"
EXECUTION_STATE = "Execution State Changed"
SITE_PRESENCE = "Site Presence Changed"


def record(rollout_id: str, detail_type: str, detail: dict[str, Any],
           now: float | None = None) -> None:
    now = time.time() if now is None else now
    body = {"rollout_id": rollout_id, **detail}
    # Ordered by the change's time, then by when it was written (changes at one instant of
    # an injected clock), then made unique.
    key = f"{now:017.6f}-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
    RolloutEvent(rollout_id, key, detail_type=detail_type, detail=body, ts=now).save()
    events.emit(detail_type, body, resources=[f"rollout/{rollout_id}"])


def log_of(rollout_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The rollout's events, oldest first (all of them unless ``limit``)."""
    return [{"ts": item.ts, "type": item.detail_type, "detail": item.detail}
            for item in RolloutEvent.query(rollout_id, limit=limit)]
