"""The cloud's one error root. Each error carries its HTTP status and is mapped to a JSON
response in exactly one place (``to_response``), so every route fails the same way:

    {"error": {"code": "not_found", "message": "site 'shop-1' does not exist"}}

``CloudError`` derives from Chalice's ``ChaliceUnhandledError`` only so that Chalice lets it
propagate out of a view to the middleware that maps it (it would otherwise turn any
exception into its own 500 body).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalice import Response
from chalice.app import ChaliceUnhandledError

LOG = logging.getLogger(__name__)


class CloudError(ChaliceUnhandledError):
    """Raise a subclass with either a ready message or the keyword arguments of its template."""

    status = 500
    code = "internal_error"
    template = "internal error"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.message = message if message is not None else self.template.format(**kwargs)
        self.headers: dict[str, str] = {}
        super().__init__(self.message)


class BadRequest(CloudError):
    status = 400
    code = "bad_request"
    template = "bad request"


class InvalidField(BadRequest):
    template = "field {field!r} is invalid: {reason}"


class Unauthorized(CloudError):
    status = 401
    code = "unauthorized"
    template = "{reason}"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers["WWW-Authenticate"] = 'Bearer realm="edgeplane"'


class NotFound(CloudError):
    status = 404
    code = "not_found"
    template = "{kind} {id!r} does not exist"


class Conflict(CloudError):
    status = 409
    code = "conflict"
    template = "conflict"


class PublishFailed(CloudError):
    """The broker (IoT Core or mosquitto) did not take a message."""

    status = 502
    code = "publish_failed"
    template = "could not publish to {topic!r}: {reason}"


class NotConfigured(CloudError):
    status = 503
    code = "not_configured"
    template = "{setting} is not configured: {consequence}"


class IngestFailed(CloudError):
    """Raised by the SQS consumer so that Lambda returns the batch to the queue."""

    template = "{failed} of {total} messages could not be stored; the batch will be retried"


def to_response(error: CloudError) -> Response:
    """The single mapping from a CloudError to what the client sees."""
    body = {"error": {"code": error.code, "message": error.message}}
    return Response(body=body, status_code=error.status, headers=dict(error.headers))


_CHALICE_CODES = {400: "bad_request", 405: "method_not_allowed", 415: "unsupported_media_type"}


def _from_chalice(response: Response) -> Response:
    """Give Chalice's own error bodies ({"Code", "Message"}: 415, 405, 500...) our shape."""
    body = response.body
    if response.status_code >= 400 and isinstance(body, dict) and set(body) == {"Code",
                                                                                 "Message"}:
        code = "internal_error" if response.status_code >= 500 else _CHALICE_CODES.get(
            response.status_code, "bad_request")
        response.body = {"error": {"code": code, "message": str(body["Message"])}}
    return response


def middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice HTTP middleware: the one place where errors become responses."""
    try:
        return _from_chalice(get_response(event))
    except CloudError as exc:
        if exc.status >= 500:
            LOG.error("%s %s failed: %s", getattr(event, "method", "?"),
                      getattr(event, "path", "?"), exc.message)
        return to_response(exc)

