"""Which gateway version each site should run, and whether it does.

A site's gateway reports the version it runs (presence and inventory: ``Site.
gateway_version``). A ``gateway.upgrade`` rollout, when it sends a site its plan, records
the version asked for as that site's desired gateway version (``Site.desired_gateway``);
the drift report compares the two. The record stays when the upgrade fails and the site
rolls back: the site then runs another version than the one desired, which is drift.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from chalicelib.clock import Clock
from chalicelib.models import Site
from chalicelib.views import iso
from edgeplane import protocol

UPGRADE_TASK = "gateway.upgrade"


def desired_version(steps: Iterable[protocol.PlanStep]) -> str | None:
    """The version a plan's steps ask the gateway to run (its upgrade step is the last)."""
    found = None
    for step in steps:
        if step.task == UPGRADE_TASK:
            found = step.params.get("version")
    return found if isinstance(found, str) else None


def record_desired(site_id: str, rollout_id: str, steps: Iterable[protocol.PlanStep],
                   clock: Clock = time.time) -> None:
    """A site was sent a plan that upgrades its gateway: that version is desired there."""
    version = desired_version(steps)
    if version is None:
        return
    Site(site_id).update(actions=[Site.desired_gateway.set(
        {"version": version, "rollout": rollout_id, "set_at": clock()})])


def sites_with_desired(site_id: str | None = None) -> list[Site]:
    """The sites with a desired gateway version (``site_id``: that one, if it has)."""
    if site_id is not None:
        site = Site.get(site_id)
        return [site] if site.desired_gateway else []
    return list(Site.scan(Site.desired_gateway.exists()))


def gateway_drift(site: Site) -> dict[str, Any]:
    """The drift report's row of a site: the version desired against the one it runs."""
    desired = site.desired_gateway or {}
    return {
        "site_id": site.site_id,
        "desired": desired.get("version"),
        "running": site.gateway_version,
        "online": bool(site.online),
        "rollout_id": desired.get("rollout"),
        "desired_at": iso(desired.get("set_at")),
        "in_sync": desired.get("version") == site.gateway_version,
    }
