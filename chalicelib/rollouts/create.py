"""Creating a rollout.

Deciding is separated from doing: ``create`` first resolves the target sites and renders
every site's plan (which is where a rollout the fleet cannot run is refused; so is any
rollout while the cloud has no key to sign plans with), and only then writes anything.
Every write is idempotent, so a retried request, or the same ``client_token`` again,
completes a creation that crashed half way instead of starting a second rollout:

1. write the target's site ids, then put the rollout, on condition that its id is new (the
   id derives from the client token);
2. put one queued execution per site (those that exist are kept); its waves are counted
   on the rollout item itself (``wave_counters``);
3. advance it as soon as its first wave's executions are written (the others are written
   meanwhile): the first wave's plans go out within the policy's limits, if the broker
   takes them now; if it does not, they stay queued and the tick sends them once it is
   back (``dispatch``): the request never waits on the broker.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from pynamodb.exceptions import PynamoDBException

from chalicelib import audit, signing
from chalicelib.clock import Clock
from chalicelib.definitions import render
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.models import Execution, Rollout, Site, Wave, conditional_failed, queue_key
from chalicelib.publisher import Publisher
from chalicelib.rollouts import targets, wave_counters
from chalicelib.rollouts.advance import DISPATCH_LEASE, advance
from chalicelib.rollouts.moves import get_rollout
from chalicelib.rollouts.policy import wave_sizes
from chalicelib.rollouts.read import executions_of, get_or_none
from chalicelib.rollouts.rendering import Source, read_sites, render_many, source_of
from chalicelib.rollouts.states import RolloutState
from chalicelib.schemas import RolloutIn
from edgeplane.protocol import ExecutionState

LOG = logging.getLogger(__name__)


@dataclass
class Created:
    rollout: Rollout
    site_ids: list[str]
    executions: list[Execution] | None  # None above LIST_EXECUTIONS_UP_TO sites
    new: bool  # False: an earlier request with the same client_token made it

# Up to this many sites, a create renders every site's plan: a rollout that some site
# cannot run is refused whole, naming each such site. Above, it renders the first wave (the
# canary) and every later site's plan is rendered when its wave is dispatched, where a site
# that cannot run it fails with the reason (and counts against the abort threshold): reading
# every machine of 10,000 sites before answering would make the operator wait for it.
RENDER_ALL_UP_TO = 1000

# A large target is read and written in parts of this many sites, WRITERS parts at once
# (each part is 10 BatchGetItem or 20 BatchWriteItem requests, one after another).
WRITE_PART = 500
WRITERS = 4

# The answer to a create lists the executions up to this many sites; above, it has the
# counters only (reading 10,000 executions back would cost more than creating them).
LIST_EXECUTIONS_UP_TO = 1000


def _created(rollout_id: str, site_ids: list[str], new: bool) -> Created:
    rollout = get_rollout(rollout_id)
    listed = executions_of(rollout_id) if int(rollout.total) <= LIST_EXECUTIONS_UP_TO \
        else None
    return Created(rollout, site_ids, listed, new)


def rollout_id_for(client_token: str | None) -> str:
    """Derived from the client token when there is one: a retry puts the same id again."""
    if client_token:
        return "r-" + hashlib.sha256(client_token.encode()).hexdigest()[:24]
    return "r-" + uuid.uuid4().hex[:24]


def create(body: RolloutIn, publisher: Publisher, clock: Clock = time.time,
           actor: str | None = None) -> Created:
    signing.current()  # NotConfigured: not one of its plans could be sent
    rollout_id = rollout_id_for(body.client_token)
    if body.client_token:
        existing = get_or_none(rollout_id)
        if existing is not None:
            return _resume(existing, body, publisher, clock)

    site_ids = resolve_sites(body)
    source = source_of(body)
    policy = body.policy
    sizes = wave_sizes(len(site_ids), policy)
    checked = site_ids if len(site_ids) <= RENDER_ALL_UP_TO else site_ids[:sizes[0]]
    rendered = check_and_render(rollout_id, site_ids, checked, source,
                                listed=body.sites is not None)

    now = clock()
    target_ref = targets.new_ref()
    rollout = Rollout(
        rollout_id, name=body.name, steps=source.steps, target_tag=body.tag,
        target_ref=target_ref, state=RolloutState.RUNNING, client_token=body.client_token,
        request_hash=body.fingerprint(), created_at=now, updated_at=now,
        blueprint=source.blueprint, blueprint_revision=source.revision,
        policy=policy.model_dump(mode="json"), waves=sizes, total=len(site_ids),
        state_counts={ExecutionState.QUEUED.value: len(site_ids)},
        wave_done=wave_counters.zeros(sizes), wave_failed=wave_counters.zeros(sizes),
        expires_at=now + policy.expires_in,
        # Held by this create until its first advance, so that the tick cannot start the
        # rollout before its executions are written.
        lease_token=uuid.uuid4().hex, lease_until=now + DISPATCH_LEASE,
    )
    try:
        targets.write(rollout_id, site_ids, target_ref)  # before the rollout that names it
        rollout.save(condition=Rollout.rollout_id.does_not_exist())
    except PynamoDBException as exc:
        _discard_target(rollout_id, target_ref, len(site_ids))
        if not conditional_failed(exc):
            raise
        # The same client token, in a request running concurrently with this one.
        return _resume(Rollout.get(rollout_id, consistent_read=True), body, publisher, clock)
    LOG.info("rollout %s created: %d steps on %d sites in waves %s", rollout_id,
             len(source.steps), len(site_ids), sizes)
    audit.record(rollout_id, audit.ROLLOUT_STATE, {"state": "running", "previous": None,
                                                   "waves": sizes, "actor": actor}, now)
    # The first wave's plans go out while the later waves' executions are written: the
    # create holds the lease until then, and a site's turn comes only with its wave.
    ensure_executions(rollout, site_ids, clock, rendered, new=True, meanwhile=lambda: advance(
        rollout_id, publisher, clock, lease=rollout.lease_token))
    return _created(rollout_id, site_ids, new=True)


def _discard_target(rollout_id: str, ref: str, count: int) -> None:
    """Remove this create's target parts, unless its rollout was stored after all (a write
    whose answer was lost): no part is left that no rollout names."""
    try:
        stored = get_or_none(rollout_id)
        if stored is None or stored.target_ref != ref:
            targets.discard(rollout_id, ref, count)
    except PynamoDBException as exc:
        LOG.error("rollout %s: target parts %s-* not removed: %s", rollout_id, ref, exc)


def _resume(rollout: Rollout, body: RolloutIn, publisher: Publisher, clock: Clock) -> Created:
    if rollout.request_hash != body.fingerprint():
        raise Conflict(f"client_token {body.client_token!r} was already used for rollout "
                       f"{rollout.rollout_id!r} with a different request")
    LOG.info("rollout %s: same client_token again; resuming it", rollout.rollout_id)
    site_ids = targets.read(rollout)
    ensure_executions(rollout, site_ids, clock)
    # A create that crashed before its first advance left its lease held: the retry takes
    # its place rather than wait for it to expire (should that create still be running, two
    # writers race for the same claims, and a claim is conditional).
    lease = rollout.lease_token if rollout.moved_at is None else None
    advance(rollout.rollout_id, publisher, clock, lease=lease)
    return _created(rollout.rollout_id, site_ids, new=False)


# Which of many sites exist: a target of thousands is mostly the whole fleet, and reading
# every site's id (a scan, a page a request, each page up to 1 MB) costs fewer requests and
# reads than looking the sites up (100 a request, each a read of at least 4 KB). The scan
# stops once it read what the lookups would have (a fleet much larger than the target):
# the sites are then looked up, so the check costs at most twice its lookups.
SCAN_FROM = 1000  # sites: below, the lookups are a few requests
SCAN_PAGE = 1 << 20
LOOKUP_READ = 4096


def existing_sites(site_ids: Sequence[str]) -> set[str]:
    """Those of ``site_ids`` that exist."""
    if len(site_ids) >= SCAN_FROM:
        pages = -(-len(site_ids) * LOOKUP_READ // SCAN_PAGE // WRITERS)  # per segment
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="create") as pool:
            segments = list(pool.map(lambda segment: _scan_ids(segment, pages),
                                     range(WRITERS)))
        fleet = [ids for ids in segments if ids is not None]
        if len(fleet) == len(segments):
            return set(site_ids) & set().union(*fleet)
    parts = [site_ids[i:i + WRITE_PART] for i in range(0, len(site_ids), WRITE_PART)]
    with ThreadPoolExecutor(max(1, min(WRITERS, len(parts))),
                            thread_name_prefix="create") as pool:
        return set().union(*pool.map(_existing, parts))


def _scan_ids(segment: int, pages: int) -> set[str] | None:
    """Every site id in one of ``WRITERS`` segments of the table, or None if that takes
    more than ``pages`` pages."""
    found: set[str] = set()
    start = None
    for _ in range(max(1, pages)):
        page = Site._get_connection().scan(attributes_to_get=["site_id"], segment=segment,
                                           total_segments=WRITERS, exclusive_start_key=start)
        found.update(item["site_id"]["S"] for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if start is None:
            return found
    return None


def _existing(site_ids: Sequence[str]) -> set[str]:
    return {site.site_id for site in Site.batch_get(site_ids, attributes_to_get=["site_id"])}


def resolve_sites(body: RolloutIn) -> list[str]:
    """The target's site ids: the listed ones in the order given (that each exists is
    ``check_and_render``'s), or a tag's, sorted (it must match at least one)."""
    if body.sites is not None:
        return list(body.sites)
    site_ids = sorted(site.site_id for site in Site.scan(Site.tags.contains(body.tag),
                                                           attributes_to_get=["site_id"]))
    if not site_ids:
        raise BadRequest(f"tag {body.tag!r} matches no site")
    return site_ids


def check_and_render(rollout_id: str, site_ids: Sequence[str], checked: Sequence[str],
                     source: Source, listed: bool) -> dict[str, render.RenderedSite]:
    """The plans of ``checked`` (the first sites of ``site_ids``); NotFound naming every
    listed site that does not exist, else Conflict naming every checked site that cannot
    run the plan. The checked sites are read once, for both; the others of a list are
    checked meanwhile (``existing_sites``; a tag's exist: the scan found them)."""
    rest = list(site_ids[len(checked):]) if listed else []
    with ThreadPoolExecutor(1, thread_name_prefix="create") as pool:
        others = pool.submit(existing_sites, rest)
        sites = read_sites(checked, full=source.blueprint is not None)
        rendered, problems = render_many(rollout_id, checked, source, sites)
        found = set(sites) | others.result()
    missing = [site_id for site_id in site_ids if site_id not in found]
    if missing:
        raise NotFound(f"site(s) {', '.join(map(repr, missing))} do not exist")
    if problems:
        raise Conflict("; ".join(problems[site_id] for site_id in checked
                                 if site_id in problems))
    return rendered


def ensure_executions(rollout: Rollout, site_ids: Sequence[str], clock: Clock = time.time,
                      rendered: dict[str, render.RenderedSite] | None = None,
                      new: bool = False, meanwhile: Callable[[], object] | None = None) -> None:
    """One queued execution per site, in its wave, with its rendered plan; those that exist
    are left as they are (a retried create completes a crashed one, and its executions
    render their plan when dispatched). Waves are consecutive slices of the target in the
    order given (a tag's sites sorted by id).

    ``new``: the rollout was just created by this request, so it has no execution yet
    (nothing to look up). Its waves are counted on the rollout (``wave_counters``): only a
    rollout stored before that has Wave items to write. ``meanwhile`` is called once the
    first wave's executions are written, while the others are (its error is raised once
    they are).
    """
    rendered = rendered or {}
    sizes = [int(size) for size in rollout.waves or [len(site_ids)]]
    if not wave_counters.on_rollout(rollout):  # stored before its waves were counted there
        have = {int(w.wave) for w in Wave.query(rollout.rollout_id, consistent_read=True)}
        with Wave.batch_write() as batch:
            for index, size in enumerate(sizes):
                if index not in have:  # a wave's counters are never reset
                    batch.save(Wave(rollout.rollout_id, index, size=size))
    wave_of = [index for index, size in enumerate(sizes) for _ in range(size)]
    now = clock()
    existing = set() if new else {e.site_id for e in Execution.query(
        rollout.rollout_id, attributes_to_get=["site_id"])}
    missing = [(site_id, wave) for site_id, wave in zip(site_ids, wave_of, strict=True)
               if site_id not in existing]

    def write(part: Sequence[tuple[str, int]]) -> None:
        with Execution.batch_write() as batch:
            for site_id, wave in part:
                site = rendered.get(site_id)
                batch.save(Execution(
                    rollout.rollout_id, site_id, state=ExecutionState.QUEUED, wave=wave,
                    attempt=1, execution_id=Execution.make_id(rollout.rollout_id, site_id),
                    queue_key=queue_key(wave, 0, site_id), machines={},
                    plan_steps=[asdict(step) for step in site.plan.steps] if site else None,
                    desired=site.desired if site else None, created_at=now, updated_at=now))

    first = [(site_id, wave) for site_id, wave in missing if wave == 0]
    _write_in_parts(write, first)
    if meanwhile is None:
        _write_in_parts(write, missing[len(first):])
        return
    with ThreadPoolExecutor(1, thread_name_prefix="create") as pool:
        started = pool.submit(meanwhile)
        _write_in_parts(write, missing[len(first):])
        started.result()


def _write_in_parts(write: Callable[[Sequence[tuple[str, int]]], None],
                    missing: Sequence[tuple[str, int]]) -> None:
    """``write`` the executions ``WRITE_PART`` at a time, ``WRITERS`` parts at once."""
    parts = [missing[i:i + WRITE_PART] for i in range(0, len(missing), WRITE_PART)]
    if len(parts) <= 1:
        for part in parts:
            write(part)
        return
    with ThreadPoolExecutor(min(WRITERS, len(parts)), thread_name_prefix="create") as pool:
        list(pool.map(write, parts))
