"""Which hardware fails: machines of the newest rollouts by vendor and BMC firmware, with how
many ran to the end and how many of those failed. A cell with a high rate next to cells of
the same vendor with a low one points at a firmware, not at the plan."""

from __future__ import annotations

from collections import Counter
from typing import Any

from chalicelib.console import cache, readings, store_reads
from chalicelib.console.fleet import NO_VALUE, bmc_firmware, newest_rollouts
from chalicelib.models import Execution, Machine
from chalicelib.views import iso
from edgeplane.protocol import MachineState


def failure_matrix(rollout_id: str | None = None) -> dict[str, Any]:
    """The cells over one rollout or the newest ones, most failures first (remembered a
    while: ``cache``)."""
    answer, counted_at = cache.get(("matrix", rollout_id), lambda: _matrix(rollout_id),
                                   NEWEST if rollout_id is None else None)
    return {**answer, "counted_at": iso(counted_at)}


def _matrix(rollout_id: str | None) -> dict[str, Any]:
    rollout_ids = [rollout_id] if rollout_id else newest_rollouts()
    kind: dict[tuple[str, str], tuple[str, str]] = {
        (m["site_id"], m["machine_id"]): (m.get("manufacturer") or NO_VALUE,
                                          bmc_firmware(store_reads.json_field(m, "observed")))
        for m in store_reads.scan(Machine, ["site_id", "machine_id", "manufacturer",
                                            "observed"])}
    ran: Counter[tuple[str, str]] = Counter()
    failed: Counter[tuple[str, str]] = Counter()
    for rid in rollout_ids:
        for execution in store_reads.query(Execution, rid, ["site_id", "machines"]):
            for machine, report in (execution.get("machines") or {}).items():
                parsed = store_reads.parse_json(report)  # each report is stored as JSON
                state = parsed.get("state") if isinstance(parsed, dict) else None
                if state not in (MachineState.SUCCEEDED, MachineState.FAILED):
                    continue
                cell = kind.get((execution["site_id"], machine), (NO_VALUE, NO_VALUE))
                ran[cell] += 1
                failed[cell] += state == MachineState.FAILED
    cells: list[dict[str, Any]] = [
        {"vendor": vendor, "firmware": firmware, "machines": count,
         "failed": failed[(vendor, firmware)],
         "rate": round(failed[(vendor, firmware)] / count, 4)}
        for (vendor, firmware), count in ran.items()]
    cells.sort(key=lambda c: (-c["rate"], -c["machines"], c["vendor"], c["firmware"]))
    return {"rollouts": rollout_ids, "vendors": sorted({c["vendor"] for c in cells}),
            "firmware": sorted({c["firmware"] for c in cells}), "cells": cells}


# The matrix of the newest rollouts (what the view opens on) is saved for the next process.
NEWEST = readings.Kept("matrix", lambda: _matrix(None))
