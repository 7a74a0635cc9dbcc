"""Definitions through the API (moto DynamoDB): apply, dry runs and diffs, revisions,
cross-document checks, explain, variation, and rollouts of a blueprint."""

from __future__ import annotations

import copy

from edgeplane import protocol
from tests.support import call

GROUP = {"kind": "group", "name": "emea", "spec": {"tags": ["emea"]}}
CLASS = {"kind": "machine-class", "name": "r650", "spec": {"facts": {"vendor": "dell"}}}
SITES = [{"kind": "site", "name": name, "spec": {"tags": tags, "timezone": "Europe/Paris",
                                                 "facts": {"rack": rack}}}
         for name, tags, rack in (("shop-1", ["emea", "shop"], "A1"),
                                  ("shop-2", ["emea", "shop"], "B7"),
                                  ("shop-3", ["amer", "shop"], "C2"))]
BLUEPRINT = {"kind": "blueprint", "name": "baseline", "spec": {
    "description": "power, NTP-free BIOS baseline, inventory",
    "params": {
        "turbo": {"type": "string", "choices": ["Enabled", "Disabled"], "default": "Enabled"},
        "profile": {"type": "string", "choices": ["MaxPerf", "Balanced"]},
        "asset_prefix": {"type": "string", "default": "EP"},
    },
    "steps": [
        {"task": "power.ensure", "params": {"state": "on"}},
        {"task": "bios.apply", "params": {
            "attributes": {"ProcTurboMode": "{{ params.turbo }}",
                           "PowerProfile": "{{ params.profile }}",
                           "AssetTag": "{{ params.asset_prefix }}-{{ site.facts.rack }}"}}},
        {"task": "inventory.collect", "select": {"labels": {"role": "compute"}}},
    ]}}
PROFILES = [
    {"kind": "profile", "name": "fleet-defaults",
     "spec": {"level": "fleet", "params": {"profile": "Balanced"}}},
    {"kind": "profile", "name": "emea-perf",
     "spec": {"level": "group", "target": "emea", "params": {"profile": "MaxPerf"}}},
    {"kind": "profile", "name": "shop-2-quirk",
     "spec": {"level": "site", "target": "shop-2", "params": {"turbo": "Disabled"}}},
    {"kind": "profile", "name": "r650-turbo",
     "spec": {"level": "machine-class", "target": "r650", "params": {"turbo": "Enabled"}}},
]
FLEET = [GROUP, CLASS, *SITES, BLUEPRINT, *PROFILES]


def apply(client, documents, dry_run=False, expect=200):
    status, body = call(client, "POST", "/definitions",
                        {"documents": documents, "dry_run": dry_run})
    assert status == expect, body
    return body


def add_machines(client, site, machines):
    for machine_id, machine_class, labels in machines:
        body = {"protocol": "redfish", "address": f"https://{machine_id}.{site}",
                "labels": labels}
        if machine_class:
            body["machine_class"] = machine_class
        assert call(client, "PUT", f"/sites/{site}/machines/{machine_id}", body)[0] == 200


# --- apply ------------------------------------------------------------------------------


def test_apply_creates_then_is_idempotent(api):
    results = apply(api, FLEET)["results"]
    assert {r["action"] for r in results} == {"created"}
    order = [r["kind"] for r in results]
    assert order.index("group") < order.index("profile") and \
        order.index("blueprint") < order.index("profile")
    again = apply(api, list(reversed(FLEET)))["results"]
    assert {r["action"] for r in again} == {"unchanged"}
    assert next(r for r in again if r["kind"] == "blueprint")["revision"] == 1
    status, site = call(api, "GET", "/sites/shop-1")
    assert site["site"]["facts"] == {"rack": "A1"} and site["site"]["tags"] == ["emea", "shop"]


def test_dry_run_shows_the_diff_and_writes_nothing(api):
    apply(api, FLEET)
    changed = copy.deepcopy(PROFILES[1])
    changed["spec"]["params"]["profile"] = "Balanced"
    changed["spec"]["priority"] = 5
    result = apply(api, [changed], dry_run=True)["results"][0]
    assert result["action"] == "updated" and result["dry_run"] is True
    assert result["diff"] == ['~ spec.params.profile: "MaxPerf" -> "Balanced"',
                              "~ spec.priority: 0 -> 5"]
    status, stored = call(api, "GET", "/definitions/profile/emea-perf")
    assert stored["item"]["spec"]["params"] == {"profile": "MaxPerf"}


def test_a_changed_blueprint_is_a_new_revision_and_the_old_one_stays(api):
    apply(api, FLEET)
    changed = copy.deepcopy(BLUEPRINT)
    changed["spec"]["steps"].append({"task": "health.check"})
    result = apply(api, [changed])["results"][0]
    assert (result["action"], result["revision"]) == ("updated", 2)
    assert "+ spec.steps[3].task: \"health.check\"" in result["diff"]
    status, latest = call(api, "GET", "/definitions/blueprint/baseline")
    assert latest["item"]["revision"] == 2 and latest["item"]["revisions"] == [1, 2]
    status, first = call(api, "GET", "/definitions/blueprint/baseline?revision=1")
    assert len(first["item"]["spec"]["steps"]) == 3
    status, missing = call(api, "GET", "/definitions/blueprint/baseline?revision=9")
    assert status == 404 and "has no revision 9; it has 1, 2" in missing["error"]["message"]


def test_profile_values_are_checked_against_the_blueprints_when_applied(api):
    apply(api, FLEET)
    bad = {"kind": "profile", "name": "typo", "spec": {
        "level": "site", "target": "shop-1",
        "params": {"turbo": "Maybe", "ntp_servr": "10.0.0.1"}}}
    message = apply(api, [bad], expect=400)["error"]["message"]
    assert "profile typo" in message
    assert "params.ntp_servr: no blueprint declares a parameter 'ntp_servr'" in message
    assert "parameter 'turbo' is 'Maybe'; allowed: Enabled, Disabled" in message
    assert call(api, "GET", "/definitions/profile/typo")[0] == 404, "nothing was stored"


def test_a_profile_whose_target_does_not_exist_is_refused(api):
    apply(api, FLEET)
    orphan = {"kind": "profile", "name": "orphan",
              "spec": {"level": "group", "target": "apac", "params": {"turbo": "Enabled"}}}
    body = apply(api, [orphan], expect=400)
    assert "its target group 'apac' does not exist" in body["error"]["message"]


def test_a_blueprint_that_would_invalidate_stored_profiles_is_refused(api):
    apply(api, FLEET)
    narrower = copy.deepcopy(BLUEPRINT)
    narrower["spec"]["params"]["profile"]["choices"] = ["Balanced"]
    message = apply(api, [narrower], expect=400)["error"]["message"]
    assert "profile 'emea-perf' sets" in message and "MaxPerf" in message


def test_a_batch_is_checked_whole_before_anything_is_written(api):
    broken = {"kind": "profile", "name": "broken", "spec": {"level": "fleet",
                                                           "params": {"nope": 1}}}
    body = apply(api, [GROUP, BLUEPRINT, broken], expect=400)
    assert "profile broken: params.nope: no blueprint declares" in body["error"]["message"]
    assert call(api, "GET", "/definitions/group/emea")[0] == 404


def test_delete_refuses_what_profiles_still_attach_to(api):
    apply(api, FLEET)
    status, body = call(api, "DELETE", "/definitions/group/emea")
    assert status == 409 and "emea-perf" in body["error"]["message"]
    assert call(api, "DELETE", "/definitions/profile/emea-perf")[0] == 200
    assert call(api, "DELETE", "/definitions/group/emea")[0] == 200
    status, listed = call(api, "GET", "/definitions/group")
    assert listed["items"] == []
    status, body = call(api, "GET", "/definitions/gadget")
    assert status == 400 and "unknown kind 'gadget'" in body["error"]["message"]


# --- explain and variation --------------------------------------------------------------


def test_explain_shows_each_value_its_source_and_what_it_overrides(api):
    apply(api, FLEET)
    add_machines(api, "shop-2", [("srv-1", "r650", {}), ("srv-2", None, {})])
    status, site = call(api, "GET", "/params/explain?site=shop-2&blueprint=baseline")
    assert status == 200 and site["groups"] == ["emea"]
    values = {p["name"]: p for p in site["params"]}
    assert (values["profile"]["value"], values["profile"]["profile"],
            values["profile"]["level"]) == ("MaxPerf", "emea-perf", "group")
    assert values["profile"]["overrides"] == [
        {"level": "fleet", "profile": "fleet-defaults", "value": "Balanced"}]
    assert (values["turbo"]["value"], values["turbo"]["level"]) == ("Disabled", "site")
    assert values["asset_prefix"]["level"] == "default"

    status, machine = call(api, "GET", "/params/explain?site=shop-2&machine=srv-1")
    turbo = {p["name"]: p for p in machine["params"]}["turbo"]
    assert (turbo["value"], turbo["profile"], machine["machine_class"]) == \
        ("Enabled", "r650-turbo", "r650")
    assert [o["profile"] for o in turbo["overrides"]] == ["shop-2-quirk"]
    status, body = call(api, "GET", "/params/explain?site=shop-2&machine=srv-9")
    assert status == 404 and "no machine 'srv-9'" in body["error"]["message"]


def test_variation_counts_overrides_across_the_fleet(api):
    apply(api, FLEET)
    redundant = {"kind": "profile", "name": "shop-1-same", "spec": {
        "level": "site", "target": "shop-1", "params": {"profile": "MaxPerf"}}}
    apply(api, [redundant])
    status, report = call(api, "GET", "/params/variation")
    assert status == 200 and report["sites"] == 3
    assert report["customized_sites"] == 1  # shop-2; shop-1's override changes nothing
    by_name = {p["name"]: p for p in report["parameters"]}
    assert by_name["profile"]["sites_by_level"] == {"fleet": 1, "group": 1, "site": 1}
    assert by_name["profile"]["redundant_overrides"] == ["shop-1-same"]
    assert by_name["turbo"]["machine_overrides"] == 1
    assert report["varying_parameters"] == ["profile", "turbo"]


# --- blueprint rollouts -----------------------------------------------------------------


def test_a_blueprint_rollout_renders_each_machine_and_sets_its_desired_state(api, published):
    apply(api, FLEET)
    add_machines(api, "shop-2", [("srv-1", "r650", {"role": "compute"}),
                                 ("srv-2", None, {"role": "compute"}),
                                 ("srv-3", None, {"role": "storage"})])
    status, body = call(api, "POST", "/rollouts", {"blueprint": "baseline",
                                                   "sites": ["shop-2"]})
    assert status == 201, body
    assert body["rollout"]["blueprint"] == {"name": "baseline", "revision": 1}
    (plan,) = published.plans()
    steps = [(s.task, s.machines, s.params) for s in plan.steps]
    assert steps[0] == ("power.ensure", ["srv-1", "srv-2", "srv-3"], {"state": "on"})
    bios = {tuple(machines): params for task, machines, params in steps
            if task == "bios.apply"}
    # srv-1 is an r650 (turbo Enabled by its class); the others keep the site's Disabled.
    assert bios[("srv-1",)]["attributes"] == {"ProcTurboMode": "Enabled",
                                              "PowerProfile": "MaxPerf", "AssetTag": "EP-B7"}
    assert bios[("srv-2", "srv-3")]["attributes"]["ProcTurboMode"] == "Disabled"
    assert steps[-1][:2] == ("inventory.collect", ["srv-1", "srv-2"])
    assert isinstance(plan, protocol.Plan)

    status, site = call(api, "GET", "/sites/shop-2")
    desired = {m["machine_id"]: m["desired"] for m in site["machines"]}
    assert desired["srv-1"]["params"] == {"turbo": "Enabled", "profile": "MaxPerf",
                                          "asset_prefix": "EP"}
    assert (desired["srv-2"]["blueprint"], desired["srv-2"]["revision"]) == ("baseline", 1)
    assert desired["srv-2"]["rollout"] == body["rollout"]["rollout_id"]


def test_a_missing_value_fails_the_rollout_naming_blueprint_step_parameter_and_site(api,
                                                                                 published):
    documents = [d for d in FLEET if d["kind"] != "profile"]  # nobody sets 'profile'
    apply(api, documents)
    add_machines(api, "shop-3", [("srv-1", None, {})])
    status, body = call(api, "POST", "/rollouts", {"blueprint": "baseline",
                                                   "sites": ["shop-3"]})
    assert status == 409
    message = body["error"]["message"]
    for expected in ("blueprint baseline revision 1", "step 1 (bios.apply)", "site 'shop-3'",
                     "machine 'srv-1'", "parameter 'attributes'",
                     "no profile or default gives 'profile' a value"):
        assert expected in message, (expected, message)
    assert published.plans() == [], "nothing was sent"


def test_a_rollout_of_an_unknown_blueprint_or_revision_is_refused(api):
    apply(api, FLEET)
    add_machines(api, "shop-1", [("srv-1", None, {})])
    status, body = call(api, "POST", "/rollouts", {"blueprint": "nope", "sites": ["shop-1"]})
    assert status == 404
    status, body = call(api, "POST", "/rollouts", {"blueprint": "baseline", "revision": 4,
                                                   "sites": ["shop-1"]})
    assert status == 404 and "no revision 4" in body["error"]["message"]
