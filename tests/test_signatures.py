"""Plan signatures piece by piece: the wire contract's envelope (what is signed, each field's
bounds), the gateway's verifier, and the cloud's signer (its key from a file or Secrets
Manager, nothing sent without one, the expiry it gives). A gateway refusing plans on the
broker is tests/test_signed_plans.py."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from chalicelib import signing
from chalicelib.errors import NotConfigured
from chalicelib.plans import PLAN_BYTES
from edge_gateway.errors import ConfigError
from edge_gateway.trust import PlanVerifier, SignatureError
from edgeplane import protocol
from edgeplane.protocol import Cancel, Plan, PlanStep, ProtocolError
from tests.support import AUTH, PLAN_KEYS, PLAN_SIGNER, call, sign, signed
from tests.test_hostile_messages import make_sites, start_rollout

SITE = "shop-0042"
NOW = 1_795_550_000.0
DAY = 86400.0
EXECUTION = f"r-1.{SITE}"


def power_on(**changes: object) -> Plan:
    plan = Plan(site=SITE, id="6f1c0d6a9b7e4c2f8a1d3e5b7c9f0a12", ts=NOW,
                execution_id=EXECUTION, rollout_id="r-1",
                steps=[PlanStep("power.ensure", {"state": "on"}, ["srv-1", "srv-2"])])
    return dataclasses.replace(plan, **changes)


@pytest.fixture
def verifier() -> PlanVerifier:
    return PlanVerifier(PLAN_KEYS)


@pytest.fixture
def no_signer(monkeypatch):
    """A cloud with no signing key configured (the tests' signer uninstalled meanwhile)."""
    monkeypatch.delenv(signing.SETTING, raising=False)
    signing.install(None)
    yield
    signing.install(PLAN_SIGNER)


# --- the envelope ----------------------------------------------------------------------------


def test_what_is_signed_is_the_canonical_object_with_the_signature_reduced():
    data = power_on().to_dict()
    envelope = signed(data, NOW + 60)["signature"]
    assert sorted(envelope) == ["expires", "key", "value"]
    raw = base64.b64decode(PLAN_SIGNER.public_key_b64)
    assert envelope["key"] == protocol.key_id(raw) == PLAN_SIGNER.key_id
    assert envelope["key"].startswith("ed25519:") and len(envelope["key"]) == 24
    assert envelope["expires"] == NOW + 60 and len(envelope["value"]) == 86

    what = json.dumps({**data, "signature": {"key": envelope["key"], "expires": NOW + 60}},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert protocol.signed_bytes(data, envelope["key"], NOW + 60) == what
    unsigned, signature = protocol.split_signature({**data, "signature": envelope})
    assert unsigned == data
    Ed25519PublicKey.from_public_bytes(raw).verify(signature.value, what)  # or raises


def test_the_receiver_verifies_what_it_parsed_whatever_the_bytes(verifier):
    cancel = Cancel(site=SITE, execution_id=EXECUTION, reason="arrêt ✓ demandé")
    wire = sign(cancel, NOW + 60)
    data = json.loads(wire)
    respaced = json.dumps(dict(reversed(data.items())), indent=2, ensure_ascii=True).encode()
    assert b"\\u00ea" in respaced and b"\\u00ea" not in protocol.canonical(data)
    twice = wire[:-1] + b',"reason":"something else","reason":' + \
        json.dumps(cancel.reason).encode() + b"}"
    for payload in (wire, respaced, twice):
        assert verifier.verify(protocol.parse_json(payload), now=NOW) == cancel.to_dict()
    last_wins = wire[:-1] + b',"reason":"something else"}'
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(protocol.parse_json(last_wins), now=NOW)


def test_an_integer_expiry_stays_an_integer_and_verifies(verifier):
    wire = sign(power_on(), int(NOW) + 60)
    assert b'"expires":1795550060,' in wire
    assert verifier.verify(protocol.parse_json(wire), now=NOW) == power_on().to_dict()


def test_padding_on_the_value_is_accepted():
    data = signed(power_on(), NOW + 60)
    padded = {**data, "signature": {**data["signature"],
                                    "value": data["signature"]["value"] + "=="}}
    assert protocol.split_signature(padded)[1] == protocol.split_signature(data)[1]


GOOD_VALUE = "A" * 86


@pytest.mark.parametrize("change, error", [
    (lambda s: None, "the message is not signed (no field 'signature')"),
    (lambda s: "ed25519", "field 'signature' must be an object, not 'ed25519'"),
    (lambda s: {**s, "alg": "EdDSA"}, "field 'signature' has unknown field(s) alg; it has "
                                      "key, expires, value"),
    (lambda s: {"expires": s["expires"], "value": s["value"]}, "field 'signature' has no key"),
    (lambda s: {"key": s["key"]}, "field 'signature' has no expires, value"),
    (lambda s: {**s, "key": 7}, "signature field 'key' must be a string, not 7"),
    (lambda s: {**s, "key": "k" * 129}, "signature field 'key' is 129 characters long; at "
                                        "most 128"),
    (lambda s: {**s, "expires": "soon"}, "signature field 'expires' must be a finite number"),
    (lambda s: {**s, "expires": True}, "signature field 'expires' must be a finite number"),
    (lambda s: {**s, "expires": math.nan}, "signature field 'expires' must be a finite number"),
    (lambda s: {**s, "expires": math.inf}, "signature field 'expires' must be a finite number"),
    (lambda s: {**s, "expires": -5}, "signature field 'expires' must be 0 or a number from"),
    (lambda s: {**s, "expires": 1e12}, "signature field 'expires' must be 0 or a number from"),
    (lambda s: {**s, "value": None}, "signature field 'value' must be a string, not None"),
    (lambda s: {**s, "value": "A" * 200}, "signature field 'value' is 200 characters long; "
                                          "at most 128"),
    (lambda s: {**s, "value": "not base64!"}, "signature field 'value' is not base64url"),
    (lambda s: {**s, "value": "+/" + GOOD_VALUE[2:]}, "signature field 'value' is not "
                                                      "base64url"),
    (lambda s: {**s, "value": GOOD_VALUE[:85]}, "signature field 'value' is not base64url"),
    (lambda s: {**s, "value": "AAAA"}, "signature field 'value' is 3 bytes; an Ed25519 "
                                       "signature is 64"),
    (lambda s: {**s, "value": GOOD_VALUE + "AA"}, "signature field 'value' is 66 bytes"),
])
def test_each_malformed_signature_field_is_named(change, error):
    data = signed(power_on(), NOW + 60)
    envelope = change(data["signature"])
    broken = {k: v for k, v in data.items() if k != "signature"} if envelope is None else \
        {**data, "signature": envelope}
    with pytest.raises(ProtocolError) as refused:
        protocol.split_signature(broken)
    assert error in str(refused.value)
    assert (refused.value.kind, refused.value.execution_id) == ("plan", EXECUTION)


# --- the gateway's verifier ------------------------------------------------------------------


def test_a_good_signature_gives_the_message_without_it(verifier):
    data = signed(power_on(), NOW + DAY)
    assert verifier.verify(data, now=NOW) == power_on().to_dict()
    assert verifier.key_ids == [PLAN_SIGNER.key_id]


def test_each_bad_signature_is_refused_saying_why(verifier):
    other = signing.PlanSigner(Ed25519PrivateKey.generate())
    tampered = signed(power_on(), NOW + DAY)
    tampered["steps"][0]["params"]["state"] = "off"
    cases = {
        f"the signature's key {other.key_id} is not one this gateway pins (it pins "
        f"{PLAN_SIGNER.key_id})": signed(power_on(), NOW + DAY, other),
        f"the signature by key {PLAN_SIGNER.key_id} does not verify: the message was "
        "changed after it was signed": tampered,
        "the signature expired at 2026-11-24T19:53:20Z": signed(power_on(), NOW),
        "the signature expires at 2026-12-24T19:53:21Z, more than 30 days ahead "
        "(MAX_SIGNATURE_TTL)": signed(power_on(), NOW + 30 * DAY + 1),
    }
    for reason, data in cases.items():
        with pytest.raises(SignatureError) as refused:
            verifier.verify(data, now=NOW)
        assert str(refused.value) == reason
        assert (refused.value.kind, refused.value.execution_id) == ("plan", EXECUTION)
    assert verifier.verify(signed(power_on(), NOW + 30 * DAY), now=NOW)  # the bound itself


def test_a_verifier_needs_a_good_key():
    with pytest.raises(ConfigError, match="no plan key is pinned"):
        PlanVerifier([])
    with pytest.raises(ConfigError, match="plan key 1 is 3 bytes; an Ed25519 public key is 32"):
        PlanVerifier([*PLAN_KEYS, "AAAA"])


# --- the cloud's signer ----------------------------------------------------------------------


def test_a_new_key_is_written_private_and_whole_and_never_replaced(tmp_path, monkeypatch,
                                                                    no_signer):
    path = tmp_path / "keys" / "plan-signing.pem"
    public = signing.write_new_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["plan-signing.pem"]
    with pytest.raises(FileExistsError):
        signing.write_new_key(path)
    assert signing.public_key_of(path) == public
    monkeypatch.setenv(signing.SETTING, str(path))
    signer = signing.current()
    assert signer.public_key_b64 == public and signing.current() is signer
    assert PlanVerifier([public]).verify(json.loads(signer.sign(power_on(), NOW + 60)),
                                         now=NOW)


def test_the_key_can_come_from_secrets_manager_read_once(moto_dynamodb, monkeypatch,
                                                         no_signer):
    import boto3

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    pem = signing.generate_key_pem()
    arn = secrets.create_secret(Name="edgeplane/plan-signing", SecretString=pem.decode())["ARN"]
    expected = signing.PlanSigner.from_pem(pem).key_id
    monkeypatch.setenv(signing.SETTING, f"secretsmanager:{arn}")
    assert signing.current().key_id == expected
    secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    assert signing.current().key_id == expected, "read once per process"

    monkeypatch.setenv(signing.SETTING, "secretsmanager:edgeplane/absent")
    with pytest.raises(NotConfigured, match="secret 'edgeplane/absent' cannot be read"):
        signing.current()


def test_without_a_usable_key_nothing_can_be_signed(tmp_path, monkeypatch, no_signer):
    with pytest.raises(NotConfigured) as unset:
        signing.current()
    assert unset.value.message.startswith("EDGEPLANE_PLAN_SIGNING_KEY is not configured: no "
                                          "plan or cancel can be signed")
    monkeypatch.setenv(signing.SETTING, str(tmp_path / "absent.pem"))
    with pytest.raises(NotConfigured, match="absent.pem cannot be read"):
        signing.current()
    other = tmp_path / "ec.pem"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    monkeypatch.setenv(signing.SETTING, str(other))
    with pytest.raises(NotConfigured, match="ec.pem is not an Ed25519 key"):
        signing.current()


def test_a_signature_lasts_as_long_as_the_plan_and_never_past_the_bound():
    assert signing.expiry(power_on(expires_at=NOW + 3 * DAY), NOW) == NOW + 3 * DAY
    assert signing.expiry(power_on(expires_at=NOW + 90 * DAY), NOW) == NOW + 29 * DAY
    assert signing.expiry(power_on(), NOW) == NOW + 7 * DAY
    cancel = Cancel(site=SITE, execution_id=EXECUTION)
    assert signing.expiry(cancel, NOW) == NOW + 7 * DAY
    assert signing.LONGEST_TTL < protocol.MAX_SIGNATURE_TTL


def test_a_plan_rendered_at_the_size_limit_still_fits_once_dispatched_and_signed(verifier):
    plan = power_on(steps=[PlanStep("bios.apply", {"attributes": {"Banner": ""}}, ["srv-1"])])
    room = PLAN_BYTES - len(plan.encode())
    plan = power_on(steps=[PlanStep("bios.apply", {"attributes": {"Banner": "x" * room}},
                                    ["srv-1"])])
    assert len(plan.encode()) == PLAN_BYTES
    sent = dataclasses.replace(plan, expires_at=protocol.MAX_TIME - 0.001,
                               detail=protocol.Detail.OUTCOMES, observe=False)
    wire = PLAN_SIGNER.sign(sent, protocol.MAX_TIME - 0.001)
    assert len(wire) <= protocol.MAX_MESSAGE_BYTES
    assert len(wire) - len(sent.encode()) <= 175, "the envelope, as documented"
    data = verifier.verify(protocol.parse_json(wire), now=protocol.MAX_TIME - DAY)
    assert protocol.decode_object(data, protocol.plan_topic(SITE)) == sent


# --- what the cloud sends ----------------------------------------------------------------


def test_dispatch_signs_each_plan_until_its_rollout_expires(aws, published):
    from chalicelib.models import Rollout

    sites = make_sites(2)
    rollout_id = start_rollout(published, sites)
    expires_at = float(Rollout.get(rollout_id).expires_at)
    for _, payload in published.sent:
        unsigned, signature = protocol.split_signature(json.loads(payload))
        assert signature.key == PLAN_SIGNER.key_id
        assert signature.expires == expires_at == unsigned["expires_at"]
    assert sorted(plan.site for plan in published.plans()) == sites  # verified, decoded


def test_a_cancel_is_signed_for_a_week(aws, published):
    from chalicelib.rollouts import control

    sites = make_sites(1)
    rollout_id = start_rollout(published, sites)
    control.cancel(rollout_id, published, clock=lambda: NOW)
    topic, payload = published.sent[-1]
    assert topic == protocol.cancel_topic(sites[0])
    data = PlanVerifier(PLAN_KEYS).verify(json.loads(payload), now=NOW)
    assert json.loads(payload)["signature"]["expires"] == NOW + 7 * DAY
    assert protocol.decode_object(data, topic).KIND == "cancel"


def test_without_a_signing_key_no_rollout_is_created(api, published, no_signer):
    make_sites(1)
    status, body = call(api, "POST", "/rollouts", {
        "sites": ["shop-000"], "steps": [{"task": "power.ensure", "params": {"state": "on"}}]})
    assert status == 503, body
    assert body["error"]["code"] == "not_configured"
    assert "EDGEPLANE_PLAN_SIGNING_KEY is not configured" in body["error"]["message"]
    assert call(api, "GET", "/rollouts", headers=AUTH)[1]["rollouts"] == []
    assert published.sent == []


def test_a_rollout_is_canceled_even_without_a_signing_key(aws, published, monkeypatch, caplog):
    from chalicelib.models import Rollout
    from chalicelib.rollouts import control

    sites = make_sites(1)
    rollout_id = start_rollout(published, sites)
    sent = len(published.sent)
    monkeypatch.delenv(signing.SETTING, raising=False)
    signing.install(None)
    try:
        with caplog.at_level(logging.ERROR, logger="chalicelib.rollouts.control"):
            control.cancel(rollout_id, published)
    finally:
        signing.install(PLAN_SIGNER)
    assert Rollout.get(rollout_id, consistent_read=True).state == "canceled"
    assert len(published.sent) == sent, "no unsigned cancel goes out"
    assert "its 1 sites with the plan are not told" in caplog.text
