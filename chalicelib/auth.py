"""Bearer-token authentication for every route.

One shared operator token (EDGEPLANE_API_TOKEN) for now; per-operator identities can replace
``check`` later without touching a route. Without a configured token the API refuses all
requests (503) rather than running open.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from chalice import Response

from chalicelib import settings
from chalicelib.errors import NotConfigured, Unauthorized

SCHEME = "bearer"


def check(headers: Mapping[str, str], expected: str | None) -> None:
    """Raise unless ``headers`` carry ``Authorization: Bearer <expected>``."""
    if not expected:
        raise NotConfigured(setting="EDGEPLANE_API_TOKEN",
                            consequence="the API refuses every request until it is set")
    header = headers.get("authorization")
    if not header:
        raise Unauthorized(reason="missing Authorization header; send "
                                  "'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not token.strip():
        raise Unauthorized(reason="Authorization header must be 'Bearer <token>'")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized(reason="invalid bearer token")


def middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice HTTP middleware: authenticate, then run the route."""
    check(event.headers, settings.load().api_token)
    return get_response(event)
