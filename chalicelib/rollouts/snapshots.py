"""What is stored of one machine's report: in full, or as its outcome.

An execution is one DynamoDB item, and an item holds 400 KB at most: room for every
machine's outcome (its state and a letter per step) however many machines a plan has (at
most ``protocol.MAX_MACHINES``), not for every step's output of a large site. So:

- ``full``: the report as it came, in the wire's terse form (fields at their default left
  out), with the seq it came with and when it was stored. What an execution keeps of a
  whole result and of progress while the item has room.
- ``outcome``: the machine's state and a letter per step (``protocol.STEP_LETTERS``),
  nothing more. What an execution keeps of a result that came in parts, whose machines are
  stored in full beside it (``ResultPart``: ``part`` says which holds it), and of progress
  that would take the item past its size.

Both read back the same way (``views.machine_result``): a summary is expanded with the
plan's tasks.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from edgeplane import protocol
from edgeplane.protocol import MachineResult


class Form(enum.Enum):
    FULL = "full"
    OUTCOME = "outcome"


def stored(machine: MachineResult, seq: int, now: float, form: Form = Form.FULL,
           part: int | None = None) -> str:
    """The machine's report as the execution item keeps it (JSON)."""
    return json.dumps(report(machine, seq, now, form, part), separators=(",", ":"),
                      default=str)


def report(machine: MachineResult, seq: int, now: float, form: Form = Form.FULL,
           part: int | None = None) -> dict[str, Any]:
    """The machine's report in ``form``, with its ``seq``, when it was stored (``at``) and,
    for a result in parts, which ``part`` holds it in full."""
    if form == Form.FULL:
        body: dict[str, Any] = {
            "state": str(machine.state),
            "steps": [protocol.plain(step) for step in machine.steps]}
        if machine.summary is not None:
            body["summary"] = str(machine.summary)
    else:
        body = {"state": str(machine.state), "summary": letters(machine)}
    body.update(seq=seq, at=now)
    if part is not None:
        body["part"] = part
    return body


def compacted(reports: dict[str, dict[str, Any]], now: float) -> dict[str, str]:
    """Stored reports (``Execution.machine_reports``) as outcomes: what an execution keeps
    when what it holds must shrink. A report that cannot be read is left out."""
    kept = {}
    for machine_id, stored_report in reports.items():
        if "steps" not in stored_report:  # an outcome already
            kept[machine_id] = json.dumps(stored_report, separators=(",", ":"), default=str)
            continue
        try:
            machine = MachineResult.from_dict({**stored_report, "machine": machine_id})
        except protocol.ProtocolError:
            continue
        kept[machine_id] = stored(machine, int(stored_report.get("seq") or 0),
                                  float(stored_report.get("at") or now), Form.OUTCOME)
    return kept


def letters(machine: MachineResult) -> str:
    """A letter per step of the machine: its summary, or its steps summarized."""
    if machine.summary is not None:
        return str(machine.summary)
    return protocol.summarize(machine).summary or ""
