"""A fleet of simulated sites in one process (or a few), each the real gateway core on
simulated BMCs.

``FleetSimulator`` builds one ``edge_gateway.agent.Gateway`` per site, each with its own MQTT
session (client id = site id, persistent, QoS 1, last will) on one shared
``MultiplexedMqtt`` loop thread, an in-memory journal and ``SimulatedDriver`` machines:

    with FleetSimulator(mqtt_port=1883, sites=10_000, plan_keys=[cloud_public_key]) as fleet:
        ...  # publish signed plans, or run a rollout from the cloud; fleet.stats()

Machines are named like the local stack's (``rf-N`` configured as Redfish, ``ipmi-N`` as
IPMI; the driver is simulated whatever the config says). Site ids are ``site-00001`` and
on, which the cloud takes for sites it has not seen (it creates a minimal record).

Threads: the sites of a process share one ``WorkerPool`` of ``workers`` threads (started
on demand, ended when idle), so an idle fleet holds a few threads, not one per site, and a
busy one at most ``workers``: a site borrows a thread while it has a plan (and up to
``max_parallel`` for its machines). Simulated BMCs answer at once but a power change reads
back after ``power_delay``, during which the machine's thread sleeps between polls: the
pool must be large enough for those sleeps, not for the CPU. Blocked threads wait in the
process's futex hash table, which Linux 6.16+ makes 16 buckets small; ``start()``
enlarges it (``enlarge_futex_hash``).

Measured with ``benchmarks/fleet_sim_probe.py`` (2 cores, 4 machines a site): ~3 ms of
CPU per plan in all (the gateway core about 2, its MQTT client most of the rest); more
than ~64 busy threads in a process cost more in GIL hand-offs than their sleeps gain.

Processes: every site of a process runs under one GIL, with its MQTT loop thread. With
``processes=K`` the sites are split over K child processes (each with its own loop, pool
and GIL; ``max_connecting`` is shared out among them) and this object only relays:
``stats()`` sums theirs, ``take_offline`` and the like go to the site's process. The
in-process views (``gateway()``, ``gateways``, ``machines``, ``transports``, ``pool``)
exist only with one process. Journals are in memory (the real SQLite journal, without a
file): a file journal would take up to three file descriptors per site.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import random
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.journal import Journal
from edge_gateway.workers import WorkerPool
from edgeplane import protocol
from edgeplane.protocol import BmcProtocol, Plan, Result
from edgeplane_dev.pki import LocalCa
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.processes import raise_open_file_limit  # noqa: F401 - re-exported
from edgeplane_dev.simulated_driver import SimulatedDriver, SimulatedMachine
from edgeplane_dev.transport_multiplex import MultiplexedMqtt, MultiplexedTransport

LOG = logging.getLogger(__name__)

SMALL_THREAD_STACK = 256 * 1024  # what the CLI and the probe give each thread (default 8 MiB)
FUTEX_HASH_SLOTS = 65536
PR_FUTEX_HASH = 78  # prctl: the process's own futex hash table (Linux 6.16 and later)
PR_FUTEX_HASH_SET_SLOTS = 1
BMC_USERNAME = "admin"
BMC_PASSWORD = "password"  # noqa: S105 - simulated BMCs take any credential


def site_ids(count: int, first: int = 1) -> list[str]:
    """``site-00001``, ``site-00002``...: valid site ids, sorted as they are numbered."""
    return [f"site-{n:05d}" for n in range(first, first + count)]


def machine_configs(count: int, poll_interval: float = 0.02) -> tuple[MachineConfig, ...]:
    """``count`` machines, the first half Redfish (``rf-N``), the rest IPMI (``ipmi-N``).

    Frozen, so every site shares one tuple. No pacing (``min_interval=0``): a simulated BMC
    needs no protection, and paced inventory calls would hold threads for nothing.
    """
    redfish = (count + 1) // 2

    def config(index: int) -> MachineConfig:
        if index < redfish:
            machine_id, kind, address = (f"rf-{index + 1}", BmcProtocol.REDFISH,
                                         f"https://10.0.0.{index + 1}")
        else:
            number = index - redfish + 1
            machine_id, kind, address = f"ipmi-{number}", BmcProtocol.IPMI, f"10.0.1.{number}"
        return MachineConfig(id=machine_id, protocol=kind,
                             credentials=BmcCredentials(address, BMC_USERNAME, BMC_PASSWORD),
                             timeout=5.0, power_timeout=30.0, poll_interval=poll_interval,
                             min_interval=0.0)

    return tuple(config(i) for i in range(count))


@dataclass(frozen=True)
class FleetStats:
    sites: int
    connected: int
    plans_received: int  # plan messages delivered to the sites (duplicates included)
    results_sent: int  # executions finished, one result each (resends not counted)
    rss_mib: float  # this process (or the sum of the fleet's processes)
    peak_rss_mib: float  # likewise: with processes, the sum of each one's peak
    threads: int

    @classmethod
    def total(cls, parts: list[FleetStats]) -> FleetStats:
        """The fleet's numbers from those of its processes: every field summed."""
        return cls(**{f.name: sum(getattr(p, f.name) for p in parts) for f in fields(cls)})

    def line(self) -> str:
        return (f"{self.connected}/{self.sites} connected, {self.plans_received} plans "
                f"received, {self.results_sent} results sent; RSS {self.rss_mib:.0f} MiB "
                f"(peak {self.peak_rss_mib:.0f}), {self.threads} threads")


class SimulatedSite(Gateway):
    """The gateway core as it is, counting the plans it receives and the results it sends."""

    plans_received = 0  # written on the MQTT loop thread only
    results_sent = 0  # written by the site's plan lane only, one plan at a time

    def handle_message(self, topic: str, payload: bytes) -> None:
        if topic == protocol.plan_topic(self.site):
            self.plans_received += 1
        super().handle_message(topic, payload)

    def run_plan(self, plan: Plan) -> Result | None:
        result = super().run_plan(plan)
        self.results_sent += 1
        return result


class FleetSimulator:
    """``sites`` gateways with ``machines_per_site`` simulated machines each, on one broker.

    ``power_delay``: each machine takes a delay drawn from this range (seconds) before a
    power change reads back. ``max_parallel``: machines a site works on at once (as the
    real config). ``max_connecting``: sessions waiting for CONNACK at once (mosquitto's
    listen backlog is 100). ``thread_stack_size``: set process-wide while the fleet runs.
    ``workers``: threads the sites of a process share. ``processes``: child processes to
    split the sites over (1: all in this process). ``plan_keys``: the public keys of the
    cloud's plan signers each site pins (``[trust] plan_keys``): a site runs only plans and
    cancels one of them signed.
    """

    def __init__(
        self,
        mqtt_port: int,
        sites: list[str] | int,
        machines_per_site: int = 4,
        *,
        host: str = LOOPBACK,
        power_delay: tuple[float, float] = (0.0, 0.05),
        max_parallel: int = SiteConfig.max_parallel,
        progress_interval: float = 1.0,
        max_connecting: int = 64,
        keepalive: int = 60,
        reconnect_delays: tuple[float, float] = (1.0, 30.0),
        thread_stack_size: int | None = None,
        seed: int = 0,
        workers: int = 64,
        processes: int = 1,
        pki: Path | None = None,
        plan_keys: Iterable[str] = (),
    ) -> None:
        self.site_ids = site_ids(sites) if isinstance(sites, int) else list(sites)
        invalid = [s for s in self.site_ids if not protocol.SITE_ID_PATTERN.match(s)]
        if invalid or len(set(self.site_ids)) != len(self.site_ids):
            raise ValueError(f"site ids must be valid and distinct: {invalid[:5]}")
        if processes < 1 or workers < 1:
            raise ValueError("a fleet needs at least one process and one worker thread")
        self.machine_configs = machine_configs(machines_per_site)
        self.plan_keys = tuple(plan_keys)
        self.processes = min(processes, max(1, len(self.site_ids)))
        self._parts: list[FleetProcess] = []
        if self.processes > 1:
            options = dict(machines_per_site=machines_per_site, host=host,
                           power_delay=power_delay, max_parallel=max_parallel,
                           progress_interval=progress_interval,
                           max_connecting=max(1, max_connecting // self.processes),
                           keepalive=keepalive, reconnect_delays=reconnect_delays,
                           thread_stack_size=thread_stack_size, workers=workers, pki=pki,
                           plan_keys=self.plan_keys)
            self._parts = [FleetProcess(mqtt_port, chunk, {**options, "seed": seed + n})
                           for n, chunk in enumerate(split(self.site_ids, self.processes))]
        self.loop = MultiplexedMqtt(max_connecting=max_connecting)
        self.pool = WorkerPool(workers, idle_timeout=10.0, name="fleet-worker")
        self.gateways: dict[str, SimulatedSite] = {}
        self.transports: dict[str, MultiplexedTransport] = {}
        self.machines: dict[str, dict[str, SimulatedMachine]] = {}
        self._mqtt = MqttSettings(host=host, port=mqtt_port, keepalive=keepalive,
                                  reconnect_min_delay=reconnect_delays[0],
                                  reconnect_max_delay=reconnect_delays[1])
        # Each site's own certificate from the CA at ``pki`` (a broker that requires TLS).
        self._ca = LocalCa(pki).ensure() if pki is not None and not self._parts else None
        self._power_delay = power_delay
        self._max_parallel = max_parallel
        self._progress_interval = progress_interval
        self._thread_stack_size = thread_stack_size
        self._previous_stack_size: int | None = None
        self._random = random.Random(seed)  # noqa: S311 - simulated delays, not secrets
        self._started = False

    # --- lifecycle -------------------------------------------------------------------

    def start(self, timeout: float | None = 120.0,
              progress: Callable[[FleetStats], None] | None = None) -> None:
        """Build and start every site; with a timeout, return once all are connected.

        Process-wide: the thread stack size (if given, until ``stop``) and, from 1,000 sites,
        a bigger futex hash table (for good; it costs 4 MiB).
        """
        if self._started:
            raise RuntimeError("the fleet simulator was started already")
        self._started = True
        if self._parts:
            self._start_processes(timeout, progress)
            return
        if self._thread_stack_size:
            self._previous_stack_size = threading.stack_size(self._thread_stack_size)
        if len(self.site_ids) >= 1000 and not enlarge_futex_hash():
            LOG.info("this kernel keeps its futex hash table: many threads slow every lock")
        try:
            self.loop.start()
            for site in self.site_ids:  # the loop staggers the connects
                gateway = self._build(site)
                self.gateways[site] = gateway
                gateway.start()
            if timeout is not None:
                self.wait_connected(timeout, progress)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every site (goodbye presence, clean disconnect), join threads, end the loop."""
        for part in self._parts:
            part.stop()
        self._wait_for_own_inventories(timeout=10)
        gateways = list(self.gateways.values())
        if gateways:
            with ThreadPoolExecutor(min(32, len(gateways)),
                                    thread_name_prefix="fleet-stop") as pool:
                list(pool.map(self._stop_site, gateways))
        self.gateways.clear()
        self.transports.clear()
        self.loop.stop()
        self.pool.shutdown()
        if self._previous_stack_size is not None:
            threading.stack_size(self._previous_stack_size)
            self._previous_stack_size = None

    def __enter__(self) -> FleetSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_connected(self, timeout: float,
                       progress: Callable[[FleetStats], None] | None = None,
                       sites: Iterable[str] | None = None) -> None:
        """Wait until every site (or those named) is connected and subscribed."""
        wanted = list(sites or self.site_ids)
        deadline = time.monotonic() + timeout
        while True:
            connected = self.connected_count(wanted)
            if progress is not None:
                progress(self.stats())
            if connected == len(wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{connected} of {len(wanted)} sites connected "
                                   f"after {timeout:.0f} s")
            time.sleep(0.2 if progress is None else 1.0)

    def connected_count(self, sites: Iterable[str] | None = None) -> int:
        """How many of the sites (all if not named) are connected and subscribed now."""
        wanted = list(self.site_ids if sites is None else sites)
        if self._parts:
            return sum(part.call("connected_count", part.mine(wanted))
                       for part in self._parts)
        return sum(self.transports[s].connected.is_set() for s in wanted)

    @property
    def pids(self) -> list[int]:
        """The processes the sites run in: this one, or the children with ``processes``."""
        return [part.pid for part in self._parts] if self._parts else [os.getpid()]

    # --- one site --------------------------------------------------------------------

    def gateway(self, site: str) -> SimulatedSite:
        if self._parts:
            raise RuntimeError("with several processes the gateways live in those processes")
        return self.gateways[site]

    def take_offline(self, site: str) -> None:
        """The site's WAN goes down: the broker sends its last will and queues its plans."""
        if not self._relay("take_offline", site):
            self.transports[site].go_offline()

    def bring_online(self, site: str) -> None:
        """The WAN is back: the site reconnects to its persistent session."""
        if not self._relay("bring_online", site):
            self.transports[site].go_online()

    def drop_connection(self, site: str) -> None:
        """A blip: the connection drops (last will) and the site reconnects by itself."""
        if not self._relay("drop_connection", site):
            self.transports[site].drop_connection()

    def _relay(self, method: str, site: str) -> bool:
        """Run ``method(site)`` in the site's process; False if the sites are in this one."""
        if not self._parts:
            return False
        owner = next((p for p in self._parts if site in p.sites), None)
        if owner is None:
            raise KeyError(site)
        owner.call(method, site)
        return True

    # --- numbers ---------------------------------------------------------------------

    def stats(self) -> FleetStats:
        if self._parts:
            return FleetStats.total([part.call("stats") for part in self._parts])
        gateways = list(self.gateways.values())
        rss, peak = process_memory_mib()
        return FleetStats(
            sites=len(self.site_ids),
            connected=sum(t.connected.is_set() for t in list(self.transports.values())),
            plans_received=sum(g.plans_received for g in gateways),
            results_sent=sum(g.results_sent for g in gateways),
            rss_mib=rss, peak_rss_mib=peak, threads=threading.active_count(),
        )

    # --- internals -------------------------------------------------------------------

    def _start_processes(self, timeout: float | None,
                         progress: Callable[[FleetStats], None] | None) -> None:
        try:
            for part in self._parts:  # they build their sites at the same time
                part.start()
            for part in self._parts:
                part.wait_started(timeout=600)
            if timeout is not None:
                self.wait_connected(timeout, progress)
        except BaseException:
            self.stop()
            raise

    def _build(self, site: str) -> SimulatedSite:
        low, high = self._power_delay
        machines = {m.id: SimulatedMachine(power_delay=self._random.uniform(low, high),
                                           serial=f"SIM-{site}-{m.id}")
                    for m in self.machine_configs}
        self.machines[site] = machines
        mqtt = self._mqtt
        if self._ca is not None:
            identity = self._ca.identity(site)
            mqtt = replace(mqtt, tls=True, ca_file=str(identity.ca_file),
                            cert_file=str(identity.cert_file),
                            key_file=str(identity.key_file))
        config = SiteConfig(site=site, journal=Path(":memory:"),
                            mqtt=mqtt, machines=self.machine_configs,
                            max_parallel=self._max_parallel,
                            progress_interval=self._progress_interval, observe_interval=0,
                            plan_keys=self.plan_keys)

        def transport(gateway: Gateway) -> MultiplexedTransport:
            made = MultiplexedTransport(self.loop, config.mqtt, site, gateway.subscriptions,
                                        gateway.will)
            self.transports[site] = made
            return made

        def driver(machine: MachineConfig) -> SimulatedDriver:
            return SimulatedDriver(machine.credentials, machines[machine.id],
                                   timeout=machine.timeout)

        return SimulatedSite(config, transport_factory=transport, journal=Journal(":memory:"),
                             driver_factory=driver, pool=self.pool)

    @staticmethod
    def _stop_site(gateway: Gateway) -> None:
        try:
            gateway.stop()
        except Exception:
            LOG.exception("site %s did not stop cleanly", gateway.site)

    def wait_for_inventories(self, timeout: float) -> bool:
        """Until every site of this process has reported its start-up inventory (the core
        does it on the pool after connecting); False if some had not within ``timeout``."""
        if self._parts:
            return all([part.call("wait_for_inventories", timeout) for part in self._parts])
        return self._wait_for_own_inventories(timeout)

    def _wait_for_own_inventories(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for gateway in self.gateways.values():
            # False at once too while the connect has not started it yet: ask again
            while not gateway.wait_for_inventory(max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)
        return True


def split(items: list[str], parts: int) -> list[list[str]]:
    """``items`` in ``parts`` consecutive chunks whose sizes differ by one at most."""
    size, extra = divmod(len(items), parts)
    bounds = [n * size + min(n, extra) for n in range(parts + 1)]
    return [items[bounds[n]:bounds[n + 1]] for n in range(parts)]


class FleetProcess:
    """Some of the fleet's sites in a child process: a ``FleetSimulator`` there, on a pipe.

    The child runs ``serve_part``: it answers calls (method name and arguments) one at a
    time, and stops its sites when told to or when the pipe closes (this process ended).
    """

    def __init__(self, mqtt_port: int, sites: list[str], options: dict[str, Any]) -> None:
        self.sites = frozenset(sites)
        self._args = (mqtt_port, sites, options, _log_levels())
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        if self._process is None or self._process.pid is None:
            raise RuntimeError("the fleet process is not started")
        return self._process.pid

    def mine(self, sites: list[str]) -> list[str]:
        return [s for s in sites if s in self.sites]

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        ours, theirs = context.Pipe()
        self._process = context.Process(target=serve_part, args=(theirs, *self._args),
                                        name="fleet-part", daemon=True)
        self._process.start()
        theirs.close()
        self._conn = ours

    def wait_started(self, timeout: float) -> None:
        if self._conn is None or not self._conn.poll(timeout):
            raise TimeoutError(f"a fleet process did not start its sites in {timeout:.0f} s")
        self._answer(self._receive(self._conn))

    def call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the fleet process is not running")
            try:
                self._conn.send((method, args))
            except OSError:  # the child is gone; _receive says how
                pass
            return self._answer(self._receive(self._conn))

    def _receive(self, conn: Connection) -> tuple[bool, Any]:
        try:
            return conn.recv()
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            return False, f"the fleet process ended (exit code {code})"

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the child's sites (cleanly), then end it; kill it if it does not end."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.send(("stop", ()))
                    conn.poll(timeout)
                except (BrokenPipeError, EOFError, OSError):
                    pass
                conn.close()
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                LOG.error("fleet process %s did not end; killing it", self._process.pid)
                self._process.kill()
                self._process.join(5)

    @staticmethod
    def _answer(reply: tuple[bool, Any]) -> Any:
        ok, value = reply
        if not ok:
            raise RuntimeError(f"fleet process: {value}")
        return value


PART_METHODS = frozenset({"stats", "connected_count", "take_offline", "bring_online",
                          "drop_connection", "wait_for_inventories"})


def serve_part(conn: Connection, mqtt_port: int, sites: list[str], options: dict[str, Any],
               log_levels: dict[str, int]) -> None:
    """A child process's life: start its sites, answer calls, stop them at the end."""
    _set_log_levels(log_levels)
    fleet = FleetSimulator(mqtt_port, sites, **options)
    try:
        try:
            fleet.start(timeout=None)
        except Exception as exc:
            conn.send((False, repr(exc)))
            return
        settle_heap()
        conn.send((True, None))
        while True:
            try:
                method, args = conn.recv()
            except EOFError:  # the parent is gone
                return
            if method == "stop":
                return
            try:
                if method not in PART_METHODS:
                    raise ValueError(f"unknown call {method}")
                answer = getattr(fleet, method)(*args)
                if method == "wait_for_inventories":  # the sites' state is in place
                    settle_heap()
                conn.send((True, answer))
            except Exception as exc:
                conn.send((False, repr(exc)))
    finally:
        fleet.stop()
        try:
            conn.send((True, None))  # stopped
        except OSError:
            pass
        conn.close()


def settle_heap() -> None:
    """Collect, then keep what the part's thousands of sites hold out of later collections
    (``gc.freeze``): a full collection walks every object of the process, and a part of
    1,500 sites stood still for 0.2-0.56 s every 3-5 s during a rollout, every site of it at
    once, which a fleet of separate boxes never does."""
    gc.collect()
    gc.freeze()


def _log_levels() -> dict[str, int]:
    """What a child needs to log like this process: the root's and the gateway's levels."""
    return {"": logging.getLogger().getEffectiveLevel(),
            "edge_gateway": logging.getLogger("edge_gateway").getEffectiveLevel()}


def _set_log_levels(levels: dict[str, int]) -> None:
    logging.basicConfig(level=levels[""], format="%(levelname)s %(name)s: %(message)s")
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def process_memory_mib() -> tuple[float, float]:
    """This process's resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: the peak only
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    values = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return int(values.get("VmRSS", 0)) / 1024, int(values.get("VmHWM", 0)) / 1024


def enlarge_futex_hash(slots: int = FUTEX_HASH_SLOTS) -> bool:
    """Give this process a futex hash table of ``slots`` buckets; False if the kernel can't.

    Linux 6.16+ gives a process a private table of 16 buckets with its second thread, and
    every thread blocked on a lock waits in one of them. Measured here when each site had a
    plan thread of its own: 25 us a hand-off with 1,000 idle threads, 113-135 us with
    10,000; 25 us with 10,000 and 65,536 buckets (4 MiB). Sites now share a pool, so few
    threads wait, but a fleet given a big pool still gains from it.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots, 0, 0) == 0
    except (OSError, AttributeError):
        return False
