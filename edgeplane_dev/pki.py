"""The local stack's certificate authority: one X.509 identity for every party on MQTT.

In AWS, IoT Core issues each site's certificate and checks it; locally this CA does, and
mosquitto requires a certificate from it of every client (``mosquitto.write_config``). The
certificate's common name is the identity the broker knows the client by: a site's is its
site id, the cloud's parts are ``cloud.<part>`` (a dot, which no site id can hold, so no
site can ever be named like a part of the cloud). The broker uses the identity as the
username its ACL scopes, and as the client id, so no one can take over another's session.

Keys are ECDSA P-256 (a handshake costs a fraction of RSA's), written 0600 in 0700
folders. Everything issued stays on disk and is reused by the next ``up``: an identity is
as long-lived as the site it names.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeplane import protocol
from edgeplane_cli.private_files import private_dir, write_private

CA_NAME = "Edgeplane local CA"
BROKER_HOSTS = ("127.0.0.1", "localhost")
CA_DAYS = 3650
LEAF_DAYS = 825
CLOUD_PARTS = ("ingest", "api", "ticker", "bridge", "operator")
CLOUD_PREFIX = "cloud."
_CLOUD_PATTERN = re.compile(r"^cloud\.[a-z][a-z0-9-]{0,30}$")


class PkiError(RuntimeError):
    pass


def cloud_identity(part: str) -> str:
    """The identity of one part of the cloud (``cloud.ingest``, ``cloud.api``, ...)."""
    identity = f"{CLOUD_PREFIX}{part}"
    if not _CLOUD_PATTERN.fullmatch(identity):
        raise PkiError(f"{part!r} is not a valid name for a part of the cloud")
    return identity


def is_cloud_identity(identity: str) -> bool:
    return bool(_CLOUD_PATTERN.fullmatch(identity))


def check_identity(identity: str) -> str:
    """A site id or a cloud part's identity; nothing else gets a certificate (in
    particular nothing with an MQTT wildcard or a '/', which the broker's ACL patterns
    would read as part of a topic)."""
    if protocol.SITE_ID_PATTERN.fullmatch(identity) or is_cloud_identity(identity):
        return identity
    raise PkiError(f"{identity!r} is neither a site id nor a cloud identity")


@dataclass(frozen=True)
class Identity:
    """A client's certificate and key on disk, and the CA that vouches for them."""

    name: str
    cert_file: Path
    key_file: Path
    ca_file: Path

    @property
    def tls_args(self) -> dict[str, str]:
        """Keyword arguments for paho's ``Client.tls_set``."""
        return {"ca_certs": str(self.ca_file), "certfile": str(self.cert_file),
                "keyfile": str(self.key_file)}

    def env(self) -> dict[str, str]:
        """The environment that gives a cloud process this identity on the broker
        (``chalicelib.settings.mqtt_identity``)."""
        return {"EDGEPLANE_MQTT_CA": str(self.ca_file),
                "EDGEPLANE_MQTT_CERT": str(self.cert_file),
                "EDGEPLANE_MQTT_KEY": str(self.key_file)}


class LocalCa:
    """``LocalCa(directory).ensure()`` creates the CA once; ``identity(name)`` issues (or
    finds) the certificate of one client, ``broker()`` the server's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._cert: x509.Certificate | None = None

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def _ca_key_file(self) -> Path:
        return self.directory / "ca.key"

    def ensure(self) -> LocalCa:
        private_dir(self.directory)
        if self.ca_file.exists() and self._ca_key_file.exists():
            self._cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            key = serialization.load_pem_private_key(self._ca_key_file.read_bytes(), None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise PkiError(f"{self._ca_key_file} is not an EC key")
            self._key = key
            return self
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        write_private(self._ca_key_file, _key_pem(self._key))
        write_private(self.ca_file, self._cert.public_bytes(serialization.Encoding.PEM))
        return self

    def broker(self) -> Identity:
        """The broker's server certificate, for 127.0.0.1 and localhost."""
        return self._issue("broker", self.directory / "broker", server=True)

    def identity(self, name: str, folder: Path | None = None) -> Identity:
        """The client certificate of ``name`` (a site id or ``cloud.<part>``), in
        ``folder`` (default: the CA's ``clients/<name>/``), issued on first use."""
        check_identity(name)
        if folder is None:
            folder = private_dir(self.directory / "clients") / name
        return self._issue(name, folder, server=False)

    def _issue(self, name: str, folder: Path, server: bool) -> Identity:
        key_file, cert_file = folder / "key.pem", folder / "cert.pem"
        found = Identity(name, cert_file, key_file, self.ca_file)
        if key_file.exists() and cert_file.exists() and self._issued_here(cert_file, name):
            return found
        if self._key is None or self._cert is None:
            self.ensure()
        assert self._key is not None and self._cert is not None
        private_dir(folder)
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 *(x509.DNSName(h) for h in BROKER_HOSTS if h != "127.0.0.1")]),
                critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        write_private(key_file, _key_pem(key))
        write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return found

    def _issued_here(self, cert_file: Path, name: str) -> bool:
        """The certificate on disk names ``name``, comes from this CA and is still valid
        (a CA made anew makes every identity be issued anew)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            return False
        if self._cert is None:
            self.ensure()
        assert self._cert is not None
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return (cert.issuer == self._cert.subject
                and bool(common_names) and common_names[0].value == name
                and cert.not_valid_after_utc > _now() + datetime.timedelta(days=1)
                and _signed_by(cert, self._cert))


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
