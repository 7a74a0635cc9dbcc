"""What Edgeplane takes as EventBridge events, and what it answers: the one place that names
the source and detail types (the rule's pattern derives from ``event_pattern``), the
details' schemas (the API's own models inside), and the answer's.

Commands come from ``SOURCE``, never from ``chalicelib.events.SOURCE``: Edgeplane never
takes its own announcements (answers included) for commands.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from chalicelib.api.params import ROLLOUT_ID_PATTERN
from chalicelib.schemas import RolloutIn

SOURCE = "edgeplane.commands"

START = "Start Rollout Requested"
PAUSE = "Pause Rollout Requested"
RESUME = "Resume Rollout Requested"
CANCEL = "Cancel Rollout Requested"

ACCEPTED = "Rollout Command Accepted"
REFUSED = "Rollout Command Refused"

# What a sender may say of who asked (``requested_by``): EventBridge does not check it, so
# it is recorded as the sender's claim, next to the account EventBridge vouches for.
REQUESTER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=,:/-]{0,127}$")
# An EventBridge event id is a UUID; anything of this shape is taken.
EVENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
ACCOUNT_PATTERN = re.compile(r"^[0-9]{12}$")

Requester = Annotated[str, StringConstraints(pattern=REQUESTER_PATTERN.pattern)]
RolloutId = Annotated[str, StringConstraints(pattern=ROLLOUT_ID_PATTERN.pattern)]


class _Detail(BaseModel):
    # Compiled on first use, as the API's bodies are (chalicelib.schemas).
    model_config = ConfigDict(extra="forbid", defer_build=True)

    requested_by: Requester | None = Field(
        default=None, description="who asked, as the sender says (not checked by IAM)")


class StartRollout(_Detail):
    """Start a rollout: `rollout` is the body of POST /rollouts. Without a client_token of
    its own, the event's id is its token: a redelivered event finds the rollout it
    started."""

    rollout: RolloutIn


class RolloutCommand(_Detail):
    """Pause, resume or cancel one rollout, as POST /rollouts/{rollout_id}/<action>."""

    rollout_id: RolloutId


DETAILS: dict[str, type[_Detail]] = {START: StartRollout, PAUSE: RolloutCommand,
                                     RESUME: RolloutCommand, CANCEL: RolloutCommand}
DETAIL_TYPES: tuple[str, ...] = tuple(DETAILS)


class Answer(BaseModel):
    """The answer to one command (an event of it delivered again is answered the same);
    fields that do not apply are left out."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    command_id: str = Field(description="the id of the command's event")
    command: str = Field(description="the command's detail-type")
    outcome: Literal["accepted", "refused"]
    actor: str = Field(description="who the action is recorded as: events:<account>"
                                   "[/<requested_by>]")
    rollout_id: str | None = Field(default=None, description="the rollout acted on, or "
                                   "the one a refused pause, resume or cancel named")
    state: str | None = Field(default=None, description="accepted: the rollout's state "
                              "after the command")
    code: str | None = Field(default=None, description="refused: bad_request, not_found, "
                             "conflict or not_configured, as the API's error codes")
    reason: str | None = Field(default=None, description="refused: why, naming the field "
                               "or what the command found")


def event_pattern() -> dict[str, Any]:
    """The EventBridge pattern of the events Edgeplane acts on: its commands' source and
    detail types (the rule that feeds ``app.py``'s handler; the bus is the deployment's)."""
    return {"source": [SOURCE], "detail-type": list(DETAIL_TYPES)}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each command's detail and of the answer's, by detail-type, as
    ``docs/events.md`` shows them: the API's request bodies are referenced where they sit in
    its OpenAPI document (``GET /openapi.json``) instead of being repeated."""
    schemas = {name: _schema(model) for name, model in DETAILS.items()}
    schemas[ACCEPTED] = schemas[REFUSED] = _schema(Answer)
    return schemas


OPENAPI_REF = "openapi.json#/components/schemas/{model}"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=OPENAPI_REF)
    schema.pop("$defs", None)
    schema["description"] = " ".join(schema.get("description", "").split())  # one line
    return schema
