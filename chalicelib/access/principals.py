"""The principal store: create (the token is returned once), list, revoke, authenticate.

A name is never reused: a revoked principal keeps its record, so a name in the audit means
one principal. ``bootstrap`` is reserved for ``EDGEPLANE_API_TOKEN`` (``identity``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import PynamoDBException

from chalicelib.access import tokens
from chalicelib.access.roles import Role
from chalicelib.clock import Clock
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.models import Principal, conditional_failed, conditional_update
from chalicelib.views import iso

BOOTSTRAP = "bootstrap"
_DUMMY_SALT = "00" * tokens.SALT_BYTES


@dataclass(frozen=True)
class Created:
    principal: Principal
    token: str  # shown once: only its hash is stored


def check_name(name: str) -> str:
    if not tokens.NAME_PATTERN.match(name):
        raise BadRequest(f"principal name {name!r} must match {tokens.NAME_PATTERN.pattern}")
    if name == BOOTSTRAP:
        raise BadRequest(f"principal name {BOOTSTRAP!r} is reserved for EDGEPLANE_API_TOKEN")
    return name


def create(name: str, role: Role, created_by: str, clock: Clock = time.time,
           replace: bool = False) -> Created:
    """A new principal with a new token; 409 if the name was ever used. ``replace`` (the
    local stack's own admin, made again at every start) gives an existing one a new token."""
    check_name(name)
    issued = tokens.issue(name)
    item = Principal(name, role=str(role), token_salt=issued.salt, token_hash=issued.digest,
                     created_by=created_by, created_at=clock())
    try:
        item.save(condition=None if replace else Principal.name.does_not_exist())
    except PynamoDBException as exc:
        if not conditional_failed(exc):
            raise
        existing = get(name)
        state = (f"revoked at {iso(existing.revoked_at)}" if existing.revoked_at is not None
                 else f"with role {existing.role}")
        raise Conflict(f"principal {name!r} already exists ({state}); names are never "
                       "reused: choose another") from None
    return Created(item, issued.token)


def get(name: str) -> Principal:
    try:
        return Principal.get(name, consistent_read=True)
    except Principal.DoesNotExist:
        raise NotFound(kind="principal", id=name) from None


def list_all() -> list[Principal]:
    return sorted(Principal.scan(), key=lambda p: p.name)


def revoke(name: str, by: str, clock: Clock = time.time) -> tuple[Principal, bool]:
    """Revoke the principal's token: (its record, whether this call revoked it). Revoking
    a revoked principal changes nothing. The last active admin is not revoked (409)."""
    if name == BOOTSTRAP:
        raise Conflict(f"{BOOTSTRAP!r} is the token in EDGEPLANE_API_TOKEN: unset the "
                       "variable to revoke it")
    principal = get(check_name(name))
    if principal.revoked_at is not None:
        return principal, False
    if principal.role == Role.ADMIN and not any(
            p.name != name and p.role == Role.ADMIN and p.revoked_at is None
            for p in list_all()):
        raise Conflict(f"principal {name!r} is the last active admin: create another admin "
                       "before revoking it")
    now = clock()
    if not conditional_update(principal, [Principal.revoked_at.set(now),
                                          Principal.revoked_by.set(by)],
                              Principal.revoked_at.does_not_exist()):
        return get(name), False  # revoked meanwhile
    return principal, True


def authenticate(name: str, secret: str) -> Principal | None:
    """The principal whose token this is (revoked or not); None for an unknown name or a
    wrong secret, which take the same work, so timing does not tell them apart."""
    try:
        principal = Principal.get(name, consistent_read=True)
    except Principal.DoesNotExist:
        tokens.matches(_DUMMY_SALT, "0" * 64, secret)
        return None
    if not tokens.matches(principal.token_salt, principal.token_hash, secret):
        return None
    return principal


def as_json(principal: Principal) -> dict[str, Any]:
    """What the API shows of a principal: never its hash or salt."""
    return {"name": principal.name, "role": principal.role,
            "created_by": principal.created_by, "created_at": iso(principal.created_at),
            "revoked_at": iso(principal.revoked_at), "revoked_by": principal.revoked_by,
            "active": principal.revoked_at is None}
