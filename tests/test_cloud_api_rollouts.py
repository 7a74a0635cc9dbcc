"""Starting and reading rollouts through the API; plans go to a recording publisher."""

from __future__ import annotations

import dataclasses

import pytest

from chalicelib import ingest
from edgeplane import protocol
from tests.support import call, machine_result, up

POWER_ON = {"task": "power.ensure", "params": {"state": "on"}}
PXE_ONCE = {"task": "boot.override", "params": {"target": "pxe", "mode": "once"}}


def add_site(client, site: str, machines: tuple[str, ...] = ("srv-1", "srv-2"),
             tags: tuple[str, ...] = ()) -> None:
    assert call(client, "PUT", f"/sites/{site}", {"tags": list(tags)})[0] == 200
    for machine in machines:
        status, _ = call(client, "PUT", f"/sites/{site}/machines/{machine}",
                         {"protocol": "ipmi", "address": f"bmc-{machine}.{site}"})
        assert status == 200


def report(message: protocol.Message) -> None:
    ingest.handle_message(*up(message))


def test_create_publishes_one_plan_per_site_and_marks_it_sent(api, published):
    add_site(api, "shop-1")
    add_site(api, "shop-2", machines=("srv-9",))
    status, body = call(api, "POST", "/rollouts", {
        "name": "pxe reinstall", "sites": ["shop-1", "shop-2"], "steps": [POWER_ON, PXE_ONCE]})
    assert status == 201, body
    rollout = body["rollout"]
    assert rollout["state"] == "running" and rollout["counts"] == {"sent": 2}
    assert rollout["steps"] == [POWER_ON, PXE_ONCE]
    assert rollout["target"] == {"sites": ["shop-1", "shop-2"]}
    rollout_id = rollout["rollout_id"]
    assert [(e["site_id"], e["execution_id"], e["state"]) for e in body["executions"]] == [
        ("shop-1", f"{rollout_id}.shop-1", "sent"), ("shop-2", f"{rollout_id}.shop-2", "sent")]

    topics = [topic for topic, _ in published.sent]
    assert sorted(topics) == [protocol.plan_topic("shop-1"), protocol.plan_topic("shop-2")]
    (plan,) = [p for p in published.plans() if p.site == "shop-1"]
    assert isinstance(plan, protocol.Plan)
    assert plan.execution_id == f"{rollout_id}.shop-1" and plan.rollout_id == rollout_id
    assert [(s.task, s.params, s.machines) for s in plan.steps] == [
        ("power.ensure", {"state": "on"}, ["srv-1", "srv-2"]),
        ("boot.override", {"target": "pxe", "mode": "once"}, ["srv-1", "srv-2"])]
    assert body["executions"][0]["plan_message_id"] == plan.id


def test_a_large_rollout_is_answered_with_its_counters_not_its_executions(api, published,
                                                                          monkeypatch):
    from chalicelib.rollouts import create

    monkeypatch.setattr(create, "LIST_EXECUTIONS_UP_TO", 1)
    add_site(api, "shop-1")
    add_site(api, "shop-2", machines=("srv-9",))
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1", "shop-2"],
                                                   "steps": [POWER_ON]})
    assert status == 201 and "executions" not in body
    assert body["rollout"]["state_counts"] == {"sent": 2} and body["rollout"]["total"] == 2
    _, listed = call(api, "GET", f"/rollouts/{body['rollout']['rollout_id']}")
    assert len(listed["executions"]) == 2


def test_plans_carry_the_params_given_and_the_gateway_fills_the_defaults(api, published):
    add_site(api, "shop-1")
    status, body = call(api, "POST", "/rollouts", {
        "sites": ["shop-1"], "steps": [{"task": "boot.override", "params": {"target": "disk"}}]})
    assert status == 201
    assert body["rollout"]["steps"][0]["params"] == {"target": "disk"}
    sent = published.plans()[-1].steps[0].params
    assert protocol.task_spec("boot.override").validate(sent) == {"target": "disk",
                                                                  "mode": "once"}


def test_a_step_can_select_machines_and_skip_those_without_the_capability(api, published):
    add_site(api, "shop-1", machines=())
    report(protocol.Inventory(site="shop-1", machines=[
        protocol.MachineReport(id="srv-1", protocol="redfish", address="https://10.0.0.1",
                               capabilities=["bios", "power"]),
        protocol.MachineReport(id="srv-2", protocol="redfish", address="https://10.0.0.2",
                               capabilities=["power"]),
        protocol.MachineReport(id="srv-3", protocol="ipmi", address="10.0.0.3",
                               capabilities=["power"]),
    ]))
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [
        {"task": "power.ensure", "params": {"state": "on"}, "select": {"protocol": "ipmi"}},
        {"task": "bios.apply", "params": {"attributes": {"ProcTurboMode": "Disabled"}},
         "select": {"capable": True}}]})
    assert status == 201, body
    plan = published.plans()[-1]
    assert [(s.task, s.machines) for s in plan.steps] == [("power.ensure", ["srv-3"]),
                                                          ("bios.apply", ["srv-1"])]
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [
        {"task": "bios.apply", "params": {"attributes": {"ProcTurboMode": "Disabled"}}}]})
    assert status == 409
    assert "machine 'srv-2' cannot run step 0 (bios.apply): it lacks capability 'bios'" in \
        body["error"]["message"]


def test_a_tag_selects_its_sites(api, published):
    add_site(api, "shop-1", tags=("paris",))
    add_site(api, "shop-2", tags=("lyon",))
    add_site(api, "shop-3", tags=("paris", "big"))
    status, body = call(api, "POST", "/rollouts", {"tag": "paris", "steps": [POWER_ON]})
    assert status == 201
    assert body["rollout"]["site_ids"] == ["shop-1", "shop-3"]
    assert len(published.sent) == 2


@pytest.mark.parametrize("body, status, message", [
    ({"steps": [POWER_ON]}, 400, "give exactly one of 'sites'"),
    ({"sites": ["shop-1"], "tag": "x", "steps": [POWER_ON]}, 400, "give exactly one of"),
    ({"sites": ["shop-1"]}, 400, "give exactly one of 'steps' (tasks inline) or 'blueprint'"),
    ({"sites": ["shop-1"], "steps": [POWER_ON], "blueprint": "b"}, 400,
     "give exactly one of 'steps'"),
    ({"sites": ["shop-1"], "steps": [POWER_ON], "revision": 2}, 400, "'revision' is a "
     "blueprint's"),
    ({"sites": ["shop-1"], "steps": []}, 400, "field 'steps'"),
    ({"sites": ["Bad Site"], "steps": [POWER_ON]}, 400,
     "field 'sites[0]': 'Bad Site' does not match"),
    ({"sites": ["shop-1"], "steps": [POWER_ON, {"task": "power.ensure", "params": {}}]}, 400,
     "field 'steps[1]': task power.ensure: parameter 'state' is required"),
    ({"sites": ["shop-1"], "steps": [{"task": "power.ensure", "params": {"state": "toggle"}}]},
     400, "field 'steps[0]': task power.ensure: parameter 'state' is 'toggle'"),
    ({"sites": ["shop-1"], "steps": [{"task": "bios.flash", "params": {}}]}, 400,
     "field 'steps[0]': unknown task 'bios.flash'"),
    ({"sites": ["shop-1", "nowhere"], "steps": [POWER_ON]}, 404,
     "site(s) 'nowhere' do not exist"),
    ({"tag": "nothing-has-it", "steps": [POWER_ON]}, 400,
     "tag 'nothing-has-it' matches no site"),
])
def test_refused_rollouts(api, published, body, status, message):
    add_site(api, "shop-1")
    got, answer = call(api, "POST", "/rollouts", body)
    assert got == status, answer
    assert message in answer["error"]["message"]
    assert published.sent == []
    assert call(api, "GET", "/rollouts")[1] == {"rollouts": []}


def test_a_site_without_machines_is_409(api, published):
    add_site(api, "shop-1")
    add_site(api, "empty-1", machines=())
    status, body = call(api, "POST", "/rollouts",
                        {"sites": ["shop-1", "empty-1"], "steps": [POWER_ON]})
    assert status == 409
    assert body["error"]["code"] == "conflict"
    assert "site 'empty-1' has no machines" in body["error"]["message"]
    assert published.sent == []


def test_a_machine_lacking_a_capability_is_refused_when_the_rollout_is_built(api, published):
    add_site(api, "shop-1")
    report(protocol.Inventory(site="shop-1", machines=[
        protocol.MachineReport(id="srv-1", protocol="ipmi", address="bmc-srv-1.shop-1",
                               capabilities=["power"]),
        protocol.MachineReport(id="srv-2", protocol="ipmi", address="bmc-srv-2.shop-1",
                               capabilities=["power", "boot"]),
    ]))
    status, body = call(api, "POST", "/rollouts",
                        {"sites": ["shop-1"], "steps": [POWER_ON, PXE_ONCE]})
    assert status == 409
    assert body["error"]["message"] == (
        "site 'shop-1' machine 'srv-1' cannot run step 1 (boot.override): it lacks "
        "capability 'boot' (it has power)")
    assert published.sent == []
    # Power alone is fine for both.
    assert call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON]})[0] == 201


def power_only_site(site: str) -> None:
    report(protocol.Inventory(site=site, machines=[protocol.MachineReport(
        id="srv-1", protocol="ipmi", address=f"bmc.{site}", capabilities=["power"])]))


def test_a_large_rollout_checks_its_canary_at_once_and_each_later_site_at_its_wave(
        api, published, monkeypatch):
    from chalicelib.models import Execution, Site
    from chalicelib.rollouts import create

    monkeypatch.setattr(create, "RENDER_ALL_UP_TO", 2)
    for site in ("shop-1", "shop-2", "shop-3"):
        add_site(api, site)
    power_only_site("shop-3")  # cannot boot from PXE
    assert Site.get("shop-1").machine_ids == {"srv-1", "srv-2"}
    request = {"sites": ["shop-3", "shop-1", "shop-2"], "steps": [POWER_ON, PXE_ONCE],
               "policy": {"canary": {"sites": 1}}}
    status, body = call(api, "POST", "/rollouts", request)
    assert status == 409 and "site 'shop-3' machine 'srv-1'" in body["error"]["message"]

    status, body = call(api, "POST", "/rollouts",
                        {**request, "sites": ["shop-1", "shop-2", "shop-3"]})
    assert status == 201, body
    rollout_id = body["rollout"]["rollout_id"]
    stored = {e.site_id: e for e in Execution.query(rollout_id)}
    assert stored["shop-1"].plan_steps is not None  # the canary, rendered by the create
    assert stored["shop-2"].plan_steps is None and stored["shop-3"].plan_steps is None
    (canary,) = published.plans()
    report(protocol.Result(site="shop-1", execution_id=canary.execution_id, seq=1,
                           machines=[machine_result("srv-1"), machine_result("srv-2")]))
    assert sorted(plan.site for plan in published.plans()) == ["shop-1", "shop-2"]
    (plan,) = [plan for plan in published.plans() if plan.site == "shop-2"]
    assert [step.machines for step in plan.steps] == [["srv-1", "srv-2"]] * 2
    shop_3 = Execution.get(rollout_id, "shop-3")
    assert shop_3.state == "failed"
    assert "machine 'srv-1' cannot run step 1 (boot.override)" in shop_3.message


def test_the_same_client_token_gives_back_the_same_rollout(api, published):
    add_site(api, "shop-1")
    request = {"sites": ["shop-1"], "steps": [POWER_ON], "client_token": "deploy-42"}
    status, first = call(api, "POST", "/rollouts", request)
    assert status == 201
    status, again = call(api, "POST", "/rollouts", request)
    assert status == 200
    assert again["rollout"]["rollout_id"] == first["rollout"]["rollout_id"]
    assert len(published.sent) == 1  # the plan went out once
    assert len(call(api, "GET", "/rollouts")[1]["rollouts"]) == 1

    status, other = call(api, "POST", "/rollouts", {**request, "steps": [PXE_ONCE]})
    assert status == 409
    assert "client_token 'deploy-42' was already used" in other["error"]["message"]


def test_a_create_that_crashed_is_completed_by_its_retry_from_the_stored_target(
        api, published, monkeypatch):
    from chalicelib.models import Rollout
    from chalicelib.rollouts import create, targets

    monkeypatch.setattr(targets, "PART_SIZE", 2)  # 5 sites: 3 parts
    sites = [f"shop-{n}" for n in (5, 3, 1, 4, 2)]  # listed in the operator's order
    for site in sites:
        add_site(api, site)
    write_executions = create.ensure_executions

    def crash(*args, **kwargs):
        raise RuntimeError("the Lambda was stopped")

    monkeypatch.setattr(create, "ensure_executions", crash)
    request = {"sites": sites, "steps": [POWER_ON], "client_token": "crash-1",
               "policy": {"canary": {"sites": 1}, "growth": 2}}
    assert call(api, "POST", "/rollouts", request)[0] == 500
    monkeypatch.setattr(create, "ensure_executions", write_executions)
    status, body = call(api, "POST", "/rollouts", request)
    assert status == 200, body
    rollout_id = body["rollout"]["rollout_id"]
    assert body["rollout"]["site_ids"] == sites
    assert [(e["site_id"], e["wave"], e["state"]) for e in
            sorted(body["executions"], key=lambda e: sites.index(e["site_id"]))] == [
        ("shop-5", 0, "sent"), ("shop-3", 1, "queued"), ("shop-1", 1, "queued"),
        ("shop-4", 2, "queued"), ("shop-2", 2, "queued")]
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["target"] == \
        {"sites": sites}
    stored = Rollout._get_connection().get_item(rollout_id)["Item"]
    assert "shop-3" not in str(stored), "the rollout item does not carry its site ids"


def test_a_plan_that_cannot_be_published_stays_queued_and_a_retry_sends_it(api, published):
    add_site(api, "shop-1")
    add_site(api, "shop-2")
    published.refuse.add("shop-2")
    request = {"sites": ["shop-1", "shop-2"], "steps": [POWER_ON], "client_token": "t-1"}
    status, body = call(api, "POST", "/rollouts", request)
    assert status == 201
    states = {e["site_id"]: (e["state"], e["message"]) for e in body["executions"]}
    assert states["shop-1"] == ("sent", "")
    assert states["shop-2"][0] == "queued"
    assert "plan not sent" in states["shop-2"][1] and "broker unreachable" in states["shop-2"][1]

    published.refuse.clear()
    status, body = call(api, "POST", "/rollouts", request)
    assert status == 200
    assert [e["state"] for e in body["executions"]] == ["sent", "sent"]
    assert [t for t, _ in published.sent] == [protocol.plan_topic("shop-1"),
                                              protocol.plan_topic("shop-2")]


def test_list_is_newest_first(api, published):
    add_site(api, "shop-1")
    ids = [call(api, "POST", "/rollouts", {"name": f"r{i}", "sites": ["shop-1"],
                                            "steps": [POWER_ON]})[1]["rollout"]["rollout_id"]
           for i in range(3)]
    status, body = call(api, "GET", "/rollouts")
    assert status == 200
    assert [r["rollout_id"] for r in body["rollouts"]] == ids[::-1]


def test_get_a_rollout_with_its_results(api, published):
    add_site(api, "shop-1")
    add_site(api, "shop-2", machines=("srv-9",))
    _, body = call(api, "POST", "/rollouts",
                   {"sites": ["shop-1", "shop-2"], "steps": [POWER_ON]})
    rollout_id = body["rollout"]["rollout_id"]
    report(protocol.Progress(site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=1,
                             machines=[machine_result("srv-1", "running")]))
    report(protocol.Result(site="shop-2", execution_id=f"{rollout_id}.shop-2", seq=2,
                           machines=[machine_result("srv-9", "failed")], state="failed",
                           message="1 of 1 machines failed: srv-9"))

    status, body = call(api, "GET", f"/rollouts/{rollout_id}")
    assert status == 200
    assert body["rollout"]["state"] == "running"
    assert body["rollout"]["counts"] == {"failed": 1, "running": 1}
    one, two = body["executions"]
    assert (one["site_id"], one["state"], one["last_seq"]) == ("shop-1", "running", 1)
    assert one["machines"] == [{
        "machine": "srv-1", "state": "running", "seq": 1, "updated_at": one["machines"][0][
            "updated_at"],
        "steps": [{"task": "power.ensure", "state": "running", "changed": True,
                   "message": "ok", "started_at": "2023-11-14T22:13:20.000Z",
                   "finished_at": "2023-11-14T22:13:21.500Z", "retryable": False}]}]
    assert (two["state"], two["message"]) == ("failed", "1 of 1 machines failed: srv-9")

    report(protocol.Result(site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=3,
                           machines=[machine_result("srv-1"), machine_result("srv-2")]))
    _, body = call(api, "GET", f"/rollouts/{rollout_id}")
    assert body["rollout"]["state"] == "failed"
    assert body["rollout"]["counts"] == {"failed": 1, "succeeded": 1}

    _, body = call(api, "GET", f"/rollouts/{rollout_id}?executions=false")
    assert "executions" not in body and "counts" not in body["rollout"]
    assert body["rollout"]["site_ids"] is None, "the counters only, not the site ids"
    assert (body["rollout"]["done"], body["rollout"]["total"]) == (2, 2)
    assert body["rollout"]["state_counts"] == {"failed": 1, "succeeded": 1}, \
        "the counters agree with the executions"
    assert body["waves"] == [{"wave": 0, "size": 2, "done": 2, "failed": 1}]


def test_get_unknown_rollout_is_404(api):
    status, body = call(api, "GET", "/rollouts/r-nothing")
    assert status == 404 and body["error"]["message"] == "rollout 'r-nothing' does not exist"


def test_what_a_read_task_found_is_in_the_rollout(api, published):
    add_site(api, "shop-1", machines=("srv-1",))
    _, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"],
                                              "steps": [{"task": "bios.read"}]})
    rollout_id = body["rollout"]["rollout_id"]
    found = {"current": {"ProcTurboMode": "Enabled"}, "pending": {}}
    report(protocol.Result(site="shop-1", execution_id=f"{rollout_id}.shop-1", seq=1,
                           machines=[protocol.MachineResult(
                               machine="srv-1", state="succeeded", steps=[protocol.StepResult(
                                   "bios.read", state="succeeded", message="1 attributes",
                                   data=found)])]))
    _, body = call(api, "GET", f"/rollouts/{rollout_id}")
    step = body["executions"][0]["machines"][0]["steps"][0]
    assert step["data"] == found


def test_a_summarized_result_reads_back_with_the_plans_tasks(api, published):
    add_site(api, "shop-1")
    _, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON, PXE_ONCE]})
    rollout_id = body["rollout"]["rollout_id"]
    (plan,) = published.plans()
    assert plan.detail == protocol.Detail.OUTCOMES  # the default
    assert plan.observe is False  # no desired state at the site: nothing to judge
    full = protocol.MachineResult("srv-1", "failed", [
        protocol.StepResult("power.ensure", "succeeded", changed=True, message="on"),
        protocol.StepResult("boot.override", "failed", message="BMC said 400: no PXE",
                            started_at=1.0, finished_at=2.0)])
    sent = [protocol.summarize(full), protocol.summarize(protocol.MachineResult(
        "srv-2", "succeeded", [protocol.StepResult("power.ensure", "succeeded"),
                               protocol.StepResult("boot.override", "succeeded")]))]
    result = protocol.Result(site="shop-1", execution_id=plan.execution_id, seq=1,
                             machines=sent, state="failed", message="1 of 2 machines failed")
    whole = dataclasses.replace(result, machines=[full, protocol.MachineResult(
        "srv-2", "succeeded", [protocol.StepResult("power.ensure", "succeeded"),
                               protocol.StepResult("boot.override", "succeeded")])])
    assert len(result.encode()) < len(whole.encode())
    report(result)
    (execution,) = call(api, "GET", f"/rollouts/{rollout_id}")[1]["executions"]
    steps = {m["machine"]: [(s["task"], s["state"], s["changed"], s["message"])
                            for s in m["steps"]] for m in execution["machines"]}
    assert steps == {
        "srv-1": [("power.ensure", "succeeded", True, ""),
                  ("boot.override", "failed", False, "BMC said 400: no PXE")],
        "srv-2": [("power.ensure", "succeeded", False, ""),
                  ("boot.override", "succeeded", False, "")]}


def test_a_malformed_summary_is_dropped_and_the_rest_is_kept(api, published):
    add_site(api, "shop-1")
    _, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON]})
    rollout_id = body["rollout"]["rollout_id"]
    (plan,) = published.plans()
    report(protocol.Result(site="shop-1", execution_id=plan.execution_id, seq=1, machines=[
        protocol.MachineResult("srv-1", "succeeded", summary="c" * 51),
        protocol.MachineResult("srv-2", "succeeded", summary="z"),
        protocol.MachineResult("srv-3", "succeeded", summary="c", steps=[
            protocol.StepResult("power.ensure", "failed", index=4)])]))
    (execution,) = call(api, "GET", f"/rollouts/{rollout_id}")[1]["executions"]
    assert execution["state"] == "succeeded" and execution["machines"] == []


def test_a_full_report_can_be_asked_for_and_a_site_with_desired_state_is_observed(
        api, published):
    from chalicelib.models import Site

    add_site(api, "shop-1")
    Site("shop-1").update(actions=[Site.has_desired.set(True)])
    call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                    "policy": {"report": "full"}})
    (plan,) = published.plans()
    assert (plan.detail, plan.observe) == (protocol.Detail.FULL, True)
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                                   "policy": {"report": "all"}})
    assert status == 400 and "report" in body["error"]["message"]


def test_a_plan_too_large_for_a_gateway_is_refused_naming_the_site(api, published):
    add_site(api, "shop-1")
    # Each step within the request's bounds (32 KiB of parameters), the plan not.
    attributes = {f"Attribute{i}": "a" * 3900 for i in range(8)}
    huge = {"task": "bios.apply", "params": {"attributes": attributes}}
    status, body = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [huge] * 9})
    assert status == 409, body
    assert body["error"]["message"].startswith("site 'shop-1': its plan would be ")
    assert "a gateway takes at most 262144" in body["error"]["message"]
    assert published.sent == []
