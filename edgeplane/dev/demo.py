"""The demo: bring the local stack up, power on + PXE-once every machine, show, tear down."""

from __future__ import annotations

import time
from pathlib import Path

from edgeplane.cli.client import ApiClient
from edgeplane.cli.render import (
    bios_table,
    console,
    inventory_table,
    rollout_table,
    sites_table,
)
from edgeplane.cli.rollouts import wait_for_rollout
from edgeplane.dev.stack import LocalStack, plan_sites

DEMO_STEPS = [
    {"task": "power.ensure", "params": {"state": "on"}},
    {"task": "boot.override", "params": {"target": "pxe", "mode": "once"}},
]
# The fleet's BIOS baseline: applied (with a reboot, then verified) wherever a machine has a
# BIOS interface; then every machine's inventory.
BIOS_BASELINE = {"ProcTurboMode": "Disabled", "PowerProfile": "Balanced"}
BASELINE_STEPS = [
    {"task": "bios.apply", "params": {"attributes": BIOS_BASELINE, "reboot": True},
     "select": {"capable": True}},
    {"task": "inventory.collect", "params": {}, "select": {"capable": True}},
]


def run_demo(directory: Path, site_count: int = 3, timeout: float = 150.0) -> bool:
    """Return True if the rollout succeeded on every machine of every site."""
    started = time.monotonic()
    console.rule("Edgeplane demo")
    console.print(f"starting the local stack with {site_count} sites "
                  "(moto, mosquitto, Chalice API, ingest bridge, gateways, emulated BMCs)...")
    with LocalStack(directory, plan_sites(site_count)) as state:
        console.print(f"stack up in {time.monotonic() - started:.1f} s; API {state.api_url}")
        api = ApiClient(state.context)
        console.print(sites_table(api.get("/sites")["sites"]))
        site_ids = [s["site_id"] for s in state.sites]
        rollout_started = time.monotonic()
        created = api.post("/rollouts", {"name": "demo: power on, PXE once",
                                         "tag": "dev", "steps": DEMO_STEPS})
        rollout_id = created["rollout"]["rollout_id"]
        console.print(f"rollout {rollout_id} started on {len(site_ids)} sites: "
                      "power.ensure state=on, then boot.override target=pxe mode=once")
        data = wait_for_rollout(api, rollout_id, timeout)
        console.print(rollout_table(data))
        console.print(f"rollout finished in {time.monotonic() - rollout_started:.1f} s")
        ok = data["rollout"]["state"] == "succeeded"

        baseline_started = time.monotonic()
        created = api.post("/rollouts", {"name": "demo: BIOS baseline and inventory",
                                         "tag": "dev", "steps": BASELINE_STEPS})
        console.print(f"rollout {created['rollout']['rollout_id']}: bios.apply "
                      f"{BIOS_BASELINE} (reboot, verify) where machines have a BIOS "
                      "interface, then inventory.collect everywhere")
        baseline = wait_for_rollout(api, created["rollout"]["rollout_id"], timeout)
        console.print(bios_table(baseline, sorted(BIOS_BASELINE)))
        console.print(inventory_table(baseline))
        console.print(f"rollout {baseline['rollout']['state']} in "
                      f"{time.monotonic() - baseline_started:.1f} s")
        ok = ok and baseline["rollout"]["state"] == "succeeded"
        console.print("tearing the stack down...")
    console.print(f"demo {'succeeded' if ok else 'FAILED'} in "
                  f"{time.monotonic() - started:.1f} s")
    return ok
