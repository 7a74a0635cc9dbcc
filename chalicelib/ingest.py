"""Apply what gateways report (presence, inventory, progress, results, observed state) to
the store.

``handle_messages([(topic, payload), ...])`` is called with a batch of MQTT messages, by the
SQS consumer in the cloud (IoT rule -> SQS -> Lambda) and by the local bridge
(``handle_message`` for one). Delivery is at least once and unordered, so every write here
is conditional on being newer than what is stored:

- presence: ordered by the protocol's (session, offline-after-online), not by ``ts`` (a
  last will carries the ts of the connection it belongs to, not of the disconnect);
- inventory: per machine, by the gateway's ``ts`` of the report;
- progress/result: per machine, by ``seq``; execution states only move forward along
  ``states.EXECUTION_TRANSITIONS`` and never leave a terminal state (``reports``);
- observed state: per machine, by ``ts`` (see ``drift``).

A message that does not follow the contract is dropped once, before anything of its batch
is stored: it is logged and counted (``DROPPED_REPORTS``), and the rest of the batch goes on
(retrying cannot fix it). The contract's bounded decode refuses what is too large or too
deeply nested before parsing it. Store errors propagate, so the SQS consumer lets the batch
be retried.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, is_dataclass
from typing import Any

from chalicelib import audit, drift, events, site_cache
from chalicelib.availability import store_unavailable
from chalicelib.clock import Clock
from chalicelib.models import Machine, Site, conditional_write, update_returning
from chalicelib.recent import RecentKeys
from chalicelib.rollouts import reports
from chalicelib.shared_batches import SharedBatches
from edgeplane import protocol
from edgeplane.protocol import (
    CacheStatus,
    Inventory,
    MachineReport,
    Observed,
    Presence,
    Progress,
    ProtocolError,
)

LOG = logging.getLogger(__name__)

FACT_WRITERS = 8  # sites whose presence and inventory are written at once

# Reports dropped since the process started, by cause: a metric (each drop is also logged,
# with ``dropped_reports`` and ``drop_cause`` as structured fields).
DROPPED_REPORTS: Counter[str] = Counter()
# An IoT rule record is the message plus its topic: room for the topic over the message.
MAX_RECORD_BYTES = protocol.MAX_MESSAGE_BYTES + 1024


def handle_message(topic: str, payload: bytes, clock: Clock = time.time) -> None:
    handle_messages([(topic, payload)], clock)


def handle_messages(messages: Iterable[tuple[str, bytes]], clock: Clock = time.time) -> None:
    """A batch of (topic, payload): site facts one by one, progress and results together
    (``reports``: one conditional write per execution, the bookkeeping once per batch)."""
    now = clock()
    executions: list[Progress] = []
    observed: list[Observed] = []
    facts: dict[str, list[protocol.Message]] = {}  # presence and inventory, per site
    for topic, payload in messages:
        message = _decode(topic, payload)
        if isinstance(message, Progress):
            executions.append(message)
        elif isinstance(message, Observed):
            observed.append(message)
        elif message is not None:
            facts.setdefault(message.site, []).append(message)
    if facts:
        _apply_facts(list(facts.values()), now)
    if executions:
        reports.apply(executions, clock)
    if observed:
        drift.on_observed_batch(observed, now)


def _apply_facts(by_site: list[list[protocol.Message]], now: float) -> None:
    """Each site's presence and inventory in the order they came; sites side by side (a
    reconnect storm brings thousands at once, and each is a few round trips of its own),
    the machines of new sites written together (``SharedBatches``).
    A presence that finds its site unknown tells the inventory after it that the site has
    nothing stored yet (a site registering: its presence and inventory come together)."""
    shared = SharedBatches(Machine)  # new sites' machines, written together

    with events.Outbox() as outbox:  # the presence changes announced together
        def apply_site(site_messages: list[protocol.Message]) -> None:
            new_site = False
            with shared.working():
                for message in site_messages:
                    if isinstance(message, Presence):
                        new_site = on_presence(message, now, outbox) or new_site
                    elif isinstance(message, Inventory):
                        on_inventory(message, now, new_site=new_site, put=shared.put)
                        new_site = False  # its machines are stored now
                    else:
                        _HANDLERS[type(message)](message, now)

        if len(by_site) == 1:
            apply_site(by_site[0])
            return
        with ThreadPoolExecutor(min(FACT_WRITERS, len(by_site)),
                                thread_name_prefix="facts") as pool:
            list(pool.map(apply_site, by_site))


def _decode(topic: str, payload: bytes) -> protocol.Message | None:
    try:
        message = protocol.decode(payload, topic)
        _, direction, _ = protocol.parse_topic(topic)
        if direction != "up":
            raise ProtocolError(f"{message.KIND} message on a cloud-to-site topic")
    except ProtocolError as exc:
        _dropped("malformed", "dropped a message on %s: %s", protocol.excerpt(topic), exc)
        return None
    except Exception:  # a bug in reading one report must not hold its batch back forever
        _dropped("unreadable", "dropped a message on %s: it could not be read",
                 protocol.excerpt(topic), exc_info=True)
        return None
    if not isinstance(message, Progress) and type(message) not in _HANDLERS:
        LOG.warning("ignoring a %s message on %s: not a gateway report", message.KIND, topic)
        return None
    return message


def _dropped(cause: str, text: str, *args: object, exc_info: bool = False) -> None:
    DROPPED_REPORTS[cause] += 1
    LOG.error(text, *args, exc_info=exc_info,
              extra={"dropped_reports": 1, "drop_cause": cause})


def handle_sqs_records(records: Iterable[tuple[str, str]]) -> list[str]:
    """The SQS consumer: (message id, body) pairs, each body what the IoT rule ``SELECT *,
    topic() AS topic, clientid() AS client_id`` made. Returns the ids of the records that
    could not be stored: Lambda reports them as the batch's failures, and SQS hands back
    those alone (so a record that keeps failing reaches the dead-letter queue by itself,
    and its batch is not stored again with it).

    A record that is not such a body is dropped (retrying cannot fix it). The records are
    stored as one batch; if that fails, each is tried on its own (what was stored before a
    failure is idempotent to store again), unless the store did not answer: then every
    record goes back at once (SQS hands them out again after their visibility timeout, and
    to the dead-letter queue after ``infra.device.MAX_RECEIVES`` tries).
    """
    unwrapped: list[tuple[str, tuple[str, bytes]]] = []
    for message_id, body in records:
        try:
            unwrapped.append((message_id, unwrap_rule_record(body)))
        except ProtocolError as exc:
            _dropped("record", "dropped an SQS record: %s", exc)
        except Exception:  # as in _decode: one record must not hold the others back
            _dropped("record", "dropped an SQS record: it could not be read", exc_info=True)
    try:
        handle_messages([message for _, message in unwrapped])
        return []
    except Exception as exc:
        down = store_unavailable(exc)
        if down is not None:  # no record is at fault: all go back, none is tried alone
            LOG.error("the store does not answer (%s); the %d records go back to the queue",
                      down, len(unwrapped))
            return [message_id for message_id, _ in unwrapped]
        LOG.exception("storing a batch of %d records failed; trying them one by one",
                      len(unwrapped))
    failed = []
    for message_id, (topic, payload) in unwrapped:
        try:
            handle_message(topic, payload)
        except Exception:
            LOG.exception("storing a message on %s failed", topic)
            failed.append(message_id)
    if failed:
        LOG.error("%d of %d records could not be stored; SQS hands them back", len(failed),
                  len(unwrapped))
    return failed


def unwrap_rule_record(body: str) -> tuple[str, bytes]:
    """(topic, original message) from an IoT rule record: the message plus a "topic" field,
    and the MQTT client id of its publisher ("client_id"), which IoT Core has bound to the
    certificate it connected with (the thing name is the site id).

    The IoT policy already keeps a site to its own topics; a report whose topic names
    another site than the identity that sent it is refused here too, whatever its payload
    says, so no policy mistake lets one site speak for another.

    AWS IoT lifecycle events (``$aws/events/presence/connected|disconnected/<client id>``,
    forwarded by a second rule) become the presence message a gateway would have sent.
    The body is parsed within the contract's bounds (size, depth), as a message is.
    """
    try:
        data = protocol.parse_json(body, MAX_RECORD_BYTES)
    except ProtocolError as exc:
        raise ProtocolError(f"record body: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
        raise ProtocolError("record body is not a JSON object with a string 'topic'")
    topic = data.pop("topic")
    client_id = data.pop("client_id", None)
    if topic.startswith(LIFECYCLE_PREFIX):
        return presence_from_lifecycle(topic, data)
    if client_id is not None:
        site, _, _ = protocol.parse_topic(topic)
        if client_id != site:
            raise ProtocolError(f"a report on {protocol.excerpt(topic)} came from client "
                                f"{protocol.excerpt(client_id)}, not from site {site}")
    return topic, json.dumps(data, separators=(",", ":")).encode()


LIFECYCLE_PREFIX = "$aws/events/presence/"


def presence_from_lifecycle(topic: str, event: dict[str, Any]) -> tuple[str, bytes]:
    """An IoT Core lifecycle event as a presence report of the site (client id = site id).

    IoT gives each connection of a client a ``versionNumber`` that grows, and its
    disconnect event the same one: that is the presence ``session``, so a late disconnect
    of an old connection never marks a reconnected site offline.
    """
    kind = event.get("eventType")
    site = event.get("clientId")
    version = event.get("versionNumber")
    if kind not in ("connected", "disconnected") or not isinstance(site, str) or \
            isinstance(version, bool) or not isinstance(version, int | float):
        raise ProtocolError(f"lifecycle event on {protocol.excerpt(topic)} lacks eventType, "
                            "clientId or versionNumber")
    timestamp = event.get("timestamp")
    message = Presence(site=site, online=kind == "connected", session=float(version),
                       ts=float(timestamp) / 1000 if isinstance(timestamp, int | float)
                       and not isinstance(timestamp, bool) else time.time())
    return protocol.up_topic(site, Presence.KIND), message.encode()


# --- presence and inventory: the site's own facts --------------------------------------


def _site_defaults(site_id: str, now: float) -> list[Any]:
    """Actions that create a minimal site record when a gateway announces an unknown site."""
    return [Site.name.set(Site.name | site_id), Site.created_at.set(Site.created_at | now)]


# How far ahead of the cloud's clock a gateway's presence session may be. The session is
# the gateway's clock when it connected, so it can be no later than now but for clock
# skew; a later one is taken as now + this, so a report numbered far in the future (a
# broken clock, or a forgery) cannot pin a site's presence: the next real connection wins
# again once this much time has passed.
MAX_CLOCK_AHEAD = 300.0


# Sites whose first record this process wrote (their presence found none), until their
# inventory is applied: a site stored since sites keep their machines' ids has, without
# ids, no machine (see on_inventory).
STORED_FIRST = RecentKeys(10_000)


def on_presence(message: Presence, now: float,
                outbox: events.Outbox | None = None) -> bool:
    """Store the site's presence if it is later than the stored one; True when the site
    had no record before (this report is the first thing stored of it)."""
    session, rank = message.order
    if session > now + MAX_CLOCK_AHEAD:
        LOG.warning("site %s: presence session %.0f is %.0f s ahead of the cloud's clock; "
                    "taken as %.0f s ahead", message.site, session, session - now,
                    MAX_CLOCK_AHEAD)
        session = now + MAX_CLOCK_AHEAD
    actions = [
        Site.online.set(message.online),
        Site.presence_session.set(session),
        Site.presence_rank.set(rank),
        Site.presence_changed_at.set(now),
        *_site_defaults(message.site, now),
    ]
    if message.gateway_version:
        actions.append(Site.gateway_version.set(message.gateway_version))
    if message.online:
        actions.append(Site.last_seen_at.set(now))
    later = (Site.presence_session.does_not_exist() | (Site.presence_session < session)
             | ((Site.presence_session == session) & (Site.presence_rank < rank)))
    old = update_returning(Site(message.site), actions, later)
    if old is None:
        LOG.info("site %s: ignored a presence report older than the stored one", message.site)
        return False
    LOG.info("site %s is %s", message.site, "online" if message.online else "offline")
    (outbox or events).emit(audit.SITE_PRESENCE, {
        "site_id": message.site, "online": message.online, "session": session,
        "gateway_version": message.gateway_version or None, "at": now},
        resources=[f"site/{message.site}"])
    if old:
        return False
    STORED_FIRST.add(message.site)
    return True


def on_inventory(message: Inventory, now: float, new_site: bool = False,
                 put: Callable[[list[Machine]], None] | None = None) -> None:
    """Apply a site's inventory, writing only what changed since the last one applied.

    Every reconnect sends an inventory, and most say what the last one said: the site's
    write (its last-seen time) answers with what the site held before, and when its
    inventory's digest is this one's, that one write is all. Otherwise the machines whose
    report changed are written (each on condition that it is not older than the one
    stored), and then the digests, on condition that no newer inventory was applied.

    An inventory in parts (a site of more machines than one message holds) has no digest
    of the whole: each part is applied as above but against the machines' digests only (a
    part of unchanged machines costs the site's one write), its digests written on
    condition that no newer inventory was applied (an earlier part of the same one was),
    and the whole's digest cleared. Two parts applied at once may each write the digests
    without the other's: those machines are then written again at the next inventory.

    A site with nothing stored before (that write created it, or ``new_site``: its
    presence, handled just before, did) has no machine either: a machine is stored only
    under a site stored before it. Its machines go in batches (25 a request), not one
    conditional write each (through ``put``, which may gather them with other sites'), and
    with ``new_site`` the site's own write is its digests':
    a registering site costs its presence, one batch of machines and one write. So does a
    site whose presence this process stored first in an earlier batch (``STORED_FIRST``:
    a gateway's inventory often follows its presence by a batch or two); a site stored with
    neither machine ids nor digests by another process may be one stored before sites kept
    them, with machines: one query tells.
    """
    site_actions = [Site.last_seen_at.set(now), *_site_defaults(message.site, now)]
    if message.gateway_version:
        site_actions.append(Site.gateway_version.set(message.gateway_version))
    reports = {}
    for report in message.machines:
        if not isinstance(report.id, str) or \
                not protocol.MACHINE_ID_PATTERN.fullmatch(report.id):
            LOG.error("site %s: inventory names an invalid machine id %r; skipped",
                      message.site, report.id)
            continue
        reports[report.id] = report
    digests = {machine_id: _digest(report) for machine_id, report in reports.items()}
    whole = _digest(sorted(digests.items()))
    in_parts = message.parts is not None
    new_site = new_site or message.site in STORED_FIRST
    stored: Site | None = None
    if not new_site:
        old = update_returning(Site(message.site), site_actions)
        stored = Site.from_raw_data(old) if old else None
        if stored is not None and not in_parts and stored.inventory_digest == whole:
            return
    known = stored.machine_digests.as_dict() \
        if stored is not None and stored.machine_digests is not None else {}
    if in_parts and stored is not None and digests and \
            all(known.get(machine_id) == digest for machine_id, digest in digests.items()):
        return  # a part of machines as they were applied last
    if stored is None or (stored.machine_digests is None and stored.machine_ids is None
                          and (message.site in STORED_FIRST
                               or not _has_machines(message.site))):
        machines = _new_machines(message, reports, now)  # no machine stored: none to keep
        (put or _put_machines)(machines)
        applied = dict(digests)
    else:
        applied = _write_changed_machines(message, reports, digests, known, now)
    STORED_FIRST.discard(message.site)
    complete = len(applied) == len(digests)
    digest_actions: list[Any] = [Site.machine_digests.set({**known, **applied}),
                                 Site.inventory_ts.set(message.ts)]
    if in_parts:  # no digest of the whole to compare the next inventory with
        digest_actions.append(Site.inventory_digest.remove())
    elif complete:
        digest_actions.append(Site.inventory_digest.set(whole))
    if applied:
        digest_actions.append(Site.machine_ids.add(set(applied)))
    newest = Site.inventory_ts.does_not_exist() | (
        Site.inventory_ts <= message.ts if in_parts else Site.inventory_ts < message.ts)
    if not new_site:  # the site's own facts are written already
        conditional_write(Site(message.site), digest_actions, newest)
    elif not conditional_write(Site(message.site), site_actions + digest_actions, newest):
        conditional_write(Site(message.site), site_actions)


def _write_changed_machines(message: Inventory, reports: dict[str, MachineReport],
                            digests: dict[str, str], known: dict[str, Any],
                            now: float) -> dict[str, str]:
    """Write each machine whose report differs from the one applied last (unless the
    stored one is newer); the digests of the machines now as reported."""
    applied = {}
    for machine_id, report in reports.items():
        if known.get(machine_id) == digests[machine_id]:
            applied[machine_id] = digests[machine_id]
            continue
        # Not older: the same inventory again (delivered again after a crash between its
        # machines and its site) is written again, and counts as applied.
        newer = Machine.inventory_ts.does_not_exist() | (Machine.inventory_ts <= message.ts)
        if conditional_write(Machine(message.site, machine_id),
                             _machine_actions(report, message.ts, now), newer):
            applied[machine_id] = digests[machine_id]
        else:
            LOG.info("site %s machine %s: ignored an inventory older than the stored one",
                     message.site, machine_id)
    return applied


def _digest(value: Any) -> str:
    """A short digest of a machine report (or of a list of digests), stable across runs."""
    data = asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _has_machines(site_id: str) -> bool:
    return any(True for _ in Machine.query(site_id, limit=1, attributes_to_get=["site_id"]))


def _put_machines(machines: list[Machine]) -> None:
    """Machines in batches (25 a request) instead of one conditional write each: a fleet
    registering at once is mostly new sites."""
    with Machine.batch_write() as batch:
        for machine in machines:
            batch.save(machine)


def _new_machines(message: Inventory, reports: dict[str, MachineReport],
                  now: float) -> list[Machine]:
    """The machines of a site first heard of, that has none stored."""
    machines = []
    for machine_id, report in reports.items():
        failed = report.error is not None
        machines.append(Machine(
            message.site, machine_id, protocol=str(report.protocol),
            address=str(report.address), source="inventory",
            machine_class=str(report.machine_class) if report.machine_class else None,
            capabilities=sorted(map(str, report.capabilities)) or None,
            manufacturer=None if failed or report.manufacturer is None
            else str(report.manufacturer),
            model=None if failed or report.model is None else str(report.model),
            serial=None if failed or report.serial is None else str(report.serial),
            power=None if failed or report.power is None else str(report.power),
            inventory_error=str(report.error) if failed else None,
            inventory_ts=message.ts, updated_at=now))
    return machines


def _machine_actions(report: MachineReport, ts: float, now: float) -> list[Any]:
    """What an inventory says of a machine. Operator-declared protocol and address win."""
    actions = [
        Machine.protocol.set(Machine.protocol | str(report.protocol)),
        Machine.address.set(Machine.address | str(report.address)),
        Machine.source.set(Machine.source | "inventory"),
        Machine.inventory_ts.set(ts),
        Machine.updated_at.set(now),
    ]
    if report.machine_class:  # like protocol and address: an operator's declaration wins
        actions.append(Machine.machine_class.set(Machine.machine_class
                                                 | str(report.machine_class)))
    if report.error:  # the gateway could not reach the BMC: keep the facts we had
        actions.append(Machine.inventory_error.set(str(report.error)))
        if report.capabilities:
            actions.append(Machine.capabilities.set(sorted(map(str, report.capabilities))))
        return actions
    actions += [
        Machine.inventory_error.remove(),
        Machine.capabilities.set(sorted(map(str, report.capabilities))),
    ]
    for attribute, value in ((Machine.manufacturer, report.manufacturer),
                             (Machine.model, report.model), (Machine.serial, report.serial),
                             (Machine.power, report.power)):
        actions.append(attribute.set(str(value)) if value is not None else attribute.remove())
    return actions


_HANDLERS: dict[type, Callable[[Any, float], object]] = {
    Presence: on_presence,
    Inventory: on_inventory,
    Observed: drift.on_observed,
    CacheStatus: site_cache.on_cache,
}
