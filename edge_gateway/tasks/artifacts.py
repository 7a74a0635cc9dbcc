"""The image a step hands its BMC: the origin's URL as the plan gives it, or, when the plan
names the image by digest (``sha256`` and ``size``), the URL of its copy in the site's
artifact cache, fetched and checked first (docs/artifacts.md)."""

from __future__ import annotations

from typing import Any

from edge_gateway.cache.artifact import Artifact
from edge_gateway.errors import GatewayError
from edge_gateway.tasks.context import TaskContext


def image_url(ctx: TaskContext, params: dict[str, Any], per_machine: bool = False) -> str:
    """``params["image"]``, or its LAN URL once the site's cache holds it (``per_machine``:
    under the machine's own name, so its reads can be told apart). GatewayError (a
    CacheError) if it cannot: the download, the digest, no room, no cache."""
    digest, size = params.get("sha256"), params.get("size")
    if digest is None and size is None:
        return str(params["image"])
    if digest is None or size is None:
        raise GatewayError("an image from the site's cache needs both sha256 and size; the "
                           f"step gives only {'sha256' if digest else 'size'}")
    if ctx.artifacts is None:
        raise GatewayError(f"the step names image {digest} by digest, but this gateway has "
                           "no artifact cache (no [cache] in its configuration)")
    artifact = Artifact(digest, params["image"], size)
    ctx.artifacts.ensure(artifact)
    if per_machine:
        return ctx.artifacts.machine_url(artifact, ctx.machine.id)
    return ctx.artifacts.local_url(artifact)
