"""A broker that behaves like AWS IoT Core (TLS, a certificate of every client, the ACL),
and MQTT clients that connect to it as one identity or another."""

from __future__ import annotations

import queue
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.pki import Identity, LocalCa
from edgeplane_dev.tls_client import connect as connect_client


@dataclass
class SecureBroker:
    server: Mosquitto
    ca: LocalCa

    @property
    def port(self) -> int:
        return self.server.port

    def identity(self, name: str) -> Identity:
        return self.ca.identity(name)


@dataclass(eq=False)
class Peer:
    """One connected client: what it received, and whether the broker dropped it."""

    client: mqtt.Client
    received: queue.SimpleQueue[mqtt.MQTTMessage] = field(default_factory=queue.SimpleQueue)
    disconnected: threading.Event = field(default_factory=threading.Event)
    granted: queue.SimpleQueue[list[Any]] = field(default_factory=queue.SimpleQueue)

    def subscribe(self, topic: str, timeout: float = 10.0) -> list[Any]:
        """Subscribe; the broker's answer (reason codes) once it gave one."""
        self.client.subscribe(topic, qos=1)
        return self.granted.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1, waiting for the PUBACK (the broker acknowledges what its ACL drops too)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def messages(self, until_topic: str, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        """What arrived up to and including the first message on ``until_topic``."""
        seen = []
        while True:
            message = self.received.get(timeout=timeout)
            seen.append(message)
            if message.topic == until_topic:
                return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(port: int, identity: Identity | None, client_id: str = "",
            clean_session: bool = True, ca_file: str | None = None,
            tls: bool = True) -> Peer:
    """A client connected to the broker as ``identity`` (or with no certificate at all);
    raises ConnectionError if the broker would not have it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=mqtt.MQTTv311)
    peer = Peer(client)
    client.on_disconnect = lambda *_: peer.disconnected.set()
    client.on_message = lambda _c, _u, message: peer.received.put(message)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: peer.granted.put(codes)
    if tls:
        if identity is not None:
            client.tls_set(**identity.tls_args)
        else:
            client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    connect_client(client, port)
    return peer
