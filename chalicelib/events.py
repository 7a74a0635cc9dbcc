"""State-change events to EventBridge (moto server locally), for the console and whoever
subscribes. ``docs/events.md`` documents every detail-type.

Events are best effort from the point of view of the store: the state change is written
first, and a failed put is logged, never raised, so an EventBridge outage cannot make
ingestion lose or repeat a state change. The boto3 client is created on first use.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from chalicelib import settings

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

            _client = boto3.client("events", region_name=current.region,
                                   endpoint_url=current.events_endpoint)
            _client_key = key
        return _client, current.event_bus


def emit(detail_type: str, detail: dict[str, Any], resources: list[str] | None = None) -> bool:
    """Put one event; False (and a log line) if EventBridge refused or was unreachable."""
    try:
        client, bus = _events_client()
        answer = client.put_events(Entries=[{
            "Source": SOURCE, "DetailType": detail_type, "EventBusName": bus,
            "Detail": json.dumps(detail, sort_keys=True, default=str),
            "Resources": resources or [],
        }])
    except Exception:  # botocore raises many kinds; none may break the caller
        LOG.exception("event %s not sent", detail_type)
        return False
    if answer.get("FailedEntryCount"):
        LOG.error("event %s refused: %s", detail_type, answer.get("Entries"))
        return False
    return True


def forget_client() -> None:
    """Tests that switch endpoints make the next emit build a new client."""
    global _client, _client_key
    with _lock:
        _client = _client_key = None
