"""The gateway core: one site's plans in, results out. No globals, so many can share a process.

The core owns no sockets and no threads but the interval observer's: the transport, the
driver factory and the worker pool are given to it (the pool defaults to the process's, see
``workers``), which is what lets a fleet simulator run thousands of gateways in one process
with simulated BMCs, and tests run one against a real broker. A site's plans run one after
another on a ``SerialLane``: a pool thread is borrowed only while the site has plans queued.

No message can stop a gateway: each is checked (``intake``: the contract's bounds, the
cloud's signature, the contract's fields, what the gateway can run) before anything acts on
it, what is refused is dropped (logged; a plan answered with a ``rejected`` result), and
``handle_message`` never raises, so the transport always acknowledges the message and the
broker does not deliver it again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, cast

from edge_gateway import __version__
from edge_gateway.cache.pins import plan_artifacts
from edge_gateway.config import MachineConfig, SiteConfig
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import Driver
from edge_gateway.errors import GatewayError
from edge_gateway.executor import PlanExecutor, ProgressBatcher
from edge_gateway.holds import Holds
from edge_gateway.intake import Intake, refused_plan
from edge_gateway.journal import Journal, PlanState
from edge_gateway.observer import observe_machine
from edge_gateway.pacing import PacedDriver, PacerRegistry
from edge_gateway.reporting import (
    progress_groups,
    split_inventory,
    split_observed,
    split_result,
)
from edge_gateway.transport import Transport
from edge_gateway.trust import PlanVerifier, SignatureError
from edge_gateway.upgrade.upgrader import Upgrades
from edge_gateway.workers import SerialLane, WorkerPool, default_pool, run_bounded
from edgeplane.protocol import (
    MAX_REPORT_BYTES,
    Cancel,
    Detail,
    ExecutionState,
    Inventory,
    MachineObservation,
    MachineReport,
    MachineResult,
    MachineState,
    Message,
    Observed,
    Plan,
    PlanStep,
    Presence,
    Progress,
    ProtocolError,
    Result,
    StepState,
    down_filter,
    excerpt,
    new_id,
    summarize,
    up_topic,
)

if TYPE_CHECKING:  # the cache's modules (an HTTP server) load only where one is configured
    from edge_gateway.cache.site import SiteCache

LOG = logging.getLogger(__name__)

MAX_CANCELS = 10_000  # canceled executions remembered; the oldest are forgotten first
MAX_REASON_LENGTH = 1000  # characters of why a plan was refused, in its result
MAX_NAMED_FAILURES = 20  # failed machines a result's message names (the rest are counted)


def default_driver_factory(machine: MachineConfig) -> Driver:
    return create_driver(machine.protocol, machine.credentials, timeout=machine.timeout)


def _open_cache(config: SiteConfig) -> SiteCache | None:
    """The site's artifact cache, if its config has one (with its provisioning, if any)."""
    if config.cache is None:
        return None
    from edge_gateway.cache.site import SiteCache
    from edge_gateway.provision.site import open_provisioning

    return SiteCache(config.cache, provisioning=open_provisioning(
        config.provision, config.journal, config.cache.tls_cert))


class Gateway:
    def __init__(
        self,
        config: SiteConfig,
        transport_factory: Callable[[Gateway], Transport],
        journal: Journal | None = None,
        driver_factory: Callable[[MachineConfig], Driver] = default_driver_factory,
        version: str = __version__,
        pool: WorkerPool | None = None,
        upgrades: Upgrades | None = None,
        artifacts: SiteCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock  # the site's time: maintenance windows and expiry go by it
        self.site = config.site
        self.version = version
        self.intake = Intake(config.site, PlanVerifier(config.plan_keys))
        self.journal = journal or Journal(config.journal)
        self.pacers = PacerRegistry()
        self.driver_factory = driver_factory
        self.pool = pool if pool is not None else default_pool()
        # The site's artifact cache (``[cache]``): its LAN server runs with the gateway.
        # With ``[provision]``, the same server serves seeds and takes phone-home calls.
        self.artifacts = artifacts or _open_cache(config)
        self.executor = PlanExecutor(config, self.paced_driver, pool=self.pool,
                                     journal=self.journal, artifacts=self.artifacts)
        self.transport = transport_factory(self)
        # Field upgrades (``edge_gateway.upgrade``); without a supervisor, they are refused.
        self.upgrades = upgrades or Upgrades(None, None, version)
        self._plans: SerialLane[Plan] = SerialLane(self.pool, self._work,
                                                   name=f"site {self.site} plans")
        # Plans received outside their maintenance window, until it opens (``holds``).
        self.holds = Holds(self._enqueue, clock, name=f"{self.site}-holds")
        self._inventory: Future[Inventory | None] | None = None
        self._stopping = threading.Event()
        self._canceled: dict[str, None] = {}  # executions to stop (or never start)
        self._observer: threading.Thread | None = None
        self.idle = self._plans.idle  # set while no plan is queued or running

    def paced_driver(self, machine: MachineConfig) -> Driver:
        """The machine's driver, taking turns with every other call to the same BMC."""
        pacer = self.pacers.for_address(machine.credentials.address, machine.min_interval)
        return cast(Driver, PacedDriver(self.driver_factory(machine), pacer))

    # --- what the transport needs ----------------------------------------------------

    @property
    def subscriptions(self) -> list[str]:
        return [down_filter(self.site)]

    def will(self, session: float) -> tuple[str, bytes]:
        message = Presence(site=self.site, online=False, session=session,
                           gateway_version=self.version)
        return up_topic(self.site, Presence.KIND), message.encode()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Resume journaled work, then connect. Returns at once; work runs on the pool.

        A journaled plan is checked again as when it arrived: its signature as of then, by a
        key the site still pins (``Intake.read_journaled``)."""
        LOG.info("site %s: runs the plans signed by %s", self.site,
                 ", ".join(self.intake.verifier.key_ids))
        if self.artifacts is not None:
            self.artifacts.start()
        self.upgrades.settle(self.config, self.journal, self._finish)
        self._canceled.update(dict.fromkeys(self.journal.canceled()))  # kept across restarts
        for journaled in self.journal.unfinished_plans():
            if self.upgrades.holds(journaled.execution_id):
                continue  # an upgrade's: its result comes from the upgrade's outcome
            try:
                plan = self.intake.read_journaled(journaled.payload, journaled.received_at)
            except ProtocolError as exc:  # by an older gateway, or a key unpinned since
                self._refuse_plan(journaled.execution_id, str(exc))
                continue
            LOG.info("resuming execution %s from the journal", journaled.execution_id)
            self._enqueue(plan)
        self.transport.start(self._on_connect, self.handle_message, self.journal.delivered)
        if self.config.observe_interval > 0:
            self._observer = threading.Thread(target=self._observe_on_interval,
                                              name=f"{self.site}-observer", daemon=True)
            self._observer.start()

    def stop(self) -> None:
        """Finish the plans queued (30 s at most; later ones resume from the journal), go."""
        self._stopping.set()
        self.holds.close()
        self._plans.close()
        self._plans.idle.wait(timeout=30)
        # A clean disconnect does not fire the last will: say goodbye ourselves.
        self._send(Presence(site=self.site, online=False, session=self.transport.session,
                            gateway_version=self.version), retain=True)
        self.transport.stop()
        if self.artifacts is not None:
            self.artifacts.stop()
            if self.artifacts.provisioning is not None:
                self.artifacts.provisioning.close()
        self.journal.close()

    def _on_connect(self) -> None:
        presence = Presence(site=self.site, online=True, session=self.transport.session,
                            gateway_version=self.version)
        self._send(presence, retain=True)
        for message in self.journal.pending():
            self.transport.publish(message.topic, message.payload, key=message.message_id,
                                   retain=message.retain)
        self.report_cache()
        if self._inventory is None:
            self._inventory = self.pool.submit(self._report_inventory_once)
        self.upgrades.connected()

    # --- incoming --------------------------------------------------------------------

    def handle_message(self, topic: str, payload: bytes) -> None:
        """Called on the transport's thread: decide quickly, never block on hardware.

        Never raises, whatever the message holds: the transport acknowledges it either way.
        """
        try:
            self._handle(topic, bytes(payload))
        except Exception:  # a bug must cost one message, not the site's link
            LOG.exception("site %s: handling a message on %s failed; dropped", self.site,
                          excerpt(topic))

    def _handle(self, topic: str, payload: bytes) -> None:
        try:
            message = self.intake.read(topic, payload)
        except ProtocolError as exc:
            execution_id = refused_plan(topic, exc)
            if execution_id:
                self._refuse_plan(execution_id, str(exc), payload,
                                  signed=not isinstance(exc, SignatureError))
            else:  # a cancel that does not verify among them: it is never acted on
                LOG.error("site %s: dropped a message on %s (%d bytes): %s", self.site,
                          excerpt(topic), len(payload), exc)
            return
        if isinstance(message, Cancel):
            LOG.info("site %s: execution %s canceled: %s", self.site, message.execution_id,
                     excerpt(message.reason, MAX_REASON_LENGTH))
            # Journaled before it is acted on: a restart does not resume a canceled plan.
            self.journal.cancel(message.execution_id, excerpt(message.reason, MAX_REASON_LENGTH))
            self._canceled[message.execution_id] = None
            while len(self._canceled) > MAX_CANCELS:
                del self._canceled[next(iter(self._canceled))]
            self.holds.release(message.execution_id)  # held: it ends canceled now
            return
        if not isinstance(message, Plan):
            LOG.warning("site %s: ignoring %s message on %s", self.site, message.KIND, topic)
            return
        if self.journal.accept_plan(message.execution_id, payload):
            self._enqueue(message)
            return
        self._known_plan(message.execution_id, message.id)

    def _refuse_plan(self, execution_id: str, reason: str, payload: bytes | None = None,
                     signed: bool = True) -> None:
        """Answer a plan this gateway will not run: a ``rejected`` result, sent like any
        other, so the cloud ends the execution now instead of at its timeout.
        ``payload``: the plan as received, to journal (None: it is in the journal already).

        An execution already journaled keeps its course: a malformed copy of a plan
        accepted earlier must not end it (the first answer stands, and is sent again).
        A plan whose signature did not verify (``signed`` False) is not the cloud's: it is
        answered but not journaled, so that it cannot take the execution id of a genuine
        plan still to come."""
        if payload is not None:
            if signed:
                known = not self.journal.accept_plan(execution_id, payload)
            else:
                known = self.journal.plan(execution_id) is not None
            if known:
                self._known_plan(execution_id, new_id())
                return
        reason = reason if len(reason) <= MAX_REASON_LENGTH else \
            reason[:MAX_REASON_LENGTH - 3] + "..."
        LOG.error("site %s: refused the plan of execution %s: %s", self.site, execution_id,
                  reason)
        message = f"the site's gateway refused the plan: {reason}"
        if signed:
            self._finish(execution_id, [], ExecutionState.REJECTED, message)
        else:  # no journaled plan, so no report numbers: this answer is its only report
            self._send(Result(site=self.site, execution_id=execution_id, seq=0,
                              state=ExecutionState.REJECTED, message=message))

    def _known_plan(self, execution_id: str, message_id: str) -> None:
        journaled = self.journal.plan(execution_id)
        if journaled and journaled.state == PlanState.DONE and journaled.result:
            # The cloud sent the plan again: it may not have the result. Send it again.
            LOG.info("execution %s already done; sending its result again", execution_id)
            for number, payload in enumerate(bytes(journaled.result).split(b"\n")):
                self.transport.publish(up_topic(self.site, Result.KIND), payload,
                                       key=f"resend-{message_id}-{number}")
        else:
            LOG.info("execution %s is already running; duplicate plan ignored", execution_id)

    def _enqueue(self, plan: Plan) -> None:
        if not self._plans.put(plan):
            LOG.info("site %s: stopping; execution %s resumes from the journal at restart",
                     self.site, plan.execution_id)

    def _work(self, plan: Plan) -> None:
        """One plan, then the observation of its machines; the lane runs the next after. A
        plan outside its maintenance window is held instead (the lane goes on), and comes
        back here when the window opens."""
        try:
            if plan.execution_id not in self._canceled and self._hold(plan):
                return
            if self.run_plan(plan) is None:
                return  # handed over to another version of the gateway
            if plan_artifacts(plan):
                self.report_cache()
            known = [m for m in plan.machines if self.config.machine(m) is not None]
            if known and plan.observe:  # what the plan left behind, for the drift check
                self.observe(known, trigger="plan", execution_id=plan.execution_id)
        except Exception:  # the next plan still runs
            LOG.exception("site %s: execution %s crashed", self.site, plan.execution_id)

    def _observe_on_interval(self) -> None:
        """Every ``observe_interval`` seconds, observe every machine (between plans)."""
        interval = self.config.observe_interval
        while not self._stopping.wait(interval):
            if not self.idle.is_set():
                continue  # a plan is running; it observes its machines when it ends
            try:
                self.observe(trigger="interval")
            except Exception:
                LOG.exception("site %s: observing the machines failed", self.site)

    def _hold(self, plan: Plan) -> bool:
        """Hold the plan if its window is closed, and tell the cloud until when."""
        opens = self.holds.hold(plan)
        if opens is None:
            return False
        LOG.info("site %s: execution %s waits for its maintenance window, which opens at "
                 "%s UTC", self.site, plan.execution_id,
                 time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(opens)))
        self._send(Progress(site=self.site, execution_id=plan.execution_id,
                            seq=self.journal.next_seq(plan.execution_id), waiting_until=opens))
        return True

    # --- running a plan --------------------------------------------------------------

    def run_plan(self, plan: Plan) -> Result | None:
        """Run the plan (unless it expired or was canceled first) and send its result; None
        if its last step handed over to a new version of the gateway, which sends it."""
        if plan.expires_at is not None and self.clock() >= plan.expires_at:
            LOG.warning("site %s: execution %s expired before it started", self.site,
                        plan.execution_id)
            return self._finish(plan.execution_id, [], ExecutionState.EXPIRED,
                                "the plan expired before the site could start it")
        if plan.execution_id in self._canceled and \
                not self.journal.has_steps(plan.execution_id):
            return self._finish(plan.execution_id, [], ExecutionState.CANCELED,
                                "canceled before it started")
        LOG.info("site %s: running execution %s (%d steps on %d machines)", self.site,
                 plan.execution_id, len(plan.steps), len(plan.machines))

        def send_progress(batch: list[MachineResult]) -> None:
            whole = Progress(site=self.site, execution_id=plan.execution_id,
                             machines=_as_asked(plan.detail, batch))
            for machines in progress_groups(whole):  # each of them a seq of its own
                self._send(dataclasses.replace(
                    whole, id=new_id(), seq=self.journal.next_seq(plan.execution_id),
                    machines=machines))

        batcher = ProgressBatcher(self.config.progress_interval, send_progress)
        machines = self.executor.execute(
            plan, batcher.update, canceled=lambda: plan.execution_id in self._canceled)
        failed = [m.machine for m in machines if m.state != MachineState.SUCCEEDED]
        if plan.execution_id in self._canceled:
            return self._finish(plan.execution_id, machines, ExecutionState.CANCELED,
                                "canceled: every machine stopped after its current step",
                                plan.detail)
        upgrade = self.upgrades.step_of(plan)
        if upgrade is not None:
            return self._upgrade(plan, upgrade, machines, failed)
        return self._finish(
            plan.execution_id, machines,
            ExecutionState.FAILED if failed else ExecutionState.SUCCEEDED,
            _failures(failed, len(machines)) + _uncertain(machines) if failed
            else f"{len(machines)} machines succeeded", plan.detail)

    def _finish(self, execution_id: str, machines: list[MachineResult],
                state: ExecutionState, message: str, detail: str = Detail.FULL) -> Result:
        """Journal the result as it is sent (in parts if one message cannot hold it: the
        journal keeps their payloads, one a line, to send again), then send it."""
        result = Result(site=self.site, execution_id=execution_id,
                        seq=self.journal.next_seq(execution_id), machines=machines,
                        state=state, message=message)
        messages = split_result(dataclasses.replace(result,
                                                    machines=_as_asked(detail, machines)))
        payloads = [message.encode() for message in messages]
        self.journal.finish_plan(execution_id, b"\n".join(payloads))
        if len(messages) > 1:
            LOG.info("site %s: the result of execution %s goes in %d parts", self.site,
                     execution_id, len(messages))
        for part, payload in zip(messages, payloads, strict=True):
            self._send(part, payload=payload)
        return result

    def _upgrade(self, plan: Plan, step: PlanStep, machines: list[MachineResult],
                 failed: list[str]) -> Result | None:
        """The plan's last step, on the gateway itself: hand over to the new version (None:
        that one, or this one again after a rollback, sends the result), or say why not."""
        if failed:
            return self._finish(plan.execution_id, machines, ExecutionState.FAILED,
                                f"{_failures(failed, len(machines))}; the gateway upgrade "
                                "did not start", plan.detail)
        try:
            done = self.upgrades.begin(plan, step, machines)
        except Exception as exc:  # a bug too must end the step with a result, not silence
            reason = str(exc) if isinstance(exc, GatewayError) else f"internal error: {exc!r}"
            LOG.error("site %s: execution %s: the gateway upgrade failed: %s", self.site,
                      plan.execution_id, reason, exc_info=not isinstance(exc, GatewayError))
            return self._finish(plan.execution_id, machines, ExecutionState.FAILED,
                                f"gateway upgrade failed: {reason}; version {self.version} "
                                "runs on", plan.detail)
        if done is not None:
            return self._finish(plan.execution_id, machines, ExecutionState.SUCCEEDED,
                                done.message, plan.detail)
        self._plans.close(discard=True)  # plans queued stay journaled, for the next version
        self.upgrades.hand_over()
        return None

    # --- observed state --------------------------------------------------------------

    def observe(self, machine_ids: list[str] | None = None, trigger: str = "interval",
                execution_id: str | None = None) -> Observed:
        """Read what the machines are now (in parallel) and send it to the cloud."""
        machines = [m for m in self.config.machines
                    if machine_ids is None or m.id in machine_ids]
        observations = run_bounded(self.pool, self._observe, machines,
                                   max(1, self.config.max_parallel))
        message = Observed(site=self.site, trigger=trigger, execution_id=execution_id,
                           machines=observations)
        for part in split_observed(message):
            self._send(part)
        return message

    def _observe(self, machine: MachineConfig) -> MachineObservation:
        try:
            driver = self.paced_driver(machine)
        except GatewayError as exc:
            return MachineObservation(machine=machine.id, error=str(exc))
        return observe_machine(machine.id, driver)

    # --- inventory -------------------------------------------------------------------

    def wait_for_inventory(self, timeout: float | None = None) -> bool:
        """True once the inventory sent on the first connect is done (sent or failed)."""
        inventory = self._inventory
        if inventory is None:
            return False
        try:
            inventory.exception(timeout)
        except TimeoutError:
            return False
        return True

    def _report_inventory_once(self) -> Inventory | None:
        try:
            return self.report_inventory()
        except Exception:
            LOG.exception("site %s: reporting the inventory failed", self.site)
            return None

    def report_inventory(self) -> Inventory:
        """Describe every machine (in parallel) and send the inventory to the cloud."""
        reports = run_bounded(self.pool, self._describe, self.config.machines,
                              max(1, self.config.max_parallel))
        inventory = Inventory(site=self.site, gateway_version=self.version, machines=reports)
        for part in split_inventory(inventory):
            self._send(part)
        return inventory

    def _describe(self, machine: MachineConfig) -> MachineReport:
        base: dict[str, Any] = {"id": machine.id, "protocol": str(machine.protocol),
                                "address": machine.credentials.address,
                                "machine_class": machine.machine_class}
        try:
            driver = self.paced_driver(machine)
            base["capabilities"] = sorted(driver.capabilities)
            try:
                info = driver.describe()
                base["capabilities"] = sorted(driver.machine_capabilities())
            finally:
                driver.close()
        except GatewayError as exc:
            LOG.warning("site %s machine %s: inventory failed: %s", self.site, machine.id, exc)
            return MachineReport(**base, error=str(exc))
        return MachineReport(**base, manufacturer=info.manufacturer, model=info.model,
                             serial=info.serial, power=info.power)

    def report_cache(self) -> None:
        """What the artifact cache holds: current state, not journaled (the next
        connection sends it afresh)."""
        if self.artifacts is not None:
            status = self.artifacts.status(self.site)
            self.transport.publish(up_topic(self.site, status.KIND), status.encode(),
                                   key=status.id)

    # --- outgoing --------------------------------------------------------------------

    def _send(self, message: Message, retain: bool = False, payload: bytes | None = None) -> None:
        """Journal first, then publish: the outbox keeps it until the broker acknowledges.

        Never a message over MAX_REPORT_BYTES (``reporting`` splits what would be): the
        broker would refuse it, and the outbox would offer it again at every connection."""
        payload = payload if payload is not None else message.encode()
        if len(payload) > MAX_REPORT_BYTES:
            raise GatewayError(f"site {self.site}: a {message.KIND} message of {len(payload)} "
                               f"bytes is over the {MAX_REPORT_BYTES} bytes one may have; "
                               "not sent")
        topic = up_topic(self.site, message.KIND)
        if not isinstance(message, Presence):  # presence is current state, not history
            self.journal.enqueue(message.id, topic, payload, retain)
        self.transport.publish(topic, payload, key=message.id, retain=retain)


def _failures(failed: list[str], total: int) -> str:
    """What a result says of its failed machines: how many, and the first of them by name."""
    named = ", ".join(failed[:MAX_NAMED_FAILURES])
    more = len(failed) - MAX_NAMED_FAILURES
    return f"{len(failed)} of {total} machines failed: {named}" + \
        (f" and {more} more" if more > 0 else "")


def _uncertain(machines: list[MachineResult]) -> str:
    """What a result adds for machines with a step that may or may not have happened."""
    named = [m.machine for m in machines
             if any(step.state == StepState.UNCERTAIN for step in m.steps)]
    if not named:
        return ""
    more = len(named) - MAX_NAMED_FAILURES
    return (f"; uncertain, for an operator to check: {', '.join(named[:MAX_NAMED_FAILURES])}"
            + (f" and {more} more" if more > 0 else ""))


def _as_asked(detail: str, machines: list[MachineResult]) -> list[MachineResult]:
    """The machines' results in the detail the plan asked for (``Plan.detail``)."""
    if detail == Detail.OUTCOMES:
        return [summarize(machine) for machine in machines]
    return machines
