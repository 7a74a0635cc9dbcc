"""A gateway.upgrade rolled out like any other task: its plan step names no machine, it is
refused anywhere but last, the site's result ends the execution, and the drift report
compares the version desired with the one each site runs."""

from __future__ import annotations

import pytest

from chalicelib import ingest
from edgeplane import protocol
from tests.support import call, up

UPGRADE = {"task": "gateway.upgrade", "params": {
    "version": "1.4.0", "url": "https://artifacts.example.net/edge_gateway-1.4.0.whl",
    "sha256": "ab" * 32}}
POWER_ON = {"task": "power.ensure", "params": {"state": "on"}}


def add_site(client, site: str, machines: tuple[str, ...] = ("srv-1",)) -> None:
    assert call(client, "PUT", f"/sites/{site}", {"tags": ["upgrade"]})[0] == 200
    for machine in machines:
        assert call(client, "PUT", f"/sites/{site}/machines/{machine}",
                    {"protocol": "ipmi", "address": f"bmc-{machine}.{site}"})[0] == 200


def report(message: protocol.Message) -> None:
    ingest.handle_message(*up(message))


def test_an_upgrade_rolls_out_in_waves_and_sites_report_their_versions(api, published):
    add_site(api, "shop-1")
    add_site(api, "shop-2", machines=())  # a site without machines still has a gateway
    report(protocol.Presence(site="shop-1", online=True, session=1.0, gateway_version="1.3.2"))
    status, body = call(api, "POST", "/rollouts", {
        "sites": ["shop-1", "shop-2"], "steps": [POWER_ON, UPGRADE],
        "policy": {"canary": {"sites": 1}}})
    assert status == 201, body
    rollout_id = body["rollout"]["rollout_id"]
    (plan,) = published.plans()
    assert plan.site == "shop-1"
    assert [(s.task, s.machines) for s in plan.steps] == [("power.ensure", ["srv-1"]),
                                                          ("gateway.upgrade", [])]
    assert plan.steps[1].params == UPGRADE["params"]

    _, drift = call(api, "GET", "/drift")
    assert drift["gateways"] == [{
        "site_id": "shop-1", "desired": "1.4.0", "running": "1.3.2", "online": True,
        "rollout_id": rollout_id, "desired_at": drift["gateways"][0]["desired_at"],
        "in_sync": False}]
    assert drift["gateways_drifted"] == 1

    report(protocol.Presence(site="shop-1", online=True, session=2.0, gateway_version="1.4.0"))
    report(protocol.Result(site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=3,
                           machines=[protocol.MachineResult(machine="srv-1",
                                                            state="succeeded")],
                           message="gateway upgraded from 1.3.2 to 1.4.0: healthy after 4.1 s"))
    _, sites = call(api, "GET", "/sites")
    assert {s["site_id"]: s["gateway_version"] for s in sites["sites"]}["shop-1"] == "1.4.0"
    _, drift = call(api, "GET", "/drift?site=shop-1")
    assert [(g["site_id"], g["in_sync"]) for g in drift["gateways"]] == [("shop-1", True)]

    (second,) = [p for p in published.plans() if p.site == "shop-2"]  # the next wave
    assert [(s.task, s.machines) for s in second.steps] == [("gateway.upgrade", [])]
    report(protocol.Result(site="shop-2", execution_id=f"{rollout_id}.shop-2", seq=2,
                           state="failed", message="gateway upgrade to 1.4.0 failed: it did "
                           "not prove healthy within 300 s; rolled back to 1.3.2"))
    _, body = call(api, "GET", f"/rollouts/{rollout_id}")
    assert body["rollout"]["state"] == "failed"
    (failed,) = [e for e in body["executions"] if e["site_id"] == "shop-2"]
    assert failed["message"].endswith("rolled back to 1.3.2")


@pytest.mark.parametrize("steps, message", [
    ([UPGRADE, POWER_ON], "step 0 (gateway.upgrade) must be the plan's last step"),
    ([{**UPGRADE, "select": {"ids": ["srv-1"]}}], "it takes no 'select'"),
    ([{**UPGRADE, "params": {**UPGRADE["params"], "sha256": "not-a-digest"}}],
     "'sha256' is 'not-a-digest'; it must be 64 lowercase hex digits"),
    ([{**UPGRADE, "params": {**UPGRADE["params"], "version": "../../etc"}}],
     "'version' is '../../etc'; it must be a version"),
])
def test_refused_upgrades(api, published, steps, message):
    add_site(api, "shop-1")
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": steps})
    assert status == 400, body
    assert message in body["error"]["message"]
    assert published.sent == []


def test_a_blueprint_cannot_hold_an_upgrade(api):
    status, body = call(api, "POST", "/definitions", {"documents": [{
        "kind": "blueprint", "name": "with-upgrade",
        "spec": {"steps": [UPGRADE]}}]})
    assert status == 400, body
    assert "roll it out as an inline step, not in a blueprint" in body["error"]["message"]
