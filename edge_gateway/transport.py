"""The gateway's link to the cloud: one MQTT session per site.

The gateway core talks to a ``Transport``; ``MqttTransport`` is the paho-mqtt one. The
session is persistent (clean_session=False), so the broker keeps QoS 1 plans for a site
that is offline and delivers them when it returns; the last will marks the site offline
when the link drops; paho reconnects with exponential backoff and ``on_connect``
resubscribes every time.

No callback lets an exception out into paho: one that escaped would stop paho's network
thread (the site goes offline) before the PUBACK of the message being handled, so the
broker would deliver that message again at every reconnect, and stop the gateway again.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_gateway.config import MqttSettings
from edge_gateway.errors import GatewayError

LOG = logging.getLogger(__name__)

ConnectHandler = Callable[[], None]
MessageHandler = Callable[[str, bytes], None]
DeliveredHandler = Callable[[str], None]
WillFactory = Callable[[float], tuple[str, bytes]]


@contextmanager
def _contained(what: str) -> Iterator[None]:
    """Log what a paho callback raises instead of raising it into paho's network thread."""
    try:
        yield
    except Exception:
        LOG.exception("%s failed; the MQTT link carries on", what)


class Transport(Protocol):
    """What the gateway core needs from a link; swappable (a fleet simulator drives many)."""

    def start(self, on_connect: ConnectHandler, on_message: MessageHandler,
              on_delivered: DeliveredHandler) -> None: ...

    def publish(self, topic: str, payload: bytes, key: str, retain: bool = False) -> None:
        """Send at least once (QoS 1); ``on_delivered(key)`` once the broker has it."""

    @property
    def session(self) -> float:
        """Identifies the current connection (see protocol.Presence)."""

    def stop(self) -> None: ...


class MqttTransport:
    def __init__(self, settings: MqttSettings, client_id: str, subscriptions: list[str],
                 will: WillFactory) -> None:
        self.settings = settings
        self.subscriptions = subscriptions
        self._will = will
        self._session = time.time()
        # mid -> journal key of what awaits its PUBACK, and PUBACKs that beat their publish()
        # call back (paho may deliver one before publish() returns the mid to us).
        self._inflight: dict[int, str] = {}
        self._acked_early: set[int] = set()
        self._lock = threading.Lock()
        self._handlers: tuple[ConnectHandler, MessageHandler, DeliveredHandler] | None = None
        self._subscribe_mid: int | None = None
        self.connected = threading.Event()  # set once connected *and* subscribed
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             clean_session=False, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)  # unbounded: the journal bounds what we keep
        client.suppress_exceptions = True  # a second guard: every callback contains its own
        client.reconnect_delay_set(int(settings.reconnect_min_delay),
                                   int(settings.reconnect_max_delay))
        if settings.username:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            client.tls_set(ca_certs=settings.ca_file, certfile=settings.cert_file,
                           keyfile=settings.key_file, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self._client = client
        self._set_will()

    @property
    def session(self) -> float:
        return self._session

    def _set_will(self) -> None:
        topic, payload = self._will(self._session)
        self._client.will_set(topic, payload, qos=1, retain=True)

    def start(self, on_connect: ConnectHandler, on_message: MessageHandler,
              on_delivered: DeliveredHandler) -> None:
        self._handlers = (on_connect, on_message, on_delivered)
        self._client.connect_async(self.settings.host, self.settings.port,
                                   keepalive=self.settings.keepalive)
        if self._client.loop_start() != mqtt.MQTT_ERR_SUCCESS:
            raise GatewayError("could not start the MQTT network thread")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()

    def publish(self, topic: str, payload: bytes, key: str, retain: bool = False) -> None:
        # Our lock is never held while calling into paho: its network thread holds paho's
        # message lock when it calls _on_publish, which takes ours (lock-order inversion).
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise GatewayError(f"MQTT publish to {topic} failed: "
                               f"{mqtt.error_string(info.rc)}")
        # NO_CONN: paho keeps the message and sends it after reconnecting.
        with self._lock:
            delivered = info.mid in self._acked_early
            if delivered:
                self._acked_early.discard(info.mid)
            else:
                self._inflight[info.mid] = key
        if delivered and self._handlers:
            self._handlers[2](key)

    # --- paho callbacks (network thread) ---------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        with _contained("handling the connection"):
            self._connected(client, flags, reason_code)

    def _connected(self, client: mqtt.Client, flags: mqtt.ConnectFlags,
                   reason_code: ReasonCode) -> None:
        if reason_code.is_failure:
            LOG.error("broker %s:%s refused the connection: %s", self.settings.host,
                      self.settings.port, reason_code)
            return
        LOG.info("connected to %s:%s (session present: %s)", self.settings.host,
                 self.settings.port, flags.session_present)
        result, self._subscribe_mid = client.subscribe([(t, 1) for t in self.subscriptions])
        if result != mqtt.MQTT_ERR_SUCCESS:
            LOG.error("subscribing to %s failed: %s", self.subscriptions,
                      mqtt.error_string(result))
        if self._handlers:
            self._handlers[0]()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        with _contained("handling the subscription"):
            if mid != self._subscribe_mid:
                return
            refused = [code for code in reason_codes if code.is_failure]
            if refused:
                LOG.error("broker refused subscriptions %s: %s", self.subscriptions, refused)
                return
            self.connected.set()  # connected and subscribed: plans can reach us now

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self.connected.clear()
        with _contained("handling the disconnection"):
            LOG.log(logging.WARNING if reason_code.is_failure else logging.INFO,
                    "disconnected from %s:%s: %s", self.settings.host, self.settings.port,
                    reason_code)
            # The next connection is a new presence session, with a will that says so.
            self._session = time.time()
            self._set_will()

    def _on_message(self, client: mqtt.Client, userdata: Any,
                    message: mqtt.MQTTMessage) -> None:
        """Hand the message over; paho acknowledges it (PUBACK) once this returns, which it
        always does: a message the handler cannot take is logged and dropped."""
        with _contained(f"handling message {message.mid}"):
            if self._handlers:
                self._handlers[1](message.topic, bytes(message.payload))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        with _contained(f"handling the acknowledgement of {mid}"):
            with self._lock:
                key = self._inflight.pop(mid, None)
                if key is None:
                    self._acked_early.add(mid)
            if key is not None and self._handlers:
                self._handlers[2](key)
