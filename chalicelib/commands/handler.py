"""Acting on a command event as the API acts on its request: the detail is validated with the
API's models (``chalicelib.schemas.parse``), the action is the API's service
(``rollouts.create``, ``rollouts.control``), and every command is answered with an event.

Who sent it is EventBridge's to say: the actor recorded is ``events:<account>``, the account
EventBridge names, followed by ``/<requested_by>`` when the sender names who asked. Whether
the account may put commands on Edgeplane's bus is IAM's decision (``docs/events.md``).

Each act is idempotent, so that a delivery taking over a claim that crashed (``claims``)
completes the command instead of doubling it: a start is a create whose client token is
the event id (or the sender's own token); a pause, resume or cancel moves the rollout to a
state, and after a crash is not done again if the log shows this actor did it since the
command was first claimed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib import audit, events, schemas
from chalicelib.clock import Clock
from chalicelib.commands import claims
from chalicelib.commands.contract import (
    ACCEPTED,
    ACCOUNT_PATTERN,
    CANCEL,
    DETAILS,
    EVENT_ID_PATTERN,
    PAUSE,
    REFUSED,
    RESUME,
    SOURCE,
    Answer,
    RolloutCommand,
    StartRollout,
)
from chalicelib.errors import BadRequest, CloudError, NotConfigured
from chalicelib.models import Rollout
from chalicelib.publisher import Publisher
from chalicelib.rollouts import control, create
from chalicelib.rollouts.moves import get_rollout
from chalicelib.rollouts.states import RolloutState

LOG = logging.getLogger(__name__)

ACTOR_PREFIX = "events:"
TOKEN_PREFIX = "event:"  # noqa: S105 - a start's client token without its own


class AnswerNotSent(Exception):
    """The command was handled, but EventBridge did not take its answer: the invocation
    fails, and the next delivery sends the kept answer."""


def handle(event: Mapping[str, Any], publisher: Publisher,
           clock: Clock = time.time) -> dict[str, Any] | None:
    """Act on one command event, once per event id; returns the answer's detail (None: the
    event is not a command, and is neither acted on nor answered)."""
    detail_type, event_id = event.get("detail-type"), event.get("id")
    if event.get("source") != SOURCE or detail_type not in DETAILS:
        LOG.warning("event of source %r and detail-type %r ignored: not an Edgeplane command",
                    str(event.get("source"))[:80], str(detail_type)[:80])
        return None
    if not isinstance(event_id, str) or not EVENT_ID_PATTERN.fullmatch(event_id):
        LOG.error("%s without a valid event id (%r) ignored", detail_type, str(event_id)[:80])
        return None
    found = claims.claim(event_id, detail_type, clock)
    if isinstance(found, claims.Answered):
        LOG.info("event %s (%s) again: answered before, %s", event_id, detail_type,
                 found.answer.get("outcome"))
        _send(found.answer)
        return found.answer
    try:
        answer = _run(detail_type, event, found, publisher, clock)
    except Exception:
        claims.release(found)
        raise
    claims.finish(found, answer)
    _send(answer)
    return answer


def _run(detail_type: str, event: Mapping[str, Any], claimed: claims.Claim,
         publisher: Publisher, clock: Clock) -> dict[str, Any]:
    account = event.get("account")
    sender = ACTOR_PREFIX + (account if isinstance(account, str)
                             and ACCOUNT_PATTERN.fullmatch(account) else "unknown")
    answer = Answer(command_id=claimed.event_id, command=detail_type, outcome="accepted",
                    actor=sender)
    try:
        detail = _validated(DETAILS[detail_type], event.get("detail"))
        if detail.requested_by:
            answer.actor = f"{sender}/{detail.requested_by}"
        if isinstance(detail, StartRollout):
            rollout = _start(detail, claimed, answer.actor, publisher, clock)
        else:
            assert isinstance(detail, RolloutCommand)
            answer.rollout_id = detail.rollout_id
            rollout = _control(detail_type, detail.rollout_id, claimed, answer.actor,
                               publisher, clock)
    except CloudError as exc:
        if exc.status >= 500 and not isinstance(exc, NotConfigured):
            raise  # the store or the broker failed: the next delivery tries again
        LOG.info("event %s (%s) refused: %s", claimed.event_id, detail_type, exc.message)
        answer.outcome, answer.code, answer.reason = "refused", exc.code, exc.message
    else:
        answer.rollout_id, answer.state = rollout.rollout_id, str(rollout.state)
        LOG.info("event %s (%s) accepted: rollout %s is %s", claimed.event_id, detail_type,
                 rollout.rollout_id, rollout.state)
    return answer.model_dump(mode="json", exclude_none=True)


def _validated(model: type[schemas.Body], detail: Any) -> schemas.Body:
    """The detail as the API would take it for a body: the same checks, the same messages."""
    if not isinstance(detail, dict):
        raise BadRequest("the event's detail must be a JSON object")
    try:
        return schemas.parse(model, json.dumps(detail))
    except BadRequest as exc:
        raise BadRequest(exc.message.replace("request body", "detail")) from None


def _start(detail: StartRollout, claimed: claims.Claim, actor: str, publisher: Publisher,
           clock: Clock) -> Rollout:
    body = detail.rollout
    if body.client_token is None:
        body = body.model_copy(update={"client_token": TOKEN_PREFIX + claimed.event_id})
    return create.create(body, publisher, clock, actor=actor).rollout


_ACTIONS: dict[str, tuple[RolloutState, Callable[[str, Publisher, str, Clock], Rollout]]] = {
    PAUSE: (RolloutState.PAUSED,
            lambda rollout_id, _, actor, clock: control.pause(rollout_id, actor, clock)),
    RESUME: (RolloutState.RUNNING, control.resume),
    CANCEL: (RolloutState.CANCELED, control.cancel),
}


def _control(detail_type: str, rollout_id: str, claimed: claims.Claim, actor: str,
             publisher: Publisher, clock: Clock) -> Rollout:
    target, act = _ACTIONS[detail_type]
    if claimed.attempt > 1 and _moved_by(rollout_id, actor, target, since=claimed.claimed_at):
        return get_rollout(rollout_id)  # done before the crash: not again
    return act(rollout_id, publisher, actor, clock)


def _moved_by(rollout_id: str, actor: str, target: RolloutState, since: float) -> bool:
    """Whether the rollout's log shows ``actor`` moving it to ``target`` at ``since`` or
    later."""
    return any(entry["type"] == audit.ROLLOUT_STATE and entry["ts"] >= since
               and entry["detail"].get("actor") == actor
               and entry["detail"].get("state") == str(target)
               for entry in audit.log_of(rollout_id))


def _send(answer: dict[str, Any]) -> None:
    detail_type = ACCEPTED if answer.get("outcome") == "accepted" else REFUSED
    resources = [f"rollout/{answer['rollout_id']}"] if answer.get("rollout_id") else []
    if not events.emit(detail_type, answer, resources=resources):
        raise AnswerNotSent(f"event {answer.get('command_id')}: the answer ({detail_type}) "
                            "was not put on the bus")
