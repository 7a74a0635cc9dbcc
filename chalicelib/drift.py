"""Desired state against observed state, per machine, and the drift between them.

A blueprint rollout gives each machine its desired state, including ``expect``: what its
rendered steps leave behind that can be read back (power, BIOS attributes, a continuous
boot override, firmware versions). A one-time boot override is not expected to last: the
next boot consumes it. Gateways report observed state after each plan and on an interval;
each report is compared with ``expect`` and the result stored on the machine. A change of
drift (new, different, or resolved) is an event.

Reports are applied in the order of their ``ts`` (an older one arriving late is dropped), so
redelivery and reordering never flip the stored drift or emit an event twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from chalicelib import events
from chalicelib.models import Machine, Site, conditional_update
from edgeplane import protocol
from edgeplane.protocol import BootMode, MachineObservation, Observed, PlanStep

LOG = logging.getLogger(__name__)

DRIFT_DETECTED = "Machine Drift Detected"
DRIFT_RESOLVED = "Machine Drift Resolved"


def expected_from(steps: list[PlanStep], machine_id: str) -> dict[str, Any]:
    """What a machine should read after these steps (the later step wins)."""
    expect: dict[str, Any] = {}
    for step in steps:
        if machine_id not in step.machines:
            continue
        params = step.params
        if step.task == "power.ensure":
            expect["power"] = params["state"]
        elif step.task == "bios.apply":
            expect.setdefault("bios", {}).update(params["attributes"])
        elif step.task == "boot.override":
            if params.get("mode") == BootMode.CONTINUOUS:
                expect["boot"] = {"target": params["target"], "mode": BootMode.CONTINUOUS.value}
            else:
                expect.pop("boot", None)
        elif step.task == "firmware.update" and params.get("version"):
            expect.setdefault("firmware", {})[params.get("component") or "*"] = \
                params["version"]
    return expect


def compare(expect: dict[str, Any], observed: MachineObservation) -> list[dict[str, Any]]:
    """Each difference as {field, desired, observed}; fields the gateway could not read
    (None) are not judged."""
    drift = []

    def differ(name: str, desired: Any, seen: Any) -> None:
        drift.append({"field": name, "desired": desired, "observed": seen})

    if "power" in expect and observed.power is not None and observed.power != expect["power"]:
        differ("power", expect["power"], observed.power)
    if observed.bios is not None:
        for name, value in sorted((expect.get("bios") or {}).items()):
            if observed.bios.get(name) != value:
                differ(f"bios.{name}", value, observed.bios.get(name))
    if "boot" in expect and observed.boot is not None:
        seen = {k: observed.boot.get(k) for k in ("target", "mode")}
        if seen != expect["boot"]:
            differ("boot", expect["boot"], seen)
    if observed.firmware is not None:
        for component, version in sorted((expect.get("firmware") or {}).items()):
            found = [f for f in observed.firmware if _is_component(f, component)]
            if not any(f.get("version") == version for f in found):
                differ(f"firmware.{component}", version,
                       ", ".join(str(f.get("version")) for f in found) or None)
    return drift


def _is_component(entry: dict[str, Any], wanted: str) -> bool:
    if wanted == "*":
        return True
    ident = str(entry.get("id") or "")
    return wanted in (ident, entry.get("name")) or ident.rstrip("/").rsplit("/", 1)[-1] == \
        wanted


def on_observed(message: Observed, now: float) -> None:
    on_observed_batch([message], now)


def on_observed_batch(messages: list[Observed], now: float) -> None:
    """Reports of many sites: their sites are read together (BatchGetItem), then the
    machines of those with a desired state, and only a machine with something desired or
    stored is written. A site no rollout gave a desired state costs one item read."""
    valid: list[tuple[Observed, MachineObservation]] = []
    for message in messages:
        for observation in message.machines:
            if not isinstance(observation.machine, str) or \
                    not protocol.MACHINE_ID_PATTERN.match(observation.machine):
                LOG.error("site %s: observed state names an invalid machine id %r; skipped",
                          message.site, observation.machine)
                continue
            valid.append((message, observation))
    sites = sorted({message.site for message, _ in valid})
    judged = {site.site_id for site in Site.batch_get(
        sites, attributes_to_get=["site_id", "has_desired"]) if site.has_desired}
    valid = [(message, o) for message, o in valid if message.site in judged]
    keys = sorted({(message.site, o.machine) for message, o in valid})
    known = {(m.site_id, m.machine_id): m for m in Machine.batch_get(
        keys, consistent_read=True)} if keys else {}
    for message, observation in sorted(valid, key=lambda pair: pair[0].ts):
        machine = known.get((message.site, observation.machine))
        if machine is None:
            LOG.warning("site %s: observed state of unknown machine %s; skipped",
                        message.site, observation.machine)
        elif machine.desired or machine.drift or machine.observed is not None:
            _apply(machine, message, observation, now)
        # else: nothing is desired of it and nothing was stored: no write at all


def _apply(machine: Machine, message: Observed, observation: MachineObservation,
           now: float) -> None:
    desired = machine.desired or {}
    drift = compare(desired.get("expect") or {}, observation) if desired else []
    before = machine.drift or []
    seen = {k: v for k, v in asdict(observation).items() if k != "machine"}
    actions = [Machine.observed.set(seen), Machine.observed_ts.set(message.ts),
               Machine.drift.set(drift), Machine.drift_checked_at.set(now)]
    changed = drift != before
    if changed:
        actions.append(Machine.drift_changed_at.set(now))
    newer = Machine.observed_ts.does_not_exist() | (Machine.observed_ts < message.ts)
    if not conditional_update(machine, actions, newer):
        LOG.info("site %s machine %s: ignored observed state older than the stored one",
                 message.site, observation.machine)
        return
    if changed:
        events.emit(DRIFT_DETECTED if drift else DRIFT_RESOLVED, {
            "site_id": message.site, "machine_id": observation.machine, "drift": drift,
            "previous": before, "blueprint": desired.get("blueprint"),
            "revision": desired.get("revision"), "rollout_id": desired.get("rollout"),
            "trigger": message.trigger, "observed_at": message.ts,
        }, resources=[f"site/{message.site}/machine/{observation.machine}"])
        LOG.info("site %s machine %s: drift %s", message.site, observation.machine,
                 drift or "resolved")
