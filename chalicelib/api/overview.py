"""Aggregates for the web console, computed on the server: the fleet's counts under
filters, failures grouped for triage, and one site's share of a rollout (the drill-down)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Blueprint

from chalicelib import views
from chalicelib.console import failures, fleet, matrix, recent
from chalicelib.errors import NotFound
from chalicelib.fleet import get_site
from chalicelib.models import Execution
from chalicelib.rollouts import moves
from chalicelib.rollouts.read import EXECUTION_FIELDS

routes = Blueprint(__name__)


def _query() -> Mapping[str, str]:
    return routes.current_request.query_params or {}


def _filters(params: Mapping[str, str]) -> fleet.Filters:
    # each checked against its pattern by chalicelib.api.inputs
    return fleet.Filters(**{name: params.get(name) for name in FILTERS})


FILTERS = ("region", "tag", "group", "vendor", "firmware", "gateway_version")


@routes.route("/fleet/summary", methods=["GET"])
def fleet_summary() -> dict[str, Any]:
    return fleet.summary(_filters(_query()))


@routes.route("/fleet/sites", methods=["GET"])
def fleet_sites() -> dict[str, Any]:
    params = _query()
    return fleet.sites_page(_filters(params), sort=params.get("sort", "site_id"),
                            descending=params.get("order") == "desc",
                            offset=int(params.get("offset", "0")),
                            limit=int(params.get("limit", "50")))


@routes.route("/sites/{site_id}/executions", methods=["GET"])
def recent_executions(site_id: str) -> dict[str, Any]:
    """The site's share of each of the newest rollouts it was part of."""
    get_site(site_id)  # 404 naming it
    return {"executions": recent.of_site(site_id)}


@routes.route("/failures/matrix", methods=["GET"])
def failure_matrix() -> dict[str, Any]:
    rollout_id = _query().get("rollout")
    if rollout_id is not None:
        moves.get_rollout(rollout_id)
    return matrix.failure_matrix(rollout_id)


@routes.route("/failures", methods=["GET"])
def failure_groups() -> dict[str, Any]:
    params = _query()
    rollout_id = params.get("rollout")
    if rollout_id is not None:
        moves.get_rollout(rollout_id)  # 404 naming it
    return failures.triage(rollout_id, int(params.get("limit", "50")))


@routes.route("/rollouts/{rollout_id}/sites/{site_id}", methods=["GET"])
def site_execution(rollout_id: str, site_id: str) -> dict[str, Any]:
    """One site's share of a rollout, machine by machine and step by step."""
    fields = [*EXECUTION_FIELDS, "machines", "plan_steps", "result_parts"]
    found = list(Execution.query(rollout_id, Execution.site_id == site_id,
                                 consistent_read=True, attributes_to_get=fields))
    if not found:
        moves.get_rollout(rollout_id)
        raise NotFound(kind=f"site in rollout {rollout_id}", id=site_id)
    return {"execution": views.execution(found[0], with_machines=True)}
