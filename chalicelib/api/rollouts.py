"""Routes for rollouts: start one, list them, follow one site by site and machine by machine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Blueprint, Response

from chalicelib import audit, publisher, views
from chalicelib.access import identity
from chalicelib.models import Rollout
from chalicelib.rollouts import control, create, moves, read, targets, wave_counters
from chalicelib.schemas import RolloutIn, parse

routes = Blueprint(__name__)


@routes.route("/rollouts", methods=["POST"])
def create_rollout() -> Response:
    body = parse(RolloutIn, routes.current_request.raw_body)
    created = create.create(body, publisher.current(), actor=_actor())
    reply: dict[str, Any] = {"rollout": views.rollout(created.rollout, created.executions,
                                                      created.site_ids)}
    if created.executions is not None:
        reply["executions"] = [views.execution(e) for e in created.executions]
    return Response(body=reply, status_code=201 if created.new else 200)


@routes.route("/rollouts", methods=["GET"])
def list_rollouts() -> dict[str, Any]:
    return {"rollouts": [views.rollout(r) for r in read.list_rollouts()]}


@routes.route("/rollouts/{rollout_id}", methods=["GET"])
def get_rollout(rollout_id: str) -> dict[str, Any]:
    params: Mapping[str, str] = routes.current_request.query_params or {}
    counters_only = params.get("executions") == "false"
    rollout = moves.get_rollout(rollout_id)
    if counters_only:  # one read of the rollout (and of its waves, if stored apart)
        return {"rollout": views.rollout(rollout), "waves": [
            views.wave(w) for w in wave_counters.all_of(rollout)]}
    # ?machines=false: sites only (a watch of 10,000 sites needs no machine results)
    machines = params.get("machines") != "false"
    executions = read.executions_of(rollout_id, with_machines=machines)
    return {
        "rollout": views.rollout(rollout, executions, targets.read(rollout)),
        "executions": [views.execution(e, with_machines=machines) for e in executions],
    }


def _one(rollout: Rollout) -> dict[str, Any]:
    return {"rollout": views.rollout(rollout, site_ids=targets.read(rollout))}


def _actor() -> str:
    """Who asked: the authenticated principal (never what the request says of itself)."""
    return identity.current().name


@routes.route("/rollouts/{rollout_id}/pause", methods=["POST"])
def pause(rollout_id: str) -> dict[str, Any]:
    return _one(control.pause(rollout_id, _actor()))


@routes.route("/rollouts/{rollout_id}/resume", methods=["POST"])
def resume(rollout_id: str) -> dict[str, Any]:
    return _one(control.resume(rollout_id, publisher.current(), _actor()))


@routes.route("/rollouts/{rollout_id}/cancel", methods=["POST"])
def cancel(rollout_id: str) -> dict[str, Any]:
    return _one(control.cancel(rollout_id, publisher.current(), _actor()))


@routes.route("/rollouts/{rollout_id}/events", methods=["GET"])
def events(rollout_id: str) -> dict[str, Any]:
    moves.get_rollout(rollout_id)
    return {"events": audit.log_of(rollout_id)}
