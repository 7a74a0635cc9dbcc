"""The local stand-in for the IoT rule: broker -> the cloud's ingest handler.

In AWS, the rule ``SELECT *, topic() AS topic FROM 'edgeplane/v1/sites/+/up/+'`` sends every
gateway report to SQS, and the Lambda consumer calls ``chalicelib.ingest.handle_message``.
Here one paho-mqtt client subscribes to the same filter and calls the same handler.

The session is persistent (MQTT 3.1.1, clean_session=False) so that reports published while
the bridge is down are queued by the broker and delivered when it returns; it subscribes in
on_connect so that every reconnect resubscribes; paho acknowledges a message (PUBACK) once
the handler has returned (manual acks), so a bridge killed mid-message gets it again. A
handler that raises is logged with the topic and the bridge carries on with the next message.
``--workers`` messages are handled at once.

Run it with ``python -m edgeplane.dev.bridge --port 1883``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgeplane import protocol

LOG = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]

RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 30
HANDLER_RETRY_DELAYS = (0.2, 1.0, 3.0)


def _default_handler(topic: str, payload: bytes) -> None:
    from chalicelib.ingest import handle_message  # the cloud side, imported only when used

    handle_message(topic, payload)


class _Bridge:
    """Hands each message to one of ``workers`` threads and acknowledges it when handled.

    Handlers are idempotent and order-free (conditional writes by seq, ts and session), so
    messages may be handled in parallel; at most ``workers`` are in hand at once, and the
    network thread waits for a free worker, so a backlog stays in the broker (bounded
    admission, as SQS and the Lambda's reserved concurrency bound it in AWS).
    """

    def __init__(self, handler: Handler, workers: int = 1) -> None:
        self.handler = handler
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="bridge")
        self._free = threading.Semaphore(workers)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

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
        self._pool.submit(self._handle_and_ack, client, message)

    def _handle_and_ack(self, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        try:
            self.handle(message)
        finally:
            self._free.release()
            # The PUBACK goes out once handled, as SQS deletes a record after the Lambda.
            client.ack(message.mid, message.qos)

    def handle(self, message: mqtt.MQTTMessage) -> None:
        # The handler drops what is malformed itself; what raises is a store failure, which
        # may pass: retry a few times before giving the message up.
        for attempt, delay in enumerate((*HANDLER_RETRY_DELAYS, None), start=1):
            try:
                self.handler(message.topic, message.payload)
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


def run_bridge(mqtt_host: str, mqtt_port: int, handler: Handler = _default_handler,
               client_id: str = "edgeplane-bridge",
               stop_event: threading.Event | None = None, workers: int = 1) -> None:
    """Forward every gateway report to ``handler`` until ``stop_event`` is set (or forever)."""
    stop_event = stop_event or threading.Event()
    bridge = _Bridge(handler, workers)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv311, clean_session=False)
    client.manual_ack_set(True)
    client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
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
             getattr(handler, "__name__", handler))
    try:
        stop_event.wait()
    finally:
        client.disconnect()
        client.loop_stop()
        bridge.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--client-id", default="edgeplane-bridge")
    parser.add_argument("--workers", type=int, default=8,
                        help="messages handled at once (bounds what a backlog costs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_bridge(args.host, args.port, client_id=args.client_id, stop_event=stop,
               workers=args.workers)


if __name__ == "__main__":
    main()
