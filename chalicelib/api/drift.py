"""Routes for drift: which machines differ from their desired state, and how."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chalice import Blueprint

from chalicelib import fleet, gateway_versions, views
from chalicelib.models import Machine
from chalicelib.schemas import check_pattern
from edgeplane.protocol import SITE_ID_PATTERN

routes = Blueprint(__name__)


@routes.route("/drift", methods=["GET"])
def drift() -> dict[str, Any]:
    """Every machine with a desired state (``?site=S``: of one site), drifted ones first;
    and every site with a desired gateway version, against the one it runs."""
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
    gateways = [gateway_versions.gateway_drift(s)
                for s in gateway_versions.sites_with_desired(site)]
    gateways.sort(key=lambda r: (r["in_sync"], r["site_id"]))
    return {"machines": rows, "drifted": sum(not r["in_sync"] for r in rows),
            "gateways": gateways, "gateways_drifted": sum(not r["in_sync"] for r in gateways)}
