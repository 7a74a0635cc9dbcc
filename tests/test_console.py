"""The web console as the API serves it (moto DynamoDB): its files without a token, with
their types, tags and a policy that keeps the page to its own origin; and the aggregates its
views read, for a viewer, with what the filters and the grouping do."""

from __future__ import annotations

import re

import pytest

from chalicelib import ingest
from chalicelib.console.failures import normalize
from edgeplane import protocol
from tests.support import as_principal, call, up, wait_until

POWER_ON = {"task": "power.ensure", "params": {"state": "on"}}
REFUSED = "The image http://10.1.2.{n}/boot.iso could not be fetched: [Errno 111] refused."


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    """Every answer reads the fleet again (the console's cache is tested on its own)."""
    from chalicelib.console import cache

    monkeypatch.setenv("EDGEPLANE_CONSOLE_CACHE_S", "0")
    cache.forget()
    yield
    cache.forget()


def get_file(api, path: str, headers: dict[str, str] | None = None):
    return api.http.request("GET", path, headers=headers or {})


# --- the files -------------------------------------------------------------------------


def test_the_page_and_its_modules_are_served_without_a_token(api):
    page = get_file(api, "/console")
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    modules = re.findall(r'src="console/([a-z-]+\.js)"', html)
    assert modules == ["app.js"]
    app_js = get_file(api, "/console/app.js")
    assert app_js.status_code == 200
    assert app_js.headers["Content-Type"] == "text/javascript; charset=utf-8"
    # Every module app.js imports is served too, as JavaScript.
    for name in re.findall(r'from "\./([a-z-]+\.js)"', app_js.body.decode()):
        answer = get_file(api, f"/console/{name}")
        assert (answer.status_code, answer.headers["Content-Type"]) == (
            200, "text/javascript; charset=utf-8"), name
    assert get_file(api, "/console/console.css").headers["Content-Type"] == \
        "text/css; charset=utf-8"


def test_the_page_may_load_nothing_from_another_origin(api):
    headers = get_file(api, "/console").headers
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in policy, "no other origin is named"
    assert headers["X-Content-Type-Options"] == "nosniff"
    html = get_file(api, "/console").body.decode()
    assert "<script>" not in html and "http://" not in html and "https://" not in html


def test_a_file_is_revalidated_and_answered_304_while_it_has_not_changed(api):
    first = get_file(api, "/console/app.js")
    assert first.headers["Cache-Control"] == "no-cache"
    tag = first.headers["ETag"]
    again = get_file(api, "/console/app.js", {"If-None-Match": tag})
    assert again.status_code == 304 and again.body == b""
    other = get_file(api, "/console/app.js", {"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.body == first.body


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", "APP.JS", "app.py",
                                  "x" * 300 + ".js"])
def test_only_the_consoles_own_files_are_served(api, name):
    answer = get_file(api, f"/console/{name}")
    assert answer.status_code == 404
    assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "no console file" in answer.body.decode()


def test_whoami_names_the_caller_and_its_role(api):
    viewer = as_principal("night-shift", "viewer")
    assert call(api, "GET", "/whoami", headers=viewer) == (
        200, {"name": "night-shift", "role": "viewer", "via": "token"})
    status, body = call(api, "GET", "/whoami", headers={})
    assert status == 401 and "Authorization" in body["error"]["message"]


# --- the fleet -------------------------------------------------------------------------


def add_site(api, site: str, region: str, tags: list[str], vendor: str | None = None) -> None:
    assert call(api, "PUT", f"/sites/{site}", {"region": region, "tags": tags})[0] == 200
    assert call(api, "PUT", f"/sites/{site}/machines/srv-1",
                {"protocol": "ipmi", "address": f"bmc.{site}"})[0] == 200
    if vendor:  # as an inventory report would set it
        from chalicelib.models import Machine

        machine = Machine.get(site, "srv-1")
        machine.update(actions=[Machine.manufacturer.set(vendor)])


def presence(site: str, online: bool, heard_ago: float = 0.0) -> None:
    """The site's gateway says it is online; the cloud heard from it ``heard_ago`` s ago."""
    import time

    from chalicelib.models import Site

    ingest.handle_message(*up(protocol.Presence(site=site, online=online, ts=time.time(),
                                                gateway_version="0.1.0", session=1)))
    if heard_ago:
        Site(site).update(actions=[Site.last_seen_at.set(time.time() - heard_ago)])


def test_fleet_counts_follow_the_filters_and_name_each_filters_values(api):
    add_site(api, "shop-1", "eu-west", ["retail"], "Contoso")
    add_site(api, "shop-2", "eu-west", ["retail", "paris"], "Fabrikam")
    add_site(api, "shop-3", "us-east", ["depot"], "Contoso")
    presence("shop-1", True)
    presence("shop-2", True, heard_ago=3 * 3600)  # online, but silent for three hours

    viewer = as_principal("wall-screen", "viewer")
    status, body = call(api, "GET", "/fleet/summary", headers=viewer)
    assert status == 200, body
    assert {k: body[k] for k in ("total", "online", "offline", "stale", "drifted",
                                 "failing")} == {"total": 3, "online": 2, "offline": 1,
                                                 "stale": 1, "drifted": 0, "failing": 0}
    assert body["facets"]["region"] == {"eu-west": 2, "us-east": 1}
    assert body["facets"]["tag"] == {"depot": 1, "paris": 1, "retail": 2}
    assert body["facets"]["vendor"] == {"Contoso": 2, "Fabrikam": 1}
    assert body["facets"]["gateway_version"] == {"(none)": 1, "0.1.0": 2}

    _, body = call(api, "GET", "/fleet/summary?region=eu-west&vendor=Contoso", headers=viewer)
    assert (body["total"], body["online"], body["filters"]) == (
        1, 1, {"region": "eu-west", "vendor": "Contoso"})
    _, body = call(api, "GET", "/fleet/summary?tag=paris", headers=viewer)
    assert (body["total"], body["stale"]) == (1, 1)
    _, body = call(api, "GET", "/fleet/summary?gateway_version=9.9", headers=viewer)
    assert body["total"] == 0 and body["facets"]["region"], "facets stay the fleet's"


def test_fleet_filters_are_checked(api):
    status, body = call(api, "GET", "/fleet/summary?colour=red")
    assert status == 400 and "'colour'" in body["error"]["message"]
    status, body = call(api, "GET", "/fleet/summary?region=" + "x" * 101)
    assert status == 400 and "region" in body["error"]["message"]


# --- failures ----------------------------------------------------------------------------


def failed_machine(machine: str, task: str, message: str) -> protocol.MachineResult:
    return protocol.MachineResult(machine=machine, state="failed", steps=[
        protocol.StepResult(task="power.ensure", state="succeeded", changed=False,
                            message="already on"),
        protocol.StepResult(task=task, state="failed", changed=False, message=message)])


def test_failures_are_grouped_by_task_and_message_and_lead_to_the_machine(api, published):
    for n in range(1, 4):
        add_site(api, f"shop-{n}", "eu-west", ["retail"])
    _, body = call(api, "POST", "/rollouts", {
        "sites": ["shop-1", "shop-2", "shop-3"],
        "steps": [POWER_ON, {"task": "media.insert",
                             "params": {"image": "http://10.1.2.3/boot.iso"}}]})
    rollout_id = body["rollout"]["rollout_id"]
    for n in (1, 2):
        ingest.handle_message(*up(protocol.Result(
            site=f"shop-{n}", execution_id=f"{rollout_id}.shop-{n}", seq=1, state="failed",
            message="1 of 1 machines failed: srv-1",
            machines=[failed_machine("srv-1", "media.insert", REFUSED.format(n=n))])))
    ingest.handle_message(*up(protocol.Result(
        site="shop-3", execution_id=f"{rollout_id}.shop-3", seq=1, state="succeeded",
        machines=[protocol.MachineResult(machine="srv-1", state="succeeded")])))

    viewer = as_principal("triage", "viewer")
    status, body = call(api, "GET", "/failures", headers=viewer)
    assert status == 200, body
    assert (body["rollouts"], body["failed_sites"], body["groups_total"]) == (
        [rollout_id], 2, 1)
    (group,) = body["groups"]
    assert group["task"] == "media.insert"
    assert group["message"] == ("The image <url> could not be fetched: [Errno <n>] refused.")
    assert group["example"] == REFUSED.format(n=1)
    assert (group["machines"], group["sites"]) == (2, 2)
    assert group["samples"] == [{"rollout_id": rollout_id, "site_id": f"shop-{n}",
                                 "machine": "srv-1"} for n in (1, 2)]

    # The drill-down: the site's run, each step with what the BMC said.
    status, body = call(api, "GET", f"/rollouts/{rollout_id}/sites/shop-2", headers=viewer)
    assert status == 200, body
    (machine,) = body["execution"]["machines"]
    assert [(s["task"], s["state"], s["message"]) for s in machine["steps"]] == [
        ("power.ensure", "succeeded", "already on"),
        ("media.insert", "failed", REFUSED.format(n=2))]
    assert call(api, "GET", f"/rollouts/{rollout_id}/sites/shop-9")[0] == 404
    assert call(api, "GET", "/rollouts/no-such/sites/shop-1")[0] == 404

    # The fleet view counts those two sites failing; a drifted machine makes its site drifted.
    from chalicelib.models import Machine

    Machine("shop-3", "srv-1").update(actions=[Machine.drift.set(
        [{"field": "power", "desired": "on", "observed": "off"}])])
    _, body = call(api, "GET", "/fleet/summary", headers=viewer)
    assert (body["total"], body["failing"], body["drifted"]) == (3, 2, 1)

    status, body = call(api, "GET", f"/failures?rollout={rollout_id}&limit=1")
    assert status == 200 and body["groups_total"] == 1
    status, body = call(api, "GET", "/failures?rollout=no-such")
    assert status == 404 and "no-such" in body["error"]["message"]
    assert call(api, "GET", "/failures?limit=0")[0] == 400


@pytest.mark.parametrize("message, normalized", [
    ("Connection to 10.0.0.5:623 timed out after 30 s",
     "Connection to <ip> timed out after <n> s"),
    ("System '4a5b' not found", "System <name> not found"),
    ("task 7f3a9c0d11ee22ff failed", "task <hex> failed"),
    ("", "(no message)"),
    (None, "(no message)"),
])
def test_messages_are_normalized_so_that_the_same_failure_groups(message, normalized):
    assert normalize(message) == normalized


def test_the_same_bmc_error_on_two_sites_makes_one_group():
    said = ("site {site} machine {machine} step 0 media.insert: BMC http://10.{n}.0.5: insert "
            "media http://images/boot.iso failed: HTTP 400 on PATCH "
            "/redfish/v1/Systems/{system}/VirtualMedia/CD1: The image http://images/boot.iso "
            "could not be fetched: [Errno 111] Connection refused.")
    one = normalize(said.format(site="shop-1", machine="srv-1", n=1, system="437XR1138R2"))
    two = normalize(said.format(site="depot-77", machine="rack2.srv-9", n=2, system="System.1"))
    assert one == two == (
        "site <site> machine <machine> step <n> media.insert: BMC <url> insert media <url> "
        "failed: HTTP <n> on PATCH /redfish/<id>/Systems/<id>/VirtualMedia/<id>: The image "
        "<url> could not be fetched: [Errno <n>] Connection refused.")


# --- the sites table, a site's runs, the vendor x firmware matrix ---------------------------


def observe(site: str, machine: str, bmc_version: str) -> None:
    """What the drift check stores of a machine's BMC read back (for machines with a
    desired state): the BMC's firmware among the rest."""
    from chalicelib.models import Machine

    Machine(site, machine).update(actions=[Machine.observed.set({
        "power": "on", "firmware": [
            {"id": "BIOS", "name": "System BIOS", "version": "U46"},
            {"id": "BMC", "name": "Manager firmware", "version": bmc_version}]})])


def test_the_sites_table_is_sorted_and_paged_on_the_server(api):
    for n, (region, tags) in enumerate([("eu-west", ["retail"]), ("eu-west", ["retail", "emea"]),
                                        ("us-east", ["depot"]), ("eu-west", ["emea"])], 1):
        add_site(api, f"shop-{n}", region, tags, vendor="Contoso")
    presence("shop-1", True, heard_ago=600)
    presence("shop-2", True, heard_ago=60)
    presence("shop-4", True, heard_ago=3 * 3600)
    observe("shop-2", "srv-1", "2.10")
    assert call(api, "POST", "/definitions", {"documents": [
        {"kind": "group", "name": "emea", "spec": {"tags": ["emea"]}}]})[0] == 200

    viewer = as_principal("desk", "viewer")
    status, body = call(api, "GET", "/fleet/sites?sort=last_seen&order=desc&limit=2",
                        headers=viewer)
    assert status == 200, body
    assert (body["total"], body["offset"], body["limit"]) == (4, 0, 2)
    assert [row["site_id"] for row in body["sites"]] == ["shop-2", "shop-1"]
    first = body["sites"][0]
    assert (first["online"], first["stale"], first["gateway_version"], first["machines"],
            first["healthy"]) == (True, False, "0.1.0", 1, 1)
    _, body = call(api, "GET", "/fleet/sites?sort=last_seen&order=desc&limit=2&offset=2",
                   headers=viewer)
    assert [row["site_id"] for row in body["sites"]] == ["shop-4", "shop-3"]
    assert body["sites"][0]["stale"] is True
    assert body["sites"][1]["last_seen_at"] is None

    _, body = call(api, "GET", "/fleet/sites?group=emea", headers=viewer)
    assert [row["site_id"] for row in body["sites"]] == ["shop-2", "shop-4"]
    _, body = call(api, "GET", "/fleet/sites?firmware=2.10", headers=viewer)
    assert [row["site_id"] for row in body["sites"]] == ["shop-2"]
    _, body = call(api, "GET", "/fleet/summary?group=emea", headers=viewer)
    assert body["total"] == 2 and body["facets"]["group"] == {"emea": 2}
    assert body["facets"]["firmware"] == {"(none)": 3, "2.10": 1}

    status, body = call(api, "GET", "/fleet/sites?sort=colour")
    assert status == 400 and "sort" in body["error"]["message"]
    assert call(api, "GET", "/fleet/sites?limit=501")[0] == 400


def test_a_sites_recent_runs_and_the_failure_matrix(api, published):
    add_site(api, "shop-1", "eu-west", ["retail"], vendor="Contoso")
    add_site(api, "shop-2", "eu-west", ["retail"], vendor="Fabrikam")
    observe("shop-1", "srv-1", "1.45")
    observe("shop-2", "srv-1", "2.10")
    rollout_ids = []
    for name in ("first", "second"):
        _, body = call(api, "POST", "/rollouts", {"name": name, "sites": ["shop-1", "shop-2"],
                                                  "steps": [POWER_ON]})
        rollout_id = body["rollout"]["rollout_id"]
        rollout_ids.append(rollout_id)
        ingest.handle_message(*up(protocol.Result(
            site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=1, state="succeeded",
            machines=[protocol.MachineResult(machine="srv-1", state="succeeded")])))
        ingest.handle_message(*up(protocol.Result(
            site="shop-2", execution_id=f"{rollout_id}.shop-2", seq=1, state="failed",
            message="1 of 1 machines failed: srv-1",
            machines=[failed_machine("srv-1", "power.ensure", "BMC answered 503")])))

    viewer = as_principal("desk", "viewer")
    status, body = call(api, "GET", "/sites/shop-2/executions", headers=viewer)
    assert status == 200, body
    assert [(run["rollout_name"], run["execution"]["state"]) for run in body["executions"]] \
        == [("second", "failed"), ("first", "failed")]
    assert call(api, "GET", "/sites/shop-9/executions", headers=viewer)[0] == 404

    status, body = call(api, "GET", "/failures/matrix", headers=viewer)
    assert status == 200, body
    assert body["cells"] == [
        {"vendor": "Fabrikam", "firmware": "2.10", "machines": 2, "failed": 2, "rate": 1.0},
        {"vendor": "Contoso", "firmware": "1.45", "machines": 2, "failed": 0, "rate": 0.0}]
    _, body = call(api, "GET", f"/failures/matrix?rollout={rollout_ids[0]}", headers=viewer)
    assert [c["machines"] for c in body["cells"]] == [1, 1]
    assert call(api, "GET", "/failures/matrix?rollout=no-such")[0] == 404


def test_one_reading_of_the_fleet_serves_the_views_and_is_renewed_behind_them(
        api, monkeypatch):
    add_site(api, "shop-1", "eu-west", ["retail"])
    monkeypatch.setenv("EDGEPLANE_CONSOLE_CACHE_S", "60")
    _, first = call(api, "GET", "/fleet/summary")
    add_site(api, "shop-2", "eu-west", ["retail"])
    _, again = call(api, "GET", "/fleet/sites")
    assert (first["total"], again["total"]) == (1, 1), "counted once, within the minute"
    assert again["counted_at"] == first["counted_at"]

    # Once the reading is older than its life, the next view still gets it at once, and the
    # fleet is read again behind it: a later view has the new counts.
    monkeypatch.setenv("EDGEPLANE_CONSOLE_CACHE_S", "0.001")
    _, expired = call(api, "GET", "/fleet/summary")
    assert expired["counted_at"] == first["counted_at"]
    renewed = wait_until(lambda: (body := call(api, "GET", "/fleet/summary")[1])["total"] == 2
                         and body, timeout=30, what="the fleet to be read again")
    assert renewed["counted_at"] > first["counted_at"]


def test_a_machines_observation_keeps_its_site_from_being_stale(api):
    import time

    from chalicelib.models import Machine

    add_site(api, "shop-1", "eu-west", ["retail"])
    presence("shop-1", True, heard_ago=3 * 3600)  # connected three hours ago
    assert call(api, "GET", "/fleet/summary")[1]["stale"] == 1
    Machine("shop-1", "srv-1").update(actions=[Machine.observed_ts.set(time.time() - 60)])
    assert call(api, "GET", "/fleet/summary")[1]["stale"] == 0, "its BMC was read a minute ago"
