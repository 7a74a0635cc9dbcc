"""The DynamoDB tables, as pynamodb models, and where they live.

Every table name is ``prefix + Model.TABLE``. ``configure`` points all models at an endpoint
(moto server locally, None for AWS or in-process moto) and drops their cached connections;
when nobody called it, the first query configures from the environment (``settings``).

Concurrency: no read-modify-write anywhere. Each writer sends one conditional UpdateItem or
PutItem whose condition states its precondition exactly (the execution is in one of the
states the target may follow, a report's seq is newer than the stored one, a presence report
is later in the protocol's order). That is stricter than a VersionAttribute where it matters
and raises no false conflicts between writers of disjoint fields (an operator renaming a site
while its presence changes), so the models carry no version attribute.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, ClassVar, cast

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    MapAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.connection import TableConnection
from pynamodb.exceptions import PynamoDBException, TableError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib import recent, settings, store_wire

LOG = logging.getLogger(__name__)

CONDITION_FAILED = "ConditionalCheckFailedException"

_config_lock = threading.Lock()
_client_lock = threading.Lock()
_clients: dict[tuple[str | None, str], Any] = {}  # (endpoint, region): the store's client
_configured = False


def conditional_failed(exc: PynamoDBException) -> bool:
    """True when a write was refused only because its condition did not hold."""
    return exc.cause_response_code == CONDITION_FAILED


def too_large(exc: PynamoDBException) -> bool:
    """True when a write was refused because the item would pass DynamoDB's item size
    (400 KB)."""
    return exc.cause_response_code == "ValidationException" and \
        "maximum allowed size" in str(exc.cause_response_message or "")


def _string_list(**kwargs: Any) -> ListAttribute[str]:
    """A list of strings. pynamodb types ``ListAttribute(of=UnicodeAttribute)`` as a list of
    attributes (pynamodb/PynamoDB#1246); what it holds is str."""
    return cast(ListAttribute[str], ListAttribute(of=UnicodeAttribute, **kwargs))


def _number_list(**kwargs: Any) -> ListAttribute[float]:
    """A list of numbers (see ``_string_list``)."""
    return cast(ListAttribute[float], ListAttribute(of=NumberAttribute, **kwargs))


class EdgeplaneModel(Model):
    """Base of every table: configures the models from the environment on first use."""

    TABLE: ClassVar[str] = ""
    _client_of: ClassVar[TableConnection | None] = None  # the connection whose client is built

    @classmethod
    def _get_connection(cls) -> TableConnection:
        # pynamodb routes every operation through here, so this is the "first use" hook.
        if not _configured:
            configure_from_settings()
        connection = super()._get_connection()
        if cls.__dict__.get("_client_of") is not connection:
            # pynamodb builds a botocore client per table on first use (each in a session of
            # its own, loading the service's model: 65 ms), and every thread that comes
            # before it is built builds one: ingest's writers all start at once. One client
            # serves every table of one store (botocore's clients are thread-safe); its
            # item requests go on the wire (store_wire).
            with _client_lock:
                table = connection.connection
                key = (table.host, table.region)
                client: Any = _clients.get(key)
                if client is None:
                    client = table.client  # builds it
                    if settings.load().store_client == "wire" and \
                            not isinstance(client, store_wire.WireClient):
                        client = store_wire.WireClient(client)
                    _clients[key] = client
                table._client = client
                cls._client_of = connection
        return connection


class Site(EdgeplaneModel):
    TABLE = "sites"

    class Meta:
        table_name = "edgeplane-sites"

    site_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(null=True)
    region = UnicodeAttribute(null=True)
    tags = _string_list(null=True)
    timezone = UnicodeAttribute(null=True)
    facts = JSONAttribute(null=True)  # what templates read as site.facts
    # {"days": ["mon", ...] (empty: every day), "start": "01:00", "end": "05:00"}, local time
    maintenance_window = JSONAttribute(null=True)
    created_at = NumberAttribute(null=True)
    updated_at = NumberAttribute(null=True)
    # Reported by the gateway (presence, inventory); never written by the API.
    online = BooleanAttribute(null=True)
    presence_session = NumberAttribute(null=True)
    presence_rank = NumberAttribute(null=True)
    presence_changed_at = NumberAttribute(null=True)
    gateway_version = UnicodeAttribute(null=True)
    last_seen_at = NumberAttribute(null=True)
    # The gateway version a gateway.upgrade rollout sent the site (chalicelib.gateway_versions):
    # {"version", "rollout", "set_at"}. The drift report compares it with gateway_version.
    desired_gateway = JSONAttribute(null=True)
    # Set once a rollout gave one of its machines a desired state: only then can an observed
    # report of the site be drift (see drift.on_observed_batch).
    has_desired = BooleanAttribute(null=True)
    # What the last inventory applied said, as digests (ingest.on_inventory): an unchanged
    # inventory (every reconnect sends one) is one conditional write on the site, not one
    # write per machine; a changed one writes only the machines whose digest changed.
    inventory_digest = UnicodeAttribute(null=True)
    inventory_ts = NumberAttribute(null=True)  # gateway ts of the inventory applied last
    # {machine_id: digest of its report}
    machine_digests: MapAttribute[str, str] = MapAttribute(null=True)
    # Every machine of the site, so that rendering reads them in batches by key.
    machine_ids = UnicodeSetAttribute(null=True)
    # Its artifact cache as the gateway last reported it (chalicelib.site_cache), and that
    # report's gateway time.
    cache = JSONAttribute(null=True)
    cache_ts = NumberAttribute(null=True)


class Machine(EdgeplaneModel):
    TABLE = "machines"

    class Meta:
        table_name = "edgeplane-machines"

    site_id = UnicodeAttribute(hash_key=True)
    machine_id = UnicodeAttribute(range_key=True)
    protocol = UnicodeAttribute(null=True)
    address = UnicodeAttribute(null=True)  # where the BMC is; credentials stay on site
    machine_class = UnicodeAttribute(null=True)
    labels: MapAttribute[str, str] = MapAttribute(null=True)
    # None: not known yet (declared through the API, no inventory so far).
    capabilities = _string_list(null=True)
    manufacturer = UnicodeAttribute(null=True)
    model = UnicodeAttribute(null=True)
    serial = UnicodeAttribute(null=True)
    power = UnicodeAttribute(null=True)
    inventory_error = UnicodeAttribute(null=True)
    inventory_ts = NumberAttribute(null=True)  # gateway ts of the inventory applied last
    source = UnicodeAttribute(null=True)  # "api" once an operator declared it, else "inventory"
    # What the latest blueprint rollout asked of it: {blueprint, revision, params, rollout}.
    desired = JSONAttribute(null=True)
    # Reported by the gateway (see drift.py): what the BMC read, and how it differs.
    observed = JSONAttribute(null=True)
    observed_ts = NumberAttribute(null=True)  # gateway ts of the report applied last
    drift = JSONAttribute(null=True)  # [{field, desired, observed}]
    drift_checked_at = NumberAttribute(null=True)
    drift_changed_at = NumberAttribute(null=True)

    @property
    def label_dict(self) -> dict[str, str]:
        return self.labels.as_dict() if self.labels is not None else {}
    updated_at = NumberAttribute(null=True)


class Rollout(EdgeplaneModel):
    TABLE = "rollouts"

    class Meta:
        table_name = "edgeplane-rollouts"

    rollout_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(null=True)
    steps = JSONAttribute()  # [{"task": ..., "params": {...}}], params already validated
    blueprint = UnicodeAttribute(null=True)  # set: the steps are this blueprint revision's
    blueprint_revision = NumberAttribute(null=True)
    policy = JSONAttribute(null=True)  # schemas.PolicyIn as stored (waves, limits, ...)
    waves = _number_list(null=True)  # sites per wave, canary first
    expires_at = NumberAttribute(null=True)
    # Counters kept by atomic ADDs as executions move, so that nothing has to read every
    # execution of a 10,000-site rollout to know where it stands.
    total = NumberAttribute(default=0)
    done = NumberAttribute(default=0)  # executions in a terminal state
    in_flight = NumberAttribute(default=0)  # sent or running
    current_wave = NumberAttribute(default=0)
    moved_at = NumberAttribute(null=True)  # when an execution last moved (see reconcile)
    # executions per state: {"queued": 9990, ...}
    state_counts: MapAttribute[str, Any] = MapAttribute(null=True)
    # Sites finished and failed per wave, by wave index ("0", "1", ...), counted in the same
    # ADD as the rollout's (rollouts.wave_counters); None: kept in the Wave items.
    wave_done: MapAttribute[str, Any] = MapAttribute(null=True)
    wave_failed: MapAttribute[str, Any] = MapAttribute(null=True)
    # Who advances it now (engine.advance), until when, and whether another writer asked
    # for one more round meanwhile.
    lease_token = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    advance_wanted = BooleanAttribute(null=True)
    rate_minute = NumberAttribute(default=0)  # the minute (epoch // 60) rate_count counts
    rate_count = NumberAttribute(default=0)  # sites started in that minute
    message = UnicodeAttribute(null=True)  # why it aborted, who canceled it
    target_tag = UnicodeAttribute(null=True)  # None: the sites were listed
    # The resolved site ids live in RolloutTarget items named by this (see targets.py): a
    # DynamoDB item holds 400 KB, 10,000 ids are ~150 KB, and this item is read by every
    # advance.
    target_ref = UnicodeAttribute()
    state = UnicodeAttribute()
    client_token = UnicodeAttribute(null=True)
    request_hash = UnicodeAttribute(null=True)  # tells a retry from a reuse of client_token
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class QueuedIndex(GlobalSecondaryIndex):
    """A rollout's queued executions, by wave and the time they may start (a sparse index:
    only queued executions carry ``queue_key``)."""

    class Meta:
        index_name = "queued"
        projection = AllProjection()

    rollout_id = UnicodeAttribute(hash_key=True)
    queue_key = UnicodeAttribute(range_key=True)


def queue_key(wave: int, not_before: float, site_id: str) -> str:
    return f"{wave:05d}#{int(not_before):012d}#{site_id}"


class Execution(EdgeplaneModel):
    TABLE = "executions"

    class Meta:
        table_name = "edgeplane-executions"

    rollout_id = UnicodeAttribute(hash_key=True)
    site_id = UnicodeAttribute(range_key=True)
    queue_key = UnicodeAttribute(null=True)  # set while queued: see QueuedIndex
    queued = QueuedIndex()
    execution_id = UnicodeAttribute()
    state = UnicodeAttribute()
    wave = NumberAttribute(default=0)
    attempt = NumberAttribute(default=1)
    not_before = NumberAttribute(null=True)  # a retry waits until then
    plan_message_id = UnicodeAttribute(null=True)
    sent_at = NumberAttribute(null=True)
    # The site holds the plan until its maintenance window opens then (it said so); no
    # timeout runs before. Removed when the site starts the plan.
    waiting_until = NumberAttribute(null=True)
    started_at = NumberAttribute(null=True)  # first report from the site
    finished_at = NumberAttribute(null=True)
    last_seq = NumberAttribute(null=True)  # the highest report seq applied
    message = UnicodeAttribute(null=True)
    # The plan's steps and the machines' desired states, rendered when the rollout was
    # created: dispatch sends what the create checked, without reading the site again.
    plan_steps = JSONAttribute(null=True)
    desired = JSONAttribute(null=True)
    # The newest report of each machine: machine id -> JSON of protocol.MachineResult plus
    # its "seq" and "at". Progress updates single entries; the final result replaces all.
    machines: MapAttribute[str, Any] = MapAttribute(null=True)
    report_count = NumberAttribute(null=True)  # reports applied: the merge's version
    # The parts of a result in parts applied so far, "<seq>:<part>:<failures>" each (see
    # rollouts.parts); its machines are kept here as outcomes, in full in ResultPart.
    result_parts = UnicodeSetAttribute(null=True)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()

    def machine_reports(self, with_parts: bool = True) -> dict[str, dict[str, Any]]:
        """Each machine's newest report. A machine whose final result came in parts is
        kept here as its outcome, naming its ``part``: with ``with_parts``, one query
        reads the parts and gives it in full."""
        raw = self.machines.as_dict() if self.machines is not None else {}
        reports = {machine: json.loads(report) for machine, report in sorted(raw.items())}
        if with_parts and self.result_parts and any("part" in r for r in reports.values()):
            for part in ResultPart.query(self.execution_id, consistent_read=True):
                for machine, report in (part.machines or {}).items():
                    outcome = reports.get(machine)
                    if outcome is not None and (outcome.get("seq"), outcome.get("part")) \
                            == (part.seq, part.part):
                        reports[machine] = report
        return reports

    @staticmethod
    def make_id(rollout_id: str, site_id: str, attempt: int = 1) -> str:
        """``<rollout>.<site>``, and ``.<attempt>`` from the second attempt on: a retry is a
        new execution for the gateway (it would only resend the result of a known one)."""
        base = f"{rollout_id}.{site_id}"
        return base if attempt <= 1 else f"{base}.{attempt}"

    @staticmethod
    def split_id(execution_id: str) -> tuple[str, str]:
        """(rollout_id, site_id); ValueError if it is not an id made by ``make_id``."""
        rollout_id, dot, rest = execution_id.partition(".")
        site_id, _, attempt = rest.partition(".")
        if not dot or not rollout_id or not site_id or (attempt and not attempt.isdigit()):
            raise ValueError(f"execution id {execution_id!r} is not <rollout>.<site>")
        return rollout_id, site_id


class ResultPart(EdgeplaneModel):
    """One part of an execution's final result, for a result one message could not hold
    (``protocol.Result.part``): the machines it carries, each in full as its execution
    would keep it (``rollouts.snapshots``). The same part delivered again is written again,
    the same."""

    TABLE = "result-parts"

    class Meta:
        table_name = "edgeplane-result-parts"

    execution_id = UnicodeAttribute(hash_key=True)
    part_key = UnicodeAttribute(range_key=True)  # "<seq>.<part>", zero-padded: in order
    rollout_id = UnicodeAttribute()
    site_id = UnicodeAttribute()
    seq = NumberAttribute()
    part = NumberAttribute()
    parts = NumberAttribute()
    machines = JSONAttribute()  # machine id -> its report
    stored_at = NumberAttribute()

    @staticmethod
    def key(seq: int, part: int | None = None) -> str:
        """The part's ``part_key``; without ``part``, what every part of ``seq`` starts
        with."""
        return f"{seq:016d}." + ("" if part is None else f"{part:04d}")


class Wave(EdgeplaneModel):
    """One wave of a rollout: its size and how many of its sites finished and failed."""

    TABLE = "waves"

    class Meta:
        table_name = "edgeplane-waves"

    rollout_id = UnicodeAttribute(hash_key=True)
    wave = NumberAttribute(range_key=True)
    size = NumberAttribute()
    done = NumberAttribute(default=0)
    failed = NumberAttribute(default=0)


class RolloutTarget(EdgeplaneModel):
    """One part of a rollout's resolved target: up to ``targets.PART_SIZE`` site ids, in
    the target's order. ``part`` is ``<ref>-<index>``; the rollout names its ``ref``."""

    TABLE = "rollout-targets"

    class Meta:
        table_name = "edgeplane-rollout-targets"

    rollout_id = UnicodeAttribute(hash_key=True)
    part = UnicodeAttribute(range_key=True)
    site_ids = _string_list()


class RolloutEvent(EdgeplaneModel):
    """The append-only log of a rollout: every state change and operator action."""

    TABLE = "rollout-events"

    class Meta:
        table_name = "edgeplane-rollout-events"

    rollout_id = UnicodeAttribute(hash_key=True)
    event_key = UnicodeAttribute(range_key=True)  # "<ts>-<ns written>-<id>": time order
    detail_type = UnicodeAttribute()
    detail = JSONAttribute()
    ts = NumberAttribute()


class Definition(EdgeplaneModel):
    """The current version of an operator's document (profile, group, machine class; a
    blueprint's latest revision). Sites are documents too, but live in ``Site``."""

    TABLE = "definitions"

    class Meta:
        table_name = "edgeplane-definitions"

    kind = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(range_key=True)
    spec = JSONAttribute()
    spec_hash = UnicodeAttribute()
    revision = NumberAttribute(default=1)  # blueprints: the latest revision
    created_at = NumberAttribute()
    updated_at = NumberAttribute()


class BlueprintRevision(EdgeplaneModel):
    """An immutable revision of a blueprint: written once, never changed."""

    TABLE = "blueprint-revisions"

    class Meta:
        table_name = "edgeplane-blueprint-revisions"

    name = UnicodeAttribute(hash_key=True)
    revision = NumberAttribute(range_key=True)
    spec = JSONAttribute()
    spec_hash = UnicodeAttribute()
    created_at = NumberAttribute()


class Principal(EdgeplaneModel):
    """A caller of the API with a role (``chalicelib.access``). Only a salted hash of its
    token is kept; a revoked principal stays, so that the audit's names stay unique."""

    TABLE = "principals"

    class Meta:
        table_name = "edgeplane-principals"

    name = UnicodeAttribute(hash_key=True)
    role = UnicodeAttribute()
    token_salt = UnicodeAttribute()  # hex; the key of the token's HMAC-SHA256
    token_hash = UnicodeAttribute()  # hex
    created_by = UnicodeAttribute()
    created_at = NumberAttribute()
    revoked_at = NumberAttribute(null=True)
    revoked_by = UnicodeAttribute(null=True)


# The audit's indexes: one principal's, one site's, one rollout's records in time order (the
# last two sparse: only records about a site or a rollout carry its id).


class AuditByPrincipal(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-principal"
        projection = AllProjection()

    principal = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)


class AuditBySite(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-site"
        projection = AllProjection()

    site_id = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)


class AuditByRollout(GlobalSecondaryIndex):
    class Meta:
        index_name = "by-rollout"
        projection = AllProjection()

    rollout_id = UnicodeAttribute(hash_key=True)
    at_id = UnicodeAttribute(range_key=True)


class AuditRecord(EdgeplaneModel):
    """One write through the API: who, when, which route, what it changed
    (``chalicelib.access.trail``). Written once, never updated; DynamoDB removes it after
    ``expires_at``. Partitioned by month (``bucket``), ordered by ``at_id``
    (``<at>-<random>``), which every index shares as its sort key."""

    TABLE = "audit"

    class Meta:
        table_name = "edgeplane-audit"

    bucket = UnicodeAttribute(hash_key=True)  # "2025-03": the UTC month of ``at``
    at_id = UnicodeAttribute(range_key=True)
    at = NumberAttribute()
    principal = UnicodeAttribute()
    role = UnicodeAttribute(null=True)
    method = UnicodeAttribute()
    route = UnicodeAttribute()  # the route's pattern, e.g. /sites/{site_id}
    path = UnicodeAttribute()  # the path as called
    status = NumberAttribute()
    target_kind = UnicodeAttribute()
    target_id = UnicodeAttribute()
    action = UnicodeAttribute()
    site_id = UnicodeAttribute(null=True)
    rollout_id = UnicodeAttribute(null=True)
    before = JSONAttribute(null=True)
    after = JSONAttribute(null=True)
    summary = JSONAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    source_ip = UnicodeAttribute(null=True)
    expires_at = TTLAttribute()
    by_principal = AuditByPrincipal()
    by_site = AuditBySite()
    by_rollout = AuditByRollout()


class CommandClaim(EdgeplaneModel):
    """A command that came in as an EventBridge event (``chalicelib.commands``), by its event
    id: who runs it now (``token``, until ``lease_until``) and, once run, its answer.
    EventBridge delivers at least once; this makes each event act once. DynamoDB removes it
    after ``expires_at``, long after EventBridge stops retrying."""

    TABLE = "commands"

    class Meta:
        table_name = "edgeplane-commands"

    event_id = UnicodeAttribute(hash_key=True)
    command = UnicodeAttribute()  # the event's detail-type
    state = UnicodeAttribute()  # "claimed", then "done"
    token = UnicodeAttribute()  # the claim of the invocation running it
    lease_until = NumberAttribute()
    attempts = NumberAttribute(default=1)
    claimed_at = NumberAttribute()  # by the first attempt
    answer = JSONAttribute(null=True)  # the answer event's detail, once done
    expires_at = TTLAttribute()


class Reading(EdgeplaneModel):
    """A fleet-wide aggregate as last computed (``chalicelib.console.readings``): part 0 is
    the head (generation, slot, number of parts); the other parts hold the compressed JSON."""

    TABLE = "readings"

    class Meta:
        table_name = "edgeplane-readings"

    name = UnicodeAttribute(hash_key=True)
    part = NumberAttribute(range_key=True)
    generation = UnicodeAttribute()
    taken_at = NumberAttribute()
    slot = NumberAttribute(null=True)  # the head's: where its parts are
    parts = NumberAttribute(null=True)  # the head's: how many
    size = NumberAttribute(null=True)  # the head's: compressed bytes in all
    data = BinaryAttribute(null=True, legacy_encoding=False)  # a part's piece


MODELS: tuple[type[EdgeplaneModel], ...] = (Site, Machine, Rollout, RolloutTarget, Execution,
                                            ResultPart,
                                            Wave, Definition, BlueprintRevision, RolloutEvent,
                                            Principal, AuditRecord, CommandClaim, Reading)


def conditional_update(item: Model, actions: list[Any], condition: Any) -> bool:
    """Update ``item`` if ``condition`` holds; False (and nothing written) if it does not."""
    try:
        item.update(actions=actions, condition=condition)
    except PynamoDBException as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def conditional_write(item: Model, actions: list[Any], condition: Any = None) -> bool:
    """``conditional_update`` that asks for nothing back (ReturnValues NONE): the caller
    knows what it wrote. For hot paths: the store serializes no item into the answer."""
    hash_key, range_key = item._get_hash_range_key_serialized_values()
    try:
        item._get_connection().update_item(hash_key, range_key, actions=actions,
                                           condition=condition, return_values="NONE")
    except PynamoDBException as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def update_returning(item: Model, actions: list[Any], condition: Any = None,
                     values: str = "ALL_OLD") -> dict[str, Any] | None:
    """Update ``item`` (if ``condition`` holds) and answer the item as stored, before
    (``ALL_OLD``; empty: it did not exist) or after (``ALL_NEW``) the update (``NONE``:
    nothing); None, and nothing written, if the condition did not hold. One request both
    writes and tells what it replaced, or what it left: no read before or after."""
    hash_key, range_key = item._get_hash_range_key_serialized_values()
    try:
        answer = item._get_connection().update_item(hash_key, range_key, actions=actions,
                                                    condition=condition,
                                                    return_values=values)
    except PynamoDBException as exc:
        if conditional_failed(exc):
            return None
        raise
    stored: dict[str, Any] = answer.get("Attributes", {})
    return stored


# Connections kept per table: ingest and dispatch write from several threads at once
# (reports.WRITERS per batch, dispatch.DISPATCH_WORKERS), more than botocore's 10.
POOL_CONNECTIONS = 32


def configure(endpoint: str | None, prefix: str, region: str) -> None:
    """Point every model at ``endpoint`` (None: AWS, or in-process moto) and ``prefix``."""
    global _configured
    with _config_lock:
        if _configured and all(
                (m.Meta.table_name, m.Meta.host, m.Meta.region)
                == (f"{prefix}{m.TABLE}", endpoint, region) for m in MODELS):
            return  # keep the connections (each new one builds a botocore client)
        for model in MODELS:
            model.Meta.table_name = f"{prefix}{model.TABLE}"
            model.Meta.host = endpoint
            model.Meta.region = region
            model.Meta.max_pool_connections = POOL_CONNECTIONS
            model._connection = None  # pynamodb caches one per class, with the old host
        _clients.clear()
        _configured = True
        recent.forget_all()  # what was remembered of the other store's items
    LOG.info("tables %s* at %s (%s)", prefix, endpoint or "AWS", region)


def forget_configuration() -> None:
    """Make the next use configure from the environment again (tests switch endpoints)."""
    global _configured
    with _config_lock:
        _configured = False
        _clients.clear()
        for model in MODELS:
            model._connection = None


def configure_from_settings() -> None:
    current = settings.load()
    configure(current.dynamodb_endpoint, current.table_prefix, current.region)


def create_tables(timeout: float = 60.0) -> list[str]:
    """Create the missing tables (on-demand billing); returns the names it created, once
    every table is ACTIVE.

    DynamoDB creates a table asynchronously (CREATING, then ACTIVE; until then writes are
    refused), and so does the local stack's store: the tables are asked for together, then
    waited for together (pynamodb's own wait polls one table at a time, seconds
    apart).
    """
    created = []
    for model in MODELS:
        if model.exists():
            continue
        try:
            # TTL is set once the table is ACTIVE (below): DynamoDB refuses it before.
            model.create_table(billing_mode="PAY_PER_REQUEST", ignore_update_ttl_errors=True)
        except TableError as exc:
            if exc.cause_response_code != "ResourceInUseException":  # created meanwhile
                raise
        else:
            created.append(model.Meta.table_name)
    deadline = time.monotonic() + timeout
    waiting = list(MODELS)
    while waiting:
        waiting = [model for model in waiting if not _active(model)]
        if waiting and time.monotonic() > deadline:
            raise TableError(f"tables not ACTIVE after {timeout:.0f} s: "
                             f"{', '.join(m.Meta.table_name for m in waiting)}")
        if waiting:
            time.sleep(0.1)
    for model in MODELS:
        if model.Meta.table_name in created:
            # dynalite has no TTL (items stay); moto and DynamoDB take it.
            model.update_ttl(ignore_update_ttl_errors=True)
    return created


def _active(model: type[EdgeplaneModel]) -> bool:
    """The table and each of its indexes are ACTIVE."""
    table = model._get_connection().describe_table()
    return table.get("TableStatus") == "ACTIVE" and all(
        index.get("IndexStatus", "ACTIVE") == "ACTIVE"
        for index in table.get("GlobalSecondaryIndexes", []))


def delete_tables() -> None:
    for model in MODELS:
        if model.exists():
            model.delete_table()
    recent.forget_all()
