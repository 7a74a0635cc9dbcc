"""``edgeplane rollout start|watch`` as an operator types them, against the real API of a
local stack (chalice local, moto server, mosquitto, the bridge); the sites' reports are
published to the broker as their gateways would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeplane import protocol
from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_dev.stack import LocalStack
from tests.support import machine_result, wait_until
from tests.tls_support import Peer, connect

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SITES = ["shop-a", "shop-b", "shop-c"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli-rollouts")
    stack = LocalStack(home / "dev", [])
    state = stack.up()
    peers: dict[str, Peer] = {}
    try:
        # Each site speaks for itself, with its own certificate, as its gateway would.
        for site in SITES:
            peers[site] = connect(state.mqtt_port, state.identity(site))
        yield from _registered(home, state, peers)
    finally:
        for peer in peers.values():
            peer.close()
        stack.down()


def _registered(home: Path, state, peers: dict[str, Peer]):
    env = {**os.environ, "EDGEPLANE_API_URL": state.api_url, "EDGEPLANE_TOKEN": state.token,
           "EDGEPLANE_HOME": str(home), "COLUMNS": "120"}
    api = ApiClient(state.context)
    for site in SITES:  # each site's gateway announces its machine
        inventory = protocol.Inventory(site=site, machines=[protocol.MachineReport(
            id="srv-1", protocol="ipmi", address="10.0.0.1", capabilities=["power"])])
        peers[site].publish(protocol.up_topic(site, "inventory"), inventory.encode())
    for site in SITES:
        wait_until(lambda site=site: registered(api, site), timeout=30, interval=0.2,
                   what=f"{site} registered")
    yield env, api, peers


def registered(api: ApiClient, site: str) -> bool:
    try:
        return bool(api.get(f"/sites/{site}/machines")["machines"])
    except ApiError:  # not registered yet
        return False


def edgeplane(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "edgeplane"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def report(peers: dict[str, Peer], rollout_id: str, site: str, state: str) -> None:
    result = protocol.Result(site=site, execution_id=f"{rollout_id}.{site}", seq=1,
                             machines=[machine_result("srv-1", state)], state=state,
                             message=f"{site} {state}")
    peers[site].publish(protocol.up_topic(site, "result"), result.encode())


def wait_for_state(api: ApiClient, rollout_id: str, predicate, timeout: float = 30) -> dict:
    def reached() -> dict | None:
        rollout = api.get(f"/rollouts/{rollout_id}?executions=false")["rollout"]
        return rollout if predicate(rollout) else None

    return wait_until(reached, timeout=timeout, interval=0.2,
                      what=f"rollout {rollout_id} in the state awaited")


def start(env, *flags: str) -> str:
    started = edgeplane(env, "rollout", "start", *[f"--site={s}" for s in SITES],
                        "--step", "power.ensure state=on", "--canary", "1", "--json", *flags)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout)["rollout"]["rollout_id"]


def test_watch_follows_a_rollout_to_its_end_and_exits_zero(cloud):
    env, api, peers = cloud
    rollout_id = start(env)
    watcher = subprocess.Popen([str(BIN / "edgeplane"), "rollout", "watch", rollout_id,
                                "--interval", "0.2", "--timeout", "60"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    report(peers, rollout_id, SITES[0], "succeeded")  # the canary
    wait_for_state(api, rollout_id, lambda r: r["current_wave"] == 1)
    for site in SITES[1:]:
        report(peers, rollout_id, site, "succeeded")
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    last = out[out.rindex(f"rollout {rollout_id}"):]
    assert "succeeded" in last and "succeeded 3  failed 0  pending 0" in last
    assert "canary" in last and "1/1" in last and "2/2" in last


def test_watch_exits_non_zero_when_the_canary_aborts_the_rollout(cloud):
    env, api, peers = cloud
    rollout_id = start(env, "--abort-min", "1")
    report(peers, rollout_id, SITES[0], "failed")
    rollout = wait_for_state(api, rollout_id, lambda r: r["state"] != "running")
    assert rollout["state"] == "aborted"
    watched = edgeplane(env, "rollout", "watch", rollout_id, "--interval", "0.2")
    assert watched.returncode == 1
    assert "aborted" in watched.stdout and "the canary failed" in watched.stdout
    assert "failed 1" in watched.stdout and "canceled 2" in watched.stdout, \
        "the sites after the canary never got the plan"
