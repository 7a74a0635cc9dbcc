"""What the API returns for each record: plain JSON, timestamps as ISO 8601 UTC strings.

Stored timestamps are epoch seconds (as on the wire); every conversion happens here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from chalicelib.models import Execution, Machine, Rollout, Site, Wave
from edgeplane import protocol


def iso(ts: Any) -> str | None:
    """Epoch seconds as ISO 8601 UTC; None for a missing (or, from a gateway, garbled) time."""
    if isinstance(ts, bool) or not isinstance(ts, int | float | Decimal):
        return None
    moment = datetime.fromtimestamp(float(ts), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def site(item: Site) -> dict[str, Any]:
    return {
        "site_id": item.site_id,
        "name": item.name,
        "region": item.region,
        "tags": list(item.tags or []),
        "timezone": item.timezone,
        "facts": dict(item.facts or {}),
        "maintenance_window": item.maintenance_window,
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "online": bool(item.online),
        "presence_changed_at": iso(item.presence_changed_at),
        "last_seen_at": iso(item.last_seen_at),
        "gateway_version": item.gateway_version,
        "cache": _cache(item.cache),
    }


def _cache(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gateway's last cache report (``chalicelib.site_cache``), its time as ISO."""
    if not report:
        return None
    return {**report, "reported_at": iso(report.get("reported_at"))}


def machine(item: Machine) -> dict[str, Any]:
    return {
        "site_id": item.site_id,
        "machine_id": item.machine_id,
        "protocol": item.protocol,
        "address": item.address,
        "machine_class": item.machine_class,
        "labels": item.label_dict,
        "capabilities": list(item.capabilities) if item.capabilities is not None else None,
        "manufacturer": item.manufacturer,
        "model": item.model,
        "serial": item.serial,
        "power": item.power,
        "inventory_error": item.inventory_error,
        "source": item.source,
        "desired": item.desired,
        "updated_at": iso(item.updated_at),
    }


def rollout(item: Rollout, executions: Iterable[Execution] | None = None,
            site_ids: list[str] | None = None) -> dict[str, Any]:
    """A rollout; its site ids where the answer is about this rollout alone (``site_ids``
    null in lists and in counter views: 10,000 of them are ~150 KB)."""
    body: dict[str, Any] = {
        "rollout_id": item.rollout_id,
        "name": item.name,
        "state": item.state,
        "steps": item.steps,
        "blueprint": ({"name": item.blueprint, "revision": int(item.blueprint_revision)}
                      if item.blueprint else None),
        "target": {"tag": item.target_tag} if item.target_tag else {"sites": site_ids},
        "site_ids": site_ids,
        "client_token": item.client_token,
        "message": item.message,
        "policy": item.policy,
        "waves": [int(size) for size in item.waves or []],
        "current_wave": int(item.current_wave or 0),
        "total": int(item.total or 0),
        "done": int(item.done or 0),
        "in_flight": int(item.in_flight or 0),
        # executions per state, by the counters (no execution read)
        "state_counts": {state: int(n) for state, n in sorted(
            (item.state_counts.as_dict() if item.state_counts else {}).items()) if int(n)},
        "expires_at": iso(item.expires_at),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
    }
    if executions is not None:
        executions = list(executions)
        body["counts"] = dict(sorted(Counter(e.state for e in executions).items()))
        by_wave: dict[int, Counter[str]] = {}
        for e in executions:
            by_wave.setdefault(int(e.wave or 0), Counter())[e.state] += 1
        body["wave_counts"] = [dict(sorted(by_wave.get(i, Counter()).items()))
                               for i in range(len(body["waves"]) or 1)]
    return body


def wave(item: Wave) -> dict[str, Any]:
    return {"wave": int(item.wave), "size": int(item.size), "done": int(item.done or 0),
            "failed": int(item.failed or 0)}


def execution(item: Execution, with_machines: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "site_id": item.site_id,
        "execution_id": item.execution_id,
        "state": item.state,
        "wave": int(item.wave or 0),
        "attempt": int(item.attempt or 1),
        "message": item.message,
        "plan_message_id": item.plan_message_id,
        "not_before": iso(item.not_before),
        "sent_at": iso(item.sent_at),
        "started_at": iso(item.started_at),
        "finished_at": iso(item.finished_at),
        "last_seq": int(item.last_seq) if item.last_seq is not None else None,
        "updated_at": iso(item.updated_at),
    }
    if with_machines:
        plan = item.plan_steps
        body["machines"] = [machine_result(machine, report, _tasks_of(plan, machine))
                            for machine, report in item.machine_reports().items()]
    return body


def _tasks_of(plan: list[dict[str, Any]] | None, machine: str) -> list[str] | None:
    """The machine's steps in the plan, in order: what a summarized result's letters are."""
    if plan is None:
        return None
    return [step["task"] for step in plan if machine in (step.get("machines") or [])]


def machine_result(machine: str, report: dict[str, Any],
                   tasks: list[str] | None = None) -> dict[str, Any]:
    steps = report.get("steps") or []
    if report.get("summary") is not None:  # a letter per step, the rest in full
        steps = protocol.expand_steps(str(report["summary"]), steps, tasks)
    return {
        "machine": machine,
        "state": report.get("state"),
        "seq": report.get("seq"),
        "updated_at": iso(report.get("at")),
        "steps": [step_result(step) for step in steps],
    }


def step_result(step: dict[str, Any]) -> dict[str, Any]:
    body = {
        "task": step.get("task"),
        "state": step.get("state"),
        "changed": bool(step.get("changed", False)),
        "message": step.get("message", ""),
        "started_at": iso(step.get("started_at")),
        "finished_at": iso(step.get("finished_at")),
        "retryable": bool(step.get("retryable", False)),
    }
    if step.get("data") is not None:  # what a read task found (inventory, BIOS, SEL...)
        body["data"] = step["data"]
    if step.get("trimmed"):  # output the site left out to fit its report in one message
        body["trimmed"] = step["trimmed"]
    return body


def machine_drift(item: Machine) -> dict[str, Any]:
    desired = item.desired or {}
    return {
        "site_id": item.site_id,
        "machine_id": item.machine_id,
        "blueprint": desired.get("blueprint"),
        "revision": desired.get("revision"),
        "rollout_id": desired.get("rollout"),
        "expect": desired.get("expect") or {},
        "observed": item.observed,
        "observed_at": iso(item.observed_ts),
        "drift": list(item.drift or []),
        "in_sync": not item.drift and item.observed is not None,
        "drift_changed_at": iso(item.drift_changed_at),
    }
