"""The rollout engine: create a rollout, dispatch its plans, finish it, read it back.

Deciding is separated from doing: ``create`` first resolves the target sites and renders
every site's plan (which is where a rollout the fleet cannot run is refused), and only then
writes anything. Every write is idempotent, so a retried request, or the same
``client_token`` again, completes a creation that crashed half way instead of starting a
second rollout:

1. put the rollout, on condition that its id is new (the id derives from the client token);
2. put one execution per site in state queued, on condition that it is new;
3. dispatch: for each execution still queued, publish its plan (QoS 1) and move it to sent.

This skeleton dispatches every site at once; waves will choose which queued executions to
dispatch.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib import plans, states
from chalicelib.definitions import catalog, render
from chalicelib.definitions.documents import BlueprintSpec
from chalicelib.definitions.resolve import Fleet
from chalicelib.errors import BadRequest, Conflict, NotFound, PublishFailed
from chalicelib.models import (
    Execution,
    Machine,
    MachineResult,
    Rollout,
    Site,
    conditional_failed,
    conditional_update,
)
from chalicelib.publisher import Publisher
from chalicelib.schemas import RolloutIn
from chalicelib.states import RolloutState
from edgeplane import protocol
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class Created:
    rollout: Rollout
    executions: list[Execution]
    new: bool  # False: an earlier request with the same client_token made it


def rollout_id_for(client_token: str | None) -> str:
    """Derived from the client token when there is one: a retry puts the same id again."""
    if client_token:
        return "r-" + hashlib.sha256(client_token.encode()).hexdigest()[:24]
    return "r-" + uuid.uuid4().hex[:24]


def create(body: RolloutIn, publisher: Publisher, clock: Clock = time.time) -> Created:
    rollout_id = rollout_id_for(body.client_token)
    if body.client_token:
        existing = _get_or_none(rollout_id)
        if existing is not None:
            return _resume(existing, body, publisher, clock)

    site_ids = resolve_sites(body)
    source = source_of(body)
    rendered = render_all(rollout_id, site_ids, source)

    now = clock()
    rollout = Rollout(
        rollout_id, name=body.name, steps=source.steps, target_tag=body.tag,
        site_ids=site_ids, state=RolloutState.RUNNING, client_token=body.client_token,
        request_hash=body.fingerprint(), created_at=now, updated_at=now,
        blueprint=source.blueprint, blueprint_revision=source.revision,
    )
    try:
        rollout.save(condition=Rollout.rollout_id.does_not_exist())
    except PynamoDBException as exc:
        if not conditional_failed(exc):
            raise
        # The same client token, in a request running concurrently with this one.
        return _resume(Rollout.get(rollout_id, consistent_read=True), body, publisher, clock)
    LOG.info("rollout %s created: %d steps on %d sites", rollout_id, len(source.steps),
             len(site_ids))
    executions = ensure_executions(rollout, clock)
    dispatch(rollout, executions, publisher, rendered, clock)
    return Created(rollout, executions_of(rollout_id), new=True)


def _resume(rollout: Rollout, body: RolloutIn, publisher: Publisher, clock: Clock) -> Created:
    if rollout.request_hash != body.fingerprint():
        raise Conflict(f"client_token {body.client_token!r} was already used for rollout "
                       f"{rollout.rollout_id!r} with a different request")
    LOG.info("rollout %s: same client_token again; resuming it", rollout.rollout_id)
    executions = ensure_executions(rollout, clock)
    dispatch(rollout, executions, publisher, {}, clock)
    return Created(rollout, executions_of(rollout.rollout_id), new=False)


def resolve_sites(body: RolloutIn) -> list[str]:
    """The target's site ids: each named site must exist, a tag must match at least one."""
    if body.sites is not None:
        found = {site.site_id for site in Site.batch_get(body.sites)}
        missing = [site_id for site_id in body.sites if site_id not in found]
        if missing:
            raise NotFound(f"site(s) {', '.join(map(repr, missing))} do not exist")
        return list(body.sites)
    site_ids = sorted(site.site_id for site in Site.scan(Site.tags.contains(body.tag)))
    if not site_ids:
        raise BadRequest(f"tag {body.tag!r} matches no site")
    return site_ids


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


def render_site(rollout_id: str, site_id: str, source: Source) -> render.RenderedSite:
    """One site's plan (and, for a blueprint, its machines' desired states)."""
    machines = list(Machine.query(site_id, consistent_read=True))
    if source.blueprint is None:
        return render.RenderedSite(plans.render(rollout_id, site_id, machines, source.steps),
                                   {})
    assert source.spec is not None and source.fleet is not None and source.revision
    site = Site.get(site_id, consistent_read=True)
    return render.render_site(rollout_id, site, machines, source.blueprint, source.revision,
                              source.spec, source.fleet)


def render_all(rollout_id: str, site_ids: Sequence[str],
               source: Source) -> dict[str, render.RenderedSite]:
    """Every site's plan, or one Conflict naming every site that cannot run the steps."""
    rendered, problems = {}, []
    for site_id in site_ids:
        try:
            rendered[site_id] = render_site(rollout_id, site_id, source)
        except Conflict as exc:
            problems.append(exc.message)
    if problems:
        raise Conflict("; ".join(problems))
    return rendered


def ensure_executions(rollout: Rollout, clock: Clock = time.time) -> list[Execution]:
    executions = []
    for site_id in rollout.site_ids:
        now = clock()
        execution = Execution(
            rollout.rollout_id, site_id, state=ExecutionState.QUEUED,
            execution_id=Execution.make_id(rollout.rollout_id, site_id),
            created_at=now, updated_at=now,
        )
        try:
            execution.save(condition=Execution.site_id.does_not_exist())
        except PynamoDBException as exc:
            if not conditional_failed(exc):
                raise
            execution = Execution.get(rollout.rollout_id, site_id, consistent_read=True)
        executions.append(execution)
    return executions


def dispatch(rollout: Rollout, executions: Sequence[Execution], publisher: Publisher,
             rendered: dict[str, render.RenderedSite], clock: Clock = time.time) -> None:
    """Publish the plan of every queued execution and mark it sent.

    A site whose plan cannot be published stays queued (with the reason in its message)
    for a later dispatch; a site that can no longer run the rollout fails alone. For a
    blueprint, the site's machines get their desired state as the plan goes out.
    """
    failed_any = False
    source: Source | None = None
    for execution in executions:
        if execution.state != ExecutionState.QUEUED:
            continue
        site_id = execution.site_id
        try:
            if site_id not in rendered:
                source = source or source_of_rollout(rollout)
                rendered[site_id] = render_site(rollout.rollout_id, site_id, source)
        except Conflict as exc:
            failed_any |= execution.move(ExecutionState.FAILED, message=exc.message)
            continue
        plan, desired = rendered[site_id].plan, rendered[site_id].desired
        try:
            publisher.publish(protocol.plan_topic(site_id), plan.encode())
        except PublishFailed as exc:
            LOG.error("rollout %s: plan for site %s not sent: %s", rollout.rollout_id,
                      site_id, exc.message)
            conditional_update(execution,
                               [Execution.message.set(f"plan not sent: {exc.message}")],
                               Execution.state == ExecutionState.QUEUED)
            continue
        set_desired(rollout.rollout_id, site_id, desired, clock)
        if not execution.move(ExecutionState.SENT, message="", plan_message_id=plan.id,
                              sent_at=clock()):
            LOG.info("execution %s moved past queued before it was marked sent",
                     execution.execution_id)
    if failed_any:
        finish_if_done(rollout.rollout_id)


def set_desired(rollout_id: str, site_id: str, desired: dict[str, dict[str, Any]],
                clock: Clock = time.time) -> None:
    """Record what the rollout asks of each machine (its blueprint revision and params)."""
    for machine_id, state in desired.items():
        Machine(site_id, machine_id).update(actions=[
            Machine.desired.set({**state, "rollout": rollout_id, "set_at": clock()})])


def finish_if_done(rollout_id: str) -> RolloutState | None:
    """Move the rollout to succeeded/failed once every site's execution is terminal.

    Safe to call any number of times and from racing writers: the move is conditional on
    the rollout still running.
    """
    rollout = _get_or_none(rollout_id)
    if rollout is None or rollout.state != RolloutState.RUNNING:
        return None
    by_site = {e.site_id: e.state for e in executions_of(rollout_id)}
    outcome = states.rollout_outcome([by_site.get(site, ExecutionState.QUEUED)
                                      for site in rollout.site_ids])
    if outcome is not None and rollout.move(outcome):
        LOG.info("rollout %s %s", rollout_id, outcome)
    return outcome


# --- reads -----------------------------------------------------------------------------


def list_rollouts() -> list[Rollout]:
    return sorted(Rollout.scan(), key=lambda r: r.created_at, reverse=True)


def get_rollout(rollout_id: str) -> Rollout:
    rollout = _get_or_none(rollout_id)
    if rollout is None:
        raise NotFound(kind="rollout", id=rollout_id)
    return rollout


def executions_of(rollout_id: str) -> list[Execution]:
    return list(Execution.query(rollout_id, consistent_read=True))


def results_of(execution_id: str) -> list[MachineResult]:
    return list(MachineResult.query(execution_id, consistent_read=True))


def _get_or_none(rollout_id: str) -> Rollout | None:
    try:
        return Rollout.get(rollout_id, consistent_read=True)
    except Rollout.DoesNotExist:
        return None

