"""A rollout's resolved target: its site ids, in order, stored beside the rollout.

The rollout item holds counters that every advance reads and every batch updates; 10,000
site ids would make it ~150 KB (DynamoDB's limit is 400 KB an item, so 25,000 sites with
longer names could not be created at all). The ids are written in parts of ``PART_SIZE``
under a reference of the create that wrote them, before the rollout item that names it:
a rollout never exists without its target, and two racing creates of one client token
each write their own parts; the winner's rollout names its parts, and a create whose
rollout was not stored (the loser, or one that failed) removes its own (``discard``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from chalicelib.models import Rollout, RolloutTarget

PART_SIZE = 1000  # ids per item: ~15-40 KB


def new_ref() -> str:
    return uuid.uuid4().hex[:12]


def write(rollout_id: str, site_ids: Sequence[str], ref: str | None = None) -> str:
    """Store the ids; the reference the rollout item must carry."""
    ref = ref or new_ref()
    with RolloutTarget.batch_write() as batch:
        for index in range(0, len(site_ids), PART_SIZE):
            batch.save(RolloutTarget(rollout_id, f"{ref}-{index // PART_SIZE:05d}",
                                     site_ids=list(site_ids[index:index + PART_SIZE])))
    return ref


def discard(rollout_id: str, ref: str, count: int) -> None:
    """Remove the parts ``write`` stored (or began to) of ``count`` ids under ``ref``."""
    with RolloutTarget.batch_write() as batch:
        for index in range(0, max(count, 1), PART_SIZE):
            batch.delete(RolloutTarget(rollout_id, f"{ref}-{index // PART_SIZE:05d}"))


def read(rollout: Rollout) -> list[str]:
    """The rollout's site ids, in the target's order."""
    parts = RolloutTarget.query(rollout.rollout_id,
                                RolloutTarget.part.startswith(f"{rollout.target_ref}-"),
                                consistent_read=True)
    return [site_id for part in parts for site_id in part.site_ids]
