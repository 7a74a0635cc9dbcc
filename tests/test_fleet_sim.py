"""The fleet simulator against a real mosquitto: many real gateway cores on one MQTT loop."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading

import pytest

from edge_gateway.config import MqttSettings
from edgeplane import protocol
from edgeplane.protocol import Inventory, Plan, PlanStep, PowerState, Presence, Result
from edgeplane_dev.fleet_sim import (
    FleetSimulator,
    FleetStats,
    raise_open_file_limit,
    site_ids,
    split,
)
from edgeplane_dev.transport_multiplex import MultiplexedMqtt, MultiplexedTransport
from tests.support import PLAN_KEYS, sign, wait_until

MACHINES = ["rf-1", "rf-2", "ipmi-1", "ipmi-2"]


def power_on(site: str, rollout: str = "r1") -> Plan:
    return Plan(site=site, execution_id=f"{rollout}.{site}", rollout_id=rollout,
                steps=[PlanStep("power.ensure", {"state": "on"}, MACHINES)])


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def latest_presence(messages: list[Presence], site: str) -> Presence | None:
    mine = [m for m in messages if m.site == site]
    return max(mine, key=lambda m: m.order) if mine else None


@pytest.fixture
def fleet_of(broker):
    started: list[FleetSimulator] = []

    def start(sites: int, **options) -> FleetSimulator:
        fleet = FleetSimulator(broker.port, sites, reconnect_delays=(0.2, 1.0),
                               plan_keys=PLAN_KEYS, **options)
        started.append(fleet)
        fleet.start(timeout=30)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()


def test_200_sites_report_in_and_each_runs_its_plan_once(fleet_of, recorder):
    fleet = fleet_of(200)
    sites = set(fleet.site_ids)
    assert all(protocol.SITE_ID_PATTERN.match(s) for s in sites)
    recorder.wait_for(lambda ms: {m.site for m in ms if m.online} == sites, Presence)
    inventories = recorder.wait_for(lambda ms: {m.site for m in ms} == sites, Inventory)
    assert len(inventories) == 200
    for inventory in inventories:
        assert [(m.id, m.protocol) for m in inventory.machines] == [
            ("rf-1", "redfish"), ("rf-2", "redfish"), ("ipmi-1", "ipmi"), ("ipmi-2", "ipmi")]

    for site in fleet.site_ids:
        recorder.publish(protocol.plan_topic(site), sign(power_on(site)))
    results = recorder.wait_for(lambda ms: {m.site for m in ms} == sites, Result)

    assert sorted(r.execution_id for r in results) == sorted(f"r1.{s}" for s in sites)
    assert {r.state for r in results} == {"succeeded"}
    assert all(m.power == PowerState.ON for machines in fleet.machines.values()
               for m in machines.values())
    stats = fleet.stats()
    assert (stats.sites, stats.connected, stats.plans_received, stats.results_sent) == (
        200, 200, 200, 200)
    assert stats.peak_rss_mib > 0
    assert stats.threads < 200, "no thread per site: sites borrow from one pool"


def test_a_plan_sent_while_a_site_is_offline_arrives_when_it_reconnects(fleet_of, recorder):
    fleet = fleet_of(3)
    site = fleet.site_ids[1]
    recorder.wait_for(lambda ms: len(ms) == 3, Inventory)
    online = latest_presence(recorder.of_kind(Presence), site)

    fleet.take_offline(site)
    will = recorder.wait_for(lambda ms: not latest_presence(ms, site).online, Presence)
    assert latest_presence(will, site).session == online.session
    recorder.publish(protocol.plan_topic(site), sign(power_on(site)))
    assert fleet.gateway(site).plans_received == 0

    fleet.bring_online(site)
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert (result.site, result.state) == (site, "succeeded")
    assert fleet.gateway(site).plans_received == 1
    back = recorder.wait_for(lambda ms: latest_presence(ms, site).online, Presence)
    assert latest_presence(back, site).session > online.session


def test_a_dropped_connection_reconnects_by_itself(fleet_of, recorder):
    fleet = fleet_of(2)
    site = fleet.site_ids[0]
    recorder.wait_for(lambda ms: len(ms) == 2, Inventory)
    online = latest_presence(recorder.of_kind(Presence), site)

    fleet.drop_connection(site)
    recorder.wait_for(lambda ms: any(m.site == site and not m.online for m in ms), Presence)
    recorder.wait_for(lambda ms: latest_presence(ms, site).session > online.session
                      and latest_presence(ms, site).online, Presence)
    recorder.publish(protocol.plan_topic(site), sign(power_on(site)))
    result = recorder.wait_for(lambda ms: len(ms) == 1, Result)[0]
    assert (result.site, result.state) == (site, "succeeded")


def test_a_duplicated_plan_is_not_run_again_and_its_result_is_resent(fleet_of, recorder):
    fleet = fleet_of(2)
    site = fleet.site_ids[0]
    gateway = fleet.gateway(site)
    plan = power_on(site)
    recorder.publish(protocol.plan_topic(site), sign(plan))
    recorder.wait_for(lambda ms: len(ms) == 1, Result)
    assert gateway.idle.wait(10)  # the plan's closing observation is done too
    calls_before = [len(m.calls) for m in fleet.machines[site].values()]

    again = dataclasses.replace(plan, id=protocol.new_id())
    recorder.publish(protocol.plan_topic(site), sign(again))
    results = recorder.wait_for(lambda ms: len(ms) == 2, Result)

    assert results[0].encode() == results[1].encode()
    assert (gateway.plans_received, gateway.results_sent) == (2, 1)
    assert [len(m.calls) for m in fleet.machines[site].values()] == calls_before


def test_stop_closes_every_socket_and_joins_every_thread(broker, recorder):
    threads_before = set(threading.enumerate())
    fds_before = open_fds()
    fleet = FleetSimulator(broker.port, 50, plan_keys=PLAN_KEYS)
    try:
        fleet.start(timeout=30)
        recorder.wait_for(lambda ms: len(ms) == 50, Inventory)
        for site in fleet.site_ids:
            recorder.publish(protocol.plan_topic(site), sign(power_on(site)))
        recorder.wait_for(lambda ms: len(ms) == 50, Result)
    finally:
        fleet.stop()

    assert [t.name for t in threading.enumerate() if t not in threads_before] == []
    assert open_fds() <= fds_before
    recorder.wait_for(  # every site said goodbye
        lambda ms: all(not latest_presence(ms, s).online for s in fleet.site_ids), Presence)


def test_one_loop_drives_more_sessions_than_select_can_watch(broker, recorder):
    if raise_open_file_limit() < 1400:
        pytest.skip("needs an open-file limit of 1,400")
    sites = site_ids(1100)
    received: set[str] = set()
    all_received = threading.Event()
    lock = threading.Lock()

    def on_message(site: str, topic: str, payload: bytes) -> None:
        with lock:
            received.add(site)
            if len(received) == len(sites):
                all_received.set()

    settings = MqttSettings(port=broker.port)
    with MultiplexedMqtt() as loop:
        transports = []
        for site in sites:
            will = protocol.Presence(site=site, online=False).encode()
            transport = MultiplexedTransport(
                loop, settings, site, [protocol.down_filter(site)],
                will=lambda session, site=site, will=will: (
                    protocol.up_topic(site, "presence"), will))
            transport.start(lambda: None,
                            lambda topic, payload, site=site: on_message(site, topic, payload),
                            lambda key: None)
            transports.append(transport)
        assert all(t.connected.wait(30) for t in transports)
        assert open_fds() > 1100

        for site in sites:
            recorder.client.publish(protocol.plan_topic(site), b"hello", qos=1)
        assert all_received.wait(30), f"{len(received)} of {len(sites)} sessions received"
        for transport in transports:
            transport.stop()
        assert loop.sessions == 0 and loop.connected == 0


def test_split_shares_the_sites_out_in_order_and_evenly():
    parts = split(site_ids(10), 3)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [s for p in parts for s in p] == site_ids(10)


def test_fleet_stats_total_sums_every_field():
    one = FleetStats(sites=2, connected=1, plans_received=3, results_sent=2, rss_mib=10.0,
                     peak_rss_mib=12.0, threads=5)
    two = dataclasses.replace(one, connected=2, threads=7)
    assert FleetStats.total([one, two]) == FleetStats(4, 3, 6, 4, 20.0, 24.0, 12)


def test_sites_split_over_processes_run_their_plans_and_obey_relayed_calls(broker, recorder):
    fleet = FleetSimulator(broker.port, 12, processes=3, reconnect_delays=(0.2, 1.0),
                           plan_keys=PLAN_KEYS)
    try:
        fleet.start(timeout=60)
        pids = fleet.pids
        assert len(set(pids)) == 3 and os.getpid() not in pids
        recorder.wait_for(lambda ms: {m.site for m in ms} == set(fleet.site_ids), Inventory)
        for site in fleet.site_ids:
            recorder.publish(protocol.plan_topic(site), sign(power_on(site)))
        results = recorder.wait_for(lambda ms: len(ms) == 12, Result)
        assert {r.state for r in results} == {"succeeded"}
        # A site counts its result once its publish returned, which may be just after the
        # recorder received it.
        wait_until(lambda: fleet.stats().results_sent == 12, timeout=10,
                   what="every result counted")
        stats = fleet.stats()
        assert (stats.sites, stats.connected, stats.plans_received, stats.results_sent) == (
            12, 12, 12, 12)
        with pytest.raises(RuntimeError):
            fleet.gateway(fleet.site_ids[0])

        site = fleet.site_ids[-1]  # in the last process
        fleet.take_offline(site)
        recorder.wait_for(lambda ms: not latest_presence(ms, site).online, Presence)
        assert fleet.connected_count() == 11
        fleet.bring_online(site)
        fleet.wait_connected(30, sites=[site])
        recorder.wait_for(lambda ms: latest_presence(ms, site).online, Presence)
    finally:
        fleet.stop()
    assert all(_ended(pid) for pid in pids)
    recorder.wait_for(  # every site said goodbye
        lambda ms: all(not latest_presence(ms, s).online for s in fleet.site_ids), Presence)


def _ended(pid: int) -> bool:
    """Gone (reaped), or a zombie: the process runs no more."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_fleet_process_that_dies_is_reported_and_the_fleet_still_stops(broker):
    fleet = FleetSimulator(broker.port, 4, processes=2, plan_keys=PLAN_KEYS)
    try:
        fleet.start(timeout=60)
        survivor, victim = fleet.pids
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="fleet process ended"):
            fleet.stats()
    finally:
        fleet.stop()
    assert _ended(survivor) and _ended(victim), "both processes ended and were reaped"
