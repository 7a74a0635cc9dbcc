"""The demo: bring the local stack up, roll out two actions, then the example fleet's
definitions and a blueprint rendered per site and machine; try attacks on the device
channel; upgrade one site's gateway to a version built now; show the results, tear down."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from edgeplane_cli import documents
from edgeplane_cli.client import ApiClient
from edgeplane_cli.drift import drift_table, gateway_drift_table
from edgeplane_cli.params import explain_table, variation_table
from edgeplane_cli.render import (
    bios_table,
    console,
    inventory_table,
    rollout_table,
    sites_table,
)
from edgeplane_cli.rollouts import wait_for_rollout
from edgeplane_dev.stack import PROJECT_ROOT, LocalStack, StackState, plan_sites

DEMO_STEPS = [
    {"task": "power.ensure", "params": {"state": "on"}},
    {"task": "boot.override", "params": {"target": "pxe", "mode": "once"}},
]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fleet"
BLUEPRINT = "server-baseline"
BIOS_ATTRIBUTES = ["PowerProfile", "ProcTurboMode"]


def run_demo(directory: Path, site_count: int = 3, timeout: float = 150.0) -> bool:
    """Return True if both rollouts succeeded on every machine of every site."""
    started = time.monotonic()
    console.rule("Edgeplane demo")
    console.print(f"starting the local stack with {site_count} sites "
                  "(store, moto, mosquitto, Chalice API, ingest bridge, gateways, "
                  "emulated BMCs)...")
    stack = LocalStack(directory, plan_sites(site_count), fresh=True)
    with stack as state:
        console.print(f"stack up in {time.monotonic() - started:.1f} s; API {state.api_url}; "
                      f"web console {state.console_url} (sign in with the token in "
                      f"{directory / 'stack.json'})")
        api = ApiClient(state.context)
        console.print(sites_table(api.get("/sites")["sites"]))
        ok = _actions(api, timeout)
        ok = _blueprint(api, timeout) and ok
        ok = _channel(state) and ok
        ok = _upgrade(stack, api, "site-001", timeout) and ok
        console.print("tearing the stack down...")
    console.print(f"demo {'succeeded' if ok else 'FAILED'} in "
                  f"{time.monotonic() - started:.1f} s")
    return ok


def _actions(api: ApiClient, timeout: float) -> bool:
    """The skeleton's rollout: two actions, inline, on every site."""
    console.rule("1. power on and PXE once, everywhere")
    rollout_started = time.monotonic()
    created = api.post("/rollouts", {"name": "demo: power on, PXE once", "tag": "dev",
                                     "steps": DEMO_STEPS})
    rollout_id = created["rollout"]["rollout_id"]
    console.print(f"rollout {rollout_id} started on {len(created['executions'])} sites: "
                  "power.ensure state=on, then boot.override target=pxe mode=once")
    data = wait_for_rollout(api, rollout_id, timeout)
    console.print(rollout_table(data))
    console.print(f"rollout {data['rollout']['state']} in "
                  f"{time.monotonic() - rollout_started:.1f} s")
    return bool(data["rollout"]["state"] == "succeeded")


def _blueprint(api: ApiClient, timeout: float) -> bool:
    """One blueprint for the fleet; the sites' differences as profiles; then the rollout."""
    console.rule(f"2. the fleet's definitions ({EXAMPLES.relative_to(EXAMPLES.parents[1])})")
    loaded = documents.load([EXAMPLES])
    results = api.post("/definitions", {"documents": [d.document for d in loaded]})["results"]
    kinds = Counter(r["kind"] for r in results)
    console.print("applied " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    console.print(variation_table(api.get("/params/variation")))
    console.print(explain_table(api.get(f"/params/explain?site=site-001&machine=srv-1"
                                        f"&blueprint={BLUEPRINT}")))

    console.rule(f"3. roll out blueprint {BLUEPRINT} to every site")
    rollout_started = time.monotonic()
    # Every step's message and data in full: the BIOS table shows what bios.apply did.
    created = api.post("/rollouts", {"name": f"demo: {BLUEPRINT}", "tag": "dev",
                                     "blueprint": BLUEPRINT, "policy": {"report": "full"}})
    rollout = created["rollout"]
    console.print(f"rollout {rollout['rollout_id']}: blueprint {BLUEPRINT} revision "
                  f"{rollout['blueprint']['revision']}, each site's plan rendered with its "
                  "own values")
    data = wait_for_rollout(api, rollout["rollout_id"], timeout)
    console.print(rollout_table(data))
    console.print(bios_table(data, BIOS_ATTRIBUTES))
    console.print(inventory_table(data))
    console.print(f"rollout {data['rollout']['state']} in "
                  f"{time.monotonic() - rollout_started:.1f} s")
    console.print(drift_table(_observed(api)))
    return bool(data["rollout"]["state"] == "succeeded")


def _channel(state: StackState) -> bool:
    """Three attacks on the device channel, tried for real: each must be refused."""
    from edgeplane_dev.channel_checks import channel_table, run_checks

    console.rule("4. the device channel: TLS, an identity per site, signed plans")
    console.print("every client proves who it is with a certificate from the stack's CA; "
                  "each site reads and writes only its own topics; gateways run only plans "
                  "the cloud signed")
    checks = run_checks(state, "site-001")
    console.print(channel_table(checks))
    return all(check.refused for check in checks)


def _upgrade(stack: LocalStack, api: ApiClient, site_id: str, timeout: float) -> bool:
    """One site's gateway upgraded in the field to a version built now, rolled out as any
    task is; its version before and after."""
    from edge_gateway import __version__

    version = f"{__version__}+demo.{int(time.time())}"
    console.rule(f"5. upgrade the gateway of {site_id} to a version built now ({version})")
    started = time.monotonic()
    before = _version_of(api, site_id)
    with tempfile.TemporaryDirectory(prefix="edgeplane-demo-") as dist:
        subprocess.run([sys.executable, str(PROJECT_ROOT / "scripts" / "build_dists.py"),
                        "--only", "gateway", "--dist", dist, "--version", version],
                       check=True, capture_output=True)
        (wheel,) = Path(dist).glob("*.whl")
        url, sha256 = stack.publish_artifact(wheel)
    console.print(f"built {wheel.name}; served at {url} (sha256 {sha256[:16]}…); the plan "
                  "that carries both is signed by the cloud")
    created = api.post("/rollouts", {
        "name": f"demo: gateway {version}", "sites": [site_id], "steps": [
            {"task": "gateway.upgrade",
             "params": {"version": version, "url": url, "sha256": sha256}}]})
    rollout_id = created["rollout"]["rollout_id"]
    data = wait_for_rollout(api, rollout_id, timeout)
    for execution in data["executions"]:
        console.print(f"{execution['site_id']}: {execution['state']}: {execution['message']}")
    after = _version_of(api, site_id, until=version)
    console.print(f"{site_id}'s gateway: {before} before, {after} after (built, rolled out "
                  f"and healthy in {time.monotonic() - started:.1f} s)")
    console.print(sites_table(api.get("/sites")["sites"]))
    console.print(gateway_drift_table(api.get("/drift")))
    return bool(data["rollout"]["state"] == "succeeded" and after == version)


def _version_of(api: ApiClient, site_id: str, until: str | None = None,
                timeout: float = 15.0) -> str | None:
    """The gateway version a site reports (``until``: waiting a while for that one)."""
    deadline = time.monotonic() + timeout
    while True:
        version = api.get(f"/sites/{site_id}")["site"].get("gateway_version")
        if until is None or version == until or time.monotonic() > deadline:
            return version if isinstance(version, str) else None
        time.sleep(0.3)


def _observed(api: ApiClient, timeout: float = 15.0) -> dict:
    """The drift report, once every machine's observed state after the plan has arrived."""
    deadline = time.monotonic() + timeout
    while True:
        report = api.get("/drift")
        if all(m["observed"] is not None for m in report["machines"]) or \
                time.monotonic() > deadline:
            return report
        time.sleep(0.5)
