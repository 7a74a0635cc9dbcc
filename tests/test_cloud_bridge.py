"""The local bridge (plays the IoT rule): a real mosquitto in, the ingest handler, moto."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from chalicelib.ingest import handle_message
from chalicelib.models import Machine, Site
from edgeplane import protocol
from edgeplane.dev.bridge import run_bridge
from tests.cloud_fixtures import aws, mosquitto, moto_dynamodb, up, wait_until

FIXTURES = (aws, mosquitto, moto_dynamodb)


def publish(port: int, message: protocol.Message, retain: bool = False) -> None:
    """Publish as a gateway would (QoS 1), and wait until the broker has it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{message.site}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        topic, payload = up(message)
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def bridge(port: int, handler: Callable[[str, bytes], None] = handle_message,
           client_id: str = "test-bridge") -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=run_bridge, args=("127.0.0.1", port),
                              kwargs={"handler": handler, "client_id": client_id,
                                      "stop_event": stop}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def online(site_id: str) -> bool:
    try:
        return bool(Site.get(site_id, consistent_read=True).online)
    except Site.DoesNotExist:
        return False


def test_a_presence_message_updates_the_site(aws, mosquitto):
    # Retained, as gateways send it: the bridge gets it when it subscribes.
    publish(mosquitto.port, protocol.Presence(site="shop-1", online=True, session=1.0,
                                              gateway_version="0.3.0"), retain=True)
    with bridge(mosquitto.port):
        wait_until(lambda: online("shop-1"))
    assert Site.get("shop-1").gateway_version == "0.3.0"


def test_a_failing_handler_is_logged_and_the_bridge_carries_on(aws, mosquitto, caplog):
    def handler(topic: str, payload: bytes) -> None:
        if "/shop-1/" in topic:
            raise RuntimeError("boom")
        handle_message(topic, payload)

    publish(mosquitto.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    publish(mosquitto.port, protocol.Presence(site="shop-2", session=1.0), retain=True)
    with bridge(mosquitto.port, handler):
        wait_until(lambda: online("shop-2"))
    assert "handling a message on edgeplane/v1/sites/shop-1/up/presence failed" in caplog.text
    assert "boom" in caplog.text


def test_reports_sent_while_the_bridge_is_down_arrive_when_it_returns(aws, mosquitto):
    publish(mosquitto.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    with bridge(mosquitto.port, client_id="persistent-bridge"):
        wait_until(lambda: online("shop-1"))  # subscribed: the session now exists
    inventory = protocol.Inventory(site="shop-1", machines=[protocol.MachineReport(
        id="srv-1", protocol="ipmi", address="10.0.0.5", capabilities=["power"])])
    publish(mosquitto.port, inventory)  # not retained: only the persistent session keeps it
    with bridge(mosquitto.port, client_id="persistent-bridge"):
        wait_until(lambda: list(Machine.query("shop-1")))
    assert Machine.get("shop-1", "srv-1").capabilities == ["power"]


def test_the_bridge_resubscribes_after_the_broker_restarts(aws, mosquitto):
    publish(mosquitto.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    with bridge(mosquitto.port):
        wait_until(lambda: online("shop-1"))
        mosquitto.stop()  # no persistence: the broker forgets the session and retained msgs
        mosquitto.start()
        # Keep publishing until the bridge is back and subscribed (paho backs off >= 1 s).
        message = protocol.Presence(site="shop-2", session=1.0)
        wait_until(lambda: publish(mosquitto.port, message) or online("shop-2"),
                   timeout=15, interval=0.2)
