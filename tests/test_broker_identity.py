"""The device channel's identities and ACL, on the real broker set up as the stack's is.

Each attack an attacker on the same network tried against the open broker is a test here:
every client must prove who it is with a certificate from the stack's CA, a site reads and
writes only its own topics, and a client id belongs to the certificate that owns it.
"""

from __future__ import annotations

import queue
import time

import pytest

from edgeplane import protocol
from edgeplane.protocol import Inventory, MachineReport, Presence, Result
from edgeplane_dev.mosquitto import ingest_process_part
from edgeplane_dev.pki import LocalCa, PkiError, cloud_identity
from tests.support import wait_until
from tests.tls_support import connect

ATTACKER = "trust-site-b"
VICTIM = "trust-site-a"


@pytest.fixture
def ingest(secure_broker):
    """The cloud's ingest subscription, as the bridge has it."""
    peer = connect(secure_broker.port, secure_broker.identity(cloud_identity("ingest")))
    peer.subscribe(protocol.UP_FILTER)
    yield peer
    peer.close()


def quiet(peer, seconds: float = 0.5) -> list:
    """What ``peer`` receives in the next ``seconds``."""
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            got.append(peer.received.get(timeout=left))
        except queue.Empty:
            break
    return got


def test_a_client_without_a_certificate_is_refused(secure_broker):
    with pytest.raises(ConnectionError):
        connect(secure_broker.port, None, ca_file=str(secure_broker.ca.ca_file))


def test_a_client_in_clear_text_is_refused(secure_broker):
    with pytest.raises(ConnectionError):
        connect(secure_broker.port, None, tls=False)


def test_a_certificate_from_another_ca_is_refused(secure_broker, tmp_path):
    stranger = LocalCa(tmp_path / "other-ca").ensure().identity(VICTIM)
    with pytest.raises(ConnectionError):
        connect(secure_broker.port, stranger)


def test_no_certificate_is_issued_for_a_name_with_topic_wildcards(tmp_path):
    ca = LocalCa(tmp_path / "ca").ensure()
    for name in ("+", "#", "site/a", "cloud.+", "Site-A", ""):
        with pytest.raises(PkiError):
            ca.identity(name)


def test_a_site_reads_only_its_own_plans(secure_broker):
    victim = connect(secure_broker.port, secure_broker.identity(VICTIM))
    attacker = connect(secure_broker.port, secure_broker.identity(ATTACKER))
    cloud = connect(secure_broker.port, secure_broker.identity(cloud_identity("api")))
    try:
        victim.subscribe(protocol.down_filter(VICTIM))
        codes = attacker.subscribe("#")
        attacker.subscribe(protocol.down_filter(VICTIM))
        attacker.subscribe(protocol.down_filter(ATTACKER))
        cloud.publish(protocol.plan_topic(VICTIM), b'{"a": "plan for the victim"}')
        marker = protocol.plan_topic(ATTACKER)
        cloud.publish(marker, b'{"a": "plan for the attacker"}')
        assert [m.topic for m in attacker.messages(until_topic=marker)] == [marker], codes
        assert victim.received.get(timeout=10).payload == b'{"a": "plan for the victim"}'
    finally:
        for peer in (victim, attacker, cloud):
            peer.close()


def test_a_site_cannot_report_for_another_site_or_send_plans(secure_broker, ingest):
    """Forged presence, inventory and result for the victim, and a plan straight to the
    victim's (or its own) plan topic: the broker takes none of them; the attacker's own
    report, sent last, is the only thing the cloud receives."""
    attacker = connect(secure_broker.port, secure_broker.identity(ATTACKER))
    victim = connect(secure_broker.port, secure_broker.identity(VICTIM))
    try:
        victim.subscribe(protocol.down_filter(VICTIM))
        forged = [
            Presence(site=VICTIM, online=False, session=9e12),
            Inventory(site=VICTIM, machines=[MachineReport(id="srv-9", protocol="redfish",
                                                           address="https://10.0.0.9")]),
            Result(site=VICTIM, execution_id=f"r1.{VICTIM}", seq=9999, state="succeeded"),
        ]
        for message in forged:
            attacker.publish(protocol.up_topic(VICTIM, message.KIND), message.encode(),
                             retain=isinstance(message, Presence))
        attacker.publish(protocol.plan_topic(VICTIM), b'{"kind": "plan"}')
        attacker.publish(protocol.plan_topic(ATTACKER), b'{"kind": "plan"}')
        own = Presence(site=ATTACKER, online=True, session=1.0)
        own_topic = protocol.up_topic(ATTACKER, Presence.KIND)
        attacker.publish(own_topic, own.encode())
        arrived = ingest.messages(until_topic=own_topic)
        assert [m.topic for m in arrived] == [own_topic]
        assert quiet(victim) == []
    finally:
        attacker.close()
        victim.close()


def test_a_client_id_belongs_to_its_certificate(secure_broker, ingest):
    """Connecting with the ingest bridge's or the victim's client id, under another
    certificate, takes over neither session: the broker uses the certificate's name."""
    victim = connect(secure_broker.port, secure_broker.identity(VICTIM), client_id=VICTIM,
                     clean_session=False)
    cloud = connect(secure_broker.port, secure_broker.identity(cloud_identity("api")))
    try:
        victim.subscribe(protocol.down_filter(VICTIM))
        for n, client_id in enumerate((cloud_identity("ingest"), VICTIM)):
            impostor = connect(secure_broker.port, secure_broker.identity(ATTACKER),
                               client_id=client_id, clean_session=False)
            try:
                impostor.subscribe("#")
                assert not ingest.disconnected.is_set()
                assert not victim.disconnected.is_set()
                plan = f'{{"plan": {n}}}'.encode()
                cloud.publish(protocol.plan_topic(VICTIM), plan)
                assert victim.received.get(timeout=10).payload == plan
                report = protocol.up_topic(VICTIM, Presence.KIND)
                victim.publish(report, Presence(site=VICTIM, online=True,
                                                session=2.0 + n).encode())
                assert [m.topic for m in ingest.messages(until_topic=report)] == [report]
                assert quiet(impostor, 0.2) == []
            finally:
                impostor.close()
    finally:
        victim.close()
        cloud.close()


def test_each_ingest_process_sends_plans_as_an_identity_of_its_own(secure_broker):
    """The bridge's ingest processes dispatch plans side by side: as one identity they
    would share one client id, and each connection would end the other's in turns (the
    plans of a wave then wait for the next round); as their own they both stay."""
    victim = connect(secure_broker.port, secure_broker.identity(VICTIM))
    senders = [connect(secure_broker.port,
                       secure_broker.identity(cloud_identity(ingest_process_part(n))))
               for n in range(2)]
    try:
        victim.subscribe(protocol.down_filter(VICTIM))
        for n, sender in enumerate(senders):
            sender.publish(protocol.plan_topic(VICTIM), f'{{"from": {n}}}'.encode())
        got = sorted(victim.received.get(timeout=10).payload for _ in senders)
        assert got == [b'{"from": 0}', b'{"from": 1}']
        assert not any(sender.disconnected.is_set() for sender in senders)

        twin = connect(secure_broker.port,
                       secure_broker.identity(cloud_identity(ingest_process_part(0))))
        try:
            wait_until(senders[0].disconnected.is_set)  # one identity: one connection
            assert not senders[1].disconnected.is_set()
        finally:
            twin.close()
    finally:
        for peer in (victim, *senders):
            peer.close()
