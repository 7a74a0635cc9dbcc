"""Nothing lost while the store is down: the bridge's spool, against the real pieces (the
broker over TLS with a certificate per client, as the local stack runs it, and dynalite
killed and started again).

The bridge acknowledges a report once it is stored or on disk in its spool; the spool is
bounded, and when it is full the bridge stops acknowledging, so the broker keeps the rest.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgeplane import protocol
from edgeplane_dev.pki import cloud_identity
from edgeplane_dev.spool import Spool
from edgeplane_dev.store import Store
from tests.support import REGION, up, wait_until
from tests.tls_support import SecureBroker, connect

MACHINES = ("srv-1", "srv-2")


# --- the spool alone ---------------------------------------------------------------------


def test_a_batch_past_a_bound_is_refused_whole_and_what_is_kept_survives_a_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_reports=3, max_bytes=1000)
    assert spool.put([("a/1", b"x" * 10), ("a/2", b"y" * 10)])
    assert not spool.put([("a/3", b"z"), ("a/4", b"w")]), "3 reports at most"
    assert not spool.put([("a/5", b"v" * 1000)]), "1000 bytes at most"
    spool.close()

    again = Spool(path, max_reports=3, max_bytes=1000)
    taken = again.take(10)
    assert [(topic, payload) for _, topic, payload in taken] == [("a/1", b"x" * 10),
                                                                  ("a/2", b"y" * 10)]
    again.bury(taken[0][0], "ValueError: not a report")
    again.remove([taken[1][0]])
    assert (again.waiting, again.dead) == (0, 1)
    assert again.dead_letters() == [("a/1", b"x" * 10, "ValueError: not a report")]
    assert again.redrive() == 1 and again.waiting == 1
    again.close()


# --- the bridge with its spool, against the real broker and store -------------------------


class Stored:
    """The cloud's ingestion, recording the reports each batch stored (after it did)."""

    def __init__(self) -> None:
        self.reports: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, batch: list[tuple[str, bytes]]) -> None:
        from chalicelib.ingest import handle_messages

        handle_messages(batch)
        with self._lock:
            self.reports += [payload for topic, payload in batch if "probe" not in topic]


@pytest.fixture
def store(tmp_path, moto_dynamodb) -> Iterator[Store]:
    """dynalite holding the tables (events go to moto, in this process)."""
    from chalicelib import models

    with Store(tmp_path / "store") as running:
        models.configure(running.url, "spool-", REGION)
        models.create_tables()
        try:
            yield running
        finally:
            models.forget_configuration()


@contextmanager
def bridge(broker: SecureBroker, spool: Path, stored: Stored,
           **options: object) -> Iterator[None]:
    """The bridge as the local stack runs it (TLS, ``cloud.ingest``), subscribed."""
    from edgeplane_dev.bridge import run_bridge

    stop = threading.Event()
    thread = threading.Thread(target=run_bridge, args=("127.0.0.1", broker.port), kwargs={
        "batch_handler": stored, "stop_event": stop, "spool": spool,
        "identity": broker.identity(cloud_identity("ingest")), **options}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


Report = tuple[str, bytes]  # (topic, payload)


def publish_as(broker: SecureBroker, site: str, reports: list[Report]) -> None:
    """As the site's gateway: its own certificate, QoS 1, each acknowledged by the broker."""
    peer = connect(broker.port, broker.identity(site), client_id=site)
    try:
        for topic, payload in reports:
            peer.publish(topic, payload)
    finally:
        peer.close()


def reports_of(site: str) -> list[Report]:
    """A gateway's first words: its presence, then its inventory (each message once: its
    id and ts are made when it is encoded)."""
    return [up(protocol.Presence(site=site, online=True, session=1.0)),
            up(protocol.Inventory(site=site, gateway_version="1.0", machines=[
                protocol.MachineReport(id=machine, protocol="ipmi", address="10.0.0.5",
                                       capabilities=["power"]) for machine in MACHINES]))]


def wait_subscribed(broker: SecureBroker, stored: Stored, store: Store) -> None:
    """A probe report goes through: the bridge's session is subscribed (the broker keeps
    what comes next for it)."""
    from chalicelib.models import Site

    probe = f"probe-{store.port}"

    def probed() -> bool:
        publish_as(broker, probe, [up(protocol.Presence(site=probe, session=1.0))])
        try:
            return Site.get(probe, consistent_read=True).online is not None
        except Site.DoesNotExist:
            return False

    wait_until(probed, timeout=20, interval=0.5, what="the bridge subscribed")


def all_stored(sites: list[str]) -> bool:
    from chalicelib.models import Machine, Site

    found = {site.site_id: site.online for site in Site.batch_get(sites)}
    machines = sum(1 for site in sites for _ in Machine.query(site, consistent_read=True))
    return found == dict.fromkeys(sites, True) and machines == len(sites) * len(MACHINES)


def ours(stored: Stored, published: list[bytes]) -> list[bytes]:
    """The reports stored that one test published (each as often as it was stored)."""
    mine = set(published)
    return [payload for payload in stored.reports if payload in mine]


def waiting_in(path: Path, published: list[bytes] | None = None) -> int:
    """The reports waiting in the spool; with ``published``, only those among them (a probe
    sent again while the bridge subscribed may be spooled too)."""
    spool = Spool(path)
    try:
        if published is None:
            return spool.waiting
        mine = set(published)
        return sum(1 for _, _, payload in spool.take(10_000) if payload in mine)
    finally:
        spool.close()


def test_reports_taken_while_the_store_is_down_wait_on_disk_and_are_all_stored(
        secure_broker, store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgeplane_dev.bridge")
    sites = [f"spooled-{store.port}-{n:02d}" for n in range(20)]
    spool = tmp_path / "bridge" / "spool.sqlite"
    stored = Stored()
    reports = {site: reports_of(site) for site in sites}
    published = [payload for site in sites for _, payload in reports[site]]
    # 2 batches of 5 in hand at most: 40 reports are more than the bridge can hold.
    with bridge(secure_broker, spool, stored, workers=2, batch_size=5):
        wait_subscribed(secure_broker, stored, store)
        store.kill()
        for site in sites:
            publish_as(secure_broker, site, reports[site])
        wait_until(lambda: waiting_in(spool, published) == len(published), timeout=60,
                   interval=0.5,
                   what="every report acknowledged into the spool")
        assert "the store does not answer" in caplog.text
    # The bridge stopped with the store still down: the spool is on disk. (The broker's
    # session for the bridge is shared across the test files: what another file left in
    # it may be stored before the store goes down, so only this test's reports count.)
    assert ours(stored, published) == [] and waiting_in(spool, published) == len(published)

    store.start()
    with bridge(secure_broker, spool, stored, workers=2, batch_size=5):
        wait_until(lambda: all_stored(sites), timeout=60, interval=0.5,
                   what="every site and machine stored")
        # 40, or more when the broker redelivered a report whose acknowledgement the
        # stopped bridge never sent (at least once: storing it twice changes nothing), or
        # what another file's bridge left in the shared session.
        spooled = wait_until(lambda: re.search(r"the (\d+) reports spooled are stored",
                                               caplog.text), timeout=10)
        assert int(spooled.group(1)) >= len(published)
    assert sorted(ours(stored, published)) == sorted(published), "each report stored once"
    assert waiting_in(spool) == 0
    assert "dropped" not in caplog.text


def test_a_full_spool_stops_the_acknowledgements_and_the_broker_keeps_the_rest(
        secure_broker, store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgeplane_dev.bridge")
    sites = [f"full-{store.port}-{n:02d}" for n in range(15)]
    spool = tmp_path / "spool.sqlite"
    stored = Stored()
    reports = {site: reports_of(site) for site in sites}
    published = [payload for site in sites for _, payload in reports[site]]
    with bridge(secure_broker, spool, stored, workers=1, batch_size=5,
                spool_max_reports=10):
        wait_subscribed(secure_broker, stored, store)
        store.kill()
        for site in sites:
            publish_as(secure_broker, site, reports[site])
        wait_until(lambda: "is full (10 reports" in caplog.text, timeout=60,
                   what="the spool full")
        assert waiting_in(spool) == 10, "the spool keeps no more than its bound"

        store.start()
        wait_until(lambda: all_stored(sites), timeout=90, interval=0.5,
                   what="every site and machine stored")
    # (The bridge's session is the same across this module's tests: what an earlier test's
    # broker redelivered may arrive here too, so only this test's reports are counted.)
    assert set(published) <= set(stored.reports), "none lost"
    assert waiting_in(spool) == 0


def test_a_report_that_fails_on_its_own_is_kept_as_a_dead_letter(
        secure_broker, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("edgeplane_dev.bridge.HANDLER_RETRY_DELAYS", (0.01,))
    spool = tmp_path / "spool.sqlite"
    handled: list[str] = []
    bad, good = (f"{name}-{uuid.uuid4().hex[:8]}" for name in ("bad", "good"))

    def handler(batch: list[tuple[str, bytes]]) -> None:
        if any(f"/{bad}/" in topic for topic, _ in batch):
            raise ValueError("this report breaks the handler")
        handled.extend(protocol.parse_topic(topic)[0] for topic, _ in batch)

    with bridge(secure_broker, spool, handler, workers=1, batch_size=1):  # type: ignore[arg-type]
        wait_until(lambda: publish_as(secure_broker, good, reports_of(good)[:1]) or
                   good in handled, timeout=20, interval=0.5, what="the bridge subscribed")
        publish_as(secure_broker, bad, reports_of(bad)[:1])
        wait_until(lambda: "kept as a dead letter" in caplog.text, timeout=20)
    kept = Spool(spool)
    try:
        letters = kept.dead_letters()
    finally:
        kept.close()
    assert [(topic, why) for topic, _, why in letters] == [
        (protocol.up_topic(bad, "presence"), "ValueError: this report breaks the handler")]
