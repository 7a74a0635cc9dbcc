"""Fleet benchmark: a bare MQTT request/reply baseline, a real rollout to the same number of
simulated sites through the whole local stack, and the same fleet running the same plans
with no control plane at all.

    python benchmarks/fleet.py --sites 1000 [--machines 4] [--write]

(a) ``baseline``: N plain paho clients on one selectors loop (the fleet simulator's), each
subscribed to its site's plan topic; one client publishes one 200-byte QoS 1 message per
site, each site replies once; from the first publish to the last reply. On a mosquitto of
its own, nothing else running.
(b) ``rollout``: the local stack (the store, dynalite, for DynamoDB; moto server for
EventBridge; mosquitto, the Chalice app, the ingest bridge, the ticker) and N simulated
sites (every site the real gateway core on simulated BMCs, 4 machines); one rollout through
the HTTPS API of a 5-step plan (power on, BIOS baseline, PXE once, wait until on, clear the
SEL) with a 1% canary and waves growing 4x; from the POST to the rollout's end. Measured
besides: time per wave (from the event log), MQTT payload bytes down and up per site,
storage requests per site (the DynamoDB and EventBridge requests the stack's processes sent
during the rollout, counted at the clients: ``edgeplane_dev.request_counter``), and peak
memory (the simulator's process and the stack's).
(c) ``fleet_only``: what the fleet itself needs. A new simulated fleet (the same sites,
machines and BMC delays) on a mosquitto of its own; a plain client publishes to every site
the plan the rollout sent it (as the rollout's sites received it) and waits for every
result; from the first publish to the last result. ``ratio_to_fleet_only`` is the rollout's
time over this one.

The last line printed is a JSON summary; ``--write`` replaces this benchmark's block in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeplane import protocol  # noqa: E402
from edgeplane_cli.client import ApiClient  # noqa: E402
from edgeplane_dev.fleet_sim import (  # noqa: E402
    SMALL_THREAD_STACK,
    FleetSimulator,
    raise_open_file_limit,
    site_ids,
)
from edgeplane_dev.mosquitto import Mosquitto  # noqa: E402
from edgeplane_dev.request_counter import WRITE_INTERVAL  # noqa: E402
from edgeplane_dev.stack import LocalStack  # noqa: E402
from edgeplane_dev.transport_multiplex import MultiplexedMqtt  # noqa: E402

LOOPBACK = "127.0.0.1"
STEPS = [
    {"task": "power.ensure", "params": {"state": "on"}},
    {"task": "bios.apply", "params": {"attributes": {"ProcTurboMode": "Disabled"}},
     "select": {"capable": True}},
    {"task": "boot.override", "params": {"target": "pxe", "mode": "once"}},
    {"task": "wait.for", "params": {"power": "on", "timeout": 60}},
    {"task": "sel.clear", "params": {}, "select": {"capable": True}},
]


def vm_hwm_mib(pid: int | str = "self") -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmHWM:\s+(\d+)", text, re.MULTILINE)
    return int(match[1]) / 1024 if match else 0.0


class Counting:
    """A client on every site topic: payload bytes down and up, and replies seen."""

    def __init__(self, port: int, client_id: str) -> None:
        self.down = self.up = 0
        self.replies: set[str] = set()
        self.plans: dict[str, bytes] = {}  # the last plan each site was sent
        self.last_reply = 0.0
        self._lock = threading.Lock()
        ready = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.on_connect = lambda c, *_: c.subscribe(f"{protocol.TOPIC_ROOT}/#", qos=1)
        client.on_subscribe = lambda *_: ready.set()
        client.on_message = self._on_message
        client.connect(LOOPBACK, port)
        client.loop_start()
        if not ready.wait(10):
            raise TimeoutError("counting client could not subscribe")
        self.client = client

    def _on_message(self, client, userdata, message) -> None:
        site, direction, kind = protocol.parse_topic(message.topic)
        with self._lock:
            if direction == "down":
                self.down += len(message.payload)
                if kind == "plan":
                    self.plans[site] = bytes(message.payload)
            else:
                self.up += len(message.payload)
                if kind in ("result", "reply"):
                    self.replies.add(site)
                    self.last_reply = time.monotonic()

    def reset(self) -> None:
        with self._lock:
            self.down = self.up = 0
            self.replies.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def send_and_collect(publisher: mqtt.Client, counting: Counting, payloads: dict[str, bytes],
                     wait: float) -> tuple[float, int]:
    """Publish each site its payload on its plan topic and wait (at most ``wait`` s) for
    every site's answer: (seconds from the first publish to the last answer, answers)."""
    counting.reset()
    started = time.monotonic()
    infos = [publisher.publish(protocol.plan_topic(site), payload, qos=1)
             for site, payload in payloads.items()]
    for info in infos:
        info.wait_for_publish(60)
    deadline = time.monotonic() + wait
    while len(counting.replies) < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.01)
    return counting.last_reply - started, len(counting.replies)


# --- (a) the bare baseline ------------------------------------------------------------------


def baseline(port: int, count: int) -> dict:
    """N plain clients: one message down each, one reply up each."""
    sites = site_ids(count)
    # paho's own loop (select()) fails on fds above 1,024: these two come before the sites.
    counting = Counting(port, "bare-counter")
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-publisher")
    publisher.max_inflight_messages_set(0)
    publisher.connect(LOOPBACK, port)
    publisher.loop_start()
    loop = MultiplexedMqtt(max_connecting=64).start()
    connected = threading.Semaphore(0)
    clients = []
    try:
        for site in sites:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{site}")
            topic = protocol.plan_topic(site)
            reply_topic = f"{protocol.TOPIC_ROOT}/{site}/up/reply"
            client.on_connect = lambda c, *_, t=topic: c.subscribe(t, qos=1)
            client.on_subscribe = lambda *_: connected.release()
            client.on_message = lambda c, u, m, r=reply_topic: c.publish(r, b"ok" * 100, qos=1)
            client.connect_async(LOOPBACK, port, keepalive=60)
            loop.attach(client, site)
            clients.append(client)
        started = time.monotonic()
        for _ in sites:
            if not connected.acquire(timeout=120):
                raise TimeoutError("bare clients did not all connect")
        connect_s = time.monotonic() - started
        elapsed, replies = send_and_collect(publisher, counting,
                                            dict.fromkeys(sites, b"x" * 200), wait=300)
    finally:
        loop.stop()
        publisher.disconnect()
        publisher.loop_stop()
        counting.close()
    return {"sites": count, "connect_s": round(connect_s, 2), "request_reply_s":
            round(elapsed, 2), "replies": replies}


# --- (c) the fleet alone -----------------------------------------------------------------


def fleet_only(port: int, plans: dict[str, bytes], machines: int) -> dict:
    """The same plans to a new simulated fleet with no cloud: publish, wait for results."""
    count = len(plans)
    counting = Counting(port, "fleet-only-counter")
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-only-publisher")
    publisher.max_inflight_messages_set(0)
    publisher.connect(LOOPBACK, port)
    publisher.loop_start()
    try:
        with FleetSimulator(port, sorted(plans), machines, thread_stack_size=SMALL_THREAD_STACK,
                            max_parallel=machines):
            time.sleep(2)  # inventories settle, as before the rollout
            elapsed, results = send_and_collect(publisher, counting, plans, wait=600)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        counting.close()
    return {"sites": count, "fleet_only_s": round(elapsed, 2), "results": results,
            "mqtt_up_bytes_per_site": round(counting.up / count)}


# --- (b) the rollout through the stack --------------------------------------------------------


def cpu_seconds(pid: int | str) -> float:
    """User and system CPU time of a process so far (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_quiet(stack: LocalStack, quiet_s: float, deadline: float) -> None:
    """Until the cloud sent almost no request (the ticker's) for ``quiet_s`` seconds."""
    mark = stack.request_counts()["total"]
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = stack.request_counts()["total"]
        if now - mark <= 3:
            return
        mark = now
    raise TimeoutError("the sites did not finish registering")


def settled_counts(stack: LocalStack) -> dict:
    """The request counts once the counter has written what was sent until now."""
    time.sleep(2 * WRITE_INTERVAL)
    return stack.request_counts()


def rollout(stack_dir: Path, count: int, machines: int, timeout: float) -> dict:
    stack = LocalStack(stack_dir, [], ready_timeout=120, count_requests=True)
    state = stack.up()
    api = ApiClient(state.context, timeout=900)  # a 10,000-site create takes minutes
    try:
        counting = Counting(state.mqtt_port, "bench-counter")
        with FleetSimulator(state.mqtt_port, count, machines,
                            thread_stack_size=SMALL_THREAD_STACK, max_parallel=machines) as fleet:
            started = time.monotonic()
            deadline = started + timeout
            # Registered once the store has been quiet for a while (listing the sites to
            # see is a scan of every site, which would slow the registering it watches),
            # then checked with one listing.
            wait_until_quiet(stack, quiet_s=5, deadline=deadline)
            online = sum(bool(s["online"]) for s in api.get("/sites")["sites"])
            if online < count:
                raise TimeoutError(f"{online} of {count} sites registered")
            register_s = time.monotonic() - started
            time.sleep(2)  # inventories settle
            counting.reset()
            requests_before = settled_counts(stack)
            cpu_before = {name: cpu_seconds(pid) for name, pid in state.processes.items()}
            cpu_before["simulator"] = cpu_seconds("self")
            started = time.monotonic()
            created = api.post("/rollouts", {
                "name": f"bench {count}", "sites": fleet.site_ids, "steps": STEPS,
                "policy": {"canary": {"percent": 1}, "growth": 4}})
            create_s = time.monotonic() - started
            rollout_id = created["rollout"]["rollout_id"]
            while True:  # the counters only: polling must not cost the store much
                data = api.get(f"/rollouts/{rollout_id}?executions=false")
                if data["rollout"]["state"] != "running":
                    break
                if time.monotonic() > deadline + timeout:
                    raise TimeoutError(f"rollout still running: {data['waves']}")
                time.sleep(0.5)
            total_s = time.monotonic() - started
            cpu = {name: round(cpu_seconds(pid) - cpu_before.get(name, 0.0), 1)
                   for name, pid in [*state.processes.items(), ("simulator", "self")]}
            requests_after = settled_counts(stack)
            data = api.get(f"/rollouts/{rollout_id}?machines=false")
            events = api.get(f"/rollouts/{rollout_id}/events")["events"]
            stats = fleet.stats()
        counting.close()
        plans = dict(counting.plans)
        waves = wave_times(events, data["rollout"]["waves"])
        stack_mib = sum(vm_hwm_mib(pid) for pid in state.processes.values())
    finally:
        stack.down()
    return {
        "sites": count, "machines_per_site": machines, "register_s": round(register_s, 1),
        "create_s": round(create_s, 2), "rollout_s": round(total_s, 2),
        "state": data["rollout"]["state"], "counts": data["rollout"]["counts"],
        "waves": waves, "mqtt_down_bytes_per_site": round(counting.down / count),
        "mqtt_up_bytes_per_site": round(counting.up / count),
        "storage_requests_per_site": round(
            (requests_after["total"] - requests_before["total"]) / count, 1),
        "requests_per_site_by_service": {
            service: round((n - requests_before["services"].get(service, 0)) / count, 1)
            for service, n in requests_after["services"].items()},
        "requests_per_site_by_operation": dict(sorted(
            ((operation, round((n - requests_before["operations"].get(operation, 0)) / count,
                               2)) for operation, n in requests_after["operations"].items()),
            key=lambda kv: -kv[1])),
        "simulator_peak_rss_mib": round(stats.peak_rss_mib, 1),
        "stack_peak_rss_mib": round(stack_mib, 1),
        "cpu_s_by_process": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
        "plans": plans,
    }


def wave_times(events: list[dict], sizes: list[int]) -> list[dict]:
    """Each wave's size and seconds from its first plan sent to its last site done."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for event in events:
        if event["type"] != "Execution State Changed":
            continue
        wave, state = event["detail"]["wave"], event["detail"]["state"]
        if state == "sent":
            first[wave] = min(first.get(wave, event["ts"]), event["ts"])
        elif state in ("succeeded", "failed", "timed_out", "expired", "canceled"):
            last[wave] = max(last.get(wave, event["ts"]), event["ts"])
    return [{"wave": i, "sites": size, "seconds": round(last.get(i, 0) - first.get(i, 0), 2)}
            for i, size in enumerate(sizes)]


def write(summary: dict, command: str) -> None:
    """This fleet size's block in BENCHMARKS.md (each size keeps its own)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    base, run = summary["baseline"], summary["rollout"]
    begin, end = (f"<!-- benchmarks/fleet.py --sites {run['sites']}: {mark} -->"
                  for mark in ("begin", "end"))
    block = "\n".join([
        begin,
        f"Command: `{command}`  ",
        f"Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 2 cores.",
        "",
        "| N | bare baseline | fleet only | rollout end to end | ratio to fleet only | create "
        "| down B/site | up B/site | storage req/site | peak RSS sim / stack |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {run['sites']} | {base['request_reply_s']} s | {summary['fleet_only_s']} s | "
        f"{run['rollout_s']} s ({run['state']}) | {summary['ratio_to_fleet_only']}x | "
        f"{run['create_s']} s | {run['mqtt_down_bytes_per_site']} | "
        f"{run['mqtt_up_bytes_per_site']} | {run['storage_requests_per_site']} | "
        f"{run['simulator_peak_rss_mib']} / {run['stack_peak_rss_mib']} MiB |",
        "",
        f"Registration: {run['register_s']} s. Waves: "
        + ", ".join(f"{w['sites']} sites {w['seconds']} s" for w in run["waves"]) + ".",
        f"Requests per site by service: {run['requests_per_site_by_service']}. CPU seconds "
        f"during the rollout by process: {run['cpu_s_by_process']}.",
        end,
    ])
    if begin in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    # A SIGTERM unwinds like ^C, so the stack and the simulated fleet are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    raise_open_file_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    with tempfile.TemporaryDirectory(prefix="edgeplane-fleet-") as tmp:
        with Mosquitto(Path(tmp) / "baseline") as broker:
            base = baseline(broker.port, args.sites)
        print(f"baseline: {base}")
        run = rollout(Path(tmp) / "dev", args.sites, args.machines, args.timeout)
        plans = run.pop("plans")
        print(f"rollout: {json.dumps(run)}")
        with Mosquitto(Path(tmp) / "fleet-only") as broker:
            alone = fleet_only(broker.port, plans, args.machines)
        print(f"fleet only: {alone}")
    summary = {"baseline": base, "rollout": run, "fleet_only": alone,
               "fleet_only_s": alone["fleet_only_s"],
               "ratio": round(run["rollout_s"] / max(base["request_reply_s"], 0.001), 1),
               "ratio_to_fleet_only": round(
                   run["rollout_s"] / max(alone["fleet_only_s"], 0.001), 2)}
    if args.write:
        write(summary, "python benchmarks/fleet.py " + " ".join(sys.argv[1:]))
    counts = Counter(run["counts"])
    print(f"{args.sites} sites: baseline {base['request_reply_s']} s, rollout "
          f"{run['rollout_s']} s ({counts.get('succeeded', 0)} succeeded)")
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
