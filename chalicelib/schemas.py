"""Request bodies, validated with pydantic; any mistake becomes a 400 naming the field.

Unknown fields are refused (a typo like ``"tag": ...`` vs ``"tags": ...`` should not pass
silently). Task parameters are checked against the wire contract's TaskSpec, so the cloud
never accepts a step a gateway would refuse.

Every string, list and map has a bound (free-form parts: ``chalicelib.limits``), and bodies
are validated strictly: a number is a JSON number (``"5"`` is not 5, ``true`` is not 1). The
models' JSON Schemas are what the OpenAPI document publishes (``chalicelib.api.openapi``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from chalicelib import limits
from chalicelib.errors import BadRequest, InvalidField
from chalicelib.limits import FreeForm
from edgeplane import protocol, windows
from edgeplane.protocol import BmcProtocol, ProtocolError

Body = TypeVar("Body", bound=BaseModel)

SHORT = 200  # longest name, label or token we accept
COUNT = 1_000_000  # largest count of sites, or of sites a minute, a policy may name
REVISION = 999_999_999  # largest blueprint revision a request may name

Short = Annotated[str, Field(min_length=1, max_length=SHORT)]
# Ids are taken as they are given (not stripped): " shop-1" is not a site id.
SiteId = Annotated[str, StringConstraints(strip_whitespace=False,
                                          pattern=protocol.SITE_ID_PATTERN.pattern)]
MachineId = Annotated[str, StringConstraints(strip_whitespace=False,
                                             pattern=protocol.MACHINE_ID_PATTERN.pattern)]
LabelKey = Annotated[str, Field(min_length=1, max_length=63)]


class _Body(BaseModel):
    # Compiled on first use: a cold start pays only for the bodies it is sent.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


class SiteIn(_Body):
    """Fields left out keep their stored value; ``null`` puts a field back to its default."""

    name: str | None = Field(default=None, min_length=1, max_length=SHORT)
    region: str | None = Field(default=None, min_length=1, max_length=SHORT)
    tags: list[Short] | None = Field(default=None, max_length=50)
    timezone: str | None = Field(default=None, max_length=64)
    facts: FreeForm | None = None
    maintenance_window: WindowIn | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        return sorted(set(tags)) if tags is not None else None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not an IANA time zone (e.g. 'Europe/Paris')") from None
        return name


_CLOCK = windows.CLOCK_PATTERN.pattern
DAYS = windows.DAYS  # one rule for the cloud and the gateways (edgeplane.windows)


class WindowIn(_Body):
    """When a site may be worked on, in its own time zone. ``end`` before ``start`` crosses
    midnight (a window that starts on a listed day may end on the next)."""

    days: list[str] = Field(default_factory=list, max_length=7)  # empty: every day
    start: str = Field(pattern=_CLOCK)
    end: str = Field(pattern=_CLOCK)

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        wrong = [d for d in days if d not in DAYS]
        if wrong:
            raise ValueError(f"unknown day(s) {', '.join(wrong)}; use {', '.join(DAYS)}")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> WindowIn:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would be empty")
        return self


class MachineIn(_Body):
    protocol: BmcProtocol
    address: str = Field(min_length=1, max_length=SHORT)
    machine_class: str | None = Field(default=None, min_length=1, max_length=SHORT)
    labels: dict[LabelKey, Annotated[str, Field(max_length=SHORT)]] = Field(
        default_factory=dict, max_length=50)

    @field_validator("address")
    @classmethod
    def _no_credentials(cls, address: str) -> str:
        if "@" in address:
            raise ValueError("must be the BMC's host or URL without credentials; "
                             "BMC credentials stay on the site's gateway")
        return address


class MachineSelector(_Body):
    """Which of a site's machines a step applies to; every given criterion must hold.

    ``capable: true`` keeps only machines whose reported capabilities include the step's
    (e.g. a BIOS baseline on the machines that have a BIOS interface); without it, a
    selected machine that lacks the capability makes the rollout be refused.
    """

    ids: list[MachineId] | None = Field(default=None, min_length=1, max_length=1000)
    protocol: BmcProtocol | None = None
    machine_class: str | None = Field(default=None, min_length=1, max_length=SHORT)
    capable: bool = False


class StepIn(_Body):
    task: str = Field(max_length=64, json_schema_extra={"enum": list(sorted(protocol.TASKS))})
    params: FreeForm = Field(default_factory=dict)
    select: MachineSelector | None = None

    @model_validator(mode="after")
    def _known_task(self) -> StepIn:
        try:
            checked = protocol.task_spec(self.task).validate(self.params)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        # Keep what the operator gave (normalised), not the defaults: plans stay small and
        # the gateway, which validates again, fills the defaults in.
        self.params = {name: checked[name] for name in self.params if name in checked}
        if self.select is not None and protocol.task_spec(self.task).on_gateway:
            raise ValueError(f"task {self.task} runs on each site's gateway, not on machines: "
                             "it takes no 'select'")
        return self

    @property
    def capability(self) -> str:
        return str(protocol.task_spec(self.task).capability)


class CanaryIn(_Body):
    """The first wave: ``sites`` sites, or ``percent`` of the target (at least one)."""

    sites: int | None = Field(default=None, ge=1, le=COUNT)
    percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="after")
    def _one(self) -> CanaryIn:
        if (self.sites is None) == (self.percent is None):
            raise ValueError("give the canary as 'sites' or 'percent', one of them")
        return self


class AbortIn(_Body):
    """Abort when, in the current wave, at least ``min_sample`` sites finished and at least
    ``percent`` of them failed (or timed out)."""

    percent: float = Field(default=20.0, gt=0, le=100)
    min_sample: int = Field(default=5, ge=1, le=COUNT)


class RetryIn(_Body):
    """Retries of failures the gateway marks retryable (BMC unreachable, timeouts, 5xx)."""

    max: int = Field(default=0, ge=0, le=10)
    backoff: float = Field(default=60.0, ge=0, le=86_400)  # seconds before the first retry
    factor: float = Field(default=2.0, ge=1, le=10)


class PolicyIn(_Body):
    """How a rollout moves through the fleet. The defaults are for a small fleet: every site
    in one wave, no limits; a fleet of thousands sets a canary and limits."""

    canary: CanaryIn | None = None
    first_wave: int | None = Field(default=None, ge=1, le=COUNT)  # default: canary x growth
    growth: float = Field(default=2.0, ge=1, le=100)
    max_in_flight: int | None = Field(default=None, ge=1, le=COUNT)
    max_per_minute: int | None = Field(default=None, ge=1, le=COUNT)
    abort: AbortIn = Field(default_factory=AbortIn)
    site_timeout: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    retries: RetryIn = Field(default_factory=RetryIn)
    maintenance_windows: bool = True  # False: ignore the sites' windows
    expires_in: float = Field(default=7 * 86_400, gt=0, le=90 * 86_400)
    # How much each site reports of a step (protocol.Detail): "outcomes" sends a letter per
    # step and in full only failures and what read tasks found; "full" also every step's
    # message, times and data.
    report: Literal["outcomes", "full"] = "outcomes"


class RolloutIn(_Body):
    """A rollout of ``steps`` given inline, or of a ``blueprint`` revision (its latest
    unless ``revision`` says which)."""

    name: str | None = Field(default=None, min_length=1, max_length=SHORT)
    sites: list[SiteId] | None = Field(default=None, min_length=1, max_length=10_000)
    tag: str | None = Field(default=None, min_length=1, max_length=SHORT)
    steps: list[StepIn] | None = Field(default=None, min_length=1, max_length=50)
    blueprint: str | None = Field(default=None, min_length=1, max_length=SHORT)
    revision: int | None = Field(default=None, ge=1, le=REVISION)
    policy: PolicyIn = Field(default_factory=PolicyIn)
    client_token: str | None = Field(default=None, min_length=1, max_length=SHORT)

    @field_validator("sites")
    @classmethod
    def _site_ids(cls, sites: list[str] | None) -> list[str] | None:
        if sites is None:
            return None
        for site in sites:
            if not protocol.SITE_ID_PATTERN.fullmatch(site):
                raise ValueError(f"site id {site!r} is invalid")
        return list(dict.fromkeys(sites))  # drop repeats, keep the order given

    @model_validator(mode="after")
    def _one_target(self) -> RolloutIn:
        if (self.sites is None) == (self.tag is None):
            raise ValueError("give exactly one of 'sites' (a list of site ids) or 'tag'")
        if (self.steps is None) == (self.blueprint is None):
            raise ValueError("give exactly one of 'steps' (tasks inline) or 'blueprint'")
        if self.revision is not None and self.blueprint is None:
            raise ValueError("'revision' is a blueprint's: give 'blueprint' too")
        try:
            protocol.check_gateway_steps([step.task for step in self.steps or []])
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        return self

    def fingerprint(self) -> str:
        """A digest of what the request asks for: tells a retry from a reused client_token."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse(model: type[Body], raw_body: bytes | str | None) -> Body:
    """Decode a JSON object body into ``model``; raise BadRequest naming what is wrong.

    The JSON is checked first (``limits.decode``: nesting, NaN, lone surrogates), then
    validated strictly as JSON: a string is never taken for a number or a boolean."""
    data = limits.decode(raw_body)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate_json(raw_body or b"{}", strict=True)
    except ValidationError as exc:
        raise BadRequest("invalid request body: " + "; ".join(
            f"field {location(err['loc']) or '(body)'!r}: {reason(err)}"
            for err in exc.errors())) from None


def location(loc: tuple[Any, ...]) -> str:
    """('steps', 1, 'params') -> 'steps[1].params'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def reason(err: Any) -> str:
    error = err.get("ctx", {}).get("error")
    if err.get("type") == "string_pattern_mismatch":  # say what was given
        return f"{str(err['input'])[:80]!r} does not match {err['ctx']['pattern']}"
    return str(error) if isinstance(error, ValueError) else err["msg"]


def check_pattern(field: str, value: str, pattern: Any) -> str:
    """Validate a path parameter (site id, machine id) against the wire contract's pattern."""
    if not pattern.fullmatch(value):
        raise InvalidField(field=field, reason=f"{value!r} does not match {pattern.pattern}")
    return value
