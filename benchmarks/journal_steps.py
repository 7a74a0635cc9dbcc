"""What journaling each step costs a gateway: the two commits of one step (its start, before
the BMC call, and its end with its result), on a journal file and in memory.

    python benchmarks/journal_steps.py [--steps 500] [--folder DIR]

The gateway fsyncs a step's start (``synchronous=FULL`` for that commit: it must survive a
power cut) and commits its end without (``NORMAL``): "as the gateway does". Beside it,
"both fsynced" (every commit ``FULL``) and "no fsync" (every commit ``NORMAL``), on the
same disk. Wall time includes the fsyncs; CPU time is this process's. The last line
printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_gateway.executor import encode_step  # noqa: E402
from edge_gateway.journal import Journal  # noqa: E402
from edgeplane.protocol import StepResult  # noqa: E402

RESULT = StepResult(task="power.ensure", state="succeeded", changed=True,
                    message="powered on (was off)", started_at=1.0, finished_at=2.0)


def measure(journal: Journal, steps: int) -> dict[str, float]:
    """Per step: its start and its end, two commits."""
    journal.accept_plan("r1.shop-0001", b"{}")
    payload = encode_step(RESULT)
    wall, cpu = time.perf_counter(), time.process_time()
    for position in range(steps):
        journal.step_started("r1.shop-0001", "srv-1", position, "power.ensure")
        journal.step_ended("r1.shop-0001", "srv-1", position, "power.ensure", payload)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    journal.close()
    return {"wall_ms_per_step": round(wall / steps * 1e3, 3),
            "cpu_ms_per_step": round(cpu / steps * 1e3, 3)}


class EveryCommit(Journal):
    """A journal whose every commit has one ``synchronous`` level (FULL or NORMAL)."""

    def __init__(self, path: str, level: str) -> None:
        super().__init__(path)
        self._db.execute(f"PRAGMA synchronous={level}")

    @contextlib.contextmanager
    def _synced(self) -> Iterator[None]:
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--folder", default=None, help="where the journal files go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        summary: dict[str, object] = {
            "steps": args.steps,
            "as_the_gateway_does": measure(Journal(f"{folder}/gateway.db"), args.steps),
            "both_fsynced": measure(EveryCommit(f"{folder}/full.db", "FULL"), args.steps),
            "no_fsync": measure(EveryCommit(f"{folder}/normal.db", "NORMAL"), args.steps),
            "memory": measure(Journal(":memory:"), args.steps),
        }
    summary["max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for name in ("as_the_gateway_does", "both_fsynced", "no_fsync", "memory"):
        print(f"{name:12} {summary[name]}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
