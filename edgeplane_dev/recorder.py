"""A client that records what sites send (and can publish to them): for tests and benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeplane import protocol
from edgeplane_dev.pki import Identity


class Recorder:
    """Subscribes to a topic filter and keeps every decoded message, in arrival order. On a
    broker that checks who connects, it is ``identity`` (whose name is its client id)."""

    def __init__(self, port: int, topic_filter: str = protocol.UP_FILTER,
                 client_id: str = "test-recorder", identity: Identity | None = None) -> None:
        self.messages: list[tuple[str, protocol.Message]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        if identity is not None:
            client_id = identity.name
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if identity is not None:
            client.tls_set(ca_certs=str(identity.ca_file), certfile=str(identity.cert_file),
                           keyfile=str(identity.key_file))
        client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("recorder could not subscribe")
        self.client = client

    def _on_message(self, client, userdata, message) -> None:
        decoded = protocol.decode(message.payload, message.topic)
        with self._cond:
            self.messages.append((message.topic, decoded))
            self._cond.notify_all()

    def of_kind(self, kind: type[protocol.Message]) -> list:
        with self._cond:
            return [m for _, m in self.messages if isinstance(m, kind) and type(m) is kind]

    def wait_for(self, predicate: Callable[[list], bool], kind: type[protocol.Message],
                 timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for _, m in self.messages if type(m) is kind]
                if predicate(found):
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {kind.KIND} message matched; got {found}")
                self._cond.wait(remaining)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
