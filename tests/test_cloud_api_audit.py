"""The audit: every write through the API is recorded with who, when, which route and what
changed, and ``GET /audit`` answers "who changed what" by site, rollout, principal and time
(moto DynamoDB)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.access import trail
from chalicelib.models import AuditRecord
from tests.store_requests import counting_requests
from tests.support import as_principal, call

POWER_ON = {"task": "power.ensure", "params": {"state": "on"}}
BLUEPRINT = {"kind": "blueprint", "name": "baseline", "spec": {
    "params": {"profile": {"type": "string", "choices": ["MaxPerf", "Balanced"]}},
    "steps": [{"task": "power.ensure", "params": {"state": "on"}}]}}
SITE_PROFILE = {"kind": "profile", "name": "shop-1-perf",
                "spec": {"level": "site", "target": "shop-1", "params": {"profile": "MaxPerf"}}}


def audit(client, **filters) -> dict:
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    status, body = call(client, "GET", "/audit" + (f"?{query}" if query else ""))
    assert status == 200, body
    return body


def records(client, **filters) -> list[dict]:
    return audit(client, **filters)["records"]


def add_site(client, site: str = "shop-1") -> None:
    assert call(client, "PUT", f"/sites/{site}", {"tags": ["dev"]})[0] == 200
    assert call(client, "PUT", f"/sites/{site}/machines/srv-1",
                {"protocol": "ipmi", "address": "10.0.0.1"})[0] == 200


# --- what is recorded ------------------------------------------------------------------------


def test_a_site_put_records_who_and_before_and_after(api):
    assert call(api, "PUT", "/sites/shop-1", {"name": "Shop 1"})[0] == 200
    assert call(api, "PUT", "/sites/shop-1", {"name": "Shop 1"})[0] == 200  # no change
    assert call(api, "PUT", "/sites/shop-1", {"region": "eu-west"})[0] == 200
    updated, created = records(api)
    assert created["principal"] == "bootstrap" and created["role"] == "admin"
    assert (created["method"], created["route"], created["path"]) == (
        "PUT", "/sites/{site_id}", "/sites/shop-1")
    assert created["target"] == {"kind": "site", "id": "shop-1"}
    assert created["action"] == "created" and created["before"] is None
    assert created["after"]["name"] == "Shop 1" and created["site_id"] == "shop-1"
    assert updated["action"] == "updated"
    assert (updated["before"]["region"], updated["after"]["region"]) == (None, "eu-west")
    assert updated["at"] >= created["at"] and updated["status"] == 200


def test_machines_are_recorded_when_declared_changed_and_deleted(api):
    add_site(api)
    assert call(api, "PUT", "/sites/shop-1/machines/srv-1",
                {"protocol": "redfish", "address": "https://10.0.0.1"})[0] == 200
    assert call(api, "DELETE", "/sites/shop-1/machines/srv-1")[0] == 200
    machine = [r for r in records(api, site="shop-1") if r["target"]["kind"] == "machine"]
    assert [(r["action"], r["target"]["id"]) for r in machine] == [
        ("deleted", "shop-1/srv-1"), ("updated", "shop-1/srv-1"), ("created", "shop-1/srv-1")]
    deleted, updated, _ = machine
    assert (updated["before"]["protocol"], updated["after"]["protocol"]) == ("ipmi", "redfish")
    assert deleted["before"]["address"] == "https://10.0.0.1" and deleted["after"] is None


def test_definitions_keep_before_after_and_diff_and_skip_what_did_not_change(api):
    operator = as_principal("olga", "operator")
    add_site(api)
    assert call(api, "POST", "/definitions", {"documents": [BLUEPRINT]})[0] == 200
    assert call(api, "POST", "/definitions", {"documents": [SITE_PROFILE]},
                headers=operator)[0] == 200
    changed = {**SITE_PROFILE, "spec": {**SITE_PROFILE["spec"], "params": {"profile": "Balanced"}}}
    assert call(api, "POST", "/definitions", {"documents": [changed], "dry_run": True},
                headers=operator)[0] == 200
    assert call(api, "POST", "/definitions", {"documents": [SITE_PROFILE]},
                headers=operator)[0] == 200  # unchanged
    assert call(api, "POST", "/definitions", {"documents": [changed]},
                headers=operator)[0] == 200
    assert call(api, "DELETE", "/definitions/profile/shop-1-perf", headers=operator)[0] == 200

    profile = records(api, principal="olga")
    assert [r["action"] for r in profile] == ["deleted", "updated", "created"]
    deleted, updated, created = profile
    assert created["before"] is None
    assert created["after"] == {**SITE_PROFILE["spec"], "priority": 0, "description": ""}
    assert updated["before"]["params"] == {"profile": "MaxPerf"}
    assert updated["after"]["params"] == {"profile": "Balanced"}
    assert updated["summary"]["diff"] == [
        '~ spec.params.profile: "MaxPerf" -> "Balanced"']
    assert deleted["before"]["params"] == {"profile": "Balanced"} and deleted["after"] is None
    # A site profile is about its site: found by the site too.
    assert {r["target"]["id"] for r in records(api, site="shop-1")} >= {"shop-1-perf"}
    blueprint = records(api, principal="bootstrap", limit=1)[0]
    assert blueprint["target"] == {"kind": "blueprint", "id": "baseline"}
    assert blueprint["summary"]["revision"] == 1


def test_a_batch_that_fails_half_way_records_what_it_wrote(api):
    from chalicelib.models import BlueprintRevision

    # A revision 1 of blueprint "other" appears as if another apply were writing it: the
    # batch writes its site first (sites go before blueprints), then fails on "other".
    BlueprintRevision("other", 1, spec={}, spec_hash="x", created_at=1.0).save()
    site = {"kind": "site", "name": "shop-9", "spec": {"tags": ["dev"]}}
    status, body = call(api, "POST", "/definitions",
                        {"documents": [{**BLUEPRINT, "name": "other"}, site]})
    assert status == 409, body
    (record,) = records(api)
    assert (record["target"], record["action"], record["status"]) == (
        {"kind": "site", "id": "shop-9"}, "created", 409)
    assert record["after"]["tags"] == ["dev"] and "+ spec.tags: [\"dev\"]" in \
        record["summary"]["diff"]


def test_rollouts_and_their_state_changes_are_recorded_with_the_principal(api):
    add_site(api)
    operator = as_principal("olga", "operator")
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                                   "client_token": "t-1"}, headers=operator)
    assert status == 201, body
    rollout_id = body["rollout"]["rollout_id"]
    assert call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                           "client_token": "t-1"}, headers=operator)[0] == 200
    for action in ("pause", "pause", "resume", "cancel"):
        assert call(api, "POST", f"/rollouts/{rollout_id}/{action}", headers=operator)[0] == 200

    found = records(api, rollout=rollout_id)
    assert [(r["action"], r["principal"]) for r in found] == [
        ("canceled", "olga"), ("resumed", "olga"), ("paused", "olga"), ("started", "olga"),
        ("started", "olga")]
    canceled, _, paused, again, started = found
    assert (paused["before"], paused["after"]) == ({"state": "running"}, {"state": "paused"})
    assert canceled["after"] == {"state": "canceled"}
    assert started["summary"]["new"] is True and again["summary"]["new"] is False
    assert started["summary"]["steps"] == [POWER_ON]
    assert started["summary"]["target"] == {"sites": 1} and started["site_id"] == "shop-1"
    assert started["role"] == "operator" and started["route"] == "/rollouts"


def test_principals_are_recorded_and_their_tokens_never(api):
    status, body = call(api, "POST", "/principals", {"name": "vera", "role": "viewer"})
    assert status == 201
    token = body["token"]
    assert call(api, "DELETE", "/principals/vera")[0] == 200
    assert call(api, "DELETE", "/principals/vera")[0] == 200  # already revoked: no record
    revoked, created = records(api)
    assert (created["action"], created["target"]) == ("created",
                                                      {"kind": "principal", "id": "vera"})
    assert created["after"]["role"] == "viewer"
    assert revoked["action"] == "revoked" and revoked["before"]["active"] is True
    assert revoked["after"]["active"] is False
    assert token not in str(records(api)) and token.split(".")[2] not in str(
        [r.attribute_values for r in AuditRecord.scan()])


def test_reads_and_refused_writes_are_not_recorded(api):
    viewer = as_principal("vera", "viewer")
    call(api, "GET", "/sites")
    assert call(api, "PUT", "/sites/shop-1", {}, headers=viewer)[0] == 403
    assert call(api, "PUT", "/sites/shop-1", {"timezone": "Mars/Olympus"})[0] == 400
    assert call(api, "POST", "/rollouts/r-nothing/pause")[0] == 404
    assert records(api) == []


def test_records_expire_after_the_retention_and_a_bad_setting_refuses_writes(api, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_AUDIT_RETENTION_DAYS", "30")
    before = datetime.now(UTC)
    assert call(api, "PUT", "/sites/shop-1", {})[0] == 200
    (record,) = AuditRecord.scan()
    expected = before + timedelta(days=30)
    assert abs((record.expires_at - expected).total_seconds()) < 5
    monkeypatch.setenv("EDGEPLANE_AUDIT_RETENTION_DAYS", "forever")
    status, body = call(api, "PUT", "/sites/shop-2", {})
    assert status == 503
    assert "EDGEPLANE_AUDIT_RETENTION_DAYS is not configured: 'forever'" in \
        body["error"]["message"]
    assert call(api, "GET", "/sites/shop-2")[0] == 404, "nothing was written"


def test_no_route_changes_or_deletes_audit_records():
    from app import app

    assert {m for path, methods in app.routes.items() if path.startswith("/audit")
            for m in methods} == {"GET"}


def test_the_audit_is_an_admins(api):
    for role in ("viewer", "operator"):
        status, body = call(api, "GET", "/audit", headers=as_principal(f"a-{role}", role))
        assert status == 403
        assert body["error"]["message"] == (f"GET /audit needs role admin; principal "
                                            f"'a-{role}' has role {role}")


# --- finding records -----------------------------------------------------------------------


def test_filters_combine_and_every_one_is_a_query_not_a_scan(api):
    olga, vera = as_principal("olga", "admin"), as_principal("vera", "admin")
    for site in ("shop-1", "shop-2"):
        assert call(api, "PUT", f"/sites/{site}", {}, headers=olga)[0] == 200
        assert call(api, "PUT", f"/sites/{site}", {"region": "r"}, headers=vera)[0] == 200
    with counting_requests() as sent:
        assert [(r["principal"], r["target"]["id"]) for r in records(api, site="shop-2")] == [
            ("vera", "shop-2"), ("olga", "shop-2")]
        assert [r["target"]["id"] for r in records(api, principal="olga")] == ["shop-2",
                                                                               "shop-1"]
        assert [r["action"] for r in records(api, principal="vera", site="shop-1")] == [
            "updated"]
        assert len(records(api)) == 4
        assert records(api, rollout="r-none") == []
    assert sent["Scan"] == 0 and sent["Query"] >= 5


def test_a_time_range_selects_by_when(api):
    now = time.time()
    call_ = trail.Call("olga", "admin", "PUT", "/sites/{site_id}", "/sites/x")
    for days_ago in (40, 20, 10, 1):
        trail.write(call_, 200, [trail.Change("site", f"s-{days_ago}", "updated",
                                              site_id=f"s-{days_ago}")],
                    retention=400, now=now - days_ago * 86400)
    iso = datetime.fromtimestamp(now - 25 * 86400, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [r["target"]["id"] for r in records(api, since=iso)] == ["s-1", "s-10", "s-20"]
    until = f"{now - 5 * 86400:.0f}"
    assert [r["target"]["id"] for r in records(api, since=iso, until=until)] == ["s-10",
                                                                                 "s-20"]
    assert [r["target"]["id"] for r in records(api, principal="olga", until=until)] == [
        "s-10", "s-20", "s-40"]
    day = datetime.fromtimestamp(now - 10 * 86400, tz=UTC).strftime("%Y-%m-%d")
    assert [r["target"]["id"] for r in records(api, since=day, until=day + "T23:59:59")] == [
        "s-10"]


def test_pages_follow_one_another_without_gaps_or_repeats(api):
    now = time.time()
    call_ = trail.Call("olga", "admin", "PUT", "/sites/{site_id}", "/sites/x")
    # 12 records over three months: pages cross the month partitions.
    for i in range(12):
        trail.write(call_, 200, [trail.Change("site", f"s-{i:02d}", "updated", site_id="s")],
                    retention=400, now=now - i * 8 * 86400)
    for filters in ({}, {"site": "s"}, {"principal": "olga"}):
        seen, following = [], None
        while True:
            page = audit(api, limit=5, **filters, **({"next": following} if following else {}))
            assert len(page["records"]) <= 5
            seen += [r["target"]["id"] for r in page["records"]]
            following = page["next"]
            if following is None:
                break
        assert seen == [f"s-{i:02d}" for i in range(12)], filters


@pytest.mark.parametrize("query, named", [
    ("?colour=red", ["'colour'"]),
    ("?limit=0", ["limit", "'0'"]),
    ("?limit=501", ["limit", "'501'"]),
    ("?next=r-1", ["next", "'r-1'"]),
    ("?since=yesterday", ["since", "'yesterday'"]),
    ("?since=2025-13-45", ["since", "'2025-13-45' is not a time"]),
    ("?since=2025-03-02&until=2025-03-01", ["since is after until"]),
    ("?site=Shop_1", ["site", "'Shop_1'"]),
    ("?principal=a%20b", ["principal", "'a b'"]),
])
def test_bad_filters_are_refused_naming_them(api, query, named):
    status, body = call(api, "GET", "/audit" + query)
    assert status == 400
    for words in named:
        assert words in body["error"]["message"]


def test_a_change_too_large_for_one_record_keeps_its_summary():
    big = {"steps": ["x" * 1000] * 400}
    bounded = trail._bounded(trail.Change("blueprint", "b", "updated", before=big, after=big,
                                          summary={"diff": ["~ line"] * 5000}))
    assert bounded["before"] is None and bounded["after"] is None
    assert "snapshot_omitted" in bounded["summary"]
    assert len(bounded["summary"]["diff"]) == 200 and bounded["summary"]["diff_omitted"] == 4800
