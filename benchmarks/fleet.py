"""Fleet benchmark: a bare MQTT request/reply baseline, a real rollout to the same number of
simulated sites through the whole local stack, and the same fleet running the same plans
with no control plane at all.

    python benchmarks/fleet.py --sites 1000 [--machines 4] [--write]

(a) ``baseline``: N plain paho clients on one selectors loop (the fleet simulator's), each
subscribed to its site's plan topic; one client publishes one 200-byte QoS 1 message per
site, each site replies once; from the first publish to the last reply. On a mosquitto of
its own, nothing else running; once in clear text and once (``baseline_tls``) as the
stack's broker runs: TLS, every client with its own certificate, the ACL. The difference is
what TLS costs: the handshakes (``connect_s``) and the records around each message.
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
machines and BMC delays) on a mosquitto of its own, with TLS, certificates and the ACL as
the stack's; a plain client signs and publishes to
every site the plan the rollout sent it (as the rollout's sites received it, signed again
with a key of this run, as the cloud signs each plan it sends) and waits for every result;
from the first signature to the last result. ``ratio_to_fleet_only`` is the rollout's time
over this one; the simulator's CPU in it is reported beside the rollout's (the fleet does the
same work in both: the difference in time is what the cloud's processes take of the cores).

Both runs simulate the fleet in ``--sim-processes`` processes (2 by default, the machine's
cores). In one process, 10,000 sites given their plans at once starve its MQTT loop: the
broker drops thousands of sessions for keep-alive and the fleet alone takes longer than the
rollout through the whole stack, whose waves start fewer sites at once.

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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.signing import PlanSigner  # noqa: E402
from edgeplane import protocol  # noqa: E402
from edgeplane_cli.client import ApiClient  # noqa: E402
from edgeplane_dev.fleet_sim import (  # noqa: E402
    SMALL_THREAD_STACK,
    FleetSimulator,
    raise_open_file_limit,
    site_ids,
)
from edgeplane_dev.mosquitto import Mosquitto  # noqa: E402
from edgeplane_dev.pki import Identity, LocalCa, cloud_identity  # noqa: E402
from edgeplane_dev.request_counter import WRITE_INTERVAL  # noqa: E402
from edgeplane_dev.stack import LocalStack, pinned_keys, pki_dir  # noqa: E402
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
    """A client on every site topic: payload bytes down and up, and replies seen; it also
    publishes the plans (one connection: a broker that takes the client id from the
    certificate would have two of one identity take turns)."""

    def __init__(self, port: int, client_id: str, identity: Identity | None = None) -> None:
        self.down = self.up = 0
        self.replies: set[str] = set()
        self.plans: dict[str, bytes] = {}  # the last plan each site was sent
        self.last_reply = 0.0
        self._lock = threading.Lock()
        ready = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        client.max_inflight_messages_set(0)
        if identity is not None:
            client.tls_set(**identity.tls_args)
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


def send_and_collect(counting: Counting, payloads: dict[str, bytes], wait: float,
                     signer: PlanSigner | None = None) -> tuple[float, int]:
    """Publish each site its payload on its plan topic (signed by ``signer`` first, if
    given) and wait (at most ``wait`` s) for every site's answer: (seconds from the first
    publish, or signature, to the last answer, answers)."""
    counting.reset()
    started = time.monotonic()
    infos = [counting.client.publish(protocol.plan_topic(site), payload if signer is None
                                     else _signed_again(signer, payload), qos=1)
             for site, payload in payloads.items()]
    for info in infos:
        info.wait_for_publish(60)
    deadline = time.monotonic() + wait
    while len(counting.replies) < len(payloads) and time.monotonic() < deadline:
        time.sleep(0.01)
    return counting.last_reply - started, len(counting.replies)


def _signed_again(signer: PlanSigner, payload: bytes) -> bytes:
    """A plan as the rollout sent it, signed with ``signer`` until the same expiry."""
    plan = protocol.decode(payload)
    return signer.sign(plan, float(json.loads(payload)["signature"]["expires"]))


# --- (a) the bare baseline ------------------------------------------------------------------


def baseline(port: int, count: int, ca: LocalCa | None = None) -> dict:
    """N plain clients: one message down each, one reply up each; with ``ca``, each with
    the certificate of its site (a broker with TLS)."""
    sites = site_ids(count)
    # paho's own loop (select()) fails on fds above 1,024: this one comes before the sites.
    counting = Counting(port, "bare-counter",
                        ca.identity(cloud_identity("operator")) if ca else None)
    identities = {site: ca.identity(site) for site in sites} if ca else {}
    loop = MultiplexedMqtt(max_connecting=64).start()
    connected = threading.Semaphore(0)
    clients = []
    try:
        for site in sites:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bare-{site}")
            if ca:
                client.tls_set(**identities[site].tls_args)
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
        elapsed, replies = send_and_collect(counting, dict.fromkeys(sites, b"x" * 200),
                                            wait=300)
    finally:
        loop.stop()
        counting.close()
    return {"sites": count, "connect_s": round(connect_s, 2), "request_reply_s":
            round(elapsed, 2), "replies": replies}


# --- (c) the fleet alone -----------------------------------------------------------------


def fleet_only(port: int, plans: dict[str, bytes], machines: int, pki: Path,
               sim_processes: int) -> dict:
    """The same plans to a new simulated fleet with no cloud (the sites' certificates from
    the CA at ``pki``): sign, publish, wait for results."""
    count = len(plans)
    signer = PlanSigner(Ed25519PrivateKey.generate())
    counting = Counting(port, "fleet-only-counter",
                        LocalCa(pki).ensure().identity(cloud_identity("operator")))
    try:
        with FleetSimulator(port, sorted(plans), machines, thread_stack_size=SMALL_THREAD_STACK,
                            max_parallel=machines, plan_keys=[signer.public_key_b64],
                            pki=pki, processes=sim_processes) as fleet:
            # Every site connected and registered, as before the rollout (at 10,000 sites
            # the start-up inventories take longer than the connections).
            if not fleet.wait_for_inventories(timeout=600):
                raise TimeoutError("the fleet's start-up inventories did not end")
            time.sleep(2)
            cpu = cpu_by_process({}, fleet)["simulator"]
            elapsed, results = send_and_collect(counting, plans, wait=600, signer=signer)
            cpu = cpu_by_process({}, fleet)["simulator"] - cpu
    finally:
        counting.close()
    return {"sites": count, "fleet_only_s": round(elapsed, 2), "results": results,
            "mqtt_up_bytes_per_site": round(counting.up / count),
            "simulator_cpu_s": round(cpu, 1)}


# --- (b) the rollout through the stack --------------------------------------------------------


def process_tree(pid: int | str) -> list[str]:
    """A process and its descendants (the bridge's ingest processes), as /proc lists them."""
    found, todo = [], [str(pid)]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += task.read_text().split()
            except OSError:
                continue
    return found


def cpu_seconds(pid: int | str) -> float:
    """User and system CPU time of a process so far (its threads included), and of its
    descendants for a process of the stack (``self``, the simulator, is alone: the stack's
    processes are its children too)."""
    total = 0.0
    for member in [pid] if pid == "self" else process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_by_process(processes: dict[str, int], fleet: FleetSimulator | None = None,
                   ) -> dict[str, float]:
    """CPU seconds so far of each of the stack's processes, and of the simulator (this
    process, and the fleet's own processes where it has some)."""
    sites = [pid for pid in (fleet.pids if fleet is not None else []) if pid != os.getpid()]
    return {**{name: cpu_seconds(pid) for name, pid in processes.items()},
            "simulator": cpu_seconds("self") + sum(cpu_seconds(pid) for pid in sites)}


QUIET_S = 5.0  # registration has ended once the store has been this long without requests
QUIET_POLL_S = 0.25
BACKGROUND_REQUESTS = 3  # a second's requests that are not registering (the ticker's)


def wait_until_quiet(stack: LocalStack, quiet_s: float, deadline: float) -> float:
    """Until the cloud sent almost no request (the ticker's) for ``quiet_s`` seconds; the
    monotonic time its last busy second ended (the counts are read every
    ``QUIET_POLL_S``, and the counter writes them every ``WRITE_INTERVAL``)."""
    samples = [(time.monotonic(), stack.request_counts()["total"])]
    last_busy = samples[0][0]
    while time.monotonic() < deadline:
        time.sleep(QUIET_POLL_S)
        now, total = time.monotonic(), stack.request_counts()["total"]
        samples = [sample for sample in samples if sample[0] >= now - 1.0] + [(now, total)]
        if total - samples[0][1] > BACKGROUND_REQUESTS:
            last_busy = now
        elif now - last_busy >= quiet_s:
            return last_busy
    raise TimeoutError("the sites did not finish registering")


def issue_identities(ca: LocalCa, sites: list[str]) -> None:
    """Every site's certificate, before registration is timed: a site has its identity
    from its installation (in AWS, the IoT registry's certificate, made when the site is
    added), so its registration is its first connection, not the making of its key. The
    simulator would otherwise issue each one as it starts its site (a key, a signature and
    two files written to disk each, at 10,000 sites a third of the registration)."""
    with ThreadPoolExecutor(4) as pool:  # the files' fsyncs wait on the disk, not the CPU
        list(pool.map(ca.identity, sites))


def settled_counts(stack: LocalStack) -> dict:
    """The request counts once the counter has written what was sent until now."""
    time.sleep(2 * WRITE_INTERVAL)
    return stack.request_counts()


def rollout(stack_dir: Path, count: int, machines: int, timeout: float,
            sim_processes: int) -> dict:
    stack = LocalStack(stack_dir, [], ready_timeout=120, count_requests=True)
    state = stack.up()
    api = ApiClient(state.context, timeout=900)  # a 10,000-site create takes minutes
    try:
        counting = Counting(state.mqtt_port, "bench-counter",
                            state.identity(cloud_identity("operator")))
        issue_identities(LocalCa(pki_dir(stack_dir)).ensure(), site_ids(count))
        register_cpu = cpu_by_process(state.processes)
        requests_before_registration = stack.request_counts()["total"]
        # Registration: from the first site's start (connecting, presence, inventory) to
        # the store's quiet; most of it happens while the simulator starts its sites.
        started = time.monotonic()
        deadline = started + timeout
        with FleetSimulator(state.mqtt_port, count, machines,
                            thread_stack_size=SMALL_THREAD_STACK, max_parallel=machines,
                            plan_keys=pinned_keys(stack_dir), pki=pki_dir(stack_dir),
                            processes=sim_processes) as fleet:
            sites_started_s = time.monotonic() - started
            # Registered once the store has been quiet for a while (listing the sites to
            # see is a scan of every site, which would slow the registering it watches),
            # then checked with one listing.
            register_s = wait_until_quiet(stack, quiet_s=QUIET_S, deadline=deadline) - started
            online = sum(bool(s["online"]) for s in api.get("/sites")["sites"])
            if online < count:
                raise TimeoutError(f"{online} of {count} sites registered")
            register_cpu = {name: round(seconds - register_cpu.get(name, 0.0), 1)
                            for name, seconds in cpu_by_process(state.processes, fleet).items()}
            register_requests = stack.request_counts()["total"] - requests_before_registration
            time.sleep(2)  # inventories settle
            counting.reset()
            requests_before = settled_counts(stack)
            cpu_before = cpu_by_process(state.processes, fleet)
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
            cpu = {name: round(seconds - cpu_before.get(name, 0.0), 1)
                   for name, seconds in cpu_by_process(state.processes, fleet).items()}
            requests_after = settled_counts(stack)
            data = api.get(f"/rollouts/{rollout_id}?machines=false")
            events = api.get(f"/rollouts/{rollout_id}/events")["events"]
            stats = fleet.stats()
        counting.close()
        plans = dict(counting.plans)
        waves = wave_times(events, data["rollout"]["waves"])
        stack_mib = sum(vm_hwm_mib(member) for pid in state.processes.values()
                        for member in process_tree(pid))
    finally:
        stack.down()
    return {
        "sites": count, "machines_per_site": machines, "register_s": round(register_s, 1),
        "register_requests_per_site": round(register_requests / count, 1),
        "register_sites_started_s": round(sites_started_s, 1),
        "register_cpu_s_by_process": dict(sorted(register_cpu.items(), key=lambda kv: -kv[1])),
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
    """Each wave's size, seconds from its first plan sent to its last site done, and
    seconds from the wave before's end to its first plan sent."""
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
    return [{"wave": i, "sites": size, "seconds": round(last.get(i, 0) - first.get(i, 0), 2),
             # from the end of the wave before (or the create's first event) to its first send
             "starts_after_s": round(first.get(i, 0) - (last.get(i - 1, 0) if i else min(
                 (e["ts"] for e in events), default=first.get(i, 0))), 2)}
            for i, size in enumerate(sizes)]


def write(summary: dict, command: str) -> None:
    """This fleet size's block in BENCHMARKS.md (each size keeps its own)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    base, tls, run = summary["baseline"], summary["baseline_tls"], summary["rollout"]
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
        f"Bare baseline in clear text / with TLS and a certificate per client: connect "
        f"{base['connect_s']} / {tls['connect_s']} s, request and reply "
        f"{base['request_reply_s']} / {tls['request_reply_s']} s.",
        f"Registration: {run['register_s']} s (every site started at "
        f"{run['register_sites_started_s']} s), {run['register_requests_per_site']} "
        f"requests per site, CPU seconds {run['register_cpu_s_by_process']}. Waves: "
        + ", ".join(f"{w['sites']} sites {w['seconds']} s (started {w['starts_after_s']} s "
                    "after the one before)" for w in run["waves"]) + ".",
        f"Requests per site by service: {run['requests_per_site_by_service']}. CPU seconds "
        f"during the rollout by process: {run['cpu_s_by_process']}; the fleet alone: "
        f"simulator {summary['fleet_only']['simulator_cpu_s']} s.",
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
    parser.add_argument("--sim-processes", type=int, default=2,
                        help="processes the simulated fleet runs in (both runs)")
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
        run = rollout(Path(tmp) / "dev", args.sites, args.machines, args.timeout,
                      args.sim_processes)
        plans = run.pop("plans")
        print(f"rollout: {json.dumps(run)}")
        # The stack's CA (and the identities it issued to the sites) serve the runs after.
        ca = LocalCa(pki_dir(Path(tmp) / "dev")).ensure()
        with Mosquitto(Path(tmp) / "fleet-only", tls=ca.broker()) as broker:
            alone = fleet_only(broker.port, plans, args.machines, ca.directory,
                               args.sim_processes)
        print(f"fleet only: {alone}")
        with Mosquitto(Path(tmp) / "baseline-tls", tls=ca.broker()) as broker:
            base_tls = baseline(broker.port, args.sites, ca)
        print(f"baseline with TLS: {base_tls}")
    summary = {"baseline": base, "baseline_tls": base_tls, "rollout": run, "fleet_only": alone,
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
