"""The fleet at a glance, computed on the server: each site as one row (its presence, its
gateway, its machines' vendors, BMC firmware, health and drift), then counted under filters
(``summary``) or sorted and cut into pages (``sites_page``), so that the browser gets a few
kilobytes whatever the size of the fleet.

One row per site comes from projections of the site and machine tables, the groups'
definitions and the executions of the newest rollouts (which sites are failing). One such
reading serves every view and every poll of this process for a while (``cache``), and is
saved for the next process when it was slow to make (``readings``): the answers say when it
was made (``counted_at``), and the console shows it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from chalicelib.console import cache, readings, store_reads
from chalicelib.definitions.documents import Kind
from chalicelib.models import Definition, Execution, Machine, Rollout, Site
from chalicelib.rollouts.states import FAILED_EXECUTION_STATES
from chalicelib.views import iso

# Online, but what the cloud knows of the site is older than this: its presence or inventory
# (at each connection) and its machines' observations (hourly, for machines with a desired
# state). Twice the hour between a gateway's observations.
STALE_AFTER = 2 * 3600.0
RECENT_ROLLOUTS = 5  # a site failing: its share of one of these failed
NO_VALUE = "(none)"
BMC_FIRMWARE_IDS = ("bmc", "idrac", "ilo", "xcc", "managers")  # how BMCs name their own


@dataclass(frozen=True)
class Filters:
    region: str | None = None
    tag: str | None = None
    group: str | None = None
    vendor: str | None = None
    firmware: str | None = None
    gateway_version: str | None = None

    def as_json(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value is not None}


@dataclass
class SiteRow:
    site_id: str
    name: str | None
    region: str
    tags: list[str]
    online: bool
    last_seen_at: float | None
    gateway_version: str
    desired_gateway: str | None
    groups: list[str] = field(default_factory=list)
    vendors: set[str] = field(default_factory=set)
    firmware: set[str] = field(default_factory=set)
    machines: int = 0
    healthy: int = 0  # reachable at the last inventory, no drift
    with_desired: int = 0
    in_sync: int = 0  # of those with a desired state, observed and not drifted
    drifted: bool = False
    failing: bool = False
    heard_at: float | None = None  # the newest of last_seen_at and its machines' observations

    def stale(self, now: float) -> bool:
        return self.online and (self.heard_at is None or now - self.heard_at > STALE_AFTER)

    def heard(self, at: float | None) -> None:
        if at is not None and (self.heard_at is None or at > self.heard_at):
            self.heard_at = at

    def passes(self, filters: Filters) -> bool:
        return ((filters.region is None or self.region == filters.region)
                and (filters.tag is None or filters.tag in self.tags)
                and (filters.group is None or filters.group in self.groups)
                and (filters.vendor is None or filters.vendor in self.vendors)
                and (filters.firmware is None or filters.firmware in self.firmware)
                and (filters.gateway_version is None
                     or self.gateway_version == filters.gateway_version))

    def as_json(self, now: float) -> dict[str, Any]:
        return {"site_id": self.site_id, "name": self.name, "region": self.region,
                "tags": self.tags, "online": self.online, "stale": self.stale(now),
                "last_seen_at": iso(self.last_seen_at),
                "gateway_version": self.gateway_version,
                "desired_gateway": self.desired_gateway, "machines": self.machines,
                "healthy": self.healthy, "with_desired": self.with_desired,
                "in_sync": self.in_sync, "drifted": self.drifted, "failing": self.failing}


def summary(filters: Filters, now: float | None = None) -> dict[str, Any]:
    """The counts for the sites that pass ``filters``, and each filter's values."""
    now = time.time() if now is None else now
    rows, counted_at = cache.get("fleet", site_rows, FLEET)
    chosen = [row for row in rows if row.passes(filters)]
    return {
        "total": len(chosen),
        "online": sum(row.online for row in chosen),
        "offline": sum(not row.online for row in chosen),
        "stale": sum(row.stale(now) for row in chosen),
        "drifted": sum(row.drifted for row in chosen),
        "failing": sum(row.failing for row in chosen),
        "stale_after_s": STALE_AFTER,
        "counted_at": iso(counted_at),
        "filters": filters.as_json(),
        "facets": {
            "region": _counted(row.region for row in rows),
            "tag": _counted(tag for row in rows for tag in row.tags),
            "group": _counted(group for row in rows for group in row.groups),
            "vendor": _counted(v for row in rows for v in row.vendors),
            "firmware": _counted(f for row in rows for f in row.firmware),
            "gateway_version": _counted(row.gateway_version for row in rows),
        },
    }


SORTS: dict[str, Callable[[SiteRow], Any]] = {
    "site_id": lambda row: row.site_id,
    "last_seen": lambda row: row.last_seen_at or 0.0,
    "gateway_version": lambda row: row.gateway_version,
    "healthy": lambda row: (row.healthy / row.machines if row.machines else 1.0, row.machines),
    "in_sync": lambda row: (row.in_sync / row.with_desired if row.with_desired else 1.0),
}


def sites_page(filters: Filters, sort: str = "site_id", descending: bool = False,
               offset: int = 0, limit: int = 50, now: float | None = None) -> dict[str, Any]:
    """One page of the sites that pass ``filters``, sorted (ties by site id)."""
    now = time.time() if now is None else now
    rows, counted_at = cache.get("fleet", site_rows, FLEET)
    chosen = sorted((row for row in rows if row.passes(filters)),
                    key=lambda row: row.site_id)
    chosen.sort(key=SORTS[sort], reverse=descending)  # stable: ties stay by site id
    return {"total": len(chosen), "counted_at": iso(counted_at), "offset": offset,
            "limit": limit, "sort": sort,
            "order": "desc" if descending else "asc", "filters": filters.as_json(),
            "sites": [row.as_json(now) for row in chosen[offset:offset + limit]]}


def _counted(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def site_rows() -> list[SiteRow]:
    groups = {item.name: frozenset(item.spec.get("tags") or [])
              for item in Definition.query(str(Kind.GROUP), attributes_to_get=["name", "spec"])}
    rows: dict[str, SiteRow] = {}
    for site in store_reads.scan(Site, ["site_id", "name", "region", "tags", "online",
                                        "last_seen_at", "gateway_version",
                                        "desired_gateway"]):
        tags = sorted(site.get("tags") or [])
        desired = store_reads.json_field(site, "desired_gateway") or {}
        rows[site["site_id"]] = SiteRow(
            site["site_id"], site.get("name"), site.get("region") or NO_VALUE, tags,
            bool(site.get("online")), site.get("last_seen_at"),
            site.get("gateway_version") or NO_VALUE,
            desired.get("version") if isinstance(desired, dict) else None,
            sorted(name for name, needed in groups.items() if needed <= set(tags)))
        rows[site["site_id"]].heard(site.get("last_seen_at"))
    for machine in store_reads.scan(Machine, ["site_id", "manufacturer", "observed", "drift",
                                              "desired", "inventory_error", "observed_ts"]):
        row = rows.get(machine["site_id"])
        if row is None:
            continue
        row.heard(machine.get("observed_ts"))
        drifted = bool(store_reads.json_field(machine, "drift"))
        observed = store_reads.json_field(machine, "observed")
        row.machines += 1
        row.vendors.add(machine.get("manufacturer") or NO_VALUE)
        row.firmware.add(bmc_firmware(observed))
        row.drifted = row.drifted or drifted
        row.healthy += not machine.get("inventory_error") and not drifted
        if store_reads.json_field(machine, "desired"):
            row.with_desired += 1
            row.in_sync += not drifted and observed is not None
    for site_id in failing_sites():
        if site_id in rows:
            rows[site_id].failing = True
    return list(rows.values())


_ROW_FIELDS = tuple(f.name for f in fields(SiteRow))
_SET_FIELDS = frozenset({"vendors", "firmware"})


def rows_as_json(rows: list[SiteRow]) -> dict[str, Any]:
    """The rows as a table (field names once, then each row's values): about 150 bytes a
    site before compression."""
    return {"fields": list(_ROW_FIELDS),
            "rows": [[sorted(getattr(row, name)) if name in _SET_FIELDS else getattr(row, name)
                      for name in _ROW_FIELDS] for row in rows]}


def rows_from_json(data: dict[str, Any]) -> list[SiteRow]:
    if tuple(data["fields"]) != _ROW_FIELDS:  # saved by another version of the code
        raise ValueError("the saved rows have other fields")
    rows = []
    for values in data["rows"]:
        row = SiteRow(**dict(zip(_ROW_FIELDS, values, strict=True)))
        row.vendors, row.firmware = set(row.vendors), set(row.firmware)
        rows.append(row)
    return rows


FLEET = readings.Kept("fleet", site_rows, rows_as_json, rows_from_json)


def bmc_firmware(observed: dict[str, Any] | None) -> str:
    """The BMC's own firmware version, from what the machine's BMC last read back."""
    for item in (observed or {}).get("firmware") or []:
        if not isinstance(item, dict):
            continue
        names = f"{item.get('id', '')} {item.get('name', '')}".lower()
        if any(word in names for word in BMC_FIRMWARE_IDS) and item.get("version"):
            return str(item["version"])[:64]
    return NO_VALUE


def newest_rollouts(count: int = RECENT_ROLLOUTS) -> list[str]:
    found = sorted(store_reads.scan(Rollout, ["rollout_id", "created_at"]),
                   key=lambda r: r.get("created_at") or 0, reverse=True)
    return [r["rollout_id"] for r in found[:count]]


def failing_sites() -> set[str]:
    """Sites whose share of one of the newest rollouts failed (timed out, was rejected)."""
    failed = Execution.state.is_in(*FAILED_EXECUTION_STATES)  # the store sends those only
    return {execution["site_id"] for rollout_id in newest_rollouts()
            for execution in store_reads.query(Execution, rollout_id, ["site_id"], failed)}
