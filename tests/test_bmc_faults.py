"""A site whose BMCs misbehave: each fault fails only that machine's step, with a message
naming the site, machine, task, BMC address and what the BMC said; the other machines carry
on and are not held up. Real drivers, the Redfish simulator with injected faults."""

from __future__ import annotations

import pytest

from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.executor import PlanExecutor
from edgeplane.protocol import BmcProtocol, MachineState, Plan, PlanStep
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.redfish_sim import BmcOptions, Fault
from tests.support import SimulatedRedfish

SITE = "shop-0042"
MACHINES = ("srv-ok", "srv-bad")


@pytest.fixture
def bmcs(redfish_bmcs) -> SimulatedRedfish:
    """Two simulated BMCs of this test's own: srv-ok's and srv-bad's."""
    return redfish_bmcs.fresh(BmcOptions(power_delay=0.1), count=2)


def site(tmp_path, addresses: dict[str, str], passwords: dict[str, str] | None = None,
         timeout: float = 2.0) -> SiteConfig:
    return SiteConfig(site=SITE, journal=tmp_path / "journal.db", mqtt=MqttSettings(),
                      machines=tuple(
                          MachineConfig(id=m, protocol=BmcProtocol.REDFISH, timeout=timeout,
                                        power_timeout=10, poll_interval=0.1, min_interval=0,
                                        credentials=BmcCredentials(
                                            address, "admin",
                                            (passwords or {}).get(m, "password")))
                          for m, address in addresses.items()))


def execute(config: SiteConfig, steps: list[PlanStep]) -> dict:
    executor = PlanExecutor(config, lambda m: create_driver(m.protocol, m.credentials,
                                                            timeout=m.timeout))
    plan = Plan(site=SITE, execution_id="r1.shop-0042", rollout_id="r1", steps=steps)
    return {m.machine: m for m in executor.execute(plan, lambda snapshot: None)}


def default_steps() -> list[PlanStep]:
    return [PlanStep("power.ensure", {"state": "on"}, list(MACHINES)),
            PlanStep("bios.apply", {"attributes": {"PowerProfile": "Balanced"}},
                     list(MACHINES))]


def assert_failed_alone(results: dict, address: str, task: str, *said: str) -> str:
    ok, bad = results["srv-ok"], results["srv-bad"]
    assert ok.state == MachineState.SUCCEEDED, ok
    assert bad.state == MachineState.FAILED
    failed = next(s for s in bad.steps if s.state == "failed")
    for expected in (f"site {SITE}", "machine srv-bad", task, address, *said):
        assert expected in failed.message, f"{expected!r} not in {failed.message!r}"
    return failed.message


def test_wrong_credentials(tmp_path, bmcs):
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)),
                  passwords={"srv-bad": "not-it"})
    results = execute(config, default_steps())
    assert_failed_alone(results, bmcs.urls[1], "power.ensure",
                        "rejected the credentials of user 'admin'", "HTTP 401")


def test_unreachable_bmc(tmp_path, bmcs):
    nowhere = f"http://{LOOPBACK}:{free_port()}"
    config = site(tmp_path, {"srv-ok": bmcs.urls[0], "srv-bad": nowhere})
    results = execute(config, default_steps())
    assert_failed_alone(results, nowhere, "power.ensure", "Connection refused")


def test_a_bmc_that_hangs_times_out_without_holding_up_the_site(tmp_path, bmcs):
    bmcs.bmcs[1].faults.add(Fault("hang", path="/Systems", seconds=60))
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)), timeout=1.0)
    results = execute(config, default_steps())
    assert_failed_alone(results, bmcs.urls[1], "power.ensure", "timed out")
    ok_done = results["srv-ok"].steps[-1].finished_at
    bad_done = results["srv-bad"].steps[0].finished_at
    assert ok_done < bad_done, "the healthy machine finished while the other still waited"


def test_a_bmc_answering_503(tmp_path, bmcs):
    bmcs.bmcs[1].faults.add(Fault("error", status=503, path="/Systems/"))
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)))
    results = execute(config, default_steps())
    assert_failed_alone(results, bmcs.urls[1], "power.ensure", "HTTP 503",
                        "503 Service Unavailable")


def test_a_bmc_answering_malformed_json(tmp_path, bmcs):
    bmcs.bmcs[1].faults.add(Fault("malformed", path="/Bios$"))
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)))
    results = execute(config, default_steps())
    message = assert_failed_alone(results, bmcs.urls[1], "step 1 bios.apply", "not valid JSON")
    assert results["srv-bad"].steps[0].state == "succeeded", "power.ensure still ran"
    assert "read BIOS settings" in message


def test_a_dropped_connection(tmp_path, bmcs):
    bmcs.bmcs[1].faults.add(Fault("drop", path="/Systems/", method="GET"))
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)))
    results = execute(config, default_steps())
    assert_failed_alone(results, bmcs.urls[1], "power.ensure", "closed connection")


def test_an_attribute_the_bmc_does_not_list(tmp_path, bmcs):
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)))
    steps = [PlanStep("bios.apply", {"attributes": {"PowerProfile": "Balanced"}}, ["srv-ok"]),
             PlanStep("bios.apply", {"attributes": {"TurboBoostMax": "Enabled"}},
                      ["srv-bad"])]
    results = execute(config, steps)
    assert_failed_alone(results, bmcs.urls[1], "bios.apply",
                        "TurboBoostMax='Enabled': not an attribute this BMC lists")
    patches = [p for m, p, _ in bmcs.bmcs[1].received if m == "PATCH"]
    assert patches == [], "refused before anything was written"


def test_latency_slows_the_bmc_but_the_step_succeeds(tmp_path, bmcs):
    bmcs.bmcs[1].faults.add(Fault("latency", seconds=0.2))
    config = site(tmp_path, dict(zip(MACHINES, bmcs.urls, strict=True)))
    results = execute(config, default_steps())
    assert all(r.state == MachineState.SUCCEEDED for r in results.values())
