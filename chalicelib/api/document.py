"""``GET /openapi.json``: the API's OpenAPI document (``chalicelib.api.openapi``), built on
its first request.

The document's modules (the response models, their examples, the JSON Schemas) are loaded
then, not with the app: no other route needs them, and every cold start would pay for them.
"""

from __future__ import annotations

from typing import Any

from chalice import Blueprint

routes = Blueprint(__name__)


@routes.route("/openapi.json", methods=["GET"])
def openapi() -> dict[str, Any]:
    from chalicelib.api import openapi  # see the module's docstring

    return openapi.document()
