"""What a version proves before it is kept: the self-test, and the checks of a trial.

``self_test`` runs twice for a new version: in a process of its own right after it is
installed (``edge-gateway self-test``, before the running version hands over), and again
inside the new gateway on trial. A trial also proves that the journal opened and holds the
upgrade's execution, that the drivers the site's machines need load, and that the gateway
connected to the broker. Each proof is written to ``health.json`` as it is made, for the
supervisor to judge (``edge_gateway.upgrade.supervisor``) and to name what was missing if
the deadline passes first.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
import threading
from collections.abc import Callable

from edge_gateway.config import SiteConfig
from edge_gateway.drivers import driver_class
from edge_gateway.errors import GatewayError
from edge_gateway.journal import Journal
from edge_gateway.trust import PlanVerifier
from edge_gateway.upgrade.layout import Health, Layout, Trial
from edgeplane.protocol import (
    MachineResult,
    MachineState,
    Plan,
    PlanStep,
    ProtocolError,
    Result,
    decode,
)

LOG = logging.getLogger(__name__)

DISTRIBUTION = "edge-gateway"


class HealthError(GatewayError):
    """A check a version must pass, failed."""


def self_test(config: SiteConfig) -> dict[str, str]:
    """What this version checks of itself, without a broker or a BMC; each check's finding.
    HealthError naming the first that fails."""
    found: dict[str, str] = {}
    plan = Plan(site=config.site, execution_id="self-test.0", rollout_id="self-test",
                steps=[PlanStep("power.ensure", {"state": "on"}, ["m-1"])])
    result = Result(site=config.site, execution_id=plan.execution_id, seq=1,
                    machines=[MachineResult(machine="m-1", state=MachineState.SUCCEEDED)])
    try:
        plan.check_tasks()
        if decode(plan.encode()) != plan or decode(result.encode()) != result:
            raise HealthError("the wire contract does not read back what it wrote")
    except ProtocolError as exc:
        raise HealthError(f"the wire contract refuses its own messages: {exc}") from None
    found["protocol"] = "a plan and a result read back as written"
    verifier = PlanVerifier(config.plan_keys)
    found["trust"] = f"{len(verifier.key_ids)} plan key(s) pinned"
    found["requirements"] = _requirements()
    found["drivers"] = load_drivers(config)
    for module in ("edge_gateway.agent", "edge_gateway.transport",
                   "edge_gateway.upgrade.supervisor"):  # the supervisor: what the next boot runs
        importlib.import_module(module)
    found["modules"] = "the core, the transport and the supervisor load"
    return found


def load_drivers(config: SiteConfig) -> str:
    """Load the driver of every protocol the site's machines speak (nothing is asked of a
    BMC: a site whose BMCs are down can still upgrade its gateway)."""
    protocols = sorted({str(machine.protocol) for machine in config.machines})
    for protocol in protocols:
        driver_class(protocol)  # ConfigError saying why it does not load
    return ", ".join(protocols) or "none needed"


def _requirements() -> str:
    """Every distribution this version's wheel requires is there (by name: the versions of
    those it shares with the site's first installation were checked by that install)."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return "not an installed wheel (a development tree): not checked"
    missing = []
    for requirement in requires:
        if ";" in requirement and "extra" in requirement.split(";", 1)[1]:
            continue
        name = re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        raise HealthError(f"this version needs {', '.join(missing)}, which the site's "
                          "installation does not have")
    return f"{len(requires)} present"


class TrialWatch:
    """Inside a gateway on trial: prove each check, writing down each proof as it is made."""

    def __init__(self, layout: Layout, trial: Trial, version: str, config: SiteConfig,
                 journal: Journal) -> None:
        self.layout = layout
        self.trial = trial
        self.config = config
        self.journal = journal
        self.health = Health(version=version, pid=os.getpid())
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._prove, name="upgrade-trial", daemon=True)

    def start(self) -> None:
        self.layout.write_health(self.health)
        self._thread.start()

    def connected(self) -> None:
        self._connected.set()

    def _prove(self) -> None:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("journal", self._journal), ("drivers", lambda: load_drivers(self.config)),
            ("self_test", lambda: ", ".join(self_test(self.config))),
            ("connected", self._wait_connected)]
        for name, check in checks:
            try:
                finding = check()
            except Exception as exc:  # every failure is a finding, a bug included
                self.health.failed[name] = f"{exc}"[:500] or type(exc).__name__
                self.layout.write_health(self.health)
                LOG.error("upgrade to %s: health check %s failed: %s", self.health.version,
                          name, exc)
                return
            self.health.passed.append(name)
            self.layout.write_health(self.health)
            LOG.info("upgrade to %s: health check %s passed (%s)", self.health.version, name,
                     finding)

    def _journal(self) -> str:
        journaled = self.journal.plan(self.trial.execution_id)
        if journaled is None:
            raise HealthError(f"the journal {self.config.journal} does not hold execution "
                              f"{self.trial.execution_id}")
        return f"holds execution {self.trial.execution_id}"

    def _wait_connected(self) -> str:
        while not self._connected.wait(1.0):
            pass  # the supervisor ends the trial at its deadline
        return "connected to the broker"
