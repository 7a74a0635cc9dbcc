"""The definitions service: apply (create or update, idempotent, with a dry run and a diff),
read, delete; and the cross-document checks a single document cannot make alone.

A batch is applied in dependency order (groups, machine classes, sites, blueprints, then
profiles), so one ``edgeplane apply -f dir/`` can bring up a whole fleet. Every document of a
batch is parsed before anything is written; a dry run checks everything and writes nothing.

Checks across documents: a profile's target must exist, and each of its values must be a
parameter some blueprint declares, valid for every blueprint that declares it; a blueprint
whose parameter declarations would make a stored profile value invalid is refused, naming
the profile. A blueprint is never changed in place: a different spec is a new revision.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pynamodb.exceptions import PynamoDBException

from chalicelib import fleet as sites
from chalicelib.clock import Clock
from chalicelib.definitions.documents import (
    BlueprintSpec,
    Document,
    Kind,
    Level,
    ParamDecl,
    ProfileSpec,
    parse_document,
)
from chalicelib.definitions.resolve import Fleet, Profile
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.models import BlueprintRevision, Definition, Machine, Site, conditional_failed
from chalicelib.schemas import SiteIn

APPLY_ORDER = [Kind.GROUP, Kind.MACHINE_CLASS, Kind.SITE, Kind.BLUEPRINT, Kind.PROFILE]
SITE_FIELDS = ("name", "region", "tags", "timezone", "facts", "maintenance_window")
MAX_BATCH = 500




def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


@dataclass
class View:
    """The stored definitions with the batch's documents staged on top (for dry runs and
    for documents that refer to others of the same batch)."""

    staged: dict[tuple[Kind, str], dict[str, Any]] = field(default_factory=dict)

    def spec(self, kind: Kind, name: str) -> dict[str, Any] | None:
        if (kind, name) in self.staged:
            return self.staged[(kind, name)]
        if kind == Kind.SITE:
            site = _site_or_none(name)
            return site_spec(site) if site else None
        item = _definition_or_none(kind, name)
        return item.spec if item else None

    def all(self, kind: Kind) -> dict[str, dict[str, Any]]:
        found = {item.name: item.spec for item in Definition.query(str(kind))}
        found.update({name: spec for (k, name), spec in self.staged.items() if k == kind})
        return found


# --- apply ---------------------------------------------------------------------------------


def apply(raw_documents: Any, dry_run: bool = False,
          clock: Clock = time.time) -> list[dict[str, Any]]:
    if not isinstance(raw_documents, list) or not raw_documents:
        raise BadRequest("give 'documents': a non-empty list of {kind, name, spec}")
    if len(raw_documents) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} documents per request; got "
                         f"{len(raw_documents)}")
    parsed = [parse_document(raw, f"document {index + 1}")
              for index, raw in enumerate(raw_documents)]
    names = [(doc.kind, doc.name) for doc, _ in parsed]
    twice = sorted({f"{kind} {name}" for kind, name in names if names.count((kind, name)) > 1})
    if twice:
        raise BadRequest(f"documents given twice in one batch: {', '.join(twice)}")
    parsed.sort(key=lambda item: APPLY_ORDER.index(item[0].kind))
    view = View()
    plans = []
    for document, spec in parsed:  # check everything before writing anything
        _check(document, spec, view)
        plans.append((document, _change(document, view)))
        view.staged[(document.kind, document.name)] = document.spec
    results = []
    for document, change in plans:
        if not dry_run and change["action"] != "unchanged":
            change.update(_write(document, clock))
        results.append({**change, "dry_run": dry_run})
    return results


def _check(document: Document, spec: Any, view: View) -> None:
    where = f"{document.kind} {document.name}"
    if document.kind == Kind.SITE:
        # What a site gets when a field is left out, so that applying it again is a no-op.
        document.spec["name"] = document.spec.get("name") or document.name
        document.spec["timezone"] = document.spec.get("timezone") or sites.DEFAULT_TIMEZONE
        try:
            checked = SiteIn(**{k: document.spec.get(k) for k in SITE_FIELDS})
            document.spec["tags"] = checked.tags or []  # stored sorted, without repeats
            document.spec["maintenance_window"] = (checked.maintenance_window.model_dump()
                                                   if checked.maintenance_window else None)
        except ValidationError as exc:
            raise BadRequest(f"{where}: " + "; ".join(
                f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            ) from None
    elif isinstance(spec, ProfileSpec):
        _check_target(where, spec, view)
        _check_profile_values(where, spec.params, view)
    elif isinstance(spec, BlueprintSpec):
        _check_blueprint_against_profiles(where, spec, view)


def _check_target(where: str, spec: ProfileSpec, view: View) -> None:
    kind = {Level.GROUP: Kind.GROUP, Level.MACHINE_CLASS: Kind.MACHINE_CLASS,
            Level.SITE: Kind.SITE, Level.MACHINE: Kind.SITE}.get(spec.level)
    if kind is None:
        return
    target = spec.target or ""
    name = target.split("/", 1)[0] if spec.level == Level.MACHINE else target
    if view.spec(kind, name) is None:
        raise BadRequest(f"{where}: its target {kind} {name!r} does not exist; apply the "
                         f"{kind} first (or in the same batch)")


def declared_params(view: View) -> dict[str, list[tuple[str, ParamDecl]]]:
    """Every parameter a blueprint declares: name -> [(blueprint, declaration)]."""
    declared: dict[str, list[tuple[str, ParamDecl]]] = {}
    for name, raw in sorted(view.all(Kind.BLUEPRINT).items()):
        for param, decl in BlueprintSpec.model_validate(raw).params.items():
            declared.setdefault(param, []).append((name, decl))
    return declared


def _check_profile_values(where: str, params: dict[str, Any], view: View) -> None:
    declared = declared_params(view)
    problems = []
    for param, value in sorted(params.items()):
        declarations = declared.get(param)
        if not declarations:
            known = ", ".join(sorted(declared)) or "none yet"
            problems.append(f"params.{param}: no blueprint declares a parameter {param!r} "
                            f"(declared: {known})")
            continue
        for blueprint, decl in declarations:
            try:
                decl.check(f"blueprint {blueprint}", param, value)
            except ValueError as exc:
                problems.append(f"params.{param}: {exc}")
    if problems:
        raise BadRequest(f"{where}: " + "; ".join(problems))


def _check_blueprint_against_profiles(where: str, spec: BlueprintSpec, view: View) -> None:
    problems = []
    for profile_name, raw in sorted(view.all(Kind.PROFILE).items()):
        for param, value in (raw.get("params") or {}).items():
            decl = spec.params.get(param)
            if decl is None:
                continue
            try:
                decl.check(where, param, value)
            except ValueError as exc:
                problems.append(f"profile {profile_name!r} sets {exc}")
    if problems:
        raise BadRequest(f"{where}: its parameters would make stored values invalid: "
                         + "; ".join(problems))


def _change(document: Document, view: View) -> dict[str, Any]:
    current = view.spec(document.kind, document.name)
    result: dict[str, Any] = {"kind": str(document.kind), "name": document.name}
    if current is None:
        result.update(action="created", diff=[f"+ {line}" for line in
                                              _flatten("spec", document.spec)])
    elif spec_hash(current) == spec_hash(document.spec):
        result.update(action="unchanged", diff=[])
    else:
        result.update(action="updated", diff=diff(current, document.spec))
    if document.kind == Kind.BLUEPRINT:
        stored = _definition_or_none(Kind.BLUEPRINT, document.name)
        latest = stored.revision if stored else 0
        result["revision"] = latest if result["action"] == "unchanged" else latest + 1
    return result


def _write(document: Document, clock: Clock) -> dict[str, Any]:
    now = clock()
    if document.kind == Kind.SITE:
        sites.put_site(document.name, SiteIn(**{k: document.spec.get(k) for k in SITE_FIELDS}),
                       clock)
        return {}
    if document.kind == Kind.BLUEPRINT:
        return {"revision": _new_revision(document, now)}
    item = Definition(str(document.kind), document.name, spec=document.spec,
                      spec_hash=spec_hash(document.spec), revision=1, updated_at=now)
    existing = _definition_or_none(document.kind, document.name)
    item.created_at = existing.created_at if existing else now
    item.save()
    return {}


def _new_revision(document: Document, now: float) -> int:
    stored = _definition_or_none(Kind.BLUEPRINT, document.name)
    revision = int(stored.revision if stored else 0) + 1
    digest = spec_hash(document.spec)
    try:
        BlueprintRevision(document.name, revision, spec=document.spec, spec_hash=digest,
                          created_at=now).save(
            condition=BlueprintRevision.revision.does_not_exist())
        condition = (Definition.revision == stored.revision) if stored else \
            Definition.name.does_not_exist()
        Definition(str(Kind.BLUEPRINT), document.name, spec=document.spec, spec_hash=digest,
                   revision=revision, created_at=stored.created_at if stored else now,
                   updated_at=now).save(condition=condition)
    except PynamoDBException as exc:
        if conditional_failed(exc):
            raise Conflict(f"blueprint {document.name!r} changed while this apply ran "
                           f"(revision {revision} exists): apply again") from None
        raise
    return revision


# --- diff ----------------------------------------------------------------------------------


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        return [line for key in sorted(value) for line in _flatten(f"{prefix}.{key}",
                                                                    value[key])]
    if isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
        return [line for i, item in enumerate(value) for line in _flatten(f"{prefix}[{i}]",
                                                                           item)]
    return [f"{prefix}: {json.dumps(value)}"]


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``+ path: value``, ``- path: value`` and ``~ path: old -> new`` lines."""
    before = dict(line.split(": ", 1) for line in _flatten("spec", old))
    after = dict(line.split(": ", 1) for line in _flatten("spec", new))
    lines = []
    for path in sorted(set(before) | set(after)):
        if path not in after:
            lines.append(f"- {path}: {before[path]}")
        elif path not in before:
            lines.append(f"+ {path}: {after[path]}")
        elif before[path] != after[path]:
            lines.append(f"~ {path}: {before[path]} -> {after[path]}")
    return lines


# --- reads and delete ----------------------------------------------------------------------


def parse_kind(kind: str) -> Kind:
    try:
        return Kind(kind)
    except ValueError:
        raise BadRequest(f"unknown kind {kind!r}; kinds: "
                         f"{', '.join(k.value for k in Kind)}") from None


def site_spec(site: Site) -> dict[str, Any]:
    return {"name": site.name, "region": site.region, "tags": list(site.tags or []),
            "timezone": site.timezone, "facts": dict(site.facts or {}),
            "maintenance_window": site.maintenance_window}


def get(kind: Kind, name: str, revision: int | None = None) -> dict[str, Any]:
    if kind == Kind.SITE:
        site = _site_or_none(name)
        if site is None:
            raise NotFound(kind="site", id=name)
        return {"kind": str(kind), "name": name, "spec": site_spec(site)}
    item = _definition_or_none(kind, name)
    if kind == Kind.BLUEPRINT:
        revisions = sorted((r.revision for r in BlueprintRevision.query(name)), key=int)
        if not revisions:
            raise NotFound(kind="blueprint", id=name)
        wanted = revision or (item.revision if item else revisions[-1])
        try:
            stored = BlueprintRevision.get(name, wanted, consistent_read=True)
        except BlueprintRevision.DoesNotExist:
            raise NotFound(f"blueprint {name!r} has no revision {wanted}; it has "
                           f"{', '.join(str(int(r)) for r in revisions)}") from None
        return {"kind": str(kind), "name": name, "spec": stored.spec,
                "revision": int(stored.revision), "latest": int(item.revision) if item else None,
                "revisions": [int(r) for r in revisions], "deleted": item is None}
    if item is None:
        raise NotFound(kind=str(kind), id=name)
    return {"kind": str(kind), "name": name, "spec": item.spec}


def list_kind(kind: Kind) -> list[dict[str, Any]]:
    if kind == Kind.SITE:
        return [{"kind": str(kind), "name": s.site_id, "spec": site_spec(s)}
                for s in sorted(Site.scan(), key=lambda s: s.site_id)]
    return [{"kind": str(kind), "name": item.name, "spec": item.spec,
             **({"revision": int(item.revision)} if kind == Kind.BLUEPRINT else {})}
            for item in Definition.query(str(kind))]


def delete(kind: Kind, name: str) -> dict[str, Any]:
    """Delete a document. What profiles attach to stays until they are deleted first; a
    blueprint's revisions are kept (rollouts and desired states refer to them)."""
    get(kind, name)  # 404 if absent
    level = {Kind.GROUP: Level.GROUP, Kind.MACHINE_CLASS: Level.MACHINE_CLASS,
             Kind.SITE: Level.SITE}.get(kind)
    if level is not None:
        users = sorted(p.name for p in load_fleet().profiles
                       if (p.target == name and p.level == level)
                       or (kind == Kind.SITE and p.level == Level.MACHINE
                           and (p.target or "").startswith(f"{name}/")))
        if users:
            raise Conflict(f"{kind} {name!r} is the target of profile(s) {', '.join(users)}: "
                           "delete or retarget them first")
    if kind == Kind.SITE:
        if list(Machine.query(name, limit=1)):
            raise Conflict(f"site {name!r} still has machines; a site in service is "
                           "retagged, not deleted")
        Site(name).delete()
    else:
        Definition(str(kind), name).delete()
    return {"kind": str(kind), "name": name, "deleted": True}


# --- the fleet as the resolver sees it -----------------------------------------------------


def load_fleet() -> Fleet:
    profiles = []
    for item in Definition.query(str(Kind.PROFILE)):
        spec = ProfileSpec.model_validate(item.spec)
        profiles.append(Profile(item.name, spec.level, spec.target, spec.params, spec.priority))
    groups = {item.name: frozenset(item.spec.get("tags") or [])
              for item in Definition.query(str(Kind.GROUP))}
    return Fleet(profiles, groups)


def blueprint_revision(name: str, revision: int | None = None) -> tuple[int, BlueprintSpec]:
    """(revision, spec) of a blueprint: the latest, or the one asked for."""
    found = get(Kind.BLUEPRINT, name, revision)
    if revision is None and found["deleted"]:
        raise NotFound(f"blueprint {name!r} was deleted; name a revision "
                       f"({', '.join(map(str, found['revisions']))}) to roll it out anyway")
    return found["revision"], BlueprintSpec.model_validate(found["spec"])


def documents_of(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"kind": i["kind"], "name": i["name"], "spec": i["spec"]} for i in items]


def _definition_or_none(kind: Kind, name: str) -> Definition | None:
    try:
        return Definition.get(str(kind), name, consistent_read=True)
    except Definition.DoesNotExist:
        return None


def _site_or_none(site_id: str) -> Site | None:
    try:
        return Site.get(site_id, consistent_read=True)
    except Site.DoesNotExist:
        return None
