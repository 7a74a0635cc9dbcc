"""A running plan pins the artifacts its steps name: none of them is evicted before the
plan ends (a machine may still be installing from an image another step fetched)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from edgeplane.protocol import SHA256_PATTERN, Plan

if TYPE_CHECKING:
    from edge_gateway.cache.site import SiteCache


def plan_artifacts(plan: Plan) -> set[str]:
    """The digests of the artifacts the plan's steps name (``sha256`` parameters)."""
    found = set()
    for step in plan.steps:
        digest = step.params.get("sha256") if isinstance(step.params, dict) else None
        if isinstance(digest, str) and SHA256_PATTERN.fullmatch(digest):
            found.add(digest)
    return found


@contextmanager
def pinned(cache: SiteCache | None, plan: Plan) -> Iterator[None]:
    """Keep the plan's artifacts in ``cache`` while the block runs."""
    digests = plan_artifacts(plan) if cache is not None else set()
    if cache is None or not digests:
        yield
        return
    holder = f"plan:{plan.execution_id}"
    cache.store.pin(holder, digests)
    try:
        yield
    finally:
        cache.store.release(holder)
