"""A final result that came in parts (``protocol.Result.part``): what each part stores, and
when the execution has them all.

Parts come at least once and in any order, and one may come again after its execution
finished. So each part is stored twice over, and both writes are idempotent:

- its machines in full, in a ``ResultPart`` item of their own (execution, seq, part),
  written only if there is none (``store``): a part delivered again changes nothing;
- on the execution, in the conditional update ``reports`` makes of it: the part's entry
  (``entry``) added to the set ``Execution.result_parts``; adding it again changes
  nothing.

The writer whose update leaves the set holding every part of its seq (``complete``)
finishes the execution, with a conditional move as for a whole result that stores every
machine's outcome, read back from the parts (``outcomes``): however many writers see the
set complete, the move happens once; a crash between the two is mended when a part comes
again (the set is complete, the move not yet made). Whether a failure
may be retried is decided on every part (``retryable``): each entry says what failed in
its part.
"""

from __future__ import annotations

import json
import logging

from pynamodb.exceptions import PutError

from chalicelib.models import ResultPart, conditional_failed
from chalicelib.rollouts import snapshots
from chalicelib.rollouts.snapshots import Form
from edgeplane.protocol import MachineResult, ProtocolError, Result, StepState

LOG = logging.getLogger(__name__)

NO_FAILURE = "ok"
RETRYABLE = "retryable"  # every failed step of the part may pass if tried again
FINAL = "final"  # a failed step of the part would fail again


def entry(part: Result) -> str:
    """What the execution keeps of a part it applied: "<seq>:<part>:<failures>"."""
    return f"{part.seq}:{part.part}:{failures(part.machines)}"


def failures(machines: list[MachineResult]) -> str:
    failed = [step for machine in machines for step in machine.steps
              if step.state in (StepState.FAILED, StepState.UNCERTAIN)]
    if not failed:
        return NO_FAILURE
    # An uncertain step may have acted: only an operator may run it again.
    return RETRYABLE if all(step.state == StepState.FAILED and step.retryable is True
                            for step in failed) else FINAL


def _of_seq(entries: set[str], seq: int) -> dict[int, str]:
    """The parts applied of the result numbered ``seq``: part -> its failures."""
    found = {}
    for text in entries:
        entry_seq, _, rest = text.partition(":")
        part, _, outcome = rest.partition(":")
        if entry_seq == str(seq) and part.isdigit():
            found[int(part)] = outcome
    return found


def complete(entries: set[str], seq: int, parts: int) -> bool:
    """True when every part of the result numbered ``seq``, 1 to ``parts``, has been
    applied."""
    return set(range(1, parts + 1)) <= set(_of_seq(entries, seq))


def retryable(entries: set[str], seq: int) -> bool:
    """True when the result failed only in steps that may pass if tried again."""
    outcomes = set(_of_seq(entries, seq).values())
    return RETRYABLE in outcomes and FINAL not in outcomes


def store(rollout_id: str, site_id: str, parts: list[Result],
          machines: list[list[MachineResult]], now: float) -> None:
    """Each part's machines (``machines``, in the parts' order), in full, in its own item,
    unless it is stored already (a conditional put each)."""
    for part, valid in zip(parts, machines, strict=True):
        item = ResultPart(
            part.execution_id, ResultPart.key(part.seq, part.part or 0),
            rollout_id=rollout_id, site_id=site_id, seq=part.seq, part=part.part,
            parts=part.parts, stored_at=now,
            machines={m.machine: snapshots.report(m, part.seq, now) for m in valid})
        try:
            item.save(condition=ResultPart.part_key.does_not_exist())
        except PutError as exc:
            if not conditional_failed(exc):
                raise


def outcomes(execution_id: str, seq: int, now: float) -> dict[str, str]:
    """Every machine of the result numbered ``seq``, as its execution keeps it: its
    outcome, naming the part that holds it in full (``snapshots``)."""
    found: dict[str, str] = {}
    for item in ResultPart.query(execution_id, ResultPart.part_key.startswith(
            ResultPart.key(seq)), consistent_read=True):
        for machine_id, report in (item.machines or {}).items():
            try:
                machine = MachineResult.from_dict({**report, "machine": machine_id})
            except ProtocolError as exc:  # stored by this code from a decoded report
                LOG.error("execution %s: part %s: machine %s unreadable: %s", execution_id,
                          item.part, machine_id, exc)
                continue
            found[machine_id] = json.dumps(
                snapshots.report(machine, seq, now, Form.OUTCOME, part=int(item.part)),
                separators=(",", ":"))
    return found
