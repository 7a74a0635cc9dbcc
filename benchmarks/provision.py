"""One site provisions N machines from one installer over a thin WAN link: blueprint
k3s-node's steps in one plan, the installer fetched once into the site's cache, each BMC
reading it from there, each machine's seed built on the gateway.

    python benchmarks/provision.py --machines 50 [--image-size 1GiB] [--wan-mbit 20]

On 127.0.0.1, as ``benchmarks/site.py`` runs a site: a mosquitto of our own (TLS, a
certificate per client), the local stack's artifact server as the origin, paced to
``--wan-mbit``, the Redfish simulator (N BMCs over HTTPS in one process, each installing its
host as ``edgeplane_dev/redfish_sim/install.py`` does: ``--read-size`` of the installer in
1 MiB ranges, paced to ``--lan-mbit``, then ``--install-seconds``, then the phone-home), and
the gateway as its console script with ``[cache]`` and ``[provision]``. Plans are signed.

Two sites, each with a fresh gateway, cache and BMCs: one machine alone (the baseline), then
N machines in one plan. Each pays the WAN download of the image. Measured: the wall time of
each plan (publish to Result), the origin's body bytes and GETs (the WAN), the bytes the
cache served on the LAN (its report), the gateway's CPU seconds and its peak RSS (VmHWM)
and largest sampled RSS while the BMCs read, and what each node reported. Targets:
WAN bytes = the image once; ``wall_s <= 1.2 * single_s``; gateway peak RSS <= 60 MiB. The
last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.site import (  # noqa: E402
    PASSWORD,
    USERNAME,
    BenchmarkError,
    Settings,
    Trust,
    child,
    cpu_seconds,
    failures,
    gateway,
    interrupt_on_signals,
    proc_status,
    run_plan,
    wait_for_line,
    wait_until_ready,
)
from benchmarks.site import gateway_config as site_config  # noqa: E402
from edgeplane import protocol  # noqa: E402
from edgeplane.protocol import CacheStatus, Plan, PlanStep  # noqa: E402
from edgeplane_dev.artifacts import make_installer, sha256_of  # noqa: E402
from edgeplane_dev.demo import k3s_node_steps  # noqa: E402
from edgeplane_dev.mosquitto import Mosquitto  # noqa: E402
from edgeplane_dev.pki import cloud_identity  # noqa: E402
from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp  # noqa: E402
from edgeplane_dev.recorder import Recorder  # noqa: E402
from edgeplane_dev.stack import site_tables  # noqa: E402

MIB = 1024 * 1024
RATIO_TARGET = 1.2
RSS_TARGET_MIB = 60.0
_SIZE = re.compile(r"^(\d+)\s*([KMG]iB)?$", re.IGNORECASE)
_UNITS = {None: 1, "kib": 1024, "mib": MIB, "gib": 1024 * MIB}


@dataclass(frozen=True)
class Options:
    machines: int
    image_bytes: int
    wan_bps: float  # bytes per second
    lan_bps: float
    read_bytes: int
    install_seconds: float
    timeout: float

    def command(self) -> str:
        return (f"python benchmarks/provision.py --machines {self.machines} --image-size "
                f"{self.image_bytes // MIB}MiB --wan-mbit {self.wan_bps * 8 / 1e6:g} "
                f"--lan-mbit {self.lan_bps * 8 / 1e6:g} --read-size "
                f"{self.read_bytes // MIB}MiB --install-seconds {self.install_seconds:g}")


@dataclass
class Run:
    machines: int
    wall_s: float = 0.0
    nodes: int = 0
    problems: list[str] = field(default_factory=list)
    wan_bytes: int = 0
    wan_gets: int = 0
    lan_bytes: int = 0
    lan_requests: int = 0
    gateway_cpu_s: float = 0.0
    simulator_cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    serving_rss_mib: float = 0.0  # the largest RSS sampled while the plan ran
    facts: dict[str, str] = field(default_factory=dict)


def size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1GiB or 256MiB")
    return int(match[1]) * _UNITS[match[2].lower() if match[2] else None]


@contextmanager
def origin(directory: Path, wan_bps: float, log: Path) -> Iterator[int]:
    port = free_port()
    with child([sys.executable, "-m", "edgeplane_dev.artifacts", "--port", str(port),
                "--directory", str(directory), "--rate", str(wan_bps)], log):
        wait_for_tcp(port, timeout=20)
        yield port


def origin_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/_stats",  # noqa: S310 - loopback
                                timeout=10) as answer:
        stats: dict[str, Any] = json.loads(answer.read())
    return stats


@contextmanager
def simulator(count: int, options: Options, trust: Trust,
              log: Path) -> Iterator[tuple[int, list[int]]]:
    args = [sys.executable, "-m", "edgeplane_dev.redfish_sim", *["--port", "0"] * count,
            "--power-delay", "1.0", "--username", USERNAME, "--password", PASSWORD,
            "--tls-cert", str(trust.bmc.cert_file), "--tls-key", str(trust.bmc.key_file),
            "--install-seconds", str(options.install_seconds),
            "--install-read-bytes", str(options.read_bytes),
            "--media-read-bps", str(options.lan_bps)]
    with child(args, log) as process:
        ready = wait_for_line(process, log, "ready ", timeout=60)
        yield process.pid, [int(p) for p in ready.split()[1:]]


def k3s_plan(site: str, execution_id: str, machines: list[str],
             installer: tuple[str, str, int], timeout: float) -> Plan:
    steps = k3s_node_steps(installer, machines, install_timeout=int(timeout))
    return Plan(site=site, execution_id=execution_id, rollout_id="bench-provision", steps=[
        PlanStep(step["task"], protocol.task_spec(step["task"]).validate(step["params"]),
                 machines) for step in steps])


def sample_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.2):
        try:
            peak[0] = max(peak[0], proc_status(pid, "VmRSS"))
        except (OSError, BenchmarkError):
            return


def run_site(site: str, count: int, options: Options, installer: tuple[str, str, int],
             image_dir: Path, broker: Mosquitto, recorder: Recorder, trust: Trust,
             directory: Path) -> Run:
    directory.mkdir(parents=True)
    run = Run(machines=count)
    settings = Settings(machines=count, latency=0.0, max_parallel=count, min_interval=0.2,
                        poll_interval=1.0, power_delay=1.0, progress_interval=1.0,
                        single_runs=1, timeout=options.timeout)
    with ExitStack() as stack:
        origin_port = stack.enter_context(origin(image_dir, options.wan_bps,
                                                 directory / "origin.log"))
        url = f"http://{LOOPBACK}:{origin_port}/{Path(installer[0]).name}"
        sim_pid, ports = stack.enter_context(
            simulator(count, options, trust, directory / "redfish-sim.log"))
        config = directory / "gateway.toml"
        config.write_text(site_config(site, broker.port, ports, settings, trust)
                          + site_tables(site, directory, free_port()))
        process = stack.enter_context(gateway(config, directory / "gateway.log"))
        wait_until_ready(recorder, site, process, directory / "gateway.log", options.timeout)
        cpu = cpu_seconds(process.pid), cpu_seconds(sim_pid)
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=sample_rss, args=(process.pid, stop, peak),
                                   daemon=True)
        sampler.start()
        machines = [f"srv-{n}" for n in range(1, count + 1)]
        try:
            plan = k3s_plan(site, f"{site}-k3s", machines, (url, *installer[1:]),
                            options.timeout)
            done = run_plan(recorder, plan, options.timeout)
        finally:
            stop.set()
            sampler.join()
        run.wall_s, run.serving_rss_mib = done.wall_s, peak[0]
        run.gateway_cpu_s = cpu_seconds(process.pid) - cpu[0]
        run.simulator_cpu_s = cpu_seconds(sim_pid) - cpu[1]
        run.peak_rss_mib = proc_status(process.pid, "VmHWM")
        run.problems = failures(done.result)
        for machine in done.result.machines:
            waited = [s for s in machine.steps if s.task == "os.wait_installed"]
            if waited and waited[0].state == protocol.StepState.SUCCEEDED:
                run.nodes += 1
                run.facts = dict(waited[0].data or {})
        stats = origin_stats(origin_port)
        run.wan_bytes = int(stats["body_bytes"])
        run.wan_gets = sum(1 for r in stats["requests"] if r[0] == "GET")
        cache = recorder.wait_for(lambda found: any(c.site == site for c in found),
                                  CacheStatus, timeout=30)
        report = [c for c in cache if c.site == site][-1]
        run.lan_bytes, run.lan_requests = report.served_bytes, report.served_requests
    return run


def summarize(options: Options, single: Run, site: Run) -> dict[str, Any]:
    return {
        "machines": options.machines, "image_bytes": options.image_bytes,
        "wan_mbit": round(options.wan_bps * 8 / 1e6, 3),
        "single_s": round(single.wall_s, 1), "wall_s": round(site.wall_s, 1),
        "ratio": round(site.wall_s / single.wall_s, 3) if single.wall_s else None,
        "nodes": site.nodes, "problems": site.problems[:5],
        "wan_bytes": site.wan_bytes, "wan_gets": site.wan_gets,
        "single_wan_bytes": single.wan_bytes,
        "lan_bytes": site.lan_bytes, "lan_requests": site.lan_requests,
        "gateway_cpu_s": round(site.gateway_cpu_s, 1),
        "simulator_cpu_s": round(site.simulator_cpu_s, 1),
        "gateway_peak_rss_mib": round(site.peak_rss_mib, 1),
        "gateway_serving_rss_mib": round(site.serving_rss_mib, 1),
        "single_peak_rss_mib": round(single.peak_rss_mib, 1), "facts": site.facts,
        "targets_met": {
            "wan_image_once": site.wan_bytes == options.image_bytes,
            "ratio": bool(single.wall_s) and site.wall_s <= RATIO_TARGET * single.wall_s,
            "rss": site.peak_rss_mib <= RSS_TARGET_MIB,
        },
    }


def report_lines(options: Options, summary: dict[str, Any]) -> list[str]:
    return [
        f"command: {options.command()}",
        f"nodes: {summary['nodes']} of {options.machines} phoned home "
        f"({summary['facts'].get('os')}, {summary['facts'].get('k3s_version')})",
        f"wall: {summary['wall_s']} s for {options.machines} machines, "
        f"{summary['single_s']} s for one alone (ratio {summary['ratio']}, target <= "
        f"{RATIO_TARGET})",
        f"WAN: {summary['wan_bytes']} bytes in {summary['wan_gets']} GET(s) (the image: "
        f"{options.image_bytes}); seeds are built on the gateway and never cross it",
        f"LAN: {summary['lan_bytes']} bytes in {summary['lan_requests']} requests served by "
        "the cache",
        f"gateway: {summary['gateway_cpu_s']} CPU s, peak RSS {summary['gateway_peak_rss_mib']}"
        f" MiB (sampled while serving: {summary['gateway_serving_rss_mib']}; target <= "
        f"{RSS_TARGET_MIB:g}); simulator {summary['simulator_cpu_s']} CPU s",
    ]


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--image-size", type=size, default=1024 * MIB,
                        help="the installer's size (e.g. 1GiB, 256MiB)")
    parser.add_argument("--wan-mbit", type=float, default=20.0,
                        help="the WAN link's rate, Mbit/s")
    parser.add_argument("--lan-mbit", type=float, default=400.0,
                        help="the rate each BMC reads virtual media at, Mbit/s")
    parser.add_argument("--read-size", type=size, default=64 * MIB,
                        help="installer bytes each BMC reads (the boot files an installer "
                        "reads; at most the image)")
    parser.add_argument("--install-seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    if args.machines < 1 or args.wan_mbit <= 0 or args.lan_mbit <= 0:
        parser.error("--machines, --wan-mbit and --lan-mbit must be more than 0")
    return Options(machines=args.machines, image_bytes=args.image_size,
                   wan_bps=args.wan_mbit * 1e6 / 8, lan_bps=args.lan_mbit * 1e6 / 8,
                   read_bytes=min(args.read_size, args.image_size),
                   install_seconds=args.install_seconds, timeout=args.timeout)


def benchmark(options: Options, directory: Path) -> tuple[Run, Run]:
    image_dir = directory / "origin"
    image = make_installer(image_dir, options.image_bytes)
    installer = (str(image), sha256_of(image), options.image_bytes)
    with ExitStack() as stack:
        trust = Trust.create(directory / "pki")
        broker = stack.enter_context(Mosquitto(directory / "mosquitto", tls=trust.ca.broker()))
        recorder = Recorder(broker.port, identity=trust.ca.identity(cloud_identity("operator")))
        stack.callback(recorder.close)
        print("baseline: one machine alone...", flush=True)
        single = run_site("bench-one", 1, options, installer, image_dir, broker, recorder,
                          trust, directory / "one")
        print(f"site: {options.machines} machines in one plan...", flush=True)
        site = run_site("bench-many", options.machines, options, installer, image_dir,
                        broker, recorder, trust, directory / "many")
    return single, site


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    interrupt_on_signals()
    directory = Path(tempfile.mkdtemp(prefix="bench-provision-"))
    started = time.monotonic()
    try:
        single, site = benchmark(options, directory)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    for problem in (*single.problems, *site.problems)[:10]:
        print(f"warning: {problem}", file=sys.stderr)
    summary = summarize(options, single, site)
    summary["total_s"] = round(time.monotonic() - started, 1)
    print("\n".join(report_lines(options, summary)))
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
