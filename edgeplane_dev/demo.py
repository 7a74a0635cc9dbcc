"""The demo: bring the local stack up, roll out two actions, then the example fleet's
definitions and a blueprint rendered per site and machine; try attacks on the device
channel; upgrade one site's gateway to a version built now; provision one machine per site
into a k3s node (blueprint k3s-node, the installer through each site's cache); show the
results, tear down."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

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
K3S_BLUEPRINT = EXAMPLES / "blueprints" / "k3s-node.yaml"
INSTALLER_BYTES = 64 * 1024 * 1024
INSTALL_MACHINE = "srv-1"


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
        ok = _provision(stack, api, timeout) and ok
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


def k3s_node_steps(installer: tuple[str, str, int], machines: list[str],
                   install_timeout: int = 300,
                   overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Blueprint k3s-node's steps (examples/fleet), inline, on ``machines``: its templates
    filled with the installer's URL, SHA-256 and size; ``overrides``: more parameters of
    a task's steps (e.g. ``{"os.wait_installed": {"boot_read_s": 30}}``)."""
    url, sha256, size = installer
    values = {"installer_image": url, "installer_sha256": sha256, "installer_size": size,
              "install_timeout": install_timeout}
    spec = yaml.safe_load(K3S_BLUEPRINT.read_text())["spec"]
    steps = []
    for step in spec["steps"]:
        params = {name: _filled(value, values) for name, value in
                  (step.get("params") or {}).items()}
        params.update((overrides or {}).get(step["task"], {}))
        steps.append({"task": step["task"], "params": params, "select": {"ids": machines}})
    return steps


def _filled(value: Any, values: dict[str, Any]) -> Any:
    """``"{{ params.x }}"`` -> the value of x (as it is: a size stays a number)."""
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        name = value[2:-2].strip().removeprefix("params.")
        return values[name]
    return value


def node_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per machine that ran os.wait_installed: its state, the node's facts (or
    the failure), and the install time (the reset to the phone-home)."""
    rows = []
    for execution in data["executions"]:
        for machine in execution.get("machines") or []:
            steps = {step["task"]: step for step in machine["steps"]}
            waited = steps.get("os.wait_installed")
            if waited is None:
                continue
            reset = steps.get("power.cycle") or {}
            rows.append({"site": execution["site_id"], "machine": machine["machine"],
                         "state": waited["state"], "facts": waited.get("data") or {},
                         "message": waited.get("message", ""),
                         "seconds": _seconds(reset.get("started_at"),
                                             waited.get("finished_at"))})
    return rows


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def nodes_table(rows: list[dict[str, Any]], caches: dict[str, dict[str, Any]]) -> Table:
    """Each provisioned machine: its node's facts and the bytes its site's cache moved."""
    from edgeplane_cli.render import styled

    table = Table(title="k3s nodes")
    for column in ("site", "machine", "state", "node name", "OS", "kernel", "k3s",
                   "install", "WAN bytes", "LAN bytes"):
        table.add_column(column)
    for row in rows:
        cache, facts = caches.get(row["site"]) or {}, row["facts"]
        seconds = row["seconds"]
        table.add_row(row["site"], row["machine"], styled(row["state"]),
                      facts.get("node_name") or row["message"][:60], facts.get("os", "-"),
                      facts.get("kernel", "-"), facts.get("k3s_version", "-"),
                      "-" if seconds is None else f"{seconds:.0f} s",
                      _mib(cache.get("wire_bytes")),
                      _mib(cache.get("served_bytes")))
    return table


def _site_caches(api: ApiClient, site_ids: list[str], served: bool,
                 timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """Each site's last cache report (``served``: waiting a while for one that served)."""
    deadline = time.monotonic() + timeout
    while True:
        caches = {site: api.get(f"/sites/{site}")["site"].get("cache") or {}
                  for site in site_ids}
        if not served or time.monotonic() > deadline or \
                all(cache.get("served_bytes") for cache in caches.values()):
            return caches
        time.sleep(0.5)


def _provision(stack: LocalStack, api: ApiClient, timeout: float) -> bool:
    """One machine per site from bare metal to a k3s node: blueprint k3s-node's steps,
    the installer fetched once per site into its cache and read by the BMC from there."""
    console.rule(f"6. provision {INSTALL_MACHINE} of every site into a k3s node "
                 "(blueprint k3s-node)")
    started = time.monotonic()
    installer = stack.publish_installer(INSTALLER_BYTES)
    console.print(f"installer: {INSTALLER_BYTES // (1024 * 1024)} MiB at {installer[0]} "
                  f"(sha256 {installer[1][:16]}…); each gateway builds its machines' "
                  "NoCloud seeds with the site's k3s join token, which never leaves it")
    created = api.post("/rollouts", {
        "name": "demo: k3s nodes", "tag": "dev", "policy": {"report": "full"},
        "steps": k3s_node_steps(installer, [INSTALL_MACHINE])})
    data = wait_for_rollout(api, created["rollout"]["rollout_id"], max(timeout, 300))
    sites = [execution["site_id"] for execution in data["executions"]]
    caches = _site_caches(api, sites, served=True)
    console.print(nodes_table(node_rows(data), caches))
    console.print(f"rollout {data['rollout']['state']} in "
                  f"{time.monotonic() - started:.1f} s")
    return bool(data["rollout"]["state"] == "succeeded")


def _mib(count: int | None) -> str:
    return "-" if count is None else f"{count / (1024 * 1024):.1f} MiB"
