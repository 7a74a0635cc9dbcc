"""What ``GET /health`` answers: 200 while the store and the broker are up, else 503 naming
each part that is down and why.

It is polled (load balancers, monitors, the CLI), so it is cheap: each check is one bounded
request, and the answer is kept ``CHECK_TTL`` seconds per process (per Lambda container):
polls meanwhile get the answer kept, and polls while a check runs wait for its answer.

- the store: a read of a key no site has, on a client of its own (1 s to connect, 2 s to
  answer, no retry), so that a store that does not answer costs the poll 3 s at most;
- the broker: whether the publisher would take a message now
  (``publisher.unavailable``: connected, for MQTT; IoT Core counts as down for a while
  after it failed a publish, as it has no cheaper question to ask).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from chalicelib import __version__, publisher
from chalicelib.errors import CloudError
from edgeplane.protocol import PROTOCOL_VERSION

CHECK_TTL = 5.0  # s an answer is kept
PROBE_KEY = "~health"  # no site id has this shape: the read finds nothing, cheaply


class Unavailable(CloudError):
    status = 503
    code = "unavailable"
    template = "down: {parts}"


_lock = threading.Lock()
_kept: tuple[float, tuple[object, ...], dict[str, str]] | None = None  # when, for what, down
_probes: dict[tuple[object, ...], Any] = {}  # store clients, by endpoint and region


def answer(clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The body of a 200; Unavailable (503) naming what is down."""
    down = check(clock)
    if down:
        raise Unavailable(parts="; ".join(f"the {part} ({why})" for part, why in down.items()))
    return {"ok": True, "version": __version__, "protocol": PROTOCOL_VERSION}


def check(clock: Callable[[], float] = time.monotonic) -> dict[str, str]:
    """{part: why} for each part that is down (empty: all up), at most ``CHECK_TTL`` old."""
    global _kept
    with _lock:
        store = _store_of_the_models()
        try:
            current: publisher.Publisher | None = publisher.current()
            broker_problem = None
        except CloudError as exc:  # not configured: no plan can be sent
            current, broker_problem = None, exc.message
        what = (*store, id(current))
        if _kept is not None and _kept[1] == what and clock() - _kept[0] < CHECK_TTL:
            return dict(_kept[2])
        down: dict[str, str] = {}
        store_problem = _probe_store(*store)
        if store_problem:
            down["store"] = store_problem
        if current is not None:
            broker_problem = publisher.unavailable(current)
        if broker_problem:
            down["broker"] = broker_problem
        _kept = (clock(), what, down)
        return dict(down)


def _store_of_the_models() -> tuple[str | None, str, str]:
    """(endpoint, region, sites table) as the models use them (configured from the
    settings on first use)."""
    from chalicelib.models import Site

    Site._get_connection()  # noqa: SLF001 - what configures the models on first use
    meta = Site.Meta
    return getattr(meta, "host", None), str(getattr(meta, "region", "")), meta.table_name


def _probe_store(endpoint: str | None, region: str, table: str) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError

    if (endpoint, region) not in _probes:
        import boto3
        from botocore.config import Config

        _probes[endpoint, region] = boto3.client(
            "dynamodb", endpoint_url=endpoint, region_name=region,
            config=Config(connect_timeout=1, read_timeout=2,
                          retries={"total_max_attempts": 1}))
    try:
        _probes[endpoint, region].get_item(TableName=table, Key={"site_id": {"S": PROBE_KEY}},
                              ProjectionExpression="site_id")
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return f"{error.get('Code')}: {error.get('Message')}"
    except BotoCoreError as exc:
        return str(exc)
    return None
