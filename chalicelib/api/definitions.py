"""Routes for definitions (apply, get, delete) and for parameters (explain, variation)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Blueprint

from chalicelib import limits
from chalicelib.definitions import catalog, params
from chalicelib.errors import BadRequest
from chalicelib.schemas import check_pattern
from edgeplane.protocol import MACHINE_ID_PATTERN, SITE_ID_PATTERN

routes = Blueprint(__name__)


def _body() -> dict[str, Any]:
    data = limits.decode(routes.current_request.raw_body)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = set(data) - {"documents", "dry_run"}
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(sorted(unknown))}; give 'documents' "
                         "and optionally 'dry_run'")
    return data


def _query(name: str) -> str | None:
    query: Mapping[str, str] = routes.current_request.query_params or {}
    return query.get(name)


@routes.route("/definitions", methods=["POST"])
def apply() -> dict[str, Any]:
    """Create or update documents; ``dry_run: true`` checks and diffs, writes nothing."""
    body = _body()
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("field 'dry_run' must be true or false")
    return {"results": catalog.apply(body.get("documents"), dry_run=dry_run)}


@routes.route("/definitions/{kind}", methods=["GET"])
def list_kind(kind: str) -> dict[str, Any]:
    return {"items": catalog.list_kind(catalog.parse_kind(kind))}


@routes.route("/definitions/{kind}/{name}", methods=["GET"])
def get(kind: str, name: str) -> dict[str, Any]:
    revision = _query("revision")
    if revision is not None and not (revision.isascii() and revision.isdigit()):
        raise BadRequest(f"revision {revision!r} must be a positive integer")
    return {"item": catalog.get(catalog.parse_kind(kind), name,
                                int(revision) if revision else None)}


@routes.route("/definitions/{kind}/{name}", methods=["DELETE"])
def delete(kind: str, name: str) -> dict[str, Any]:
    return catalog.delete(catalog.parse_kind(kind), name)


@routes.route("/params/explain", methods=["GET"])
def explain() -> dict[str, Any]:
    site = _query("site")
    if not site:
        raise BadRequest("give the site: /params/explain?site=SITE[&machine=M][&blueprint=B]")
    check_pattern("site", site, SITE_ID_PATTERN)
    machine = _query("machine")
    if machine is not None:
        check_pattern("machine", machine, MACHINE_ID_PATTERN)
    return params.explain(site, machine, _query("blueprint"))


@routes.route("/params/variation", methods=["GET"])
def variation() -> dict[str, Any]:
    return params.fleet_variation()
