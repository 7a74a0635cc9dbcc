"""Routes for sites and their machines."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

from chalicelib import fleet, views
from chalicelib.rollouts import usage
from chalicelib.schemas import MachineIn, SiteIn, check_pattern, parse
from edgeplane.protocol import MACHINE_ID_PATTERN, SITE_ID_PATTERN

sites = Blueprint(__name__)


def _site_id(site_id: str) -> str:
    return check_pattern("site_id", site_id, SITE_ID_PATTERN)


@sites.route("/sites", methods=["GET"])
def list_sites() -> dict[str, Any]:
    return {"sites": [views.site(site) for site in fleet.list_sites()]}


@sites.route("/sites/{site_id}", methods=["PUT"])
def put_site(site_id: str) -> dict[str, Any]:
    body = parse(SiteIn, sites.current_request.raw_body)
    return {"site": views.site(fleet.put_site(_site_id(site_id), body))}


@sites.route("/sites/{site_id}", methods=["GET"])
def get_site(site_id: str) -> dict[str, Any]:
    site = fleet.get_site(_site_id(site_id))
    return {"site": views.site(site),
            "machines": [views.machine(m) for m in fleet.machines_of(site_id)]}


@sites.route("/sites/{site_id}/machines", methods=["GET"])
def list_machines(site_id: str) -> dict[str, Any]:
    fleet.get_site(_site_id(site_id))
    return {"machines": [views.machine(m) for m in fleet.machines_of(site_id)]}


@sites.route("/sites/{site_id}/machines/{machine_id}", methods=["PUT"])
def put_machine(site_id: str, machine_id: str) -> dict[str, Any]:
    _site_id(site_id)
    check_pattern("machine_id", machine_id, MACHINE_ID_PATTERN)
    body = parse(MachineIn, sites.current_request.raw_body)
    return {"machine": views.machine(fleet.put_machine(site_id, machine_id, body))}


@sites.route("/sites/{site_id}/machines/{machine_id}", methods=["DELETE"])
def delete_machine(site_id: str, machine_id: str) -> dict[str, Any]:
    fleet.delete_machine(site_id, machine_id, needed_by=usage.rollouts_needing)
    return {"site_id": site_id, "machine_id": machine_id, "deleted": True}
