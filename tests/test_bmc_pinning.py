"""Pinning a BMC's certificate (``tls_fingerprint``) against a real HTTPS BMC: the Redfish
simulator serving a self-signed certificate made here, as most BMCs ship with.

The fingerprints the tests expect are computed by ``cryptography``, not by the gateway.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge_gateway.config import parse_config
from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.errors import BmcTlsError, ConfigError
from edge_gateway.executor import PlanExecutor
from edge_gateway.probe import probe
from edgeplane.protocol import BmcProtocol, MachineState, Plan, PlanStep, PowerState
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.redfish_sim import BmcOptions, RedfishSimulator
from tests.support import PLAN_KEYS

SITE = "shop-0042"
USERNAME, PASSWORD = "admin", "password"


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path
    fingerprint: str  # sha256:AB:CD:... as the gateway writes it


def self_signed(directory: Path, name: str) -> Certificate:
    """A BMC-like certificate: self-signed, for the loopback address."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    digest = certificate.fingerprint(hashes.SHA256())
    return Certificate(cert_file, key_file, "sha256:" + digest.hex(":").upper())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> Certificate:
    return self_signed(tmp_path_factory.mktemp("bmc-tls"), "bmc")


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory) -> Certificate:
    """Another BMC's (or an impostor's) certificate, never served here."""
    return self_signed(tmp_path_factory.mktemp("other-tls"), "other")


@pytest.fixture(scope="module")
def https_simulator(certificate) -> Iterator[RedfishSimulator]:
    with RedfishSimulator(options=BmcOptions(power_delay=0.1), tls_cert=certificate.cert_file,
                          tls_key=certificate.key_file) as simulator:
        yield simulator


@pytest.fixture
def bmc(https_simulator) -> RedfishSimulator:
    """The HTTPS BMC, with no request recorded yet (tests here only read it)."""
    https_simulator.bmc.received.clear()
    return https_simulator


def credentials(url: str, **tls: Any) -> BmcCredentials:
    return BmcCredentials(url, USERNAME, PASSWORD, **tls)


def describe(url: str, **tls: Any) -> Any:
    driver = create_driver(BmcProtocol.REDFISH, credentials(url, **tls), timeout=5)
    try:
        return driver.describe(), driver.get_power_state()
    finally:
        driver.close()


def edge_gateway_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "edge-gateway"), *args],
                          capture_output=True, text=True, timeout=60)


# --- the driver against the HTTPS BMC --------------------------------------------------------


def test_the_served_certificate_is_the_one_made_here(bmc, certificate):
    assert bmc.url.startswith("https://")
    result = probe(bmc.url, USERNAME, PASSWORD, timeout=5, verify_tls=False)
    assert result["tls"]["fingerprint"] == certificate.fingerprint


def test_the_pinned_certificate_is_accepted(bmc, certificate):
    info, power = describe(bmc.url, tls_fingerprint=certificate.fingerprint)
    assert info.manufacturer == "Contoso" and power == PowerState.ON
    assert bmc.bmc.received, "the calls reached the BMC"


def test_another_certificate_is_refused_before_any_request(bmc, certificate,
                                                           other_certificate):
    with pytest.raises(BmcTlsError) as refused:
        describe(bmc.url, tls_fingerprint=other_certificate.fingerprint)
    message = str(refused.value)
    for said in (bmc.url, "not the pinned one", f"expected {other_certificate.fingerprint}",
                 f"presented {certificate.fingerprint}"):
        assert said in message, f"{said!r} not in {message!r}"
    assert bmc.bmc.received == [], "nothing but the handshake reached the BMC"


def test_a_pinned_bmc_is_never_spoken_to_in_clear_text(certificate):
    """A pin on a plain HTTP address (the config refuses one) fails; it never falls back."""
    with RedfishSimulator() as plain:
        with pytest.raises(BmcTlsError, match="in clear text"):
            describe(plain.url, tls_fingerprint=certificate.fingerprint)
        assert plain.bmc.received == []


def test_by_default_the_self_signed_certificate_is_refused(bmc):
    with pytest.raises(BmcTlsError, match="certificate verify failed"):
        describe(bmc.url)
    assert bmc.bmc.received == []


def test_the_certificate_as_ca_bundle_is_accepted(bmc, certificate, other_certificate):
    info, _ = describe(bmc.url, verify_tls=str(certificate.cert_file))
    assert info.manufacturer == "Contoso"
    with pytest.raises(BmcTlsError, match="certificate verify failed"):
        describe(bmc.url, verify_tls=str(other_certificate.cert_file))


def test_with_a_ca_bundle_the_host_name_is_checked_too(bmc, certificate):
    """The certificate names 127.0.0.1 only: reached as ``localhost`` it is refused, on
    every connection (the bundle's context is shared, its checks are not relaxed)."""
    by_name = bmc.url.replace(LOOPBACK, "localhost")
    for _ in range(2):
        with pytest.raises(BmcTlsError, match="certificate verify failed"):
            describe(by_name, verify_tls=str(certificate.cert_file))
    assert bmc.bmc.received == []
    info, _ = describe(bmc.url, verify_tls=str(certificate.cert_file))
    assert info.manufacturer == "Contoso"


def test_a_machine_that_opts_out_is_not_checked_and_warned_about(bmc, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_gateway.config"):
        config = site_config(tmp_path, {"address": bmc.url, "verify_tls": False})
    assert "TLS certificate is not checked (verify_tls = false)" in caplog.text
    machine = config.machines[0]
    info, _ = describe(bmc.url, verify_tls=machine.credentials.verify_tls)
    assert info.manufacturer == "Contoso"


def test_a_mismatch_fails_the_machine_naming_it_and_both_fingerprints(
        bmc, tmp_path, certificate, other_certificate):
    config = site_config(tmp_path, {"address": bmc.url,
                                    "tls_fingerprint": other_certificate.fingerprint})
    executor = PlanExecutor(config, lambda m: create_driver(m.protocol, m.credentials,
                                                            timeout=m.timeout))
    plan = Plan(site=SITE, execution_id="r1.shop-0042", rollout_id="r1",
                steps=[PlanStep("power.ensure", {"state": "on"}, ["srv-1"])])
    (result,) = executor.execute(plan, lambda snapshot: None)
    assert result.state == MachineState.FAILED
    message = result.steps[0].message
    for said in (f"site {SITE} machine srv-1", bmc.url, other_certificate.fingerprint,
                 certificate.fingerprint):
        assert said in message, f"{said!r} not in {message!r}"
    assert not result.steps[0].retryable
    assert bmc.bmc.received == []


# --- the probe: trust on first use, done deliberately ---------------------------------------


def test_the_probe_command_prints_the_fingerprint_and_the_line_to_pin_it(bmc, certificate):
    result = edge_gateway_cli("bmc", "probe", bmc.url, "-u", USERNAME, "-p", PASSWORD,
                              "--insecure", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["tls"] == {"fingerprint": certificate.fingerprint, "trusted_by": "none"}
    assert printed["manufacturer"] == "Contoso"
    assert f'tls_fingerprint = "{certificate.fingerprint}"' in result.stderr
    assert "Compare it with the fingerprint the BMC itself shows" in result.stderr


def test_the_probe_command_refuses_a_wrong_pin_without_a_traceback(bmc, certificate,
                                                                   other_certificate):
    result = edge_gateway_cli("bmc", "probe", bmc.url, "-u", USERNAME, "-p", PASSWORD,
                              "--tls-fingerprint", other_certificate.fingerprint,
                              "--timeout", "5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for said in (bmc.url, other_certificate.fingerprint, certificate.fingerprint):
        assert said in result.stderr
    assert bmc.bmc.received == []


def test_the_probe_tries_a_pin_and_says_what_an_untrusted_bmc_presents(bmc, certificate):
    pinned = probe(bmc.url, USERNAME, PASSWORD, timeout=5,
                   tls_fingerprint=certificate.fingerprint[len("sha256:"):].replace(":", ""))
    assert pinned["tls"] == {"fingerprint": certificate.fingerprint, "trusted_by": "pin"}
    with pytest.raises(BmcTlsError, match="certificate verify failed") as refused:
        probe(bmc.url, USERNAME, PASSWORD, timeout=5)
    assert f"it presents the certificate {certificate.fingerprint}" in str(refused.value)
    with pytest.raises(ConfigError, match="an https:// URL"):
        probe(f"http://{LOOPBACK}:1", USERNAME, PASSWORD, tls_fingerprint=certificate.fingerprint)


# --- the config ----------------------------------------------------------------------------

DIGEST = "0123456789abcdef" * 4
WRITTEN = "sha256:" + ":".join(DIGEST[i:i + 2] for i in range(0, 64, 2)).upper()


def site_config(tmp_path: Path, machine: dict[str, Any],
                classes: dict[str, Any] | None = None) -> Any:
    data: dict[str, Any] = {
        "site": SITE,
        "trust": {"plan_keys": list(PLAN_KEYS)},
        "machines": [{"id": "srv-1", "protocol": "redfish", "address": "https://10.0.0.11",
                      "username": USERNAME, "password": PASSWORD, **machine}],
    }
    if classes is not None:
        data["classes"] = classes
    return parse_config(data, base_dir=tmp_path, source="gateway.toml")


@pytest.mark.parametrize("written", [
    DIGEST, DIGEST.upper(), WRITTEN, WRITTEN.lower(), WRITTEN.removeprefix("sha256:"),
    "SHA256:" + DIGEST, "sha-256:" + DIGEST, f"  {WRITTEN}  ",
])
def test_a_fingerprint_is_read_in_any_common_form_and_written_in_one(tmp_path, written):
    (machine,) = site_config(tmp_path, {"tls_fingerprint": written}).machines
    assert machine.credentials.tls_fingerprint == WRITTEN
    assert machine.credentials.verify_tls is True


@pytest.mark.parametrize("setting, said", [
    ({"tls_fingerprint": 42}, "must be a string"),
    ({"tls_fingerprint": ""}, "is not hex digits"),
    ({"tls_fingerprint": "sha256:" + "zz" * 32}, "is not hex digits"),
    ({"tls_fingerprint": WRITTEN[:-3]}, "has 62 hex digits; a SHA-256 fingerprint has 64"),
    ({"tls_fingerprint": DIGEST + "00"}, "has 66 hex digits"),
    ({"tls_fingerprint": DIGEST[:40]}, "SHA-1"),
    ({"tls_fingerprint": "sha1:" + DIGEST[:40]}, "names the digest 'sha1': only SHA-256"),
    ({"tls_fingerprint": "md5:" + DIGEST[:32]}, "only SHA-256"),
    ({"tls_fingerprint": "AB:CDEF" + DIGEST[6:]}, "a colon between every two"),
    ({"tls_fingerprint": WRITTEN, "verify_tls": False}, "contradict each other"),
    ({"tls_fingerprint": WRITTEN, "tls_ca_bundle": "bmc-ca.pem"}, "give one"),
    ({"tls_fingerprint": WRITTEN, "address": "http://10.0.0.11"}, "an HTTPS"),
    ({"tls_fingerprint": WRITTEN, "protocol": "ipmi", "address": "10.0.0.12"}, "an HTTPS"),
])
def test_a_wrong_fingerprint_setting_is_refused_naming_the_machine(tmp_path, setting, said):
    (tmp_path / "bmc-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as refused:
        site_config(tmp_path, setting)
    message = str(refused.value)
    assert message.startswith("gateway.toml: machine 'srv-1': tls_fingerprint"), message
    assert said in message


def test_a_class_may_carry_the_pin_and_a_machine_replaces_its_class_trust(tmp_path):
    (tmp_path / "bmc-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    classes = {"pinned": {"tls_fingerprint": DIGEST},
               "self-signed": {"verify_tls": False}}
    (inherited,) = site_config(tmp_path, {"class": "pinned"}, classes).machines
    assert inherited.credentials.tls_fingerprint == WRITTEN
    (own_ca,) = site_config(tmp_path, {"class": "pinned", "tls_ca_bundle": "bmc-ca.pem"},
                            classes).machines
    assert own_ca.credentials.tls_fingerprint is None
    assert own_ca.credentials.verify_tls == str(tmp_path / "bmc-ca.pem")
    (own_pin,) = site_config(tmp_path, {"class": "self-signed", "tls_fingerprint": DIGEST},
                             classes).machines
    assert own_pin.credentials.verify_tls is True
    assert own_pin.credentials.tls_fingerprint == WRITTEN
