"""SHA-256 fingerprints of BMC certificates, for pinning (``tls_fingerprint``).

A BMC's certificate is most often self-signed: no CA vouches for it and it names no host
name we could check. Pinning its fingerprint is the secure way to trust it: the operator
reads the fingerprint once (``edge-gateway bmc probe``), compares it with what the BMC
itself shows (its console, web page or label), and puts it in the machine's config; from
then on any other certificate is refused.

One written form everywhere: ``sha256:`` then the 32 bytes as upper-case hex pairs joined
by colons, as ``openssl x509 -noout -fingerprint -sha256`` and most BMC pages show them.
Only stdlib here: the config and the probe use it without loading a protocol library.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from urllib.parse import urlsplit

from edge_gateway.errors import BmcError, BmcTlsError, BmcUnreachableError

PREFIX = "sha256:"
DIGEST_SIZE = hashlib.sha256().digest_size  # 32 bytes, 64 hex digits

# "sha256:" or "SHA-256:" before the digits; any other "name:" names another digest.
_SHA256 = re.compile(r"^sha-?256\s*:\s*", re.IGNORECASE)
_NAMED = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)\s*:", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_PAIRS = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2})*$")


def parse_fingerprint(text: str) -> str:
    """``text`` in the one written form; ValueError saying what is wrong with it.

    Accepted: 64 hex digits, in either case, with or without a colon between every two,
    after an optional ``sha256:`` prefix.
    """
    value = _SHA256.sub("", text.strip(), count=1)
    named = _NAMED.match(value)
    if named and not _HEX.match(named["name"]):
        raise ValueError(f"names the digest {named['name']!r}: only SHA-256 fingerprints "
                         "can be pinned (sha256:AB:CD:...)")
    digits = value.replace(":", "") if _PAIRS.match(value) else value
    if not _HEX.match(digits):
        raise ValueError("is not hex digits (write sha256: and 64 hex digits, with or "
                         "without a colon between every two)")
    if len(digits) != 2 * DIGEST_SIZE:
        hint = " (a SHA-1 fingerprint? Only SHA-256 can be pinned)" if len(digits) == 40 else ""
        raise ValueError(f"has {len(digits)} hex digits; a SHA-256 fingerprint has "
                         f"{2 * DIGEST_SIZE}{hint}")
    return format_fingerprint(bytes.fromhex(digits))


def format_fingerprint(digest: bytes) -> str:
    """``sha256:AB:CD:...`` of a SHA-256 digest."""
    return PREFIX + ":".join(f"{byte:02X}" for byte in digest)


def fingerprint_of(certificate: bytes) -> str:
    """The fingerprint of a certificate in DER form (what a TLS handshake presents)."""
    return format_fingerprint(hashlib.sha256(certificate).digest())


def hex_digits(fingerprint: str) -> str:
    """The bare lower-case hex digits of a fingerprint in the written form."""
    return fingerprint.removeprefix(PREFIX).replace(":", "").lower()


def presented_certificate(address: str, timeout: float) -> bytes:
    """The certificate (DER) an HTTPS BMC presents, read in one handshake and checked
    against nothing: what it is worth is for the operator to decide (see the module's
    docstring). No HTTP request is sent."""
    parts = urlsplit(address)
    what = "read the TLS certificate"
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise BmcError(address, what, "the address is not an https:// URL")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout) as raw, \
                context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            certificate = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise BmcTlsError(address, what, f"TLS failed: {exc}") from exc
    except OSError as exc:
        raise BmcUnreachableError(address, what, str(exc)) from exc
    if not certificate:
        raise BmcError(address, what, "the BMC presented no certificate")
    return certificate
