"""Principal tokens: ``ep1.<principal>.<secret>``, the secret 32 random bytes (256 bits).

The principal's name in the token says which stored hash to compare with (one GetItem, no
index on hashes); only ``HMAC-SHA256(salt, secret)`` with a random salt per principal is
stored. A token is shown once, when it is made. A fast hash is enough: with 256 random
bits there is nothing to guess, and the salt keeps one table's hashes useless against
another's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "ep1"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
SECRET_BYTES = 32
SALT_BYTES = 16
MAX_TOKEN_LENGTH = 256  # longer is not one of ours: refused before any parsing
_SECRET_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # token_urlsafe(32)


@dataclass(frozen=True)
class Issued:
    """A new token (to show once) and what is stored of it."""

    token: str
    salt: str
    digest: str


def issue(name: str) -> Issued:
    secret = secrets.token_urlsafe(SECRET_BYTES)
    salt = secrets.token_hex(SALT_BYTES)
    return Issued(f"{PREFIX}.{name}.{secret}", salt, digest(salt, secret))


def split(token: str) -> tuple[str, str] | None:
    """(principal name, secret) of a well-formed token; None for anything else."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    prefix, _, rest = token.partition(".")
    name, _, secret = rest.partition(".")
    if prefix != PREFIX or not NAME_PATTERN.match(name) or not _SECRET_PATTERN.match(secret):
        return None
    return name, secret


def digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def matches(salt: str, stored_digest: str, secret: str) -> bool:
    """The secret is the one whose digest is stored (compared in constant time)."""
    return hmac.compare_digest(digest(salt, secret), stored_digest)
