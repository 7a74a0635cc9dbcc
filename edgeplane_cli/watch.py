"""``edgeplane rollout watch``: a progress bar per wave and the running counts."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Any

from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from edgeplane_cli.client import ApiClient
from edgeplane_cli.render import console

TERMINAL = frozenset({"succeeded", "failed", "aborted", "canceled"})


# Up to this many sites every look also counts the offline ones (a read of every execution
# and every site); above, one look in OFFLINE_EVERY does, the others read only counters.
DETAIL_UP_TO = 2000
OFFLINE_EVERY = 10


def follow(api: ApiClient, rollout_id: str, interval: float, timeout: float) -> str:
    """Redraw until the rollout ends; returns its final state."""
    deadline = time.monotonic() + timeout
    offline: int | None = None
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        for look in itertools.count():
            data = api.get(f"/rollouts/{rollout_id}?executions=false")
            rollout = data["rollout"]
            state = rollout["state"]
            if int(rollout.get("total") or 0) <= DETAIL_UP_TO or look % OFFLINE_EVERY == 0 \
                    or state in TERMINAL:
                offline = offline_sites(api, rollout_id)
            live.update(render(rollout, data.get("waves") or [], offline))
            if state in TERMINAL or time.monotonic() > deadline:
                return str(state)
            time.sleep(interval)
    raise AssertionError("unreachable")


def offline_sites(api: ApiClient, rollout_id: str) -> int:
    """Sites whose plan waits (queued or sent) while their gateway is offline."""
    executions = api.get(f"/rollouts/{rollout_id}?machines=false")["executions"]
    online = {s["site_id"]: bool(s.get("online")) for s in api.get("/sites")["sites"]}
    return sum(1 for e in executions if e["state"] in ("queued", "sent")
               and not online.get(e["site_id"]))


def render(rollout: dict[str, Any], waves: list[dict[str, Any]],
           offline: int | None) -> Table:
    bars = Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f}"), console=console)
    for wave in waves:
        index = int(wave["wave"])
        label = "canary" if index == 0 and (rollout.get("policy") or {}).get("canary") \
            else f"wave {index}"
        marker = " <" if index == rollout.get("current_wave") else ""
        failed = f" ({wave['failed']} failed)" if wave.get("failed") else ""
        bars.add_task(f"{label}{marker}{failed}", total=wave["size"], completed=wave["done"])
    counts = Counter(rollout.get("state_counts") or {})
    table = Table.grid(padding=(0, 2))
    table.add_row(f"rollout {rollout['rollout_id']}: [bold]{rollout['state']}[/]"
                  + (f" — {rollout['message']}" if rollout.get("message") else ""))
    table.add_row(bars)
    table.add_row(f"succeeded {counts['succeeded']}  failed "
                  f"{counts['failed'] + counts['timed_out'] + counts['rejected']}  pending "
                  f"{counts['queued'] + counts['sent'] + counts['running']}  offline "
                  f"{'?' if offline is None else offline}"
                  f"  expired {counts['expired']}  canceled {counts['canceled']}")
    return table
