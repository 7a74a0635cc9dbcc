"""Three attacks on a running local stack's device channel, tried for real, as the demo shows.

Each returns what happened: an anonymous client connecting, a certificate of another site
reporting a site offline, and a plan nobody signed sent straight to a site's plan topic.
The stack must refuse all three; ``tests/test_broker_identity.py`` and
``tests/test_signed_plans.py`` try every attack of the kind in detail.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from rich.table import Table

from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep, Presence
from edgeplane_cli.client import ApiClient
from edgeplane_dev.pki import Identity, cloud_identity
from edgeplane_dev.stack import StackState
from edgeplane_dev.tls_client import connect

ROGUE_SITE = "site-rogue"  # a site of the fleet's CA that is not the one attacked


@dataclass(frozen=True)
class Check:
    attack: str
    refused: bool
    outcome: str


def run_checks(state: StackState, site: str) -> list[Check]:
    return [anonymous_client(state), forged_presence(state, site), unsigned_plan(state, site)]


def anonymous_client(state: StackState) -> Check:
    attack = "an anonymous client connects to the broker"
    ca_file = state.identity(cloud_identity("operator")).ca_file
    try:
        client = _connect(state.mqtt_port, ca_file, None)
    except ConnectionError as exc:
        return Check(attack, True, f"refused: {exc}")
    client.disconnect()
    client.loop_stop()
    return Check(attack, False, "connected")


def forged_presence(state: StackState, site: str, wait: float = 2.0) -> Check:
    attack = f"another site's certificate reports {site} offline"
    forged = Presence(site=site, online=False, session=time.time() + 1e9)
    _publish(state.mqtt_port, state.identity(ROGUE_SITE),
             protocol.up_topic(site, Presence.KIND), forged.encode())
    time.sleep(wait)  # what the cloud would have stored by now
    online = ApiClient(state.context).get(f"/sites/{site}")["site"]["online"]
    return Check(attack, bool(online),
                 f"{site} is still {'online' if online else 'OFFLINE'} "
                 "(the broker's ACL dropped it)")


def unsigned_plan(state: StackState, site: str, timeout: float = 10.0) -> Check:
    attack = f"a plan nobody signed, sent to {site}'s plan topic"
    execution_id = f"forged-{int(time.time())}.{site}"
    plan = Plan(site=site, execution_id=execution_id, rollout_id="forged",
                steps=[PlanStep(task="power.ensure", params={"state": "off"},
                                machines=["srv-1"])])
    _publish(state.mqtt_port, state.identity(cloud_identity("operator")),
             protocol.plan_topic(site), plan.encode())
    log = Path(state.directory) / "logs" / f"{site}-gateway.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if execution_id in line and "refused" in line:
                reason = line.split(f"{execution_id}: ", 1)[-1]
                return Check(attack, True, f"rejected by the gateway: {reason[:120]}")
        time.sleep(0.2)
    return Check(attack, False, f"no refusal in {log.name} within {timeout:.0f} s")


def channel_table(checks: list[Check]) -> Table:
    table = Table(title="attacks on the device channel")
    for column in ("attack", "refused", "what happened"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.attack, "[green]yes[/green]" if check.refused else "[red]NO[/red]",
                      check.outcome)
    return table


def _connect(port: int, ca_file: Path, identity: Identity | None) -> mqtt.Client:
    """Connected (or ConnectionError): as ``identity``, or with no certificate at all."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=str(ca_file), cert_reqs=ssl.CERT_REQUIRED,
                   certfile=str(identity.cert_file) if identity else None,
                   keyfile=str(identity.key_file) if identity else None)
    connect(client, port)
    return client


def _publish(port: int, identity: Identity, topic: str, payload: bytes) -> None:
    client = _connect(port, identity.ca_file, identity)
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
