"""Rendering each site's plan for a rollout: inline steps, or a blueprint revision with the
site's layered parameters. Creation renders every target site (which is where a rollout the
fleet cannot run is refused); dispatch renders a site whose execution was stored without
its plan. A blueprint's rendering also gives each machine its desired state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib import plans
from chalicelib.clock import Clock
from chalicelib.definitions import catalog, render
from chalicelib.definitions.documents import BlueprintSpec
from chalicelib.definitions.resolve import Fleet
from chalicelib.errors import Conflict
from chalicelib.models import Machine, Rollout, Site
from chalicelib.schemas import RolloutIn


@dataclass
class Source:
    """What a rollout runs: inline steps, or a blueprint revision rendered per site."""

    steps: list[dict[str, Any]]
    blueprint: str | None = None
    revision: int | None = None
    spec: BlueprintSpec | None = None
    fleet: Fleet | None = None


def source_of(body: RolloutIn) -> Source:
    if body.blueprint is None:
        return Source([step.model_dump(exclude_none=True) for step in body.steps or []])
    revision, spec = catalog.blueprint_revision(body.blueprint, body.revision)
    return Source(render.step_dicts(spec), body.blueprint, revision, spec, catalog.load_fleet())


def source_of_rollout(rollout: Rollout) -> Source:
    if rollout.blueprint is None:
        return Source(rollout.steps)
    revision, spec = catalog.blueprint_revision(rollout.blueprint,
                                                int(rollout.blueprint_revision))
    return Source(rollout.steps, rollout.blueprint, revision, spec, catalog.load_fleet())


def render_site(rollout_id: str, site_id: str, source: Source,
                machines: list[Machine] | None = None,
                site: Site | None = None) -> render.RenderedSite:
    """One site's plan (and, for a blueprint, its machines' desired states)."""
    if machines is None:
        machines = list(Machine.query(site_id, consistent_read=True))
    if source.blueprint is None:
        return render.RenderedSite(plans.render(rollout_id, site_id, machines, source.steps),
                                   {})
    assert source.spec is not None and source.fleet is not None and source.revision
    site = site or Site.get(site_id, consistent_read=True)
    return render.render_site(rollout_id, site, machines, source.blueprint, source.revision,
                              source.spec, source.fleet)


# Above this many sites, one scan of the machines table costs less than a query per site.
SCAN_ABOVE = 200

# What rendering reads of a machine: a scan of only these is a fraction of the table's bytes
# (DynamoDB pages scans by 1 MB, and moto server re-reads the table for every page).
RENDER_FIELDS = ["site_id", "machine_id", "protocol", "capabilities", "machine_class",
                 "labels", "manufacturer", "model", "serial"]


def render_all(rollout_id: str, site_ids: Sequence[str],
               source: Source) -> dict[str, render.RenderedSite]:
    """Every site's plan, or one Conflict naming every site that cannot run the steps."""
    machines: dict[str, list[Machine]] | None = None
    sites: dict[str, Site] = {}
    if len(site_ids) > SCAN_ABOVE:
        wanted = set(site_ids)
        machines = {site_id: [] for site_id in site_ids}
        for machine in Machine.scan(attributes_to_get=RENDER_FIELDS):
            if machine.site_id in wanted:
                machines[machine.site_id].append(machine)
        if source.blueprint is not None:
            sites = {site.site_id: site for site in Site.scan() if site.site_id in wanted}
    rendered, problems = {}, []
    for site_id in site_ids:
        try:
            rendered[site_id] = render_site(
                rollout_id, site_id, source,
                machines.get(site_id, []) if machines is not None else None,
                sites.get(site_id))
        except Conflict as exc:
            problems.append(exc.message)
    if problems:
        raise Conflict("; ".join(problems))
    return rendered


def set_desired(rollout_id: str, site_id: str, desired: dict[str, dict[str, Any]],
                clock: Clock = time.time) -> None:
    """Record what the rollout asks of each machine (its blueprint revision and params)."""
    if desired:
        Site(site_id).update(actions=[Site.has_desired.set(True)])
    for machine_id, state in desired.items():
        Machine(site_id, machine_id).update(actions=[
            Machine.desired.set({**state, "rollout": rollout_id, "set_at": clock()})])
