"""The fleet outlives the processes that serve it.

The store (dynalite, its tables in the stack's folder) crashed mid-rollout with SIGKILL and
started again on the same folder loses nothing: the reports that arrive meanwhile are held
by the bridge (and the broker), unacknowledged, and stored once the store answers; the
rollout then finishes. And a stack taken down and up again finds its sites, rollouts and
queued messages where they were; ``--fresh`` starts empty and ``down --purge`` deletes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeplane import protocol
from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_dev.bridge import SUBSCRIBED
from edgeplane_dev.fleet_sim import FleetSimulator
from edgeplane_dev.pki import cloud_identity
from edgeplane_dev.stack import (
    LocalStack,
    StackState,
    load_state,
    pinned_keys,
    pki_dir,
    plan_key_file,
    store_dir,
)
from tests.support import log_says, machine_count, wait_until
from tests.tls_support import Peer, connect

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SITES = 12
MACHINES = 2
STEPS = [{"task": "power.ensure", "params": {"state": "on"}},
         {"task": "boot.override", "params": {"target": "pxe", "mode": "once"}}]


def test_what_a_site_reports_the_moment_the_stack_is_up_is_stored(stack):
    """The stack is up once the bridge's subscription is in place, as the IoT rule always
    is in AWS: a site reporting at once does not lose its first inventory."""
    state = stack.state
    bridge_log = stack.directory / "logs" / "bridge.log"
    assert SUBSCRIBED in bridge_log.read_text(), "up() returned before the bridge subscribed"
    site = "early-1"
    peer = connect(state.mqtt_port, state.identity(site), client_id=site)
    try:
        inventory = protocol.Inventory(site=site, ts=1.0, machines=[
            protocol.MachineReport(id="srv-1", protocol="redfish", address="10.0.0.1")])
        peer.publish(protocol.up_topic(site, protocol.Inventory.KIND), inventory.encode())
    finally:
        peer.close()
    api = ApiClient(state.context, timeout=30)
    assert wait_until(lambda: machine_count(api, [site]) == 1, timeout=30,
                      what="the inventory sent at once to be stored")


def test_a_store_killed_mid_rollout_loses_nothing_and_the_rollout_finishes(stack):
    state = stack.state
    api = ApiClient(state.context, timeout=30)
    # Power changes read back after 1-2 s: a wave is still running when the store dies.
    with FleetSimulator(state.mqtt_port, SITES, machines_per_site=MACHINES,
                        power_delay=(1.0, 2.0), pki=pki_dir(stack.directory),
                        plan_keys=pinned_keys(stack.directory)) as fleet:
        sites = fleet.site_ids
        wait_until(lambda: machine_count(api, sites) == SITES * MACHINES, timeout=60,
                   interval=0.3, what="every site registered with its machines")
        machines_before = machine_count(api, sites)
        created = api.post("/rollouts", {"name": "through a store crash", "sites": sites,
                                         "steps": STEPS,
                                         "policy": {"canary": {"sites": 2}, "growth": 2}})
        rollout_id = created["rollout"]["rollout_id"]

        def status() -> dict:
            return api.get(f"/rollouts/{rollout_id}?machines=false")

        # The canary is through and the next wave is on its way: crash the store.
        wait_until(lambda: (lambda r: r["done"] >= 2 and r["in_flight"] >= 1)(
            status()["rollout"]), timeout=60, interval=0.1, what="the second wave running")
        executions_before = {e["site_id"]: e["execution_id"] for e in status()["executions"]}
        stack.stop_store(crash=True)

        # The running sites finish and report while the store is down: the bridge holds.
        wait_until(lambda: log_says(stack, "bridge", "the store does not answer"),
                   timeout=30, interval=0.2, what="a report arriving while the store is down")
        with pytest.raises(ApiError):
            api.get(f"/rollouts/{rollout_id}")
        stack.start_store()

        after = status()
        assert {e["site_id"]: e["execution_id"] for e in after["executions"]} == \
            executions_before, "every execution is still there"
        assert machine_count(api, sites) == machines_before == SITES * MACHINES
        wait_until(lambda: status()["rollout"]["state"] != "running", timeout=120,
                   interval=0.5, what="the rollout's end")
        assert wait_until(lambda: log_says(stack, "bridge", "the store answers again"),
                          timeout=10, what="the bridge storing what it held")
        assert fleet.stats().results_sent == SITES

    final = api.get(f"/rollouts/{rollout_id}")
    assert final["rollout"]["state"] == "succeeded"
    assert final["rollout"]["counts"] == {"succeeded": SITES}
    assert len(final["executions"]) == SITES
    for execution in final["executions"]:
        assert execution["state"] == "succeeded", execution
        assert len(execution["machines"]) == MACHINES, "each site's result is stored"
        assert all(m["state"] == "succeeded" and [s["task"] for s in m["steps"]]
                   == ["power.ensure", "boot.override"] for m in execution["machines"])


# --- the stack down and up again ---------------------------------------------------------


def edgeplane(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(BIN / "edgeplane"), *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, \
        f"edgeplane {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


AWAY = "shop-away"  # a site whose gateway is away while the cloud sends it something


def persistent_client(state: StackState) -> Peer:
    """The site's MQTT session, persistent (as a gateway's is), subscribed to its plans.
    A resumed session gets its queued messages right after the CONNACK: the peer records
    them from the moment it connects."""
    peer = connect(state.mqtt_port, state.identity(AWAY), client_id=AWAY,
                   clean_session=False)
    peer.subscribe(protocol.down_filter(AWAY))
    return peer


def test_the_fleet_outlives_the_stack_until_fresh_or_purged(tmp_path):
    env = {**os.environ, "EDGEPLANE_HOME": str(tmp_path / "home")}
    stack_dir = tmp_path / "home" / "dev"
    up = ["dev", "up", "--sites", "1", "--redfish", "0", "--servers", "0", "--ipmi", "1"]
    try:
        edgeplane(env, *up)
        rollout = json.loads(edgeplane(env, "rollout", "start", "--site", "site-001", "--step",
                                       "power.ensure state=on", "--wait", "--json"))
        rollout_id = rollout["rollout"]["rollout_id"]
        assert rollout["rollout"]["state"] == "succeeded"
        edgeplane(env, "sites", "register", "shop-kept", "--tag", "kept")
        events = json.loads(edgeplane(env, "rollout", "events", rollout_id, "--json"))
        # A message for a session that is away waits in the broker.
        state = load_state(stack_dir)
        assert state is not None
        persistent_client(state).close()
        operator = connect(state.mqtt_port, state.identity(cloud_identity("operator")))
        operator.publish(protocol.plan_topic(AWAY), b"queued while away")
        operator.close()

        key = plan_key_file(stack_dir).read_bytes()
        edgeplane(env, "dev", "down")
        assert store_dir(stack_dir).is_dir()
        assert "kept" in edgeplane(env, *up)
        assert plan_key_file(stack_dir).read_bytes() == key, "the sites' pinned key is kept"

        sites = json.loads(edgeplane(env, "sites", "list", "--json"))["sites"]
        assert sorted(s["site_id"] for s in sites) == ["shop-kept", "site-001"]
        again = json.loads(edgeplane(env, "rollout", "status", rollout_id, "--json"))
        assert again["rollout"]["state"] == "succeeded"
        assert again["executions"] == rollout["executions"], "results kept as they were"
        assert json.loads(edgeplane(env, "rollout", "events", rollout_id, "--json")) == events
        state = load_state(stack_dir)
        assert state is not None
        away = persistent_client(state)
        try:
            queued = away.received.get(timeout=10)
        finally:
            away.close()
        assert queued.payload == b"queued while away"
        assert away.received.empty(), "delivered once"

        edgeplane(env, "dev", "down")
        assert "kept" not in edgeplane(env, *up, "--fresh")
        sites = json.loads(edgeplane(env, "sites", "list", "--json"))["sites"]
        assert [s["site_id"] for s in sites] == ["site-001"]
        assert json.loads(edgeplane(env, "rollout", "list", "--json"))["rollouts"] == []

        edgeplane(env, "dev", "down", "--purge")
        assert not stack_dir.exists()
    finally:
        LocalStack(stack_dir, []).down()  # whatever happened, leave no process behind
