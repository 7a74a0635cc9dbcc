"""The local stack while its broker or its store is down: what a request waits, and what
becomes of the reports sent meanwhile.

1. ``POST /rollouts`` to N registered sites, ``--runs`` times with the broker up, then as
   many with it stopped (``LocalStack.stop_broker``): the request's wall time, and the
   states its executions answer with (``sent``; ``queued`` when the broker is down).
2. R sites each send a presence report (as a gateway: its own certificate, QoS 1) while the
   store is crashed (SIGKILL): how many the bridge spooled, then, once the store is started
   again, how many are stored and how long the spool took to drain.

``--write`` replaces the results block in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeplane import protocol  # noqa: E402
from edgeplane_cli.client import ApiClient  # noqa: E402
from edgeplane_dev.spool import Spool  # noqa: E402
from edgeplane_dev.stack import LocalStack, bridge_spool  # noqa: E402
from edgeplane_dev.tls_client import connect as connect_client  # noqa: E402

BEGIN = "<!-- benchmarks/outages.py results: begin -->"
END = "<!-- benchmarks/outages.py results: end -->"
STEPS = [{"task": "power.ensure", "params": {"state": "on"}}]


def wait_for(condition: object, timeout: float) -> float:
    """Seconds until ``condition()`` is true; TimeoutError past ``timeout``."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not within {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - start


def creates(stack: LocalStack, api: ApiClient, sites: int, runs: int) -> dict[str, object]:
    ids = [f"bench-{n:04d}" for n in range(sites)]
    for site in ids:
        api.put(f"/sites/{site}", {})
        api.put(f"/sites/{site}/machines/srv-1", {"protocol": "ipmi", "address": "10.0.0.5"})

    def one(name: str) -> tuple[float, list[str]]:
        start = time.monotonic()
        answer = api.post("/rollouts", {"name": name, "sites": ids, "steps": STEPS})
        return time.monotonic() - start, sorted({e["state"] for e in answer["executions"]})

    up = [one(f"up-{n}") for n in range(runs)]
    stack.stop_broker()
    try:
        down = [one(f"down-{n}") for n in range(runs)]
    finally:
        stack.start_broker()
    return {"sites": sites, "up": up, "down": down}


def store_outage(stack: LocalStack, api: ApiClient, reports: int) -> dict[str, object]:
    state = stack.state
    assert state is not None
    sites = [f"outage-{n:04d}" for n in range(reports)]
    spool = bridge_spool(stack.directory)
    stack.stop_store(crash=True)
    for site in sites:
        identity = stack.ca.identity(site)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=site,
                             protocol=mqtt.MQTTv311)
        client.tls_set(ca_certs=str(identity.ca_file), certfile=str(identity.cert_file),
                       keyfile=str(identity.key_file))
        connect_client(client, state.mqtt_port)
        client.loop_start()
        topic = protocol.up_topic(site, "presence")
        payload = protocol.Presence(site=site, online=True, session=1.0).encode()
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()

    def waiting() -> int:
        kept = Spool(spool)
        try:
            return kept.waiting
        finally:
            kept.close()

    wait_for(lambda: waiting() >= reports, 120)
    spooled = waiting()
    stack.start_store()
    started = time.monotonic()

    def stored() -> int:
        return sum(1 for s in api.get("/sites")["sites"] if s["site_id"].startswith("outage-")
                   and s["online"])

    wait_for(lambda: stored() == reports and waiting() == 0, 300)
    return {"sent": reports, "spooled": spooled, "stored": stored(),
            "drained_s": time.monotonic() - started}


def render(result: dict[str, dict[str, object]], command: str) -> str:
    c, o = result["create"], result["outage"]

    def times(runs: object) -> str:
        values = [t for t, _ in runs]  # type: ignore[attr-defined]
        return (f"median {statistics.median(values) * 1000:.0f} ms, "
                f"max {max(values) * 1000:.0f} ms ({len(values)} runs)")

    def states(runs: object) -> str:
        return ", ".join(sorted({s for _, found in runs for s in found}))  # type: ignore[attr-defined]

    return "\n".join([
        BEGIN,
        f"Command: `{command}`",
        f"Machine: {len(os.sched_getaffinity(0))} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        f"Run at: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        "| measure | value |",
        "|---|---|",
        f"| `POST /rollouts`, {c['sites']} sites, broker up | {times(c['up'])}; executions "
        f"{states(c['up'])} |",
        f"| `POST /rollouts`, {c['sites']} sites, broker down | {times(c['down'])}; "
        f"executions {states(c['down'])} |",
        f"| reports sent while the store was down | {o['sent']} |",
        f"| spooled by the bridge (acknowledged) | {o['spooled']} |",
        f"| stored once the store was back | {o['stored']} (drained in "
        f"{o['drained_s']:.1f} s) |",
        END,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        stack = LocalStack(Path(folder) / "dev", [])
        stack.up()
        try:
            assert stack.state is not None
            api = ApiClient(stack.state.context, timeout=300)
            result = {"create": creates(stack, api, args.sites, args.runs),
                      "outage": store_outage(stack, api, args.reports)}
        finally:
            stack.down()
    command = (f"python benchmarks/outages.py --sites {args.sites} --runs {args.runs} "
               f"--reports {args.reports} --write")
    block = render(result, command)
    print(block)
    if args.write:
        path = ROOT / "BENCHMARKS.md"
        text = path.read_text()
        if BEGIN in text:
            text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
