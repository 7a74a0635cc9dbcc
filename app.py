"""Edgeplane's cloud entry point: wiring only. Routes, rules and services live in chalicelib."""

from __future__ import annotations

import gc

# What the imports below create lives as long as the process: the collector, run over a
# hundred times while they load, would find no garbage there, and every cold start would pay
# for it. It resumes once the app is wired (the end of this file).
_collecting = gc.isenabled()
gc.disable()
# ruff: noqa: E402 - the imports follow on purpose

import logging
from typing import Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent, SQSEvent

from chalicelib import commands, errors, ingest, publisher, settings
from chalicelib import health as checks
from chalicelib.access import guard
from chalicelib.api import inputs
from chalicelib.api.audit_trail import routes as audit_routes
from chalicelib.api.console import routes as console_routes
from chalicelib.api.definitions import routes as definition_routes
from chalicelib.api.document import routes as openapi_routes
from chalicelib.api.drift import routes as drift_routes
from chalicelib.api.overview import routes as overview_routes
from chalicelib.api.principals import routes as principal_routes
from chalicelib.api.rollouts import routes as rollout_routes
from chalicelib.api.sites import sites as site_routes
from chalicelib.console import renew
from chalicelib.rollouts import tick

app = Chalice(app_name="edgeplane")
app.log.setLevel(logging.INFO)

# Outermost first: errors wraps the rest, so a refused token or role is mapped like any
# other error. Then who calls and whether their role may (chalicelib/access/rules.py); then
# each request's size, path and query against its route's row (chalicelib/api/contract.py);
# last, the audit of the writes that succeed.
app.register_middleware(errors.middleware, "http")
app.register_middleware(guard.authorizer(app), "http")
app.register_middleware(inputs.middleware, "http")
app.register_middleware(guard.auditor, "http")

app.register_blueprint(site_routes)
app.register_blueprint(rollout_routes)
app.register_blueprint(definition_routes)
app.register_blueprint(drift_routes)
app.register_blueprint(principal_routes)
app.register_blueprint(audit_routes)
app.register_blueprint(openapi_routes)
app.register_blueprint(overview_routes)
app.register_blueprint(console_routes)


# 503 naming the store or the broker when down; checked at most every few seconds.
@app.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return checks.answer()


# Every route needs a role and every write is audited (chalicelib/access/rules.py); an app
# with a route missing from that table does not start.
guard.check_routes(app)
# The store not answering is a 503 that names it, on every route.
errors.store_failures_answer_503(app)


# The queue name is read at import only because `chalice deploy` needs it to wire the
# event source; everything else reads the environment when it runs.
@app.on_sqs_message(queue=settings.ingest_queue_name(), batch_size=10)
def ingest_reports(event: SQSEvent) -> dict[str, Any]:
    # A partial batch response: only the records that failed go back to the queue.
    failed = ingest.handle_sqs_records((record.to_dict()["messageId"], record.body)
                                       for record in event)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


# Timeouts, expiry and windows that opened: what no result will trigger.
@app.schedule(Rate(1, unit=Rate.MINUTES))
def rollout_tick(event: CloudWatchEvent) -> None:
    tick.tick(publisher.current())


# The console's fleet-wide readings, computed again and saved where they are slow to compute,
# so that an API process's first view does not read the whole fleet (chalicelib/console).
# Every 10 minutes: each renewal scans the fleet (at 10,000 sites ~11,000 read units).
@app.schedule(Rate(10, unit=Rate.MINUTES))
def console_readings(event: CloudWatchEvent) -> None:
    renew.renew()


# Commands put on Edgeplane's bus (chalicelib/commands): the rule takes only their source and
# detail types; each is acted on once per event id and answered with an event.
@app.on_cw_event(commands.event_pattern(), name="rollout_commands")
def rollout_commands(event: CloudWatchEvent) -> None:
    commands.handle(event.to_dict(), publisher.current())


# Wired: what exists now lives as long as the process. Frozen, it is left out of the
# collections that requests trigger, which would otherwise walk it every time.
gc.freeze()
if _collecting:
    gc.enable()
