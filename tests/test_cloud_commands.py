"""Commands as EventBridge events: start, pause, resume and cancel a rollout as the API does,
once per event id, each answered with an event on the bus (moto's EventBridge, read from the
SQS queue of ``bus_events``)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from chalicelib import commands
from chalicelib.commands import claims, contract, handler
from tests.support import REGION, call
from tests.test_cloud_api_rollouts import POWER_ON, add_site

ACCOUNT = "123456789012"
FUNCTION = "rollout_commands"
DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"


def command(api, detail_type: str, detail: dict, event_id: str = "ev-1",
            source: str = contract.SOURCE) -> dict:
    event = api.events.generate_cw_event(source=source, detail_type=detail_type,
                                         detail=detail, resources=[], region=REGION)
    event["id"] = event_id  # EventBridge gives each event its own id
    return event


def send(api, event: dict) -> None:
    api.lambda_.invoke(FUNCTION, event)


def answers(bus_events) -> list[dict]:
    return [event["detail"] for event in bus_events("Rollout Command")]


def start(api, bus_events, event_id: str = "ev-start", **rollout) -> dict:
    body = {"sites": ["shop-1"], "steps": [POWER_ON], **rollout}
    send(api, command(api, contract.START, {"rollout": body, "requested_by": "ops-bot"},
                      event_id))
    (answer,) = answers(bus_events)
    assert answer["outcome"] == "accepted", answer
    return answer


def state_log(api, rollout_id: str) -> list[tuple[str, str | None]]:
    _, body = call(api, "GET", f"/rollouts/{rollout_id}/events")
    return [(e["detail"]["state"], e["detail"]["actor"]) for e in body["events"]
            if e["type"] == "Rollout State Changed"]


def test_a_start_event_creates_the_rollout_the_api_would(api, published, bus_events):
    add_site(api, "shop-1")
    add_site(api, "shop-2", machines=("srv-9",))
    send(api, command(api, contract.START, {
        "rollout": {"name": "power on", "sites": ["shop-1", "shop-2"], "steps": [POWER_ON]},
        "requested_by": "ops-bot"}, "ev-start"))

    (answer,) = answers(bus_events)
    rollout_id = answer["rollout_id"]
    assert answer == {"command_id": "ev-start", "command": "Start Rollout Requested",
                      "outcome": "accepted", "actor": f"events:{ACCOUNT}/ops-bot",
                      "rollout_id": rollout_id, "state": "running"}
    status, body = call(api, "GET", f"/rollouts/{rollout_id}")
    assert status == 200
    assert body["rollout"]["name"] == "power on" and body["rollout"]["steps"] == [POWER_ON]
    assert sorted(e["site_id"] for e in body["executions"]) == ["shop-1", "shop-2"]
    assert sorted(plan.site for plan in published.plans()) == ["shop-1", "shop-2"]
    assert state_log(api, rollout_id) == [("running", f"events:{ACCOUNT}/ops-bot")]


@pytest.mark.parametrize("detail, field", [
    ({"rollout": {"sites": ["shop-1"], "steps": [{"task": "power.ensure",
                                                  "params": {"state": "sideways"}}]}},
     "rollout.steps[0]"),
    ({"rollout": {"sites": ["shop-1"], "steps": [POWER_ON]}, "urgent": True}, "urgent"),
    ({"rollout": {"sites": ["Shop 1"], "steps": [POWER_ON]}}, "rollout.sites[0]"),
    ({"rollout": {"sites": ["shop-1"], "steps": [POWER_ON]}, "requested_by": "a b"},
     "requested_by"),
])
def test_a_detail_the_api_would_refuse_is_refused_naming_the_field(api, published,
                                                                  bus_events, detail, field):
    add_site(api, "shop-1")
    send(api, command(api, contract.START, detail))
    (answer,) = answers(bus_events)
    assert (answer["outcome"], answer["code"]) == ("refused", "bad_request")
    assert answer["reason"].startswith("invalid detail: ")
    assert f"field {field!r}" in answer["reason"]
    assert call(api, "GET", "/rollouts")[1]["rollouts"] == [] and published.sent == []


def test_a_command_on_an_unknown_rollout_is_refused(api, published, bus_events):
    send(api, command(api, contract.PAUSE, {"rollout_id": "r-nowhere"}))
    (answer,) = answers(bus_events)
    assert answer == {"command_id": "ev-1", "command": "Pause Rollout Requested",
                      "outcome": "refused", "actor": f"events:{ACCOUNT}",
                      "rollout_id": "r-nowhere", "code": "not_found",
                      "reason": "rollout 'r-nowhere' does not exist"}


def test_pause_resume_and_cancel_move_the_rollout_and_record_the_sender(api, published,
                                                                        bus_events):
    add_site(api, "shop-1")
    rollout_id = start(api, bus_events)["rollout_id"]
    moves = [(contract.PAUSE, "paused"), (contract.RESUME, "running"),
             (contract.CANCEL, "canceled")]
    for index, (detail_type, state) in enumerate(moves):
        send(api, command(api, detail_type, {"rollout_id": rollout_id}, f"ev-{index}"))
        (answer,) = answers(bus_events)
        assert (answer["outcome"], answer["state"]) == ("accepted", state), answer
        assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == state
    sender = f"events:{ACCOUNT}"
    assert state_log(api, rollout_id) == [
        ("running", f"{sender}/ops-bot"), ("paused", sender), ("running", sender),
        ("canceled", sender)]


def test_a_command_the_rollout_cannot_take_is_refused_as_a_conflict(api, published,
                                                                    bus_events):
    add_site(api, "shop-1")
    rollout_id = start(api, bus_events)["rollout_id"]
    assert call(api, "POST", f"/rollouts/{rollout_id}/cancel")[0] == 200
    send(api, command(api, contract.PAUSE, {"rollout_id": rollout_id}))
    (answer,) = answers(bus_events)
    assert (answer["outcome"], answer["code"]) == ("refused", "conflict")
    assert "is canceled: only a running rollout can be paused" in answer["reason"]


def test_a_redelivered_start_acts_once_and_answers_the_same(api, published, bus_events):
    add_site(api, "shop-1")
    first = start(api, bus_events, "ev-twice")
    event = command(api, contract.START, {"rollout": {"sites": ["shop-1"],
                                                      "steps": [POWER_ON]},
                                          "requested_by": "ops-bot"}, "ev-twice")
    send(api, event)
    send(api, event)
    assert answers(bus_events) == [first, first]
    assert len(call(api, "GET", "/rollouts")[1]["rollouts"]) == 1
    assert len(published.sent) == 1


def test_a_redelivered_pause_does_not_undo_a_later_resume(api, published, bus_events):
    add_site(api, "shop-1")
    rollout_id = start(api, bus_events)["rollout_id"]
    pause = command(api, contract.PAUSE, {"rollout_id": rollout_id}, "ev-pause")
    send(api, pause)
    assert call(api, "POST", f"/rollouts/{rollout_id}/resume")[0] == 200
    send(api, pause)  # EventBridge delivers it again
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "running"
    first, again = answers(bus_events)
    assert first == again and first["state"] == "paused"


def test_a_refusal_is_kept_too(api, published, bus_events):
    """A cancel refused because its rollout did not exist yet stays refused: delivered again
    once the rollout exists, it does not act."""
    from chalicelib.rollouts.create import rollout_id_for

    add_site(api, "shop-1")
    rollout_id = rollout_id_for("tok-1")
    event = command(api, contract.CANCEL, {"rollout_id": rollout_id}, "ev-early")
    send(api, event)
    status, _ = call(api, "POST", "/rollouts", {"sites": ["shop-1"], "steps": [POWER_ON],
                                                "client_token": "tok-1"})
    assert status == 201
    send(api, event)
    assert [a["code"] for a in answers(bus_events)] == ["not_found", "not_found"]
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "running"


def test_our_own_events_are_not_taken_for_commands(api, published, bus_events):
    add_site(api, "shop-1")
    send(api, command(api, contract.START, {"rollout": {"sites": ["shop-1"],
                                                        "steps": [POWER_ON]}},
                      source="edgeplane"))
    assert answers(bus_events) == [] and published.sent == []


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_start_whose_handler_died_after_creating_completes_once(api, published,
                                                                  bus_events):
    """The first delivery claimed the event and created the rollout, then died before its
    answer. Until its lease runs out a second delivery waits (the invocation fails, and is
    tried again); after, it takes over, finds the rollout by the event's token and answers."""
    from chalicelib.rollouts import create
    from chalicelib.schemas import RolloutIn

    add_site(api, "shop-1")
    clock = Clock()
    event = command(api, contract.START, {"rollout": {"sites": ["shop-1"],
                                                      "steps": [POWER_ON]}}, "ev-crash")
    claimed = claims.claim("ev-crash", contract.START, clock)
    assert isinstance(claimed, claims.Claim)
    created = create.create(RolloutIn(sites=["shop-1"], steps=[POWER_ON],
                                      client_token="event:ev-crash"), published, clock)

    with pytest.raises(claims.InProgress):
        handler.handle(event, published, clock)
    clock.now += claims.LEASE + 1
    answer = handler.handle(event, published, clock)
    assert answer is not None
    assert (answer["outcome"], answer["rollout_id"]) == ("accepted", created.rollout.rollout_id)
    assert len(call(api, "GET", "/rollouts")[1]["rollouts"]) == 1 and len(published.sent) == 1
    assert answers(bus_events) == [answer]


def test_a_pause_whose_handler_died_after_pausing_is_not_done_again(api, published,
                                                                    bus_events):
    """The first delivery paused the rollout and died; an operator resumed it. The delivery
    that takes over sees in the log that this sender paused it since the claim."""
    from chalicelib.rollouts import control

    add_site(api, "shop-1")
    clock = Clock()
    rollout_id = start(api, bus_events)["rollout_id"]
    event = command(api, contract.PAUSE, {"rollout_id": rollout_id}, "ev-paused")
    assert isinstance(claims.claim("ev-paused", contract.PAUSE, clock), claims.Claim)
    control.pause(rollout_id, f"events:{ACCOUNT}", clock)
    clock.now += 1
    control.resume(rollout_id, published, "alice", clock)

    clock.now += claims.LEASE
    answer = handler.handle(event, published, clock)
    assert answer is not None and answer["outcome"] == "accepted"
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "running"


def test_a_pause_whose_handler_died_before_acting_is_done_by_the_next_delivery(
        api, published, bus_events):
    add_site(api, "shop-1")
    clock = Clock()
    rollout_id = start(api, bus_events)["rollout_id"]
    event = command(api, contract.PAUSE, {"rollout_id": rollout_id}, "ev-lost")
    assert isinstance(claims.claim("ev-lost", contract.PAUSE, clock), claims.Claim)
    clock.now += claims.LEASE + 1
    answer = handler.handle(event, published, clock)
    assert answer is not None and answer["state"] == "paused"
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "paused"


def test_a_failure_that_may_pass_lets_the_next_delivery_act_at_once(api, published,
                                                                    bus_events, monkeypatch):
    """The store failing mid-command fails the invocation (Lambda delivers it again) and
    gives its claim up: the next delivery does not wait for the lease."""
    from chalicelib.errors import PublishFailed
    from chalicelib.rollouts import control

    add_site(api, "shop-1")
    rollout_id = start(api, bus_events)["rollout_id"]
    event = command(api, contract.PAUSE, {"rollout_id": rollout_id}, "ev-flaky")
    real_pause = control.pause

    def failing(*args, **kwargs):
        raise PublishFailed(topic="t", reason="broker unreachable (test)")

    monkeypatch.setattr(control, "pause", failing)
    with pytest.raises(PublishFailed):
        send(api, event)
    monkeypatch.setattr(control, "pause", real_pause)
    send(api, event)
    assert [a["state"] for a in answers(bus_events)] == ["paused"]


def test_an_answer_the_bus_did_not_take_is_sent_by_the_next_delivery(api, published,
                                                                     bus_events, monkeypatch):
    """The command is done and its answer kept; the bus refusing the answer fails the
    invocation, and the next delivery sends the kept answer without acting again."""
    add_site(api, "shop-1")
    rollout_id = start(api, bus_events)["rollout_id"]
    event = command(api, contract.PAUSE, {"rollout_id": rollout_id}, "ev-unanswered")
    monkeypatch.setenv("EDGEPLANE_EVENT_BUS", "no-such-bus")
    with pytest.raises(handler.AnswerNotSent):
        send(api, event)
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "paused"
    monkeypatch.delenv("EDGEPLANE_EVENT_BUS")
    assert call(api, "POST", f"/rollouts/{rollout_id}/resume")[0] == 200
    send(api, event)
    (answer,) = answers(bus_events)
    assert (answer["command_id"], answer["state"]) == ("ev-unanswered", "paused")
    assert call(api, "GET", f"/rollouts/{rollout_id}")[1]["rollout"]["state"] == "running"


def test_the_rule_takes_the_commands_and_nothing_edgeplane_announces(api, bus_events):
    """A rule with the handler's pattern, on moto's EventBridge, fed to a queue: of commands
    and Edgeplane's own events (answers included), only the commands come through."""
    import boto3

    (source,) = [s for s in api._app.event_sources if s.name == FUNCTION]
    assert source.event_pattern == commands.event_pattern()
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName="commands")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    bus = boto3.client("events", region_name=REGION)
    bus.put_rule(Name="commands", EventPattern=json.dumps(commands.event_pattern()))
    bus.put_targets(Rule="commands", Targets=[{"Id": "q", "Arn": arn}])
    sent = [(contract.SOURCE, name) for name in contract.DETAIL_TYPES] + [
        ("edgeplane", contract.ACCEPTED), ("edgeplane", contract.START),
        (contract.SOURCE, "Rollout State Changed"), ("other", contract.PAUSE)]
    for first in range(0, len(sent), 5):
        bus.put_events(Entries=[{"Source": source, "DetailType": detail_type, "Detail": "{}"}
                                for source, detail_type in sent[first:first + 5]])
    received = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", []):
        for message in batch:
            body = json.loads(message["Body"])
            received.append((body["source"], body["detail-type"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    bus.remove_targets(Rule="commands", Ids=["q"])
    bus.delete_rule(Name="commands")
    assert sorted(received) == sorted((contract.SOURCE, name) for name in contract.DETAIL_TYPES)


def _documented_schemas() -> dict[str, dict]:
    """The detail-types named in each ``###`` title of docs/events.md, each with the first
    JSON block under that title that is a JSON Schema."""
    found: dict[str, dict] = {}
    for section in re.split(r"^### ", DOC.read_text(), flags=re.M)[1:]:
        names = re.findall(r"`([^`]+)`", section.partition("\n")[0])
        for block in re.findall(r"```json\n(.*?)```", section, flags=re.S):
            data = json.loads(block)
            if "$schema" in data:
                found.update({name: {k: v for k, v in data.items() if k != "$schema"}
                              for name in names})
                break
    return found


def test_the_doc_shows_each_schema_as_the_code_checks_it():
    from chalicelib.api import openapi

    schemas = contract.json_schemas()
    documented = _documented_schemas()
    for name, schema in schemas.items():
        assert documented.get(name) == schema, (
            f"docs/events.md: the schema of {name!r} should be\n"
            + json.dumps(schema, indent=2))
    components = openapi.document()["components"]["schemas"]
    refs = set(re.findall(r'"\$ref": "openapi\.json#/components/schemas/([^"]+)"',
                          json.dumps(schemas)))
    assert refs and refs <= set(components)


def test_the_doc_examples_are_events_the_handler_takes_and_answers_it_gives():
    examples = [json.loads(block) for section in re.split(r"^### ", DOC.read_text(),
                                                          flags=re.M)[1:]
                for block in re.findall(r"```json\n(.*?)```", section, flags=re.S)]
    examples = [e for e in examples if "detail-type" in e]
    kinds = {(e["source"], e["detail-type"]) for e in examples}
    assert (contract.SOURCE, contract.START) in kinds and ("edgeplane", contract.REFUSED) in kinds
    for example in examples:
        if example["source"] == contract.SOURCE:
            handler._validated(contract.DETAILS[example["detail-type"]], example["detail"])
        else:
            contract.Answer.model_validate(example["detail"], strict=True)
