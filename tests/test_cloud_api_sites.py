"""The HTTPS API for sites and machines, through chalice.test.Client against moto."""

from __future__ import annotations

import pytest

from tests.support import JSON, TOKEN, call


def error_of(body: dict) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["message"]


# --- authentication --------------------------------------------------------------------


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing Authorization header"),
    ({"Authorization": "Bearer wrong-token"}, "invalid bearer token"),
    ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
    ({"Authorization": "Bearer"}, "must be 'Bearer <token>'"),
])
@pytest.mark.parametrize("method, path", [("GET", "/health"), ("GET", "/sites"),
                                          ("PUT", "/sites/shop-1"), ("POST", "/rollouts")])
def test_every_route_refuses_a_missing_or_wrong_token(api, headers, reason, method, path):
    status, body = call(api, method, path, {}, headers=headers)
    assert status == 401
    code, message = error_of(body)
    assert code == "unauthorized" and reason in message


def test_401_says_how_to_authenticate(api):
    response = api.http.get("/sites")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_without_a_bootstrap_token_only_principals_get_in(api, monkeypatch):
    monkeypatch.delenv("EDGEPLANE_API_TOKEN")
    status, body = call(api, "GET", "/health")
    assert status == 401
    assert error_of(body) == ("unauthorized", "invalid bearer token")


def test_health(api):
    status, body = call(api, "GET", "/health")
    assert status == 200
    assert body == {"ok": True, "version": "0.1.0", "protocol": 1}


# --- sites -----------------------------------------------------------------------------


def test_put_then_get_a_site(api):
    status, body = call(api, "PUT", "/sites/shop-1", {
        "name": "Shop 1", "region": "eu-west", "tags": ["retail", "paris", "retail"],
        "timezone": "Europe/Paris"})
    assert status == 200
    site = body["site"]
    assert site["site_id"] == "shop-1" and site["name"] == "Shop 1"
    assert site["tags"] == ["paris", "retail"]
    assert site["timezone"] == "Europe/Paris"
    assert site["online"] is False and site["last_seen_at"] is None
    assert site["created_at"].endswith("Z")

    status, body = call(api, "GET", "/sites/shop-1")
    assert status == 200
    assert body["site"]["name"] == "Shop 1" and body["machines"] == []
    status, body = call(api, "GET", "/sites")
    assert [s["site_id"] for s in body["sites"]] == ["shop-1"]


def test_put_changes_only_the_fields_given_and_null_resets(api):
    _, first = call(api, "PUT", "/sites/shop-1", {"name": "Shop 1", "region": "eu"})
    assert (first["site"]["tags"], first["site"]["timezone"]) == ([], "UTC")
    _, second = call(api, "PUT", "/sites/shop-1", {"tags": ["a"], "timezone": "Asia/Tokyo"})
    assert (second["site"]["name"], second["site"]["region"]) == ("Shop 1", "eu")
    assert (second["site"]["tags"], second["site"]["timezone"]) == (["a"], "Asia/Tokyo")
    assert second["site"]["created_at"] == first["site"]["created_at"]
    _, third = call(api, "PUT", "/sites/shop-1", {"name": None, "region": None,
                                                   "timezone": None})
    assert (third["site"]["name"], third["site"]["region"], third["site"]["timezone"]) == (
        "shop-1", None, "UTC")
    assert third["site"]["tags"] == ["a"]


def test_get_unknown_site_is_404(api):
    status, body = call(api, "GET", "/sites/nowhere")
    assert status == 404
    assert error_of(body) == ("not_found", "site 'nowhere' does not exist")


@pytest.mark.parametrize("body, field", [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"tags": "retail"}, "tags"),
    ({"tags": [1]}, "tags[0]"),
    ({"name": ""}, "name"),
    ({"nmae": "typo"}, "nmae"),
])
def test_bad_site_fields_are_400_naming_the_field(api, body, field):
    status, answer = call(api, "PUT", "/sites/shop-1", body)
    assert status == 400
    code, message = error_of(answer)
    assert code == "bad_request" and f"field {field!r}" in message


def test_invalid_site_id_is_400(api):
    status, body = call(api, "PUT", "/sites/Shop_1", {})
    assert status == 400
    assert "field 'site_id' is invalid: 'Shop_1'" in error_of(body)[1]


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "request body is not valid JSON"),
    (b"[1, 2]", "request body must be a JSON object"),
])
def test_bad_json_is_400(api, raw, message):
    status, body = call(api, "PUT", "/sites/shop-1", raw)
    assert status == 400
    assert message in error_of(body)[1]


# --- machines --------------------------------------------------------------------------


def test_put_and_list_machines(api):
    call(api, "PUT", "/sites/shop-1", {})
    status, body = call(api, "PUT", "/sites/shop-1/machines/srv-1", {
        "protocol": "redfish", "address": "https://10.0.0.5", "machine_class": "edge-small",
        "labels": {"rack": "a"}})
    assert status == 200
    machine = body["machine"]
    assert machine["protocol"] == "redfish" and machine["source"] == "api"
    assert machine["labels"] == {"rack": "a"} and machine["capabilities"] is None

    status, body = call(api, "GET", "/sites/shop-1/machines")
    assert status == 200 and [m["machine_id"] for m in body["machines"]] == ["srv-1"]
    _, body = call(api, "GET", "/sites/shop-1")
    assert [m["address"] for m in body["machines"]] == ["https://10.0.0.5"]


def test_machine_of_unknown_site_is_404(api):
    status, body = call(api, "PUT", "/sites/nowhere/machines/srv-1",
                        {"protocol": "ipmi", "address": "10.0.0.5"})
    assert status == 404 and "site 'nowhere' does not exist" in error_of(body)[1]
    status, _ = call(api, "GET", "/sites/nowhere/machines")
    assert status == 404


@pytest.mark.parametrize("body, field", [
    ({"protocol": "snmp", "address": "10.0.0.5"}, "protocol"),
    ({"protocol": "ipmi"}, "address"),
    ({"protocol": "ipmi", "address": "admin:secret@10.0.0.5"}, "address"),
    ({"protocol": "ipmi", "address": "10.0.0.5", "labels": {"a": 1}}, "labels.a"),
])
def test_bad_machine_fields_are_400(api, body, field):
    call(api, "PUT", "/sites/shop-1", {})
    status, answer = call(api, "PUT", "/sites/shop-1/machines/srv-1", body)
    assert status == 400 and f"field {field!r}" in error_of(answer)[1]


def test_invalid_machine_id_is_400(api):
    call(api, "PUT", "/sites/shop-1", {})
    status, body = call(api, "PUT", "/sites/shop-1/machines/-bad",
                        {"protocol": "ipmi", "address": "10.0.0.5"})
    assert status == 400 and "field 'machine_id'" in error_of(body)[1]


def test_chalice_errors_get_our_shape(api):
    status, body = call(api, "DELETE", "/sites/shop-1")
    assert status == 405 and error_of(body) == ("method_not_allowed",
                                                "Unsupported method: DELETE")
    status, body = call(api, "PUT", "/sites/shop-1", b"x",
                        headers={**JSON, "Content-Type": "text/plain"})
    assert status == 415 and error_of(body)[0] == "unsupported_media_type"


def test_a_crash_is_a_json_500_without_details(api, monkeypatch):
    from chalicelib import fleet

    def broken() -> list:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(fleet, "list_sites", broken)
    status, body = call(api, "GET", "/sites")
    assert status == 500
    assert error_of(body) == ("internal_error", "An internal server error occurred.")
