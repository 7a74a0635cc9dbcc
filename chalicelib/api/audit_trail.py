"""``GET /audit``: who changed what, by site, rollout, principal and time, newest first."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalice import Blueprint

from chalicelib import settings
from chalicelib.access import trail
from chalicelib.errors import BadRequest
from chalicelib.schemas import check_pattern
from edgeplane.protocol import SITE_ID_PATTERN

routes = Blueprint(__name__)

FILTERS = ("site", "rollout", "principal", "since", "until", "limit", "next")
ROLLOUT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PRINCIPAL = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable, no spaces


@routes.route("/audit", methods=["GET"])
def audit() -> dict[str, Any]:
    query = parse_query(routes.current_request.query_params or {})
    page = trail.find(query, trail.retention_days(settings.load()))
    return {"records": [trail.as_json(r) for r in page.records], "next": page.next}


def parse_query(params: Mapping[str, str]) -> trail.Query:
    unknown = sorted(set(params) - set(FILTERS))
    if unknown:
        raise BadRequest(f"unknown filter(s) {', '.join(unknown)}; filters: "
                         f"{', '.join(FILTERS)}")
    site, rollout, principal = params.get("site"), params.get("rollout"), params.get("principal")
    if site is not None:
        check_pattern("site", site, SITE_ID_PATTERN)
    if rollout is not None:
        check_pattern("rollout", rollout, ROLLOUT_ID)
    if principal is not None:
        check_pattern("principal", principal, PRINCIPAL)
    since = trail.parse_time("since", params["since"]) if "since" in params else None
    until = trail.parse_time("until", params["until"]) if "until" in params else None
    if since is not None and until is not None and since > until:
        raise BadRequest("since is after until")
    limit = params.get("limit", str(trail.DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= trail.MAX_LIMIT:
        raise BadRequest(f"limit {limit[:20]!r} must be a whole number, 1-{trail.MAX_LIMIT}")
    following = params.get("next")
    if following is not None and not trail.AT_ID.match(following):
        raise BadRequest(f"next {following[:40]!r} is not a page token this API gave")
    return trail.Query(site=site, rollout=rollout, principal=principal, since=since,
                       until=until, limit=int(limit), next=following)
