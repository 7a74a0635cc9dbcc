"""Request bodies, validated with pydantic; any mistake becomes a 400 naming the field.

Unknown fields are refused (a typo like ``"tag": ...`` vs ``"tags": ...`` should not pass
silently). Task parameters are checked against the wire contract's TaskSpec, so the cloud
never accepts a step a gateway would refuse.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from chalicelib.errors import BadRequest, InvalidField
from edgeplane import protocol
from edgeplane.protocol import BmcProtocol, ProtocolError

Body = TypeVar("Body", bound=BaseModel)

SHORT = 200  # longest name, label or token we accept


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SiteIn(_Body):
    """Fields left out keep their stored value; ``null`` puts a field back to its default."""

    name: str | None = Field(default=None, min_length=1, max_length=SHORT)
    region: str | None = Field(default=None, min_length=1, max_length=SHORT)
    tags: list[str] | None = Field(default=None, max_length=50)
    timezone: str | None = None
    facts: dict[str, Any] | None = Field(default=None, max_length=100)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        for tag in tags or []:
            if not tag or len(tag) > SHORT:
                raise ValueError(f"tag {tag!r} must be 1-{SHORT} characters")
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


class MachineIn(_Body):
    protocol: BmcProtocol
    address: str = Field(min_length=1, max_length=SHORT)
    machine_class: str | None = Field(default=None, min_length=1, max_length=SHORT)
    labels: dict[str, str] = Field(default_factory=dict, max_length=50)

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

    ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    protocol: BmcProtocol | None = None
    machine_class: str | None = Field(default=None, min_length=1, max_length=SHORT)
    capable: bool = False


class StepIn(_Body):
    task: str
    params: dict[str, Any] = Field(default_factory=dict)
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
        return self

    @property
    def capability(self) -> str:
        return str(protocol.task_spec(self.task).capability)


class RolloutIn(_Body):
    """A rollout of ``steps`` given inline, or of a ``blueprint`` revision (its latest
    unless ``revision`` says which)."""

    name: str | None = Field(default=None, min_length=1, max_length=SHORT)
    sites: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    tag: str | None = Field(default=None, min_length=1, max_length=SHORT)
    steps: list[StepIn] | None = Field(default=None, min_length=1, max_length=50)
    blueprint: str | None = Field(default=None, min_length=1, max_length=SHORT)
    revision: int | None = Field(default=None, ge=1)
    client_token: str | None = Field(default=None, min_length=1, max_length=SHORT)

    @field_validator("sites")
    @classmethod
    def _site_ids(cls, sites: list[str] | None) -> list[str] | None:
        if sites is None:
            return None
        for site in sites:
            if not protocol.SITE_ID_PATTERN.match(site):
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
        return self

    def fingerprint(self) -> str:
        """A digest of what the request asks for: tells a retry from a reused client_token."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse(model: type[Body], raw_body: bytes | str | None) -> Body:
    """Decode a JSON object body into ``model``; raise BadRequest naming what is wrong."""
    try:
        data = json.loads(raw_body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest("invalid request body: " + "; ".join(
            f"field {_location(err['loc']) or '(body)'!r}: {_reason(err)}"
            for err in exc.errors())) from None


def _location(loc: tuple[Any, ...]) -> str:
    """('steps', 1, 'params') -> 'steps[1].params'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _reason(err: Any) -> str:
    error = err.get("ctx", {}).get("error")
    return str(error) if isinstance(error, ValueError) else err["msg"]


def check_pattern(field: str, value: str, pattern: Any) -> str:
    """Validate a path parameter (site id, machine id) against the wire contract's pattern."""
    if not pattern.match(value):
        raise InvalidField(field=field, reason=f"{value!r} does not match {pattern.pattern}")
    return value
