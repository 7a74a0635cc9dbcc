"""Unconditional puts of several threads gathered into shared BatchWriteItem requests.

A registration storm brings the machines of many new sites in one ingest batch, each
site's written on a thread of its own (its presence, its machines, then its digests, in
that order). Written a site at a time, 4 machines make a request of their own; gathered,
25 items of several sites make one, and the store and the ingest each spend a fraction
of the per-request work (the signature, the HTTP exchange, the store's parsing) per item.

``put(items)`` returns once the items are stored, or raises what storing them raised (a
site then fails as it would have alone: its batch is tried again). What is gathered is
written as soon as a request's worth waits, or when no thread that could add to it is
still at work: every other one is waiting on ``put`` or has finished (``working()``
wraps each thread's work). No thread waits on a timer, and the site that is alone is
written at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pynamodb.models import Model

ITEMS_PER_REQUEST = 25  # what BatchWriteItem takes


@dataclass
class _Ticket:
    items: Sequence[Model]
    done: bool = False
    error: BaseException | None = None


class SharedBatches:
    """``with batches.working(): ... batches.put(items) ...`` on each thread."""

    def __init__(self, model: type[Model]) -> None:
        self._model = model
        self._changed = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._items = 0
        self._working = 0

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._changed:
            self._working += 1
        try:
            yield
        finally:
            with self._changed:
                self._working -= 1
                due = self._take_due()
            self._write(due)

    def put(self, items: Sequence[Model]) -> None:
        if not items:
            return
        ticket = _Ticket(items)
        with self._changed:
            self._waiting.append(ticket)
            self._items += len(items)
            self._working -= 1
            due = self._take_due()
        try:
            self._write(due)  # this thread writes what is due, its own items among them
            with self._changed:
                while not ticket.done:
                    self._changed.wait()
        finally:
            with self._changed:
                self._working += 1
        if ticket.error is not None:
            raise ticket.error

    def _take_due(self) -> list[_Ticket]:
        """What is to be written now (called holding the lock): all that waits, once it
        fills a request or no thread at work could add to it."""
        if not self._waiting or (self._items < ITEMS_PER_REQUEST and self._working > 0):
            return []
        due, self._waiting, self._items = self._waiting, [], 0
        return due

    def _write(self, due: list[_Ticket]) -> None:
        if not due:
            return
        error: BaseException | None = None
        try:
            with self._model.batch_write() as batch:  # a request each 25 items
                for ticket in due:
                    for item in ticket.items:
                        batch.save(item)
        except BaseException as exc:  # every site of these requests learns it
            error = exc
        with self._changed:
            for ticket in due:
                ticket.done, ticket.error = True, error
            self._changed.notify_all()
