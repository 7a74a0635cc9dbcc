"""What the chaos suite (``tests/test_chaos.py``) is made of.

- ``ChaosSite``: a site of the local stack whose gateway the test itself runs as a real
  ``edge-gateway run`` process (so that it can SIGKILL it and start it again on the same
  journal), its machines simulated Redfish BMCs that record every request;
- ``bmc_actions``: the actions each BMC received (``GET /_sim/requests``): resets and
  BIOS writes, the acts a repeated step would show twice;
- ``WanLink``: a TCP relay on loopback between a gateway and the broker, which the test
  cuts (nothing passes, new connections hang) and restores (connections from before are
  gone, as a NAT that forgot them would have them);
- ``FaultReport``: per fault, the counts the issue asks for (BMC actions, results stored,
  rollouts finished), written as JSON in the test's folder and logged.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_cli.private_files import private_dir, write_private
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.processes import spawn, stop
from edgeplane_dev.stack import LocalStack, adopt_this_tree, gateway_config, pinned_keys
from tests.support import wait_until

LOG = logging.getLogger(__name__)

BIN = Path(sys.executable).parent
ROLLOUT_ENDS = frozenset({"succeeded", "failed", "aborted", "canceled"})
RESET = "ComputerSystem.Reset"


# --- what the BMCs received ------------------------------------------------------------------


def bmc_actions(url: str) -> Counter[str]:
    """The acts a simulated Redfish BMC received: ``reset`` (a ComputerSystem.Reset of any
    kind: power cycle, on, off) and ``bios-write`` (a PATCH of its BIOS settings)."""
    received = requests.get(f"{url}/_sim/requests", timeout=10)
    received.raise_for_status()
    acts: Counter[str] = Counter()
    for method, path, _body in received.json():
        if method == "POST" and path.endswith(RESET):
            acts["reset"] += 1
        elif method == "PATCH" and "/Bios" in path:
            acts["bios-write"] += 1
    return acts


def bios_attribute(url: str, attribute: str, auth: tuple[str, str]) -> tuple[Any, Any]:
    """A BIOS attribute of a simulated Redfish BMC's first system: the value in effect and
    the one pending (written, applied at the next boot; None if none), found by following
    links."""
    def get(path: str) -> dict[str, Any]:
        answer = requests.get(url + path, auth=auth, timeout=10)
        answer.raise_for_status()
        return dict(answer.json())

    system = get(get("/redfish/v1/Systems")["Members"][0]["@odata.id"])
    bios = get(system["Bios"]["@odata.id"])
    settings = bios.get("@Redfish.Settings", {}).get("SettingsObject", {}).get("@odata.id")
    pending = get(settings).get("Attributes", {}).get(attribute) if settings else None
    return bios["Attributes"].get(attribute), pending


# --- a site whose gateway the test runs ------------------------------------------------------


class ChaosSite:
    """A site registered with the stack's API whose gateway is an ``edge-gateway run``
    process of the test's own, on the stack's broker (or on ``port``: a ``WanLink``), with
    the stack's plan key pinned and a certificate from the stack's CA. Its machines
    ``srv-1``... are the Redfish BMCs at ``bmc_urls``. Stopped by ``stop()``."""

    def __init__(self, stack: LocalStack, directory: Path, site_id: str,
                 bmc_urls: list[str], port: int | None = None,
                 supervised: bool = False) -> None:
        state = stack.state
        assert state is not None, "the stack is up"
        self.site_id = site_id
        self.bmc_urls = bmc_urls
        self.machines = [f"srv-{n}" for n in range(1, len(bmc_urls) + 1)]
        self.directory = private_dir(directory / site_id)
        self.api = ApiClient(state.context, timeout=30)
        self.api.put(f"/sites/{site_id}", {"name": f"Chaos site {site_id}", "region": "local",
                                           "tags": ["chaos"], "timezone": "Europe/Berlin"})
        identity = stack.ca.identity(site_id, self.directory / "tls")
        machines = [{"id": machine, "protocol": "redfish", "address": url}
                    for machine, url in zip(self.machines, bmc_urls, strict=True)]
        self.config = write_private(self.directory / "gateway.toml", gateway_config(
            site_id, port or state.mqtt_port, machines, identity,
            pinned_keys(stack.directory)))
        self.log = self.directory / "gateway.log"
        self.supervised = supervised
        self.process: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> ChaosSite:
        """Start the gateway; ``supervised``: under ``edge-gateway supervise``, as a site box
        runs it (field upgrades need it), its first version this tree's install."""
        if self.supervised:
            root = adopt_this_tree(self.directory / "gateway")
            command = ["supervise", "--root", str(root), "--config", str(self.config)]
        else:
            command = ["run", "--config", str(self.config)]
        self.process = spawn([str(BIN / "edge-gateway"), *command], self.log,
                             cwd=self.directory)
        return self

    def kill(self) -> None:
        """SIGKILL the gateway (and its supervisor, if any): no goodbye, no flush; its
        journal stays as the kill left it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, grace=10)

    def ready(self, timeout: float = 60) -> None:
        """Wait until the cloud has the site online with its machines (its inventory)."""
        def known() -> bool:
            try:
                data = self.api.get(f"/sites/{self.site_id}")
            except ApiError:
                return False
            return bool(data["site"].get("online")) and \
                len(data["machines"]) == len(self.machines)

        wait_until(known, timeout=timeout, interval=0.3,
                   what=f"{self.site_id} online with its {len(self.machines)} machines")

    def actions(self) -> dict[str, dict[str, int]]:
        """What each machine's BMC received so far: ``{machine: {act: count}}``."""
        return {machine: dict(bmc_actions(url))
                for machine, url in zip(self.machines, self.bmc_urls, strict=True)}


def rollout_status(api: ApiClient, rollout_id: str, machines: bool = False) -> dict[str, Any]:
    return api.get(f"/rollouts/{rollout_id}" + ("" if machines else "?machines=false"))


def wait_for_end(api: ApiClient, rollout_id: str, timeout: float) -> dict[str, Any]:
    """The rollout once it ended (with its machines' results); TimeoutError if it did not."""
    wait_until(lambda: rollout_status(api, rollout_id)["rollout"]["state"] in ROLLOUT_ENDS,
               timeout=timeout, interval=0.5, what=f"the end of rollout {rollout_id}")
    return rollout_status(api, rollout_id, machines=True)


def step_states(execution: dict[str, Any]) -> dict[tuple[str, str], str]:
    """``{(machine, task): state}`` of an execution's stored results."""
    return {(m["machine"], s["task"]): s["state"]
            for m in execution.get("machines", []) for s in m["steps"]}


# --- the WAN between a site and the cloud ----------------------------------------------------


class WanLink:
    """A TCP relay on loopback in front of ``target_port``: the site's WAN.

    ``cut()``: from then on nothing passes either way (what arrives is dropped) and a new
    connection is accepted but leads nowhere, as when packets are lost on the way.
    ``restore()``: every connection open during the cut is reset (the state a NAT kept for
    it is gone), and new connections reach the target again. ``connections`` counts the
    connections made; ``dropped`` the bytes lost in cuts.
    """

    CHUNK = 65536

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peer: dict[socket.socket, socket.socket | None] = {}
        self._lock = threading.Lock()
        self._up = True
        self._closing = False
        self.connections = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="wan-link", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self._up = False

    def restore(self) -> None:
        with self._lock:
            for sock in list(self._peer):
                self._close(sock, reset=True)
            self._up = True

    def close(self) -> None:
        self._closing = True
        self._thread.join(timeout=5)
        with self._lock:
            for sock in list(self._peer):
                self._close(sock)
        self._selector.close()
        self._listener.close()

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._selector.select(timeout=0.1):
                with self._lock:
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj in self._peer:
                        self._relay(key.fileobj)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.connections += 1
        upstream = None
        if self._up:
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=5)
            except OSError:
                client.close()
                return
            self._peer[upstream] = client
            self._selector.register(upstream, selectors.EVENT_READ)
        self._peer[client] = upstream
        self._selector.register(client, selectors.EVENT_READ)

    def _relay(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(self.CHUNK)
        except OSError:
            data = b""
        if not data:
            if self._up:
                self._close(sock)
            else:  # the far side's goodbye does not cross a cut link either
                self._selector.unregister(sock)
            return
        peer = self._peer.get(sock)
        if not self._up or peer is None:
            self.dropped += len(data)
            return
        try:
            peer.sendall(data)
        except OSError:
            self._close(sock)

    def _close(self, sock: socket.socket, reset: bool = False) -> None:
        for one in (sock, self._peer.get(sock)):
            if one is None or one not in self._peer:
                continue
            self._peer.pop(one, None)
            try:
                self._selector.unregister(one)
            except (KeyError, ValueError):
                pass
            if reset:  # RST, not FIN: the connection is simply gone
                one.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                               b"\x00\x00\x00\x00")
            one.close()


# --- what each fault did ----------------------------------------------------------------------


@dataclass
class FaultReport:
    """The counts the issue asks for, per fault: BMC actions (per machine, per act),
    results stored (executions ended with every machine's steps stored), rollouts finished
    (of those started), and whatever else the fault's test measured."""

    fault: str
    bmc_actions: dict[str, dict[str, int]] = field(default_factory=dict)
    results_stored: int = 0
    results_expected: int = 0
    rollouts_finished: int = 0
    rollouts_started: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add_rollout(self, final: dict[str, Any], machines_per_site: int) -> None:
        self.rollouts_started += 1
        self.rollouts_finished += final["rollout"]["state"] in ROLLOUT_ENDS
        for execution in final["executions"]:
            self.results_expected += 1
            self.results_stored += (execution["state"] in _EXECUTION_ENDS and len(
                execution.get("machines", [])) == machines_per_site and all(
                m["steps"] for m in execution["machines"]))

    def write(self, folder: Path) -> Path:
        """Write ``counts.json`` in ``folder``, log and print it (``pytest -s`` shows it)."""
        path = folder / "counts.json"
        text = json.dumps(asdict(self), indent=2, sort_keys=True)
        path.write_text(text + "\n")
        LOG.warning("chaos %s: %s", self.fault, text)
        print(f"\nchaos counts ({self.fault}), also in {path}:\n{text}")
        return path


_EXECUTION_ENDS = frozenset({"succeeded", "failed", "timed_out", "canceled", "expired",
                             "rejected"})
