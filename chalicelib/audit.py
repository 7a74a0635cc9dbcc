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
EXECUTION_STATE = "Execution State Changed"  # one move, as the log shows it
EXECUTION_STATES = "Execution States Changed"  # moves stored and put on EventBridge together
SITE_PRESENCE = "Site Presence Changed"

# Moves per log item and per event: ~250 bytes each, so an event stays far below
# EventBridge's 256 KB, and 10,000 sites cost 100 puts instead of 10,000.
EVENT_CHUNK = 100


def record(rollout_id: str, detail_type: str, detail: dict[str, Any],
           now: float | None = None) -> None:
    now = time.time() if now is None else now
    body = {"rollout_id": rollout_id, **detail}
    RolloutEvent(rollout_id, _event_key(now), detail_type=detail_type, detail=body,
                 ts=now).save()
    events.emit(detail_type, body, resources=[f"rollout/{rollout_id}"])


def record_moves(rollout_id: str, moves: list[dict[str, Any]]) -> None:
    """Execution moves (each with its ``at``), ``EVENT_CHUNK`` to a log item and an event."""
    with RolloutEvent.batch_write() as batch:
        chunks = [moves[i:i + EVENT_CHUNK] for i in range(0, len(moves), EVENT_CHUNK)]
        for chunk in chunks:
            first = min(move["at"] for move in chunk)
            batch.save(RolloutEvent(rollout_id, _event_key(first),
                                    detail_type=EXECUTION_STATES, ts=first,
                                    detail={"rollout_id": rollout_id, "changes": chunk}))
    for chunk in chunks:
        events.emit(EXECUTION_STATES, {"rollout_id": rollout_id, "changes": chunk},
                    resources=[f"rollout/{rollout_id}"])


def _event_key(now: float) -> str:
    # Ordered by the change's time, then by when it was written (changes at one instant of
    # an injected clock), then made unique.
    return f"{now:017.6f}-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"


def log_of(rollout_id: str) -> list[dict[str, Any]]:
    """The rollout's events, oldest first, one entry per change."""
    entries: list[dict[str, Any]] = []
    for item in RolloutEvent.query(rollout_id):
        if item.detail_type == EXECUTION_STATES:
            for move in item.detail.get("changes", []):
                detail = {"rollout_id": rollout_id,
                          **{k: v for k, v in move.items() if k != "at"}}
                entries.append({"ts": move.get("at", item.ts), "type": EXECUTION_STATE,
                                "detail": detail})
        else:
            entries.append({"ts": item.ts, "type": item.detail_type, "detail": item.detail})
    entries.sort(key=lambda entry: entry["ts"])  # stable: a chunk keeps its order
    return entries
