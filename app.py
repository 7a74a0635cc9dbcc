"""Edgeplane's cloud entry point: wiring only. Routes, rules and services live in chalicelib."""

from __future__ import annotations

import logging
from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent, SQSEvent

from chalicelib import __version__, auth, errors, ingest, publisher, settings
from chalicelib.api.definitions import routes as definition_routes
from chalicelib.api.drift import routes as drift_routes
from chalicelib.api.rollouts import routes as rollout_routes
from chalicelib.api.sites import sites as site_routes
from chalicelib.rollouts import tick
from edgeplane.protocol import PROTOCOL_VERSION

app = Chalice(app_name="edgeplane")
app.log.setLevel(logging.INFO)

# Outermost first: errors wraps auth, so a refused token is mapped like any other error.
app.register_middleware(errors.middleware, "http")
app.register_middleware(auth.middleware, "http")

app.register_blueprint(site_routes)
app.register_blueprint(rollout_routes)
app.register_blueprint(definition_routes)
app.register_blueprint(drift_routes)


@app.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"ok": True, "version": __version__, "protocol": PROTOCOL_VERSION}


# The queue name is read at import only because `chalice deploy` needs it to wire the
# event source; everything else reads the environment when it runs.
@app.on_sqs_message(queue=settings.ingest_queue_name(), batch_size=10)
def ingest_reports(event: SQSEvent) -> None:
    ingest.handle_sqs_records(record.body for record in event)


# Timeouts, expiry and windows that opened: what no result will trigger.
@app.schedule(Rate(1, unit=Rate.MINUTES))
def rollout_tick(event: CloudWatchEvent) -> None:
    tick.tick(publisher.current())
