"""The wire contract: topics, round trips, validation, and what old/new peers may send."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeplane import protocol
from edgeplane.protocol import (
    Inventory,
    MachineReport,
    MachineResult,
    Plan,
    PlanStep,
    Presence,
    Progress,
    ProtocolError,
    Result,
    StepResult,
    decode,
)


def test_topics_are_per_site_and_parse_back():
    assert protocol.plan_topic("shop-1") == "edgeplane/v1/sites/shop-1/down/plan"
    assert protocol.up_topic("shop-1", "result") == "edgeplane/v1/sites/shop-1/up/result"
    assert protocol.down_filter("shop-1") == "edgeplane/v1/sites/shop-1/down/#"
    assert protocol.parse_topic("edgeplane/v1/sites/shop-1/up/progress") == (
        "shop-1", "up", "progress")


@pytest.mark.parametrize("bad", ["Shop", "a/b", "+", "#", "", "x" * 64, "-lead"])
def test_site_ids_that_would_break_topic_scoping_are_refused(bad):
    with pytest.raises(ProtocolError, match="site id"):
        protocol.plan_topic(bad)


def test_unknown_up_kind_and_foreign_topics_are_refused():
    with pytest.raises(ProtocolError, match="not a gateway-to-cloud"):
        protocol.up_topic("shop-1", "plan")
    with pytest.raises(ProtocolError, match="not an Edgeplane topic"):
        protocol.parse_topic("other/v1/sites/shop-1/up/result")


MESSAGES = [
    Plan(site="s1", execution_id="r1.s1", rollout_id="r1", steps=[
        PlanStep("power.ensure", {"state": "on"}, ["m1", "m2"]),
        PlanStep("boot.override", {"target": "pxe", "mode": "once"}, ["m1"]),
    ]),
    Presence(site="s1", online=False, session=12.5, gateway_version="0.1.0"),
    Inventory(site="s1", gateway_version="0.1.0", machines=[
        MachineReport(id="m1", protocol="ipmi", address="10.0.0.1", capabilities=["power"],
                      serial="X1", power="on")]),
    Progress(site="s1", execution_id="r1.s1", seq=3, machines=[
        MachineResult(machine="m1", state="running", steps=[StepResult("power.ensure")])]),
    Result(site="s1", execution_id="r1.s1", seq=4, state="failed", message="1 of 1 failed",
           machines=[MachineResult(machine="m1", state="failed", steps=[
               StepResult("power.ensure", state="failed", message="BMC said no")])]),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
def test_every_message_round_trips_through_its_topic(message):
    topic = (protocol.plan_topic(message.site) if isinstance(message, Plan)
             else protocol.up_topic(message.site, message.KIND))
    decoded = decode(message.encode(), topic)
    assert decoded == message
    assert json.loads(message.encode())["v"] == protocol.PROTOCOL_VERSION


def test_a_gateway_cannot_report_for_another_site():
    forged = Presence(site="shop-2").encode()
    with pytest.raises(ProtocolError, match="arrived on topic"):
        decode(forged, protocol.up_topic("shop-1", "presence"))


def test_unknown_fields_from_a_newer_sender_are_ignored():
    data = json.loads(MESSAGES[0].encode())
    data["priority"] = "high"
    data["steps"][0]["retry"] = 3
    assert decode(json.dumps(data)) == MESSAGES[0]


@pytest.mark.parametrize("payload, error", [
    (b"{not json", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"v": 99, "kind": "plan", "site": "s1"}', "version 99 is not supported"),
    (b'{"v": 1, "kind": "reboot", "site": "s1"}', "unknown message kind"),
    (b'{"v": 1, "kind": "plan", "site": "s1", "execution_id": "e", "steps": []}',
     "plan has no steps"),
    (b'{"v": 1, "kind": "plan", "site": "s1", "execution_id": "e", "steps": [{"task": 1}]}',
     "plan step 0 is malformed"),
    (b'{"v": 1, "kind": "progress", "machines": []}', "incomplete"),
])
def test_malformed_messages_are_refused_with_what_is_wrong(payload, error):
    with pytest.raises(ProtocolError, match=error):
        decode(payload)


def test_task_parameters_are_validated_against_the_schema():
    spec = protocol.task_spec("boot.override")
    assert spec.validate({"target": "pxe"}) == {"target": "pxe", "mode": "once"}
    with pytest.raises(ProtocolError, match="'target' is 'floppy'; allowed: pxe, disk, cd"):
        spec.validate({"target": "floppy"})
    with pytest.raises(ProtocolError, match="unknown parameter"):
        spec.validate({"target": "pxe", "speed": "fast"})
    with pytest.raises(ProtocolError, match="'state' is required"):
        protocol.task_spec("power.ensure").validate({})
    with pytest.raises(ProtocolError, match="unknown task 'power.toggle'"):
        protocol.task_spec("power.toggle")


def test_presence_orders_by_connection_then_will():
    online = Presence(site="s1", online=True, session=10.0)
    will = Presence(site="s1", online=False, session=10.0)
    reconnected = Presence(site="s1", online=True, session=20.0)
    assert online.order < will.order < reconnected.order


def test_protocol_module_imports_nothing_outside_the_standard_library():
    code = ("import sys, edgeplane.protocol; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'pydantic', 'paho', 'boto3', 'chalice', 'pynamodb', 'sushy', 'pyghmi', "
            "'cryptography'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_gateway_installs_and_imports_without_cloud_packages(tmp_path):
    """Every gateway module imports with chalice, boto3 and pynamodb made unimportable."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'chalice', 'boto3', 'botocore', 'pynamodb'}:\n"
        "            raise ImportError(f'{name} is not allowed in the gateway')\n"
        "sys.meta_path.insert(0, Block())\n")
    code = ("import pkgutil, importlib, edge_gateway\n"
            "for m in pkgutil.walk_packages(edge_gateway.__path__, 'edge_gateway.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('ok')")
    env = {"PYTHONPATH": str(tmp_path)}
    import os

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
