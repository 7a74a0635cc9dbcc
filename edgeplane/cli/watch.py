"""``edgeplane rollout watch``: a progress bar per wave and the running counts."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from edgeplane.cli.client import ApiClient
from edgeplane.cli.render import console

TERMINAL = frozenset({"succeeded", "failed", "aborted", "canceled"})
FINISHED = frozenset({"succeeded", "failed", "timed_out", "canceled", "expired"})


def follow(api: ApiClient, rollout_id: str, interval: float, timeout: float) -> str:
    """Redraw until the rollout ends; returns its final state."""
    deadline = time.monotonic() + timeout
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            data = api.get(f"/rollouts/{rollout_id}?machines=false")
            sites = {s["site_id"]: s for s in api.get("/sites")["sites"]}
            live.update(render(data, sites))
            state = data["rollout"]["state"]
            if state in TERMINAL or time.monotonic() > deadline:
                return str(state)
            time.sleep(interval)


def render(data: dict[str, Any], sites: dict[str, dict[str, Any]]) -> Table:
    rollout = data["rollout"]
    executions = data["executions"]
    bars = Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f}"), console=console)
    sizes = rollout.get("waves") or [len(executions)]
    per_wave = rollout.get("wave_counts") or []
    for index, size in enumerate(sizes):
        wave = per_wave[index] if index < len(per_wave) else {}
        done = sum(n for state, n in wave.items() if state in FINISHED)
        label = "canary" if index == 0 and (rollout.get("policy") or {}).get("canary") \
            else f"wave {index}"
        marker = " <" if index == rollout.get("current_wave") else ""
        bars.add_task(f"{label}{marker}", total=size, completed=done)
    counts = Counter(rollout.get("counts") or {})
    offline = sum(1 for e in executions if e["state"] in ("queued", "sent")
                  and not sites.get(e["site_id"], {}).get("online"))
    table = Table.grid(padding=(0, 2))
    table.add_row(f"rollout {rollout['rollout_id']}: [bold]{rollout['state']}[/]"
                  + (f" — {rollout['message']}" if rollout.get("message") else ""))
    table.add_row(bars)
    table.add_row(f"succeeded {counts['succeeded']}  failed "
                  f"{counts['failed'] + counts['timed_out']}  pending "
                  f"{counts['queued'] + counts['sent'] + counts['running']}  offline {offline}"
                  f"  expired {counts['expired']}  canceled {counts['canceled']}")
    return table
