"""Rendering each site's plan for a rollout: inline steps, or a blueprint revision with the
site's layered parameters. Creation renders every target site (which is where a rollout the
fleet cannot run is refused); dispatch renders a site whose execution was stored without
its plan. A blueprint's rendering also gives each machine its desired state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
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


# What rendering reads of a machine (a fraction of the item's bytes).
RENDER_FIELDS = ["site_id", "machine_id", "protocol", "capabilities", "machine_class",
                 "labels", "manufacturer", "model", "serial"]


def render_many(rollout_id: str, site_ids: Sequence[str], source: Source,
                sites: dict[str, Site] | None = None
                ) -> tuple[dict[str, render.RenderedSite], dict[str, str]]:
    """Each site's plan, and why each site that cannot run the rollout cannot.

    The sites and their machines are read in batches (100 keys a request) through the
    machine ids each site keeps (``Site.machine_ids``), so rendering a wave of a thousand
    sites costs a few dozen requests, not one query per site. A site stored before it kept
    its machine ids is queried on its own. ``sites``: those already read (``read_sites``).
    """
    if sites is None:
        sites = read_sites(site_ids, full=source.blueprint is not None)
    machines = _read_machines([sites[s] for s in dict.fromkeys(site_ids) if s in sites])
    rendered: dict[str, render.RenderedSite] = {}
    problems: dict[str, str] = {}
    for site_id in site_ids:
        site = sites.get(site_id)
        if site is None:
            problems[site_id] = f"site {site_id!r} does not exist"
            continue
        try:
            rendered[site_id] = render_site(rollout_id, site_id, source,
                                            machines.get(site_id), site)
        except Conflict as exc:
            problems[site_id] = exc.message
    return rendered, problems


def read_sites(site_ids: Sequence[str], full: bool) -> dict[str, Site]:
    """The sites, whole (a blueprint's templates read them) or what inline steps need."""
    fields = None if full else ["site_id", "machine_ids", "has_desired"]
    return {site.site_id: site for site in Site.batch_get(
        list(dict.fromkeys(site_ids)), consistent_read=True, attributes_to_get=fields)}


def _read_machines(sites: Iterable[Site]) -> dict[str, list[Machine]]:
    keys: list[tuple[str, str]] = []
    found: dict[str, list[Machine]] = {}
    for site in sites:
        if site.machine_ids is None:
            found[site.site_id] = list(Machine.query(site.site_id, consistent_read=True,
                                                     attributes_to_get=RENDER_FIELDS))
        else:
            found[site.site_id] = []
            keys += [(site.site_id, machine_id) for machine_id in sorted(site.machine_ids)]
    for machine in Machine.batch_get(keys, consistent_read=True,
                                     attributes_to_get=RENDER_FIELDS):
        found[machine.site_id].append(machine)
    for listed in found.values():
        listed.sort(key=lambda machine: machine.machine_id)
    return found


def set_desired(rollout_id: str, site_id: str, desired: dict[str, dict[str, Any]],
                clock: Clock = time.time) -> None:
    """Record what the rollout asks of each machine (its blueprint revision and params)."""
    if desired:
        Site(site_id).update(actions=[Site.has_desired.set(True)])
    for machine_id, state in desired.items():
        Machine(site_id, machine_id).update(actions=[
            Machine.desired.set({**state, "rollout": rollout_id, "set_at": clock()})])
