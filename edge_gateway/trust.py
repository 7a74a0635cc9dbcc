"""Which messages from the cloud the gateway believes: those signed with a key its site pins.

The site's config pins one or more Ed25519 public keys (``[trust] plan_keys``). A plan or a
cancel is believed only if its signature (the envelope and what it signs are the wire
contract's: ``edgeplane.protocol.split_signature``, ``signed_bytes``) names a pinned key,
verifies, has not expired, and expires no more than ``MAX_SIGNATURE_TTL`` ahead.

Any pinned key is accepted, so a key rotates without a flag day: pin the new key at every
site, switch the cloud to it, then unpin the old one (which also revokes what it signed,
down to plans journaled and not finished: they are checked again when they resume).

The bound on the expiry is what makes the journal enough against a replay: a plan stays in
the journal longer than its signature is valid, so the same signed bytes sent again find
their execution there and are answered with its result, never run twice.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from typing import Any

from edge_gateway import ed25519
from edge_gateway.errors import ConfigError
from edgeplane.protocol import (
    MAX_SIGNATURE_TTL,
    ProtocolError,
    excerpt,
    key_id,
    signed_bytes,
    split_signature,
)

PUBLIC_KEY_BYTES = ed25519.KEY_BYTES


class SignatureError(ProtocolError):
    """A message the gateway does not believe: not signed, signed by a key it does not pin,
    changed after it was signed, expired, or expiring too far ahead."""


def public_key(text: object) -> tuple[str, bytes]:
    """A pinned key as the config gives it (base64 of the raw 32-byte public key): its key
    id and the raw key; ValueError saying what is wrong with it."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string (base64), not {excerpt(text)}")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not base64: {excerpt(text)}") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"is {len(raw)} bytes; an Ed25519 public key is {PUBLIC_KEY_BYTES}")
    return key_id(raw), raw


class PlanVerifier:
    """Checks the cloud's signature on a message's object, with the site's pinned keys."""

    def __init__(self, keys: Iterable[str], clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str, bytes] = {}
        for index, text in enumerate(keys):
            try:
                name, key = public_key(text)
            except ValueError as exc:
                raise ConfigError(f"plan key {index} {exc}") from None
            self._keys[name] = key
        if not self._keys:
            raise ConfigError("no plan key is pinned: the gateway runs only plans the cloud "
                              "signed, and would refuse every one")
        self._clock = clock

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def verify(self, data: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """The message's object without its signature, if the signature is good at ``now``
        (default: the clock's time); else SignatureError saying why, with the message's
        kind and execution id where they can be read (a plan is answered ``rejected``)."""
        try:
            unsigned, signature = split_signature(data)
        except ProtocolError as exc:
            raise SignatureError(str(exc)).about(data) from None
        key = self._keys.get(signature.key)
        if key is None:
            raise SignatureError(
                f"the signature's key {signature.key} is not one this gateway pins (it pins "
                f"{', '.join(self._keys)})").about(data)
        if not ed25519.verify(key, signature.value,
                              signed_bytes(unsigned, signature.key, signature.expires)):
            raise SignatureError(
                f"the signature by key {signature.key} does not verify: the message was "
                "changed after it was signed").about(data)
        now = self._clock() if now is None else now
        if now >= signature.expires:
            raise SignatureError(
                f"the signature expired at {_utc(signature.expires)}").about(data)
        if signature.expires - now > MAX_SIGNATURE_TTL:
            raise SignatureError(
                f"the signature expires at {_utc(signature.expires)}, more than "
                f"{MAX_SIGNATURE_TTL // 86400} days ahead (MAX_SIGNATURE_TTL)").about(data)
        return unsigned


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
