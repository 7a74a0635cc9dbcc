"""Routes for rollouts: start one, list them, follow one site by site and machine by machine."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib import publisher, rollouts, views
from chalicelib.schemas import RolloutIn, parse

routes = Blueprint(__name__)


@routes.route("/rollouts", methods=["POST"])
def create_rollout() -> Response:
    body = parse(RolloutIn, routes.current_request.raw_body)
    created = rollouts.create(body, publisher.current())
    return Response(
        body={"rollout": views.rollout(created.rollout, created.executions),
              "executions": [views.execution(e) for e in created.executions]},
        status_code=201 if created.new else 200,
    )


@routes.route("/rollouts", methods=["GET"])
def list_rollouts() -> dict[str, Any]:
    return {"rollouts": [views.rollout(r) for r in rollouts.list_rollouts()]}


@routes.route("/rollouts/{rollout_id}", methods=["GET"])
def get_rollout(rollout_id: str) -> dict[str, Any]:
    rollout = rollouts.get_rollout(rollout_id)
    executions = rollouts.executions_of(rollout_id)
    return {
        "rollout": views.rollout(rollout, executions),
        "executions": [views.execution(e, rollouts.results_of(e.execution_id))
                       for e in executions],
    }
