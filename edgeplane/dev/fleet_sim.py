"""A fleet of simulated sites in one process, each the real gateway core on simulated BMCs.

``FleetSimulator`` builds one ``edge_gateway.agent.Gateway`` per site, each with its own MQTT
session (client id = site id, persistent, QoS 1, last will) on one shared
``MultiplexedMqtt`` loop thread, an in-memory journal and ``SimulatedDriver`` machines:

    with FleetSimulator(mqtt_port=1883, sites=10_000) as fleet:
        ...  # publish plans, or run a rollout from the cloud; fleet.stats()

Machines are named like the local stack's (``rf-N`` configured as Redfish, ``ipmi-N`` as
IPMI; the driver is simulated whatever the config says). Site ids are ``site-00001`` and
on, which the cloud takes for sites it has not seen (it creates a minimal record).

Limits (measured with ``benchmarks/fleet_sim_probe.py``, 2 cores): the core starts a plan
worker thread per site, idle until a plan comes, and per plan a pool of up to
``max_parallel`` threads, and again per observation. Three things follow. Every blocked
thread waits in the process's futex hash table, which Linux 6.16+ makes 16 buckets small;
``start()`` enlarges it (``enlarge_futex_hash``), or every lock hand-off slows down with
the number of sites. Each thread takes 3 memory maps, so ``vm.max_map_count`` (65,530)
caps a process at ~21,800 threads: 10,000 sites with a plan each peak at ~15,000. And all
of it runs under one GIL: ~3-8 ms of CPU per plan, so 10,000 plans at once take about a
minute here. Journals are in memory: a file journal would take up to three file
descriptors per site.
"""

from __future__ import annotations

import ctypes
import logging
import random
import re
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.agent import Gateway
from edge_gateway.config import MachineConfig, MqttSettings, SiteConfig
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.drivers.simulated import SimulatedDriver, SimulatedMachine
from edge_gateway.journal import Journal
from edge_gateway.transport_multiplex import MultiplexedMqtt, MultiplexedTransport
from edge_gateway.workers import WorkerPool
from edgeplane import protocol
from edgeplane.dev.ports import LOOPBACK
from edgeplane.dev.processes import raise_open_file_limit  # noqa: F401 - re-exported
from edgeplane.protocol import BmcProtocol, Plan, Result

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
    rss_mib: float  # this process
    peak_rss_mib: float
    threads: int

    def line(self) -> str:
        return (f"{self.connected}/{self.sites} connected, {self.plans_received} plans "
                f"received, {self.results_sent} results sent; RSS {self.rss_mib:.0f} MiB "
                f"(peak {self.peak_rss_mib:.0f}), {self.threads} threads")


class SimulatedSite(Gateway):
    """The gateway core as it is, counting the plans it receives and the results it sends."""

    plans_received = 0  # written on the MQTT loop thread only
    results_sent = 0  # written on the site's plan worker only

    def handle_message(self, topic: str, payload: bytes) -> None:
        if topic == protocol.plan_topic(self.site):
            self.plans_received += 1
        super().handle_message(topic, payload)

    def run_plan(self, plan: Plan) -> Result:
        result = super().run_plan(plan)
        self.results_sent += 1
        return result


class FleetSimulator:
    """``sites`` gateways with ``machines_per_site`` simulated machines each, on one broker.

    ``power_delay``: each machine takes a delay drawn from this range (seconds) before a
    power change reads back. ``max_parallel``: machines a site works on at once (as the
    real config). ``max_connecting``: sessions waiting for CONNACK at once (mosquitto's
    listen backlog is 100). ``thread_stack_size``: set process-wide while the fleet runs.
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
        workers: int = 256,
    ) -> None:
        self.site_ids = site_ids(sites) if isinstance(sites, int) else list(sites)
        invalid = [s for s in self.site_ids if not protocol.SITE_ID_PATTERN.match(s)]
        if invalid or len(set(self.site_ids)) != len(self.site_ids):
            raise ValueError(f"site ids must be valid and distinct: {invalid[:5]}")
        self.machine_configs = machine_configs(machines_per_site)
        self.loop = MultiplexedMqtt(max_connecting=max_connecting)
        self.pool = WorkerPool(workers, idle_timeout=10.0, name="fleet-worker")
        self.gateways: dict[str, SimulatedSite] = {}
        self.transports: dict[str, MultiplexedTransport] = {}
        self.machines: dict[str, dict[str, SimulatedMachine]] = {}
        self._mqtt = MqttSettings(host=host, port=mqtt_port, keepalive=keepalive,
                                  reconnect_min_delay=reconnect_delays[0],
                                  reconnect_max_delay=reconnect_delays[1])
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
        self._wait_for_inventories(timeout=10)
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
        transports = [self.transports[s] for s in (sites or self.site_ids)]
        deadline = time.monotonic() + timeout
        while True:
            connected = sum(t.connected.is_set() for t in transports)
            if progress is not None:
                progress(self.stats())
            if connected == len(transports):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{connected} of {len(transports)} sites connected "
                                   f"after {timeout:.0f} s")
            time.sleep(0.2 if progress is None else 1.0)

    # --- one site --------------------------------------------------------------------

    def gateway(self, site: str) -> SimulatedSite:
        return self.gateways[site]

    def take_offline(self, site: str) -> None:
        """The site's WAN goes down: the broker sends its last will and queues its plans."""
        self.transports[site].go_offline()

    def bring_online(self, site: str) -> None:
        """The WAN is back: the site reconnects to its persistent session."""
        self.transports[site].go_online()

    def drop_connection(self, site: str) -> None:
        """A blip: the connection drops (last will) and the site reconnects by itself."""
        self.transports[site].drop_connection()

    # --- numbers ---------------------------------------------------------------------

    def stats(self) -> FleetStats:
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

    def _build(self, site: str) -> SimulatedSite:
        low, high = self._power_delay
        machines = {m.id: SimulatedMachine(power_delay=self._random.uniform(low, high),
                                           serial=f"SIM-{site}-{m.id}")
                    for m in self.machine_configs}
        self.machines[site] = machines
        config = SiteConfig(site=site, journal=Path(":memory:"),
                            mqtt=self._mqtt, machines=self.machine_configs,
                            max_parallel=self._max_parallel,
                            progress_interval=self._progress_interval, observe_interval=0)

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

    def _wait_for_inventories(self, timeout: float) -> None:
        """The core reports inventory on the pool after connecting; let those end first."""
        deadline = time.monotonic() + timeout
        for gateway in self.gateways.values():
            gateway.wait_for_inventory(max(0.0, deadline - time.monotonic()))


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
    every thread blocked on a lock waits in one of them: with a plan worker per site idle,
    each lock hand-off walks ~600 waiters. Measured here: 25 us a hand-off with 1,000 idle
    threads, 113-135 us with 10,000; 25 us with 10,000 and 65,536 buckets (4 MiB).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, slots, 0, 0) == 0
    except (OSError, AttributeError):
        return False
