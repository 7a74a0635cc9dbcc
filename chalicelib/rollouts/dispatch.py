"""Sending plans: the current wave's due, in-window queued sites, within the limits.

A site's plan is claimed before it is published (queued -> sent, conditional), so of two
writers dispatching at once only one sends it; a plan that could not be published is given
back to the queue for the next advance. Every plan is signed (``chalicelib.signing``): with
no signing key, nothing is claimed or sent.

Dispatch never waits on a broker that is down: it asks the publisher first
(``publisher.unavailable``) and, when the broker is not there, claims nothing and leaves
the plans queued; a round whose publish fails because the broker went away stops claiming.
The next dispatch (the tick, a result, a retried request) sends them once it is back: a
request that creates or resumes a rollout answers at once either way.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from chalicelib import gateway_versions, signing
from chalicelib.clock import Clock
from chalicelib.definitions.render import RenderedSite
from chalicelib.errors import Conflict, PublishFailed
from chalicelib.models import (
    Execution,
    Rollout,
    Site,
    conditional_update,
    conditional_write,
    queue_key,
)
from chalicelib.publisher import Publisher, unavailable
from chalicelib.rollouts import policy as rules
from chalicelib.rollouts import rendering
from chalicelib.rollouts.bookkeeping import Changes
from chalicelib.rollouts.moves import transition
from chalicelib.schemas import PolicyIn
from edgeplane import protocol
from edgeplane.protocol import ExecutionState
from edgeplane.windows import Window

LOG = logging.getLogger(__name__)


DISPATCH_BATCH = 500  # queued executions read per query page
DISPATCH_WORKERS = 8  # claims and publishes in flight at once
DISPATCH_ROUND = 1000  # sites claimed per round; the lease is renewed between rounds
# Plans rendered (their sites read) a chunk at a time, each chunk's sent while the next is
# rendered: a wave's first plans go out after 100 renders, not after a round's 1,000.
PREPARE_CHUNK = 100


def send_due(rollout: Rollout, policy: PolicyIn, publisher: Publisher,
              clock: Clock) -> int:
    """Send the plans of the current wave's due, in-window queued sites, within the limits.

    Claims and publishes run ``DISPATCH_WORKERS`` at a time (each claim is one conditional
    update, a round trip of its own); their counters and events are written once per round.
    """
    now = clock()
    minute = int(now // 60)
    started = int(rollout.rate_count) if int(rollout.rate_minute) == minute else 0
    room = min(rules.room(policy, int(rollout.in_flight), started), DISPATCH_ROUND)
    if room <= 0:
        return 0
    windows: dict[str, Window] = {}
    chosen = _due(rollout.rollout_id, int(rollout.current_wave), now, room, policy, windows)
    if not chosen:
        return 0
    down = unavailable(publisher)
    if down is not None:
        LOG.warning("rollout %s: %d plans wait for the broker, which does not take them "
                    "now: %s", rollout.rollout_id, len(chosen), down)
        return 0
    signer = signing.current()  # NotConfigured before any claim: nothing goes unsigned
    with Changes() as changes:
        sender = _Sender(rollout, policy, publisher, signer, clock, changes, windows)
        if len(chosen) == 1:
            sender.prepare(chosen)
            sent = int(sender.send(chosen[0]))
        else:
            with ThreadPoolExecutor(min(DISPATCH_WORKERS, len(chosen)),
                                    thread_name_prefix="dispatch") as pool:
                pending = []
                for first in range(0, len(chosen), PREPARE_CHUNK):
                    chunk = chosen[first:first + PREPARE_CHUNK]
                    sender.prepare(chunk)  # while the chunks before are being sent
                    pending += [pool.submit(sender.send, execution) for execution in chunk]
                sent = sum(future.result() for future in pending)
    if sent:
        rate = ([Rollout.rate_count.add(sent)] if int(rollout.rate_minute) == minute else
                [Rollout.rate_minute.set(minute), Rollout.rate_count.set(sent)])
        conditional_write(Rollout(rollout.rollout_id), rate)
    return sent


class _Sender:
    """Claims one queued execution and publishes its plan (one per thread at a time)."""

    def __init__(self, rollout: Rollout, policy: PolicyIn, publisher: Publisher,
                 signer: signing.PlanSigner, clock: Clock, changes: Changes,
                 windows: dict[str, Window]) -> None:
        self.rollout = rollout
        self.windows = windows  # of the sites whose plans carry a window (``_open``)
        self.policy = policy
        self.publisher = publisher
        self.signer = signer
        self.clock = clock
        self.changes = changes
        self._rendered: dict[str, RenderedSite] = {}
        self._problems: dict[str, str] = {}
        self._judged: set[str] | None = None  # sites whose drift is judged (None: all)
        self.broker_down: str | None = None  # set when a publish failed with the broker gone

    def send(self, execution: Execution) -> bool:
        if self.broker_down is not None:  # the rest of the round stays queued
            return False
        site_id = execution.site_id
        try:
            steps, desired = self._plan_of(execution)
        except Conflict as exc:  # a plan rendered now: the site changed since the create
            transition(execution, ExecutionState.FAILED, self.clock, message=exc.message,
                       changes=self.changes)
            return False
        plan = protocol.Plan(site=site_id, execution_id=execution.execution_id,
                             rollout_id=self.rollout.rollout_id, steps=steps,
                             expires_at=self.rollout.expires_at,
                             detail=protocol.Detail(self.policy.report),
                             observe=self._judged is None or site_id in self._judged,
                             window=self.windows.get(site_id))
        payload = self.signer.sign(plan, signing.expiry(plan, self.clock()))
        # The plan rendered now is kept with the claim: the results name steps by place.
        rendered = {} if execution.plan_steps is not None else {
            "plan_steps": [asdict(step) for step in steps]}
        # Claim first: of two writers dispatching at once (a result and the tick), only the
        # one whose queued -> sent update takes publishes the plan.
        if not transition(execution, ExecutionState.SENT, self.clock, message="",
                          changes=self.changes, plan_message_id=plan.id,
                          sent_at=self.clock(), **rendered):
            return False
        try:
            self.publisher.publish(protocol.plan_topic(site_id), payload)
        except PublishFailed as exc:
            LOG.error("rollout %s: plan for site %s not sent: %s", self.rollout.rollout_id,
                      site_id, exc.message)
            _unclaim(execution, f"plan not sent: {exc.message}", self.clock, self.changes)
            # One site's refusal is that site's; a broker gone is every site's.
            self.broker_down = unavailable(self.publisher)
            return False
        except Exception as exc:  # not a refusal we know: give the claim back, then raise
            _unclaim(execution, f"plan not sent: {exc}", self.clock, self.changes)
            raise
        if desired:
            rendering.set_desired(self.rollout.rollout_id, site_id, desired, self.clock)
        gateway_versions.record_desired(site_id, self.rollout.rollout_id, steps, self.clock)
        return True

    def prepare(self, chosen: list[Execution]) -> None:
        """What sending these needs, read together: the plans not stored, and which sites
        have a desired state (only there does the gateway report observed state after an
        inline-steps plan: nowhere else is it judged). Called for each chunk of a round,
        it adds to what the chunks before it prepared."""
        unrendered = [e.site_id for e in chosen if e.plan_steps is None]
        if self.rollout.blueprint is not None:
            self.render(unrendered)
            return
        sites = rendering.read_sites([e.site_id for e in chosen], full=False)
        judged = {site_id for site_id, site in sites.items() if site.has_desired}
        # A new set, not one changed in place: sends of earlier chunks read it meanwhile.
        self._judged = judged if self._judged is None else self._judged | judged
        self.render(unrendered, sites)

    def render(self, site_ids: list[str], sites: dict[str, Site] | None = None) -> None:
        """Render, together, the plans of the sites whose executions were stored without
        one (every site past the first wave of a large rollout: see ``create``)."""
        if not site_ids:
            return
        source = rendering.source_of_rollout(self.rollout)
        rendered, problems = rendering.render_many(self.rollout.rollout_id, site_ids, source,
                                                   sites)
        self._rendered.update(rendered)
        self._problems.update(problems)

    def _plan_of(self, execution: Execution) -> tuple[list[protocol.PlanStep],
                                                      dict[str, Any]]:
        """The plan stored with the execution, or the one ``render`` made for its site."""
        if execution.plan_steps is not None:
            return ([protocol.PlanStep(**step) for step in execution.plan_steps],
                    execution.desired or {})
        site_id = execution.site_id
        if site_id in self._problems:
            raise Conflict(self._problems[site_id])
        if site_id not in self._rendered:  # not among those rendered for this round
            self.render([site_id])
            return self._plan_of(execution)
        found = self._rendered[site_id]
        return found.plan.steps, found.desired


def _unclaim(execution: Execution, message: str, clock: Clock, changes: Changes) -> None:
    """Back to queued after a plan could not be published (the next advance tries again)."""
    now = clock()
    execution.message = message
    actions = [Execution.state.set(ExecutionState.QUEUED), Execution.message.set(message),
               Execution.queue_key.set(queue_key(int(execution.wave), now, execution.site_id)),
               Execution.sent_at.remove(), Execution.updated_at.set(now)]
    if conditional_update(execution, actions, Execution.state == ExecutionState.SENT):
        changes.moved(execution, ExecutionState.SENT, ExecutionState.QUEUED, now)


def _due(rollout_id: str, wave: int, now: float, room: int, policy: PolicyIn,
         windows: dict[str, Window]) -> list[Execution]:
    """Up to ``room`` queued executions of ``wave`` whose time has come and whose site's
    maintenance window is open (unless the policy ignores windows). ``windows`` gets the
    window of each site that has one: its plan carries it, so that a gateway that gets the
    plan late (it was offline) holds it until the window opens again."""
    low, high = queue_key(wave, 0, ""), queue_key(wave, now, "~")
    chosen: list[Execution] = []
    page = Execution.queued.query(rollout_id, Execution.queue_key.between(low, high),
                                  page_size=DISPATCH_BATCH)
    batch: list[Execution] = []
    for execution in page:
        batch.append(execution)
        if len(batch) >= DISPATCH_BATCH:
            chosen += _open(batch, now, policy, windows)[:room - len(chosen)]
            batch = []
            if len(chosen) >= room:
                return chosen
    chosen += _open(batch, now, policy, windows)[:room - len(chosen)]
    return chosen


def _open(batch: list[Execution], now: float, policy: PolicyIn,
          windows: dict[str, Window]) -> list[Execution]:
    if not batch or not policy.maintenance_windows:
        return batch
    sites = {site.site_id: site for site in Site.batch_get([e.site_id for e in batch])}
    for site in sites.values():
        window = rules.plan_window(site.maintenance_window, site.timezone, policy)
        if window is not None:
            windows[site.site_id] = window
    return [e for e in batch if e.site_id in sites and rules.in_window(
        sites[e.site_id].maintenance_window, sites[e.site_id].timezone, now)]
