"""Resolving parameters: fleet -> group -> site -> machine class -> machine, most specific wins.

``Fleet`` is a snapshot of the definitions that matter (profiles, groups, and each site's
tags); it is pure data, so the same code answers ``explain`` for one machine and the
variation report for 10,000 sites. Within one level, the profile with the highest priority
wins; two profiles of one level with the same priority that set one parameter to different
values are a conflict, reported with both names, never settled by chance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chalicelib.definitions.documents import LEVEL_ORDER, Level


class ConflictError(ValueError):
    """Two profiles of the same level and priority disagree about a parameter."""


@dataclass(frozen=True)
class Profile:
    name: str
    level: Level
    target: str | None
    params: Mapping[str, Any]
    priority: int = 0


@dataclass(frozen=True)
class Source:
    """Where a value comes from: a profile at a level, or a blueprint's default."""

    profile: str | None  # None: the blueprint's default
    level: str  # a Level, or "default"
    value: Any


@dataclass(frozen=True)
class Resolved:
    value: Any
    source: Source
    overrides: tuple[Source, ...] = ()  # what it overrides, most specific first

    @property
    def redundant(self) -> bool:
        """True when the winning value equals the one it overrides: the override changes
        nothing and could be deleted."""
        return bool(self.overrides) and self.overrides[0].value == self.value


@dataclass
class Fleet:
    profiles: list[Profile] = field(default_factory=list)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)  # group -> its tags

    def __post_init__(self) -> None:
        self._by_target: dict[tuple[Level, str | None], list[Profile]] = defaultdict(list)
        for profile in self.profiles:
            self._by_target[(profile.level, profile.target)].append(profile)

    def profiles_at(self, level: Level, target: str | None = None) -> list[Profile]:
        return self._by_target.get((level, target), [])

    def groups_of(self, tags: Iterable[str]) -> list[str]:
        tags = set(tags)
        return sorted(name for name, needed in self.groups.items() if needed <= tags)

    def layers(self, site_id: str, tags: Iterable[str], machine_id: str | None = None,
               machine_class: str | None = None) -> list[tuple[Level, list[Profile]]]:
        """The profiles that apply, level by level, least specific first."""
        layers = [(Level.FLEET, self._by_target.get((Level.FLEET, None), []))]
        layers.append((Level.GROUP, [p for group in self.groups_of(tags)
                                     for p in self._by_target.get((Level.GROUP, group), [])]))
        layers.append((Level.SITE, self._by_target.get((Level.SITE, site_id), [])))
        if machine_class:
            layers.append((Level.MACHINE_CLASS,
                           self._by_target.get((Level.MACHINE_CLASS, machine_class), [])))
        if machine_id:
            layers.append((Level.MACHINE,
                           self._by_target.get((Level.MACHINE, f"{site_id}/{machine_id}"), [])))
        return [(level, profiles) for level, profiles in layers if profiles]

    def resolve(self, site_id: str, tags: Iterable[str], machine_id: str | None = None,
                machine_class: str | None = None,
                defaults: Mapping[str, Any] | None = None) -> dict[str, Resolved]:
        """Every parameter's value for the site (or one of its machines), with its source
        and what it overrides. ConflictError names the profiles that disagree."""
        chains = chains_of(defaults)
        for level, profiles in self.layers(site_id, tags, machine_id, machine_class):
            extend(chains, level, profiles, site_id)
        return finish(chains)


Chains = dict[str, list[Source]]  # each parameter's sources, least specific first


def chains_of(defaults: Mapping[str, Any] | None) -> Chains:
    return {name: [Source(None, "default", value)]
            for name, value in (defaults or {}).items() if value is not None}


def extend(chains: Chains, level: Level, profiles: list[Profile], site_id: str) -> Chains:
    """Add one level's values on top (in place); returns ``chains``."""
    for name, sources in _level_sources(level, profiles, site_id).items():
        chains.setdefault(name, []).extend(sources)
    return chains


def finish(chains: Chains) -> dict[str, Resolved]:
    return {name: Resolved(chain[-1].value, chain[-1], tuple(reversed(chain[:-1])))
            for name, chain in chains.items()}


def _level_sources(level: Level, profiles: list[Profile],
                   site_id: str) -> dict[str, list[Source]]:
    """Each parameter's values at one level, the winner last: the highest priority wins, and
    profiles of equal priority must agree. The others are kept: they are overridden too."""
    ranked: dict[str, list[tuple[Profile, Any]]] = {}
    for profile in sorted(profiles, key=lambda p: (-p.priority, p.name)):
        for name, value in profile.params.items():
            entries = ranked.setdefault(name, [])
            if entries:
                best, best_value = entries[0]
                if best.priority == profile.priority and best_value != value:
                    raise ConflictError(
                        f"site {site_id!r}: parameter {name!r} is {best_value!r} in {level} "
                        f"profile {best.name!r} and {value!r} in {level} profile "
                        f"{profile.name!r}, both at priority {profile.priority}: give one a "
                        "higher priority")
            entries.append((profile, value))
    return {name: [Source(profile.name, str(level), value)
                   for profile, value in reversed(entries)]
            for name, entries in ranked.items()}


def level_rank(level: str) -> int:
    """Sort key: "default" first, then fleet ... machine."""
    return -1 if level == "default" else LEVEL_ORDER[Level(level)]
