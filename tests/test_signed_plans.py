"""A gateway runs only what the cloud signed: on the real broker, with a simulated machine.

Every plan it refuses for its signature (none, changed after signing, by a key the site does
not pin, expired, expiring too far ahead) is answered at once with a ``rejected`` result
saying why, and its BMC is not touched. A plan sent again is not run again; keys rotate
with two pinned at once; a cancel that does not verify is never acted on. The cloud ends a
rejected execution at once.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.signing import PlanSigner
from edge_gateway.journal import Journal
from edgeplane import protocol
from edgeplane.protocol import Cancel, Plan, PlanStep, PowerState, Result
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.simulated_driver import SimulatedMachine
from tests.support import PLAN_KEYS, GatewaySite, sign, signed, up, wait_until

SITE = "shop-0707"
MACHINE = "srv-1"
PLAN_TOPIC = protocol.plan_topic(SITE)
CANCEL_TOPIC = protocol.cancel_topic(SITE)
DAY = 86400.0
REFUSED = "the site's gateway refused the plan: "


class SignedSite(GatewaySite):
    """One site's gateway with one simulated machine (off), pinning ``plan_keys``."""

    def __init__(self, tmp_path, port: int, plan_keys: tuple[str, ...] = PLAN_KEYS) -> None:
        super().__init__(tmp_path, port, SITE, {MACHINE: SimulatedMachine(power_delay=0.2)},
                         observe_interval=0, plan_keys=plan_keys)


@pytest.fixture
def site(tmp_path, broker):
    running = SignedSite(tmp_path, broker.port)
    yield running
    running.stop()


def power_on(execution_id: str = f"r-1.{SITE}", **changes: object) -> Plan:
    plan = Plan(site=SITE, execution_id=execution_id, rollout_id=execution_id.split(".")[0],
                observe=False, steps=[PlanStep("power.ensure", {"state": "on"}, [MACHINE])])
    return dataclasses.replace(plan, **changes)


def results_of(recorder: Recorder, execution_id: str, count: int = 1) -> list[Result]:
    found = recorder.wait_for(
        lambda found: len([r for r in found if r.execution_id == execution_id]) >= count,
        Result)
    return [r for r in found if r.execution_id == execution_id]


def result_of(recorder: Recorder, execution_id: str) -> Result:
    return results_of(recorder, execution_id)[0]


def a_key() -> PlanSigner:
    return PlanSigner(Ed25519PrivateKey.generate())


# --- refused plans -----------------------------------------------------------------------------


def _tampered() -> bytes:
    data = signed(power_on(f"p-tampered.{SITE}"))
    data["steps"][0]["params"]["state"] = "off"  # changed after it was signed
    return protocol.encode_object(data)


REFUSALS = {
    "unsigned": (lambda: power_on(f"p-unsigned.{SITE}").encode(),
                 "the message is not signed (no field 'signature')"),
    "tampered": (_tampered, "does not verify: the message was changed after it was signed"),
    "unpinned-key": (lambda: sign(power_on(f"p-unpinned-key.{SITE}"), signer=a_key()),
                     "is not one this gateway pins"),
    "expired": (lambda: sign(power_on(f"p-expired.{SITE}"), time.time() - 60),
                "the signature expired at "),
    "beyond-30-days": (lambda: sign(power_on(f"p-beyond-30-days.{SITE}"),
                                    time.time() + 31 * DAY),
                       "more than 30 days ahead (MAX_SIGNATURE_TTL)"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_a_plan_that_does_not_verify_is_rejected_saying_why_and_runs_nothing(site, recorder,
                                                                             name):
    payload, reason = REFUSALS[name]
    assert site.start().wait_for_inventory(10)
    calls = list(site.machine.calls)
    recorder.publish(PLAN_TOPIC, payload())
    result = result_of(recorder, f"p-{name}.{SITE}")
    assert (result.site, result.state, result.machines) == (SITE, "rejected", [])
    assert result.message.startswith(REFUSED) and reason in result.message
    assert site.machine.calls == calls, "the BMC was not touched"
    assert site.machine.power == PowerState.OFF
    assert site.gateway.journal.plan(result.execution_id) is None, "not the cloud's: not kept"
    assert site.gateway.idle.is_set(), "nothing was queued"


def test_a_forged_plan_cannot_take_the_execution_of_a_genuine_one(site, recorder):
    site.start()
    recorder.publish(PLAN_TOPIC, power_on().encode())  # unsigned, the genuine plan's id
    assert result_of(recorder, power_on().execution_id).state == "rejected"
    recorder.publish(PLAN_TOPIC, sign(power_on()))
    (_, genuine) = results_of(recorder, power_on().execution_id, count=2)
    assert genuine.state == "succeeded", genuine.message
    assert site.machine.power == PowerState.ON


# --- replays -------------------------------------------------------------------------------------


def test_a_plan_sent_again_is_not_run_again_but_answered_with_its_result(site, recorder):
    site.start()
    payload = sign(power_on())
    recorder.publish(PLAN_TOPIC, payload)
    assert result_of(recorder, power_on().execution_id).state == "succeeded"
    assert site.gateway.idle.wait(10)
    site.machine.power = PowerState.OFF  # someone powered it off since
    calls = list(site.machine.calls)

    recorder.publish(PLAN_TOPIC, payload)  # the same signed bytes, replayed
    first, again = results_of(recorder, power_on().execution_id, count=2)
    assert first.encode() == again.encode(), "the journaled result, sent again"
    assert site.machine.calls == calls
    site.stop()
    assert site.start().wait_for_inventory(10)  # the journal remembers across a restart
    calls = list(site.machine.calls)
    recorder.publish(PLAN_TOPIC, payload)
    results_of(recorder, power_on().execution_id, count=3)
    assert site.machine.calls == calls and site.machine.power == PowerState.OFF


# --- keys ----------------------------------------------------------------------------------------


def test_with_two_keys_pinned_plans_signed_by_either_run(tmp_path, broker, recorder):
    old, new = a_key(), a_key()
    site = SignedSite(tmp_path, broker.port, plan_keys=(old.public_key_b64,
                                                        new.public_key_b64))
    try:
        site.start()
        recorder.publish(PLAN_TOPIC, sign(power_on(f"r-old.{SITE}"), signer=old))
        recorder.publish(PLAN_TOPIC, sign(power_on(f"r-new.{SITE}"), signer=new))
        recorder.publish(PLAN_TOPIC, sign(power_on(f"r-other.{SITE}")))  # not pinned here
        assert result_of(recorder, f"r-old.{SITE}").state == "succeeded"
        assert result_of(recorder, f"r-new.{SITE}").state == "succeeded"
        assert result_of(recorder, f"r-other.{SITE}").state == "rejected"
    finally:
        site.stop()


def test_a_journaled_plan_resumes_only_while_its_key_is_pinned(tmp_path, broker, recorder):
    old, new = a_key(), a_key()
    journal = Journal(tmp_path / "journal.db")  # received, not started, when it stopped
    journal.accept_plan(f"r-old.{SITE}", sign(power_on(f"r-old.{SITE}"), signer=old))
    journal.accept_plan(f"r-new.{SITE}", sign(power_on(f"r-new.{SITE}"), signer=new))
    journal.close()
    site = SignedSite(tmp_path, broker.port, plan_keys=(new.public_key_b64,))  # old unpinned
    try:
        site.start()
        revoked = result_of(recorder, f"r-old.{SITE}")
        assert revoked.state == "rejected" and "is not one this gateway pins" in \
            revoked.message
        assert result_of(recorder, f"r-new.{SITE}").state == "succeeded"
    finally:
        site.stop()


def test_a_journaled_plan_whose_signature_expired_meanwhile_still_resumes(site, recorder):
    expires = time.time() + 1.0
    journal = Journal(site.config.journal)
    journal.accept_plan(power_on().execution_id, sign(power_on(), expires))
    journal.close()
    wait_until(lambda: time.time() > expires, what="the signature expiring")
    site.start()
    assert result_of(recorder, power_on().execution_id).state == "succeeded"


# --- cancels -------------------------------------------------------------------------------------


def test_a_forged_cancel_is_dropped_and_a_signed_one_cancels(site, recorder, caplog):
    site.machine.power_delay = 1.0  # the first step takes a while
    site.start()
    plan = dataclasses.replace(power_on(), steps=[
        PlanStep("power.ensure", {"state": "on"}, [MACHINE]),
        PlanStep("boot.override", {"target": "pxe"}, [MACHINE])])
    with caplog.at_level(logging.ERROR, logger="edge_gateway.agent"):
        recorder.publish(PLAN_TOPIC, sign(plan))
        recorder.wait_for(lambda found: len(found) >= 1, protocol.Progress)
        forged = Cancel(site=SITE, execution_id=plan.execution_id, reason="forged")
        recorder.publish(CANCEL_TOPIC, forged.encode())
        recorder.publish(CANCEL_TOPIC, sign(forged, signer=a_key()))
        result = result_of(recorder, plan.execution_id)
    assert result.state == "succeeded", "the plan ran to its end"
    assert caplog.text.count("/down/cancel' (") == 2
    assert "the message is not signed" in caplog.text
    assert "is not one this gateway pins" in caplog.text

    second = dataclasses.replace(plan, execution_id=f"r-2.{SITE}")
    site.machine.power = PowerState.OFF
    recorder.publish(PLAN_TOPIC, sign(second))
    recorder.wait_for(lambda found: any(p.execution_id == second.execution_id
                                        for p in found), protocol.Progress)
    recorder.publish(CANCEL_TOPIC, sign(Cancel(site=SITE, execution_id=second.execution_id,
                                               reason="operator")))
    canceled = result_of(recorder, second.execution_id)
    assert canceled.state == "canceled"
    assert [s.state for s in canceled.machines[0].steps] == ["succeeded", "skipped"]


# --- the cloud -----------------------------------------------------------------------------------


def test_a_site_that_does_not_pin_the_cloud_s_key_rejects_its_plan_and_the_cloud_ends_it(
        aws, published, tmp_path, broker, recorder):
    from chalicelib import ingest
    from chalicelib.models import Execution, Machine, Site
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn

    Site(SITE, name=SITE, timezone="UTC", online=True).save()
    Machine(SITE, MACHINE, protocol="ipmi", address="10.0.0.1", capabilities=["power"]).save()
    body = RolloutIn.model_validate({"sites": [SITE], "steps": [
        {"task": "power.ensure", "params": {"state": "on"}}], "policy": {"retries": {"max": 3}}})
    rollout_id = create.create(body, published).rollout.rollout_id
    site = SignedSite(tmp_path, broker.port, plan_keys=(a_key().public_key_b64,))
    try:
        site.start()
        recorder.publish(*published.sent[-1])  # the plan, as the cloud signed it
        execution_id = Execution.make_id(rollout_id, SITE)
        result = result_of(recorder, execution_id)
    finally:
        site.stop()
    assert result.state == "rejected" and "is not one this gateway pins" in result.message
    assert site.machine.power == PowerState.OFF
    ingest.handle_messages([up(result)])
    execution = Execution.get(rollout_id, SITE, consistent_read=True)
    assert execution.state == "rejected", "final at once, not retried"
    assert "is not one this gateway pins" in execution.message
