"""Apply what gateways report (presence, inventory, progress, results, observed state) to
the store.

``handle_message(topic, payload)`` is called once per MQTT message, by the SQS consumer in
the cloud (IoT rule -> SQS -> Lambda) and by the local bridge. Delivery is at least once and
unordered, so every write here is conditional on being newer than what is stored:

- presence: ordered by the protocol's (session, offline-after-online), not by ``ts`` (a
  last will carries the ts of the connection it belongs to, not of the disconnect);
- inventory: per machine, by the gateway's ``ts`` of the report;
- progress/result: per machine, by ``seq``; execution states only move forward along
  ``states.EXECUTION_TRANSITIONS`` and never leave a terminal state;
- observed state: per machine, by ``ts`` (see ``drift``).

A message that does not follow the contract is logged and dropped (retrying cannot fix it).
Store errors propagate, so the SQS consumer lets the batch be retried.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from chalicelib import audit, drift, engine, events, publisher, states
from chalicelib.errors import IngestFailed
from chalicelib.models import Execution, Machine, MachineResult, Site, conditional_update
from edgeplane import protocol
from edgeplane.protocol import (
    ExecutionState,
    Inventory,
    MachineReport,
    Observed,
    Presence,
    Progress,
    ProtocolError,
    Result,
)

LOG = logging.getLogger(__name__)

Clock = Callable[[], float]


def handle_message(topic: str, payload: bytes, clock: Clock = time.time) -> None:
    try:
        message = protocol.decode(payload, topic)
        _, direction, _ = protocol.parse_topic(topic)
        if direction != "up":
            raise ProtocolError(f"{message.KIND} message on a cloud-to-site topic")
        _check_types(message)
    except ProtocolError as exc:
        LOG.error("dropped a message on %s: %s", topic, exc)
        return
    handler = _HANDLERS.get(type(message))
    if handler is None:
        LOG.warning("ignoring a %s message on %s: not a gateway report", message.KIND, topic)
        return
    handler(message, clock())


def handle_sqs_records(bodies: Iterable[str]) -> None:
    """The SQS consumer: each body is what the IoT rule ``SELECT *, topic() AS topic`` made.

    A record that is not such a body is dropped; if storing any record fails, the others
    are still tried and then IngestFailed makes Lambda hand the batch back to SQS (the
    records already stored are idempotent to process again).
    """
    total = failed = 0
    for body in bodies:
        total += 1
        try:
            topic, payload = unwrap_rule_record(body)
        except ProtocolError as exc:
            LOG.error("dropped an SQS record: %s", exc)
            continue
        try:
            handle_message(topic, payload)
        except Exception:
            LOG.exception("storing a message on %s failed", topic)
            failed += 1
    if failed:
        raise IngestFailed(failed=failed, total=total)


def unwrap_rule_record(body: str) -> tuple[str, bytes]:
    """(topic, original message) from an IoT rule record: the message plus a "topic" field.

    AWS IoT lifecycle events (``$aws/events/presence/connected|disconnected/<client id>``,
    forwarded by a second rule) become the presence message a gateway would have sent.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"record body is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("topic"), str):
        raise ProtocolError("record body is not a JSON object with a string 'topic'")
    topic = data.pop("topic")
    if topic.startswith(LIFECYCLE_PREFIX):
        return presence_from_lifecycle(topic, data)
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
        raise ProtocolError(f"lifecycle event on {topic} lacks eventType, clientId or "
                            "versionNumber")
    timestamp = event.get("timestamp")
    message = Presence(site=site, online=kind == "connected", session=float(version),
                       ts=float(timestamp) / 1000 if isinstance(timestamp, int | float)
                       else time.time())
    return protocol.up_topic(site, Presence.KIND), message.encode()


# --- presence and inventory: the site's own facts --------------------------------------


def _site_defaults(site_id: str, now: float) -> list[Any]:
    """Actions that create a minimal site record when a gateway announces an unknown site."""
    return [Site.name.set(Site.name | site_id), Site.created_at.set(Site.created_at | now)]


def on_presence(message: Presence, now: float) -> None:
    session, rank = message.order
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
    if conditional_update(Site(message.site), actions, later):
        LOG.info("site %s is %s", message.site, "online" if message.online else "offline")
        events.emit(audit.SITE_PRESENCE, {
            "site_id": message.site, "online": message.online, "session": session,
            "gateway_version": message.gateway_version or None, "at": now},
            resources=[f"site/{message.site}"])
    else:
        LOG.info("site %s: ignored a presence report older than the stored one", message.site)


def on_inventory(message: Inventory, now: float) -> None:
    site_actions = [Site.last_seen_at.set(now), *_site_defaults(message.site, now)]
    if message.gateway_version:
        site_actions.append(Site.gateway_version.set(message.gateway_version))
    Site(message.site).update(actions=site_actions)
    for report in message.machines:
        if not isinstance(report.id, str) or not protocol.MACHINE_ID_PATTERN.match(report.id):
            LOG.error("site %s: inventory names an invalid machine id %r; skipped",
                      message.site, report.id)
            continue
        newer = Machine.inventory_ts.does_not_exist() | (Machine.inventory_ts < message.ts)
        if not conditional_update(Machine(message.site, report.id),
                                  _machine_actions(report, message.ts, now), newer):
            LOG.info("site %s machine %s: ignored an inventory older than the stored one",
                     message.site, report.id)


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


# --- progress and results: an execution's machines -------------------------------------


def on_progress(message: Progress, now: float) -> None:
    execution = _execution_for(message)
    if execution is None:
        return
    _record_machines(execution, message, now)
    # Refused (and harmless) unless queued/sent.
    engine.transition(execution, ExecutionState.RUNNING, lambda: now, started_at=now)


def on_result(message: Result, now: float) -> None:
    if message.state not in states.TERMINAL_EXECUTION_STATES:
        LOG.error("site %s: result for execution %s has state %r, not a final state; "
                  "dropped", message.site, message.execution_id, message.state)
        return
    execution = _execution_for(message)
    if execution is None:
        return
    _record_machines(execution, message, now)
    rollout = engine.get_rollout(execution.rollout_id)
    policy = engine.policy_of(rollout)
    retryable = _retryable(message)
    if message.state == ExecutionState.FAILED and retryable and \
            int(execution.attempt) <= policy.retries.max and \
            rollout.state not in states.STOPPED_ROLLOUT_STATES:
        if engine.requeue(execution, policy, str(message.message), lambda: now):
            LOG.info("execution %s failed (retryable): queued again", execution.execution_id)
        return  # the tick dispatches it after the backoff
    if engine.transition(execution, ExecutionState(message.state), lambda: now,
                         message=str(message.message), started_at=execution.started_at or now):
        LOG.info("execution %s %s: %s", execution.execution_id, message.state,
                 message.message)
        if not engine.needs_advance(rollout, policy, int(execution.wave)):
            return
    elif execution.state in states.TERMINAL_EXECUTION_STATES:
        # A duplicate: make sure the first one was counted, and that the rollout did not
        # stay running because a crash came between the two.
        engine.reconcile(rollout)
    engine.advance(execution.rollout_id, publisher.current(), lambda: now)


def _retryable(message: Result) -> bool:
    """True when every failed step says a later attempt may pass."""
    failed = [step for machine in message.machines for step in machine.steps
              if step.state == "failed"]
    return bool(failed) and all(step.retryable is True for step in failed)


def _record_machines(execution: Execution, message: Progress, now: float) -> None:
    for machine in message.machines:
        if not isinstance(machine.machine, str) or \
                not protocol.MACHINE_ID_PATTERN.match(machine.machine):
            LOG.error("execution %s: report names an invalid machine id %r; skipped",
                      execution.execution_id, machine.machine)
            continue
        snapshot = MachineResult(
            execution.execution_id, machine.machine, seq=message.seq,
            state=str(machine.state), steps=[asdict(step) for step in machine.steps],
            updated_at=now,
        )
        if not snapshot.save_if_newer():
            LOG.debug("execution %s machine %s: seq %s is not newer; ignored",
                      execution.execution_id, machine.machine, message.seq)
    execution.note_seq(message.seq)


def _execution_for(message: Progress) -> Execution | None:
    """The execution a report is about, if it exists and belongs to the reporting site."""
    try:
        rollout_id, site_id = Execution.split_id(str(message.execution_id))
    except ValueError as exc:
        LOG.error("site %s: %s; report dropped", message.site, exc)
        return None
    if site_id != message.site:
        LOG.error("site %s reported on execution %s of another site; dropped", message.site,
                  message.execution_id)
        return None
    try:
        execution = Execution.get(rollout_id, site_id, consistent_read=True)
    except Execution.DoesNotExist:
        LOG.warning("site %s reported on unknown execution %s; dropped", message.site,
                    message.execution_id)
        return None
    if execution.execution_id != message.execution_id:
        LOG.info("site %s reported on %s, an earlier attempt than %s; dropped", message.site,
                 message.execution_id, execution.execution_id)
        return None
    return execution


# --- input checks the wire contract leaves to receivers --------------------------------


def _check_types(message: protocol.Message) -> None:
    """Numbers and flags we store must have the right JSON type (decode does not check)."""
    _number(message.ts, "ts")
    if isinstance(message, Presence):
        _number(message.session, "session")
        if not isinstance(message.online, bool):
            raise ProtocolError(f"presence field 'online' must be true or false, not "
                                f"{message.online!r}")
    if isinstance(message, Progress):
        if isinstance(message.seq, bool) or not isinstance(message.seq, int) \
                or message.seq < 0:
            raise ProtocolError(f"{message.KIND} field 'seq' must be a non-negative integer, "
                                f"not {message.seq!r}")


def _number(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"field {name!r} must be a number, not {value!r}")


_HANDLERS: dict[type, Callable[[Any, float], None]] = {
    Presence: on_presence,
    Inventory: on_inventory,
    Progress: on_progress,
    Result: on_result,
    Observed: drift.on_observed,
}
