"""What a simulated BMC answers: a ``Reply``, or a ``RedfishError`` with a Base message."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a document, raw bytes, or None for no body
    headers: dict[str, str] = field(default_factory=dict)


class RedfishError(Exception):
    """An error answer in the Redfish format (``error`` with ``@Message.ExtendedInfo``)."""

    def __init__(self, status: int, message_id: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message_id = message_id
        self.message = message
        self.headers = headers or {}

    def reply(self) -> Reply:
        body = {"error": {
            "code": f"Base.1.15.{self.message_id}",
            "message": self.message,
            "@Message.ExtendedInfo": [{
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": f"Base.1.15.{self.message_id}",
                "Message": self.message,
                "Severity": "Critical" if self.status >= 500 else "Warning",
            }],
        }}
        return Reply(self.status, body, dict(self.headers))


def bad_value(prop: str, value: Any, allowed: list[str] | None = None) -> RedfishError:
    text = f"The value {value!r} for the property {prop} is not in the list of acceptable values"
    if allowed is not None:
        text += f" ({', '.join(map(str, allowed))})"
    return RedfishError(400, "PropertyValueNotInList", text + ".")


def not_found(path: str) -> RedfishError:
    return RedfishError(404, "ResourceNotFound", f"The resource at the URI {path} was not found.")


def not_allowed(method: str, path: str) -> RedfishError:
    return RedfishError(405, "OperationNotAllowed",
                        f"The operation {method} is not allowed on {path}.")
