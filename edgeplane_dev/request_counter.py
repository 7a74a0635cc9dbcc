"""Counts the requests the local stack's cloud processes send to the store and to
EventBridge, at the client, whichever server answers them.

botocore reports every request it sends when client-side monitoring is on
(``AWS_CSM_ENABLED=true``): each attempt is one small JSON datagram over UDP to
``AWS_CSM_HOST:AWS_CSM_PORT``. A stack asked to count (``LocalStack(count_requests=True)``)
sets those variables for the API, the bridge and the ticker and runs this counter, which
sums the attempts per service and operation and rewrites a JSON file with the sums a few
times a second: ``{"total": N, "services": {"DynamoDB": N, ...}, "operations":
{"DynamoDB.UpdateItem": N, ...}}``. Counting at the clients needs nothing of the server, and
counts what a deployment would pay for.

Run it with ``python -m edgeplane_dev.request_counter --port P --output FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgeplane_dev.ports import LOOPBACK

RECEIVE_BUFFER = 8 << 20  # bursts of datagrams wait here while the counter writes its file
WRITE_INTERVAL = 0.2


def monitoring_env(port: int) -> dict[str, str]:
    """The environment that makes botocore report each request to a counter on ``port``."""
    return {"AWS_CSM_ENABLED": "true", "AWS_CSM_HOST": LOOPBACK, "AWS_CSM_PORT": str(port)}


def read_counts(path: Path) -> dict[str, Any]:
    """What the counter wrote last; zeros before it wrote anything."""
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"total": 0, "services": {}, "operations": {}}
    return data


def serve(port: int, output: Path, stop: threading.Event) -> None:
    """Count the datagrams arriving on ``port`` into ``output`` until ``stop`` is set."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except OSError:
        pass  # the kernel's default then
    sock.bind((LOOPBACK, port))
    sock.settimeout(WRITE_INTERVAL)
    operations: Counter[str] = Counter()
    written: Counter[str] | None = None
    last_write = 0.0
    with sock:
        while not stop.is_set():
            try:
                _count(sock.recv(65536), operations)
            except TimeoutError:
                pass
            now = time.monotonic()
            if now - last_write >= WRITE_INTERVAL and operations != written:
                _write(output, operations)
                written, last_write = Counter(operations), now
    _write(output, operations)


def _count(datagram: bytes, operations: Counter[str]) -> None:
    try:
        event = json.loads(datagram)
    except ValueError:
        return
    # botocore sends one ApiCall per call and one ApiCallAttempt per request on the wire
    # (a retried call is several): the store serves attempts.
    if isinstance(event, dict) and event.get("Type") == "ApiCallAttempt":
        operations[f"{event.get('Service')}.{event.get('Api')}"] += 1


def _write(output: Path, operations: Counter[str]) -> None:
    services: Counter[str] = Counter()
    for operation, count in operations.items():
        services[operation.split(".", 1)[0]] += count
    data = {"total": sum(operations.values()), "services": dict(sorted(services.items())),
            "operations": dict(sorted(operations.items()))}
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, output)  # a reader sees the old sums or the new, never half


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="UDP port on 127.0.0.1")
    parser.add_argument("--output", type=Path, required=True, help="the JSON file written")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(args.port, args.output, stop)


if __name__ == "__main__":
    main()
