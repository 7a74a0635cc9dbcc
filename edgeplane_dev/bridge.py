"""The local stand-in for the IoT rule: broker -> the cloud's ingest handler.

In AWS, the rule ``SELECT *, topic() AS topic, clientid() AS client_id FROM
'edgeplane/v1/sites/+/up/+'`` sends every gateway report to SQS, and the Lambda consumer
calls ``chalicelib.ingest.handle_messages``. Here one paho-mqtt client subscribes to the
same filter and calls the same handler; the broker's ACL has already kept each site to its
own topics (MQTT does not tell a subscriber who published, so the topic is what the
broker vouches for).

The session is persistent (MQTT 3.1.1, clean_session=False) so that reports published while
the bridge is down are queued by the broker and delivered when it returns; it subscribes in
on_connect so that every reconnect resubscribes; paho acknowledges a message (PUBACK) once
the handler has stored it (manual acks), so a bridge killed mid-message gets it again.

A report is acknowledged only once stored, spooled, or dropped as not following the
contract. While the store does not answer (down, restarting, throttling:
``chalicelib.availability``), what the bridge takes goes to its spool (``--spool``, see
``edgeplane_dev.spool``: SQLite on disk, bounded), acknowledged once there, and a drainer
stores it from there once the store answers again: the broker's queue stays short and the
bridge stays connected however long the outage. While the spool holds reports, new ones
join it (the drainer probes the store; they are stored in the order they came). A full
spool (or none) makes the bridge hold what it has in hand, unacknowledged, trying again
until there is room or the store answers; everything else waits in its persistent session
in the broker. A handler that raises while the store answers is the message's fault: it
is tried a few times, then kept as a dead letter in the spool with the reason (logged;
without a spool: logged and dropped), and the bridge carries on.
Messages are handled in batches (``--batch-size``, by ``chalicelib.ingest.handle_messages``,
as the Lambda gets SQS batches), ``--workers`` batches at once. A batch closes when it is
full or ``--batch-window`` seconds after its first message (as the Lambda's batching
window): reports that come together are stored together, and what a batch costs besides
its reports (counters, events) is paid once for all of them. With ``--processes N`` the
batches are handled in N ingest processes, each owning a share of the sites
(``edgeplane_dev.ingest_shards``), as Lambdas run side by side.

Run it with ``python -m edgeplane_dev.bridge --port 1883``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgeplane import protocol
from edgeplane_dev.ingest_shards import ShardedIngest, ShareFailed
from edgeplane_dev.pki import Identity
from edgeplane_dev.spool import MAX_BYTES, MAX_REPORTS, Spool

LOG = logging.getLogger(__name__)
SUBSCRIBED = "bridge: subscribed to"  # once the broker confirmed the subscription

Handler = Callable[[str, bytes], None]
BatchHandler = Callable[[list[tuple[str, bytes]]], None]

RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 30
HANDLER_RETRY_DELAYS = (0.2, 1.0, 3.0)
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)  # while the store does not answer; the last repeats
BATCH_SIZE = 100  # messages handed to the handler at once, like an SQS batch
BATCH_WINDOW = 0.2  # s a batch waits for more after its first message


def _default_batch_handler(messages: list[tuple[str, bytes]]) -> None:
    from chalicelib.ingest import handle_messages  # the cloud side, imported only when used

    handle_messages(messages)


def store_unavailable(exc: BaseException) -> str | None:
    """Why the store did not take a batch (None: the batch is at fault)."""
    from chalicelib.availability import store_unavailable as why  # the cloud side

    if isinstance(exc, ShareFailed):  # raised in an ingest process, which told why
        return exc.unavailable
    return why(exc)


class _Stopping(BaseException):  # noqa: N818 - not an error: the bridge stops
    """The bridge stops while holding messages for the store: they stay unacknowledged.
    A BaseException, so that no ``except Exception`` on the way takes it for a failure."""


def one_at_a_time(handler: Handler) -> BatchHandler:
    def handle(messages: list[tuple[str, bytes]]) -> None:
        for topic, payload in messages:
            handler(topic, payload)

    handle.__name__ = getattr(handler, "__name__", "handler")
    return handle


class _Bridge:
    """Hands messages, up to ``batch_size`` at a time, to one of ``workers`` threads and
    acknowledges them when handled (stored, or spooled while the store does not answer).

    Handlers are idempotent and order-free (conditional writes by seq, ts and session), so
    batches may be handled in parallel; at most ``workers * batch_size`` messages are in
    hand at once, and the network thread waits when that is reached, so a backlog stays in
    the broker (bounded admission, as SQS and the Lambda's reserved concurrency bound it in
    AWS). A backlog makes batches fuller, which is what makes a backlog cheap to drain.
    Only with the spool full (or without one) does a store that stays down keep messages
    in hand; should the network thread then wait past the keepalive, the bridge loses its
    connection: the broker delivers again what was not acknowledged, and handling it twice
    changes nothing.
    """

    def __init__(self, handler: BatchHandler, workers: int = 1,
                 batch_size: int = BATCH_SIZE, spool: Spool | None = None,
                 batch_window: float = 0.0) -> None:
        self.handler = handler
        self.batch_size = batch_size
        self.batch_window = batch_window
        self._gathering = threading.Lock()  # one worker gathers a batch at a time
        self.spool = spool
        self._capacity = workers * batch_size
        self._free = threading.Semaphore(self._capacity)
        self._closing = threading.Event()
        self._held_lock = threading.Lock()
        self._held = 0  # messages in hand waiting for the store (or the spool's room)
        self._spooled = threading.Event()  # wakes the drainer
        self._spool_log_lock = threading.Lock()
        self._drained: int | None = None  # in an outage: the spooled reports stored so far
        self._queue: queue.SimpleQueue[tuple[mqtt.Client, mqtt.MQTTMessage] | None] = \
            queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"bridge-{n}", daemon=True)
                         for n in range(workers)]
        if spool is not None:
            if spool.waiting:
                LOG.warning("bridge: %d reports in the spool %s from an earlier run; stored "
                            "once the store answers", spool.waiting, spool.path)
                self._drained = 0
                self._spooled.set()
            if spool.dead:
                LOG.warning("bridge: the spool %s keeps %d dead letters (reports that "
                            "failed on their own; see edgeplane_dev.spool)", spool.path,
                            spool.dead)
            self._workers.append(threading.Thread(target=self._drain, name="bridge-drain",
                                                  daemon=True))
        for worker in self._workers:
            worker.start()

    def stopping(self) -> None:
        """Give up what is held for the store (unacknowledged) from now on: a worker waiting
        for the store must not keep the network thread (blocked on admission) from ending."""
        self._closing.set()
        self._spooled.set()

    def close(self) -> None:
        self.stopping()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        if self.spool is not None:
            self.spool.close()

    def on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                   properties: Any) -> None:
        if reason_code.is_failure:
            LOG.error("bridge: broker refused the connection: %s", reason_code)
            return
        rc, _ = client.subscribe(protocol.UP_FILTER, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            LOG.error("bridge: subscribe to %s failed: %s", protocol.UP_FILTER,
                      mqtt.error_string(rc))
            return
        LOG.info("bridge: connected (session present: %s), subscribing to %s",
                 flags.session_present, protocol.UP_FILTER)

    def on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                     reason_codes: list[Any], properties: Any) -> None:
        for code in reason_codes:
            if code.is_failure:
                LOG.error("bridge: broker refused the subscription to %s: %s",
                          protocol.UP_FILTER, code)
                return
        LOG.info("%s %s", SUBSCRIBED, protocol.UP_FILTER)  # the stack waits for this line

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if reason_code.is_failure:
            LOG.warning("bridge: connection lost (%s); reconnecting", reason_code)

    def on_message(self, client: mqtt.Client, userdata: Any,
                   message: mqtt.MQTTMessage) -> None:
        self._free.acquire()
        self._queue.put((client, message))

    # --- workers: from the broker to the store (or the spool) ---------------------------

    def _next_batch(self) -> list[tuple[mqtt.Client, mqtt.MQTTMessage]] | None:
        """Up to ``batch_size`` messages: those waiting, and those that come within
        ``batch_window`` of the first (None: the bridge closes)."""
        with self._gathering:  # the others wait their turn rather than take a share each
            first = self._queue.get()
            if first is None:
                return None
            batch = [first]
            closes = time.monotonic() + self.batch_window
            while len(batch) < self.batch_size:
                try:
                    left = closes - time.monotonic()
                    item = self._queue.get(timeout=left) if left > 0 else \
                        self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # closing: finish this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(item)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            done = False
            try:
                self.handle([message for _, message in batch])
                done = True
            except _Stopping:
                LOG.warning("bridge: stopping with %d messages not stored: unacknowledged, "
                            "the broker delivers them again to the next session", len(batch))
            finally:
                for client, message in batch:
                    self._free.release()
                    # The PUBACK goes out once stored, spooled (or dropped), as SQS deletes
                    # a record after the Lambda.
                    if done:
                        client.ack(message.mid, message.qos)

    def handle(self, messages: list[mqtt.MQTTMessage]) -> None:
        if len(messages) > 1:
            try:
                self._store([(m.topic, m.payload) for m in messages])
                return
            except Exception:  # find the message that fails; the others are stored anyway
                LOG.warning("bridge: a batch of %d messages failed; handling them one by "
                            "one", len(messages), exc_info=True)
        for message in messages:
            self._handle_one(message.topic, message.payload)

    def _handle_one(self, topic: str, payload: bytes) -> None:
        # The handler drops what is malformed itself; what raises while the store answers
        # may still pass (a conflict, a throttle): retry a few times before giving it up.
        try:
            self._retrying(topic, lambda: self._store([(topic, payload)]))
        except Exception as exc:
            self._give_up(topic, payload, exc)

    def _retrying(self, topic: str, attempt: Callable[[], None]) -> None:
        """``attempt``, tried again after each of ``HANDLER_RETRY_DELAYS``; its last error
        is raised."""
        for number, delay in enumerate((*HANDLER_RETRY_DELAYS, None), start=1):
            try:
                attempt()
                return
            except Exception:
                if delay is None:
                    raise
                LOG.warning("bridge: handling a message on %s failed (attempt %d); "
                            "retrying in %.1f s", topic, number, delay, exc_info=True)
                time.sleep(delay)

    def _give_up(self, topic: str, payload: bytes, exc: Exception,
                 report_id: int | None = None) -> None:
        attempts = len(HANDLER_RETRY_DELAYS) + 1
        if self.spool is None:
            LOG.error("bridge: handling a message on %s failed %d times; dropped", topic,
                      attempts, exc_info=exc)
            return
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        if report_id is None:
            self.spool.bury_new(topic, payload, reason)
        else:
            self.spool.bury(report_id, reason)
        LOG.error("bridge: handling a message on %s failed %d times; kept as a dead letter "
                  "in %s", topic, attempts, self.spool.path, exc_info=exc)

    def _store(self, batch: list[tuple[str, bytes]]) -> None:
        """Store ``batch``, or spool it while the store does not answer; with no room in the
        spool, hold it and try both again until one takes it (or until the bridge stops:
        ``_Stopping``). While the spool holds reports, the store is not tried: the drainer
        finds out when it answers."""
        delays = iter(STORE_RETRY_DELAYS)
        held = stored = False
        why = "reports wait in the spool"
        try:
            while True:
                if self.spool is None or not self.spool.waiting:
                    try:
                        self.handler(batch)
                        stored = True
                        return
                    except Exception as exc:
                        down = store_unavailable(exc)
                        if down is None:
                            raise
                        why = down
                if self.spool is not None and self._spool(batch, why):
                    stored = True
                    return
                if not held:
                    held = True
                    self._hold(len(batch), why)
                if self._closing.wait(next(delays, STORE_RETRY_DELAYS[-1])):
                    raise _Stopping
        finally:
            if held:
                self._unhold(len(batch), stored)

    def _spool(self, batch: list[tuple[str, bytes]], why: str) -> bool:
        assert self.spool is not None
        if not self.spool.put(batch):
            return False
        with self._spool_log_lock:
            if self._drained is None:
                self._drained = 0
                LOG.warning("bridge: the store does not answer (%s); spooling reports in %s, "
                            "each acknowledged once on disk, stored once the store answers",
                            why, self.spool.path)
        self._spooled.set()
        return True

    def _hold(self, count: int, why: str) -> None:
        with self._held_lock:
            if self._held == 0:
                if self.spool is None:
                    LOG.warning("bridge: the store does not answer (%s); holding the reports "
                                "in hand (at most %d), unacknowledged, until it does; the "
                                "others wait in the broker", why, self._capacity)
                else:
                    reports, size = self.spool.size
                    LOG.error("bridge: the spool %s is full (%d reports, %.1f MiB): holding "
                              "the reports in hand (at most %d), unacknowledged, until there "
                              "is room; the others wait in the broker", self.spool.path,
                              reports, size / 2**20, self._capacity)
            self._held += count

    def _unhold(self, count: int, stored: bool) -> None:
        with self._held_lock:
            self._held -= count
            if self._held == 0 and stored:
                LOG.info("bridge: the store answers again; the reports held are stored"
                         if self.spool is None else
                         "bridge: the spool has room again; the reports held are taken")

    # --- the drainer: from the spool to the store --------------------------------------

    def _drain(self) -> None:
        assert self.spool is not None
        delays = iter(STORE_RETRY_DELAYS)
        while not self._closing.is_set():
            reports = self.spool.take(self.batch_size)
            if not reports:
                self._outage_over()
                self._spooled.wait()
                self._spooled.clear()
                continue
            try:
                self.handler([(topic, payload) for _, topic, payload in reports])
                self.spool.remove([report_id for report_id, _, _ in reports])
                self._count_drained(len(reports))
                delays = iter(STORE_RETRY_DELAYS)
                continue
            except Exception as exc:
                if store_unavailable(exc) is None:
                    LOG.warning("bridge: a spooled batch of %d failed; storing them one by "
                                "one", len(reports), exc_info=True)
                    if self._drain_one_by_one(reports):
                        continue
            self._closing.wait(next(delays, STORE_RETRY_DELAYS[-1]))

    def _drain_one_by_one(self, reports: list[tuple[int, str, bytes]]) -> bool:
        """False if the store stopped answering on the way (the rest wait)."""
        assert self.spool is not None
        for report_id, topic, payload in reports:
            def attempt(topic: str = topic, payload: bytes = payload) -> None:
                self.handler([(topic, payload)])

            try:
                self._retrying(topic, attempt)
            except Exception as exc:
                if store_unavailable(exc) is not None:
                    return False
                self._give_up(topic, payload, exc, report_id)
                continue
            self.spool.remove([report_id])
            self._count_drained(1)
        return True

    def _count_drained(self, count: int) -> None:
        with self._spool_log_lock:
            self._drained = (self._drained or 0) + count

    def _outage_over(self) -> None:
        with self._spool_log_lock:
            if self._drained is not None:
                LOG.info("bridge: the store answers again; the %d reports spooled are "
                         "stored", self._drained)
                self._drained = None


def run_bridge(mqtt_host: str, mqtt_port: int, handler: Handler | None = None,
               client_id: str = "edgeplane-bridge",
               stop_event: threading.Event | None = None, workers: int = 1,
               batch_handler: BatchHandler | None = None,
               batch_size: int = BATCH_SIZE, identity: Identity | None = None,
               spool: Path | None = None, spool_max_reports: int = MAX_REPORTS,
               spool_max_bytes: int = MAX_BYTES, batch_window: float = 0.0,
               processes: int = 1, process_identities: Sequence[Identity] = ()) -> None:
    """Forward every gateway report to ``batch_handler`` (or ``handler``, one message at a
    time) until ``stop_event`` is set (or forever). With ``identity`` (``cloud.ingest``'s
    certificate) it connects over TLS; the broker then takes the client id from it. With
    ``spool`` (a file), what comes while the store does not answer waits there. With
    neither handler, the cloud's ingest handles the reports, in ``processes`` processes,
    each sending the plans it dispatches as one of ``process_identities`` (default: all as
    this process's ``EDGEPLANE_MQTT_*``)."""
    stop_event = stop_event or threading.Event()
    sharded = None
    if batch_handler is None and handler is None and processes > 1:
        sharded = batch_handler = ShardedIngest(
            processes, threads=workers,
            process_envs=[identity.env() for identity in process_identities])
    elif batch_handler is None:
        batch_handler = one_at_a_time(handler) if handler else _default_batch_handler
    bridge = _Bridge(batch_handler, workers, batch_size,
                     Spool(spool, spool_max_reports, spool_max_bytes) if spool else None,
                     batch_window)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=False)
    client.manual_ack_set(True)
    client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
    if identity is not None:
        client.tls_set(ca_certs=str(identity.ca_file), certfile=str(identity.cert_file),
                       keyfile=str(identity.key_file))
    client.on_connect = bridge.on_connect
    client.on_subscribe = bridge.on_subscribe
    client.on_disconnect = bridge.on_disconnect
    client.on_message = bridge.on_message
    # connect_async + loop_start: paho retries the first connection too, with the backoff.
    client.connect_async(mqtt_host, mqtt_port, keepalive=30)
    rc = client.loop_start()
    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise RuntimeError(f"bridge: could not start the MQTT loop: {mqtt.error_string(rc)}")
    LOG.info("bridge: mqtt://%s:%s %s -> %s", mqtt_host, mqtt_port, protocol.UP_FILTER,
             getattr(batch_handler, "__name__", batch_handler))
    try:
        stop_event.wait()
    finally:
        bridge.stopping()
        client.disconnect()
        client.loop_stop()
        bridge.close()
        if sharded is not None:
            sharded.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--client-id", default="edgeplane-bridge")
    parser.add_argument("--workers", type=int, default=8,
                        help="batches handled at once (bounds what a backlog costs)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="messages per batch at most")
    parser.add_argument("--batch-window", type=float, default=BATCH_WINDOW,
                        help="seconds a batch waits for more after its first message")
    parser.add_argument("--processes", type=int, default=1,
                        help="ingest processes, each owning a share of the sites")
    parser.add_argument("--spool", type=Path,
                        help="a file where reports wait while the store does not answer")
    parser.add_argument("--spool-max-reports", type=int, default=MAX_REPORTS)
    parser.add_argument("--spool-max-mib", type=int, default=MAX_BYTES >> 20)
    parser.add_argument("--ca-file", help="TLS: the broker's CA certificate")
    parser.add_argument("--cert-file", help="TLS: this bridge's certificate (cloud.ingest)")
    parser.add_argument("--key-file", help="TLS: this bridge's private key")
    parser.add_argument("--process-identity", nargs=2, action="append", default=[],
                        metavar=("CERT", "KEY"),
                        help="TLS: the identity one ingest process sends plans as (one "
                        "per --processes, with the CA of --ca-file): a broker that takes "
                        "the client id from the certificate lets one connection each")
    args = parser.parse_args(argv)
    tls_files = (args.ca_file, args.cert_file, args.key_file)
    if any(tls_files) and not all(tls_files):
        parser.error("TLS needs --ca-file, --cert-file and --key-file together")
    identity = Identity("cloud.ingest", Path(args.cert_file), Path(args.key_file),
                        Path(args.ca_file)) if all(tls_files) else None
    if args.process_identity and (identity is None or len(args.process_identity)
                                  != args.processes):
        parser.error("--process-identity: one per --processes, with --ca-file")
    senders = [Identity(f"ingest process {n}", Path(cert), Path(key), Path(args.ca_file))
               for n, (cert, key) in enumerate(args.process_identity)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_bridge(args.host, args.port, client_id=args.client_id, stop_event=stop,
               workers=args.workers, batch_size=args.batch_size, identity=identity,
               spool=args.spool, spool_max_reports=args.spool_max_reports,
               spool_max_bytes=args.spool_max_mib << 20, batch_window=args.batch_window,
               processes=args.processes, process_identities=senders)


if __name__ == "__main__":
    main()
