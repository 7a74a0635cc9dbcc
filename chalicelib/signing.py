"""The cloud's signature on what it sends sites: every plan and cancel is signed with one
Ed25519 key, whose public half each site's gateway pins (``[trust] plan_keys`` in its
config); a gateway acts only on what verifies. What is signed is the wire contract's
(``edgeplane.protocol.signed_bytes``).

The key comes from EDGEPLANE_PLAN_SIGNING_KEY: the path of a PKCS8 PEM file, or
``secretsmanager:<secret id or ARN>`` whose SecretString is that PEM, read once per
process. Unset, nothing is sent: ``current()`` raises NotConfigured, so a rollout is
refused before it is created instead of sending plans no gateway would run.

The signing itself is libsodium's (PyNaCl): the Lambda bundle then carries a 300 KB library
instead of a whole TLS toolkit (``cryptography``, which the gateway uses to verify). Ed25519
signatures are deterministic, so both give the same bytes for the same key and message.

A key rotates without a flag day: pin the new public key at every site (a gateway accepts
any key it pins), point the setting at the new key, and unpin the old one once what it
signed has expired.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

from chalicelib import settings
from chalicelib.errors import NotConfigured
from edgeplane import protocol

LOG = logging.getLogger(__name__)

SETTING = "EDGEPLANE_PLAN_SIGNING_KEY"
SECRET_PREFIX = "secretsmanager:"  # noqa: S105 - where the key is, not a key
# How long a signature stands when the message has no expiry of its own (a cancel): a site
# offline for longer than that is not told.
SIGNATURE_TTL = 7 * 86400.0
# The furthest a signature expires: a day inside what a gateway accepts
# (protocol.MAX_SIGNATURE_TTL), so that one whose clock runs behind still takes it.
LONGEST_TTL = protocol.MAX_SIGNATURE_TTL - 86400.0


def expiry(message: protocol.Message, now: float) -> float:
    """When the signature on ``message`` expires: a plan's own expiry (the rollout's: the
    plan is no use after it), else ``SIGNATURE_TTL`` from now; ``LONGEST_TTL`` at most."""
    longest = round(now + LONGEST_TTL, 3)
    if isinstance(message, protocol.Plan) and message.expires_at is not None:
        return min(message.expires_at, longest)
    return min(round(now + SIGNATURE_TTL, 3), longest)


# RFC 8410: an Ed25519 private key in PKCS8 is this DER header and the 32-byte seed.
_PKCS8_HEADER = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_OID = bytes.fromhex("06032b6570")
_PEM = re.compile(rb"-----BEGIN PRIVATE KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*"
                  rb"-----END PRIVATE KEY-----")
SEED_BYTES = 32


class RawPrivateKey(Protocol):
    """A key object that gives its 32-byte Ed25519 seed (``cryptography``'s has it)."""

    def private_bytes_raw(self) -> bytes: ...


class PlanSigner:
    """Signs the messages the cloud sends sites with one Ed25519 key."""

    def __init__(self, private_key: bytes | RawPrivateKey) -> None:
        """``private_key``: the 32-byte seed, or a key object that gives it."""
        seed = private_key if isinstance(private_key, bytes) else \
            private_key.private_bytes_raw()
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 private key is {SEED_BYTES} bytes, not {len(seed)}")
        # libsodium is loaded by the first signer, not by every cold start of every function
        from nacl.signing import SigningKey

        self._key = SigningKey(seed)
        raw = bytes(self._key.verify_key)
        self.key_id = protocol.key_id(raw)
        self.public_key_b64 = base64.b64encode(raw).decode()  # what a site pins

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "the key") -> PlanSigner:
        """The signer of a PKCS8 PEM key; ValueError naming ``source`` if it is not one."""
        return cls(_seed_from_pem(pem, source))

    def sign(self, message: protocol.Message, expires: float) -> bytes:
        """The message, signed, as it goes on the wire."""
        return protocol.encode_object(self.sign_object(message.to_dict(), expires))

    def sign_object(self, data: dict[str, Any], expires: float) -> dict[str, Any]:
        """A message's object with this key's signature, expiring at ``expires``."""
        value = self._key.sign(protocol.signed_bytes(data, self.key_id, expires)).signature
        return protocol.with_signature(data, protocol.Signature(self.key_id, expires, value))


# --- the process's signer ------------------------------------------------------------------

_installed: PlanSigner | None = None
_loaded: tuple[str, PlanSigner] | None = None  # the setting's value, and its signer
_lock = threading.Lock()


def current() -> PlanSigner:
    """The process-wide signer: the installed one, else the setting's key (read once)."""
    global _loaded
    with _lock:
        if _installed is not None:
            return _installed
        source = settings.load().plan_signing_key
        if source is None:
            raise NotConfigured(setting=SETTING, consequence=(
                "no plan or cancel can be signed, and gateways run only signed ones: set it "
                f"to a PKCS8 PEM file of an Ed25519 key, or to {SECRET_PREFIX}<secret id>"))
        if _loaded is None or _loaded[0] != source:
            _loaded = (source, _load(source))
            LOG.info("signing plans with key %s", _loaded[1].key_id)
        return _loaded[1]


def install(signer: PlanSigner | None) -> None:
    """Use ``signer`` from now on (None: go back to the key the setting names)."""
    global _installed
    with _lock:
        _installed = signer


def _load(source: str) -> PlanSigner:
    if source.startswith(SECRET_PREFIX):
        secret_id = source[len(SECRET_PREFIX):]
        where = f"{SETTING}: secret {secret_id!r}"
        pem = _read_secret(secret_id, where)
    else:
        where = f"{SETTING}: {source}"
        try:
            pem = Path(source).read_bytes()
        except OSError as exc:
            raise NotConfigured(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        return PlanSigner.from_pem(pem, where)
    except ValueError as exc:
        raise NotConfigured(str(exc)) from None


def _read_secret(secret_id: str, where: str) -> bytes:
    import boto3  # only a cloud with its key in Secrets Manager needs it
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("secretsmanager", region_name=settings.load().region)
    try:
        secret = client.get_secret_value(SecretId=secret_id)
    except (BotoCoreError, ClientError) as exc:
        raise NotConfigured(f"{where} cannot be read: {exc}") from None
    if "SecretString" in secret:
        return str(secret["SecretString"]).encode()
    return bytes(secret.get("SecretBinary", b""))


# --- keys ----------------------------------------------------------------------------------


def generate_key_pem() -> bytes:
    """A new Ed25519 private key, PKCS8 PEM without a password."""
    from nacl.signing import SigningKey

    seed = bytes(SigningKey.generate())
    body = base64.encodebytes(_PKCS8_HEADER + seed)
    return b"-----BEGIN PRIVATE KEY-----\n" + body + b"-----END PRIVATE KEY-----\n"


def _seed_from_pem(pem: bytes, source: str) -> bytes:
    """The seed of an unencrypted PKCS8 PEM Ed25519 key (as ``generate_key_pem``, OpenSSL
    and ``cryptography`` write one)."""
    match = _PEM.search(pem)
    if match is None:
        raise ValueError(f"{source} is not a PEM private key without a password: no "
                         "'-----BEGIN PRIVATE KEY-----' block")
    try:
        der = base64.b64decode(b"".join(match[1].split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{source} is not a PEM private key without a password: "
                         f"{exc}") from None
    if der.startswith(_PKCS8_HEADER) and len(der) == len(_PKCS8_HEADER) + SEED_BYTES:
        return der[len(_PKCS8_HEADER):]
    if _ED25519_OID in der[:16]:
        raise ValueError(f"{source} is an Ed25519 key with more than its seed (attributes or "
                         "its public key): write it as plain PKCS8, e.g. "
                         "'openssl pkey -in KEY -out KEY.pem'")
    raise ValueError(f"{source} is not an Ed25519 key")


def write_new_key(path: str | Path) -> str:
    """Write a new key to ``path`` and return its public key (base64) for the sites to pin.

    The file is readable by its owner only (0600) from its first byte, and appears whole
    or not at all; an existing key is never replaced (FileExistsError): the sites pin it.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = generate_key_pem()
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
            file.flush()
            os.fsync(file.fileno())
        os.link(staging, path)  # unlike a rename, it fails if the key exists
    finally:
        os.unlink(staging)
    return PlanSigner.from_pem(pem).public_key_b64


def public_key_of(path: str | Path) -> str:
    """The public key (base64) of the key at ``path``: what the sites pin."""
    path = Path(path)
    return PlanSigner.from_pem(path.read_bytes(), str(path)).public_key_b64
