"""Benchmarks of composable automation: the variation report over a generated fleet, and
the size of a rendered plan.

    python benchmarks/definitions.py [--sites 10000] [--runs 5]

(a) ``variation``: a fleet of ``--sites`` sites in 3 regions and a few shop formats, with
fleet, group, site, machine-class and machine profiles (3% of sites override something,
1% redundantly); the report's compute time (median of ``--runs``), without storage.
(b) ``plan``: the example fleet's 5-step blueprint (examples/fleet) rendered for one site of
4 machines (2 Redfish servers, 1 Redfish VM, 1 IPMI box): the plan's bytes on the wire as
the gateway receives it, and the same plan rendered one step per machine for comparison.

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.definitions.documents import Level, parse_document  # noqa: E402
from chalicelib.definitions.render import render_site  # noqa: E402
from chalicelib.definitions.resolve import Fleet, Profile  # noqa: E402
from chalicelib.definitions.variation import SiteTags, report  # noqa: E402
from chalicelib.models import Machine, Site  # noqa: E402
from edgeplane import protocol  # noqa: E402
from edgeplane_cli import documents  # noqa: E402


def generated_fleet(sites: int, seed: int = 7) -> tuple[Fleet, list[SiteTags]]:
    rng = random.Random(seed)
    regions, formats = ["europe", "americas", "asia"], ["shop", "flagship", "exchange"]
    profiles = [
        Profile("fleet", Level.FLEET, None, {"power_profile": "Balanced", "ntp": "10.0.0.1",
                                              "syslog": "10.0.0.9", "turbo": "Enabled"}),
        Profile("europe", Level.GROUP, "europe", {"power_profile": "PowerSaver",
                                                  "ntp": "10.49.0.1"}),
        Profile("asia", Level.GROUP, "asia", {"ntp": "10.81.0.1"}),
        Profile("flagship", Level.GROUP, "flagship", {"power_profile": "MaxPerf"},
                priority=10),
        Profile("r650", Level.MACHINE_CLASS, "r650", {"turbo": "Disabled"}),
    ]
    groups = {name: frozenset({name}) for name in regions + ["flagship"]}
    fleet_sites = []
    for n in range(sites):
        site_id = f"site-{n:05d}"
        fleet_sites.append(SiteTags(site_id, (regions[n % 3], formats[n % 7 % 3])))
        draw = rng.random()
        if draw < 0.03:
            profiles.append(Profile(f"{site_id}-quirk", Level.SITE, site_id,
                                    {"turbo": "Disabled"}))
        elif draw < 0.04:
            profiles.append(Profile(f"{site_id}-same", Level.SITE, site_id,
                                    {"syslog": "10.0.0.9"}))
        elif draw < 0.045:
            profiles.append(Profile(f"{site_id}-srv-1", Level.MACHINE, f"{site_id}/srv-1",
                                    {"ntp": "10.99.0.1"}))
    return Fleet(profiles, groups), fleet_sites


def bench_variation(sites: int, runs: int) -> dict:
    fleet, fleet_sites = generated_fleet(sites)
    times, result = [], {}
    for _ in range(runs):
        started = time.perf_counter()
        result = report(fleet, fleet_sites)
        times.append(time.perf_counter() - started)
    return {"sites": sites, "profiles": len(fleet.profiles), "runs": runs,
            "median_s": round(statistics.median(times), 4), "max_s": round(max(times), 4),
            "customized_sites": result["customized_sites"],
            "redundant": len(result["redundant"])}


def bench_plan() -> dict:
    loaded = documents.load([ROOT / "examples" / "fleet"])
    parsed = {d.document["name"]: parse_document(d.document) for d in loaded
              if d.document["kind"] == "blueprint"}
    _, spec = parsed["server-baseline"]
    site = Site("site-001", tags=["dev", "europe", "flagship"], name="Berlin", facts={})
    all_caps = sorted(protocol.Capability)
    machines = [
        Machine("site-001", "srv-1", protocol="redfish", machine_class="rackmount-3500",
                capabilities=all_caps),
        Machine("site-001", "srv-2", protocol="redfish", machine_class="rackmount-3500",
                capabilities=all_caps),
        Machine("site-001", "rf-1", protocol="redfish",
                capabilities=["boot", "firmware", "health", "inventory", "media", "power"]),
        Machine("site-001", "ipmi-1", protocol="ipmi", machine_class="edge-1u",
                capabilities=["bmc_reset", "boot", "health", "inventory", "power", "sel"]),
    ]
    fleet = Fleet([Profile("flagship", Level.GROUP, "flagship", {"power_profile": "MaxPerf"}),
                   Profile("srv-2", Level.MACHINE, "site-001/srv-2", {"boot_target": "disk"})],
                  {"flagship": frozenset({"flagship"})})
    rendered = render_site("r-0123456789abcdef01234567", site, machines, "server-baseline", 1,
                           spec, fleet)
    payload = rendered.plan.encode()
    ungrouped = protocol.Plan(
        site=rendered.plan.site, execution_id=rendered.plan.execution_id,
        rollout_id=rendered.plan.rollout_id,
        steps=[protocol.PlanStep(s.task, s.params, [m]) for s in rendered.plan.steps
               for m in s.machines]).encode()
    return {"steps": len(spec.steps), "machines": len(machines),
            "plan_steps": len(rendered.plan.steps), "plan_bytes": len(payload),
            "plan_gzip_bytes": len(zlib.compress(payload, 9)),
            "one_step_per_machine_bytes": len(ungrouped), "plan": json.loads(payload)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    variation = bench_variation(args.sites, args.runs)
    plan = bench_plan()
    print(f"variation: {variation['sites']} sites, {variation['profiles']} profiles: "
          f"median {variation['median_s'] * 1000:.0f} ms, max {variation['max_s'] * 1000:.0f} "
          f"ms over {variation['runs']} runs ({variation['customized_sites']} customized "
          f"sites, {variation['redundant']} redundant overrides)")
    print(f"plan: {plan['steps']}-step blueprint on {plan['machines']} machines -> "
          f"{plan['plan_steps']} plan steps, {plan['plan_bytes']} bytes "
          f"({plan['plan_gzip_bytes']} gzipped; one step per machine would be "
          f"{plan['one_step_per_machine_bytes']})")
    print(json.dumps(plan["plan"], indent=1))
    summary = {"variation": variation, "plan": {k: v for k, v in plan.items() if k != "plan"}}
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
