"""Input limits and whole-or-nothing writes of the HTTPS API, through chalice.test.Client
against moto: bodies too large (413), JSON too deep, strings, lists and maps too big, ids and
numbers that are not quite what they look like (400 naming them), and what is left in the
store after each refusal or failure (nothing). Also the removal of a machine."""

from __future__ import annotations

import json

import pytest

from chalicelib import limits
from edgeplane import protocol
from tests.support import JSON, call, machine_result
from tests.test_cloud_api_rollouts import POWER_ON, add_site, report

DEEP = b"[" * 60_000 + b"]" * 60_000  # within every route's size cap


def error_of(body: dict) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["message"]


def raw(api, method: str, path: str, body: bytes) -> tuple[int, dict]:
    response = api.http.request(method, path, headers=JSON, body=body)
    return response.status_code, response.json_body


def stored_site(site_id: str) -> dict | None:
    from chalicelib.models import Site

    try:
        return Site.get(site_id, consistent_read=True).attribute_values
    except Site.DoesNotExist:
        return None


def stored_machines(site_id: str) -> list[str]:
    from chalicelib.models import Machine

    return [m.machine_id for m in Machine.query(site_id, consistent_read=True)]


# --- sizes and nesting ---------------------------------------------------------------------


@pytest.mark.parametrize("method, path", [("PUT", "/sites/shop-1"), ("POST", "/rollouts"),
                                          ("POST", "/definitions")])
def test_json_nested_60000_deep_is_400_and_nothing_is_written(api, method, path):
    status, body = raw(api, method, path, DEEP)
    assert status == 400, body
    assert error_of(body) == ("bad_request",
                              f"request body is nested deeper than {limits.MAX_DEPTH} levels")
    assert stored_site("shop-1") is None


@pytest.mark.parametrize("method, path, status", [("PUT", "/sites/shop-1", 413),
                                                  ("POST", "/rollouts", 400),
                                                  ("POST", "/definitions", 400)])
def test_json_nested_100000_deep_is_refused_by_its_size_or_its_depth(api, method, path,
                                                                      status):
    status_got, body = raw(api, method, path, b"[" * 100_000 + b"]" * 100_000)
    assert status_got == status, body


def test_json_just_past_the_depth_bound_names_where(api):
    deep: dict = {}
    inner = deep
    for _ in range(limits.MAX_DEPTH):
        inner["x"] = {}
        inner = inner["x"]
    status, body = call(api, "PUT", "/sites/shop-1", {"facts": deep})
    assert status == 400
    assert "nested deeper than 32 levels" in error_of(body)[1]
    assert "facts.x.x" in error_of(body)[1]


@pytest.mark.parametrize("method, path, limit", [
    ("PUT", "/sites/shop-1", limits.MAX_BODY),
    ("PUT", "/sites/shop-1/machines/srv-1", limits.MAX_BODY),
    ("POST", "/rollouts", limits.MAX_LARGE_BODY),
    ("POST", "/definitions", limits.MAX_LARGE_BODY),
    ("POST", "/rollouts/r-1/cancel", limits.MAX_BODY),
])
def test_a_body_over_the_routes_cap_is_413_before_it_is_parsed(api, method, path, limit):
    status, body = raw(api, method, path, b"{" + b" " * limit + b"}")
    assert status == 413, body
    route = path.replace("shop-1", "{site_id}").replace("srv-1", "{machine_id}").replace(
        "r-1", "{rollout_id}")
    assert error_of(body) == ("payload_too_large", f"the request body is {limit + 2} bytes; "
                                                   f"{method} {route} takes at most {limit}")
    assert stored_site("shop-1") is None


def test_ten_megabytes_of_facts_are_413_and_the_site_is_not_created(api):
    status, body = call(api, "PUT", "/sites/shop-1", {"facts": {"blob": "x" * 10_000_000}})
    assert status == 413 and error_of(body)[0] == "payload_too_large"
    assert stored_site("shop-1") is None


@pytest.mark.parametrize("facts, where", [
    ({"blob": "x" * 5000}, "field 'facts': blob: a string of 5000 characters; at most 4096"),
    ({f"k{i}": "x" * 4000 for i in range(9)}, "field 'facts': 36"),  # 36 KiB > 32 KiB
    ({"list": list(range(300))}, "field 'facts': list: 300 entries; at most 256"),
    ({"k" * 200: 1}, "field 'facts': (top): a key of 200 characters; at most 128"),
    ({f"k{i}": i for i in range(300)}, "field 'facts': Dictionary should have at most 256"),
])
def test_facts_over_their_bounds_are_400_naming_them_and_nothing_changes(api, facts, where):
    assert call(api, "PUT", "/sites/shop-1", {"name": "Shop 1", "facts": {"a": 1}})[0] == 200
    before = stored_site("shop-1")
    status, body = call(api, "PUT", "/sites/shop-1", {"name": "Renamed", "facts": facts})
    assert status == 400, body
    assert where in error_of(body)[1]
    assert stored_site("shop-1") == before, "a refused request changes nothing"


def test_labels_over_their_bounds_are_400_and_no_machine_is_left(api):
    add_site(api, "shop-1", machines=())
    for labels, where in [({"k": "v" * 201}, "field 'labels.k': String should have at most 200"),
                          ({f"k{i}": "v" for i in range(51)}, "field 'labels': Dictionary"),
                          ({"": "v"}, "[key]': String should have at least 1 char")]:
        status, body = call(api, "PUT", "/sites/shop-1/machines/srv-1",
                            {"protocol": "ipmi", "address": "bmc-1", "labels": labels})
        assert status == 400, body
        assert where in error_of(body)[1]
    fifty_large = {f"k{i}": "v" * 10_000 for i in range(50)}
    status, _ = call(api, "PUT", "/sites/shop-1/machines/srv-1",
                     {"protocol": "ipmi", "address": "bmc-1", "labels": fifty_large})
    assert status == 413
    assert stored_machines("shop-1") == []
    assert not (stored_site("shop-1") or {}).get("machine_ids")


# --- what a value is, strictly ---------------------------------------------------------------


@pytest.mark.parametrize("revision", ["²", "0", "-1", "1e3", "1.0", "%201", "1%0A", "x",
                                      "9999999999"])
def test_a_revision_is_ascii_digits_within_range(api, revision):
    status, body = call(api, "GET", f"/definitions/blueprint/x?revision={revision}")
    assert status == 400, body
    assert error_of(body)[1].startswith("field 'revision' is invalid: ")


@pytest.mark.parametrize("method, path, field", [
    ("POST", "/rollouts//cancel", "rollout_id"),
    ("POST", "/rollouts//pause", "rollout_id"),
    ("GET", "/rollouts//events", "rollout_id"),
    ("GET", "/sites//machines", "site_id"),
    ("PUT", "/sites//machines/srv-1", "site_id"),
    ("DELETE", "/sites/shop-1/machines/srv-1%0A", "machine_id"),
    ("GET", "/definitions/blueprint/Bad_Name", "name"),
    ("GET", "/rollouts/r-1.shop-1", "rollout_id"),
])
def test_ids_are_checked_alike_on_every_route(api, method, path, field):
    status, body = call(api, method, path, {"protocol": "ipmi", "address": "bmc-1"})
    assert status == 400, body
    assert error_of(body)[1].startswith(f"field '{field}' is invalid: ")


@pytest.mark.parametrize("query, message", [
    ("?executions=yes", "field 'executions' is invalid: 'yes' must be true or false"),
    ("?machines=false&machines=true", "query parameter 'machines' is given 2 times"),
    ("?execution=false", "unknown query parameter(s) 'execution'"),
])
def test_query_parameters_are_checked(api, query, message):
    status, body = call(api, "GET", f"/rollouts/r-1{query}")
    assert status == 400
    assert message in error_of(body)[1]


@pytest.mark.parametrize("policy, where", [
    ({"max_in_flight": "5"}, "field 'policy.max_in_flight': Input should be a valid integer"),
    ({"max_in_flight": True}, "field 'policy.max_in_flight': Input should be a valid integer"),
    ({"max_in_flight": 10**40}, "field 'policy.max_in_flight': Input should be less than"),
    ({"growth": "2"}, "field 'policy.growth': Input should be a valid number"),
    ({"maintenance_windows": "false"}, "field 'policy.maintenance_windows': Input should be a "
                                      "valid boolean"),
])
def test_numbers_and_flags_in_a_body_are_json_numbers_and_booleans(api, published, policy,
                                                                   where):
    add_site(api, "shop-1")
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                                   "policy": policy})
    assert status == 400, body
    assert where in error_of(body)[1]
    assert published.sent == []


@pytest.mark.parametrize("text, message", [
    (b'{"facts": {"n": NaN}}', "NaN is not a JSON number"),
    (b'{"facts": {"n": -Infinity}}', "-Infinity is not a JSON number"),
    (b'{"tags": ["\\ud800"]}', "tags[0]: a string with a lone surrogate"),
    (b'{"name": "\xff"}', "request body is not valid JSON"),
])
def test_what_json_cannot_carry_is_refused(api, text, message):
    status, body = raw(api, "PUT", "/sites/shop-1", text)
    assert status == 400
    assert message in error_of(body)[1]
    assert stored_site("shop-1") is None


# --- whole or nothing ------------------------------------------------------------------------


def test_a_machine_of_an_unknown_site_leaves_no_site_behind(api):
    status, body = call(api, "PUT", "/sites/nowhere/machines/srv-1",
                        {"protocol": "ipmi", "address": "bmc-1"})
    assert status == 404 and error_of(body)[1] == "site 'nowhere' does not exist"
    assert stored_site("nowhere") is None and stored_machines("nowhere") == []


def throttled(operation: str) -> Exception:
    """What DynamoDB answers a table over its throughput (moto never does)."""
    from botocore.exceptions import ClientError
    from pynamodb.exceptions import PutError

    return PutError("Failed to put item", ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        operation))


def test_a_rollout_the_store_refuses_leaves_no_target_part(api, published, monkeypatch):
    from chalicelib.models import Rollout, RolloutTarget

    add_site(api, "shop-1")

    def refused(self, *args, **kwargs):
        raise throttled("PutItem")

    monkeypatch.setattr(Rollout, "save", refused)
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON]})
    assert status == 503 and error_of(body)[0] == "store_unavailable", "a retry may succeed"
    assert list(RolloutTarget.scan()) == [], "the parts written before it are removed"
    assert list(Rollout.scan()) == [] and published.sent == []


def test_a_rollout_stored_though_its_answer_was_lost_keeps_its_target(api, published,
                                                                     monkeypatch):
    from chalicelib.models import Rollout

    add_site(api, "shop-1")
    save = Rollout.save

    def stored_then_lost(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise throttled("PutItem")

    monkeypatch.setattr(Rollout, "save", stored_then_lost)
    body = {"sites": ["shop-1"], "steps": [POWER_ON], "client_token": "t-1"}
    assert call(api, "POST", "/rollouts", body)[0] == 503
    monkeypatch.setattr(Rollout, "save", save)
    status, answer = call(api, "POST", "/rollouts", body)
    assert status == 200, "the retry finds the rollout, and its target"
    assert answer["rollout"]["site_ids"] == ["shop-1"]
    assert [e["state"] for e in answer["executions"]] == ["sent"]


# --- removing a machine ----------------------------------------------------------------------


def test_a_machine_is_removed_and_a_second_removal_is_404(api):
    add_site(api, "shop-1")
    status, body = call(api, "DELETE", "/sites/shop-1/machines/srv-1")
    assert (status, body) == (200, {"site_id": "shop-1", "machine_id": "srv-1",
                                    "deleted": True})
    assert stored_machines("shop-1") == ["srv-2"]
    assert set(stored_site("shop-1")["machine_ids"]) == {"srv-2"}
    status, body = call(api, "DELETE", "/sites/shop-1/machines/srv-1")
    assert status == 404 and error_of(body)[1] == "site 'shop-1' has no machine 'srv-1'"
    status, body = call(api, "DELETE", "/sites/nowhere/machines/srv-1")
    assert status == 404 and error_of(body)[1] == "site 'nowhere' does not exist"


def test_a_machine_in_an_unfinished_rollouts_plan_stays_until_the_rollout_is_done(
        api, published):
    add_site(api, "shop-1")
    _, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [
        {**POWER_ON, "select": {"ids": ["srv-1"]}}]})
    rollout_id = body["rollout"]["rollout_id"]

    status, body = call(api, "DELETE", "/sites/shop-1/machines/srv-1")
    assert status == 409
    assert error_of(body)[1] == (f"machine 'srv-1' of site 'shop-1' is in the plan of "
                                 f"unfinished rollout(s) {rollout_id}: wait for them to "
                                 "finish, or cancel them")
    assert call(api, "POST", f"/rollouts/{rollout_id}/cancel")[0] == 200
    assert call(api, "DELETE", "/sites/shop-1/machines/srv-1")[0] == 409, \
        "canceled, but the site has the plan until it reports"
    assert call(api, "DELETE", "/sites/shop-1/machines/srv-2")[0] == 200, "not in the plan"

    report(protocol.Result(site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=1,
                           machines=[machine_result("srv-1", "failed")], state="canceled",
                           message="canceled"))
    assert call(api, "DELETE", "/sites/shop-1/machines/srv-1")[0] == 200
    assert stored_machines("shop-1") == []


def test_limits_are_in_the_error_messages_not_in_a_traceback(api, caplog):
    """A refused request is an answer, not a logged failure."""
    refused = [call(api, "PUT", "/sites/shop-1", {"facts": {"blob": "x" * 5000}}),
               raw(api, "POST", "/rollouts", DEEP),
               raw(api, "PUT", "/sites/shop-1", json.dumps({"tags": ["\ud800"]}).encode()),
               call(api, "GET", "/definitions/blueprint/x?revision=²")]
    assert [status for status, _ in refused] == [400] * 4
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
