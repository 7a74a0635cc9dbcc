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

A report is acknowledged only once stored (or dropped as not following the contract):
while the store does not answer (down, restarting: the connection is refused or times out)
the bridge holds what it has in hand, unacknowledged, and tries again until the store
answers; everything else waits in its persistent session in the broker, which keeps it on
disk. A handler that raises while the store answers is the message's fault: it is tried a
few times, then logged with the topic and dropped, and the bridge carries on.
Messages are handled in batches (``--batch-size``, by ``chalicelib.ingest.handle_messages``,
as the Lambda gets SQS batches), ``--workers`` batches at once.

Run it with ``python -m edgeplane_dev.bridge --port 1883``.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgeplane import protocol
from edgeplane_dev.pki import Identity

LOG = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
BatchHandler = Callable[[list[tuple[str, bytes]]], None]

RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 30
HANDLER_RETRY_DELAYS = (0.2, 1.0, 3.0)
STORE_RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0)  # while the store does not answer; the last repeats
BATCH_SIZE = 100  # messages handed to the handler at once, like an SQS batch


def _default_batch_handler(messages: list[tuple[str, bytes]]) -> None:
    from chalicelib.ingest import handle_messages  # the cloud side, imported only when used

    handle_messages(messages)


def store_unreachable(exc: BaseException) -> bool:
    """True when ``exc``, or what caused it, is a request to the store that got no answer
    (connection refused, reset or timed out): the store is down, not the message at fault."""
    from botocore.exceptions import ConnectionError as NoConnection
    from botocore.exceptions import HTTPClientError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, NoConnection | HTTPClientError):
            return True
        seen.add(id(current))
        # pynamodb keeps botocore's exception as ``cause``
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return False


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
    acknowledges them when handled.

    Handlers are idempotent and order-free (conditional writes by seq, ts and session), so
    batches may be handled in parallel; at most ``workers * batch_size`` messages are in
    hand at once, and the network thread waits when that is reached, so a backlog stays in
    the broker (bounded admission, as SQS and the Lambda's reserved concurrency bound it in
    AWS). A backlog makes batches fuller, which is what makes a backlog cheap to drain.
    A store that stays down long enough for the network thread to wait past the keepalive
    loses the bridge its connection: the broker delivers again what was not acknowledged,
    and handling it twice changes nothing.
    """

    def __init__(self, handler: BatchHandler, workers: int = 1,
                 batch_size: int = BATCH_SIZE) -> None:
        self.handler = handler
        self.batch_size = batch_size
        self._capacity = workers * batch_size
        self._free = threading.Semaphore(self._capacity)
        self._closing = threading.Event()
        self._held_lock = threading.Lock()
        self._held = 0  # messages in hand waiting for the store to answer
        self._queue: queue.SimpleQueue[tuple[mqtt.Client, mqtt.MQTTMessage] | None] = \
            queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"bridge-{n}", daemon=True)
                         for n in range(workers)]
        for worker in self._workers:
            worker.start()

    def stopping(self) -> None:
        """Give up what is held for the store (unacknowledged) from now on: a worker waiting
        for the store must not keep the network thread (blocked on admission) from ending."""
        self._closing.set()

    def close(self) -> None:
        self.stopping()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()

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

    def on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                      properties: Any) -> None:
        if reason_code.is_failure:
            LOG.warning("bridge: connection lost (%s); reconnecting", reason_code)

    def on_message(self, client: mqtt.Client, userdata: Any,
                   message: mqtt.MQTTMessage) -> None:
        self._free.acquire()
        self._queue.put((client, message))

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # closing: finish this batch, then stop
                    self._queue.put(None)
                    break
                batch.append(item)
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
                    # The PUBACK goes out once stored (or dropped), as SQS deletes a record
                    # after the Lambda.
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
            self._handle_one(message)

    def _handle_one(self, message: mqtt.MQTTMessage) -> None:
        # The handler drops what is malformed itself; what raises while the store answers
        # may still pass (a conflict, a throttle): retry a few times before giving it up.
        for attempt, delay in enumerate((*HANDLER_RETRY_DELAYS, None), start=1):
            try:
                self._store([(message.topic, message.payload)])
                return
            except Exception:  # one bad message must not stop ingestion
                if delay is None:
                    LOG.exception("bridge: handling a message on %s failed %d times; "
                                  "dropped", message.topic, attempt)
                    return
                LOG.warning("bridge: handling a message on %s failed (attempt %d); "
                            "retrying in %.1f s", message.topic, attempt, delay,
                            exc_info=True)
                time.sleep(delay)

    def _store(self, batch: list[tuple[str, bytes]]) -> None:
        """Hand ``batch`` to the handler; while the store does not answer, hold it and try
        again until it does (or until the bridge stops: ``_Stopping``)."""
        delays = iter(STORE_RETRY_DELAYS)
        held = stored = False
        try:
            while True:
                try:
                    self.handler(batch)
                    stored = True
                    return
                except Exception as exc:
                    if not store_unreachable(exc):
                        raise
                    if not held:
                        held = True
                        self._hold(len(batch), exc)
                if self._closing.wait(next(delays, STORE_RETRY_DELAYS[-1])):
                    raise _Stopping
        finally:
            if held:
                self._unhold(len(batch), stored)

    def _hold(self, count: int, exc: Exception) -> None:
        with self._held_lock:
            if self._held == 0:
                LOG.warning("bridge: the store does not answer (%s); holding the reports in "
                            "hand (at most %d), unacknowledged, until it does; the others "
                            "wait in the broker", exc, self._capacity)
            self._held += count

    def _unhold(self, count: int, stored: bool) -> None:
        with self._held_lock:
            self._held -= count
            if self._held == 0 and stored:
                LOG.info("bridge: the store answers again; the reports held are stored")


def run_bridge(mqtt_host: str, mqtt_port: int, handler: Handler | None = None,
               client_id: str = "edgeplane-bridge",
               stop_event: threading.Event | None = None, workers: int = 1,
               batch_handler: BatchHandler | None = None,
               batch_size: int = BATCH_SIZE, identity: Identity | None = None) -> None:
    """Forward every gateway report to ``batch_handler`` (or ``handler``, one message at a
    time) until ``stop_event`` is set (or forever). With ``identity`` (``cloud.ingest``'s
    certificate) it connects over TLS; the broker then takes the client id from it."""
    stop_event = stop_event or threading.Event()
    if batch_handler is None:
        batch_handler = one_at_a_time(handler) if handler else _default_batch_handler
    bridge = _Bridge(batch_handler, workers, batch_size)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--client-id", default="edgeplane-bridge")
    parser.add_argument("--workers", type=int, default=8,
                        help="batches handled at once (bounds what a backlog costs)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help="messages per batch at most")
    parser.add_argument("--ca-file", help="TLS: the broker's CA certificate")
    parser.add_argument("--cert-file", help="TLS: this bridge's certificate (cloud.ingest)")
    parser.add_argument("--key-file", help="TLS: this bridge's private key")
    args = parser.parse_args(argv)
    tls_files = (args.ca_file, args.cert_file, args.key_file)
    if any(tls_files) and not all(tls_files):
        parser.error("TLS needs --ca-file, --cert-file and --key-file together")
    identity = Identity("cloud.ingest", Path(args.cert_file), Path(args.key_file),
                        Path(args.ca_file)) if all(tls_files) else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_bridge(args.host, args.port, client_id=args.client_id, stop_event=stop,
               workers=args.workers, batch_size=args.batch_size, identity=identity)


if __name__ == "__main__":
    main()
