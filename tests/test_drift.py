"""Desired state and drift: a blueprint rollout sets it, a real gateway reports what the
Redfish and IPMI simulators read, the cloud computes drift and emits an event."""

from __future__ import annotations

from chalicelib import drift, ingest
from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.journal import Journal
from edge_gateway.transport import MqttTransport
from edgeplane import protocol
from edgeplane.protocol import (
    BmcProtocol,
    Inventory,
    MachineObservation,
    Observed,
    PlanStep,
    Result,
)
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.redfish_sim import BmcOptions
from tests.support import PLAN_KEYS, call

SITE = "shop-0042"


# --- the comparison -----------------------------------------------------------------------


def test_what_a_machine_should_read_after_its_steps():
    steps = [PlanStep("power.ensure", {"state": "on"}, ["a", "b"]),
             PlanStep("bios.apply", {"attributes": {"X": "1"}}, ["a"]),
             PlanStep("boot.override", {"target": "disk", "mode": "continuous"}, ["a"]),
             PlanStep("boot.override", {"target": "pxe", "mode": "once"}, ["b"]),
             PlanStep("firmware.update", {"image": "http://r/bmc-2.bin", "component": "BMC",
                                          "version": "2"}, ["a"])]
    assert drift.expected_from(steps, "a") == {
        "power": "on", "bios": {"X": "1"}, "boot": {"target": "disk", "mode": "continuous"},
        "firmware": {"BMC": "2"}}
    assert drift.expected_from(steps, "b") == {"power": "on"}, "a once override is consumed"


def test_differences_are_named_and_unread_fields_are_not_judged():
    expect = {"power": "on", "bios": {"X": "1", "Y": "2"}, "firmware": {"BMC": "2"}}
    seen = MachineObservation(machine="a", power="off", bios={"X": "1", "Y": "3"},
                              firmware=[{"id": "/redfish/v1/UpdateService/FirmwareInventory/BMC",
                                         "name": "BMC Firmware", "version": "1"}])
    assert drift.compare(expect, seen) == [
        {"field": "power", "desired": "on", "observed": "off"},
        {"field": "bios.Y", "desired": "2", "observed": "3"},
        {"field": "firmware.BMC", "desired": "2", "observed": "1"}]
    assert drift.compare(expect, MachineObservation(machine="a", power="on")) == []


def test_observed_state_is_judged_only_where_a_rollout_desired_something(aws):
    from chalicelib.models import Machine
    from chalicelib.rollouts import rendering

    for site in ("shop-1", "shop-2"):
        Machine(site, "srv-1", protocol="redfish", address="x").save()
    rendering.set_desired("r-1", "shop-2", {"srv-1": {"expect": {"power": "on"}}})
    reports = [protocol.Observed(site=site, ts=10.0, trigger="plan", machines=[
        MachineObservation(machine="srv-1", power="off")]) for site in ("shop-1", "shop-2")]
    ingest.handle_messages([(protocol.up_topic(r.site, r.KIND), r.encode()) for r in reports])
    assert Machine.get("shop-1", "srv-1").observed is None, "nothing desired: nothing written"
    judged = Machine.get("shop-2", "srv-1")
    assert judged.drift == [{"field": "power", "desired": "on", "observed": "off"}]


# --- end to end: API, real gateway, simulators, EventBridge --------------------------------


BLUEPRINT = {"kind": "blueprint", "name": "baseline", "spec": {
    "params": {"profile": {"type": "string", "default": "Balanced"}},
    "steps": [{"task": "power.ensure", "params": {"state": "on"}},
              {"task": "bios.apply", "select": {"capable": True},
               "params": {"attributes": {"PowerProfile": "{{ params.profile }}"},
                          "reboot": True}}]}}


def test_drift_from_a_real_gateway_against_the_simulators(api, published, bus_events, broker,
                                                         redfish_bmcs, ipmi_bmcs, tmp_path):
    redfish = redfish_bmcs.fresh(BmcOptions(power_delay=0.2))
    machines = {"srv-1": (BmcProtocol.REDFISH, redfish.url),
                "ipmi-1": (BmcProtocol.IPMI, ipmi_bmcs.fresh(power_delay=0.2).address)}
    assert call(api, "PUT", f"/sites/{SITE}", {})[0] == 200
    for machine_id, (kind, address) in machines.items():
        assert call(api, "PUT", f"/sites/{SITE}/machines/{machine_id}",
                    {"protocol": str(kind), "address": address})[0] == 200
    config = SiteConfig(
        site=SITE, journal=tmp_path / "journal.db", observe_interval=0, plan_keys=PLAN_KEYS,
        mqtt=MqttSettings(port=broker.port, reconnect_min_delay=1, reconnect_max_delay=2),
        machines=tuple(MachineConfig(id=m, protocol=kind, timeout=5, power_timeout=20,
                                     poll_interval=0.2, min_interval=0,
                                     credentials=BmcCredentials(address, "admin",
                                                                "password"))
                       for m, (kind, address) in machines.items()))
    gateway = Gateway(config, transport_factory=lambda gw: MqttTransport(
        config.mqtt, SITE, gw.subscriptions, gw.will), journal=Journal(config.journal))
    recorder = Recorder(broker.port)
    gateway.start()
    try:
        # The gateway's inventory tells the cloud what each machine can do.
        inventory = recorder.wait_for(lambda ms: len(ms) == 1, Inventory)[0]
        ingest.handle_message(*_up(inventory))
        assert call(api, "POST", "/definitions", {"documents": [BLUEPRINT]})[0] == 200
        status, body = call(api, "POST", "/rollouts", {"blueprint": "baseline",
                                                       "sites": [SITE]})
        assert status == 201, body
        (plan,) = published.plans()
        assert [s.task for s in plan.steps] == ["power.ensure", "bios.apply"]
        recorder.publish(*published.sent[-1])  # as the cloud signed it
        result = recorder.wait_for(lambda ms: len(ms) == 1, Result, timeout=60)[0]
        assert result.state == "succeeded", result
        after_plan = recorder.wait_for(lambda ms: len(ms) == 1, Observed)[0]
        assert after_plan.trigger == "plan" and after_plan.execution_id == plan.execution_id
        ingest.handle_message(*_up(result))
        ingest.handle_message(*_up(after_plan))
        status, report = call(api, "GET", f"/drift?site={SITE}")
        assert report["drifted"] == 0
        assert {r["machine_id"]: r["in_sync"] for r in report["machines"]} == \
            {"srv-1": True, "ipmi-1": True}
        assert bus_events("Machine Drift") == [], "no drift, no event"

        # Someone changes the BIOS at the site, behind Edgeplane's back.
        system = next(iter(redfish.bmc.systems.values()))
        redfish.bmc.resources.edit(system.bios_path)["Attributes"]["PowerProfile"] = \
            "PowerSaver"
        observed = gateway.observe(trigger="interval")
        ingest.handle_message(*_up(observed))
        ingest.handle_message(*_up(observed))  # delivered twice: one event only
    finally:
        gateway.stop()
        recorder.close()

    status, report = call(api, "GET", f"/drift?site={SITE}")
    assert report["drifted"] == 1
    drifted = report["machines"][0]
    assert (drifted["machine_id"], drifted["blueprint"], drifted["revision"]) == \
        ("srv-1", "baseline", 1)
    assert drifted["drift"] == [{"field": "bios.PowerProfile", "desired": "Balanced",
                                 "observed": "PowerSaver"}]
    sent = bus_events("Machine Drift")
    assert [e["detail-type"] for e in sent] == [drift.DRIFT_DETECTED]
    assert sent[0]["source"] == "edgeplane"
    assert sent[0]["detail"]["site_id"] == SITE and sent[0]["detail"]["machine_id"] == "srv-1"
    assert sent[0]["detail"]["drift"] == drifted["drift"]


def _up(message: protocol.Message) -> tuple[str, bytes]:
    return protocol.up_topic(message.site, message.KIND), message.encode()
