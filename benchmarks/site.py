"""One site under load: a real ``edge-gateway`` process, N simulated Redfish BMCs, one plan.

    python benchmarks/site.py --machines 50 [--latency 0.2] [--max-parallel N] [--write]

Everything runs on 127.0.0.1 as in production: a mosquitto of our own that takes only TLS
clients with a certificate of the run's CA (the gateway connects as its site), the Redfish
simulator (DMTF public-rackmount1, ``--latency`` seconds added to every request) serving
HTTPS with a self-signed certificate that the gateway pins by fingerprint, in a process of its
own so the gateway's memory is measured alone, and the gateway as its console script. Plans
are signed; the gateway verifies each. The plan is power.ensure on, boot.override pxe once,
bios.apply (two attributes, reboot) and inventory.collect.

Two sites are run, each with a fresh gateway and fresh BMCs:

- the baseline: a site of ``--single-runs`` machines, sent one plan per machine, one after
  the other (each machine alone); the slowest of those is ``single_s``;
- the site under test: N machines, one plan for all of them; ``wall_s`` runs from publishing
  the plan to receiving its Result.

Targets: ``wall_s <= 1.1 * single_s`` and the gateway's peak RSS (VmHWM, read just before it
is stopped) <= 50 MiB. The last line printed is a JSON summary; ``--write`` also puts the
results into BENCHMARKS.md (one block per number of machines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.signing import PlanSigner
from edge_gateway.fingerprints import fingerprint_of
from edgeplane import protocol
from edgeplane.protocol import Inventory, Plan, PlanStep, Presence, Result
from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.pki import Identity, LocalCa, cloud_identity
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.processes import environment_of, spawn, stop
from edgeplane_dev.recorder import Recorder

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
USERNAME = "admin"
PASSWORD = "password"  # noqa: S105 - the simulator's well-known demo credential
RATIO_TARGET = 1.1
RSS_TARGET_MIB = 50.0
BIOS_ATTRIBUTES = {"ProcTurboMode": "Disabled", "PowerProfile": "Balanced"}
SIGNER = PlanSigner(Ed25519PrivateKey.generate())  # the cloud's key, for one run
SECTION_TITLE = "## Site: one gateway, N Redfish BMCs"
BEGIN_MARK = "<!-- benchmarks/site.py results, {machines} machines: begin -->"
END_MARK = "<!-- benchmarks/site.py results, {machines} machines: end -->"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchmarkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    machines: int
    latency: float
    max_parallel: int
    min_interval: float
    poll_interval: float
    power_delay: float
    progress_interval: float
    single_runs: int
    timeout: float
    # The 1-minute load average when the run starts: the cores may be others' too.
    load_average: float = field(default_factory=lambda: os.getloadavg()[0])

    def command(self) -> str:
        """The command line that reproduces these settings."""
        return (f"python benchmarks/site.py --machines {self.machines} --latency {self.latency:g}"
                f" --max-parallel {self.max_parallel} --min-interval {self.min_interval:g}"
                f" --poll-interval {self.poll_interval:g} --power-delay {self.power_delay:g}"
                f" --single-runs {self.single_runs}")


@dataclass
class PlanRun:
    """One plan: how long it took end to end, and what the gateway reported."""

    wall_s: float
    result: Result
    result_messages: int = 1  # the messages it came in (parts, when one could not hold it)


@dataclass
class SiteRun:
    """One gateway's life: its plans, its peak memory and the CPU it and the BMCs used."""

    machines: int
    plans: list[PlanRun] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    gateway_cpu_s: float = 0.0
    simulator_cpu_s: float = 0.0
    startup_s: float = 0.0
    retries: int = 0  # requests sushy sent again after a transport error
    requests: list[int] = field(default_factory=list)  # Redfish requests each BMC received
    connections: list[int] = field(default_factory=list)  # the connections they came over
    python_optimize: str = "0"  # PYTHONOPTIMIZE the gateway runs with ("2": lean bytecode)


# --- child processes -----------------------------------------------------------------------


def proc_status(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` value in MiB (e.g. VmHWM, VmRSS)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise BenchmarkError(f"/proc/{pid}/status has no {key}")
    return int(match[1]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def log_tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"


@contextmanager
def child(args: Sequence[str], log: Path) -> Iterator[subprocess.Popen]:
    """A child process in its own process group, stopped (group and all) on the way out."""
    process = spawn(args, log)
    try:
        yield process
    finally:
        stop(process)


def wait_for_line(process: subprocess.Popen, log: Path, prefix: str, timeout: float) -> str:
    """The first line of the log starting with ``prefix``; raise if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            raise BenchmarkError(f"{log.stem} exited ({process.returncode}):\n{log_tail(log)}")
        time.sleep(0.05)
    raise BenchmarkError(f"{log.stem} printed no {prefix!r} in {timeout:.0f} s:\n"
                         f"{log_tail(log)}")


@dataclass(frozen=True)
class Trust:
    """The run's credentials: the broker's CA with a certificate per client, and the one
    certificate every simulated BMC presents (its fingerprint pinned in the site's config)."""

    ca: LocalCa
    bmc: Identity

    @classmethod
    def create(cls, directory: Path) -> Trust:
        ca = LocalCa(directory).ensure()
        return cls(ca, ca.broker())  # a server certificate for 127.0.0.1, as a BMC's is

    @property
    def bmc_fingerprint(self) -> str:
        return fingerprint_of(ssl.PEM_cert_to_DER_cert(self.bmc.cert_file.read_text()))


@contextmanager
def simulator(count: int, settings: Settings, trust: Trust,
              log: Path) -> Iterator[tuple[int, list[int]]]:
    """``count`` simulated BMCs in one process on ports the OS picks; (pid, ports)."""
    args = [sys.executable, "-m", "edgeplane_dev.redfish_sim", *["--port", "0"] * count,
            "--latency", str(settings.latency), "--power-delay", str(settings.power_delay),
            "--username", USERNAME, "--password", PASSWORD,
            "--tls-cert", str(trust.bmc.cert_file), "--tls-key", str(trust.bmc.key_file)]
    with child(args, log) as process:
        ready = wait_for_line(process, log, "ready ", timeout=60)
        ports = [int(p) for p in ready.split()[1:]]
        if len(ports) != count:
            raise BenchmarkError(f"the simulator listens on {len(ports)} ports, not {count}")
        yield process.pid, ports


def gateway_config(site: str, mqtt_port: int, ports: list[int], settings: Settings,
                   trust: Trust) -> str:
    """The site's TOML, as ``edgeplane_dev.stack`` writes it, one machine per BMC port."""
    identity = trust.ca.identity(site)
    fingerprint = trust.bmc_fingerprint
    lines = [
        f"site = {json.dumps(site)}",
        'journal = "journal.db"',
        f"max_parallel = {settings.max_parallel}",
        f"progress_interval = {settings.progress_interval}",
        "",
        "[mqtt]",
        f"host = {json.dumps(LOOPBACK)}",
        f"port = {mqtt_port}",
        "reconnect_max_delay = 5",
        "tls = true",
        f"ca_file = {json.dumps(str(identity.ca_file))}",
        f"cert_file = {json.dumps(str(identity.cert_file))}",
        f"key_file = {json.dumps(str(identity.key_file))}",
        "",
        "[trust]",
        f"plan_keys = {json.dumps([SIGNER.public_key_b64])}",
    ]
    for number, port in enumerate(ports, start=1):
        lines += [
            "",
            "[[machines]]",
            f'id = "srv-{number}"',
            'protocol = "redfish"',
            f'address = "https://{LOOPBACK}:{port}"',
            f"tls_fingerprint = {json.dumps(fingerprint)}",
            f"username = {json.dumps(USERNAME)}",
            f"password = {json.dumps(PASSWORD)}",
            "power_timeout = 120",
            f"poll_interval = {settings.poll_interval}",
            f"min_interval = {settings.min_interval}",
        ]
    return "\n".join(lines) + "\n"


@contextmanager
def gateway(config: Path, log: Path) -> Iterator[subprocess.Popen]:
    with child([str(BIN / "edge-gateway"), "run", "--config", str(config)], log) as process:
        yield process


# --- the plan ------------------------------------------------------------------------------


def bench_plan(site: str, execution_id: str, machines: list[str]) -> Plan:
    return Plan(site=site, execution_id=execution_id, rollout_id="bench", steps=[
        PlanStep("power.ensure", {"state": "on"}, machines),
        PlanStep("boot.override", {"target": "pxe", "mode": "once"}, machines),
        PlanStep("bios.apply", {"attributes": dict(BIOS_ATTRIBUTES), "reboot": True},
                 machines),
        PlanStep("inventory.collect", {}, machines),
    ])


def run_plan(recorder: Recorder, plan: Plan, timeout: float) -> PlanRun:
    """Publish the plan and wait for its Result (every part of it, when one message cannot
    hold it); the wall time covers both."""
    def whole(results: list[Result]) -> Result | None:
        return protocol.join_parts(r for r in results if r.execution_id == plan.execution_id)

    def done(results: list[Result]) -> bool:
        return whole(results) is not None

    payload = SIGNER.sign(plan, time.time() + 3600)  # as the cloud sends it
    started = time.monotonic()
    recorder.publish(protocol.plan_topic(plan.site), payload)
    try:
        results = recorder.wait_for(done, Result, timeout=timeout)
    except TimeoutError:
        raise BenchmarkError(f"no result for execution {plan.execution_id} after "
                             f"{timeout:.0f} s (--keep keeps the logs)") from None
    wall = time.monotonic() - started
    # The gateway observes the plan's machines next, before it takes another plan: wait for
    # that too, or the next plan's time would include it.
    recorder.wait_for(lambda found: any(o.execution_id == plan.execution_id for o in found),
                      protocol.Observed, timeout=timeout)
    result = whole(results)
    assert result is not None
    parts = {r.part for r in results if r.execution_id == plan.execution_id
             and r.seq == result.seq}
    return PlanRun(wall, result, len(parts))


def run_site(site: str, count: int, plans: Callable[[list[str]], list[Plan]],
             broker: Mosquitto, recorder: Recorder, settings: Settings, trust: Trust,
             directory: Path) -> SiteRun:
    """Start BMCs and a gateway for one site, run its plans in turn, stop everything."""
    directory.mkdir(parents=True)
    run = SiteRun(machines=count)
    with ExitStack() as stack:
        sim_pid, ports = stack.enter_context(
            simulator(count, settings, trust, directory / "redfish-sim.log"))
        config = directory / "gateway.toml"
        config.write_text(gateway_config(site, broker.port, ports, settings, trust))
        started = time.monotonic()
        process = stack.enter_context(gateway(config, directory / "gateway.log"))
        wait_until_ready(recorder, site, process, directory / "gateway.log", settings.timeout)
        run.startup_s = time.monotonic() - started
        run.python_optimize = environment_of(process.pid).get("PYTHONOPTIMIZE", "0")
        cpu = cpu_seconds(process.pid), cpu_seconds(sim_pid)
        log_size = (directory / "gateway.log").stat().st_size
        for port in ports:  # forget the start-up inventory's requests
            sim_control(port, "DELETE", trust)
        for plan in plans([f"srv-{n}" for n in range(1, count + 1)]):
            run.plans.append(run_plan(recorder, plan, settings.timeout))
        run.gateway_cpu_s = cpu_seconds(process.pid) - cpu[0]
        run.simulator_cpu_s = cpu_seconds(sim_pid) - cpu[1]
        run.peak_rss_mib = proc_status(process.pid, "VmHWM")
        run.retries = count_retries(directory / "gateway.log", since=log_size)
        run.requests = [len(sim_control(port, "GET", trust)) for port in ports]
        run.connections = [sim_control(port, "GET", trust, "connections")["count"]
                           for port in ports]
    return run


def sim_control(port: int, method: str, trust: Trust, what: str = "requests") -> Any:
    """The simulator's record of the requests one BMC received (GET) or forget them and their
    connections (DELETE); ``what="connections"``: how many connections they came over."""
    request = urllib.request.Request(f"https://{LOOPBACK}:{port}/_sim/{what}", method=method)
    context = ssl.create_default_context(cafile=str(trust.ca.ca_file))
    with urllib.request.urlopen(request, timeout=10,  # noqa: S310 - loopback
                                context=context) as response:
        body = response.read()
    return json.loads(body) if body else []


def count_retries(log: Path, since: int) -> int:
    """sushy's "Transient error" warnings in the gateway's log after byte ``since``."""
    with open(log, "rb") as file:
        file.seek(since)
        return file.read().count(b"Transient error during Redfish request")


def wait_until_ready(recorder: Recorder, site: str, process: subprocess.Popen, log: Path,
                     timeout: float) -> None:
    """Online, and its start-up inventory of every machine sent (so it is idle)."""
    try:
        recorder.wait_for(lambda ms: any(m.site == site and m.online for m in ms), Presence,
                          timeout=30)
        recorder.wait_for(lambda ms: any(m.site == site for m in ms), Inventory,
                          timeout=timeout)
    except TimeoutError:
        state = "running" if process.poll() is None else f"exited {process.returncode}"
        raise BenchmarkError(f"gateway of {site} not ready ({state}):\n{log_tail(log)}") from None


# --- what the results say ------------------------------------------------------------------


def step_seconds(result: Result) -> dict[str, list[float]]:
    """Each task's duration on every machine, from the Result's step timestamps."""
    durations: dict[str, list[float]] = {}
    for machine in result.machines:
        for step in machine.steps:
            if step.started_at is not None and step.finished_at is not None:
                durations.setdefault(step.task, []).append(step.finished_at - step.started_at)
    return durations


def machine_seconds(result: Result) -> list[float]:
    """How long each machine took, first step started to last step finished."""
    spans = []
    for machine in result.machines:
        starts = [s.started_at for s in machine.steps if s.started_at is not None]
        ends = [s.finished_at for s in machine.steps if s.finished_at is not None]
        if starts and ends:
            spans.append(max(ends) - min(starts))
    return spans


def succeeded(result: Result) -> int:
    return sum(1 for m in result.machines if m.state == protocol.MachineState.SUCCEEDED)


def failures(result: Result) -> list[str]:
    return [f"{m.machine}: {s.message}" for m in result.machines for s in m.steps
            if s.state == protocol.StepState.FAILED]


def summarize(settings: Settings, single: SiteRun, site: SiteRun) -> dict[str, Any]:
    slowest = max(single.plans, key=lambda p: p.wall_s)
    wall, result = site.plans[0].wall_s, site.plans[0].result
    spans = machine_seconds(result)
    return {
        "machines": settings.machines,
        "latency_s": settings.latency,
        "max_parallel": settings.max_parallel,
        "min_interval_s": settings.min_interval,
        "poll_interval_s": settings.poll_interval,
        "power_delay_s": settings.power_delay,
        "wall_s": round(wall, 2),
        "single_s": round(slowest.wall_s, 2),
        "single_runs_s": [round(p.wall_s, 2) for p in single.plans],
        "ratio": round(wall / slowest.wall_s, 3),
        "ratio_target": RATIO_TARGET,
        "peak_rss_mib": round(site.peak_rss_mib, 1),
        "single_peak_rss_mib": round(single.peak_rss_mib, 1),
        "rss_target_mib": RSS_TARGET_MIB,
        "result_state": result.state,
        "result_messages": site.plans[0].result_messages,
        "machines_succeeded": succeeded(result),
        "machine_s_median": round(statistics.median(spans), 2) if spans else None,
        "machine_s_max": round(max(spans), 2) if spans else None,
        "gateway_cpu_s": round(site.gateway_cpu_s, 2),
        "simulator_cpu_s": round(site.simulator_cpu_s, 2),
        "gateway_startup_s": round(site.startup_s, 2),
        "gateway_python_optimize": site.python_optimize,
        "retries": site.retries,
        "requests_per_machine": round(statistics.median(site.requests)) if site.requests else None,
        "single_requests_per_machine": max(single.requests) if single.requests else None,
        "connections_per_machine": round(statistics.median(site.connections))
        if site.connections else None,
        "load_average": settings.load_average,
        "single_retries": single.retries,
        "steps_s": {task: {"median": round(statistics.median(v), 2), "max": round(max(v), 2)}
                    for task, v in step_seconds(result).items()},
        "single_steps_s": {task: round(max(v), 2)
                           for task, v in step_seconds(slowest.result).items()},
        "ratio_ok": wall / slowest.wall_s <= RATIO_TARGET,
        "rss_ok": site.peak_rss_mib <= RSS_TARGET_MIB,
    }


def machine_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, " \
           f"{platform.system()} {platform.release()}"


def report_lines(settings: Settings, summary: dict[str, Any]) -> list[str]:
    """The human-readable summary (also what ``--write`` puts in BENCHMARKS.md)."""
    ok = {True: "meets", False: "MISSES"}
    steps = summary["steps_s"]
    lines = [
        f"Command: `{settings.command()}`",
        f"Machine: {machine_line()}; load average {summary['load_average']:.2f} at the start "
        "(others' work on the same cores counts in the times)",
        f"Run at: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| {summary['machines']}-machine plan, wall time | {summary['wall_s']:.2f} s | |",
        f"| single machine alone, slowest of {settings.single_runs} | "
        f"{summary['single_s']:.2f} s (runs: "
        f"{', '.join(f'{s:.2f}' for s in summary['single_runs_s'])}) | |",
        f"| ratio | {summary['ratio']:.2f}x | <= {RATIO_TARGET}x "
        f"({ok[summary['ratio_ok']]}) |",
        f"| gateway peak RSS (VmHWM), {summary['machines']} machines | "
        f"{summary['peak_rss_mib']:.1f} MiB | <= {RSS_TARGET_MIB:.0f} MiB "
        f"({ok[summary['rss_ok']]}) |",
        f"| gateway peak RSS, baseline site | {summary['single_peak_rss_mib']:.1f} MiB | |",
        f"| gateway's bytecode | PYTHONOPTIMIZE={summary['gateway_python_optimize']} "
        "(2: `edge-gateway lean-bytecode`, no docstrings or asserts) | |",
        f"| result | {summary['result_state']}, {summary['machines_succeeded']}/"
        f"{summary['machines']} machines succeeded, in {summary['result_messages']} "
        "message(s) | |",
        f"| per-machine time in the {summary['machines']}-machine plan | median "
        f"{summary['machine_s_median']} s, max {summary['machine_s_max']} s | |",
        f"| CPU during the plan | gateway {summary['gateway_cpu_s']:.1f} s, "
        f"simulator {summary['simulator_cpu_s']:.1f} s | |",
        f"| Redfish requests per machine for the plan | {summary['requests_per_machine']} "
        f"({summary['machines']} machines, median), {summary['single_requests_per_machine']} "
        f"(alone), over {summary['connections_per_machine']} connections (median) | |",
        f"| requests retried after a dropped connection (1 s each) | "
        f"{summary['retries']} ({summary['machines']} machines), "
        f"{summary['single_retries']} (baseline) | |",
        "",
        "| step | alone (slowest run) | "
        f"{summary['machines']} machines: median | {summary['machines']} machines: max |",
        "|---|---|---|---|",
    ]
    for task, seconds in steps.items():
        alone = summary["single_steps_s"].get(task)
        alone_text = "-" if alone is None else f"{alone:.2f} s"
        lines.append(f"| {task} | {alone_text} | {seconds['median']:.2f} s | "
                     f"{seconds['max']:.2f} s |")
    return lines


def write_section(path: Path, machines: int, lines: list[str]) -> None:
    """Replace the generated results block of this many machines in BENCHMARKS.md; a new
    one goes after the other machine counts' blocks (or, if there is none, at the end)."""
    begin, end = BEGIN_MARK.format(machines=machines), END_MARK.format(machines=machines)
    block = "\n".join([begin, *lines, end])
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    others = list(re.finditer(re.escape(END_MARK).replace(r"\{machines\}", r"\d+"), text))
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    elif others:
        at = others[-1].end()
        text = text[:at] + f"\n\n{block}" + text[at:]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION_TITLE}\n\n{block}\n"
    path.write_text(text)


# --- the command line ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=50, help="BMCs behind the gateway")
    parser.add_argument("--latency", type=float, default=0.2,
                        help="seconds the simulator adds to every Redfish request")
    parser.add_argument("--max-parallel", type=int, default=None,
                        help="the site's max_parallel (default: --machines)")
    parser.add_argument("--min-interval", type=float, default=0.2,
                        help="the machines' min_interval: seconds between two BMC calls")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="the machines' poll_interval while waiting for power")
    parser.add_argument("--power-delay", type=float, default=1.0,
                        help="seconds the simulated hosts take to change power or reboot")
    parser.add_argument("--single-runs", type=int, default=3,
                        help="machines run alone for the baseline; the slowest counts")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for a gateway's inventory or a plan's result")
    parser.add_argument("--write", action="store_true",
                        help=f"put the results into {BENCHMARKS_MD.name}")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working directory (configs, logs, journals)")
    args = parser.parse_args(argv)
    if args.machines < 1 or args.single_runs < 1:
        parser.error("--machines and --single-runs must be at least 1")
    settings = Settings(
        machines=args.machines, latency=args.latency,
        max_parallel=args.max_parallel or args.machines, min_interval=args.min_interval,
        poll_interval=args.poll_interval, power_delay=args.power_delay,
        progress_interval=0.5, single_runs=args.single_runs, timeout=args.timeout)
    return settings, args


def benchmark(settings: Settings, directory: Path) -> tuple[SiteRun, SiteRun]:
    """The baseline site, then the site under test, against one broker and one recorder."""
    with ExitStack() as stack:
        trust = Trust.create(directory / "pki")
        broker = stack.enter_context(Mosquitto(directory / "mosquitto", tls=trust.ca.broker()))
        recorder = Recorder(broker.port, identity=trust.ca.identity(cloud_identity("operator")))
        stack.callback(recorder.close)

        def alone(machines: list[str]) -> list[Plan]:
            return [bench_plan("bench-single", f"single-{m}", [m]) for m in machines]

        def together(machines: list[str]) -> list[Plan]:
            return [bench_plan("bench-site", "site-all", machines)]

        print(f"baseline: {settings.single_runs} machines, one plan each, one at a time...",
              flush=True)
        single = run_site("bench-single", settings.single_runs, alone, broker, recorder,
                          settings, trust, directory / "single")
        print(f"site: {settings.machines} machines, one plan...", flush=True)
        site = run_site("bench-site", settings.machines, together, broker, recorder, settings,
                        trust, directory / "site")
    return single, site


def check_results(single: SiteRun, site: SiteRun) -> None:
    for run in (*single.plans, *site.plans):
        problems = failures(run.result)
        if problems:
            print(f"warning: execution {run.result.execution_id} {run.result.state}: "
                  + "; ".join(problems[:5]), file=sys.stderr)


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM (even if inherited as ignored) unwind, stopping every child;
    a second signal does not interrupt that clean-up."""
    def interrupt(signum: int, frame: Any) -> None:
        for other in (signal.SIGINT, signal.SIGTERM):
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    settings, args = parse_args(argv)
    interrupt_on_signals()
    directory = Path(tempfile.mkdtemp(prefix="bench-site-"))
    try:
        single, site = benchmark(settings, directory)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"working directory kept: {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    check_results(single, site)
    summary = summarize(settings, single, site)
    lines = report_lines(settings, summary)
    print("\n".join(lines))
    if args.write:
        write_section(BENCHMARKS_MD, settings.machines, lines)
        print(f"results written to {BENCHMARKS_MD}")
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
