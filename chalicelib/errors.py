"""The cloud's one error root. Each error carries its HTTP status and is mapped to a JSON
response in exactly one place (``to_response``), so every route fails the same way:

    {"error": {"code": "not_found", "message": "site 'shop-1' does not exist"}}

``CloudError`` derives from Chalice's ``ChaliceUnhandledError`` only so that Chalice lets it
propagate out of a view to the middleware that maps it (it would otherwise turn any
exception into its own 500 body).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from chalice import Chalice, Response
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


class PayloadTooLarge(CloudError):
    status = 413
    code = "payload_too_large"
    template = "the request body is {size} bytes; {route} takes at most {limit}"


class Unauthorized(CloudError):
    status = 401
    code = "unauthorized"
    template = "{reason}"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers["WWW-Authenticate"] = 'Bearer realm="edgeplane"'


class Forbidden(CloudError):
    """Authenticated, but the principal's role is below what the route needs."""

    status = 403
    code = "forbidden"
    template = "{reason}"


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


class StoreUnavailable(CloudError):
    """The store did not answer (or said "not now"): nothing is wrong with the request."""

    status = 503
    code = "store_unavailable"
    template = "the store does not answer ({reason}); try again shortly"


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
    except Exception as exc:  # a middleware's (the authorizer's) reading of the store
        unavailable = _as_store_unavailable(exc)
        if unavailable is None:
            raise
        LOG.error("%s %s failed: %s", getattr(event, "method", "?"),
                  getattr(event, "path", "?"), unavailable.message)
        return to_response(unavailable)


def store_failures_answer_503(app: Chalice) -> None:
    """Every route of ``app`` answers 503 naming the store when the store does not answer.

    Chalice turns whatever else a view raises into a bare 500 before any middleware sees it,
    so each view is wrapped: the store's failure becomes StoreUnavailable (a CloudError,
    which reaches ``middleware``). Call it once every route is registered.
    """
    for methods in app.routes.values():
        for entry in methods.values():
            entry.view_function = _store_failure_as_503(entry.view_function)


def _store_failure_as_503(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except CloudError:
            raise
        except Exception as exc:
            unavailable = _as_store_unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    return wrapped


def _as_store_unavailable(exc: Exception) -> StoreUnavailable | None:
    from chalicelib.availability import store_unavailable

    reason = store_unavailable(exc)
    return None if reason is None else StoreUnavailable(reason=reason)

