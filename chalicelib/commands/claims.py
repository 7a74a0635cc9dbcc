"""Once per event id: a command is claimed before it acts, and its answer kept once it has.

EventBridge (and Lambda's retries of an invocation that failed) deliver an event at least
once, sometimes twice at the same time. Each delivery first writes a claim keyed by the
event id, on condition that there is none:

- the first delivery gets the claim and a lease of ``LEASE`` seconds, acts, and stores its
  answer (``finish``);
- a later delivery of a command that was answered gets that answer, and acts no more;
- a delivery while the claim's lease runs is refused (``InProgress``: the invocation fails,
  and Lambda tries it again later), so two never act at once;
- a delivery after the lease ran out without an answer (the invocation that held it died
  between claim and answer) takes the claim over and acts again: each act is idempotent
  (``chalicelib.commands.handler``), so a crash never loses a command, nor doubles it.

The lease must outlast the handler's Lambda timeout: until then the holder may still act.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.clock import Clock
from chalicelib.models import (
    CommandClaim,
    conditional_failed,
    conditional_update,
    conditional_write,
)

LOG = logging.getLogger(__name__)

CLAIMED = "claimed"
DONE = "done"
LEASE = 150.0  # seconds; above the handler's timeout (.chalice/config.json: 120 s)
KEEP = 8 * 86400.0  # EventBridge retries an event for a day, Lambda for six hours


class InProgress(Exception):
    """Another delivery of this event holds its claim: try again after its lease."""


@dataclass(frozen=True)
class Claim:
    event_id: str
    token: str
    claimed_at: float  # when the first delivery claimed it
    attempt: int  # 1: the first delivery to act; more: a takeover after a crash


@dataclass(frozen=True)
class Answered:
    answer: dict[str, Any]


def claim(event_id: str, command: str, clock: Clock = time.time) -> Claim | Answered:
    """Claim ``event_id`` to act on it, or the answer it was given; InProgress while
    another delivery holds it."""
    for _ in range(3):
        now = clock()
        token = uuid.uuid4().hex
        item = CommandClaim(event_id, command=command, state=CLAIMED, token=token,
                            lease_until=now + LEASE, attempts=1, claimed_at=now,
                            expires_at=datetime.fromtimestamp(now + KEEP, UTC))
        try:
            item.save(condition=CommandClaim.event_id.does_not_exist())
            return Claim(event_id, token, now, 1)
        except PynamoDBException as exc:
            if not conditional_failed(exc):
                raise
        try:
            stored = CommandClaim.get(event_id, consistent_read=True)
        except CommandClaim.DoesNotExist:  # expired and removed meanwhile: claim it anew
            continue
        if stored.state == DONE:
            return Answered(dict(stored.answer or {}))
        if stored.lease_until > now:
            raise InProgress(f"event {event_id}: another delivery is running it (its claim "
                             f"runs {stored.lease_until - now:.0f} s more)")
        if conditional_update(stored, [CommandClaim.token.set(token),
                                       CommandClaim.lease_until.set(now + LEASE),
                                       CommandClaim.attempts.add(1)],
                              (CommandClaim.state == CLAIMED)
                              & (CommandClaim.token == stored.token)):
            LOG.warning("event %s (%s): its claim ran out without an answer; acting again "
                        "(attempt %d)", event_id, command, int(stored.attempts) + 1)
            return Claim(event_id, token, float(stored.claimed_at), int(stored.attempts) + 1)
    raise InProgress(f"event {event_id}: its claim keeps changing hands; try again")


def finish(claimed: Claim, answer: dict[str, Any]) -> bool:
    """Keep the answer; False if the claim was taken over meanwhile (this invocation was
    slower than its lease: the taker answers too, the same)."""
    done = conditional_write(CommandClaim(claimed.event_id),
                              [CommandClaim.state.set(DONE), CommandClaim.answer.set(answer)],
                              (CommandClaim.state == CLAIMED)
                              & (CommandClaim.token == claimed.token))
    if not done:
        LOG.warning("event %s: its claim was taken over before the answer was kept",
                    claimed.event_id)
    return done


def release(claimed: Claim) -> None:
    """Give the claim up after a failure that may pass (the store, the broker), so that the
    next delivery acts at once instead of after the lease."""
    try:
        conditional_write(CommandClaim(claimed.event_id), [CommandClaim.lease_until.set(0)],
                          (CommandClaim.state == CLAIMED)
                          & (CommandClaim.token == claimed.token))
    except PynamoDBException:
        LOG.exception("event %s: claim not released; the next delivery waits for its lease",
                      claimed.event_id)
