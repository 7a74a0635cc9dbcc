"""Routes for drift: which machines differ from their desired state, and how."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Blueprint

from chalicelib import fleet, views
from chalicelib.models import Machine
from chalicelib.schemas import check_pattern
from edgeplane.protocol import SITE_ID_PATTERN

routes = Blueprint(__name__)


@routes.route("/drift", methods=["GET"])
def drift() -> dict[str, Any]:
    """Every machine with a desired state (``?site=S``: of one site), drifted ones first."""
    params: Mapping[str, str] = routes.current_request.query_params or {}
    site = params.get("site")
    if site is not None:
        check_pattern("site", site, SITE_ID_PATTERN)
        fleet.get_site(site)
        machines = fleet.machines_of(site)
    else:
        machines = list(Machine.scan(Machine.desired.exists() | Machine.drift.exists()))
    rows = [views.machine_drift(m) for m in machines if m.desired or m.drift]
    rows.sort(key=lambda r: (r["in_sync"], r["site_id"], r["machine_id"]))
    return {"machines": rows, "drifted": sum(not r["in_sync"] for r in rows)}
