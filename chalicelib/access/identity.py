"""Who is calling, and with which role: ``resolve`` is the one place that decides it.

Where the answer comes from is a deployment's choice (``EDGEPLANE_AUTHORIZER``):

- unset (or ``token``): ``Authorization: Bearer <token>``, a principal's token from the
  store (``principals``), or ``EDGEPLANE_API_TOKEN``, which is the admin ``bootstrap``
  (for a fresh deployment: create named admins with it, then unset it);
- ``cognito``: API Gateway's Cognito authorizer checked the caller; its claims are in the
  request context. The principal is ``cognito:<username>``, its role the highest of its
  groups ``edgeplane-viewer``, ``edgeplane-operator``, ``edgeplane-admin``;
- ``iam``: API Gateway's IAM authorization checked the caller's signature; the principal
  is ``iam:<role>/<session>`` of the assumed role, whose name ``edgeplane-<role>`` gives
  its role.

The request context is written by API Gateway, never by the caller, so an authorizer's
claims are trusted only when the deployment says one is attached (a request that reaches
the API without them is refused, never let through).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any

from chalicelib.access import principals, tokens
from chalicelib.access.roles import Role
from chalicelib.errors import NotConfigured, Unauthorized
from chalicelib.settings import Settings
from chalicelib.views import iso

SCHEME = "bearer"
MODES = ("token", "cognito", "iam")
GROUP_PREFIX = "edgeplane-"  # Cognito groups and IAM role names that carry a role
MAX_NAME = 200
_ROLE_NAMES = frozenset(role.value for role in Role)
_ASSUMED_ROLE = re.compile(r"^arn:aws[a-z-]*:sts::\d{12}:assumed-role/([\w+=,.@-]{1,64})/"
                           r"([\w+=,.@-]{1,64})$")


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role | None  # None: known to the authorizer, but given no Edgeplane role
    via: str  # "token", "bootstrap", "cognito" or "iam"


_current: ContextVar[Caller | None] = ContextVar("edgeplane_caller", default=None)


def current() -> Caller:
    """The caller of the request being served (set by ``guard`` before any route runs)."""
    caller = _current.get()
    if caller is None:
        raise RuntimeError("no caller: this runs only inside a request the guard let in")
    return caller


def bind(caller: Caller) -> Token[Caller | None]:
    return _current.set(caller)


def unbind(token: Token[Caller | None]) -> None:
    _current.reset(token)


def resolve(headers: Mapping[str, str], context: Mapping[str, Any],
            config: Settings) -> Caller:
    """The caller of a request with these headers and API Gateway request context."""
    mode = config.authorizer or "token"
    if mode == "token":
        return _from_token(headers, config.api_token)
    if mode == "cognito":
        return _from_cognito(context)
    if mode == "iam":
        return _from_iam(context)
    raise NotConfigured(setting="EDGEPLANE_AUTHORIZER",
                        consequence=f"{mode!r} is not one of {', '.join(MODES)}")


def _from_token(headers: Mapping[str, str], bootstrap: str | None) -> Caller:
    header = headers.get("authorization")
    if not header:
        raise Unauthorized(reason="missing Authorization header; send "
                                  "'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != SCHEME or not token:
        raise Unauthorized(reason="Authorization header must be 'Bearer <token>'")
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Caller(principals.BOOTSTRAP, Role.ADMIN, "bootstrap")
    parts = tokens.split(token)
    principal = principals.authenticate(*parts) if parts else None
    if principal is None:
        raise Unauthorized(reason="invalid bearer token")
    if principal.revoked_at is not None:
        raise Unauthorized(reason=f"the token of principal {principal.name!r} was revoked at "
                                  f"{iso(principal.revoked_at)}")
    return Caller(principal.name, Role(principal.role), "token")


def _from_cognito(context: Mapping[str, Any]) -> Caller:
    claims = (context.get("authorizer") or {}).get("claims")
    if not isinstance(claims, dict):
        raise Unauthorized(reason="no Cognito claims in the request: the API expects its "
                                  "Cognito authorizer in front of every route")
    user = claims.get("cognito:username") or claims.get("username") or claims.get("sub")
    if not isinstance(user, str) or not user:
        raise Unauthorized(reason="the Cognito claims name no user")
    return Caller(_bounded(f"cognito:{user}"), _highest(_groups(claims.get("cognito:groups"))),
                  "cognito")


def _groups(raw: Any) -> list[str]:
    """Cognito groups as API Gateway passes them: a list, or one string such as
    ``"[edgeplane-admin, other]"`` or ``"edgeplane-admin,other"``."""
    if isinstance(raw, list):
        return [str(g) for g in raw]
    if isinstance(raw, str):
        return [g for g in re.split(r"[\s,]+", raw.strip("[]")) if g]
    return []


def _from_iam(context: Mapping[str, Any]) -> Caller:
    arn = (context.get("identity") or {}).get("userArn")
    if not isinstance(arn, str) or not arn:
        raise Unauthorized(reason="no IAM identity in the request: the API expects IAM "
                                  "authorization on every route")
    found = _ASSUMED_ROLE.match(arn)
    if found is None:  # an IAM user, or anything but an assumed role: no Edgeplane role
        return Caller(_bounded(f"iam:{arn.rsplit(':', 1)[-1]}"), None, "iam")
    role_name, session = found.groups()
    return Caller(f"iam:{role_name}/{session}", _highest([role_name]), "iam")


def _highest(names: list[str]) -> Role | None:
    roles = [Role(n[len(GROUP_PREFIX):]) for n in names
             if n.startswith(GROUP_PREFIX) and n[len(GROUP_PREFIX):] in _ROLE_NAMES]
    return max(roles, key=lambda r: r.rank) if roles else None


def _bounded(name: str) -> str:
    if len(name) > MAX_NAME or not name.isprintable():
        raise Unauthorized(reason=f"principal name longer than {MAX_NAME} characters or "
                                  "not printable")
    return name
