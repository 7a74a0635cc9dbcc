"""How the CLI shows things to a person (rich tables) or to a program (--json)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

STATE_STYLES = {
    "succeeded": "green", "failed": "red", "timed_out": "red", "canceled": "yellow",
    "running": "cyan", "sent": "cyan", "queued": "dim", "pending": "dim", "skipped": "yellow",
}

# Piped output (CI logs, `make demo | tee`) gets room for a full result table.
console = Console(width=None if sys.stdout.isatty() else 160)


def styled(state: str | None) -> str:
    state = state or "-"
    style = STATE_STYLES.get(state)
    return f"[{style}]{state}[/{style}]" if style else state


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def rollout_table(data: dict[str, Any]) -> Table:
    """One row per machine of every site, with each step's outcome."""
    rollout = data["rollout"]
    steps = [s["task"] for s in rollout.get("steps", [])]
    counts = ", ".join(f"{k} {v}" for k, v in sorted(rollout.get("counts", {}).items()))
    table = Table(title=f"rollout {rollout['rollout_id']}: {styled(rollout['state'])}"
                        + (f" ({counts})" if counts else ""))
    table.add_column("site")
    table.add_column("execution")
    table.add_column("machine")
    table.add_column("result")
    for task in steps:
        table.add_column(task)
    for execution in sorted(data["executions"], key=lambda e: e["site_id"]):
        machines = execution.get("machines") or [{"machine": "-", "state": None, "steps": []}]
        for index, machine in enumerate(sorted(machines, key=lambda m: m["machine"])):
            cells = [_step_cell(s) for s in machine.get("steps", [])]
            cells += [""] * (len(steps) - len(cells))
            table.add_row(
                execution["site_id"] if index == 0 else "",
                styled(execution["state"]) if index == 0 else "",
                machine["machine"], styled(machine["state"]), *cells,
            )
    return table


def _step_cell(step: dict[str, Any]) -> str:
    state = step.get("state")
    if state == "succeeded":
        return f"{styled(state)} {'changed' if step.get('changed') else 'unchanged'}"
    if state == "failed":
        return f"{styled(state)}: {step.get('message', '')}"
    return styled(state)


def sites_table(sites: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(sites)} sites")
    for column in ("site", "online", "tags", "timezone", "gateway", "last seen"):
        table.add_column(column)
    for site in sorted(sites, key=lambda s: s["site_id"]):
        table.add_row(site["site_id"], "[green]yes[/green]" if site.get("online") else
                      "[red]no[/red]", ",".join(site.get("tags") or []),
                      site.get("timezone") or "-", site.get("gateway_version") or "-",
                      str(site.get("last_seen_at") or "-"))
    return table


def machines_table(site_id: str, machines: list[dict[str, Any]]) -> Table:
    table = Table(title=f"machines at {site_id}")
    for column in ("machine", "protocol", "address", "manufacturer", "model", "serial",
                   "power", "capabilities"):
        table.add_column(column)
    for m in sorted(machines, key=lambda m: m["machine_id"]):
        table.add_row(m["machine_id"], m.get("protocol") or "-", m.get("address") or "-",
                      m.get("manufacturer") or "-", m.get("model") or "-",
                      m.get("serial") or "-", m.get("power") or "-",
                      ",".join(m.get("capabilities") or []))
    return table
