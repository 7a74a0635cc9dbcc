"""The chaos suite: faults injected into the whole local stack mid-rollout.

Real parts everywhere: the stack's store (dynalite), broker (mosquitto over TLS, a
certificate per client), API, bridge and ticker; real ``edge-gateway`` processes; simulated
Redfish BMCs that record every request. Each test injects one fault while a rollout of
``power.cycle`` (not idempotent: it acts every time it runs) and ``bios.apply`` with a
reboot runs, and checks what the issue asks of each: every BMC action happened exactly once
(counted at the BMC), no result was lost (every execution's result stored), no rollout
stayed in progress (each ended). Each writes those counts to ``counts.json`` in its folder
and logs them (``pytest -s tests/test_chaos.py`` prints them).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_gateway import __version__
from edgeplane.protocol import MachineResult, Progress, Result, StepResult
from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_dev.fleet_sim import FleetSimulator
from edgeplane_dev.stack import BMC_PASSWORD, BMC_USERNAME, LocalStack, pinned_keys, pki_dir
from tests.chaos_support import (
    ChaosSite,
    FaultReport,
    WanLink,
    bios_attribute,
    rollout_status,
    step_states,
    wait_for_end,
)
from tests.support import log_says, machine_count, up, wait_until
from tests.tls_support import connect
from tests.upgrade_support import CRASHES, build_versions

pytestmark = pytest.mark.e2e

MACHINES = 2  # per site
STEPS: list[dict[str, Any]] = [
    {"task": "power.cycle", "params": {}},
    {"task": "bios.apply", "params": {"attributes": {"PowerProfile": "Balanced"},
                                      "reboot": True, "timeout": 60}},
]
# What STEPS do at each BMC: the cycle's reset, the BIOS write and the reset that applies it.
ONCE = {"reset": 2, "bios-write": 1}
TASKS = [step["task"] for step in STEPS]

MakeSite = Callable[..., ChaosSite]


@pytest.fixture
def make_site(stack: LocalStack, tmp_path: Path, redfish_bmcs) -> Iterator[MakeSite]:
    """``make_site(site_id, port=None, supervised=False)``: a site of the stack with
    ``MACHINES`` simulated Redfish BMCs no other test used, its gateway started (on ``port``:
    a WAN link; ``supervised``: under ``edge-gateway supervise``)."""
    made: list[ChaosSite] = []

    def make(site_id: str, port: int | None = None, supervised: bool = False) -> ChaosSite:
        bmcs = redfish_bmcs.fresh(count=MACHINES)
        made.append(ChaosSite(stack, tmp_path / "sites", site_id, bmcs.urls, port=port,
                              supervised=supervised))
        return made[-1].start()

    yield make
    for site in made:
        site.stop()


def start_rollout(api: ApiClient, name: str, sites: list[ChaosSite],
                  steps: list[dict[str, Any]] = STEPS) -> str:
    for site in sites:
        site.ready()
    created = api.post("/rollouts", {"name": name, "sites": [s.site_id for s in sites],
                                     "steps": steps})
    return str(created["rollout"]["rollout_id"])


def acting(sites: list[ChaosSite]) -> bool:
    """Whether a BMC of these sites got its first action (the plans are on the sites)."""
    return any(acts for site in sites for acts in site.actions().values())


def total_acts(sites: list[ChaosSite]) -> int:
    return sum(sum(acts.values()) for site in sites for acts in site.actions().values())


def assert_done_once(final: dict[str, Any], sites: list[ChaosSite]) -> None:
    """The rollout succeeded, every site's result is stored with every machine's steps,
    and each BMC received each action once."""
    assert final["rollout"]["state"] == "succeeded", final["rollout"]
    assert final["rollout"]["counts"] == {"succeeded": len(sites)}
    by_site = {e["site_id"]: e for e in final["executions"]}
    for site in sites:
        execution = by_site[site.site_id]
        assert execution["state"] == "succeeded", execution
        assert step_states(execution) == {(m, t): "succeeded" for m in site.machines
                                          for t in TASKS}
        assert site.actions() == {m: ONCE for m in site.machines}, \
            f"{site.site_id}: each action once at each BMC"


def report(fault: str, tmp_path: Path, final: dict[str, Any], sites: list[ChaosSite],
           **extra: Any) -> FaultReport:
    counts = FaultReport(fault, extra=extra)
    counts.add_rollout(final, MACHINES)
    for site in sites:
        counts.bmc_actions.update({f"{site.site_id}/{m}": a for m, a in site.actions().items()})
    counts.write(tmp_path)
    return counts


# --- the broker -------------------------------------------------------------------------------


def test_a_broker_restarted_mid_rollout_loses_no_result_and_repeats_no_action(
        stack, make_site, tmp_path):
    sites = [make_site("broker-1"), make_site("broker-2")]
    api = sites[0].api
    rollout_id = start_rollout(api, "through a broker restart", sites)
    wait_until(lambda: acting(sites), timeout=60, interval=0.05, what="a site acting")

    stack.stop_broker()
    acts_before = total_acts(sites)
    # The sites run their plans to the end without it.
    wait_until(lambda: all(s.actions() == {m: ONCE for m in s.machines} for s in sites),
               timeout=60, interval=0.2, what="every site done while the broker is down")
    acts_during = total_acts(sites) - acts_before
    stack.start_broker()

    final = wait_for_end(api, rollout_id, timeout=120)
    report("broker restart", tmp_path, final, sites, acts_while_broker_down=acts_during)
    assert_done_once(final, sites)


# --- the store --------------------------------------------------------------------------------


def test_a_store_killed_and_restarted_mid_rollout_loses_no_result_and_repeats_no_action(
        stack, make_site, tmp_path):
    sites = [make_site("store-1"), make_site("store-2")]
    api = sites[0].api
    rollout_id = start_rollout(api, "through a store crash", sites)
    wait_until(lambda: acting(sites), timeout=60, interval=0.05, what="a site acting")

    stack.stop_store(crash=True)
    # The sites report while the store is down: the bridge holds (spools) what they send.
    wait_until(lambda: log_says(stack, "bridge", "the store does not answer"),
               timeout=60, interval=0.2, what="a report arriving while the store is down")
    with pytest.raises(ApiError):
        api.get(f"/rollouts/{rollout_id}")
    stack.start_store()

    final = wait_for_end(api, rollout_id, timeout=120)
    report("store kill and restart", tmp_path, final, sites)
    assert_done_once(final, sites)
    assert wait_until(lambda: log_says(stack, "bridge", "the store answers again"),
                      timeout=10, what="the bridge storing what it held")


# --- the WAN ------------------------------------------------------------------------------------

WAN_CUT = 60.0  # seconds, as the issue names it


def test_a_wan_cut_of_a_minute_mid_plan_delays_the_result_and_loses_nothing(
        stack, make_site, tmp_path):
    link = WanLink(stack.state.mqtt_port)
    try:
        site = make_site("wan-1", port=link.port)
        api = site.api
        rollout_id = start_rollout(api, "through a WAN cut", [site])
        wait_until(lambda: acting([site]), timeout=60, interval=0.05, what="the site acting")
        connections = link.connections
        link.cut()
        cut_at = time.monotonic()
        # The site finishes its plan behind the cut: every BMC got its actions.
        wait_until(lambda: site.actions() == {m: ONCE for m in site.machines},
                   timeout=WAN_CUT, interval=0.5, what="the plan finished behind the cut")
        time.sleep(max(0.0, WAN_CUT - (time.monotonic() - cut_at)))
        behind = rollout_status(api, rollout_id)["executions"][0]["state"]
        dropped = link.dropped
        link.restore()
        final = wait_for_end(api, rollout_id, timeout=60)
    finally:
        link.close()
    report("WAN cut of 60 s", tmp_path, final, [site], state_during_cut=behind,
           connections_before_cut=connections, connections=link.connections,
           bytes_dropped=dropped)
    assert behind in ("sent", "running"), "the result did not cross the cut"
    assert link.connections > connections, "the gateway connected again"
    assert_done_once(final, [site])


# --- the reports --------------------------------------------------------------------------------

REPORTING_SITES = 20
REPORTS = 1000
REPORTED_STEPS: list[dict[str, Any]] = [{"task": "power.cycle", "params": {}},
                                        {"task": "power.ensure", "params": {"state": "on"}}]


def reports_of(execution: dict[str, Any], machine: str) -> list[Progress]:
    """What a gateway sends of a two-step plan on one machine: two progress reports and the
    result, each with an id of its own (a copy of one is a redelivery)."""
    site, execution_id = execution["site_id"], execution["execution_id"]
    tasks = [step["task"] for step in REPORTED_STEPS]

    def steps(*states: str) -> list[StepResult]:
        return [StepResult(task=task, state=state, changed=state == "succeeded",
                           message="power cycled" if state == "succeeded" else "")
                for task, state in zip(tasks, states, strict=True)]

    return [
        Progress(site=site, execution_id=execution_id, seq=1, machines=[
            MachineResult(machine, "running", steps("running", "pending"))]),
        Progress(site=site, execution_id=execution_id, seq=2, machines=[
            MachineResult(machine, "running", steps("succeeded", "running"))]),
        Result(site=site, execution_id=execution_id, seq=3, state="succeeded", machines=[
            MachineResult(machine, "succeeded", steps("succeeded", "succeeded"))]),
    ]


def test_a_thousand_duplicated_and_reordered_reports_count_each_execution_once(
        stack, tmp_path):
    state = stack.state
    api = ApiClient(state.context, timeout=30)
    # The sites register (their inventory), then go: the test speaks for them.
    with FleetSimulator(state.mqtt_port, REPORTING_SITES, machines_per_site=1,
                        pki=pki_dir(stack.directory),
                        plan_keys=pinned_keys(stack.directory)) as fleet:
        site_ids = fleet.site_ids
        wait_until(lambda: machine_count(api, site_ids) == REPORTING_SITES, timeout=60,
                   interval=0.3, what="every site registered with its machine")
        (machine,) = [m.id for m in fleet.machine_configs]
    created = api.post("/rollouts", {"name": "1,000 reports", "sites": site_ids,
                                     "steps": REPORTED_STEPS})
    rollout_id = created["rollout"]["rollout_id"]

    def sent() -> list[dict[str, Any]]:
        executions = rollout_status(api, rollout_id)["executions"]
        return executions if len(executions) == REPORTING_SITES and all(
            e["state"] == "sent" for e in executions) else []

    executions = wait_until(sent, timeout=60, interval=0.3, what="every plan sent")

    distinct = [message for e in executions for message in reports_of(e, machine)]
    copies = [distinct[n % len(distinct)] for n in range(REPORTS)]  # each 16 or 17 times
    seed = int(os.environ.get("EDGEPLANE_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"\nreports shuffled with seed {seed} (EDGEPLANE_CHAOS_SEED={seed} repeats it)")
    random.Random(seed).shuffle(copies)
    # Each as its site, with its certificate, through the broker and the bridge.
    peers = {site: connect(state.mqtt_port, stack.ca.identity(site), client_id=site)
             for site in site_ids}
    try:
        for message in copies:
            peers[message.site].publish(*up(message))
    finally:
        for peer in peers.values():
            peer.close()
    first_seen: dict[str, str] = {}
    for message in copies:
        first_seen.setdefault(message.execution_id, message.KIND)

    final = wait_for_end(api, rollout_id, timeout=60)
    events = api.get(f"/rollouts/{rollout_id}/events")["events"]
    moves = [e["detail"] for e in events if e["type"] == "Execution State Changed"]
    finished = Counter(m["site_id"] for m in moves if m["state"] == "succeeded")
    counts = FaultReport("1,000 duplicated and reordered reports", extra={
        "bmc_actions": "none: no gateway ran the plans, the test sent the sites' reports",
        "seed": seed, "reports_published": len(copies), "distinct_reports": len(distinct),
        "executions_first_heard_of_by_a_result": sum(k == "result"
                                                     for k in first_seen.values()),
        "rollout_counts": final["rollout"]["counts"],
        "executions_finished_events": sum(finished.values())})
    counts.add_rollout(final, 1)
    counts.write(tmp_path)
    assert final["rollout"]["state"] == "succeeded"
    assert final["rollout"]["counts"] == {"succeeded": REPORTING_SITES}, "each counted once"
    assert final["rollout"]["done"] == REPORTING_SITES
    for execution in final["executions"]:
        assert execution["state"] == "succeeded"
        assert step_states(execution) == {(machine, "power.cycle"): "succeeded",
                                          (machine, "power.ensure"): "succeeded"}, \
            "a late progress report does not undo the result"
    assert finished == {site: 1 for site in site_ids}, "each execution finished once"
    assert not [m for m in moves if m["previous"] == "succeeded"], "a final state stays"
    assert not log_says(stack, "bridge", "dead letter")


# --- a field upgrade ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_version(tmp_path_factory) -> Path:
    """A gateway wheel that cannot start (``tests.upgrade_support.CRASHES``), under a name
    the stack's artifact server serves (letters, digits, ``._-``: no ``+``); the gateway
    names the wheel it downloaded after what it holds."""
    wheel = build_versions(tmp_path_factory.mktemp("wheels"))[CRASHES]
    return wheel.replace(wheel.with_name("edge_gateway-broken-py3-none-any.whl"))


def test_an_upgrade_to_a_broken_version_rolls_back_by_itself_and_the_rollout_ends(
        stack, make_site, broken_version, tmp_path):
    site = make_site("upgrade-1", supervised=True)
    api = site.api
    url, sha256 = stack.publish_artifact(broken_version)
    rollout_id = start_rollout(api, "to a version that cannot start", [site], [
        *STEPS, {"task": "gateway.upgrade",
                 "params": {"version": CRASHES, "url": url, "sha256": sha256}}])

    final = wait_for_end(api, rollout_id, timeout=150)

    def runs_the_version_before() -> bool:
        site_data = api.get(f"/sites/{site.site_id}")["site"]
        return bool(site_data.get("gateway_version") == __version__)

    wait_until(runs_the_version_before, timeout=30, interval=0.3,
               what=f"the site reporting version {__version__} again")
    (execution,) = final["executions"]
    report("upgrade to a broken version", tmp_path, final, [site],
           execution_state=execution["state"], message=execution["message"],
           version_after=__version__)
    assert final["rollout"]["state"] == "failed"
    assert execution["state"] == "failed"
    assert f"gateway upgrade to {CRASHES} failed" in execution["message"]
    assert f"rolled back to {__version__}" in execution["message"]
    assert step_states(execution) == {(m, t): "succeeded" for m in site.machines
                                      for t in TASKS}, "the steps before the upgrade stored"
    assert site.actions() == {m: ONCE for m in site.machines}, "each action once"


# --- the gateway killed -------------------------------------------------------------------------

KILLS = 10
PLAN_SECONDS = 4.0  # about how long STEPS take on these BMCs: kill points fall within
PROFILES = ("MaxPerf", "Balanced", "PowerSaver")  # the BIOS attribute each round changes
DONE = ("succeeded", "uncertain")  # a step that acted, or may have
AUTH = (BMC_USERNAME, BMC_PASSWORD)


def acts_bounds(cycle: str, bios: str) -> tuple[dict[str, int], dict[str, int]]:
    """What one machine's BMC must have received at least, and may have at most, given
    its steps' states: a succeeded step acted once, an uncertain one (in flight when the
    gateway died) at most once, the others not at all. A bios.apply in flight is succeeded
    when its values are in effect (checked apart): its reset then may not have been needed
    (a boot begun by the cycle before it applied them)."""
    least = {"reset": int(cycle == "succeeded"), "bios-write": int(bios == "succeeded")}
    most = {"reset": (cycle in DONE) + (bios in DONE), "bios-write": int(bios in DONE)}
    return least, most


def test_a_gateway_killed_at_ten_random_points_of_a_plan_acts_once_at_most(
        stack, make_site, tmp_path):
    seed = int(os.environ.get("EDGEPLANE_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"\nkill points drawn with seed {seed} (EDGEPLANE_CHAOS_SEED={seed} repeats them)")
    chance = random.Random(seed)
    site = make_site("killed-1")
    api = site.api
    counts = FaultReport("gateway SIGKILL at 10 random points", extra={"seed": seed,
                                                                        "rounds": []})
    url_of = dict(zip(site.machines, site.bmc_urls, strict=True))
    problems = []
    for round_ in range(KILLS):
        before = site.actions()
        # A value neither in effect nor pending: bios.apply writes it, whatever came before.
        found = {value for url in site.bmc_urls
                 for value in bios_attribute(url, "PowerProfile", AUTH)}
        profile = next((p for p in PROFILES if p not in found), None)
        assert profile is not None, f"every PowerProfile is in effect or pending: {found}"
        steps = [STEPS[0], {**STEPS[1], "params": {**STEPS[1]["params"],
                                                   "attributes": {"PowerProfile": profile}}}]
        rollout_id = start_rollout(api, f"killed at a random point ({round_ + 1})", [site],
                                   steps)
        delay = round(chance.uniform(0.0, PLAN_SECONDS), 2)
        time.sleep(delay)
        site.kill()
        site.start()
        final = wait_for_end(api, rollout_id, timeout=90)
        counts.add_rollout(final, MACHINES)
        after = site.actions()
        (execution,) = final["executions"]
        states = step_states(execution)
        for machine in site.machines:
            acts = {act: after[machine].get(act, 0) - before[machine].get(act, 0)
                    for act in ONCE}
            cycle, bios = states.get((machine, "power.cycle")), states.get((machine,
                                                                           "bios.apply"))
            least, most = acts_bounds(str(cycle), str(bios))
            in_effect, _ = bios_attribute(url_of[machine], "PowerProfile", AUTH)
            counts.extra["rounds"].append({"kill_after": delay, "machine": machine,
                                           "steps": [cycle, bios], "acts": acts})
            if not all(least[a] <= acts[a] <= most[a] for a in ONCE):
                problems.append(f"round {round_ + 1}, killed {delay} s in: {machine}: steps "
                                f"{cycle}/{bios}, BMC received {acts}")
            if bios == "succeeded" and in_effect != profile:
                problems.append(f"round {round_ + 1}, killed {delay} s in: {machine}: "
                                f"bios.apply succeeded, but PowerProfile is {in_effect!r}, "
                                f"not {profile!r}")
    for machine, acts in site.actions().items():
        counts.bmc_actions[f"{site.site_id}/{machine}"] = acts
    counts.extra["uncertain_steps"] = sum(r["steps"].count("uncertain")
                                          for r in counts.extra["rounds"])
    counts.write(tmp_path)
    assert site.kills == KILLS
    assert counts.rollouts_finished == counts.rollouts_started == KILLS
    assert counts.results_stored == KILLS, "every round's result stored"
    assert not problems, "actions repeated or lost:\n" + "\n".join(problems)
