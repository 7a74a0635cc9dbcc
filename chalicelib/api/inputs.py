"""The middleware that checks a request against its route's row in the contract before the
route runs: the body's size (413), then every path and query parameter (400 naming it).

Bodies are decoded and validated by the routes (``chalicelib.schemas.parse``), under the
limits of ``chalicelib.limits``. A query parameter the route does not take, or one given
twice, is refused like an unknown body field: a typo should not pass silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalice import Response

from chalicelib.api import contract
from chalicelib.api.contract import Operation
from chalicelib.errors import BadRequest, PayloadTooLarge


def middleware(event: Any, get_response: Callable[[Any], Response]) -> Response:
    """Chalice HTTP middleware: refuse what the route's row does not allow, then run it."""
    operation = contract.find(event.method, (event.context or {}).get("resourcePath", ""))
    if operation is not None:  # otherwise Chalice answers 405 (or the route is untabled)
        check(operation, event.raw_body, event.uri_params or {}, event.query_params)
    return get_response(event)


def check(operation: Operation, body: bytes | None, path: Mapping[str, str],
          query: Any) -> None:
    """Raise PayloadTooLarge or BadRequest (InvalidField) for the first problem."""
    size = len(body or b"")
    if size > operation.max_body:
        raise PayloadTooLarge(size=size, route=f"{operation.method} {operation.path}",
                              limit=operation.max_body)
    for param in operation.path_params:
        param.parse(path.get(param.name, ""))
    given = _query(query)
    taken = {param.name: param for param in operation.query}
    unknown = sorted(set(given) - set(taken))
    if unknown:
        allowed = ", ".join(taken) or "none"
        raise BadRequest(f"unknown query parameter(s) {', '.join(map(repr, unknown))}; "
                         f"{operation.method} {operation.path} takes {allowed}")
    for name, param in taken.items():
        values = given.get(name, [])
        if len(values) > 1:
            raise BadRequest(f"query parameter {name!r} is given {len(values)} times; "
                             "give it once")
        if values:
            param.parse(values[0])
        elif param.required:
            raise BadRequest(f"query parameter {name!r} is required")


def _query(query: Any) -> dict[str, list[str]]:
    """Chalice's MultiDict (or None) as name -> every value given."""
    if not query:
        return {}
    return {name: list(query.getlist(name)) for name in query}
