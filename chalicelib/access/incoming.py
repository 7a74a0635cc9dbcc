"""A request as the guard, the role rules and the audit see it: read once, parsed once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from chalice.app import Request

MAX_BODY = 6 * 1024 * 1024  # Lambda's own limit on a request

@dataclass
class Incoming:
    method: str
    route: str  # the route's pattern, e.g. /sites/{site_id}
    path: str  # as called
    params: dict[str, str]
    request: Request

    @classmethod
    def of(cls, request: Request) -> Incoming:
        context = request.context or {}
        return cls(request.method, request.path, str(context.get("path") or request.path),
                   dict(request.uri_params or {}), request)

    @cached_property
    def body(self) -> Any:
        """The JSON body, or None when it is not JSON or larger than a Lambda takes (the
        route then refuses it; a role decided on the body takes None as the strictest)."""
        raw = self.request.raw_body or b"null"
        if len(raw) > MAX_BODY:
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    @property
    def request_id(self) -> str | None:
        value = (self.request.context or {}).get("requestId")
        return str(value)[:100] if value else None

    @property
    def source_ip(self) -> str | None:
        value = ((self.request.context or {}).get("identity") or {}).get("sourceIp")
        return str(value)[:100] if value else None
