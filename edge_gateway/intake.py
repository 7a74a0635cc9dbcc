"""What the gateway takes in from the cloud, checked before anything acts on it.

A message passes, in order: its topic (one of this site's, cloud to gateway); the contract's
bounds (``parse_json``: size, nesting, encoding); the cloud's signature (``trust``: nothing
in the message is believed before it verifies); the contract's fields (``decode_object``,
which also holds the message to its topic); and, for a plan, what this gateway can run
(known tasks, valid parameters, this site, a maintenance window in a time zone this
machine's database has). Each check raises ProtocolError naming what is
wrong; a refused plan's error names its execution, when it could be read, so the gateway
answers it with a ``rejected`` result (``refused_plan``).
"""

from __future__ import annotations

from typing import Any

from edge_gateway.trust import PlanVerifier
from edgeplane.protocol import (
    Message,
    Plan,
    ProtocolError,
    decode_object,
    excerpt,
    parse_json,
    parse_topic,
)
from edgeplane.windows import WindowError


class Intake:
    """One site's checks on what arrives for it."""

    def __init__(self, site: str, verifier: PlanVerifier) -> None:
        self.site = site
        self.verifier = verifier

    def read(self, topic: str, payload: bytes) -> Message:
        """The message, if it passes every check."""
        site, direction, _ = parse_topic(topic)
        if site != self.site or direction != "down":
            raise ProtocolError(f"topic {excerpt(topic)} is not one this site receives on")
        message = decode_object(self.verifier.verify(self._object(payload)), topic)
        if isinstance(message, Plan):
            self.check_plan(message)
        return message

    def read_journaled(self, payload: bytes, received_at: float) -> Plan:
        """A plan from the journal, checked again as it was when it arrived.

        Its signature is checked at the time the plan was received (one accepted in time
        finishes, however long the gateway was down), against the keys pinned now
        (unpinning a key revokes even plans it signed that have not finished), and the
        plan against what this gateway can run now (a newer config, an older gateway)."""
        data = self.verifier.verify(self._object(payload), now=received_at)
        return self.check_plan(decode_object(data))

    def check_plan(self, message: Message) -> Plan:
        """The plan, if it is one for this site that it can run: known tasks, valid
        parameters, a window whose time zone is known here (a plan held by a zone this
        gateway cannot read would run at the wrong hour: it is refused). The contract's
        decode has checked the rest."""
        if not isinstance(message, Plan):
            raise ProtocolError(f"a {message.KIND} message is not a plan")
        if message.site != self.site:
            raise ProtocolError(f"the plan is for site {message.site}, not {self.site}",
                                kind=Plan.KIND, execution_id=message.execution_id)
        message.check_tasks()
        if message.window is not None:
            try:
                message.window.zone()
            except WindowError as exc:
                raise ProtocolError(f"the plan's maintenance window: {exc}", kind=Plan.KIND,
                                    execution_id=message.execution_id) from None
        return message

    @staticmethod
    def _object(payload: bytes) -> dict[str, Any]:
        data = parse_json(payload)
        if not isinstance(data, dict):
            raise ProtocolError("message is not a JSON object")
        return data


def refused_plan(topic: str, refusal: ProtocolError) -> str | None:
    """The execution to answer with a ``rejected`` result for a refused message: a plan's
    whose execution id could be read, refused on the plan topic; else None (dropped)."""
    try:
        _, _, kind = parse_topic(topic)
    except ProtocolError:
        return None
    if kind == Plan.KIND and refusal.kind == Plan.KIND:
        return refusal.execution_id
    return None
