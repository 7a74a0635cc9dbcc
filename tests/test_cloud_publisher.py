"""The publishers: IoT data plane (autospec'd boto3 client: IoT Core cannot run here) and
MQTT against a real mosquitto."""

from __future__ import annotations

import threading
from unittest import mock

import boto3
import paho.mqtt.client as mqtt
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from paho.mqtt.enums import CallbackAPIVersion

from chalicelib import publisher
from chalicelib.errors import NotConfigured, PublishFailed
from chalicelib.publisher import IotDataPublisher, MqttPublisher
from edgeplane import protocol
from edgeplane_dev.pki import cloud_identity
from edgeplane_dev.ports import free_port
from tests.support import REGION, call, wait_until
from tests.tls_support import connect

TOPIC = protocol.plan_topic("shop-1")


# --- AWS IoT data plane ----------------------------------------------------------------


@pytest.fixture
def iot_client():
    real = boto3.client("iot-data", region_name=REGION,
                        endpoint_url="https://example-ats.iot.us-east-1.amazonaws.com")
    return mock.create_autospec(real, instance=True)


def test_iot_publishes_qos1(iot_client):
    sender = IotDataPublisher(client_factory=lambda: iot_client)
    sender.publish(TOPIC, b'{"x":1}')
    iot_client.publish.assert_called_once_with(topic=TOPIC, qos=1, payload=b'{"x":1}')


@pytest.mark.parametrize("error", [
    ClientError({"Error": {"Code": "ForbiddenException", "Message": "no"}}, "Publish"),
    EndpointConnectionError(endpoint_url="https://example"),
])
def test_iot_errors_become_publish_failed(iot_client, error):
    iot_client.publish.side_effect = error
    sender = IotDataPublisher(client_factory=lambda: iot_client)
    with pytest.raises(PublishFailed, match=f"could not publish to '{TOPIC}': AWS IoT: "):
        sender.publish(TOPIC, b"{}")


def test_iot_client_is_created_on_first_publish_with_the_endpoint():
    with mock.patch("boto3.client", autospec=True) as factory:
        sender = IotDataPublisher("abc-ats.iot.eu-west-1.amazonaws.com", "eu-west-1")
        factory.assert_not_called()
        sender.publish(TOPIC, b"{}")
        sender.publish(TOPIC, b"{}")
    factory.assert_called_once_with("iot-data",
                                    endpoint_url="https://abc-ats.iot.eu-west-1.amazonaws.com",
                                    region_name="eu-west-1", config=mock.ANY)
    config = factory.call_args.kwargs["config"]
    assert config.connect_timeout <= publisher.CONNECT_TIMEOUT, "a request waits seconds"
    assert config.retries["total_max_attempts"] <= 2


def test_iot_counts_as_unavailable_for_a_while_after_a_failed_publish(iot_client):
    now = [1000.0]
    sender = IotDataPublisher(client_factory=lambda: iot_client, clock=lambda: now[0])
    assert publisher.unavailable(sender) is None
    iot_client.publish.side_effect = EndpointConnectionError(endpoint_url="https://iot")
    with pytest.raises(PublishFailed):
        sender.publish(TOPIC, b"{}")
    assert "Could not connect to the endpoint URL" in publisher.unavailable(sender)
    now[0] += publisher.IOT_FAILURE_HOLD + 1
    assert publisher.unavailable(sender) is None, "asked again once the hold is over"
    iot_client.publish.side_effect = None
    sender.publish(TOPIC, b"{}")
    assert publisher.unavailable(sender) is None


# --- choosing from the settings ---------------------------------------------------------


def test_from_spec():
    assert isinstance(publisher.from_spec("iot"), IotDataPublisher)
    mqtt_publisher = publisher.from_spec("mqtt://127.0.0.1:1884")
    assert isinstance(mqtt_publisher, MqttPublisher)
    assert (mqtt_publisher.host, mqtt_publisher.port) == ("127.0.0.1", 1884)
    with pytest.raises(Exception, match="use 'iot', 'mqtts://host:port' or 'mqtt://host:port'"):
        publisher.from_spec("kafka://x")
    with pytest.raises(Exception, match="no broker identity: set EDGEPLANE_MQTT_CA"):
        publisher.from_spec("mqtts://127.0.0.1:8883")


def test_an_identity_needs_all_three_files(monkeypatch):
    publisher.install(None)
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", "mqtts://127.0.0.1:8883")
    monkeypatch.setenv("EDGEPLANE_MQTT_CERT", "/etc/edgeplane/cloud.pem")
    with pytest.raises(NotConfigured, match="EDGEPLANE_MQTT_CA, EDGEPLANE_MQTT_KEY unset"):
        publisher.current()


def test_publishes_over_tls_as_its_own_identity(secure_broker, monkeypatch):
    """The cloud's part publishes a plan through the broker that requires certificates;
    the site gets it. Without its certificate it is refused, clearly."""
    site = "publisher-site"
    receiver = connect(secure_broker.port, secure_broker.identity(site))
    try:
        receiver.subscribe(protocol.down_filter(site))
        monkeypatch.setenv("EDGEPLANE_PUBLISHER", f"mqtts://127.0.0.1:{secure_broker.port}")
        for name, value in secure_broker.identity(cloud_identity("api")).env().items():
            monkeypatch.setenv(name, value)
        publisher.install(None)
        publisher.current().publish(protocol.plan_topic(site), b'{"over": "tls"}')
        assert receiver.received.get(timeout=10).payload == b'{"over": "tls"}'
    finally:
        publisher.install(None)
        receiver.close()
    anonymous = MqttPublisher("127.0.0.1", secure_broker.port, timeout=2)
    with pytest.raises(PublishFailed):
        anonymous.publish(protocol.plan_topic(site), b"{}")
    anonymous.close()


def test_current_follows_the_settings(monkeypatch):
    publisher.install(None)
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", "mqtt://127.0.0.1:1999")
    first = publisher.current()
    assert isinstance(first, MqttPublisher) and first.port == 1999
    assert publisher.current() is first
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", "iot")
    assert isinstance(publisher.current(), IotDataPublisher)
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", "carrier-pigeon")
    with pytest.raises(NotConfigured, match="EDGEPLANE_PUBLISHER is not configured"):
        publisher.current()
    publisher.install(None)


# --- MQTT, against a real broker -------------------------------------------------------


class Subscriber:
    def __init__(self, port: int, topic_filter: str) -> None:
        self.received: list[tuple[str, bytes, int]] = []
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self.client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.client.on_subscribe = lambda *_: ready.set()
        self.client.on_message = lambda c, u, m: self.received.append(
            (m.topic, m.payload, m.qos))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber(broker):
    sub = Subscriber(broker.port, "edgeplane/#")
    yield sub
    sub.close()


@pytest.fixture
def mqtt_publisher(broker):
    sender = MqttPublisher("127.0.0.1", broker.port, timeout=5)
    yield sender
    sender.close()


def test_mqtt_publish_reaches_a_subscriber_with_qos1(mqtt_publisher, subscriber):
    mqtt_publisher.publish(TOPIC, b'{"hello":1}')
    wait_until(lambda: subscriber.received)
    assert subscriber.received == [(TOPIC, b'{"hello":1}', 1)]


def test_mqtt_publish_from_many_threads_shares_one_connection(mqtt_publisher, subscriber):
    errors: list[Exception] = []

    def send(n: int) -> None:
        try:
            for i in range(20):
                mqtt_publisher.publish(f"edgeplane/v1/sites/shop-{n}/down/plan",
                                       f"{n}-{i}".encode())
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    wait_until(lambda: len(subscriber.received) == 100)
    assert sorted(p for _, p, _ in subscriber.received) == sorted(
        f"{n}-{i}".encode() for n in range(5) for i in range(20))


def test_mqtt_publish_without_a_broker_fails_clearly():
    port = free_port()
    sender = MqttPublisher("127.0.0.1", port, timeout=1)
    try:
        with pytest.raises(PublishFailed, match=f"cannot reach mqtt://127.0.0.1:{port}"):
            sender.publish(TOPIC, b"{}")
    finally:
        sender.close()


def test_mqtt_publisher_reconnects_after_a_broker_restart(broker, mqtt_publisher):
    mqtt_publisher.publish(TOPIC, b"1")
    broker.stop()
    broker.start()  # same port
    sub = Subscriber(broker.port, TOPIC)
    try:
        mqtt_publisher.publish(TOPIC, b"2")  # waits for paho's reconnect (1 s backoff)
        wait_until(lambda: sub.received)
        assert [p for _, p, _ in sub.received] == [b"2"]
    finally:
        sub.close()


# --- the API, publishing to a real broker -------------------------------------------------


def test_a_rollout_plan_reaches_the_broker(api, broker, subscriber, monkeypatch):
    publisher.install(None)  # use the settings, not the recording publisher
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", f"mqtt://127.0.0.1:{broker.port}")
    try:
        call(api, "PUT", "/sites/shop-1", {})
        call(api, "PUT", "/sites/shop-1/machines/srv-1", {"protocol": "ipmi",
                                                          "address": "10.0.0.5"})
        status, body = call(api, "POST", "/rollouts", {
            "sites": ["shop-1"], "steps": [{"task": "power.ensure", "params": {"state": "on"}}]})
        assert status == 201 and body["executions"][0]["state"] == "sent"
        wait_until(lambda: subscriber.received)
        topic, payload, qos = subscriber.received[0]
        plan = protocol.decode(payload, topic)
        assert (topic, qos) == (TOPIC, 1)
        assert plan.execution_id == body["executions"][0]["execution_id"]
    finally:
        publisher.install(None)  # closes the MQTT connection


# --- a broker that is down: nothing waits for it -------------------------------------------


def test_without_a_broker_the_publisher_says_so_without_waiting_for_it():
    port = free_port()
    sender = MqttPublisher("127.0.0.1", port, timeout=30)
    try:
        assert f"cannot reach mqtt://127.0.0.1:{port}" in publisher.unavailable(sender)
    finally:
        sender.close()


def test_a_broker_that_goes_away_is_reported_until_it_is_back(broker, mqtt_publisher):
    assert publisher.unavailable(mqtt_publisher) is None
    broker.stop()
    wait_until(lambda: publisher.unavailable(mqtt_publisher) is not None,
               what="the publisher noticing the broker gone")
    assert "connection lost" in publisher.unavailable(mqtt_publisher)
    broker.start()
    wait_until(lambda: publisher.unavailable(mqtt_publisher) is None, timeout=15,
               what="paho reconnecting")


SITES = ["shop-1", "shop-2", "shop-3"]


def test_a_rollout_created_while_the_broker_is_down_goes_out_once_it_is_back(
        api, broker, monkeypatch):
    from chalicelib.rollouts import tick

    publisher.install(None)  # use the settings, not the recording publisher
    monkeypatch.setenv("EDGEPLANE_PUBLISHER", f"mqtt://127.0.0.1:{broker.port}")
    receiver = None
    try:
        for site in SITES:
            call(api, "PUT", f"/sites/{site}", {})
            call(api, "PUT", f"/sites/{site}/machines/srv-1", {"protocol": "ipmi",
                                                                "address": "10.0.0.5"})
        assert call(api, "GET", "/health")[0] == 200
        broker.stop()

        status, body = call(api, "POST", "/rollouts", {
            "sites": SITES, "steps": [{"task": "power.ensure", "params": {"state": "on"}}]})
        assert status == 201
        assert [(e["state"], e["message"]) for e in body["executions"]] == \
            [("queued", None)] * 3, "stored, and no site's plan claimed or tried"
        # /health says so once its last answer (kept a few seconds) is over.
        wait_until(lambda: call(api, "GET", "/health")[0] == 503, timeout=15,
                   what="/health answering 503")
        health = call(api, "GET", "/health")[1]
        assert health["error"]["code"] == "unavailable"
        assert health["error"]["message"].startswith("down: the broker (connection lost"), \
            health

        broker.start()
        receiver = Subscriber(broker.port, "edgeplane/#")
        # The dispatcher (the tick) sends them once the publisher has reconnected.
        wait_until(lambda: tick.tick(publisher.current()) and len(receiver.received) == 3,
                   timeout=20, interval=0.5, what="the plans sent by the tick")
        rollout_id = body["rollout"]["rollout_id"]
        _, after = call(api, "GET", f"/rollouts/{rollout_id}")
        assert sorted(e["state"] for e in after["executions"]) == ["sent"] * 3
        assert sorted(protocol.decode(p, t).site for t, p, _ in receiver.received) == SITES
    finally:
        if receiver is not None:
            receiver.close()
        publisher.install(None)
