"""The variation report: how much site-specific customization the fleet really has.

For every parameter: how many sites take it from each level (and how many have no value
for it), how many distinct values are in use, how many machine-class and machine profiles
set it, and which overrides are redundant (equal to what they override: deleting them would
change nothing). The headline is ``customized_sites``: sites with at least one override of
their own that changes something. Sites with the same groups share the fleet and group part
of their resolution, so 10,000 sites cost little more than their own site profiles.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chalicelib.definitions.documents import Level
from chalicelib.definitions.resolve import (
    Chains,
    ConflictError,
    Fleet,
    Profile,
    chains_of,
    extend,
    finish,
)

SPECIFIC = (str(Level.SITE), str(Level.MACHINE_CLASS), str(Level.MACHINE))


@dataclass(frozen=True)
class SiteTags:
    site_id: str
    tags: tuple[str, ...]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def report(fleet: Fleet, sites: Iterable[SiteTags],
           defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``defaults``: the blueprints' defaults, the bottom layer under the fleet's profiles."""
    by_level: dict[str, Counter[str]] = defaultdict(Counter)
    values: dict[str, Counter[str]] = defaultdict(Counter)
    redundant: dict[tuple[str, str], dict[str, Any]] = {}
    customized: set[str] = set()
    conflicts: list[str] = []
    base_cache: dict[tuple[str, ...], Chains | ConflictError] = {}
    site_count = 0
    for site in sites:
        site_count += 1
        groups = tuple(fleet.groups_of(site.tags))
        base = base_cache.get(groups)
        if base is None:
            base = base_cache[groups] = _base(fleet, groups, site.site_id, defaults)
            if isinstance(base, ConflictError):  # said once, for the first such site
                conflicts.append(f"{base} (and every site in groups {', '.join(groups)})")
        if isinstance(base, ConflictError):
            continue
        own = fleet.profiles_at(Level.SITE, site.site_id)
        try:
            chains = _with_site(base, own, site.site_id) if own else base
        except ConflictError as exc:
            conflicts.append(str(exc))
            continue
        for name, resolved in finish(chains).items():
            level = resolved.source.level
            by_level[name][level] += 1
            values[name][_key(resolved.value)] += 1
            if resolved.redundant:
                redundant[(resolved.source.profile or "", name)] = {
                    "profile": resolved.source.profile, "level": level, "parameter": name,
                    "value": resolved.value, "overrides": resolved.overrides[0].profile}
            elif level in SPECIFIC:
                customized.add(site.site_id)
    machine_overrides = _machine_overrides(fleet)
    parameters: list[dict[str, Any]] = [{
        "name": name,
        "distinct_values": len(values[name]),
        "sites_without_value": site_count - sum(by_level[name].values()),
        "sites_by_level": dict(sorted(by_level[name].items())),
        "site_overrides": by_level[name].get(str(Level.SITE), 0),
        "machine_overrides": machine_overrides.get(name, 0),
        "redundant_overrides": sorted(
            (r["profile"] for (_, param), r in redundant.items() if param == name),
            key=str),
    } for name in sorted(set(by_level) | set(machine_overrides))]
    return {
        "sites": site_count,
        "customized_sites": len(customized),
        "parameters": parameters,
        "varying_parameters": [p["name"] for p in parameters if p["distinct_values"] > 1
                               or p["sites_without_value"] or p["machine_overrides"]],
        "redundant": sorted(redundant.values(), key=lambda r: (r["parameter"],
                                                               str(r["profile"]))),
        "conflicts": conflicts,
    }


def _base(fleet: Fleet, groups: tuple[str, ...], site_id: str,
          defaults: dict[str, Any] | None) -> Chains | ConflictError:
    """The fleet and group part of a resolution, shared by every site with these groups."""
    chains = chains_of(defaults)
    try:
        for level, profiles in fleet.layers(site_id, _tags_for(fleet, groups)):
            if level in (Level.FLEET, Level.GROUP):
                extend(chains, level, profiles, site_id)
    except ConflictError as exc:
        return exc
    return chains


def _tags_for(fleet: Fleet, groups: tuple[str, ...]) -> set[str]:
    return {tag for group in groups for tag in fleet.groups[group]}


def _with_site(base: Chains, own: list[Profile], site_id: str) -> Chains:
    chains = {name: list(chain) for name, chain in base.items()}
    return extend(chains, Level.SITE, own, site_id)


def _machine_overrides(fleet: Fleet) -> Counter[str]:
    """Parameters set by machine-class and machine profiles (they vary within a site)."""
    counted: Counter[str] = Counter()
    for profile in fleet.profiles:
        if profile.level in (Level.MACHINE_CLASS, Level.MACHINE):
            counted.update(profile.params.keys())
    return counted
