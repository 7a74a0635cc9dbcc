"""The system event log: read and clear a LogService's entries.

The log is the system's (its LogServices), or its manager's where the system has none
(iDRAC and OpenBMC keep the SEL under the Manager). Among several services we prefer the
SEL (Id or Name "SEL", or LogEntryType "SEL"), then the one called "Log", then the first.
Entries come oldest first: BMCs list them in either order (iDRAC newest first), so they are
sorted by ``Created`` when every entry has one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from edge_gateway.drivers.interfaces import LogEntry, LogsInterface
from edge_gateway.drivers.redfish.documents import Document, link
from edge_gateway.drivers.redfish.service import RedfishService, Refusal
from edge_gateway.drivers.redfish.tables import health_word

LOG = logging.getLogger(__name__)

_CLEAR = "#LogService.ClearLog"


class RedfishLogs(LogsInterface):
    """The preferred LogService of the system, else of its manager."""

    _service: RedfishService

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        with self._service.call("read event log"):
            log_service = _log_service(self._service)
            path = link(log_service, "Entries")
            if not path:
                raise Refusal(f"log service {log_service.get('@odata.id')} has no Entries")
            entries = [_entry(member) for member in self._service.members(path)]
            entries = _oldest_first(entries)
            return entries if limit is None else entries[-limit:] if limit > 0 else []

    def clear_sel(self) -> None:
        with self._service.call("clear event log"):
            log_service = _log_service(self._service)
            target = ((log_service.get("Actions") or {}).get(_CLEAR) or {}).get("target")
            if not target:
                raise Refusal(f"log service {log_service.get('@odata.id')} offers no ClearLog")
            LOG.info("BMC %s: clear %s", self._service.address, log_service.get("@odata.id"))
            # An empty object, not no body: HPE iLO refuses a ClearLog without one.
            self._service.post(target, {})


def offered(service: RedfishService, system: Document) -> bool:
    return bool(_services(service, system))


def _log_service(service: RedfishService) -> Document:
    services = _services(service, service.system().json)
    if not services:
        raise Refusal("neither the system nor its manager has a LogService")
    return min(services, key=_preference)  # min() keeps the first of equals


def _services(service: RedfishService, system: Document) -> list[Document]:
    own = service.optional_members(link(system, "LogServices"))
    if own:
        return own
    for manager in service.manager_paths(system):
        document = service.optional_json(manager)
        theirs = service.optional_members(link(document, "LogServices"))
        if theirs:
            return theirs
    return []


def _preference(service: Document) -> int:
    names = {str(service.get("Id") or "").upper(), str(service.get("Name") or "").upper()}
    if "SEL" in names or service.get("LogEntryType") == "SEL" or \
            any("SEL" in name.split() for name in names):
        return 0
    return 1 if "LOG" in names else 2


def _entry(member: Document) -> LogEntry:
    message = member.get("Message") or member.get("MessageId") or member.get("EntryCode") or ""
    created = member.get("Created")
    return LogEntry(id=str(member.get("Id") or member.get("@odata.id") or ""),
                    created=created if isinstance(created, str) else None,
                    severity=health_word(member.get("Severity")), message=str(message))


def _oldest_first(entries: list[LogEntry]) -> list[LogEntry]:
    stamps = [stamp for stamp in map(_parse, (e.created for e in entries)) if stamp]
    if len(stamps) != len(entries):
        return entries
    return [entries[i] for _, i in sorted(zip(stamps, range(len(entries)), strict=True))]


def _parse(created: str | None) -> datetime | None:
    if not created:
        return None
    try:
        stamp = datetime.fromisoformat(created)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
