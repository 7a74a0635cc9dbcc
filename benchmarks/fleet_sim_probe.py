"""Probe: N simulated sites on one mosquitto; connect, one plan each, every result back.

    python benchmarks/fleet_sim_probe.py --sites 10000 [--machines 4] [--max-parallel 4]
                                         [--workers 64] [--processes 1]

A quick measurement of ``edgeplane_dev.fleet_sim`` on this machine, not the benchmark. All
on 127.0.0.1: a mosquitto of our own, the simulator in this process (every site the real
gateway core on simulated BMCs, all sessions on one MQTT loop thread; with ``--processes
K`` in K child processes, each with its own loop), and two plain paho clients standing in
for the cloud: one publishes a power.ensure plan to every site (signed, before the clock
starts, as the cloud would), the other receives inventories and results. Measured:

- ``build_s``: building and starting every site (the loop connects them meanwhile);
  ``connect_s``: from the start until every site is connected and subscribed;
  ``inventory_s``: until every inventory has arrived;
- ``plan_to_results_s``: from the first plan published until the last result arrived;
- ``plan_cpu_s``: CPU (user + system) the simulator's processes used meanwhile, and the
  broker's ``broker_plan_cpu_s``;
- ``peak_rss_mib`` (the simulator's VmHWM; with processes, the sum of theirs),
  ``peak_threads`` (sampled every 20 ms, in this process and the simulator's),
  ``idle_threads`` (connected, between plans), and the broker's peak RSS.

The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from chalicelib.signing import PlanSigner
from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep
from edgeplane_dev.fleet_sim import (
    SMALL_THREAD_STACK,
    FleetSimulator,
    machine_configs,
    raise_open_file_limit,
)
from edgeplane_dev.mosquitto import Mosquitto

LOOPBACK = "127.0.0.1"


def proc_status(pid: int | str, key: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+)", text, re.MULTILINE)
    return int(match[1]) if match else 0


def cpu_seconds(pid: int | str) -> float:
    """User plus system CPU a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_of(pids: list[int]) -> int:
    """Threads of this process and of ``pids`` (those that still run)."""
    total = proc_status("self", "Threads")
    for pid in set(pids) - {os.getpid()}:
        try:
            total += proc_status(pid, "Threads")
        except OSError:
            pass
    return total


class ThreadSampler:
    """The peak number of threads of this process and of the simulator's, sampled."""

    def __init__(self, interval: float = 0.02) -> None:
        self.peak = 0
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, threads_of(self.pids))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Cloud:
    """Two plain clients: one receives inventories and results, one publishes plans."""

    def __init__(self, port: int) -> None:
        self.inventories: set[str] = set()
        self.results: dict[str, str] = {}
        self.last_result_at = 0.0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        subscribed = threading.Event()
        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-watcher")
        watcher.on_connect = lambda c, *_: c.subscribe(
            [(f"{protocol.TOPIC_ROOT}/+/up/inventory", 1),
             (f"{protocol.TOPIC_ROOT}/+/up/result", 1)])
        watcher.on_subscribe = lambda *_: subscribed.set()
        watcher.on_message = self._on_message
        watcher.connect(LOOPBACK, port)
        watcher.loop_start()
        publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-publisher")
        publisher.max_inflight_messages_set(0)  # no limit: publish as fast as we can
        publisher.connect(LOOPBACK, port)
        publisher.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("the watcher could not subscribe")
        self.watcher, self.publisher = watcher, publisher

    def _on_message(self, client, userdata, message) -> None:
        site, _, kind = protocol.parse_topic(message.topic)
        with self._changed:
            if kind == "inventory":
                self.inventories.add(site)
            else:
                self.results[site] = protocol.decode(message.payload, message.topic).state
                self.last_result_at = time.monotonic()
            self._changed.notify_all()

    def wait(self, what: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(getattr(self, what)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(getattr(self, what))} of {count} {what}")
                self._changed.wait(remaining)

    def publish_plans(self, plans: list[tuple[str, bytes]]) -> None:
        infos = [self.publisher.publish(topic, payload, qos=1) for topic, payload in plans]
        for info in infos:
            info.wait_for_publish(60)

    def close(self) -> None:
        for client in (self.watcher, self.publisher):
            client.disconnect()
            client.loop_stop()


def probe(sites: int, machines: int, max_parallel: int, max_connecting: int,
          timeout: float, workers: int = 64, processes: int = 1) -> dict:
    open_files = raise_open_file_limit()  # before the broker: it inherits the limit
    machine_ids = [m.id for m in machine_configs(machines)]
    signer = PlanSigner(Ed25519PrivateKey.generate())  # the cloud's key, for this run
    with tempfile.TemporaryDirectory(prefix="fleet-probe-") as directory, \
            Mosquitto(Path(directory) / "mosquitto") as broker:
        cloud = Cloud(broker.port)  # its sockets first: paho's own loop uses select()
        sampler = ThreadSampler()
        threads_before = set(threading.enumerate())
        fleet = FleetSimulator(broker.port, sites, machines, max_parallel=max_parallel,
                               max_connecting=max_connecting, workers=workers,
                               processes=processes, plan_keys=[signer.public_key_b64],
                               thread_stack_size=SMALL_THREAD_STACK)
        try:
            started = time.monotonic()
            fleet.start(timeout=None)
            build_s = time.monotonic() - started
            sampler.pids = pids = fleet.pids
            fleet.wait_connected(timeout)
            connect_s = time.monotonic() - started
            print(f"connected: {fleet.stats().line()} in {connect_s:.2f} s", flush=True)
            cloud.wait("inventories", sites, timeout)
            inventory_s = time.monotonic() - started
            time.sleep(1.0)  # let the inventory threads end
            idle_threads = threads_of(pids)
            idle_rss_mib = fleet.stats().rss_mib

            plans = [(protocol.plan_topic(site), signer.sign(Plan(
                site=site, execution_id=f"probe.{site}", rollout_id="probe",
                steps=[PlanStep("power.ensure", {"state": "on"}, machine_ids)]),
                time.time() + 3600)) for site in fleet.site_ids]
            cpu_before = sum(map(cpu_seconds, pids)), cpu_seconds(broker.process.pid)
            published = time.monotonic()
            cloud.publish_plans(plans)
            publish_s = time.monotonic() - published
            cloud.wait("results", sites, timeout)
            plan_to_results_s = cloud.last_result_at - published
            plan_cpu_s = sum(map(cpu_seconds, pids)) - cpu_before[0]
            broker_plan_cpu_s = cpu_seconds(broker.process.pid) - cpu_before[1]
            stats = fleet.stats()
            print(f"results: {stats.line()} in {plan_to_results_s:.2f} s", flush=True)
            broker_peak_mib = proc_status(broker.process.pid, "VmHWM") / 1024
        finally:
            stopping = time.monotonic()
            fleet.stop()
            stop_s = time.monotonic() - stopping
            left_behind = [t.name for t in threading.enumerate() if t not in threads_before]
            sampler.stop()
            cloud.close()
    return {
        "sites": sites,
        "machines_per_site": machines,
        "max_parallel": max_parallel,
        "max_connecting": max_connecting,
        "workers": workers,
        "processes": processes,
        "build_s": round(build_s, 2),
        "connect_s": round(connect_s, 2),
        "inventory_s": round(inventory_s, 2),
        "publish_s": round(publish_s, 2),
        "plan_to_results_s": round(plan_to_results_s, 2),
        "plan_cpu_s": round(plan_cpu_s, 2),
        "broker_plan_cpu_s": round(broker_plan_cpu_s, 2),
        "results": len(cloud.results),
        "results_succeeded": sum(s == "succeeded" for s in cloud.results.values()),
        "plans_received": stats.plans_received,
        "idle_rss_mib": round(idle_rss_mib),
        "peak_rss_mib": round(stats.peak_rss_mib),
        "peak_rss_kib_per_site": round(stats.peak_rss_mib * 1024 / sites),
        "idle_threads": idle_threads,
        "peak_threads": sampler.peak,
        "threads_left_after_stop": len(left_behind),
        "broker_peak_rss_mib": round(broker_peak_mib),
        "stop_s": round(stop_s, 2),
        "open_file_limit": open_files,
        "pid_max": int(Path("/proc/sys/kernel/pid_max").read_text()),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--machines", type=int, default=4)
    parser.add_argument("--max-parallel", type=int, default=4,
                        help="machines a site works on at once (threads per plan)")
    parser.add_argument("--max-connecting", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=64,
                        help="threads the simulated sites share (per process)")
    parser.add_argument("--processes", type=int, default=1,
                        help="processes to split the simulated sites over")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # so that the broker is stopped too
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge_gateway").setLevel(logging.ERROR)
    summary = probe(args.sites, args.machines, args.max_parallel, args.max_connecting,
                    args.timeout, args.workers, args.processes)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
