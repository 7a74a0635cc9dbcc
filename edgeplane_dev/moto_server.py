"""moto server for the local stack, applying one request at a time.

The stack runs it for EventBridge; its DynamoDB is dynalite (``edgeplane_dev/store.py``),
which persists and applies writes atomically by itself. Where moto serves DynamoDB (this
module's own test), the lock below is what makes it atomic.

DynamoDB applies each write atomically: a conditional update sees the item as it is and
either changes it or fails. moto server (5.x) serves requests on threads with no lock around
its backends, so two conditional updates of one item can both pass their condition and two
ADDs can lose one: with 8 writers racing to claim 120 items with the engine's claim, 2 to
7 items were claimed twice (``tests/test_dev_moto_server.py``). The engine's exactly-once
moves and its counters rest on that atomicity, so the local stack runs moto's application
behind one lock. Connections are still served on threads (keep-alive), and moto is one
Python process under one interpreter lock anyway, so serializing the requests costs next
to nothing (that race took 13.3 s serialized, 14.1 s not).

Run it with ``python -m edgeplane_dev.moto_server -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OneRequestAtATime:
    """A WSGI application that runs ``app`` for one request at a time, the answer included
    (a backend may build its body lazily)."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            answer = self.app(environ, start_response)
            try:
                return list(answer)
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs from it
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, OneRequestAtATime(app), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
