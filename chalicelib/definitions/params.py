"""``explain`` (one site or machine: every value, where it comes from, what it overrides) and
``variation`` (the whole fleet), on the stored definitions."""

from __future__ import annotations

import json
import time
from typing import Any

from chalicelib import fleet as sites
from chalicelib.definitions import catalog, variation
from chalicelib.definitions.resolve import ConflictError, Fleet, Resolved, level_rank
from chalicelib.errors import Conflict, NotFound
from chalicelib.models import Machine, Site


def defaults_of(blueprint: str | None) -> dict[str, Any]:
    if blueprint is None:
        return {}
    _, spec = catalog.blueprint_revision(blueprint)
    return {name: decl.default for name, decl in spec.params.items()}


def blueprint_defaults() -> dict[str, Any]:
    """Every blueprint parameter's default, where the blueprints that declare it agree."""
    values: dict[str, Any] = {}
    for name, declarations in catalog.declared_params(catalog.View()).items():
        defaults = {json.dumps(decl.default, sort_keys=True) for _, decl in declarations}
        if len(defaults) == 1 and declarations[0][1].default is not None:
            values[name] = declarations[0][1].default
    return values


def resolve_for(fleet: Fleet, site: Site, machine: Machine | None,
                defaults: dict[str, Any]) -> dict[str, Resolved]:
    try:
        return fleet.resolve(site.site_id, site.tags or [],
                             machine.machine_id if machine else None,
                             machine.machine_class if machine else None, defaults)
    except ConflictError as exc:
        raise Conflict(str(exc)) from None


def explain(site_id: str, machine_id: str | None = None,
            blueprint: str | None = None) -> dict[str, Any]:
    site = sites.get_site(site_id)
    machine = None
    if machine_id is not None:
        try:
            machine = Machine.get(site_id, machine_id, consistent_read=True)
        except Machine.DoesNotExist:
            raise NotFound(f"site {site_id!r} has no machine {machine_id!r}") from None
    fleet = catalog.load_fleet()
    resolved = resolve_for(fleet, site, machine, defaults_of(blueprint))
    return {
        "site": site_id,
        "machine": machine_id,
        "machine_class": machine.machine_class if machine else None,
        "groups": fleet.groups_of(site.tags or []),
        "blueprint": blueprint,
        "params": [_explained(name, resolved[name]) for name in sorted(resolved)],
    }


def _explained(name: str, value: Resolved) -> dict[str, Any]:
    return {
        "name": name, "value": value.value, "level": value.source.level,
        "profile": value.source.profile, "redundant": value.redundant,
        "overrides": [{"level": o.level, "profile": o.profile, "value": o.value}
                      for o in sorted(value.overrides, key=lambda o: -level_rank(o.level))],
    }


def fleet_variation(clock: Any = time.perf_counter) -> dict[str, Any]:
    fleet = catalog.load_fleet()
    site_tags = [variation.SiteTags(s.site_id, tuple(s.tags or ()))
                 for s in Site.scan(attributes_to_get=["site_id", "tags"])]
    started = clock()
    report = variation.report(fleet, site_tags, blueprint_defaults())
    report["computed_in_ms"] = round((clock() - started) * 1000, 1)
    return report
