"""What each route answers, as pydantic models: the OpenAPI document's response schemas.

``chalicelib.views`` builds the answers; these models describe them, field for field, and
refuse any other field, so that a field added to a view and not here makes the fuzzed suite
(``tests/test_api_fuzz.py``) fail instead of going undocumented. Timestamps are ISO 8601 UTC
strings or null, as ``views.iso`` writes them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chalicelib.rollouts.states import RolloutState
from edgeplane.protocol import ExecutionState

Timestamp = str | None
Json = dict[str, Any]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Out):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["site 'shop-9' does not exist"])


class Error(_Out):
    """Every error the app answers has this shape."""

    error: ErrorDetail


class Health(_Out):
    ok: bool
    version: str
    protocol: int


# --- sites and machines --------------------------------------------------------------------


class Window(_Out):
    days: list[str]
    start: str
    end: str


class Site(_Out):
    site_id: str
    name: str | None
    region: str | None
    tags: list[str]
    timezone: str | None
    facts: Json
    maintenance_window: Window | None
    created_at: Timestamp
    updated_at: Timestamp
    online: bool
    presence_changed_at: Timestamp
    last_seen_at: Timestamp
    gateway_version: str | None
    cache: SiteCache | None


class SiteCache(_Out):
    """The site's artifact cache as its gateway last reported it (docs/artifacts.md)."""

    artifacts: int
    bytes: int
    max_bytes: int
    hits: int
    downloads: int
    wire_bytes: int
    served_requests: int
    served_bytes: int
    evictions: int
    reported_at: Timestamp


class Machine(_Out):
    site_id: str
    machine_id: str
    protocol: str | None
    address: str | None
    machine_class: str | None
    labels: dict[str, str]
    capabilities: list[str] | None
    manufacturer: str | None
    model: str | None
    serial: str | None
    power: str | None
    inventory_error: str | None
    source: str | None
    desired: Json | None
    updated_at: Timestamp


class SiteList(_Out):
    sites: list[Site]


class SiteOne(_Out):
    site: Site


class SiteWithMachines(_Out):
    site: Site
    machines: list[Machine]


class MachineList(_Out):
    machines: list[Machine]


class MachineOne(_Out):
    machine: Machine


class MachineDeleted(_Out):
    site_id: str
    machine_id: str
    deleted: Literal[True]


# --- rollouts ------------------------------------------------------------------------------


class BlueprintRef(_Out):
    name: str
    revision: int


class Target(_Out):
    """``{"tag": ...}`` or ``{"sites": [...]}`` (the sites null where a list leaves them out)."""

    tag: str | None = None
    sites: list[str] | None = None


class Rollout(_Out):
    rollout_id: str
    name: str | None
    state: RolloutState
    steps: list[Json]
    blueprint: BlueprintRef | None
    target: Target
    site_ids: list[str] | None
    client_token: str | None
    message: str | None
    policy: Json | None
    waves: list[int]
    current_wave: int
    total: int
    done: int
    in_flight: int
    state_counts: dict[str, int]
    expires_at: Timestamp
    created_at: Timestamp
    updated_at: Timestamp
    counts: dict[str, int] | None = Field(
        default=None, description="executions per state (where the executions were read)")
    wave_counts: list[dict[str, int]] | None = Field(
        default=None, description="executions per state, wave by wave")


class Wave(_Out):
    wave: int
    size: int
    done: int
    failed: int


class StepResult(_Out):
    task: str | None
    state: str | None
    changed: bool
    message: str | None
    started_at: Timestamp
    finished_at: Timestamp
    retryable: bool
    data: Any = Field(default=None, description="what a read task found")
    trimmed: dict[str, int] | None = Field(
        default=None, description="output the site left out to fit its report: field -> "
                                  "how much")


class MachineResult(_Out):
    machine: str
    state: str | None
    seq: int | None
    updated_at: Timestamp
    steps: list[StepResult]


class Execution(_Out):
    site_id: str
    execution_id: str
    state: ExecutionState
    wave: int
    attempt: int
    message: str | None
    plan_message_id: str | None
    not_before: Timestamp
    sent_at: Timestamp
    started_at: Timestamp
    finished_at: Timestamp
    last_seq: int | None
    updated_at: Timestamp
    machines: list[MachineResult] | None = Field(
        default=None, description="per machine and step (unless ?machines=false)")


class RolloutCreated(_Out):
    rollout: Rollout
    executions: list[Execution] | None = Field(
        default=None, description="listed up to 1,000 sites; above, the counters only")


class RolloutList(_Out):
    rollouts: list[Rollout]


class RolloutDetail(_Out):
    """With ``?executions=false``: the rollout and its waves' counters; otherwise the
    rollout and every execution."""

    rollout: Rollout
    executions: list[Execution] | None = None
    waves: list[Wave] | None = None


class RolloutOne(_Out):
    rollout: Rollout


class Event(_Out):
    ts: float
    type: str
    detail: Json


class EventList(_Out):
    events: list[Event]


# --- definitions and parameters ------------------------------------------------------------


class Applied(_Out):
    kind: str
    name: str
    action: Literal["created", "updated", "unchanged"]
    diff: list[str]
    dry_run: bool
    revision: int | None = Field(default=None, description="blueprints: the revision")


class AppliedList(_Out):
    results: list[Applied]


class Definition(_Out):
    kind: str
    name: str
    spec: Json
    revision: int | None = Field(default=None, description="blueprints: this revision")
    latest: int | None = Field(default=None, description="blueprints: the latest revision")
    revisions: list[int] | None = None
    deleted: bool | None = Field(default=None, description="blueprints: the name is deleted "
                                                           "(its revisions are kept)")


class DefinitionList(_Out):
    items: list[Definition]


class DefinitionOne(_Out):
    item: Definition


class DefinitionDeleted(_Out):
    kind: str
    name: str
    deleted: Literal[True]


class Overridden(_Out):
    level: str
    profile: str | None
    value: Any


class Explained(_Out):
    name: str
    value: Any
    level: str
    profile: str | None
    redundant: bool
    overrides: list[Overridden]


class Explanation(_Out):
    site: str
    machine: str | None
    machine_class: str | None
    groups: list[str]
    blueprint: str | None
    params: list[Explained]


class ParameterVariation(_Out):
    name: str
    distinct_values: int
    sites_without_value: int
    sites_by_level: dict[str, int]
    site_overrides: int
    machine_overrides: int
    redundant_overrides: list[str | None]


class Redundant(_Out):
    profile: str | None
    level: str
    parameter: str
    value: Any
    overrides: str | None


class Variation(_Out):
    sites: int
    customized_sites: int
    parameters: list[ParameterVariation]
    varying_parameters: list[str]
    redundant: list[Redundant]
    conflicts: list[str]
    computed_in_ms: float


class Drift(_Out):
    site_id: str
    machine_id: str
    blueprint: str | None
    revision: int | None
    rollout_id: str | None
    expect: Json
    observed: Json | None
    observed_at: Timestamp
    drift: list[Json]
    in_sync: bool
    drift_changed_at: Timestamp


class GatewayDrift(_Out):
    """A site's gateway: the version a gateway.upgrade rollout sent it, the one it runs."""

    site_id: str
    desired: str | None
    running: str | None
    online: bool
    rollout_id: str | None
    desired_at: Timestamp
    in_sync: bool


class DriftList(_Out):
    machines: list[Drift]
    drifted: int
    gateways: list[GatewayDrift]
    gateways_drifted: int


# --- principals and the audit ---------------------------------------------------------------


class Principal(_Out):
    name: str
    role: str
    created_by: str
    created_at: Timestamp
    revoked_at: Timestamp
    revoked_by: str | None
    active: bool


class PrincipalCreated(_Out):
    principal: Principal
    token: str = Field(description="shown in this answer only")
    note: str


class PrincipalList(_Out):
    principals: list[Principal]


class PrincipalOne(_Out):
    principal: Principal


class AuditTarget(_Out):
    kind: str
    id: str


class AuditEntry(_Out):
    id: str
    at: Timestamp
    principal: str
    role: str | None
    method: str
    route: str
    path: str
    status: int
    target: AuditTarget
    action: str
    site_id: str | None
    rollout_id: str | None
    before: Any
    after: Any
    summary: Any
    request_id: str | None
    source_ip: str | None
    expires_at: Timestamp


class AuditPage(_Out):
    records: list[AuditEntry]
    next: str | None = Field(description="give it as ?next= for the following page")


# --- the web console's aggregates (chalicelib.console) ------------------------------------


class WhoAmI(_Out):
    name: str
    role: str | None
    via: str = Field(description="token, bootstrap, cognito or iam")


class FleetSummary(_Out):
    total: int
    online: int
    offline: int
    stale: int = Field(description="online, but what the cloud knows of them (presence, "
                                   "inventory, observations) is older than stale_after_s")
    drifted: int = Field(description="with a machine that differs from its desired state")
    failing: int = Field(description="whose share of one of the newest rollouts failed")
    stale_after_s: float
    counted_at: Timestamp = Field(description="when the fleet was read (once per 15 s)")
    filters: dict[str, str]
    facets: dict[str, dict[str, int]] = Field(
        description="each filter's values over the whole fleet, with their site counts")


class FailureSample(_Out):
    rollout_id: str
    site_id: str
    machine: str | None


class FailureGroup(_Out):
    task: str
    message: str = Field(description="the message with what varies blanked out")
    example: str
    machines: int
    sites: int
    samples: list[FailureSample]


class FailureGroups(_Out):
    counted_at: Timestamp = Field(description="when they were computed (once per 15 s)")
    rollouts: list[str]
    failed_sites: int
    groups_total: int
    groups: list[FailureGroup]


class ExecutionOne(_Out):
    execution: Execution


class SiteRow(_Out):
    site_id: str
    name: str | None
    region: str
    tags: list[str]
    online: bool
    stale: bool
    last_seen_at: Timestamp
    gateway_version: str
    desired_gateway: str | None = Field(description="what a gateway.upgrade asked it to run")
    machines: int
    healthy: int = Field(description="machines reachable at their last inventory, no drift")
    with_desired: int = Field(description="machines with a desired state")
    in_sync: int = Field(description="of those, observed and not drifted")
    drifted: bool
    failing: bool


class SitesPage(_Out):
    total: int
    counted_at: Timestamp = Field(description="when the fleet was read (once per 15 s)")
    offset: int
    limit: int
    sort: str
    order: Literal["asc", "desc"]
    filters: dict[str, str]
    sites: list[SiteRow]


class SiteRun(_Out):
    rollout_id: str
    rollout_name: str | None
    rollout_created_at: Timestamp
    execution: Execution


class SiteRuns(_Out):
    executions: list[SiteRun]


class MatrixCell(_Out):
    vendor: str
    firmware: str = Field(description="the BMC's firmware version, as the BMC reads it back")
    machines: int = Field(description="machines that ran to the end")
    failed: int
    rate: float


class FailureMatrix(_Out):
    counted_at: Timestamp = Field(description="when it was computed (once per 15 s)")
    rollouts: list[str]
    vendors: list[str]
    firmware: list[str]
    cells: list[MatrixCell]


class Document(BaseModel):
    """An OpenAPI document (this one)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
