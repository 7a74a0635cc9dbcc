"""Counting what the cloud asks of AWS (DynamoDB, EventBridge), at the client: what a
deployment pays for, whichever store answers (in-process moto here)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from botocore.client import BaseClient


@contextmanager
def counting_requests() -> Iterator[Counter[str]]:
    """The requests sent inside the block, by operation (``UpdateItem``, ``PutEvents``...),
    from every thread."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    send = BaseClient._make_api_call

    def counted(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        with lock:
            counts[operation] += 1
        return send(client, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", counted):
        yield counts
