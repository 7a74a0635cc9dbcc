"""The whole of Edgeplane on one machine, with real parts, on 127.0.0.1 and free ports.

``up()`` starts, in this order: the store (dynalite: DynamoDB's API on LevelDB, tables
created if missing), moto in server mode (EventBridge), a mosquitto of our own, the Chalice
app (``chalice local``), the ingest bridge (plays the IoT rule), the ticker (plays the
engine's schedule), and for each site its emulated BMCs (one sushy-tools emulator holding
the site's ``rf-N`` machines, a Redfish mockup simulator process serving the ``srv-N``
machines, one port each — DMTF's public-rackmount1 with BIOS, firmware, media, logs and a
simulated OS install; machines with options of their own (``SitePlan.server_args``) in a
process of their own —, one IPMI simulator per ``ipmi-N`` machine) and a real
``edge-gateway`` process under its supervisor (``edge-gateway supervise``, as systemd runs
it on a site box; field upgrades' wheels and installer images come from the stack's
artifact server, paced to ``wan_bps`` if given).

Each gateway has a site artifact cache (``[cache]``: its LAN server on 127.0.0.1, a free
port, under ``sites/<site>/cache``) and provisions machines (``[provision]``: a pretend k3s
server URL, a join token generated once into ``sites/<site>/k3s.token``, mode 0600, and an
``authorized_keys`` with a generated key), so blueprint ``k3s-node`` runs on its ``srv-N``
machines (docs/provisioning.md).
Sites are registered through the HTTPS API; their machines arrive through the gateways'
inventory reports. ``up()`` returns once every site is online with its machines known.

The broker behaves like AWS IoT Core: TLS only, and every client proves who it is with a
certificate from the stack's own CA (``pki/``, see ``edgeplane_dev.pki``): each site with
its own (in ``sites/<site>/tls/``), the cloud's parts with theirs (``cloud.ingest`` for the
bridge's subscription; ``cloud.api``, ``cloud.ticker`` and ``cloud.bridge`` for what each
process publishes). The broker's ACL keeps each to its own topics.

Every process runs in its own process group and is listed in ``stack.json`` in the stack's
directory, so ``down()`` (also from another process: ``edgeplane dev down``) stops all of it.

The fleet outlives the processes: the store's data (``store/``), the broker's persistence
(``mosquitto/``: sessions and their queued messages), the bridge's spool (``bridge/``:
reports taken while the store did not answer) and the gateways' journals stay in the
stack's directory, so the next ``up()`` finds the sites, machines, definitions and rollouts
where they were. ``fresh=True`` starts empty; ``down(purge=True)`` deletes the directory.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_cli.config import Context
from edgeplane_cli.private_files import private_dir, write_private
from edgeplane_dev.pki import Identity, LocalCa, cloud_identity
from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp
from edgeplane_dev.processes import is_running, raise_open_file_limit, spawn, stop_group
from edgeplane_dev.store import Store, StoreError

LOG = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BMC_USERNAME = "admin"
BMC_PASSWORD = "password"  # noqa: S105 - the emulators' well-known demo credential
ADMIN = "admin"  # the stack's API principal; its token is in stack.json (0600)
# The bridge's ingest processes (each a share of the sites), as Lambdas run side by side.
INGEST_PROCESSES = 2  # at most mosquitto.INGEST_PROCESS_IDENTITIES: each sends plans as its own
TIMEZONES = ("Europe/Berlin", "America/Chicago", "Asia/Tokyo", "Australia/Sydney",
             "America/Sao_Paulo")
# How long a simulated OS install takes once the installer has its seed (seconds).
INSTALL_SECONDS = 3.0
CACHE_MAX_SIZE = "8GiB"


class StackError(RuntimeError):
    pass


@dataclass
class SitePlan:
    """One emulated site: its id and the machines behind its gateway."""

    site_id: str
    timezone: str
    redfish: list[str]  # on sushy-tools' emulator (power, boot, media)
    ipmi: list[str]  # on the IPMI simulator
    servers: list[str] = field(default_factory=list)  # on the Redfish mockup simulator
    tags: list[str] = field(default_factory=list)
    # Simulator options of single servers (``python -m edgeplane_dev.redfish_sim`` flags,
    # e.g. ``["--install-hangs"]``); servers with the same options share a process.
    server_args: dict[str, list[str]] = field(default_factory=dict)

    @property
    def machine_count(self) -> int:
        return len(self.redfish) + len(self.ipmi) + len(self.servers)


@dataclass
class StackState:
    directory: str
    api_url: str
    token: str
    mqtt_port: int
    moto_port: int  # EventBridge
    sites: list[dict[str, Any]]
    processes: dict[str, int] = field(default_factory=dict)
    store_port: int = 0  # DynamoDB
    counter_port: int = 0  # botocore's request reports (UDP), when counting
    artifacts_port: int = 0  # the artifact server (field upgrades' wheels, installers)

    @property
    def context(self) -> Context:
        return Context(self.api_url, self.token)

    @property
    def console_url(self) -> str:
        """The web console, served by the API (chalicelib/console)."""
        return f"{self.api_url}/console"

    def identity(self, name: str) -> Identity:
        """A certificate for a client of the stack's broker: a site id, or
        ``cloud.operator`` for tools that send plans and read reports."""
        return local_ca(Path(self.directory)).identity(name)


def plan_sites(count: int, redfish_per_site: int = 1, ipmi_per_site: int = 1,
               servers_per_site: int = 1) -> list[SitePlan]:
    return [
        SitePlan(
            site_id=f"site-{n:03d}",
            timezone=TIMEZONES[(n - 1) % len(TIMEZONES)],
            redfish=[f"rf-{i}" for i in range(1, redfish_per_site + 1)],
            ipmi=[f"ipmi-{i}" for i in range(1, ipmi_per_site + 1)],
            servers=[f"srv-{i}" for i in range(1, servers_per_site + 1)],
            tags=["dev", "even" if n % 2 == 0 else "odd"],
        )
        for n in range(1, count + 1)
    ]


def state_file(directory: Path) -> Path:
    return directory / "stack.json"


def store_dir(directory: Path) -> Path:
    """Where the stack's store keeps its tables."""
    return directory / "store"


def pki_dir(directory: Path) -> Path:
    """Where the stack's CA keeps its key and the identities it issued."""
    return directory / "pki"


def local_ca(directory: Path) -> LocalCa:
    """The stack's CA (created on first use): identities for clients of its broker."""
    return LocalCa(pki_dir(directory)).ensure()


def plan_key_file(directory: Path) -> Path:
    """The key the stack's cloud signs plans and cancels with (``chalicelib.signing``)."""
    return directory / "keys" / "plan-signing.pem"


def pinned_keys(directory: Path) -> list[str]:
    """What a gateway of the stack pins (``[trust] plan_keys``): its cloud's public key."""
    from chalicelib.signing import public_key_of

    return [public_key_of(plan_key_file(directory))]


def bridge_spool(directory: Path) -> Path:
    """Where the bridge keeps reports while the store does not answer (and dead letters)."""
    return directory / "bridge" / "spool.sqlite"


def artifacts_dir(directory: Path) -> Path:
    """What the stack's artifact server serves (``edgeplane_dev.artifacts``)."""
    return directory / "artifacts"


def gateway_root(directory: Path, site_id: str) -> Path:
    """A site's gateway versions (``edge_gateway.upgrade.layout``), as ``/var/lib/edge-gateway``
    on a site box."""
    return directory / "sites" / site_id / "gateway"


def site_cache_dir(directory: Path, site_id: str) -> Path:
    """Where a site's gateway keeps its artifact cache."""
    return directory / "sites" / site_id / "cache"


def request_counts_file(directory: Path) -> Path:
    """Where a counting stack's request counter writes its sums (``request_counter``)."""
    return directory / "requests.json"


def load_state(directory: Path) -> StackState | None:
    try:
        return StackState(**json.loads(state_file(directory).read_text()))
    except FileNotFoundError:
        return None


class LocalStack:
    def __init__(self, directory: Path, sites: list[SitePlan],
                 ready_timeout: float = 120.0, *, fresh: bool = False,
                 count_requests: bool = False, wan_bps: float | None = None) -> None:
        self.directory = directory
        self.sites = sites
        self.ready_timeout = ready_timeout
        self.fresh = fresh
        self.count_requests = count_requests
        self.wan_bps = wan_bps  # the artifact server's pace (a site's WAN link); None: none
        self.state: StackState | None = None
        self.store: Store | None = None
        self.resumed = False  # up() found the data of an earlier run
        self.ca = LocalCa(pki_dir(directory))

    # --- lifecycle -------------------------------------------------------------------

    def up(self) -> StackState:
        existing = load_state(self.directory)
        if existing and any(is_running(pid) for pid in existing.processes.values()):
            raise StackError(f"a local stack is already running from {self.directory}; "
                             "run `edgeplane dev down` first")
        if self.fresh:
            self.purge()
        self.resumed = store_dir(self.directory).exists()
        # What one run wrote goes; the fleet's data (store, broker, journals) stays.
        shutil.rmtree(self.directory / "logs", ignore_errors=True)
        private_dir(self.directory)
        self.ca.ensure()
        key = plan_key_file(self.directory)
        if not key.exists():  # made once: the fleet's gateways pin it, and outlive this run
            from chalicelib.signing import write_new_key

            write_new_key(private_dir(key.parent) / key.name)
        self.state = StackState(
            directory=str(self.directory), api_url=f"http://{LOOPBACK}:{free_port()}",
            token="", mqtt_port=free_port(), moto_port=free_port(),  # token: _create_tables
            sites=[asdict(s) for s in self.sites], store_port=free_port(),
            counter_port=free_port(socket.SOCK_DGRAM) if self.count_requests else 0,
            artifacts_port=free_port(),
        )
        try:
            self._start_cloud()
            for site in self.sites:
                self._start_site(site)
            self._wait_until_sites_ready()
        except BaseException:
            self.down()
            raise
        return self.state

    def down(self, purge: bool = False) -> None:
        """Stop every process; with ``purge``, delete the stack's directory (its data too)."""
        state = self.state or load_state(self.directory)
        if state is not None:
            # Gateways first (they say goodbye through the broker), the broker and AWS last.
            for name, pid in reversed(list(state.processes.items())):
                LOG.debug("stopping %s (pid %s)", name, pid)
                stop_group(pid)
            state.processes.clear()
            if not purge:
                self._save(state)
        if self.store is not None:
            self.store.stop()  # reaps it (its pid was in the state too)
        if purge:
            self.purge()

    def purge(self) -> None:
        """Delete the stack's directory: the store's tables, the broker's queues, the logs."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop_store(self, crash: bool = False) -> None:
        """Stop the store (with ``crash``, SIGKILL: as a crash would); its data stays."""
        if crash:
            self._running_store.kill()
        else:
            self._running_store.stop()

    def start_store(self) -> None:
        """Start the store again on its port and data; the cloud's clients reconnect."""
        store = self._running_store
        store.start()
        self._state.processes["store"] = store.pid
        self._save(self._state)

    def stop_broker(self) -> None:
        """Stop the broker; its sessions and queued messages stay in its persistence."""
        stop_group(self._state.processes.pop("mosquitto"))
        self._save(self._state)

    def start_broker(self) -> None:
        """Start the broker again on its port, its config and persistence; clients
        reconnect."""
        from edgeplane_dev.mosquitto import mosquitto_binary

        config = self.directory / "mosquitto" / "mosquitto.conf"
        self._spawn("mosquitto", [mosquitto_binary(), "-c", str(config)])
        wait_for_tcp(self._state.mqtt_port, timeout=10)

    def publish_artifact(self, path: Path) -> tuple[str, str]:
        """Serve a file (a gateway wheel) from the stack's artifact server: its URL and
        SHA-256, as a ``gateway.upgrade`` step takes them."""
        from edgeplane_dev.artifacts import publish

        return publish(path, artifacts_dir(self.directory), self._state.artifacts_port)

    def publish_installer(self, size: int, name: str = "installer.iso") -> tuple[str, str, int]:
        """A generated installer image of ``size`` bytes on the artifact server: its URL,
        SHA-256 and size, as a ``media.insert`` step from the site cache takes them."""
        from edgeplane_dev.artifacts import make_installer

        path = make_installer(artifacts_dir(self.directory), size, name)
        url, sha256 = self.publish_artifact(path)
        return url, sha256, size

    def artifact_stats(self) -> dict[str, Any]:
        """What the artifact server served: ``requests`` ([method, path, range], ...) and
        ``body_bytes``."""
        import urllib.request

        url = f"http://{LOOPBACK}:{self._state.artifacts_port}/_stats"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - loopback
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def request_counts(self) -> dict[str, Any]:
        """The requests the cloud's processes sent so far, by service and operation
        (a stack made with ``count_requests=True``)."""
        from edgeplane_dev.request_counter import read_counts

        return read_counts(request_counts_file(self.directory))

    def __enter__(self) -> StackState:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- parts -----------------------------------------------------------------------

    def _cloud_env(self) -> dict[str, str]:
        state = self._state
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto's fixed credential
            "AWS_DEFAULT_REGION": "us-east-1",
            "EDGEPLANE_DYNAMODB_ENDPOINT": f"http://{LOOPBACK}:{state.store_port}",
            "EDGEPLANE_EVENTS_ENDPOINT": f"http://{LOOPBACK}:{state.moto_port}",
            "EDGEPLANE_TABLE_PREFIX": "edgeplane-dev-",
            "EDGEPLANE_PUBLISHER": f"mqtts://{LOOPBACK}:{state.mqtt_port}",
            "EDGEPLANE_PLAN_SIGNING_KEY": str(plan_key_file(self.directory)),
        }
        if state.counter_port:
            from edgeplane_dev.request_counter import monitoring_env

            env.update(monitoring_env(state.counter_port))
        return env

    @property
    def _state(self) -> StackState:
        if self.state is None:
            raise StackError("the stack is not up")
        return self.state

    @property
    def _running_store(self) -> Store:
        if self.store is None:
            raise StackError("the stack's store was not started by this process")
        return self.store

    def _cloud_part_env(self, part: str) -> dict[str, str]:
        """The cloud's environment, with this part's identity on the broker."""
        return {**self._cloud_env(), **self.ca.identity(cloud_identity(part)).env()}

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> None:
        process = spawn(args, self.directory / "logs" / f"{name}.log", env=env, cwd=cwd)
        self._state.processes[name] = process.pid
        self._save(self._state)

    def _save(self, state: StackState) -> None:
        # The state holds the API token.
        write_private(state_file(Path(state.directory)), json.dumps(asdict(state), indent=2))

    def _start_cloud(self) -> None:
        from edgeplane_dev.mosquitto import ingest_process_part, mosquitto_binary, write_config

        state = self._state
        if state.counter_port:
            self._spawn("counter", [sys.executable, "-m", "edgeplane_dev.request_counter",
                                    "--port", str(state.counter_port), "--output",
                                    str(request_counts_file(self.directory))])
        self.store = Store(store_dir(self.directory), state.store_port,
                           log=self.directory / "logs" / "store.log")
        try:
            self.store.start()
        except StoreError as exc:  # not installed, or it would not start: say why, briefly
            raise StackError(str(exc)) from None
        state.processes["store"] = self.store.pid
        self._save(state)
        self._spawn("moto", [sys.executable, "-m", "edgeplane_dev.moto_server", "-H", LOOPBACK,
                             "-p", str(state.moto_port)])
        config = write_config(self.directory / "mosquitto", state.mqtt_port,
                              tls=self.ca.broker())
        raise_open_file_limit()  # the broker inherits it: one descriptor per site
        self._spawn("mosquitto", [mosquitto_binary(), "-c", str(config)])
        self._create_tables()
        wait_for_tcp(state.moto_port, timeout=30)
        wait_for_tcp(state.mqtt_port, timeout=10)
        api_port = state.api_url.rsplit(":", 1)[1]
        self._spawn("api", [str(BIN / "chalice"), "local", "--host", LOOPBACK, "--port",
                            api_port, "--no-autoreload"], env=self._cloud_part_env("api"),
                    cwd=PROJECT_ROOT)
        ingest = self.ca.identity(cloud_identity("ingest"))
        senders = [self.ca.identity(cloud_identity(ingest_process_part(n)))
                   for n in range(INGEST_PROCESSES)]
        bridge_log_start = self._log_size("bridge")
        self._spawn("bridge", [sys.executable, "-m", "edgeplane_dev.bridge", "--port",
                               str(state.mqtt_port), "--ca-file", str(ingest.ca_file),
                               "--cert-file", str(ingest.cert_file),
                               "--key-file", str(ingest.key_file),
                               "--spool", str(bridge_spool(self.directory)),
                               "--processes", str(INGEST_PROCESSES),
                               *[argument for sender in senders for argument in (
                                   "--process-identity", str(sender.cert_file),
                                   str(sender.key_file))]],
                    env=self._cloud_part_env("bridge"))
        self._spawn("ticker", [sys.executable, "-m", "edgeplane_dev.ticker", "--interval",
                               "5"], env=self._cloud_part_env("ticker"))
        self._spawn("artifacts", [sys.executable, "-m", "edgeplane_dev.artifacts", "--port",
                                  str(state.artifacts_port), "--directory",
                                  str(artifacts_dir(self.directory)),
                                  *(["--rate", str(self.wan_bps)] if self.wan_bps else [])])
        wait_for_tcp(int(api_port), timeout=30)
        # Until the bridge's subscription is in place, what a site reports reaches no one
        # (the IoT rule of AWS is always there): a site that starts at once would lose its
        # first inventory.
        from edgeplane_dev.bridge import SUBSCRIBED

        self._wait_for_log("bridge", SUBSCRIBED, bridge_log_start, timeout=30)

    def _log_size(self, name: str) -> int:
        log = self.directory / "logs" / f"{name}.log"
        return log.stat().st_size if log.exists() else 0

    def _wait_for_log(self, name: str, text: str, start: int, timeout: float) -> None:
        """Until ``text`` appears in the process's log past ``start`` (the log is kept
        across runs of the stack)."""
        log = self.directory / "logs" / f"{name}.log"
        deadline = time.monotonic() + timeout
        while text.encode() not in (log.read_bytes()[start:] if log.exists() else b""):
            self._check_processes()
            if time.monotonic() > deadline:
                raise StackError(f"{name} did not say {text!r} within {timeout:.0f} s; "
                                 f"see {log}")
            time.sleep(0.05)

    def _create_tables(self) -> None:
        saved = {k: os.environ.get(k) for k in self._cloud_env()}
        os.environ.update(self._cloud_env())
        try:
            from chalicelib import models

            models.configure(os.environ["EDGEPLANE_DYNAMODB_ENDPOINT"],
                             os.environ["EDGEPLANE_TABLE_PREFIX"], "us-east-1")
            models.create_tables()
            self._state.token = issue_admin_token()  # before the API serves anyone
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _start_site(self, site: SitePlan) -> None:
        state = self._state
        client = ApiClient(state.context)
        client.put(f"/sites/{site.site_id}", {"name": f"Dev site {site.site_id}",
                                              "region": "local", "tags": site.tags,
                                              "timezone": site.timezone})
        site_dir = private_dir(self.directory / "sites" / site.site_id)
        machines: list[dict[str, Any]] = []
        if site.redfish:
            machines += self._start_redfish(site, site_dir)
        machines += self._start_servers(site)
        for machine_id in site.ipmi:
            port = free_port(socket.SOCK_DGRAM)  # IPMI is UDP
            self._spawn(f"{site.site_id}-{machine_id}", [
                sys.executable, "-m", "edgeplane_dev.ipmi_sim", "--port", str(port),
                "--username", BMC_USERNAME, "--password", BMC_PASSWORD])
            machines.append({"id": machine_id, "protocol": "ipmi",
                             "address": f"{LOOPBACK}:{port}", "class": "edge-1u"})
        identity = self.ca.identity(site.site_id, site_dir / "tls")
        config = write_private(site_dir / "gateway.toml",  # it holds the BMC passwords
                               gateway_config(site.site_id, state.mqtt_port, machines,
                                              identity, pinned_keys(self.directory))
                               + site_tables(site.site_id, site_dir, free_port()))
        # As systemd runs it on a site box: under its supervisor, which restarts it and
        # tries the versions field upgrades install (docs/upgrades.md).
        root = adopt_this_tree(gateway_root(self.directory, site.site_id))
        self._spawn(f"{site.site_id}-gateway", [str(BIN / "edge-gateway"), "supervise",
                                                "--root", str(root), "--config", str(config)])

    def _start_servers(self, site: SitePlan) -> list[dict[str, Any]]:
        """The site's ``srv-N`` machines: one simulator process for those with the same
        options, one port (one BMC) each."""
        groups: dict[tuple[str, ...], list[str]] = {}
        for machine_id in site.servers:
            groups.setdefault(tuple(site.server_args.get(machine_id, ())), []).append(
                machine_id)
        machines = []
        for args, machine_ids in groups.items():
            ports = [free_port() for _ in machine_ids]
            self._spawn(f"{site.site_id}-{'+'.join(machine_ids)}", [
                sys.executable, "-m", "edgeplane_dev.redfish_sim",
                *[arg for port in ports for arg in ("--port", str(port))],
                "--username", BMC_USERNAME, "--password", BMC_PASSWORD,
                "--power-delay", "1.0", "--install-seconds", str(INSTALL_SECONDS), *args])
            for machine_id, port in zip(machine_ids, ports, strict=True):
                wait_for_tcp(port, timeout=20)
                machines.append({"id": machine_id, "protocol": "redfish",
                                 "address": f"http://{LOOPBACK}:{port}",
                                 "class": "rackmount-3500"})
        return sorted(machines, key=lambda machine: site.servers.index(machine["id"]))

    def _start_redfish(self, site: SitePlan, site_dir: Path) -> list[dict[str, Any]]:
        from edgeplane_dev.sushy_emulator import FakeSystem, SushyEmulator

        # The emulator's systems are new on each run (the BMCs restarted); the site's
        # inventory tells the cloud.
        shutil.rmtree(site_dir / "redfish", ignore_errors=True)
        emulator = SushyEmulator([FakeSystem(name=f"{site.site_id}-{m}") for m in site.redfish],
                                 state_dir=site_dir / "redfish")
        emulator.start()
        assert emulator.process is not None
        self._state.processes[f"{site.site_id}-redfish"] = emulator.process.pid
        self._save(self._state)
        return [{"id": m, "protocol": "redfish", "address": emulator.url, "system_id": sid}
                for m, sid in zip(site.redfish, emulator.system_ids, strict=True)]

    def _wait_until_sites_ready(self) -> None:
        client = ApiClient(self._state.context, timeout=5)
        deadline = time.monotonic() + self.ready_timeout
        waiting = {s.site_id: s.machine_count for s in self.sites}
        while waiting:
            for site_id, machine_count in list(waiting.items()):
                try:
                    data = client.get(f"/sites/{site_id}")
                except ApiError:
                    continue
                if data["site"].get("online") and len(data["machines"]) >= machine_count:
                    del waiting[site_id]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"sites not ready after {self.ready_timeout:.0f} s: "
                    f"{', '.join(sorted(waiting))}; see the logs in {self.directory / 'logs'}")
            self._check_processes()
            time.sleep(0.3)

    def _check_processes(self) -> None:
        for name, pid in self._state.processes.items():
            if not is_running(pid):
                log = self.directory / "logs" / f"{name}.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise StackError(f"{name} exited during start-up; its log ends:\n{tail}")


def adopt_this_tree(root: Path) -> Path:
    """A site's versions folder whose current version is this tree's install: each run of
    the stack runs the code of the tree, whatever an upgrade of an earlier run installed.
    What an earlier run owes (a trial's outcome not yet reported) stays."""
    from edge_gateway import __version__
    from edge_gateway.upgrade.layout import Layout

    layout = Layout(root)
    current = layout.link("current")
    if current.is_symlink() and current.resolve() != Path(sys.prefix).resolve():
        for name in ("current", "previous"):
            layout.link(name).unlink(missing_ok=True)
        shutil.rmtree(layout.versions, ignore_errors=True)
    layout.adopt(Path(sys.prefix), __version__)
    return layout.root


def issue_admin_token() -> str:
    """The stack's principal ``admin`` (made if missing) with a new token: what the CLI's
    ``local`` context and the tests call the API with. Each start issues a new one (the
    last is in the last run's stack.json only), straight into the store, as a deployment's
    first admin is made."""
    from chalicelib.access import principals
    from chalicelib.access.roles import Role

    return principals.create(ADMIN, Role.ADMIN, "edgeplane dev", replace=True).token


def site_tables(site_id: str, site_dir: Path, cache_port: int) -> str:
    """The ``[cache]`` and ``[provision]`` tables of a site's config
    (``edge_gateway.cache.settings``, ``edge_gateway.provision.settings``): the cache's LAN
    server on loopback, and join secrets made once for the site (a pretend k3s server)."""
    token = site_dir / "k3s.token"
    if not token.exists():
        write_private(token, f"K10{secrets.token_hex(24)}::server:{secrets.token_hex(16)}\n")
    keys = site_dir / "authorized_keys"
    if not keys.exists():
        keys.write_text(f"{ssh_public_key()} ops@{site_id}\n")
    return "\n".join([
        "",
        "[cache]",
        f"directory = {json.dumps(str(site_dir / 'cache'))}",
        f"max_size = {json.dumps(CACHE_MAX_SIZE)}",
        f"listen = {json.dumps(LOOPBACK)}",
        f"port = {cache_port}",
        "",
        "[provision]",
        f"k3s_url = {json.dumps(f'https://k3s.{site_id}.example.net:6443')}",
        f"k3s_token_file = {json.dumps(token.name)}",
        f"ssh_authorized_keys_file = {json.dumps(keys.name)}",
    ]) + "\n"


def ssh_public_key() -> str:
    """A new Ed25519 public key, in OpenSSH's one-line form (its private half is not
    kept: the nodes of the stack are never logged in to)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode()


def gateway_config(site_id: str, mqtt_port: int, machines: list[dict[str, Any]],
                   identity: Identity | None = None, plan_keys: Sequence[str] = ()) -> str:
    """The TOML a real site would have: broker (TLS with the site's ``identity``), journal,
    the cloud's keys it believes plans signed with (``plan_keys``), and its machines with
    credentials."""
    lines = [
        f"site = {json.dumps(site_id)}",
        'journal = "journal.db"',
        "progress_interval = 0.5",
        "",
        "[mqtt]",
        f"host = {json.dumps(LOOPBACK)}",
        f"port = {mqtt_port}",
        "reconnect_max_delay = 5",
    ]
    if identity is not None:
        lines += ["tls = true", f"ca_file = {json.dumps(str(identity.ca_file))}",
                  f"cert_file = {json.dumps(str(identity.cert_file))}",
                  f"key_file = {json.dumps(str(identity.key_file))}"]
    if plan_keys:
        lines += ["", "[trust]", f"plan_keys = {json.dumps(list(plan_keys))}"]
    # Machine classes (examples/fleet/machine-classes.yaml): timeouts per kind of server.
    classes = sorted({machine["class"] for machine in machines if machine.get("class")})
    for name in classes:
        lines += ["", f"[classes.{json.dumps(name)}]",
                  "power_timeout = 90" if name == "rackmount-3500" else "power_timeout = 60"]
    for machine in machines:
        lines += [
            "",
            "[[machines]]",
            f"id = {json.dumps(machine['id'])}",
            f"protocol = {json.dumps(machine['protocol'])}",
            f"address = {json.dumps(machine['address'])}",
            f"username = {json.dumps(BMC_USERNAME)}",
            f"password = {json.dumps(BMC_PASSWORD)}",
            "poll_interval = 0.5",
        ]
        if not machine.get("class"):
            lines.append("power_timeout = 60")
        if machine.get("system_id"):
            lines.append(f"system_id = {json.dumps(machine['system_id'])}")
        if machine.get("class"):
            lines.append(f"class = {json.dumps(machine['class'])}")
    return "\n".join(lines) + "\n"
