"""Every report the gateway sends fits one message (``protocol.MAX_REPORT_BYTES``), whatever
the number of machines.

A report of more machines than one message holds is split by machine, in order: a result
or an inventory into parts numbered ``part`` of ``parts`` (every machine in exactly one),
progress and observed state into several messages. The machines are never what gives way:
each one's outcome is sent. What may give way is the output of one machine that cannot fit
a message by itself (a read task that found megabytes): its steps lose what read tasks
found (``data``), largest first, then the part of their messages past
``MAX_KEPT_MESSAGE`` characters, until it fits; each such step says what it lost and how
much (``StepResult.trimmed``). An observation that large loses its BIOS attributes, then
its firmware list (the cloud does not judge what is not there), and its ``error`` says so;
an inventory entry has its free text cut, marked where it is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from edgeplane.protocol import (
    MAX_COUNT,
    MAX_MACHINES,
    MAX_REPORT_BYTES,
    Inventory,
    MachineObservation,
    MachineReport,
    MachineResult,
    Message,
    Observed,
    Progress,
    Result,
    StepResult,
    encoded_size,
)

MAX_KEPT_MESSAGE = 1000  # characters of a step's message kept when messages must be cut
MAX_KEPT_TEXT = 1000  # characters of an inventory entry's free text kept when cut

T = TypeVar("T")
Fit = Callable[[T, int], T]


def split_result(result: Result, budget: int = MAX_REPORT_BYTES) -> list[Result]:
    """The messages that carry ``result``: itself if it fits ``budget`` bytes, else its
    parts (ids ``<id>.<part>``), or itself with trimmed output if one message holds it so."""
    return _in_parts(result, fit_machine, budget)


def split_inventory(inventory: Inventory, budget: int = MAX_REPORT_BYTES) -> list[Inventory]:
    """As ``split_result``, for an inventory."""
    return _in_parts(inventory, fit_report, budget)


Parted = TypeVar("Parted", Result, Inventory)


def _in_parts(message: Parted, fit: Callable[..., Any], budget: int) -> list[Parted]:
    """``message`` itself if it fits, else numbered parts that each carry some machines."""
    if len(message.encode()) <= budget:
        return [message]
    widest = replace(message, machines=[], id=f"{message.id}.{MAX_MACHINES}",
                     part=MAX_MACHINES, parts=MAX_MACHINES)
    groups = group_machines(widest, message.machines, fit, budget)
    if len(groups) == 1:
        return [replace(message, machines=groups[0])]
    return [replace(message, id=f"{message.id}.{number}", machines=group, part=number,
                    parts=len(groups)) for number, group in enumerate(groups, start=1)]


def split_observed(observed: Observed, budget: int = MAX_REPORT_BYTES) -> list[Observed]:
    """The messages that carry ``observed``: each complete for its machines (the cloud
    judges each machine on its own), ids ``<id>.<n>`` when there are several."""
    if len(observed.encode()) <= budget:
        return [observed]
    widest = replace(observed, machines=[], id=f"{observed.id}.{MAX_MACHINES}")
    groups = group_machines(widest, observed.machines, fit_observation, budget)
    if len(groups) == 1:
        return [replace(observed, machines=groups[0])]
    return [replace(observed, id=f"{observed.id}.{number}", machines=group)
            for number, group in enumerate(groups, start=1)]


def progress_groups(progress: Progress, budget: int = MAX_REPORT_BYTES
                    ) -> list[list[MachineResult]]:
    """The machines of ``progress`` in groups that each fit one progress message, whatever
    ``seq`` it is given (each message of a batch takes a seq of its own)."""
    widest = replace(progress, machines=[], seq=MAX_COUNT)
    return group_machines(widest, progress.machines, fit_machine, budget)


def group_machines(widest: Message, machines: Sequence[T], fit: Fit[T],
                   budget: int) -> list[list[T]]:
    """``machines`` in order, each fitted (``fit``) to what a message leaves them, in as few
    groups as fit ``budget`` bytes each. ``widest``: the message with no machine, its numbers
    and id as long as they can be, so that the sizes are bounds."""
    overhead = len(widest.encode())  # with "machines": [] in it
    room = budget - overhead
    if room <= 0:
        raise ValueError(f"a {widest.KIND} message is {overhead} bytes with no machine; "
                         f"over the report budget of {budget} bytes")
    groups: list[list[T]] = [[]]
    used = overhead
    for machine in machines:
        fitted = fit(machine, room)
        size = encoded_size(fitted)
        if groups[-1] and used + 1 + size > budget:  # 1: the comma before it
            groups.append([])
            used = overhead
        used += size + (1 if groups[-1] else 0)
        groups[-1].append(fitted)
    return groups


# --- one machine within what a message leaves it -------------------------------------------


def fit_machine(machine: MachineResult, room: int) -> MachineResult:
    """The machine's result within ``room`` bytes: as it is if it fits; else without what
    its read tasks found, largest first, then with its messages cut, longest first, until
    it fits. The outcome (state, summary, every step's task and state) is always kept."""
    size = encoded_size(machine)
    if size <= room:
        return machine
    steps = list(machine.steps)
    for trim in (_without_data, _with_short_message):
        for index in sorted(range(len(steps)), key=lambda i: -_output_size(steps[i])):
            if size <= room:
                break
            trimmed = trim(steps[index])
            if trimmed is not None:
                size += encoded_size(trimmed) - encoded_size(steps[index])
                steps[index] = trimmed
    if size > room:
        raise ValueError(f"machine {machine.machine}: its result is {size} bytes with every "
                         f"step's output trimmed; over the {room} bytes a message leaves it")
    return replace(machine, steps=steps)


def _output_size(step: StepResult) -> int:
    return (encoded_size(step.data) if step.data is not None else 0) + len(step.message)


def _without_data(step: StepResult) -> StepResult | None:
    if step.data is None:
        return None
    return replace(step, data=None, trimmed={**(step.trimmed or {}),
                                             "data": encoded_size(step.data)})


def _with_short_message(step: StepResult) -> StepResult | None:
    if len(step.message) <= MAX_KEPT_MESSAGE:
        return None
    kept = step.message[:MAX_KEPT_MESSAGE - 3] + "..."
    lost = len(step.message) - (MAX_KEPT_MESSAGE - 3)
    return replace(step, message=kept, trimmed={**(step.trimmed or {}), "message": lost})


def fit_observation(observation: MachineObservation, room: int) -> MachineObservation:
    """The observation within ``room`` bytes: without its BIOS attributes, then its firmware
    list, if it must; ``error`` says what was left out (the cloud judges neither then)."""
    for name in ("bios", "firmware", "boot"):
        if encoded_size(observation) <= room:
            break
        value = getattr(observation, name)
        if value is None:
            continue
        note = f"{name} left out: {encoded_size(value)} bytes, over what one report holds"
        error = f"{observation.error}; {note}" if observation.error else note
        left_out: dict[str, Any] = {name: None, "error": _cut(error, MAX_KEPT_TEXT)}
        observation = replace(observation, **left_out)
    if encoded_size(observation) > room:
        raise ValueError(f"machine {observation.machine}: its observation does not fit the "
                         f"{room} bytes a message leaves it")
    return observation


def fit_report(report: MachineReport, room: int) -> MachineReport:
    """The inventory entry within ``room`` bytes: its free text (what the BMC said it is)
    cut to ``MAX_KEPT_TEXT`` characters where longer, marked where it is cut."""
    if encoded_size(report) <= room:
        return report
    cut: dict[str, Any] = {name: _cut(value, MAX_KEPT_TEXT) for name in
           ("address", "manufacturer", "model", "serial", "error")
           if isinstance(value := getattr(report, name), str) and len(value) > MAX_KEPT_TEXT}
    report = replace(report, **cut)
    if encoded_size(report) > room:
        raise ValueError(f"machine {report.id}: its inventory does not fit the {room} bytes "
                         "a message leaves it")
    return report


def _cut(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    mark = f" [trimmed: {len(text)} characters]"
    return text[:limit - len(mark)] + mark
