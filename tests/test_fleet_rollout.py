"""A rollout to 200 simulated sites through the whole local stack: the HTTPS API, DynamoDB on
moto server, mosquitto, 200 real gateway cores (the fleet simulator), the ingest bridge and
the ticker. Canary, growing waves, an offline site that catches up, and the event log."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from edgeplane_cli.client import ApiClient
from edgeplane_dev.fleet_sim import FleetSimulator
from edgeplane_dev.stack import LocalStack, pinned_keys, pki_dir
from tests.support import wait_until

pytestmark = pytest.mark.e2e

SITES = 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("fleet") / "dev", [])
    state = stack.up()
    try:
        yield state
    finally:
        stack.down()


POLL = 0.5  # seconds between two looks at 200 sites through the API


def test_a_canaried_rollout_to_200_simulated_sites(stack):
    api = ApiClient(stack.context, timeout=60)
    with FleetSimulator(stack.mqtt_port, SITES, machines_per_site=4,
                        pki=pki_dir(Path(stack.directory)),
                        plan_keys=pinned_keys(Path(stack.directory))) as fleet:
        # Sites announce themselves (presence, inventory) and the cloud registers them.
        wait_until(lambda: sum(bool(s["online"]) for s in api.get("/sites")["sites"])
                   == SITES, timeout=120, interval=POLL, what="every site online")
        # A site is online once its presence is in; its inventory may come a batch later.
        for site in fleet.site_ids:
            wait_until(lambda site=site: api.get(f"/sites/{site}/machines")["machines"],
                       timeout=60, interval=POLL, what=f"the machines of {site}")
        offline = fleet.site_ids[-1]  # in the last wave
        fleet.take_offline(offline)
        wait_until(lambda: not api.get(f"/sites/{offline}")["site"]["online"], timeout=30,
                   interval=POLL, what=f"{offline} offline")

        created = api.post("/rollouts", {
            "name": "fleet: power on", "sites": fleet.site_ids,
            "steps": [{"task": "power.ensure", "params": {"state": "on"}},
                      {"task": "boot.override", "params": {"target": "pxe"}}],
            "policy": {"canary": {"sites": 10}, "growth": 3}})
        rollout = created["rollout"]
        assert rollout["waves"] == [10, 30, 90, 70]
        counts = created["rollout"]["counts"]
        assert counts["queued"] == 190 and sum(counts.values()) == SITES, \
            "only the canary moves first"
        rollout_id = rollout["rollout_id"]

        def status() -> dict:
            return api.get(f"/rollouts/{rollout_id}?machines=false")

        wait_until(lambda: status()["rollout"]["done"] == SITES - 1, timeout=240, interval=POLL,
                   what="every site but the offline one done")
        waiting = status()
        assert waiting["rollout"]["state"] == "running"
        (pending,) = [e for e in waiting["executions"] if e["state"] != "succeeded"]
        assert (pending["site_id"], pending["state"]) == (offline, "sent"), \
            "the offline site has its plan waiting in the broker"

        fleet.bring_online(offline)
        wait_until(lambda: status()["rollout"]["state"] != "running", timeout=60, interval=POLL,
                   what="the rollout ended")
        final = status()
        assert final["rollout"]["state"] == "succeeded"
        assert final["rollout"]["counts"] == {"succeeded": SITES}
        stats = fleet.stats()
        assert stats.results_sent == SITES and stats.plans_received >= SITES, \
            "each site ran its plan once (a redelivered plan is not run again)"

    events = api.get(f"/rollouts/{rollout_id}/events")["events"]
    started = [e["detail"]["wave"] for e in events if e["type"] == "Rollout Wave Started"]
    assert started == [1, 2, 3]
    sends = [(e["detail"]["wave"], e["ts"], e["detail"]["site_id"]) for e in events
             if e["type"] == "Execution State Changed" and e["detail"]["state"] == "sent"]
    early = [(later, earlier) for earlier, later in pairwise(sends) if later[0] < earlier[0]]
    assert not early, f"no site of a wave started before the last wave: {early[:3]}"
