"""Routes of the web console: its page and files (no token: they are the same for everyone,
``chalicelib.console.static``), and who the token the page signed in with belongs to."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response

from chalicelib.access import identity
from chalicelib.console import static

routes = Blueprint(__name__)


@routes.route("/console", methods=["GET"])
def page() -> Response:
    return _serve(static.INDEX)


@routes.route("/console/{asset}", methods=["GET"])
def asset(asset: str) -> Response:
    return _serve(asset)


def _serve(name: str) -> Response:
    found = static.find(name)
    if found is None:
        return Response(body=f"no console file {name[:60]!r}\n", status_code=404,
                        headers={**static.HEADERS, "Content-Type": "text/plain; charset=utf-8"})
    headers = routes.current_request.headers
    if static.not_modified(found, headers.get("if-none-match") if headers else None):
        return Response(body="", status_code=304, headers=found.headers())
    return Response(body=found.body, status_code=200, headers=found.headers())


@routes.route("/whoami", methods=["GET"])
def whoami() -> dict[str, Any]:
    """The caller: what the console shows, and which of its actions it offers."""
    caller = identity.current()
    return {"name": caller.name, "role": str(caller.role) if caller.role else None,
            "via": caller.via}
