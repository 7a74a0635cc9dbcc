"""What each write route changed, for its audit records.

A ``Recorder`` reads what the write is about to change (``before``, run after the role
check and before the route) and, once the route succeeded, turns that and the answer into
changes (``after``); a ``partial`` one is asked after a failure too. Definitions, sites and
machines are recorded with their whole state before and after; rollouts and principals with
their state. A write that changed nothing
(the same site put again, a definition ``unchanged``, pausing a paused rollout, a dry run)
is not recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalice import Response

from chalicelib.access import principals, tokens
from chalicelib.access.incoming import Incoming
from chalicelib.access.trail import Change
from chalicelib.definitions import catalog
from chalicelib.definitions.documents import NAME, Kind, Level
from chalicelib.errors import NotFound
from chalicelib.models import Definition, Machine, Rollout, Site
from edgeplane import protocol

_KINDS = frozenset(kind.value for kind in Kind)


@dataclass(frozen=True)
class Recorder:
    before: Callable[[Incoming], Any]
    # The answer is None when the route failed: only a ``partial`` write is asked then.
    after: Callable[[Incoming, Response | None, Any], list[Change]]
    # A write of several things that may fail after some were written (a batch of
    # definitions): what it did write is recorded whatever it answered.
    partial: bool = False


def _answer(response: Response | None) -> dict[str, Any]:
    return response.body if response is not None and isinstance(response.body, dict) else {}


# --- sites and machines --------------------------------------------------------------------


def _site(site_id: str) -> dict[str, Any] | None:
    if not protocol.SITE_ID_PATTERN.match(site_id):
        return None
    try:
        return catalog.site_spec(Site.get(site_id, consistent_read=True))
    except Site.DoesNotExist:
        return None


def _site_after(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    site_id = incoming.params["site_id"]
    after = _site(site_id)
    if after == before:
        return []
    return [Change("site", site_id, "created" if before is None else "updated",
                   site_id=site_id, before=before, after=after)]


def _machine(incoming: Incoming) -> dict[str, Any] | None:
    site_id, machine_id = incoming.params["site_id"], incoming.params["machine_id"]
    if not (protocol.SITE_ID_PATTERN.match(site_id)
            and protocol.MACHINE_ID_PATTERN.match(machine_id)):
        return None
    try:
        machine = Machine.get(site_id, machine_id, consistent_read=True)
    except Machine.DoesNotExist:
        return None
    return {"protocol": machine.protocol, "address": machine.address,
            "machine_class": machine.machine_class, "labels": machine.label_dict,
            "source": machine.source}


def _machine_after(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    after = _machine(incoming)
    if after == before:
        return []
    action = "deleted" if after is None else "created" if before is None else "updated"
    site_id = incoming.params["site_id"]
    return [Change("machine", f"{site_id}/{incoming.params['machine_id']}", action,
                   site_id=site_id, before=before, after=after)]


SITE = Recorder(lambda incoming: _site(incoming.params["site_id"]), _site_after)
MACHINE = Recorder(_machine, _machine_after)


# --- definitions ---------------------------------------------------------------------------


def _named_documents(incoming: Incoming) -> list[tuple[Kind, str]]:
    """The (kind, name) of each well-formed document of an apply that writes."""
    body = incoming.body
    if not isinstance(body, dict) or body.get("dry_run") is True:
        return []
    documents = body.get("documents")
    if not isinstance(documents, list):
        return []
    named = []
    for document in documents[:catalog.MAX_BATCH]:
        if not isinstance(document, dict):
            continue
        kind, name = document.get("kind"), document.get("name")
        if isinstance(kind, str) and kind in _KINDS and \
                isinstance(name, str) and NAME.match(name):
            named.append((Kind(kind), name))
    return named


def _specs(named: list[tuple[Kind, str]]) -> dict[tuple[str, str], Any]:
    """The stored spec of each (kind, name), None where there is none: two batch reads."""
    sites = {name for kind, name in named if kind == Kind.SITE}
    others = {(str(kind), name) for kind, name in named if kind != Kind.SITE}
    found: dict[tuple[str, str], Any] = {
        (str(Kind.SITE), site.site_id): catalog.site_spec(site)
        for site in Site.batch_get(sites, consistent_read=True)} if sites else {}
    if others:
        found.update({(item.kind, item.name): item.spec
                      for item in Definition.batch_get(others, consistent_read=True)})
    return {(str(kind), name): found.get((str(kind), name)) for kind, name in named}


def _apply_before(incoming: Incoming) -> dict[tuple[str, str], Any]:
    return _specs(_named_documents(incoming))


def _apply_after(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    """Each named document whose stored spec differs from before: after a success, what
    the answer says changed; after a failure, what was written before it."""
    if not before:
        return []
    after = _specs([(Kind(kind), name) for kind, name in before])
    results = {(r.get("kind"), r.get("name")): r for r in _answer(response).get("results", [])
               if isinstance(r, dict)}
    changes = []
    for (kind, name), old in before.items():
        new = after[(kind, name)]
        if new == old:
            continue
        result = results.get((kind, name), {})
        summary: dict[str, Any] = {"diff": result.get("diff") or catalog.diff(old or {},
                                                                                new or {})}
        if "revision" in result:
            summary["revision"] = result["revision"]
        action = "created" if old is None else "deleted" if new is None else "updated"
        changes.append(Change(kind, name, action, site_id=_site_of(kind, name, new or old),
                              before=old, after=new, summary=summary))
    return changes


def _delete_before(incoming: Incoming) -> Any:
    kind, name = incoming.params["kind"], incoming.params["name"]
    if kind not in _KINDS or not NAME.match(name):
        return None
    return catalog.View().spec(Kind(kind), name)


def _delete_after(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    kind, name = incoming.params["kind"], incoming.params["name"]
    return [Change(kind, name, "deleted", site_id=_site_of(kind, name, before),
                   before=before, after=None)]


def _site_of(kind: str, name: str, spec: Any) -> str | None:
    """The site a definition is about: a site's own, or the target of a site or machine
    profile."""
    if kind == Kind.SITE:
        return name
    if kind == Kind.PROFILE and isinstance(spec, dict) and isinstance(spec.get("target"), str):
        if spec.get("level") == Level.SITE:
            return str(spec["target"])
        if spec.get("level") == Level.MACHINE:
            return str(spec["target"]).split("/", 1)[0]
    return None


APPLY = Recorder(_apply_before, _apply_after, partial=True)
DELETE_DEFINITION = Recorder(_delete_before, _delete_after)


# --- rollouts ------------------------------------------------------------------------------


def _started(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    rollout = _answer(response).get("rollout") or {}
    site_ids = rollout.get("site_ids") or []
    summary = {
        "name": rollout.get("name"), "blueprint": rollout.get("blueprint"),
        "steps": rollout.get("steps"), "target": ({"tag": rollout["target"]["tag"]}
                                                   if (rollout.get("target") or {}).get("tag")
                                                   else {"sites": len(site_ids)}),
        "total": rollout.get("total"), "waves": rollout.get("waves"),
        "policy": rollout.get("policy"), "client_token": rollout.get("client_token"),
        # 200: the same client_token again; the rollout was made by an earlier request
        "new": response is not None and response.status_code == 201,
    }
    return [Change("rollout", str(rollout.get("rollout_id")), "started",
                   site_id=site_ids[0] if len(site_ids) == 1 else None,
                   rollout_id=rollout.get("rollout_id"), after={"state": rollout.get("state")},
                   summary=summary)]


def _rollout_state(incoming: Incoming) -> dict[str, Any] | None:
    try:
        rollout = Rollout.get(incoming.params["rollout_id"], consistent_read=True,
                              attributes_to_get=["state"])
    except Rollout.DoesNotExist:
        return None
    return {"state": rollout.state}


def _moved(action: str) -> Callable[[Incoming, Response | None, Any], list[Change]]:
    def after(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
        rollout = _answer(response).get("rollout") or {}
        state = {"state": rollout.get("state")}
        if state == before:
            return []
        rollout_id = incoming.params["rollout_id"]
        return [Change("rollout", rollout_id, action, rollout_id=rollout_id, before=before,
                       after=state)]
    return after


STARTED = Recorder(lambda incoming: None, _started)
PAUSED = Recorder(_rollout_state, _moved("paused"))
RESUMED = Recorder(_rollout_state, _moved("resumed"))
CANCELED = Recorder(_rollout_state, _moved("canceled"))


# --- principals ----------------------------------------------------------------------------


def _principal_created(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    principal = _answer(response).get("principal") or {}
    return [Change("principal", str(principal.get("name")), "created", after=principal)]


def _principal_before(incoming: Incoming) -> dict[str, Any] | None:
    if not tokens.NAME_PATTERN.match(incoming.params["name"]):
        return None  # the route refuses it
    try:
        return principals.as_json(principals.get(incoming.params["name"]))
    except NotFound:  # the route answers 404
        return None


def _principal_revoked(incoming: Incoming, response: Response | None, before: Any) -> list[Change]:
    after = _answer(response).get("principal") or {}
    if before is None or not before.get("active") or after.get("active"):
        return []
    return [Change("principal", incoming.params["name"], "revoked", before=before,
                   after=after)]


PRINCIPAL_CREATED = Recorder(lambda incoming: None, _principal_created)
PRINCIPAL_REVOKED = Recorder(_principal_before, _principal_revoked)
