"""`edgeplane sites enroll` against moto's IoT registry, in this process: the thing, the
certificate issued for a key that stays here, the policy, the rotation, and a bundle the
real gateway runs as is, far enough to start its TLS handshake."""

from __future__ import annotations

import hashlib
import re
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from edge_gateway.config import load_config
from edgeplane_cli import app
from edgeplane_cli.site_bundle import AMAZON_ROOT_CA_1_SHA256
from edgeplane_dev.ports import LOOPBACK
from tests.support import PLAN_KEYS, REGION, wait_until

SITE = "shop-0042"
BIN = Path(sys.executable).parent


@pytest.fixture
def iot(monkeypatch) -> Iterator[Any]:
    """moto's IoT registry with what the deployment creates: the sites' thing type, group
    and policy (infra/device.py)."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("iot", region_name=REGION)
        client.create_thing_type(thingTypeName="edgeplane-site")
        client.create_thing_group(thingGroupName="edgeplane-sites")
        client.create_policy(policyName="edgeplane-site", policyDocument='{"Statement": []}')
        yield client


@pytest.fixture
def issues_for_the_request(monkeypatch) -> None:
    """AWS IoT issues a certificate for the key of the signing request; moto issues one for
    a key of its own (its create_certificate_from_csr keeps only the subject). This makes it
    issue as AWS does, signed by a CA of the test's."""
    from moto.iot.models import IoTBackend

    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test issuing CA")])

    def create_certificate_from_csr(self: IoTBackend, csr: str, set_as_active: bool) -> Any:
        request = x509.load_pem_x509_csr(csr.encode())
        now = datetime.now(UTC)
        certificate = (x509.CertificateBuilder().subject_name(request.subject)
                       .issuer_name(issuer).public_key(request.public_key())
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - timedelta(minutes=1))
                       .not_valid_after(now + timedelta(days=365))
                       .sign(ca_key, hashes.SHA256()))
        pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        return self.register_certificate(pem, ca_certificate_pem=None,
                                         set_as_active=set_as_active, status="INACTIVE")

    monkeypatch.setattr(IoTBackend, "create_certificate_from_csr", create_certificate_from_csr)


def enroll(out: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["sites", "enroll", SITE, "--out", str(out),
                                      "--plan-key", PLAN_KEYS[0], *args])
    return result


def certificates(iot) -> dict[str, str]:
    """Every certificate of the account: id -> status."""
    return {c["certificateId"]: c["status"] for c in iot.list_certificates()["certificates"]}


def attached(iot) -> list[str]:
    return [arn.rsplit("/", 1)[-1]
            for arn in iot.list_thing_principals(thingName=SITE)["principals"]]


def test_the_bundle_holds_what_the_gateway_needs_and_the_key_stays_here(
        iot, issues_for_the_request, tmp_path):
    out = tmp_path / "bundle"
    result = enroll(out)
    assert result.exit_code == 0, result.output

    config = load_config(out / "gateway.toml")
    # moto makes up a new ATS endpoint at each DescribeEndpoint (AWS answers the account's)
    assert re.fullmatch(rf"[a-z0-9]+-ats\.iot\.{REGION}\.amazonaws\.com", config.mqtt.host)
    assert (config.site, config.mqtt.port, config.mqtt.tls) == (SITE, 8883, True)
    assert f"endpoint {config.mqtt.host}:8883" in result.output
    assert config.mqtt.client_id is None  # the site id: what the policy keys on
    assert config.plan_keys == PLAN_KEYS and config.machines == ()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "gateway.toml": 0o600, "site.key": 0o600, "site.crt": 0o600, "ca.pem": 0o600}

    (certificate_id,) = attached(iot)
    assert certificates(iot) == {certificate_id: "ACTIVE"}
    stored = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"]
    assert stored["certificatePem"].strip() == (out / "site.crt").read_text().strip()
    key = serialization.load_pem_private_key((out / "site.key").read_bytes(), None)
    issued = x509.load_pem_x509_certificate(stored["certificatePem"].encode())
    assert issued.public_key() == key.public_key()
    assert "PRIVATE KEY" not in str(stored)
    assert [p["policyName"] for p in iot.list_attached_policies(
        target=stored["certificateArn"])["policies"]] == ["edgeplane-site"]
    assert iot.describe_thing(thingName=SITE)["thingTypeName"] == "edgeplane-site"
    assert iot.list_things_in_thing_group(thingGroupName="edgeplane-sites")["things"] == [SITE]

    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    assert ca.fingerprint(hashes.SHA256()).hex() == AMAZON_ROOT_CA_1_SHA256
    assert f"bundle: {out / 'gateway.toml'}" in result.output


def test_enrolling_again_rotates_the_certificate_and_keeps_the_machines(
        iot, issues_for_the_request, tmp_path):
    out = tmp_path / "bundle"
    machines = tmp_path / "machines.toml"
    machines.write_text('[[machines]]\nid = "srv-1"\nprotocol = "ipmi"\naddress = "10.0.0.12"\n'
                        'username = "admin"\npassword = "pw"\n')
    assert enroll(out, "--machines", str(machines)).exit_code == 0
    (first,) = attached(iot)
    first_key = (out / "site.key").read_bytes()

    result = enroll(out)
    assert result.exit_code == 0, result.output
    (second,) = attached(iot)
    assert second != first and certificates(iot) == {first: "INACTIVE", second: "ACTIVE"}
    assert f"deactivated the site's earlier certificate(s): {first}" in result.output
    assert (out / "site.key").read_bytes() != first_key
    assert [m.id for m in load_config(out / "gateway.toml").machines] == ["srv-1"]


def test_a_missing_deployment_is_named_and_nothing_is_created(iot, tmp_path):
    iot.delete_policy(policyName="edgeplane-site")
    result = enroll(tmp_path / "bundle")
    assert result.exit_code == 2
    assert "IoT policy 'edgeplane-site' not found" in result.stderr
    assert "--prefix edgeplane-<stage>" in result.stderr
    assert iot.list_things()["things"] == [] and certificates(iot) == {}
    assert not (tmp_path / "bundle").exists()


def test_the_stack_of_a_stage_is_found_by_its_prefix(iot, issues_for_the_request, tmp_path):
    iot.create_thing_type(thingTypeName="edgeplane-prod-site")
    iot.create_thing_group(thingGroupName="edgeplane-prod-sites")
    iot.create_policy(policyName="edgeplane-prod-site", policyDocument='{"Statement": []}')
    assert enroll(tmp_path / "bundle", "--prefix", "edgeplane-prod").exit_code == 0
    assert iot.describe_thing(thingName=SITE)["thingTypeName"] == "edgeplane-prod-site"


def test_a_certificate_for_another_key_is_refused_and_withdrawn(iot, tmp_path):
    """moto as it is issues a certificate for a key of its own: the bundle would never
    connect, so none is written, and the certificate is deactivated and deleted."""
    result = enroll(tmp_path / "bundle")
    assert result.exit_code == 2
    assert "is not for the key of the signing request" in result.stderr
    assert certificates(iot) == {} and attached(iot) == []
    assert not (tmp_path / "bundle" / "site.key").exists()


@pytest.mark.parametrize("args, message", [
    (["--machines", "{machines}"], "it may hold only [[machines]] and [classes.NAME] tables"),
    (["--plan-key", "not-a-key"], "--plan-key #2 is not base64"),
    (["--ca-file", "{machines}"], "is not PEM certificates"),
])
def test_wrong_input_is_refused_before_anything_is_created(iot, tmp_path, args, message):
    machines = tmp_path / "machines.toml"
    machines.write_text('site = "other"\n')
    args = [a.format(machines=machines) for a in args]
    result = enroll(tmp_path / "bundle", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert iot.list_things()["things"] == [] and certificates(iot) == {}


def test_a_config_written_by_hand_is_not_replaced(iot, issues_for_the_request, tmp_path):
    (tmp_path / "gateway.toml").write_text('site = "shop-0042"\n')
    result = enroll(tmp_path)
    assert result.exit_code == 2 and "was not written by `edgeplane sites enroll`" in \
        result.stderr
    assert (tmp_path / "gateway.toml").read_text() == 'site = "shop-0042"\n'
    assert certificates(iot) == {}


def test_an_invalid_site_id_is_refused(iot, tmp_path):
    result = CliRunner().invoke(app, ["site", "enroll", "Shop 42", "--out", str(tmp_path),
                                      "--plan-key", PLAN_KEYS[0]])
    assert result.exit_code == 2 and "site id 'Shop 42' is invalid" in result.stderr


def test_the_plan_key_can_come_from_the_deployments_secret(iot, issues_for_the_request,
                                                           tmp_path):
    import boto3

    from chalicelib import signing

    pem = signing.generate_key_pem()
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="edgeplane-prod/plan-signing-key",
                                SecretString=pem.decode())["ARN"]
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["sites", "enroll", SITE, "--out", str(out),
                                      "--plan-key-secret", f"secretsmanager:{arn}"])
    assert result.exit_code == 0, result.output
    assert load_config(out / "gateway.toml").plan_keys == (
        signing.PlanSigner.from_pem(pem).public_key_b64,)
    assert b"PRIVATE" not in (out / "gateway.toml").read_bytes()


class HandshakeListener:
    """A TCP listener on loopback that records whether the first bytes a client sends are a
    TLS ClientHello (a handshake record whose first message is of type 1), then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.hello = threading.Event()
        self.first_bytes = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self.hello.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(10)
                try:
                    data = connection.recv(6)
                except OSError:
                    continue
                self.first_bytes = data
                if len(data) == 6 and data[0] == 0x16 and data[1] == 0x03 and data[5] == 0x01:
                    self.hello.set()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


def test_the_gateway_runs_the_bundle_as_it_is_up_to_its_tls_handshake(
        iot, issues_for_the_request, tmp_path):
    """The bundle, with the endpoint put on a loopback listener, runs under the real
    ``edge-gateway run``: it loads its config, its key, certificate and CA, and opens the
    TLS connection to the endpoint."""
    listener = HandshakeListener()
    out = tmp_path / "bundle"
    try:
        result = enroll(out, "--endpoint", LOOPBACK, "--port", str(listener.port))
        assert result.exit_code == 0, result.output
        log = tmp_path / "gateway.log"
        with open(log, "wb") as sink:
            gateway = subprocess.Popen([str(BIN / "edge-gateway"), "run", "--config",
                                        str(out / "gateway.toml")], stdout=sink, stderr=sink)
        try:
            wait_until(lambda: listener.hello.is_set() or gateway.poll() is not None,
                       timeout=60, what="a ClientHello from the gateway, or its exit")
            assert gateway.poll() is None, log.read_text()
            assert listener.hello.is_set(), listener.first_bytes
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    finally:
        listener.close()
    assert f"site {SITE}: gateway" in log.read_text()


def test_the_pinned_ca_is_amazon_root_ca_1_of_certifi():
    import certifi

    from edgeplane_cli.site_bundle import amazon_root_ca

    pem = amazon_root_ca()
    certificate = x509.load_pem_x509_certificate(pem.encode())
    assert certificate.subject.rfc4514_string() == "CN=Amazon Root CA 1,O=Amazon,C=US"
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert hashlib.sha256(der).hexdigest() == AMAZON_ROOT_CA_1_SHA256
    assert pem.strip() in Path(certifi.where()).read_text()
