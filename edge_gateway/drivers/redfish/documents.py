"""Reading Redfish documents: links, and the Status words every resource carries."""

from __future__ import annotations

import sys
from typing import Any

Document = dict[str, Any]

# String values up to this long are shared too (states, types, links); longer ones are
# free text, rarely the same twice.
SHARED_VALUE_LENGTH = 64


def shared_names(pairs: list[tuple[str, Any]]) -> Document:
    """A JSON object whose names, and short string values, are the very strings of the
    documents parsed before (``json.loads(text, object_pairs_hook=shared_names)``).

    Machines of one model send the same names, states and links in every document: parsed
    this way, a site's ComputerSystem documents held at once take half the memory (see
    BENCHMARKS.md, "Memory"). An interned string lives only as long as something refers to
    it, so a BMC's odd strings do not stay behind."""
    return {sys.intern(key): sys.intern(value)
            if type(value) is str and len(value) <= SHARED_VALUE_LENGTH else value
            for key, value in pairs}


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
