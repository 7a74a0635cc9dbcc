"""Definitions without storage: document validation, resolution across levels, templates,
and the variation report on a generated 10,000-site fleet."""

from __future__ import annotations

import random

import pytest

from chalicelib.definitions import templates
from chalicelib.definitions.documents import Level, parse_document
from chalicelib.definitions.resolve import ConflictError, Fleet, Profile
from chalicelib.definitions.variation import SiteTags, report
from chalicelib.errors import BadRequest

FLEET = Profile("fleet-defaults", Level.FLEET, None,
                {"ntp_server": "10.0.0.1", "turbo": "Enabled", "syslog": "10.0.0.9"})
EMEA = Profile("emea", Level.GROUP, "emea", {"ntp_server": "10.1.0.1"})
SHOP_42 = Profile("shop-42-quirks", Level.SITE, "shop-42", {"turbo": "Disabled"})
R650 = Profile("r650", Level.MACHINE_CLASS, "r650", {"turbo": "Enabled", "syslog": "10.0.0.8"})
SRV_2 = Profile("shop-42-srv-2", Level.MACHINE, "shop-42/srv-2", {"syslog": "10.4.2.2"})
GROUPS = {"emea": frozenset({"emea"}), "retail": frozenset({"retail", "emea"})}


def fleet(*extra: Profile) -> Fleet:
    return Fleet([FLEET, EMEA, SHOP_42, R650, SRV_2, *extra], dict(GROUPS))


# --- resolution -------------------------------------------------------------------------


def test_the_most_specific_level_wins_and_says_what_it_overrides():
    resolved = fleet().resolve("shop-42", ["emea"], "srv-2", "r650")
    assert {name: r.value for name, r in resolved.items()} == {
        "ntp_server": "10.1.0.1", "turbo": "Enabled", "syslog": "10.4.2.2"}
    turbo = resolved["turbo"]
    assert (turbo.source.profile, turbo.source.level) == ("r650", "machine-class")
    assert [(o.profile, o.level, o.value) for o in turbo.overrides] == [
        ("shop-42-quirks", "site", "Disabled"), ("fleet-defaults", "fleet", "Enabled")]
    assert not turbo.redundant, "Enabled overrides Disabled: it changes something"
    syslog = resolved["syslog"]
    assert [o.profile for o in syslog.overrides] == ["r650", "fleet-defaults"]


def test_a_site_outside_the_group_gets_the_fleet_value():
    resolved = fleet().resolve("shop-7", ["amer"])
    assert resolved["ntp_server"].value == "10.0.0.1"
    assert resolved["ntp_server"].source.level == "fleet"


def test_blueprint_defaults_are_the_bottom_layer():
    resolved = fleet().resolve("shop-7", [], defaults={"timeout": 300, "turbo": "Disabled"})
    assert resolved["timeout"].source.level == "default"
    assert resolved["turbo"].value == "Enabled"
    assert resolved["turbo"].overrides[0].level == "default"


def test_an_override_equal_to_what_it_overrides_is_redundant():
    same = Profile("shop-9", Level.SITE, "shop-9", {"ntp_server": "10.1.0.1"})
    resolved = fleet(same).resolve("shop-9", ["emea"])
    assert resolved["ntp_server"].redundant


def test_two_groups_of_one_level_that_disagree_are_a_conflict_naming_both():
    retail = Profile("retail-ntp", Level.GROUP, "retail", {"ntp_server": "10.9.9.9"})
    with pytest.raises(ConflictError) as conflict:
        fleet(retail).resolve("shop-1", ["emea", "retail"])
    message = str(conflict.value)
    assert "'emea'" in message and "'retail-ntp'" in message and "ntp_server" in message
    assert "give one a higher priority" in message


def test_a_priority_settles_a_conflict_and_equal_values_are_no_conflict():
    retail = Profile("retail-ntp", Level.GROUP, "retail", {"ntp_server": "10.9.9.9"}, priority=10)
    resolved = fleet(retail).resolve("shop-1", ["emea", "retail"])
    assert (resolved["ntp_server"].value, resolved["ntp_server"].source.profile) == \
        ("10.9.9.9", "retail-ntp")
    # the lower-priority group profile is overridden too, and says so
    assert [o.profile for o in resolved["ntp_server"].overrides] == ["emea", "fleet-defaults"]
    agreeing = Profile("retail-same", Level.GROUP, "retail", {"ntp_server": "10.1.0.1"})
    assert fleet(agreeing).resolve("shop-1", ["emea", "retail"])["ntp_server"].value == \
        "10.1.0.1"


# --- documents --------------------------------------------------------------------------


BLUEPRINT = {"kind": "blueprint", "name": "baseline", "spec": {
    "params": {"turbo": {"type": "string", "choices": ["Enabled", "Disabled"],
                         "default": "Enabled"}},
    "steps": [{"task": "power.ensure", "params": {"state": "on"}},
              {"task": "bios.apply", "params": {
                  "attributes": {"ProcTurboMode": "{{ params.turbo }}"}, "reboot": True},
               "select": {"capable": True}}]}}


def test_a_valid_blueprint_is_parsed_with_its_defaults_filled_in():
    document, spec = parse_document(BLUEPRINT)
    assert spec.steps[1].select.capable and document.spec["params"]["turbo"]["minimum"] is None


@pytest.mark.parametrize("change, message", [
    ({"kind": "blueprnt"}, "kind: Input should be"),
    ({"name": "Base Line"}, "name: 'Base Line': a name is 1-63 lowercase"),
    ({"spec": {"steps": []}}, "spec.steps: List should have at least 1 item"),
    ({"spec": {"steps": [{"task": "power.toggle"}]}}, "spec.steps[0]: unknown task "
                                                      "'power.toggle'; known tasks: bios.apply"),
    ({"spec": {"steps": [{"task": "power.ensure", "params": {"state": "sideways"}}]}},
     "spec.steps[0]: task power.ensure: parameter 'state' is 'sideways'; allowed: on, off"),
    ({"spec": {"steps": [{"task": "power.ensure", "params": {"state": "{{ oops"}}]}},
     "parameter 'state': the template '{{ oops' does not parse"),
    ({"spec": {"steps": [{"task": "power.ensure", "params": {"colour": "on"}}]}},
     "unknown parameter(s) colour"),
    ({"spec": {"params": {"x": {"type": "integer", "default": "many"}},
               "steps": [{"task": "sel.clear"}]}},
     "spec.params.x: the default 'many' does not fit: it must be an integer"),
    ({"spec": {"steps": [{"task": "sel.clear"}], "stepz": []}}, "spec.stepz: Extra inputs"),
])
def test_document_errors_name_the_path(change, message):
    document = {**BLUEPRINT, **change}
    with pytest.raises(BadRequest) as refused:
        parse_document(document, "document 3")
    assert refused.value.message.startswith("document 3")
    assert message in refused.value.message


@pytest.mark.parametrize("spec, message", [
    ({"level": "fleet", "target": "x", "params": {"a": 1}}, "a fleet profile has no target"),
    ({"level": "group", "params": {"a": 1}}, "needs a target: the group's name"),
    ({"level": "machine", "target": "shop-1", "params": {"a": 1}}, "SITE/MACHINE"),
    ({"level": "galaxy", "params": {"a": 1}}, "spec.level"),
    ({"level": "fleet", "params": {}}, "spec.params"),
])
def test_profile_errors(spec, message):
    with pytest.raises(BadRequest, match=message):
        parse_document({"kind": "profile", "name": "p", "spec": spec})


# --- templates --------------------------------------------------------------------------


CONTEXT = {"params": {"ntp": "10.0.0.1", "bios": {"ProcTurboMode": "Disabled"}, "cores": 2},
           "site": {"id": "shop-42", "facts": {"floor": 3}}, "machine": {"id": "srv-1"}}


def test_a_single_expression_keeps_its_type_and_text_renders_to_text():
    assert templates.render("{{ params.bios }}", CONTEXT) == {"ProcTurboMode": "Disabled"}
    assert templates.render("{{ params.cores }}", CONTEXT) == 2
    assert templates.render("ntp://{{ params.ntp }}/{{ site.id }}", CONTEXT) == \
        "ntp://10.0.0.1/shop-42"
    assert templates.render({"a": ["{{ machine.id }}", 5]}, CONTEXT) == {"a": ["srv-1", 5]}


@pytest.mark.parametrize("template", ["{{ params.missing }}", "x-{{ site.facts.rack }}",
                                      "{{ params.missing | default('') }}x{{ nope }}"])
def test_an_undefined_value_is_an_error_never_an_empty_string(template):
    with pytest.raises(templates.TemplateProblem, match="undefined|has no attribute"):
        templates.render(template, CONTEXT)


def test_the_sandbox_refuses_reaching_into_python():
    with pytest.raises(templates.TemplateProblem):
        templates.render("{{ params.__class__.__mro__ }}", CONTEXT)


# --- variation --------------------------------------------------------------------------


def test_variation_on_a_generated_10000_site_fleet():
    rng = random.Random(7)
    regions = ["emea", "amer", "apac"]
    profiles = [Profile("fleet", Level.FLEET, None, {"ntp_server": "10.0.0.1",
                                                     "turbo": "Enabled",
                                                     "syslog": "10.0.0.9"}),
                Profile("emea", Level.GROUP, "emea", {"ntp_server": "10.1.0.1"}),
                Profile("apac", Level.GROUP, "apac", {"ntp_server": "10.2.0.1"})]
    sites, overriding, redundant = [], set(), set()
    for n in range(10_000):
        site_id = f"site-{n:05d}"
        sites.append(SiteTags(site_id, (regions[n % 3], "shop")))
        if rng.random() < 0.03:
            profiles.append(Profile(site_id, Level.SITE, site_id, {"turbo": "Disabled"}))
            overriding.add(site_id)
        elif rng.random() < 0.01:
            profiles.append(Profile(site_id, Level.SITE, site_id, {"turbo": "Enabled"}))
            redundant.add(site_id)
    profiles.append(Profile("r650", Level.MACHINE_CLASS, "r650", {"syslog": "10.0.0.8"}))
    result = report(Fleet(profiles, {"emea": frozenset({"emea"}),
                                     "apac": frozenset({"apac"})}), sites)

    assert result["sites"] == 10_000
    assert result["customized_sites"] == len(overriding)
    by_name = {p["name"]: p for p in result["parameters"]}
    assert by_name["ntp_server"]["distinct_values"] == 3
    assert by_name["ntp_server"]["sites_by_level"] == {"fleet": 3333, "group": 6667}
    assert by_name["turbo"]["site_overrides"] == len(overriding) + len(redundant)
    assert set(by_name["turbo"]["redundant_overrides"]) == redundant
    assert by_name["syslog"]["machine_overrides"] == 1
    # syslog is one value per site, but an r650 profile sets it per machine class
    assert result["varying_parameters"] == ["ntp_server", "syslog", "turbo"]
    assert by_name["ntp_server"]["sites_without_value"] == 0
    assert result["conflicts"] == []


def test_variation_reports_conflicts_instead_of_failing():
    clash = Profile("retail-ntp", Level.GROUP, "retail", {"ntp_server": "10.9.9.9"})
    result = report(fleet(clash), [SiteTags("shop-1", ("emea", "retail")),
                                   SiteTags("shop-2", ("emea",))])
    assert result["sites"] == 2 and len(result["conflicts"]) == 1
    assert "retail-ntp" in result["conflicts"][0]
