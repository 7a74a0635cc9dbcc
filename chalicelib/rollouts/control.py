"""What an operator does to a running rollout: pause, resume, cancel."""

from __future__ import annotations

import logging
import time

from chalicelib import signing
from chalicelib.clock import Clock
from chalicelib.errors import Conflict, NotConfigured, PublishFailed
from chalicelib.models import Execution, Rollout
from chalicelib.publisher import Publisher
from chalicelib.rollouts.advance import advance
from chalicelib.rollouts.moves import cancel_queued, get_rollout, in_flight, move_rollout
from chalicelib.rollouts.states import RolloutState
from edgeplane import protocol

LOG = logging.getLogger(__name__)


def pause(rollout_id: str, actor: str | None = None, clock: Clock = time.time) -> Rollout:
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.PAUSED, actor=actor, clock=clock) and \
            rollout.state != RolloutState.PAUSED:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: only a running rollout "
                       "can be paused")
    return get_rollout(rollout_id)


def resume(rollout_id: str, publisher: Publisher, actor: str | None = None,
           clock: Clock = time.time) -> Rollout:
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.RUNNING, actor=actor, clock=clock) and \
            rollout.state != RolloutState.RUNNING:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: only a paused rollout "
                       "can be resumed")
    advance(rollout_id, publisher, clock)
    return get_rollout(rollout_id)


def cancel(rollout_id: str, publisher: Publisher, actor: str | None = None,
           clock: Clock = time.time) -> Rollout:
    """Queued sites are canceled at once; sites with the plan are told to drop it (if they
    have not started) or to stop after the current step; they answer with a result.

    A cancel is signed like a plan (a gateway ignores one that is not); without a signing
    key the rollout is canceled all the same, and the sites with the plan run it."""
    rollout = get_rollout(rollout_id)
    if not move_rollout(rollout, RolloutState.CANCELED, actor=actor, clock=clock) and \
            rollout.state != RolloutState.CANCELED:
        raise Conflict(f"rollout {rollout_id!r} is {rollout.state}: it cannot be canceled")
    cancel_queued(rollout, "rollout canceled", clock)
    flying = list(in_flight(rollout_id))
    if flying:
        _tell_sites(rollout_id, flying, publisher, clock)
    return get_rollout(rollout_id)


def _tell_sites(rollout_id: str, executions: list[Execution], publisher: Publisher,
                clock: Clock) -> None:
    """Send each site that has the plan a signed cancel."""
    try:
        signer = signing.current()
    except NotConfigured as exc:
        LOG.error("rollout %s canceled; its %d sites with the plan are not told: %s",
                  rollout_id, len(executions), exc.message)
        return
    for execution in executions:
        message = protocol.Cancel(site=execution.site_id, execution_id=execution.execution_id,
                                  reason=f"rollout {rollout_id} canceled")
        try:
            publisher.publish(protocol.cancel_topic(execution.site_id),
                              signer.sign(message, signing.expiry(message, clock())))
        except PublishFailed as exc:  # the site will run the plan; its result still counts
            LOG.error("cancel of %s not sent: %s", execution.execution_id, exc.message)
