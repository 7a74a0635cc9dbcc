"""Reading Redfish documents: links, and the Status words every resource carries."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]


def link(document: Document | None, *keys: str) -> str | None:
    """The ``@odata.id`` under ``document[keys...]``, or None if the BMC has no such link."""
    node: Any = document
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    if isinstance(node, dict):
        node = node.get("@odata.id")
    return node if isinstance(node, str) and node else None


def links(document: Document | None, *keys: str) -> list[str]:
    """The ``@odata.id`` of every element of the list under ``document[keys...]``."""
    node: Any = document
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, list):
        return []
    return [item["@odata.id"] for item in node
            if isinstance(item, dict) and isinstance(item.get("@odata.id"), str)]


def status_health(document: Document | None, rollup: bool = True) -> str | None:
    """``Status.HealthRollup`` (or ``Health``) as the BMC wrote it.

    sushy-tools (and some older firmware) spell the roll-up ``HealthRollUp``.
    """
    status = (document or {}).get("Status")
    if not isinstance(status, dict):
        return None
    if rollup:
        for key in ("HealthRollup", "HealthRollUp"):
            if status.get(key):
                return status[key]
    return status.get("Health")


def status_state(document: Document | None) -> str | None:
    status = (document or {}).get("Status")
    return status.get("State") if isinstance(status, dict) else None
