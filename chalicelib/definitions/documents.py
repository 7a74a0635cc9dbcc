"""The documents operators write (YAML or JSON): blueprint, profile, site, group, machine-class.

Every document is ``{kind, name, spec}``. The shapes are pydantic models that refuse unknown
fields, so a typo is an error with its path (``spec.steps[1].params``), never a value quietly
ignored. What can be checked without the rest of the fleet is checked here: task names and
literal task parameters, declared parameter types, template syntax; what depends on other
documents (a profile's values against the blueprints' declarations) is checked in
``catalog``.
"""

from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.definitions import templates
from chalicelib.errors import BadRequest
from chalicelib.limits import DocumentSpec, FreeForm
from chalicelib.schemas import location, reason
from edgeplane import protocol
from edgeplane.protocol import BmcProtocol, Param, ParamType, ProtocolError

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PARAM_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SHORT = 200


class Kind(enum.StrEnum):
    BLUEPRINT = "blueprint"
    PROFILE = "profile"
    SITE = "site"
    GROUP = "group"
    MACHINE_CLASS = "machine-class"


class Level(enum.StrEnum):
    """Where a profile attaches, least specific first: the most specific value wins."""

    FLEET = "fleet"
    GROUP = "group"
    SITE = "site"
    MACHINE_CLASS = "machine-class"
    MACHINE = "machine"


LEVEL_ORDER = {level: rank for rank, level in enumerate(Level)}


class _Spec(BaseModel):
    # Compiled on first use: a cold start pays only for the kinds it is sent.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


# --- blueprint -----------------------------------------------------------------------------


class ParamDecl(_Spec):
    """A parameter a blueprint takes: its type, allowed values, range and default."""

    type: ParamType = ParamType.STRING
    choices: list[str] | None = None
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    description: str = Field(default="", max_length=1000)

    def as_param(self) -> Param:
        return Param(type=self.type, choices=tuple(self.choices) if self.choices else None,
                     default=self.default, minimum=self.minimum, maximum=self.maximum,
                     help=self.description)

    def check(self, owner: str, name: str, value: Any) -> Any:
        try:
            return self.as_param().check(owner, name, value)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _default_fits(self) -> ParamDecl:
        if self.default is not None:
            try:
                self.as_param().check("declaration", "default", self.default)
            except ProtocolError as exc:
                why = str(exc).split("; ", 1)[-1]
                raise ValueError(f"the default {self.default!r} does not fit: {why}") from None
        return self


class StepSelect(_Spec):
    """Which machines of a site a step applies to; every criterion given must hold."""

    labels: dict[str, str] = Field(default_factory=dict)
    machine_class: str | None = None
    protocol: BmcProtocol | None = None
    capable: bool = False
    ids: list[str] | None = None


class BlueprintStep(_Spec):
    name: str | None = Field(default=None, max_length=SHORT)
    task: str
    params: FreeForm = Field(default_factory=dict)
    select: StepSelect = Field(default_factory=StepSelect)

    @model_validator(mode="after")
    def _task_and_literals(self) -> BlueprintStep:
        spec = protocol.task_spec(self.task) if self.task in protocol.TASKS else None
        if spec is None:
            raise ValueError(f"unknown task {self.task!r}; known tasks: "
                             f"{', '.join(sorted(protocol.TASKS))}")
        if spec.on_gateway:  # a blueprint is what machines should be
            raise ValueError(f"task {self.task} acts on a site's gateway, not on machines: "
                             "roll it out as an inline step, not in a blueprint")
        unknown = sorted(set(self.params) - set(spec.params))
        if unknown:
            raise ValueError(f"task {self.task}: unknown parameter(s) {', '.join(unknown)}; "
                             f"it takes {', '.join(sorted(spec.params)) or 'no parameters'}")
        for name, value in self.params.items():
            if templates.is_template(value):
                templates.check_syntax(value, f"parameter {name!r}")
                continue
            try:
                spec.params[name].check(self.task, name, value)
            except ProtocolError as exc:
                raise ValueError(str(exc)) from None
        return self


class BlueprintSpec(_Spec):
    description: str = Field(default="", max_length=2000)
    params: dict[str, ParamDecl] = Field(default_factory=dict)
    steps: list[BlueprintStep] = Field(min_length=1, max_length=50)

    @field_validator("params")
    @classmethod
    def _param_names(cls, params: dict[str, ParamDecl]) -> dict[str, ParamDecl]:
        for name in params:
            if not PARAM_NAME.fullmatch(name):
                raise ValueError(f"parameter name {name!r} must be lowercase letters, digits "
                                 "and '_', starting with a letter")
        return params


# --- profile, group, site, machine class --------------------------------------------------


class ProfileSpec(_Spec):
    level: Level
    target: str | None = Field(default=None, max_length=SHORT)
    priority: int = 0
    description: str = Field(default="", max_length=2000)
    params: FreeForm = Field(min_length=1)

    @model_validator(mode="after")
    def _target_fits_level(self) -> ProfileSpec:
        if self.level == Level.FLEET:
            if self.target is not None:
                raise ValueError("a fleet profile has no target")
        elif not self.target:
            raise ValueError(f"a {self.level} profile needs a target: the "
                             f"{_TARGET_WORDS[self.level]}")
        elif self.level == Level.MACHINE:
            site, slash, machine = self.target.partition("/")
            if not slash or not protocol.SITE_ID_PATTERN.fullmatch(site) or \
                    not protocol.MACHINE_ID_PATTERN.fullmatch(machine):
                raise ValueError(f"target {self.target!r}: a machine profile's target is "
                                 "SITE/MACHINE, e.g. shop-0042/srv-1")
        elif self.level == Level.SITE and not protocol.SITE_ID_PATTERN.fullmatch(self.target):
            raise ValueError(f"target {self.target!r} is not a site id")
        for name in self.params:
            if not PARAM_NAME.fullmatch(name):
                raise ValueError(f"parameter name {name!r} must be lowercase letters, digits "
                                 "and '_', starting with a letter")
        return self


_TARGET_WORDS = {Level.GROUP: "group's name", Level.SITE: "site id",
                 Level.MACHINE_CLASS: "machine class's name", Level.MACHINE: "SITE/MACHINE"}


class GroupSpec(_Spec):
    """Sites that carry every one of ``tags``."""

    description: str = Field(default="", max_length=2000)
    tags: list[str] = Field(min_length=1, max_length=20)


class SiteSpec(_Spec):
    name: str | None = Field(default=None, max_length=SHORT)
    region: str | None = Field(default=None, max_length=SHORT)
    tags: list[str] = Field(default_factory=list, max_length=50)
    timezone: str | None = None
    facts: FreeForm = Field(default_factory=dict)
    maintenance_window: dict[str, Any] | None = None  # checked as the API's WindowIn


class MachineClassSpec(_Spec):
    description: str = Field(default="", max_length=2000)
    facts: FreeForm = Field(default_factory=dict)


SPECS: dict[Kind, type[_Spec]] = {
    Kind.BLUEPRINT: BlueprintSpec, Kind.PROFILE: ProfileSpec, Kind.SITE: SiteSpec,
    Kind.GROUP: GroupSpec, Kind.MACHINE_CLASS: MachineClassSpec,
}


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    kind: Kind
    name: str = Field(max_length=SHORT)
    spec: DocumentSpec = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not NAME.fullmatch(name):
            raise ValueError(f"{name!r}: a name is 1-63 lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit")
        return name

    def typed(self) -> Any:
        """The spec as its kind's model."""
        return SPECS[self.kind].model_validate(self.spec)


def parse_document(data: Any, where: str = "document") -> tuple[Document, Any]:
    """(document, typed spec), or BadRequest naming ``where`` and each field that is wrong."""
    if not isinstance(data, dict):
        raise BadRequest(f"{where}: must be an object with kind, name and spec")
    try:
        document = Document.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"{where}: {_errors(exc)}") from None
    where = f"{where} ({document.kind} {document.name})"
    try:
        spec = document.typed()
    except ValidationError as exc:
        raise BadRequest(f"{where}: {_errors(exc, 'spec')}") from None
    if document.kind == Kind.SITE and not protocol.SITE_ID_PATTERN.fullmatch(document.name):
        raise BadRequest(f"{where}: site name {document.name!r} is not a valid site id")
    # A model round trip gives every document its canonical form (defaults filled in).
    document.spec = spec.model_dump(mode="json", exclude_defaults=False)
    return document, spec


def _errors(exc: ValidationError, prefix: str = "") -> str:
    return "; ".join(f"{location((prefix, *err['loc']) if prefix else err['loc'])}: "
                     f"{reason(err)}" for err in exc.errors())
