"""Fleet-wide readings kept in the store, so that a new process does not start by reading the
whole fleet.

The console's aggregates (the fleet's rows, the newest rollouts' failures and their vendor x
firmware matrix) are computed from every site and machine: seconds for 10,000 sites. An API
process remembers them a while (``cache``), but each new process (every cold start on
Lambda) would pay that read on its first view. So a reading that took longer than
``cache.SLOW_S`` to compute is also saved in the readings table, and the schedule
(``refresh``, every 10 minutes in AWS) computes and saves them again; a process with nothing
in memory answers from the saved reading when it is at most ``MAX_AGE_S`` old, says when it
was taken, and computes a fresh one behind it (the console's next poll has it). A fleet that
reads fast is never saved: it is read directly and always current.

Why not every minute: a renewal scans every site and machine, and DynamoDB bills a scan by
the size of the items it reads, not of what it answers: about 11,000 read units at 10,000
sites, $6 a month every 10 minutes, $60 every minute. API processes that compute a reading
while consoles are open save it too, so it is fresher whenever someone is looking.

A reading is JSON, compressed, cut into parts under DynamoDB's item size. Part 0, the head,
names the reading's generation, its slot and its number of parts; the parts are written into
the slot the head does not point at, then the head is switched to them (only forward in
time), so a reader never mixes two readings: it checks that every part it got is of the
head's generation, and otherwise computes the reading itself.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pynamodb.exceptions import PynamoDBException

from chalicelib.console import cache
from chalicelib.models import Reading, conditional_failed

LOG = logging.getLogger(__name__)

T = TypeVar("T")
MAX_AGE_S = 1800.0  # a saved reading older than this is not used (the schedule renews it)
PART_BYTES = 300_000  # of compressed JSON per item (DynamoDB's limit is 400 KB an item)
SLOT_SPAN = 100_000  # part numbers of slot s: s * SLOT_SPAN + 1, + 2, ...


def as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Kept(Generic[T]):
    """A reading that is saved for the next process: its name in the table, how to compute
    it, and how it goes to JSON and back (as it is, by default)."""

    name: str
    build: Callable[[], T]
    encode: Callable[[T], Any] = as_is
    decode: Callable[[Any], T] = as_is

    def load(self) -> tuple[T, float] | None:
        """The saved reading and when it was taken; None if there is none, it is older than
        ``MAX_AGE_S``, or it cannot be read whole."""
        try:
            found = load(self.name)
            if found is None:
                return None
            data, taken_at = found
            return self.decode(data), taken_at
        except Exception:  # the caller computes the reading instead
            LOG.exception("the saved reading %s could not be used", self.name)
            return None

    def save(self, value: T, taken_at: float) -> None:
        """Save the reading (failures are logged: the next computation saves it again)."""
        try:
            save(self.name, self.encode(value), taken_at)
        except Exception:
            LOG.exception("the reading %s could not be saved", self.name)


def refresh(readings: Iterable[Kept[Any]]) -> dict[str, float]:
    """Compute each reading and save those that took longer than ``cache.SLOW_S``: what the
    schedule runs. Answers how long each took."""
    took: dict[str, float] = {}
    for kept in readings:
        _, started, finished = cache.computed(kept.build, kept)
        took[kept.name] = round(finished - started, 3)
    return took


def save(name: str, data: Any, taken_at: float) -> bool:
    """Save ``data`` as reading ``name`` taken at ``taken_at``; False if a newer one is saved
    already (nothing is replaced then)."""
    packed = zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)
    pieces = [packed[i:i + PART_BYTES] for i in range(0, len(packed), PART_BYTES)] or [b""]
    head = _head(name)
    if head is not None and head.taken_at >= taken_at:
        return False
    slot = 1 - int(head.slot or 0) if head is not None else 0
    generation = secrets.token_hex(8)
    with Reading.batch_write() as batch:
        for number, piece in enumerate(pieces, start=1):
            batch.save(Reading(name, slot * SLOT_SPAN + number, generation=generation,
                               taken_at=taken_at, data=piece))
    new_head = Reading(name, 0, generation=generation, taken_at=taken_at, slot=slot,
                       parts=len(pieces), size=len(packed))
    try:
        new_head.save(condition=Reading.taken_at.does_not_exist()
                      | (Reading.taken_at < taken_at))
    except PynamoDBException as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def load(name: str, max_age: float = MAX_AGE_S) -> tuple[Any, float] | None:
    """(the data, when it was taken) of reading ``name``; None if there is none, it is older
    than ``max_age``, or a part is missing or of another generation (being replaced)."""
    head = _head(name)
    if head is None or time.time() - head.taken_at > max_age:
        return None
    first = int(head.slot or 0) * SLOT_SPAN + 1
    parts = list(Reading.query(name, Reading.part.between(first, first + int(head.parts) - 1),
                               consistent_read=True))
    if len(parts) != int(head.parts) or any(p.generation != head.generation for p in parts):
        return None
    packed = b"".join(part.data or b"" for part in sorted(parts, key=lambda p: p.part))
    return json.loads(zlib.decompress(packed)), float(head.taken_at)


def _head(name: str) -> Reading | None:
    try:
        return Reading.get(name, 0, consistent_read=True)
    except Reading.DoesNotExist:
        return None
