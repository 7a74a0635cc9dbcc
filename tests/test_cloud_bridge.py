"""The local bridge (plays the IoT rule): a real mosquitto in, the ingest handler, moto."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from botocore.exceptions import EndpointConnectionError
from paho.mqtt.enums import CallbackAPIVersion
from pynamodb.exceptions import UpdateError

from chalicelib.ingest import handle_message, handle_messages
from chalicelib.models import Machine, Site
from edgeplane import protocol
from edgeplane_dev.bridge import run_bridge
from tests.support import up, wait_until


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


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish many reports (QoS 1) over one connection; return once the broker has all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gw-storm")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        sent = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in sent:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


@contextmanager
def bridge(port: int, handler: Callable[[str, bytes], None] | None = handle_message,
           client_id: str = "test-bridge", **options: Any) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=run_bridge, args=("127.0.0.1", port),
                              kwargs={"handler": handler, "client_id": client_id,
                                      "stop_event": stop, **options}, daemon=True)
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


def test_a_presence_message_updates_the_site(aws, broker):
    # Retained, as gateways send it: the bridge gets it when it subscribes.
    publish(broker.port, protocol.Presence(site="shop-1", online=True, session=1.0,
                                           gateway_version="0.3.0"), retain=True)
    with bridge(broker.port):
        wait_until(lambda: online("shop-1"))
    assert Site.get("shop-1").gateway_version == "0.3.0"


def test_a_failing_handler_is_logged_and_the_bridge_carries_on(aws, broker, caplog):
    def handler(topic: str, payload: bytes) -> None:
        if "/shop-1/" in topic:
            raise RuntimeError("boom")
        handle_message(topic, payload)

    publish(broker.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    publish(broker.port, protocol.Presence(site="shop-2", session=1.0), retain=True)
    with bridge(broker.port, handler):
        wait_until(lambda: online("shop-2"))
    assert "handling a message on edgeplane/v1/sites/shop-1/up/presence failed" in caplog.text
    assert "boom" in caplog.text


def test_reports_sent_while_the_bridge_is_down_arrive_when_it_returns(aws, broker):
    publish(broker.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    with bridge(broker.port, client_id="persistent-bridge"):
        wait_until(lambda: online("shop-1"))  # subscribed: the session now exists
    inventory = protocol.Inventory(site="shop-1", machines=[protocol.MachineReport(
        id="srv-1", protocol="ipmi", address="10.0.0.5", capabilities=["power"])])
    publish(broker.port, inventory)  # not retained: only the persistent session keeps it
    with bridge(broker.port, client_id="persistent-bridge"):
        wait_until(lambda: list(Machine.query("shop-1")))
    assert Machine.get("shop-1", "srv-1").capabilities == ["power"]


def test_the_bridge_resubscribes_after_the_broker_restarts(aws, broker):
    publish(broker.port, protocol.Presence(site="shop-1", session=1.0), retain=True)
    with bridge(broker.port):
        wait_until(lambda: online("shop-1"))
        broker.stop()  # no persistence: the broker forgets the session and retained msgs
        broker.start()
        # Keep publishing until the bridge is back and subscribed (paho backs off >= 1 s).
        message = protocol.Presence(site="shop-2", session=1.0)
        wait_until(lambda: publish(broker.port, message) or online("shop-2"),
                   timeout=15, interval=0.2)


def test_a_reconnect_storm_is_taken_a_bounded_batch_at_a_time_and_stored_once(
        aws, broker, bus_events):
    sites = [f"shop-{n:04d}" for n in range(300)]
    with bridge(broker.port, client_id="storm-bridge"):
        # once a report goes through, the bridge's persistent session is subscribed: the
        # broker keeps what comes next while the bridge is down
        wait_until(lambda: publish(broker.port, protocol.Presence(site="shop-x")) or
                   online("shop-x"), timeout=15, interval=0.2)
    bus_events("")
    # An outage ends: every site is back at once, and QoS 1 delivers a third twice.
    reports = [up(protocol.Presence(site=site, online=True, session=2.0)) for site in sites]
    publish_all(broker.port, reports + reports[::3])
    handed, running, most = [], [0], [0]
    lock = threading.Lock()

    def counting(batch: list[tuple[str, bytes]]) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            handed.append(len(batch))
        try:
            handle_messages(batch)
        finally:
            with lock:
                running[0] -= 1

    with bridge(broker.port, handler=None, client_id="storm-bridge",
                batch_handler=counting, workers=4, batch_size=50):
        wait_until(lambda: sum(handed) >= len(reports) * 4 // 3, timeout=60)
    assert max(handed) <= 50 and most[0] <= 4, "at most 4 batches of 50 in hand at once"
    stored = {site.site_id: (site.online, site.presence_session)
              for site in Site.batch_get(sites)}
    assert stored == {site: (True, 2.0) for site in sites}, "no report lost"
    changed = [event["detail"]["site_id"] for event in bus_events("Site Presence Changed")]
    assert sorted(changed) == sites, "each site's change stored and announced once"


def test_reports_wait_unacknowledged_while_the_store_does_not_answer(broker, caplog):
    caplog.set_level(logging.INFO, logger="edgeplane_dev.bridge")
    store_answers = threading.Event()
    stored: list[bytes] = []  # the reports, not the probe

    def handler(topic: str, payload: bytes) -> None:
        if not store_answers.is_set():  # what pynamodb raises when the store is down
            raise UpdateError("Failed to update item",
                              EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
        if "shop-probe" in topic:
            probed.set()
        else:
            stored.append(payload)

    probed = threading.Event()

    store_answers.set()
    with bridge(broker.port, handler, client_id="holding-bridge"):
        probe = protocol.Presence(site="shop-probe", session=1.0)  # the session exists
        wait_until(lambda: publish(broker.port, probe) or probed.is_set(), timeout=15,
                   interval=0.2)
        store_answers.clear()
        reports = [protocol.Presence(site=f"shop-{n}", session=1.0) for n in range(3)]
        for report in reports:
            publish(broker.port, report)
        wait_until(lambda: "the store does not answer" in caplog.text, timeout=10)
        store_answers.set()
        wait_until(lambda: len(stored) == 3, timeout=15, what="the held reports stored")
        assert "the store answers again" in caplog.text
        store_answers.clear()
        later = protocol.Presence(site="shop-later", session=1.0)
        publish(broker.port, later)
        wait_until(lambda: caplog.text.count("the store does not answer") == 2, timeout=10)
    # Stopped while holding it: unacknowledged, so the broker hands it to the next session.
    assert "stopping with 1 messages not stored" in caplog.text
    store_answers.set()
    with bridge(broker.port, handler, client_id="holding-bridge"):
        wait_until(lambda: len(stored) == 4, timeout=15, what="the report redelivered")
    assert sorted(stored) == sorted(up(r)[1] for r in [*reports, later]), \
        "each report stored once, none dropped"
