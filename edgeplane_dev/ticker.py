"""The local stand-in for the app's schedules: the rollout engine's tick every few seconds,
and the renewal of the console's saved readings every 10 minutes.

In AWS, ``@app.schedule`` runs them (every minute, every 10 minutes); ``chalice local``
runs no schedules, so the local stack starts this process with the API's environment. A
failing run is logged and the next one runs as usual.

Run it with ``python -m edgeplane_dev.ticker --interval 5 --readings-interval 600``.
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


def renew_readings(interval: float, stop: threading.Event) -> None:
    from chalicelib.console import renew

    while not stop.wait(interval):
        try:
            renew.renew()
        except Exception:
            LOG.exception("renewing the console's readings failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between ticks")
    parser.add_argument("--readings-interval", type=float, default=600.0,
                        help="seconds between renewals of the console's readings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    readings = threading.Thread(target=renew_readings, args=(args.readings_interval, stop),
                                name="readings", daemon=True)
    readings.start()
    run(args.interval, stop)
    readings.join(timeout=5)


if __name__ == "__main__":
    main()
