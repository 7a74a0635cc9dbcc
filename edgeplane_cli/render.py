"""How the CLI shows things to a person (rich tables) or to a program (--json)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

STATE_STYLES = {
    "succeeded": "green", "failed": "red", "timed_out": "red", "rejected": "red",
    "canceled": "yellow", "uncertain": "magenta",
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
            cells = _step_cells(steps, machine.get("steps", []))
            table.add_row(
                execution["site_id"] if index == 0 else "",
                _execution_cell(execution) if index == 0 else "",
                machine["machine"], styled(machine["state"]), *cells,
            )
    return table


def _execution_cell(execution: dict[str, Any]) -> str:
    """The execution's state; a plan sent and held by its site says until when (the only
    message a ``sent`` execution has: its maintenance window has not opened there)."""
    state = styled(execution["state"])
    if execution["state"] == "sent" and execution.get("message"):
        return f"{state}\n{escape(execution['message'])}"
    return state


def _step_cells(tasks: list[str], ran: list[dict[str, Any]]) -> list[str]:
    """One cell per rollout step: what the machine did, or "-" where the step did not
    select it (its steps come in the rollout's order)."""
    cells, pending = [], list(ran)
    for task in tasks:
        if pending and pending[0].get("task") == task:
            cells.append(_step_cell(pending.pop(0)))
        else:
            cells.append("-" if ran else "")
    return cells


def _step_cell(step: dict[str, Any]) -> str:
    state = step.get("state")
    if state == "succeeded":
        return f"{styled(state)} {'changed' if step.get('changed') else 'unchanged'}"
    if state in ("failed", "uncertain"):  # uncertain: what the BMC showed, for the operator
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


def cache_line(site: dict[str, Any]) -> str:
    """The site's artifact cache in one line, as its gateway last reported it."""
    cache = site.get("cache")
    if not cache:
        return "artifact cache: none reported"
    return (f"artifact cache: {cache['artifacts']} artifacts, {_bytes(cache['bytes'])} of "
            f"{_bytes(cache['max_bytes'])}, {cache['hits']} hits, {cache['downloads']} "
            f"downloads ({_bytes(cache['wire_bytes'])} over the WAN), "
            f"{_bytes(cache['served_bytes'])} served on the LAN, {cache['evictions']} "
            f"evicted (reported {cache.get('reported_at') or '-'})")


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


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


def step_data(data: dict[str, Any], task: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(site, machine, step) for every machine that ran ``task`` in a rollout view."""
    found = []
    for execution in sorted(data["executions"], key=lambda e: e["site_id"]):
        for machine in sorted(execution.get("machines") or [], key=lambda m: m["machine"]):
            for step in machine.get("steps", []):
                if step.get("task") == task:
                    found.append((execution["site_id"], machine["machine"], step))
    return found


def bios_table(data: dict[str, Any], attributes: list[str]) -> Table:
    """What bios.apply did on each machine, and the values in effect now."""
    table = Table(title="BIOS baseline")
    for column in ("site", "machine", "result", *attributes):
        table.add_column(column)
    for site, machine, step in step_data(data, "bios.apply"):
        applied = (step.get("data") or {}).get("applied") or {}
        values = [str(applied.get(a, "unchanged" if step.get("state") == "succeeded" else "-"))
                  for a in attributes]
        table.add_row(site, machine, f"{styled(step.get('state'))} {step.get('message', '')}",
                      *values)
    return table


def inventory_table(data: dict[str, Any]) -> Table:
    """One row per machine from inventory.collect: identity, CPUs, memory, NICs, BMC."""
    table = Table(title="inventory")
    for column in ("site", "machine", "manufacturer / model", "serial", "cpus", "memory",
                   "nic MACs", "bmc firmware"):
        table.add_column(column)
    for site, machine, step in step_data(data, "inventory.collect"):
        found = step.get("data") or {}
        if step.get("state") != "succeeded":
            table.add_row(site, machine, styled(step.get("state")), step.get("message", ""))
            continue
        system = found.get("system") or {}
        fru = found.get("fru") or {}
        maker = system.get("manufacturer") or fru.get("manufacturer") or "-"
        model = system.get("model") or fru.get("product") or fru.get("model") or ""
        cpus = found.get("processors") or []
        memory = found.get("memory") or []
        mib = sum(m.get("capacity_mib") or 0 for m in memory)
        macs = list(dict.fromkeys(n["mac"] for n in found.get("nics") or [] if n.get("mac")))
        bmc_info = found.get("bmc") or {}
        bmc = bmc_info.get("firmware_version") or bmc_info.get("firmware") or "-"
        table.add_row(site, machine, f"{maker} {model}".strip(),
                      system.get("serial") or fru.get("serial") or "-",
                      f"{len(cpus)}× {cpus[0].get('model', '?')}" if cpus else "-",
                      f"{mib / 1024:.0f} GiB" if mib else "-", "\n".join(macs) or "-", bmc)
    return table
