"""Render a blueprint revision into one site's plan: steps x machines, concrete parameters.

Each machine's parameters are resolved (fleet -> ... -> machine, over the blueprint's
defaults), every templated step parameter is rendered in Jinja2's sandbox with
StrictUndefined, and the result is checked against the task's schema. A missing value is an
error naming the blueprint, the step, the parameter, the site and the machine. Machines whose
rendered parameters are equal share one plan step, which keeps the plan small.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib import drift, plans
from chalicelib.definitions import templates
from chalicelib.definitions.documents import BlueprintSpec
from chalicelib.definitions.resolve import ConflictError, Fleet
from chalicelib.errors import Conflict
from chalicelib.models import Execution, Machine, Site
from edgeplane import protocol
from edgeplane.protocol import ProtocolError

_PARAM_REFERENCE = re.compile(r"params\.([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class RenderedSite:
    plan: protocol.Plan
    desired: dict[str, dict[str, Any]]  # machine id -> its desired state


def step_dicts(spec: BlueprintSpec) -> list[dict[str, Any]]:
    """The steps as the rollout engine selects machines for them."""
    return [{"task": step.task, "params": step.params,
             "select": step.select.model_dump(exclude_defaults=True)} for step in spec.steps]


def render_site(rollout_id: str, site: Site, machines: Sequence[Machine], blueprint: str,
                revision: int, spec: BlueprintSpec, fleet: Fleet) -> RenderedSite:
    where = f"blueprint {blueprint} revision {revision}"
    selected = plans.check_capable(site.site_id, machines, step_dicts(spec))
    defaults = {name: decl.default for name, decl in spec.params.items()}
    resolved: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    plan_steps = []
    for index, (step, chosen) in enumerate(zip(spec.steps, selected, strict=True)):
        by_params: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for machine in chosen:
            if machine.machine_id not in resolved:
                try:
                    resolved[machine.machine_id] = _resolve(fleet, site, machine, defaults)
                except ConflictError as exc:
                    raise Conflict(f"{where}: {exc}") from None
            context = _context(site, machine, resolved[machine.machine_id])
            try:
                params = _render_step(step.task, step.params, context)
            except ValueError as exc:
                problems.append(f"{where} step {index} ({step.task}) at site "
                                f"{site.site_id!r} machine {machine.machine_id!r}: {exc}")
                continue
            key = json.dumps(params, sort_keys=True)
            by_params.setdefault(key, (params, []))[1].append(machine.machine_id)
        for params, machine_ids in by_params.values():
            plan_steps.append(protocol.PlanStep(task=step.task, params=params,
                                                machines=sorted(machine_ids)))
    if problems:
        raise Conflict("; ".join(problems))
    plan = protocol.Plan(site=site.site_id,
                         execution_id=Execution.make_id(rollout_id, site.site_id),
                         rollout_id=rollout_id, steps=plan_steps)
    desired = {machine_id: {"blueprint": blueprint, "revision": revision,
                            "params": {k: v for k, v in values.items() if k in spec.params},
                            "expect": drift.expected_from(plan_steps, machine_id)}
               for machine_id, values in resolved.items()}
    return RenderedSite(plan, desired)


def _resolve(fleet: Fleet, site: Site, machine: Machine,
             defaults: dict[str, Any]) -> dict[str, Any]:
    values = fleet.resolve(site.site_id, site.tags or [], machine.machine_id,
                           machine.machine_class, defaults)
    return {name: value.value for name, value in values.items()}


def _context(site: Site, machine: Machine, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "params": params,
        "site": {"id": site.site_id, "name": site.name, "region": site.region,
                 "tags": list(site.tags or []), "timezone": site.timezone,
                 "facts": dict(site.facts or {})},
        "machine": {"id": machine.machine_id, "class": machine.machine_class,
                    "protocol": machine.protocol, "labels": machine.label_dict,
                    "manufacturer": machine.manufacturer, "model": machine.model,
                    "serial": machine.serial},
    }


def _render_step(task: str, raw: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    rendered = {}
    for name, value in raw.items():
        try:
            rendered[name] = templates.render(value, context)
        except templates.TemplateProblem as exc:
            missing = [p for p in _referenced(value) if p not in context["params"]]
            hint = (f"; no profile or default gives {', '.join(map(repr, missing))} a value"
                    if missing else "")
            raise ValueError(f"parameter {name!r}: {exc}{hint}") from None
    try:
        checked = protocol.task_spec(task).validate(rendered)
    except ProtocolError as exc:
        raise ValueError(f"rendered parameters are not valid: {exc}") from None
    return {name: checked[name] for name in rendered if name in checked}


def _referenced(value: Any) -> list[str]:
    """The ``params.X`` names a template mentions (for a helpful error)."""
    return sorted(set(_PARAM_REFERENCE.findall(json.dumps(value))))
