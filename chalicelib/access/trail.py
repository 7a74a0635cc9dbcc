"""The audit: one record per change made through the API, written after the change and
never updated (no route writes to it but to add records); DynamoDB's TTL removes each one
``EDGEPLANE_AUDIT_RETENTION_DAYS`` (default 400) after it was written.

Every record is keyed by the UTC month it was written in (``bucket``) and ``at_id``
(``<epoch seconds>-<random>``: time order, unique), and the same ``at_id`` orders the three
indexes (by principal, by site, by rollout). So each filter of ``find`` is a query of one
index in time order, newest first, and a page ends at a record whose ``at_id`` is where the
next page starts (``next``): no scan, and no key the caller could forge into another query.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.errors import BadRequest, NotConfigured
from chalicelib.models import AuditRecord
from chalicelib.settings import Settings
from chalicelib.views import iso

DEFAULT_RETENTION_DAYS = 400
MAX_RETENTION_DAYS = 36500
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_EXAMINED = 2000  # records one request reads when a second filter drops some
MAX_PAGE_BYTES = 4_000_000  # a page stays under Lambda's 6 MB answer
MAX_SNAPSHOT_BYTES = 300_000  # before + after of one record; DynamoDB's items hold 400 KB
MAX_SUMMARY_BYTES = 50_000
TTL_LAG = 2 * 86400  # DynamoDB removes expired items within about two days
DAY = 86400
AT_ID = re.compile(r"^\d{10}\.\d{6}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Call:
    """The request a change was made by, as the guard saw it."""

    principal: str
    role: str | None
    method: str
    route: str  # the route's pattern
    path: str
    request_id: str | None = None
    source_ip: str | None = None


@dataclass
class Change:
    """What one write changed: the target, and before/after (definitions, profiles, sites,
    machines) or a summary (the rest)."""

    target_kind: str
    target_id: str
    action: str
    site_id: str | None = None
    rollout_id: str | None = None
    before: Any = None
    after: Any = None
    summary: dict[str, Any] = field(default_factory=dict)


def retention_days(config: Settings) -> int:
    raw = config.audit_retention_days
    if raw is None:
        return DEFAULT_RETENTION_DAYS
    if not raw.isdigit() or not 0 < int(raw) <= MAX_RETENTION_DAYS:
        raise NotConfigured(setting="EDGEPLANE_AUDIT_RETENTION_DAYS",
                            consequence=f"{raw!r} is not a number of days (1-"
                                        f"{MAX_RETENTION_DAYS}); no write is accepted")
    return int(raw)


def at_id(at: float) -> str:
    return f"{at:017.6f}-{secrets.token_hex(6)}"


def bucket_of(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m")


def write(call: Call, status: int, changes: Iterable[Change], retention: int,
          now: float | None = None) -> list[AuditRecord]:
    """Store one record per change (a new key each: nothing is ever overwritten)."""
    now = time.time() if now is None else now
    expires = datetime.fromtimestamp(now, tz=UTC) + timedelta(days=retention)
    records = [AuditRecord(
        bucket_of(now), at_id(now), at=now, principal=call.principal, role=call.role,
        method=call.method, route=call.route, path=call.path[:1000], status=status,
        target_kind=change.target_kind, target_id=change.target_id[:300],
        action=change.action, site_id=change.site_id, rollout_id=change.rollout_id,
        request_id=call.request_id, source_ip=call.source_ip, expires_at=expires,
        **_bounded(change)) for change in changes]
    if len(records) == 1:
        records[0].save(condition=AuditRecord.at_id.does_not_exist())
    elif records:
        with AuditRecord.batch_write() as batch:
            for record in records:
                batch.save(record)
    return records


def _bounded(change: Change) -> dict[str, Any]:
    """before/after as they were, unless too large for one item: then only the summary
    (a definition's diff is in it) and a note saying what was left out."""
    summary = dict(change.summary)
    snapshot = len(json.dumps(change.before)) + len(json.dumps(change.after))
    before, after = change.before, change.after
    if snapshot > MAX_SNAPSHOT_BYTES:
        before = after = None
        summary["snapshot_omitted"] = (f"before and after are {snapshot} bytes (over "
                                       f"{MAX_SNAPSHOT_BYTES}); read the definition instead")
    if len(json.dumps(summary)) > MAX_SUMMARY_BYTES:
        diff = summary.get("diff")
        if isinstance(diff, list):
            summary["diff"] = diff[:200]
            summary["diff_omitted"] = len(diff) - len(summary["diff"])
        if len(json.dumps(summary)) > MAX_SUMMARY_BYTES:
            summary = {"summary_omitted": f"over {MAX_SUMMARY_BYTES} bytes"}
    return {"before": before, "after": after, "summary": summary or None}


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    site: str | None = None
    rollout: str | None = None
    principal: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT
    next: str | None = None  # the at_id the previous page ended at


@dataclass
class Page:
    records: list[AuditRecord]
    next: str | None  # None: nothing older matches


def parse_time(name: str, text: str) -> float:
    """Epoch seconds, or ISO 8601 (``2025-03-01``, ``2025-03-01T09:30:00Z``; UTC unless
    the text gives an offset)."""
    if re.fullmatch(r"\d{1,10}(\.\d{1,6})?", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text) if len(text) <= 40 else None
    except ValueError:
        moment = None
    if moment is None:
        raise BadRequest(f"{name} {text[:40]!r} is not a time: give ISO 8601 "
                         "(2025-03-01T09:30:00Z) or epoch seconds")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def find(query: Query, retention: int, now: float | None = None) -> Page:
    """Records matching every filter, newest first."""
    now = time.time() if now is None else now
    oldest = now - retention * DAY - TTL_LAG  # nothing older is kept
    lower = max(query.since if query.since is not None else oldest, oldest, 0.0)
    upper = min(query.until if query.until is not None else now + DAY, now + DAY)
    low_key, high_key = f"{lower:017.6f}", f"{upper:017.6f}~"
    if query.next is not None and query.next < high_key:
        high_key, upper = query.next, float(query.next.split("-")[0])
    if low_key > high_key:
        return Page([], None)
    records: list[AuditRecord] = []
    size = examined = 0
    for record in _candidates(query, (low_key, high_key), (lower, upper)):
        if record.at_id == query.next:
            continue  # the previous page's last: the range's bounds are inclusive
        examined += 1
        if _matches(record, query):
            size += len(json.dumps(as_json(record)))
            if records and size > MAX_PAGE_BYTES:
                return Page(records, records[-1].at_id)
            records.append(record)
            if len(records) >= query.limit:
                return Page(records, record.at_id)
        if examined >= MAX_EXAMINED:
            return Page(records, record.at_id)
    return Page(records, None)


def _candidates(query: Query, keys: tuple[str, str],
                times: tuple[float, float]) -> Iterator[AuditRecord]:
    """The most selective index's records between the keys, newest first."""
    low_key, high_key = keys
    page = min(query.limit + 1, 100)
    if query.rollout is not None:
        yield from AuditRecord.by_rollout.query(
            query.rollout, AuditRecord.at_id.between(low_key, high_key),
            scan_index_forward=False, page_size=page)
    elif query.site is not None:
        yield from AuditRecord.by_site.query(
            query.site, AuditRecord.at_id.between(low_key, high_key),
            scan_index_forward=False, page_size=page)
    elif query.principal is not None:
        yield from AuditRecord.by_principal.query(
            query.principal, AuditRecord.at_id.between(low_key, high_key),
            scan_index_forward=False, page_size=page)
    else:
        for bucket in _months(*times):
            yield from AuditRecord.query(
                bucket, AuditRecord.at_id.between(low_key, high_key),
                scan_index_forward=False, page_size=page)


def _months(lower: float, upper: float) -> list[str]:
    """The buckets from ``upper``'s month back to ``lower``'s."""
    months, month = [], datetime.fromtimestamp(upper, tz=UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0)
    first = bucket_of(lower)
    while True:
        months.append(month.strftime("%Y-%m"))
        if months[-1] <= first:
            return months
        month = (month - timedelta(days=1)).replace(day=1)


def _matches(record: AuditRecord, query: Query) -> bool:
    return ((query.site is None or record.site_id == query.site)
            and (query.rollout is None or record.rollout_id == query.rollout)
            and (query.principal is None or record.principal == query.principal))


def as_json(record: AuditRecord) -> dict[str, Any]:
    return {"id": record.at_id, "at": iso(record.at), "principal": record.principal,
            "role": record.role, "method": record.method, "route": record.route,
            "path": record.path, "status": int(record.status),
            "target": {"kind": record.target_kind, "id": record.target_id},
            "action": record.action, "site_id": record.site_id,
            "rollout_id": record.rollout_id, "before": record.before, "after": record.after,
            "summary": record.summary, "request_id": record.request_id,
            "source_ip": record.source_ip,
            "expires_at": record.expires_at.isoformat().replace("+00:00", "Z")
            if record.expires_at else None}
