"""Field upgrades with real processes: ``edge-gateway supervise`` runs a site's gateway on
the TLS broker, a signed plan asks for ``gateway.upgrade``, the wheel comes over HTTP.

The site's first version is this tree's development install, adopted; the versions it is
upgraded to are wheels built from this tree (``scripts/build_dists.py --version``), one of
them as it is and others broken on purpose: one that cannot start, one that never connects.
A good version becomes current and reports itself; a broken one is rolled back by the
supervisor, and the version before reports why. A digest that does not match, a plan with a
step after the upgrade, and a gateway that no supervisor runs are refused, naming why.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_gateway import __version__
from edge_gateway.upgrade.artifact import ArtifactError, check_wheel, download
from edge_gateway.upgrade.layout import Layout
from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep, Presence, Result
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.processes import is_running, spawn, stop
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.simulated_driver import SimulatedMachine
from edgeplane_dev.stack import gateway_config
from tests.support import PLAN_KEYS, GatewaySite, sign, wait_until
from tests.upgrade_support import CRASHES, GOOD, MUTE, build_versions

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.timeout(240)


# --- the versions, served over HTTP ------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """The versions a site is upgraded to: built from this tree once for the module."""
    return build_versions(tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def served(wheels) -> Iterator[dict[str, tuple[str, str]]]:
    """Each version's URL (on loopback) and SHA-256, as a rollout would give them."""
    folder = next(iter(wheels.values())).parent
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = _QuietServer((LOOPBACK, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://{LOOPBACK}:{server.server_address[1]}"
    yield {version: (f"{base}/{path.name}", hashlib.sha256(path.read_bytes()).hexdigest())
           for version, path in wheels.items()}
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that stopped reading (the bounded download does, on purpose)


# --- a supervised site ---------------------------------------------------------------------------


class SupervisedSite:
    """A site's gateway as systemd runs it: ``edge-gateway supervise`` on a versions folder
    whose first version is this tree's install (adopted)."""

    def __init__(self, tmp_path: Path, secure_broker, site: str) -> None:
        self.site = site
        self.directory = tmp_path / site
        self.directory.mkdir()
        self.layout = Layout(self.directory / "gateway")
        identity = secure_broker.ca.identity(site, self.directory / "tls")
        self.config = self.directory / "gateway.toml"
        self.config.write_text(gateway_config(site, secure_broker.port, [], identity,
                                              PLAN_KEYS))
        self.config.chmod(0o600)
        subprocess.run([str(BIN / "edge-gateway"), "versions", "--root",
                        str(self.layout.root), "adopt"], check=True, capture_output=True)
        self.log = self.directory / "supervisor.log"
        self.start()

    def start(self) -> None:
        self.process = spawn([str(BIN / "edge-gateway"), "supervise", "--root",
                              str(self.layout.root), "--config", str(self.config)], self.log)

    def power_cut(self) -> None:
        """The supervisor and the gateway killed at once, as a power cut would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        wait_until(lambda: not any(is_running(pid) for pid in _children(self.process.pid)))

    def upgrade(self, recorder: Recorder, execution_id: str, params: dict[str, object],
                before: list[PlanStep] | None = None) -> None:
        plan = Plan(site=self.site, execution_id=execution_id,
                    rollout_id=execution_id.split(".")[0], observe=False,
                    steps=[*(before or []), PlanStep("gateway.upgrade", params, [])])
        recorder.publish(protocol.plan_topic(self.site), sign(plan))

    def stop(self) -> None:
        stop(self.process, grace=30)

    def said(self) -> str:
        return self.log.read_text()


@pytest.fixture
def operator(secure_broker) -> Iterator[Recorder]:
    """The cloud's side: sends plans, records what the sites report."""
    recorder = Recorder(secure_broker.port, identity=secure_broker.identity("cloud.operator"))
    yield recorder
    recorder.close()


@pytest.fixture
def make_site(tmp_path, secure_broker) -> Iterator:
    sites: list[SupervisedSite] = []

    def make(site: str) -> SupervisedSite:
        sites.append(SupervisedSite(tmp_path, secure_broker, site))
        return sites[-1]

    yield make
    for running in sites:
        running.stop()


def _children(pid: int) -> list[int]:
    """The processes of the group ``pid`` led (the supervisor's gateway among them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pid:  # the process group
                found.append(int(entry.name))
    return found


def result_of(recorder: Recorder, execution_id: str, timeout: float = 90) -> Result:
    """The execution's result (one message, perhaps delivered more than once)."""
    found = {r.id: r for r in recorder.wait_for(
        lambda found: any(r.execution_id == execution_id for r in found), Result,
        timeout=timeout) if r.execution_id == execution_id}
    (result,) = found.values()
    return result


def runs(recorder: Recorder, site: str, version: str, timeout: float = 60) -> None:
    """Wait until the site's gateway says it is online at ``version``."""
    recorder.wait_for(lambda found: any(p.site == site and p.online and p.gateway_version ==
                                        version for p in found), Presence, timeout=timeout)


# --- the tests -----------------------------------------------------------------------------------


def test_a_site_upgrades_to_a_new_version_then_rolls_back_one_that_cannot_start(
        make_site, operator, served):
    site = make_site("up-good")
    runs(operator, site.site, __version__)

    url, sha256 = served[GOOD]
    site.upgrade(operator, f"r-up1.{site.site}",
                 {"version": GOOD, "url": url, "sha256": sha256})
    # A plan that arrives meanwhile waits for the new version, in the journal: it finds the
    # new version running (the old one would have tried a second upgrade).
    site.upgrade(operator, f"r-up1b.{site.site}",
                 {"version": GOOD, "url": url, "sha256": sha256})
    result = result_of(operator, f"r-up1.{site.site}")
    assert result.state == "succeeded", result.message
    assert result.message.startswith(f"gateway upgraded from {__version__} to {GOOD}: healthy")
    queued = result_of(operator, f"r-up1b.{site.site}")
    assert (queued.state, queued.message) == ("succeeded",
                                              f"the gateway runs version {GOOD} already")
    runs(operator, site.site, GOOD)
    assert site.layout.version_of("current") == GOOD
    assert site.layout.version_of("previous") == __version__
    assert site.layout.read_trial() is None
    wait_until(lambda: site.layout.read_outcome() is None)  # reported: nothing owed
    # Installed with its -OO bytecode, so it runs as lean as the version before it.
    assert list(site.layout.version_dir(GOOD).glob(
        "lib/python3.*/site-packages/edge_gateway/__pycache__/__init__.*.opt-2.pyc"))

    url, sha256 = served[CRASHES]
    site.upgrade(operator, f"r-up2.{site.site}",
                 {"version": CRASHES, "url": url, "sha256": sha256})
    result = result_of(operator, f"r-up2.{site.site}")
    assert result.state == "failed"
    assert result.message.startswith(f"gateway upgrade to {CRASHES} failed: it stopped at "
                                      "each of its 3 starts before it proved healthy")
    assert f"rolled back to {GOOD}" in result.message
    assert "this build is broken on purpose" in result.message  # its last words
    assert site.layout.version_of("current") == GOOD, "the good version runs on"
    assert CRASHES in site.layout.installed(), "installed beside, never made current"
    runs(operator, site.site, GOOD)

    # The same plan again (the cloud resends it): answered with its result, not run again.
    def answers() -> list[Result]:
        return [r for r in operator.of_kind(Result) if r.execution_id == f"r-up2.{site.site}"]

    before = len(answers())
    site.upgrade(operator, f"r-up2.{site.site}",
                 {"version": CRASHES, "url": url, "sha256": sha256})
    wait_until(lambda: len(answers()) > before, timeout=20)
    assert {r.id for r in answers()} == {result.id}
    assert site.layout.read_trial() is None and site.layout.version_of("current") == GOOD


def test_a_version_that_never_connects_is_rolled_back_at_its_deadline_across_a_power_cut(
        make_site, operator, served):
    site = make_site("up-mute")
    runs(operator, site.site, __version__)
    url, sha256 = served[MUTE]
    site.upgrade(operator, f"r-up3.{site.site}",
                 {"version": MUTE, "url": url, "sha256": sha256, "health_timeout": 10})
    on_trial = wait_until(lambda: (h := site.layout.read_health()) is not None and
                          "journal" in h.passed and h, timeout=30)
    assert on_trial.version == MUTE
    site.power_cut()  # mid-trial: the deadline and the trial are on disk
    site.start()
    result = result_of(operator, f"r-up3.{site.site}")
    assert result.state == "failed"
    assert result.message.startswith(f"gateway upgrade to {MUTE} failed: it did not prove "
                                      "healthy within 10 s (not proved: connected: not yet)")
    assert f"rolled back to {__version__}" in result.message
    assert site.layout.version_of("current") == __version__
    runs(operator, site.site, __version__)


def test_a_wheel_whose_digest_differs_is_refused_before_anything_is_installed(
        make_site, operator, served):
    site = make_site("up-digest")
    runs(operator, site.site, __version__)
    url, _ = served[GOOD]
    wrong = "0" * 64
    site.upgrade(operator, f"r-up4.{site.site}", {"version": GOOD, "url": url,
                                                   "sha256": wrong})
    result = result_of(operator, f"r-up4.{site.site}")
    assert result.state == "failed"
    assert f"not {wrong} as the plan says: refused, nothing installed" in result.message
    assert result.message.endswith(f"version {__version__} runs on")
    assert site.layout.installed() == [__version__]
    assert list(site.layout.downloads.glob("*")) == []
    assert "restarting into it" not in site.said()


UPGRADE_STEP = PlanStep("gateway.upgrade", {"version": GOOD, "url": "http://127.0.0.1:9/x.whl",
                                            "sha256": "a" * 64}, [])


@pytest.mark.parametrize("steps, why", [
    ([UPGRADE_STEP, PlanStep("power.ensure", {"state": "on"}, ["srv-1"])],
     "plan step 0 (gateway.upgrade) must be the plan's last step: the gateway restarts into "
     "another version after it, and 1 step(s) follow it"),
    ([PlanStep("gateway.upgrade", UPGRADE_STEP.params, ["srv-1"])],
     "plan step 0: task gateway.upgrade runs on the gateway itself: its step names no "
     "machine"),
])
def test_a_plan_with_an_upgrade_out_of_place_is_refused(tmp_path, broker, operator_plain,
                                                         steps, why):
    site = GatewaySite(tmp_path, broker.port, "up-order", {}, observe_interval=0)
    site.start()
    try:
        plan = Plan(site=site.site, execution_id="r-up5.up-order", rollout_id="r-up5",
                    steps=steps)
        operator_plain.publish(protocol.plan_topic(site.site), sign(plan))
        result = result_of(operator_plain, "r-up5.up-order", timeout=20)
    finally:
        site.stop()
    assert result.state == "rejected"
    assert result.message == f"the site's gateway refused the plan: {why}"


def test_a_gateway_no_supervisor_runs_says_it_cannot_upgrade(tmp_path, broker, operator_plain):
    site = GatewaySite(tmp_path, broker.port, "up-alone",
                       {"srv-1": SimulatedMachine(power_delay=0.1)}, observe_interval=0)
    site.start()
    try:
        plan = Plan(site=site.site, execution_id="r-up6.up-alone", rollout_id="r-up6",
                    observe=False, steps=[PlanStep("power.ensure", {"state": "on"}, ["srv-1"]),
                                          UPGRADE_STEP])
        operator_plain.publish(protocol.plan_topic(site.site), sign(plan))
        result = result_of(operator_plain, "r-up6.up-alone", timeout=20)
    finally:
        site.stop()
    assert result.state == "failed"
    assert result.message == (
        f"gateway upgrade failed: this gateway was not started by `edge-gateway supervise` "
        f"(EDGE_GATEWAY_ROOT is not set): nothing would start version {GOOD}; version "
        f"{__version__} runs on")
    (machine,) = result.machines  # the steps before the upgrade ran, and say so
    assert (machine.machine, machine.state, [s.task for s in machine.steps]) == (
        "srv-1", "succeeded", ["power.ensure"])


@pytest.fixture
def operator_plain(broker) -> Iterator[Recorder]:
    recorder = Recorder(broker.port)
    yield recorder
    recorder.close()


# --- the wheel, before anything is installed ------------------------------------------------------


def test_a_download_stops_at_its_bound_and_leaves_nothing(tmp_path, served):
    url, sha256 = served[GOOD]
    with pytest.raises(ArtifactError, match="bytes; a gateway wheel may have 1000"):
        download(url, sha256, tmp_path, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_a_wheel_of_another_version_than_the_plan_says_is_refused(tmp_path, served):
    url, sha256 = served[GOOD]
    with pytest.raises(ArtifactError, match=rf"holds version '{re.escape(GOOD)}', not 9.9.9"):
        check_wheel(download(url, sha256, tmp_path), "9.9.9")


def test_versions_show_tells_the_operator_what_runs(tmp_path):
    layout = Layout(tmp_path / "gateway")
    subprocess.run([str(BIN / "edge-gateway"), "versions", "--root", str(layout.root),
                    "adopt"], check=True, capture_output=True)
    shown = json.loads(subprocess.run(
        [str(BIN / "edge-gateway"), "versions", "--root", str(layout.root), "show"],
        check=True, capture_output=True, text=True).stdout)
    assert shown["current"] == __version__ and shown["installed"] == [__version__]
    assert shown["previous"] is None and shown["trial"] is None
