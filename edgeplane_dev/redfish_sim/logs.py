"""Event logs: what the BMC records (power changes, BIOS applied, resets) and ClearLog.

Each system writes to its own first LogService, else to its manager's; clearing a log
leaves one entry saying so, as BMCs do.
"""

from __future__ import annotations

from edgeplane_dev.redfish_sim.resources import Resources
from edgeplane_dev.redfish_sim.system import now


class Logs:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def service_for(self, system: str) -> str | None:
        """The log service a system's events go to."""
        document = self.resources.get_raw(system) or {}
        own = self.resources.members(self.resources.link(document, "LogServices"))
        if own:
            return own[0]
        for manager in self._managers(system):
            theirs = self.resources.members(self.resources.link(
                self.resources.get_raw(manager), "LogServices"))
            if theirs:
                return theirs[0]
        return None

    def _managers(self, system: str) -> list[str]:
        document = self.resources.get_raw(system) or {}
        managed_by = (document.get("Links") or {}).get("ManagedBy") or []
        return [m["@odata.id"] for m in managed_by if isinstance(m, dict) and "@odata.id" in m]

    def record(self, service: str | None, severity: str, message: str) -> None:
        entries = self.resources.link(self.resources.get_raw(service or ""), "Entries")
        if entries is None:
            return
        with self.resources.lock:
            taken = {p.rsplit("/", 1)[-1] for p in self.resources.members(entries)}
            number = max((int(t) for t in taken if t.isdigit()), default=0) + 1
            path = f"{entries}/{number}"
            self.resources.add_member(entries, path, {
                "@odata.type": "#LogEntry.v1_15_0.LogEntry", "@odata.id": path,
                "Id": str(number), "Name": f"Log Entry {number}", "EntryType": "Event",
                "Severity": severity, "Created": now(), "Message": message,
            })

    def clear(self, service: str) -> None:
        entries = self.resources.link(self.resources.get_raw(service), "Entries")
        if entries is None:
            return
        with self.resources.lock:
            for path in self.resources.members(entries):
                self.resources.remove_member(entries, path)
            self.record(service, "OK", "Log cleared")
