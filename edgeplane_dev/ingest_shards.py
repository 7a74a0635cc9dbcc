"""Ingest in several processes, each owning a share of the sites.

In AWS every SQS batch runs in a Lambda of its own, hundreds at once. The local bridge is
one Python process, and the ingest path (botocore building, signing and parsing each
request; the contract's checks) is bound by its GIL. ``ShardedIngest`` is a batch handler
for the bridge that hands each batch's messages to ``processes`` ingest processes by the
site they come from (a stable hash of the site id): the bridge keeps the MQTT session, the
spool and the acknowledgements; a batch is handled once each of its shares is.

A site's reports always go to the same process, in the order they came, so what a process
remembers of a site (``reports.CLOSED``, ``ingest.STORED_FIRST``) sees all of them. Each
process handles several shares at once (threads), as the bridge handles several batches;
the handlers are idempotent and conditional, so neither a repeat nor two batches side by
side count anything twice.

A share that raised comes back as ``ShareFailed``, which says whether the store did not
answer (``unavailable``): the bridge then spools or holds the batch, as it does with one
process. An ingest process that exits is started again, and the shares it held fail as
unavailable: held and tried again, never taken for the reports' fault.

An ingest process also sends plans (a result that ends a wave dispatches the next one), so
each has its own identity on the broker (``process_envs``: its ``EDGEPLANE_MQTT_*``): a
broker that takes the client id from the certificate, as the stack's does, lets one
connection per identity, and processes sharing one would disconnect each other in turns.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import multiprocessing
import os
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from edgeplane import protocol

LOG = logging.getLogger(__name__)

Messages = list[tuple[str, bytes]]

DEFAULT_HANDLER = "chalicelib.ingest:handle_messages"
STOP_GRACE = 10.0  # s an ingest process has to finish its shares when the bridge stops


class ShareFailed(RuntimeError):
    """A share of a batch raised in its ingest process (``unavailable``: why the store did
    not take it, None when the reports are at fault)."""

    def __init__(self, message: str, unavailable: str | None) -> None:
        super().__init__(message)
        self.unavailable = unavailable


def shard_of(topic: str, shards: int) -> int:
    """The share a report belongs to: a stable hash of its site (of the topic, if the
    topic names none: the handler drops such a report wherever it is)."""
    try:
        key, _, _ = protocol.parse_topic(topic)
    except protocol.ProtocolError:
        key = topic
    return zlib.crc32(key.encode("utf-8", "replace")) % shards


class ShardedIngest:
    """A batch handler: ``handler`` (``"module:function"``, taking a list of (topic,
    payload)) run in ``processes`` processes, ``threads`` shares at once in each."""

    def __init__(self, processes: int, threads: int = 8, handler: str = DEFAULT_HANDLER,
                 process_envs: Sequence[Mapping[str, str]] = ()) -> None:
        if processes < 1:
            raise ValueError(f"ingest processes must be at least 1, not {processes}")
        if process_envs and len(process_envs) != processes:
            raise ValueError(f"{len(process_envs)} environments for {processes} ingest "
                             "processes: one each")
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._shards = [_Shard(context, number, handler, threads,
                               dict(process_envs[number]) if process_envs else {})
                        for number in range(processes)]
        self.__name__ = f"{handler} in {processes} processes"

    @property
    def pids(self) -> list[int]:
        return [shard.pid for shard in self._shards]

    def __call__(self, messages: Messages) -> None:
        shares: dict[int, Messages] = {}
        for topic, payload in messages:
            shares.setdefault(shard_of(topic, len(self._shards)), []).append((topic, payload))
        futures = [self._shards[number].submit(share) for number, share in shares.items()]
        failures = []
        for future in futures:
            try:
                future.result()
            except ShareFailed as exc:
                failures.append(exc)
        if failures:  # the store's outage first: it is every share's
            raise min(failures, key=lambda exc: exc.unavailable is None)

    def close(self) -> None:
        for shard in self._shards:
            shard.close()


class _Shard:
    """One ingest process and the shares sent to it, answered by id."""

    def __init__(self, context: Any, number: int, handler: str, threads: int,
                 env: dict[str, str]) -> None:
        self._context = context
        self.number = number
        self._handler = handler
        self._threads = threads
        self._env = env
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._pending: dict[int, Future[None]] = {}
        self._closing = False
        self._start()

    @property
    def pid(self) -> int:
        return int(self._process.pid or 0)

    def _start(self) -> None:
        ours, theirs = self._context.Pipe()
        self._process = self._context.Process(
            target=serve, args=(theirs, self._handler, self._threads, self._env),
            name=f"ingest-{self.number}", daemon=True)
        self._process.start()
        theirs.close()
        self._connection: Connection = ours
        threading.Thread(target=self._read, args=(ours,), name=f"ingest-{self.number}-answers",
                         daemon=True).start()

    def submit(self, messages: Messages) -> Future[None]:
        future: Future[None] = Future()
        with self._lock:
            if self._closing:
                future.set_exception(ShareFailed("the bridge is stopping", "stopping"))
                return future
            share_id = next(self._ids)
            self._pending[share_id] = future
            try:
                self._connection.send((share_id, messages))
            except (OSError, ValueError) as exc:  # the process is gone: _read restarts it
                del self._pending[share_id]
                future.set_exception(ShareFailed(f"ingest process {self.number}: {exc}",
                                                 f"ingest process {self.number} exited"))
        return future

    def _read(self, connection: Connection) -> None:
        while True:
            try:
                share_id, error, unavailable = connection.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                future = self._pending.pop(share_id, None)
            if future is None:
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(ShareFailed(error, unavailable))
        with self._lock:
            if connection is not self._connection:
                return
            lost, self._pending = self._pending, {}
            for future in lost.values():
                future.set_exception(ShareFailed(
                    f"ingest process {self.number} exited", f"ingest process {self.number} "
                    "exited"))
            if self._closing:
                return
            LOG.error("bridge: ingest process %d (pid %s) exited with %s; starting it again",
                      self.number, self._process.pid, self._process.exitcode)
            self._process.join(1)
            self._start()

    def close(self) -> None:
        with self._lock:
            self._closing = True
            try:
                self._connection.send(None)
            except (OSError, ValueError):
                pass
        self._process.join(STOP_GRACE)
        if self._process.is_alive():
            LOG.warning("bridge: ingest process %d did not stop in %.0f s; terminated",
                        self.number, STOP_GRACE)
            self._process.terminate()
            self._process.join(STOP_GRACE)
        self._connection.close()


def serve(connection: Connection, handler_name: str, threads: int,
          env: Mapping[str, str] | None = None) -> None:
    """An ingest process: handle the shares that come, ``threads`` at once, and answer
    each by its id (None, or why it failed and whether the store was at fault). ``env``
    is set before the handler is loaded (the settings it reads)."""
    os.environ.update(env or {})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(processName)s %(name)s "
                        "%(message)s")
    handler = _resolve(handler_name)
    from chalicelib.availability import store_unavailable

    answering = threading.Lock()

    def handle(share_id: int, messages: Messages) -> None:
        error = unavailable = None
        try:
            handler(messages)
        except Exception as exc:
            unavailable = store_unavailable(exc)
            error = f"{type(exc).__name__}: {exc}"
            if unavailable is None:
                LOG.warning("ingest: a share of %d reports failed", len(messages),
                            exc_info=True)
        with answering:
            try:
                connection.send((share_id, error, unavailable))
            except OSError:  # the bridge is gone: its broker session delivers them again
                pass

    with ThreadPoolExecutor(threads, thread_name_prefix="ingest") as pool:
        while True:
            try:
                item = connection.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                break
            if item is None:
                break
            pool.submit(handle, *item)


def _resolve(name: str) -> Callable[[Messages], None]:
    module, _, function = name.partition(":")
    handler: Callable[[Messages], None] = getattr(importlib.import_module(module), function)
    return handler
