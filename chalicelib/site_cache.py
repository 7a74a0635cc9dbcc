"""A site's artifact cache as its gateway last reported it (the ``cache`` message,
docs/artifacts.md): stored on the site's record, shown by ``edgeplane sites show``."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from chalicelib.models import Site, update_returning
from edgeplane.protocol import CacheStatus

LOG = logging.getLogger(__name__)

FIELDS = ("artifacts", "bytes", "max_bytes", "hits", "downloads", "wire_bytes",
          "served_requests", "served_bytes", "evictions")
MAX_CLOCK_AHEAD = 300.0  # as for presence: a report from a clock far ahead cannot pin it


def on_cache(message: CacheStatus, now: float) -> None:
    """Keep the report unless a later one (by the gateway's ``ts``) is stored; a site with
    no record is not created by it (its presence does that)."""
    at = min(message.ts, now + MAX_CLOCK_AHEAD)
    fields = asdict(message)
    report: dict[str, Any] = {name: fields[name] for name in FIELDS}
    report["reported_at"] = at
    newer = Site.site_id.exists() & (Site.cache_ts.does_not_exist() | (Site.cache_ts < at))
    if update_returning(Site(message.site), [Site.cache.set(report), Site.cache_ts.set(at)],
                        newer, values="NONE") is None:
        LOG.info("site %s: kept the stored cache report (later, or no such site)",
                 message.site)
