"""Failure triage: the failed steps of the newest rollouts grouped by task and message, the
message with what differs from one machine to the next (numbers, addresses, URLs, quoted
names, ids) blanked out, so that 800 machines failing the same way read as one line.

Only failed executions are read in full (the query filters on their state); a site that
failed without any step failing (timed out, rejected its plan) is grouped by its own
message under the task ``(site)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from chalicelib import views
from chalicelib.console import cache, readings
from chalicelib.console.fleet import newest_rollouts
from chalicelib.models import Execution
from chalicelib.rollouts.read import EXECUTION_FIELDS
from chalicelib.rollouts.states import FAILED_EXECUTION_STATES
from chalicelib.views import iso
from edgeplane.protocol import StepState

SAMPLES = 20  # where each group happened, for the drill-down
LIMIT = 50  # groups in an answer, unless asked otherwise
MAX_MESSAGE = 300
SITE_TASK = "(site)"
_BLANKS = (  # the most specific first
    # What the gateway puts before the BMC's words: "site S machine M step N task: ...".
    (re.compile(r"\bsite [a-z0-9][a-z0-9-]*"), "site <site>"),
    (re.compile(r"\bmachine [A-Za-z0-9][A-Za-z0-9_.-]*"), "machine <machine>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.I), "<url>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
     "<uuid>"),
    (re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\""), "<name>"),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{12,}\b", re.I), "<hex>"),
    (re.compile(r"(?<=/)[A-Za-z0-9_.-]*\d[A-Za-z0-9_.-]*"), "<id>"),  # in a resource's path
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
)


def normalize(message: str | None) -> str:
    """The message with what varies between machines blanked out."""
    text = " ".join((message or "").split())[:MAX_MESSAGE * 2]
    for pattern, blank in _BLANKS:
        text = pattern.sub(blank, text)
    return text[:MAX_MESSAGE] or "(no message)"


@dataclass
class Group:
    task: str
    message: str
    example: str
    machines: int = 0
    sites: set[str] = field(default_factory=set)
    samples: list[dict[str, str | None]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "message": self.message, "example": self.example,
                "machines": self.machines, "sites": len(self.sites), "samples": self.samples}


def triage(rollout_id: str | None = None, limit: int = LIMIT) -> dict[str, Any]:
    """The groups, largest first, over one rollout or the newest ones (remembered a while:
    ``cache``)."""
    newest = rollout_id is None and limit == LIMIT
    answer, counted_at = cache.get(("failures", rollout_id, limit),
                                   lambda: _triage(rollout_id, limit), NEWEST if newest else None)
    return {**answer, "counted_at": iso(counted_at)}


def _triage(rollout_id: str | None, limit: int) -> dict[str, Any]:
    rollout_ids = [rollout_id] if rollout_id else newest_rollouts()
    groups: dict[tuple[str, str], Group] = {}
    failed_sites = 0
    for rid in rollout_ids:
        for execution in failed_executions(rid):
            failed_sites += 1
            for task, message, machine in failures_of(execution):
                key = (task, normalize(message))
                group = groups.setdefault(key, Group(task, key[1], (message or "")[:MAX_MESSAGE]))
                group.machines += 1
                group.sites.add(execution.site_id)
                if len(group.samples) < SAMPLES:
                    group.samples.append({"rollout_id": rid, "site_id": execution.site_id,
                                          "machine": machine})
    ordered = sorted(groups.values(), key=lambda g: (-g.machines, g.task, g.message))
    return {"rollouts": rollout_ids, "failed_sites": failed_sites, "groups_total": len(ordered),
            "groups": [g.as_json() for g in ordered[:limit]]}


def failed_executions(rollout_id: str) -> Iterable[Execution]:
    fields = [*EXECUTION_FIELDS, "machines", "plan_steps", "result_parts"]
    return Execution.query(rollout_id, filter_condition=Execution.state.is_in(
        *FAILED_EXECUTION_STATES), attributes_to_get=fields)


def failures_of(execution: Execution) -> list[tuple[str, str | None, str | None]]:
    """(task, message, machine) of each failed step; the site's own message if none."""
    found: list[tuple[str, str | None, str | None]] = []
    shown = views.execution(execution, with_machines=True)
    for machine in shown.get("machines") or []:
        for step in machine["steps"]:
            if step["state"] == StepState.FAILED:
                found.append((step["task"] or "?", step["message"], machine["machine"]))
    if not found:
        found.append((SITE_TASK, execution.message, None))
    return found


# The groups of the newest rollouts (what the view opens on) are saved for the next process.
NEWEST = readings.Kept("failures", lambda: _triage(None, LIMIT))
