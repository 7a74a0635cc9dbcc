"""The three roles, each allowed what the ones below it are:

- ``viewer``: read everything but principals and the audit;
- ``operator``: start, pause, resume and cancel rollouts; apply and delete profiles;
- ``admin``: definitions, sites and machines, principals, the audit.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """A principal with this role may call a route that needs ``needed``."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


def parse_role(text: str) -> Role:
    """ValueError naming the roles when ``text`` is none of them."""
    try:
        return Role(text)
    except ValueError:
        raise ValueError(f"unknown role {text!r}; roles: "
                         f"{', '.join(r.value for r in Role)}") from None
