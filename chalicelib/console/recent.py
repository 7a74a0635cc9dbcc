"""A site's recent executions: its share of each of the newest rollouts it was part of.

Executions are keyed by rollout, so the newest rollouts are read first (a projection of the
rollout table) and the site's execution of each is fetched in one batch."""

from __future__ import annotations

from typing import Any

from chalicelib import views
from chalicelib.models import Execution, Rollout
from chalicelib.rollouts.read import EXECUTION_FIELDS

RECENT = 20


def of_site(site_id: str, count: int = RECENT) -> list[dict[str, Any]]:
    """Newest first: each with its rollout's id, name and start."""
    rollouts = sorted(Rollout.scan(attributes_to_get=["rollout_id", "name", "created_at"]),
                      key=lambda r: r.created_at, reverse=True)[:count]
    by_id = {r.rollout_id: r for r in rollouts}
    found = {e.rollout_id: e for e in Execution.batch_get(
        [(r.rollout_id, site_id) for r in rollouts],
        attributes_to_get=["rollout_id", *EXECUTION_FIELDS])}
    return [{"rollout_id": rid, "rollout_name": by_id[rid].name,
             "rollout_created_at": views.iso(by_id[rid].created_at),
             "execution": views.execution(found[rid])}
            for rid in (r.rollout_id for r in rollouts) if rid in found]
