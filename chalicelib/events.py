"""State-change events to EventBridge (moto server locally), for the console and whoever
subscribes. ``docs/events.md`` documents every detail-type.

Events are best effort from the point of view of the store: the state change is written
first, and a failed put is logged, never raised, so an EventBridge outage cannot make
ingestion lose or repeat a state change. The boto3 client is created on first use; its
PutEvents go on the wire (``store_wire.EVENTBRIDGE``) unless the settings say botocore.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from chalicelib import settings, store_wire

LOG = logging.getLogger(__name__)

SOURCE = "edgeplane"

_lock = threading.Lock()
_client: Any = None
_client_key: tuple[str | None, str] | None = None


def _events_client() -> tuple[Any, str]:
    global _client, _client_key
    current = settings.load()
    key = (current.events_endpoint, current.region)
    with _lock:
        if _client is None or _client_key != key:
            import boto3

            client = boto3.client("events", region_name=current.region,
                                  endpoint_url=current.events_endpoint)
            _client = store_wire.WireClient(client, store_wire.EVENTBRIDGE) \
                if current.store_client == "wire" else client
            _client_key = key
        return _client, current.event_bus


PUT_AT_ONCE = 10  # entries EventBridge takes in one PutEvents


def emit(detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> bool:
    """Put one event; False (and a log line) if EventBridge refused or was unreachable."""
    return _put([_entry(detail_type, detail, resources)])


class Outbox:
    """Events gathered while a batch is handled, put ``PUT_AT_ONCE`` to a request when the
    batch ends (``with Outbox() as outbox``): a reconnect storm announces thousands of sites,
    one request for each ten instead of one each."""

    def __init__(self) -> None:
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, detail_type: str, detail: dict[str, Any],
             resources: list[str] | None = None) -> None:
        with self._lock:
            self._entries.append(_entry(detail_type, detail, resources))

    def flush(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
        for start in range(0, len(entries), PUT_AT_ONCE):
            _put(entries[start:start + PUT_AT_ONCE])

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


def _entry(detail_type: str, detail: dict[str, Any],
           resources: list[str] | None) -> dict[str, Any]:
    return {"Source": SOURCE, "DetailType": detail_type,
            "Detail": json.dumps(detail, sort_keys=True, default=str),
            "Resources": resources or []}


def _put(entries: list[dict[str, Any]]) -> bool:
    kinds = ", ".join(sorted({entry["DetailType"] for entry in entries}))
    try:
        client, bus = _events_client()
        # botocore's own entry point, which the wire client stands in for.
        answer = client._make_api_call("PutEvents", {"Entries": [
            {**entry, "EventBusName": bus} for entry in entries]})
    except Exception:  # botocore raises many kinds; none may break the caller
        LOG.exception("%d event(s) %s not sent", len(entries), kinds)
        return False
    if answer.get("FailedEntryCount"):
        LOG.error("event(s) %s refused: %s", kinds, answer.get("Entries"))
        return False
    return True


def forget_client() -> None:
    """Tests that switch endpoints make the next emit build a new client."""
    global _client, _client_key
    with _lock:
        _client = _client_key = None
