"""Who may call the API: principals, their tokens and roles, on every route (moto DynamoDB).

``TOKEN`` (``EDGEPLANE_API_TOKEN``) is the bootstrap admin; the other callers are
principals made in the store, as ``POST /principals`` makes them.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from chalicelib import settings
from chalicelib.access import identity, principals, tokens
from chalicelib.access.roles import Role
from chalicelib.errors import Unauthorized
from chalicelib.models import Principal
from tests.support import JSON, as_principal, call

ROLES = ["viewer", "operator", "admin"]
PARAMS = {"site_id": "shop-1", "machine_id": "srv-1", "rollout_id": "r-0",
          "kind": "blueprint", "name": "someone"}
BLUEPRINT = {"kind": "blueprint", "name": "baseline", "spec": {
    "params": {"profile": {"type": "string", "choices": ["MaxPerf", "Balanced"]}},
    "steps": [{"task": "power.ensure", "params": {"state": "on"}}]}}
PROFILE = {"kind": "profile", "name": "fleet-defaults",
           "spec": {"level": "fleet", "params": {"profile": "Balanced"}}}
POWER_ON = {"task": "power.ensure", "params": {"state": "on"}}


def expected_role(method: str, path: str) -> str:
    """The policy, written independently of the table: principals and the audit are an
    admin's; reading is a viewer's; running rollouts is an operator's; changing the fleet
    (sites, machines, definitions other than profiles) is an admin's."""
    if path.startswith("/principals") or path == "/audit":
        return "admin"
    if method == "GET":
        return "viewer"
    if path.startswith("/rollouts"):
        return "operator"
    return "admin"


def routes_of_the_app() -> list[tuple[str, str]]:
    """Every route but the console's static files (tests/test_console.py)."""
    from app import app
    from chalicelib.access.rules import PUBLIC

    return sorted((method, path) for path, methods in app.routes.items() for method in methods
                  if (method, path) not in PUBLIC)


def error_of(body: dict) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["message"]


@pytest.fixture
def callers(api) -> dict[str, dict[str, str]]:
    return {role: as_principal(f"a-{role}", role) for role in ROLES}


# --- every route -------------------------------------------------------------------------


@pytest.mark.parametrize("method, path", routes_of_the_app())
def test_every_route_needs_its_role(api, callers, method, path):
    """No token: 401. A role below the route's: 403 naming the role needed and the one the
    caller has. The role itself: let through (whatever the route then answers)."""
    url = path.format(**PARAMS)
    # Applying a blueprint is an admin's (a profile would be an operator's: see below).
    body = {"documents": [BLUEPRINT]} if path == "/definitions" else {}
    needed = expected_role(method, path)

    status, answer = call(api, method, url, body, headers={"Content-Type": "application/json"})
    assert status == 401, answer
    for role in ROLES[:ROLES.index(needed)]:
        status, answer = call(api, method, url, body, headers=callers[role])
        assert status == 403, (role, answer)
        code, message = error_of(answer)
        assert code == "forbidden"
        assert f"{method} {path} needs role {needed}" in message
        assert f"principal 'a-{role}' has role {role}" in message
    status, answer = call(api, method, url, body, headers=callers[needed])
    assert status not in (401, 403), answer


def test_the_table_has_exactly_the_routes_of_the_app():
    from chalicelib.access import rules

    assert set(rules.ROUTES) == set(routes_of_the_app())
    assert rules.problems(routes_of_the_app()) == []
    assert rules.problems([*routes_of_the_app(), ("POST", "/new")]) == [
        "POST /new has no rule in chalicelib/access/rules.py ROUTES"]


def test_an_app_with_a_route_without_a_role_does_not_start():
    from chalice import Chalice

    from chalicelib.access import guard

    app = Chalice(app_name="forgetful")

    @app.route("/sites", methods=["GET"])
    def listed() -> dict:
        return {}

    @app.route("/reboot-everything", methods=["POST"])
    def reboot() -> dict:
        return {}

    with pytest.raises(RuntimeError, match=re.escape(
            "POST /reboot-everything has no rule in chalicelib/access/rules.py ROUTES")):
        guard.check_routes(app)


def test_an_operator_applies_and_deletes_profiles_but_nothing_else(api, callers):
    assert call(api, "POST", "/definitions", {"documents": [BLUEPRINT]})[0] == 200
    operator = callers["operator"]
    status, body = call(api, "POST", "/definitions", {"documents": [PROFILE]}, headers=operator)
    assert status == 200, body
    status, body = call(api, "POST", "/definitions",
                        {"documents": [PROFILE, {**BLUEPRINT, "name": "other"}]},
                        headers=operator)
    assert status == 403
    assert error_of(body)[1] == ("POST /definitions needs role admin to apply blueprint "
                                 "documents; principal 'a-operator' has role operator")
    status, body = call(api, "POST", "/definitions", b"not json", headers=operator)
    assert status == 403 and "needs role admin for a body that is not" in error_of(body)[1]
    assert call(api, "DELETE", "/definitions/blueprint/baseline", headers=operator)[0] == 403
    assert call(api, "DELETE", "/definitions/profile/fleet-defaults", headers=operator)[0] == 200
    assert call(api, "POST", "/definitions", {"documents": [PROFILE]},
                headers=callers["viewer"])[0] == 403


def test_an_unknown_method_is_405_once_authenticated(api, callers):
    assert call(api, "DELETE", "/sites/shop-1", headers={})[0] == 401
    status, body = call(api, "DELETE", "/audit", headers=callers["admin"])
    assert status == 405, body


# --- tokens --------------------------------------------------------------------------------


def test_a_principal_is_created_once_with_a_token_shown_once(api):
    status, body = call(api, "POST", "/principals", {"name": "olga", "role": "operator"})
    assert status == 201, body
    token = body["token"]
    assert body["principal"] == {
        "name": "olga", "role": "operator", "created_by": "bootstrap",
        "created_at": body["principal"]["created_at"], "revoked_at": None, "revoked_by": None,
        "active": True}
    assert token.startswith("ep1.olga.") and len(token.split(".")[2]) == 43

    # Only a salted hash is stored: the token is nowhere in the table, nor in any answer.
    stored = Principal.get("olga")
    assert token not in str(stored.attribute_values)
    assert stored.token_hash == tokens.digest(stored.token_salt, token.split(".")[2])
    status, listed = call(api, "GET", "/principals")
    assert status == 200 and token not in str(listed)
    assert [p["name"] for p in listed["principals"]] == ["olga"]
    assert set(listed["principals"][0]) == {"name", "role", "created_by", "created_at",
                                            "revoked_at", "revoked_by", "active"}

    olga = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert call(api, "GET", "/sites", headers=olga)[0] == 200
    assert call(api, "PUT", "/sites/shop-1", {}, headers=olga)[0] == 403

    status, again = call(api, "POST", "/principals", {"name": "olga", "role": "admin"})
    assert status == 409
    assert error_of(again)[1] == ("principal 'olga' already exists (with role operator); "
                                  "names are never reused: choose another")


@pytest.mark.parametrize("body, message", [
    ({"name": "olga", "role": "root"}, "unknown role 'root'; roles: viewer, operator, admin"),
    ({"name": "Olga!", "role": "viewer"}, "principal name 'Olga!' must match"),
    ({"name": "bootstrap", "role": "viewer"}, "'bootstrap' is reserved"),
    ({"name": "olga"}, "field 'role': Field required"),
    ({"name": "olga", "role": "viewer", "password": "x"}, "field 'password'"),
])
def test_a_principal_with_a_bad_name_or_role_is_refused(api, body, message):
    status, answer = call(api, "POST", "/principals", body)
    assert status == 400
    assert message in error_of(answer)[1]
    assert not list(Principal.scan())


@pytest.mark.parametrize("header, reason", [
    (None, "missing Authorization header; send 'Authorization: Bearer <token>'"),
    ("Basic dXNlcjpwdw==", "Authorization header must be 'Bearer <token>'"),
    ("Bearer", "Authorization header must be 'Bearer <token>'"),
    ("Bearer not-a-token", "invalid bearer token"),
    ("Bearer ep1.nobody." + "A" * 43, "invalid bearer token"),
    ("Bearer ep1.a-admin." + "A" * 43, "invalid bearer token"),  # wrong secret
    ("Bearer " + "x" * 5000, "invalid bearer token"),
])
def test_401_says_what_is_wrong_with_the_credentials(api, callers, header, reason):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Authorization"] = header
    response = api.http.request("GET", "/sites", headers=headers, body=b"")
    assert response.status_code == 401
    assert response.json_body["error"] == {"code": "unauthorized", "message": reason}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="edgeplane"'


def test_a_revoked_token_is_refused_and_says_so(api, callers):
    viewer = callers["viewer"]
    status, body = call(api, "DELETE", "/principals/a-viewer")
    assert status == 200 and body["principal"]["active"] is False
    assert body["principal"]["revoked_by"] == "bootstrap"
    revoked_at = body["principal"]["revoked_at"]
    status, body = call(api, "GET", "/sites", headers=viewer)
    assert status == 401
    assert error_of(body)[1] == f"the token of principal 'a-viewer' was revoked at {revoked_at}"
    # Revoking again changes nothing; the name is not given out again.
    status, body = call(api, "DELETE", "/principals/a-viewer")
    assert status == 200 and body["principal"]["revoked_at"] == revoked_at
    status, body = call(api, "POST", "/principals", {"name": "a-viewer", "role": "viewer"})
    assert status == 409 and "revoked at" in error_of(body)[1]


def test_the_last_admin_and_the_bootstrap_token_are_not_revoked_through_the_api(api, callers):
    status, body = call(api, "DELETE", "/principals/a-admin", headers=callers["admin"])
    assert status == 409
    assert error_of(body)[1] == ("principal 'a-admin' is the last active admin: create "
                                 "another admin before revoking it")
    status, body = call(api, "DELETE", "/principals/bootstrap")
    assert status == 409 and "unset the variable" in error_of(body)[1]
    assert call(api, "DELETE", "/principals/nobody")[0] == 404
    assert call(api, "POST", "/principals", {"name": "second", "role": "admin"})[0] == 201
    assert call(api, "DELETE", "/principals/a-admin", headers=callers["admin"])[0] == 200


# --- who acted ----------------------------------------------------------------------------


def test_the_event_log_names_the_principal_never_what_the_request_claims(api, callers):
    assert call(api, "PUT", "/sites/shop-1", {})[0] == 200
    assert call(api, "PUT", "/sites/shop-1/machines/srv-1",
                {"protocol": "ipmi", "address": "10.0.0.1"})[0] == 200
    operator = {**callers["operator"], "X-Edgeplane-Actor": "somebody-else"}
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON]},
                        headers=operator)
    assert status == 201, body
    rollout_id = body["rollout"]["rollout_id"]
    assert call(api, "POST", f"/rollouts/{rollout_id}/pause", headers=operator)[0] == 200
    status, body = call(api, "GET", f"/rollouts/{rollout_id}/events",
                        headers=callers["viewer"])
    states = [e["detail"] for e in body["events"] if e["type"] == "Rollout State Changed"]
    assert [(d["state"], d["actor"]) for d in states] == [("running", "a-operator"),
                                                          ("paused", "a-operator")]


# --- the seam for an authorizer -------------------------------------------------------------


def _config(**changes: str | None) -> settings.Settings:
    return dataclasses.replace(settings.load(), **changes)


@pytest.mark.parametrize("claims, name, role", [
    ({"cognito:username": "alice", "cognito:groups": "[edgeplane-viewer edgeplane-operator]"},
     "cognito:alice", Role.OPERATOR),
    ({"cognito:username": "bob", "cognito:groups": "edgeplane-admin,other"},
     "cognito:bob", Role.ADMIN),
    ({"cognito:username": "carol", "cognito:groups": ["edgeplane-viewer"]},
     "cognito:carol", Role.VIEWER),
    ({"sub": "1234-abcd"}, "cognito:1234-abcd", None),
])
def test_cognito_groups_give_the_role(claims, name, role):
    caller = identity.resolve({}, {"authorizer": {"claims": claims}},
                              _config(authorizer="cognito"))
    assert (caller.name, caller.role, caller.via) == (name, role, "cognito")


@pytest.mark.parametrize("arn, name, role", [
    ("arn:aws:sts::123456789012:assumed-role/edgeplane-operator/olga",
     "iam:edgeplane-operator/olga", Role.OPERATOR),
    ("arn:aws:sts::123456789012:assumed-role/ci-deployer/run-7", "iam:ci-deployer/run-7", None),
    ("arn:aws:iam::123456789012:user/bob", "iam:user/bob", None),
])
def test_iam_roles_give_the_role(arn, name, role):
    caller = identity.resolve({}, {"identity": {"userArn": arn}}, _config(authorizer="iam"))
    assert (caller.name, caller.role) == (name, role)


def test_with_an_authorizer_a_bearer_token_is_not_enough(api, monkeypatch):
    """The request context is API Gateway's; without the authorizer's claims in it, not even
    the bootstrap token gets in."""
    monkeypatch.setenv("EDGEPLANE_AUTHORIZER", "cognito")
    status, body = call(api, "GET", "/sites", headers=JSON)
    assert status == 401
    assert error_of(body)[1] == ("no Cognito claims in the request: the API expects its "
                                 "Cognito authorizer in front of every route")
    with pytest.raises(Unauthorized):
        identity.resolve({"authorization": JSON["Authorization"]}, {}, _config(
            authorizer="cognito"))
    monkeypatch.setenv("EDGEPLANE_AUTHORIZER", "ldap")
    status, body = call(api, "GET", "/sites", headers=JSON)
    assert status == 503 and "EDGEPLANE_AUTHORIZER is not configured: 'ldap' is not one" \
        in error_of(body)[1]


def test_a_caller_known_to_the_authorizer_without_a_role_gets_nothing(api, monkeypatch):
    from chalicelib.access.guard import _authorize
    from chalicelib.access.rules import ROUTES
    from chalicelib.errors import Forbidden

    caller = identity.Caller("cognito:dave", None, "cognito")
    incoming = type("Incoming", (), {"method": "GET", "route": "/sites", "params": {},
                                     "body": None})()
    with pytest.raises(Forbidden, match="GET /sites needs role viewer; principal "
                                        "'cognito:dave' has no Edgeplane role"):
        _authorize(caller, ROUTES[("GET", "/sites")], incoming)  # type: ignore[arg-type]


def test_principals_are_stored_by_name_with_a_salted_hash(api):
    first = principals.create("p-one", Role.VIEWER, "tests")
    second = principals.create("p-two", Role.VIEWER, "tests")
    one, two = Principal.get("p-one"), Principal.get("p-two")
    assert one.token_salt != two.token_salt and one.token_hash != two.token_hash
    secret = first.token.split(".")[2]
    assert principals.authenticate("p-one", secret) is not None
    assert principals.authenticate("p-two", secret) is None
    assert principals.authenticate("p-two", second.token.split(".")[2]) is not None
