"""How the cloud sends messages to sites: ``publish(topic, payload)``, at least once (QoS 1).

Two implementations behind one interface: ``IotDataPublisher`` (the AWS IoT data plane, in
the cloud) and ``MqttPublisher`` (paho-mqtt to a broker, for the local stack). Both raise
``PublishFailed`` when the broker did not acknowledge, and create their client on first use,
never at import. ``current()`` returns the process-wide one chosen by EDGEPLANE_PUBLISHER
("iot", "mqtts://host:port" with this process's certificate, see
``settings.mqtt_identity``, or "mqtt://host:port" for a broker without TLS); ``install()``
replaces it (tests, embedding).

``unavailable(publisher)`` says, without waiting for the broker, why it would not take a
message now (None: it would). Dispatch asks before it claims a site's plan, so that a
request (creating or resuming a rollout) never waits on a broker that is down: the plans
stay queued and the next dispatch (the tick, a result) sends them once it is back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from chalicelib import settings
from chalicelib.errors import BadRequest, NotConfigured, PublishFailed

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

LOG = logging.getLogger(__name__)

QOS = 1
# What a request may spend learning that the broker is not there: a first connection's TCP
# and TLS handshake (refused at once when nothing listens) and its CONNACK.
CONNECT_TIMEOUT = 2.0
# After IoT Core failed a publish, it counts as unavailable this long (there is no cheap way
# to ask it): dispatches meanwhile leave their plans queued instead of each timing out.
IOT_FAILURE_HOLD = 30.0


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes) -> None:
        """Deliver to the broker at least once; raise PublishFailed if it did not take it."""


def unavailable(publisher: Publisher) -> str | None:
    """Why ``publisher``'s broker would not take a message now; None if it would (or if the
    publisher cannot tell: then only a publish will)."""
    check = getattr(publisher, "unavailable", None)
    return check() if check is not None else None


class IotDataPublisher:
    """AWS IoT Core through the ``iot-data`` API (one HTTPS call per message)."""

    def __init__(self, endpoint: str | None = None, region: str | None = None,
                 client_factory: Any = None, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        if endpoint and "://" not in endpoint:
            endpoint = f"https://{endpoint}"  # the console shows the bare ATS host name
        self.endpoint = endpoint
        self.region = region
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._clock = clock
        self._failed: tuple[float, str] | None = None  # when the last publish failed, why

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                if self._client_factory is not None:
                    self._client = self._client_factory()
                else:
                    import boto3  # only the cloud path needs it
                    from botocore.config import Config

                    # Bounded: a request that dispatches waits seconds, not botocore's
                    # minute, for an IoT Core that does not answer.
                    self._client = boto3.client(
                        "iot-data", endpoint_url=self.endpoint, region_name=self.region,
                        config=Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=5,
                                      retries={"total_max_attempts": 2, "mode": "standard"}))
            return self._client

    def publish(self, topic: str, payload: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._get_client().publish(topic=topic, qos=QOS, payload=payload)
        except (BotoCoreError, ClientError) as exc:
            self._failed = (self._clock(), f"AWS IoT: {exc}")
            raise PublishFailed(topic=topic, reason=f"AWS IoT: {exc}") from exc
        self._failed = None

    def unavailable(self) -> str | None:
        """The last publish's failure, for ``IOT_FAILURE_HOLD`` seconds after it."""
        failed = self._failed
        if failed is None or self._clock() - failed[0] > IOT_FAILURE_HOLD:
            return None
        return f"{failed[1]} ({self._clock() - failed[0]:.0f} s ago)"


class MqttPublisher:
    """One paho-mqtt connection, opened on first publish and kept; safe across threads.

    paho is imported on first use: the Lambda bundle (which publishes through IoT Core)
    does not ship it.
    """

    def __init__(self, host: str, port: int, client_id: str | None = None,
                 timeout: float = 10.0, identity: settings.MqttIdentity | None = None) -> None:
        self.host = host
        self.port = port
        # A broker that takes the client id from the certificate ignores this one.
        self.client_id = client_id or f"edgeplane-cloud-{uuid.uuid4().hex[:12]}"
        self.timeout = timeout
        self.identity = identity
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._ever_connected = False  # False: the first CONNACK may still be on its way

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.identity else 'mqtt'}://{self.host}:{self.port}"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._connect_error = f"broker refused the connection: {reason_code}"
            LOG.error("publisher %s: %s", self.where, self._connect_error)
            return
        self._connect_error = None
        self._ever_connected = True
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        if reason_code.is_failure:
            self._connect_error = f"connection lost ({reason_code}); reconnecting"
            LOG.warning("publisher %s: connection lost (%s); paho reconnects", self.where,
                        reason_code)

    def _connect(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

        with self._lock:
            if self._client is not None:
                return self._client
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                 protocol=mqtt.MQTTv311, clean_session=True)
            client.reconnect_delay_set(1, 30)
            if self.identity is not None:
                client.tls_set(ca_certs=self.identity.ca_file,
                               certfile=self.identity.cert_file,
                               keyfile=self.identity.key_file)
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.connect_timeout = min(self.timeout, CONNECT_TIMEOUT)
            try:
                rc = client.connect(self.host, self.port, keepalive=60)
            except OSError as exc:
                self._connect_error = f"cannot reach {self.where}: {exc}"
                raise PublishFailed(topic="(connect)", reason=self._connect_error) from exc
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connect_error = f"connect to {self.where}: {mqtt.error_string(rc)}"
                raise PublishFailed(topic="(connect)", reason=self._connect_error)
            rc = client.loop_start()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise PublishFailed(topic="(connect)",
                                    reason=f"loop_start: {mqtt.error_string(rc)}")
            self._client = client
            return client

    def publish(self, topic: str, payload: bytes) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import MQTTErrorCode

        client = self._connect()
        if not self._connected.wait(self.timeout):
            reason = self._connect_error or f"not connected to {self.where} after " \
                                            f"{self.timeout:.0f} s"
            raise PublishFailed(topic=topic, reason=reason)
        info = client.publish(topic, payload, qos=QOS)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise PublishFailed(topic=topic, reason=mqtt.error_string(info.rc))
        try:
            info.wait_for_publish(self.timeout)
        except (ValueError, RuntimeError) as exc:
            raise PublishFailed(topic=topic, reason=str(exc)) from exc
        if not info.is_published():
            raise PublishFailed(topic=topic, reason=f"no PUBACK from {self.where} within "
                                                    f"{self.timeout:.0f} s")

    def unavailable(self) -> str | None:
        """None while connected; else why not (connecting first if no connection was
        opened yet). Waits only for a first connection: its handshake and CONNACK, at
        most ``CONNECT_TIMEOUT`` each; a connection lost is reported at once (paho
        reconnects meanwhile)."""
        try:
            self._connect()
        except PublishFailed:
            return self._connect_error or f"cannot reach {self.where}"
        if self._connected.wait(0 if self._ever_connected else CONNECT_TIMEOUT):
            return None
        return self._connect_error or f"not connected to {self.where}"

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
            self._connected.clear()
            self._ever_connected = False


def from_spec(spec: str, iot_endpoint: str | None = None, region: str | None = None,
              identity: settings.MqttIdentity | None = None) -> Publisher:
    """Build a publisher from EDGEPLANE_PUBLISHER's value: "iot", "mqtts://host:port"
    (TLS, with ``identity``) or "mqtt://host:port"."""
    if spec == "iot":
        return IotDataPublisher(iot_endpoint, region)
    parts = urlsplit(spec)
    if parts.scheme in ("mqtt", "mqtts") and parts.hostname:
        if parts.scheme == "mqtts" and identity is None:
            raise BadRequest(f"EDGEPLANE_PUBLISHER is {spec!r}, but this process has no "
                             "broker identity: set EDGEPLANE_MQTT_CA, EDGEPLANE_MQTT_CERT "
                             "and EDGEPLANE_MQTT_KEY")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError:
            port = None
        if port:
            return MqttPublisher(parts.hostname, port,
                                 identity=identity if parts.scheme == "mqtts" else None)
    raise BadRequest(f"EDGEPLANE_PUBLISHER is {spec!r}; use 'iot', 'mqtts://host:port' or "
                     "'mqtt://host:port'")


_current: Publisher | None = None
_current_key: tuple[object, ...] | None = None
_installed = False
_current_lock = threading.Lock()


def current() -> Publisher:
    """The process-wide publisher: the installed one, else one built from the settings."""
    global _current, _current_key
    with _current_lock:
        if _installed and _current is not None:
            return _current
        conf = settings.load()
        try:
            identity = settings.mqtt_identity()
        except ValueError as exc:
            raise NotConfigured(setting="EDGEPLANE_MQTT_CERT",
                                consequence=str(exc)) from None
        key = (conf.publisher, conf.iot_endpoint, conf.region, identity)
        if _current is None or _current_key != key:
            _close(_current)
            try:
                _current = from_spec(conf.publisher, conf.iot_endpoint, conf.region, identity)
            except BadRequest as exc:
                raise NotConfigured(setting="EDGEPLANE_PUBLISHER",
                                    consequence=exc.message) from None
            _current_key = key
        return _current


def install(publisher: Publisher | None) -> None:
    """Use ``publisher`` from now on (None: go back to the one the settings describe)."""
    global _current, _current_key, _installed
    with _current_lock:
        if _current is not publisher:
            _close(_current)
        _current, _current_key, _installed = publisher, None, publisher is not None


def _close(publisher: Publisher | None) -> None:
    close = getattr(publisher, "close", None)
    if close is not None:
        close()
