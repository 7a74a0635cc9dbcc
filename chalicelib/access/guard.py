"""The two middlewares every request goes through, and the check that every route has its
rule:

- ``authorizer(app)``, first (inside the error mapping only): who is calling (401), and
  whether the route's rule lets their role in (403); the route then runs with the caller
  bound (``identity.current``);
- ``auditor``, last before the route (after the checks of the request's inputs): reads what
  a write is about to change and, once it succeeded, stores its audit records (a batch that
  failed half way: what it wrote before it failed).

``check_routes(app)`` refuses an app with a route missing from the rules, or a write
without an audit recorder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict

from chalice import Chalice, Response
from chalice.app import Request
from pynamodb.exceptions import PynamoDBException

from chalicelib import settings
from chalicelib.access import identity, rules, trail
from chalicelib.access.identity import Caller
from chalicelib.access.incoming import Incoming
from chalicelib.errors import CloudError, Forbidden

LOG = logging.getLogger(__name__)

Middleware = Callable[[Request, Callable[[Request], Response]], Response]


class AuditFailed(CloudError):
    """The write was made; its record is in the log instead (see ``_record``)."""

    status = 500
    code = "audit_failed"
    template = "{what} was done, but its audit record could not be stored ({reason})"


class RouteWithoutRule(CloudError):
    template = "{method} {path} has no role: the API refuses it until it gets one"


def check_routes(app: Chalice) -> None:
    """RuntimeError naming each route of ``app`` without a rule (or a write without an
    audit recorder)."""
    found = rules.problems((method, path) for path, methods in app.routes.items()
                           for method in methods)
    if found:
        raise RuntimeError("; ".join(found))


def authorizer(app: Chalice) -> Middleware:
    def authorize(request: Request, get_response: Callable[[Request], Response]) -> Response:
        if (request.method, request.path) in rules.PUBLIC:  # the console's static files
            return get_response(request)
        caller = identity.resolve(request.headers, request.context or {}, settings.load())
        rule = rules.ROUTES.get((request.method, request.path))
        if rule is None:
            if request.method in app.routes.get(request.path, {}):  # check_routes prevents it
                raise RouteWithoutRule(method=request.method, path=request.path)
        else:
            _authorize(caller, rule, Incoming.of(request))
        bound = identity.bind(caller)
        try:
            return get_response(request)  # a method the path does not have: Chalice's 405
        finally:
            identity.unbind(bound)

    return authorize


def auditor(request: Request, get_response: Callable[[Request], Response]) -> Response:
    rule = rules.ROUTES.get((request.method, request.path))
    recorder = rule.recorder if rule else None
    if recorder is None:
        return get_response(request)
    retention = trail.retention_days(settings.load())  # a bad setting: 503, nothing written
    incoming = Incoming.of(request)
    before = recorder.before(incoming)
    try:
        response = get_response(request)
    except CloudError as exc:
        if recorder.partial:  # what it wrote before it failed
            try:
                _record(identity.current(), incoming, exc.status,
                        recorder.after(incoming, None, before), retention)
            except AuditFailed:
                pass  # logged; the client hears of the error that stopped the write
        raise
    if 200 <= response.status_code < 300 or recorder.partial:
        _record(identity.current(), incoming, response.status_code,
                recorder.after(incoming, response, before), retention)
    return response


def _authorize(caller: Caller, rule: rules.Rule, incoming: Incoming) -> None:
    needed, why = rule.needed(incoming)
    if caller.role is not None and caller.role.allows(needed):
        return
    has = f"has role {caller.role}" if caller.role else "has no Edgeplane role"
    raise Forbidden(reason=f"{incoming.method} {incoming.route} needs role {needed}{why}; "
                           f"principal {caller.name!r} {has}")


def _record(caller: Caller, incoming: Incoming, status: int, changes: list[trail.Change],
            retention: int) -> None:
    if not changes:
        return
    call = trail.Call(caller.name, str(caller.role) if caller.role else None, incoming.method,
                      incoming.route, incoming.path, incoming.request_id, incoming.source_ip)
    try:
        trail.write(call, status, changes, retention)
    except PynamoDBException as exc:
        # The log keeps what the table could not: the same record, for whoever reads them.
        LOG.error("audit record not stored (%s): %s", exc, json.dumps(
            {"call": asdict(call), "changes": [asdict(c) for c in changes]}, default=str)[:20000])
        raise AuditFailed(what=f"{incoming.method} {incoming.path}",
                          reason=type(exc).__name__) from None
