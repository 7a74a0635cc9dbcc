"""A site's bundle: the folder ``edge-gateway run --config <dir>/gateway.toml`` runs from as is.

    gateway.toml   the site, its broker (AWS IoT Core's data endpoint, TLS), the cloud's
                   plan keys, and the site's machines
    site.key       the site's private key (EC P-256), made on this machine, never sent
    site.crt       its certificate, issued by AWS IoT for the key's signing request
    ca.pem         the CA the endpoint's certificate is checked against (Amazon Root CA 1)

Every file is written whole (a reader sees the old one or the new one), readable by its
owner only (0600), in a folder only its owner may enter (0700): ``private_files``.

The machines are the operator's: a bundle is written with those of ``--machines FILE`` (a
TOML file of ``[[machines]]`` and ``[classes.NAME]`` tables, as in the gateway's config),
else with those the bundle's gateway.toml already had (below ``MACHINES_MARK``), else with
none and an example to fill in.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from edge_gateway.config import parse_config
from edge_gateway.errors import ConfigError
from edge_gateway.trust import public_key
from edgeplane.protocol import SITE_ID_PATTERN
from edgeplane_cli.private_files import private_dir, write_private

CONFIG, KEY, CERT, CA = "gateway.toml", "site.key", "site.crt", "ca.pem"
MQTT_PORT = 8883  # AWS IoT Core: MQTT over TLS with a client certificate

# The root of the certificate AWS IoT Core's ATS endpoints present, looked up in certifi's
# bundle by the SHA-256 of its DER form (the fingerprint Amazon Trust Services publishes).
AMAZON_ROOT_CA_1 = "Amazon Root CA 1"
AMAZON_ROOT_CA_1_SHA256 = "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"

MACHINES_MARK = "# --- machines: kept as they are when the site is enrolled again ---"
MACHINES_EXAMPLE = """\
# [[machines]]
# id = "srv-1"
# protocol = "redfish"                  # or "ipmi"
# address = "https://10.0.0.11"
# username = "admin"
# password_file = "srv-1.password"      # relative paths: next to this file
"""
MACHINE_TABLES = frozenset({"machines", "classes"})
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.*?)-----END CERTIFICATE-----", re.S)


class BundleError(RuntimeError):
    """Something given for the bundle is wrong; the message says what."""


def check_site_id(site_id: str) -> str:
    if not SITE_ID_PATTERN.fullmatch(site_id):
        raise BundleError(f"site id {site_id!r} is invalid: lowercase letters, digits and "
                          "'-', at most 63, starting with a letter or digit")
    return site_id


# --- the site's key ------------------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def signing_request(key: ec.EllipticCurvePrivateKey, site_id: str) -> str:
    """The PEM request AWS IoT issues the site's certificate for (its subject: the site)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_id)])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(
        key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def is_for_key(certificate_pem: str, key: ec.EllipticCurvePrivateKey) -> bool:
    """Whether the certificate certifies this key (what the registry returned is checked,
    not assumed: a certificate for another key would fail only at the site)."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError:
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return certificate.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        key.public_key().public_bytes(serialization.Encoding.DER, spki)


# --- the CA and the plan keys ----------------------------------------------------------------


def amazon_root_ca() -> str:
    """Amazon Root CA 1, as certifi ships it, checked by its fingerprint."""
    try:
        import certifi
    except ImportError:
        raise BundleError("the certifi package is not installed: install it, or give "
                          "--ca-file") from None
    bundle = Path(certifi.where()).read_bytes()
    for match in _PEM.finditer(bundle):
        der = base64.b64decode(b"".join(match.group(1).split()))
        if hashlib.sha256(der).hexdigest() == AMAZON_ROOT_CA_1_SHA256:
            return match.group(0).decode() + "\n"
    raise BundleError(f"{AMAZON_ROOT_CA_1} (SHA-256 {AMAZON_ROOT_CA_1_SHA256}) is not in "
                      f"certifi's bundle {certifi.where()}: give --ca-file")


def read_ca_file(path: Path) -> str:
    """A PEM file of one or more CA certificates."""
    try:
        text = path.read_bytes()
        certificates = x509.load_pem_x509_certificates(text)
    except OSError as exc:
        raise BundleError(f"--ca-file {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BundleError(f"--ca-file {path} is not PEM certificates: {exc}") from None
    if not certificates:
        raise BundleError(f"--ca-file {path} holds no certificate")
    return text.decode()


def check_plan_keys(keys: list[str]) -> list[str]:
    """Public keys as ``[trust] plan_keys`` takes them (base64 of a raw Ed25519 key)."""
    if not keys:
        raise BundleError("no plan key: the gateway runs only plans the cloud signed; give "
                          "--plan-key, or --plan-key-secret to read the deployment's")
    for index, key in enumerate(keys):
        try:
            public_key(key)
        except ValueError as exc:
            raise BundleError(f"--plan-key #{index + 1} {exc}") from None
    return [key.strip() for key in keys]


def plan_key_of_pem(pem: bytes, source: str) -> str:
    """The public half (base64, as sites pin it) of the cloud's signing key, a PKCS8 PEM."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{source} is not a PEM private key without a password: "
                          f"{exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{source} is not an Ed25519 key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


# --- the machines --------------------------------------------------------------------------


def read_machines(path: Path) -> str:
    """``--machines FILE``: TOML with only ``[[machines]]`` and ``[classes.NAME]`` tables."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BundleError(f"--machines {path} cannot be read: {exc.strerror or exc}") from None
    return check_machines(text, f"--machines {path}")


def check_machines(text: str, source: str) -> str:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BundleError(f"{source} is not TOML: {exc}") from None
    other = sorted(set(data) - MACHINE_TABLES)
    if other:
        raise BundleError(f"{source} sets {', '.join(other)}: it may hold only [[machines]] "
                          "and [classes.NAME] tables (the rest of the config is the bundle's)")
    if not isinstance(data.get("machines", []), list):
        raise BundleError(f"{source}: machines must be [[machines]] tables")
    return text if text.endswith("\n") else text + "\n"


def kept_machines(config: Path) -> str | None:
    """The machines part of an earlier bundle's gateway.toml (None: no earlier bundle)."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"{config} cannot be read: {exc.strerror or exc}") from None
    _, mark, machines = text.partition(MACHINES_MARK + "\n")
    if not mark:
        raise BundleError(f"{config} exists but was not written by `edgeplane sites "
                          "enroll`: give --machines, or another --out")
    return check_machines(machines, str(config))


# --- the bundle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    site_id: str
    host: str
    port: int
    plan_keys: list[str]
    ca_pem: str
    machines: str  # TOML of [[machines]] and [classes.NAME] tables; empty: none

    def config(self) -> str:
        keys = ", ".join(_toml_string(key) for key in self.plan_keys)
        return "\n".join([
            "# Written by `edgeplane sites enroll`; relative paths are next to this file.",
            f"site = {_toml_string(self.site_id)}",
            "",
            "[mqtt]",
            f"host = {_toml_string(self.host)}",
            f"port = {self.port}",
            "tls = true",
            f"ca_file = {_toml_string(CA)}",
            f"cert_file = {_toml_string(CERT)}",
            f"key_file = {_toml_string(KEY)}",
            "",
            "[trust]",
            f"plan_keys = [{keys}]",
            "",
            MACHINES_MARK,
            self.machines or MACHINES_EXAMPLE,
        ])


def _toml_string(value: str) -> str:
    """A TOML basic string: what these values are (ids, host names, base64) needs no
    escape, and anything else is refused rather than escaped wrong."""
    if not re.fullmatch(r"[A-Za-z0-9._:/+=-]*", value):
        raise BundleError(f"{value!r} cannot go in the config as it is")
    return f'"{value}"'


def check_config(bundle: Bundle, directory: Path) -> None:
    """The config as the gateway reads it (but the machines: their credentials are the
    site's, and may be files only it has): a bundle the gateway would refuse is not
    written."""
    data = tomllib.loads(bundle.config())
    own = {name: value for name, value in data.items() if name not in MACHINE_TABLES}
    try:
        parse_config(own, base_dir=directory, source=str(directory / CONFIG))
    except ConfigError as exc:
        raise BundleError(f"the bundle would not run: {exc}") from None


def write(bundle: Bundle, directory: Path, key: ec.EllipticCurvePrivateKey,
          certificate_pem: str) -> Path:
    """Write the bundle's files, the config last (it names the others); returns its path."""
    private_dir(directory)
    write_private(directory / KEY, key_pem(key))
    write_private(directory / CERT, certificate_pem)
    write_private(directory / CA, bundle.ca_pem)
    check_config(bundle, directory)
    return write_private(directory / CONFIG, bundle.config())
