"""The one table of what every route needs: its role, and for a write, what its audit
records. ``guard`` puts every request through it, and refuses to start an app with a route
that is not in it (``check_routes``), so no route can forget its role or its audit.

A route's role may depend on what the request asks (``refine``): applying or deleting
profiles is an operator's work, any other definition an admin's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chalicelib.access import changes
from chalicelib.access.changes import Recorder
from chalicelib.access.incoming import Incoming
from chalicelib.access.roles import Role
from chalicelib.definitions.documents import Kind

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    role: Role
    recorder: Recorder | None = None  # every write has one
    # A stricter role for some requests: (role, what in the request needs it).
    refine: Callable[[Incoming], tuple[Role, str] | None] | None = None

    def needed(self, incoming: Incoming) -> tuple[Role, str]:
        """The role this request needs, and why when more than the route's own."""
        stricter = self.refine(incoming) if self.refine else None
        if stricter is not None and stricter[0].rank > self.role.rank:
            return stricter
        return self.role, ""


def _documents_role(incoming: Incoming) -> tuple[Role, str] | None:
    """Admin unless every document is a profile. What cannot be read as a list of
    documents needs admin too: the decision never rests on a body it did not understand."""
    body = incoming.body
    documents = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(documents, list):
        return Role.ADMIN, " for a body that is not {\"documents\": [...]}"
    kinds = sorted({str(d.get("kind"))[:40] if isinstance(d, dict) else "?"
                    for d in documents} - {Kind.PROFILE.value})
    return (Role.ADMIN, f" to apply {', '.join(kinds)} documents") if kinds else None


def _deleted_kind_role(incoming: Incoming) -> tuple[Role, str] | None:
    kind = incoming.params.get("kind")
    return None if kind == Kind.PROFILE else (Role.ADMIN, f" to delete a {kind}")


VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN

ROUTES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): Rule(VIEWER),
    ("GET", "/openapi.json"): Rule(VIEWER),
    # sites and machines
    ("GET", "/sites"): Rule(VIEWER),
    ("GET", "/sites/{site_id}"): Rule(VIEWER),
    ("PUT", "/sites/{site_id}"): Rule(ADMIN, changes.SITE),
    ("GET", "/sites/{site_id}/machines"): Rule(VIEWER),
    ("PUT", "/sites/{site_id}/machines/{machine_id}"): Rule(ADMIN, changes.MACHINE),
    ("DELETE", "/sites/{site_id}/machines/{machine_id}"): Rule(ADMIN, changes.MACHINE),
    ("GET", "/drift"): Rule(VIEWER),
    # rollouts
    ("POST", "/rollouts"): Rule(OPERATOR, changes.STARTED),
    ("GET", "/rollouts"): Rule(VIEWER),
    ("GET", "/rollouts/{rollout_id}"): Rule(VIEWER),
    ("POST", "/rollouts/{rollout_id}/pause"): Rule(OPERATOR, changes.PAUSED),
    ("POST", "/rollouts/{rollout_id}/resume"): Rule(OPERATOR, changes.RESUMED),
    ("POST", "/rollouts/{rollout_id}/cancel"): Rule(OPERATOR, changes.CANCELED),
    ("GET", "/rollouts/{rollout_id}/events"): Rule(VIEWER),
    # definitions and parameters
    ("POST", "/definitions"): Rule(OPERATOR, changes.APPLY, _documents_role),
    ("GET", "/definitions/{kind}"): Rule(VIEWER),
    ("GET", "/definitions/{kind}/{name}"): Rule(VIEWER),
    ("DELETE", "/definitions/{kind}/{name}"): Rule(OPERATOR, changes.DELETE_DEFINITION,
                                                   _deleted_kind_role),
    ("GET", "/params/explain"): Rule(VIEWER),
    ("GET", "/params/variation"): Rule(VIEWER),
    # who may call, and what they did
    ("POST", "/principals"): Rule(ADMIN, changes.PRINCIPAL_CREATED),
    ("GET", "/principals"): Rule(ADMIN),
    ("DELETE", "/principals/{name}"): Rule(ADMIN, changes.PRINCIPAL_REVOKED),
    ("GET", "/audit"): Rule(ADMIN),
    # the web console's own reads
    ("GET", "/whoami"): Rule(VIEWER),
    ("GET", "/fleet/summary"): Rule(VIEWER),
    ("GET", "/fleet/sites"): Rule(VIEWER),
    ("GET", "/sites/{site_id}/executions"): Rule(VIEWER),
    ("GET", "/failures"): Rule(VIEWER),
    ("GET", "/failures/matrix"): Rule(VIEWER),
    ("GET", "/rollouts/{rollout_id}/sites/{site_id}"): Rule(VIEWER),
}

# The web console's page and its scripts and styles (chalicelib/console): static, the same
# for everyone, served without a token; everything they show comes from the routes above,
# called from the browser with the principal's token.
PUBLIC: frozenset[tuple[str, str]] = frozenset({("GET", "/console"),
                                                ("GET", "/console/{asset}")})


def problems(routes: Iterable[tuple[str, str]]) -> list[str]:
    """What is wrong with the table for an app with these (method, path) routes."""
    routes = set(routes)
    found = [f"{method} {path} has no rule in chalicelib/access/rules.py ROUTES"
             for method, path in sorted(routes - set(ROUTES) - PUBLIC)]
    found += [f"{method} {path} is a write without an audit recorder"
              for (method, path), rule in sorted(ROUTES.items())
              if method not in READ_METHODS and rule.recorder is None]
    return found
