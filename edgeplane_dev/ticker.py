"""The local stand-in for the rollout engine's schedule: ``engine.tick`` every few seconds.

In AWS, ``@app.schedule(Rate(1 minute))`` runs the tick; ``chalice local`` runs no
schedules, so the local stack starts this process with the API's environment. A failing
tick is logged and the next one runs as usual.

Run it with ``python -m edgeplane_dev.ticker --interval 5``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

LOG = logging.getLogger(__name__)


def run(interval: float, stop: threading.Event) -> None:
    from chalicelib import publisher
    from chalicelib.rollouts import tick

    while not stop.wait(interval):
        try:
            counts = tick.tick(publisher.current())
        except Exception:
            LOG.exception("rollout tick failed")
            continue
        if counts["timed_out"] or counts["expired"]:
            LOG.info("tick: %s", counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run(args.interval, stop)


if __name__ == "__main__":
    main()
