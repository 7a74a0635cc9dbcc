"""The AWS deployment as synthesized: the templates `make infra` writes, read as CloudFormation
reads them.

The stacks are synthesized once per session (``python -m infra`` in a process of its own,
which also runs cdk-nag and cfn-lint); `make test` hands over the assembly `make infra`
just wrote instead (EDGEPLANE_CDK_OUT).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.timeout(900)

STAGES = ("dev", "prod")


@dataclass
class Assembly:
    out: Path
    templates: dict[str, dict[str, Any]]
    report: str  # what `python -m infra` printed, when this session ran it

    def resources(self, stage: str, kind: str) -> dict[str, dict[str, Any]]:
        return {name: resource for name, resource in self.templates[stage]["Resources"].items()
                if resource["Type"] == kind}

    def one(self, stage: str, kind: str, prefix: str) -> tuple[str, dict[str, Any]]:
        """The one resource of ``kind`` whose logical id starts with ``prefix`` (CDK names
        it after its construct path: Device/Ingest is DeviceIngest...)."""
        found = [(name, r) for name, r in self.resources(stage, kind).items()
                 if name.startswith(prefix)]
        assert len(found) == 1, f"one {kind} named {prefix}*, found {[n for n, _ in found]}"
        return found[0]


@pytest.fixture(scope="session")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    given = os.environ.get("EDGEPLANE_CDK_OUT")
    report = ""
    if given:
        out = Path(given)
    else:
        out = tmp_path_factory.mktemp("cdk") / "cdk.out"
        answer = subprocess.run(
            [sys.executable, "-m", "infra", "--out", str(out)], cwd=ROOT, capture_output=True,
            text=True, check=False,
            env={**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"})
        report = answer.stdout + answer.stderr
        assert answer.returncode == 0, f"python -m infra failed:\n{report}"
    templates = {stage: json.loads((out / f"Edgeplane-{stage}.template.json").read_text())
                 for stage in STAGES}
    return Assembly(out, templates, report)


def ref_name(value: Any) -> str:
    """The logical id a Ref or Fn::GetAtt names."""
    if isinstance(value, dict) and "Ref" in value:
        return str(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return str(value["Fn::GetAtt"][0])
    raise AssertionError(f"{value!r} is neither a Ref nor a Fn::GetAtt")


def flat(value: Any) -> str:
    """An ARN built with Fn::Join, as one string with <Ref> placeholders."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(flat(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{value['Fn::GetAtt'][0]}.{value['Fn::GetAtt'][1]}>"
    raise AssertionError(f"cannot flatten {value!r}")


def statements(assembly: Assembly, stage: str) -> list[tuple[str, dict[str, Any]]]:
    """Every IAM statement of the stack, with the logical id of the policy it is in."""
    found = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for name, resource in assembly.resources(stage, kind).items():
            found += [(name, s) for s in resource["Properties"]["PolicyDocument"]["Statement"]]
    return found


def nag_report(assembly: Assembly, stage: str) -> str:
    (report,) = assembly.out.glob(f"AwsSolutions-*Edgeplane-{stage}-NagReport.csv")
    return report.read_text()


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def functions(assembly: Assembly, stage: str) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"]
            for name, r in assembly.resources(stage, "AWS::Serverless::Function").items()}


# --- checks -------------------------------------------------------------------------


def test_cdk_nag_and_cfn_lint_find_nothing(assembly):
    for stage in STAGES:
        report = nag_report(assembly, stage)
        rows = [line for line in report.splitlines()[1:] if '"Non-Compliant"' in line]
        assert rows == [], f"cdk-nag findings in {stage}:\n" + "\n".join(rows)
        cfn_lint = Path(sys.executable).with_name("cfn-lint")
        template = assembly.out / f"Edgeplane-{stage}.template.json"
        answer = subprocess.run([str(cfn_lint), "--format", "parseable", "--", str(template)],
                                capture_output=True, text=True, check=False)
        assert answer.returncode == 0, answer.stdout + answer.stderr


def test_every_suppressed_finding_says_why(assembly):
    for stage in STAGES:
        report = nag_report(assembly, stage)
        for line in report.splitlines()[1:]:
            if '"Suppressed"' in line:
                reason = line.split('","')[3]
                assert len(reason) > 40, f"a suppression without a real reason: {line}"


# --- tables -------------------------------------------------------------------------


def _expected_table(model: Any) -> dict[str, Any]:
    """The table pynamodb itself would create for ``model`` (what the local stack gets)."""
    schema = model._get_schema()

    def key_schema(keys: list[dict[str, str]]) -> list[dict[str, str]]:
        return sorted(({"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]}
                       for k in keys), key=lambda k: k["KeyType"])

    definitions = {d["AttributeName"]: d["AttributeType"]
                   for d in schema["attribute_definitions"]}
    indexes = {}
    for index in schema["global_secondary_indexes"]:
        definitions.update({d["AttributeName"]: d["AttributeType"]
                            for d in index["attribute_definitions"]})
        indexes[index["index_name"]] = (key_schema(index["key_schema"]),
                                        index["projection"]["ProjectionType"])
    return {"keys": key_schema(schema["key_schema"]), "definitions": definitions,
            "indexes": indexes}


def test_every_model_has_its_table_as_pynamodb_would_create_it(assembly):
    from pynamodb.attributes import TTLAttribute

    from chalicelib.models import MODELS
    from infra.tables import models

    found = models()
    assert set(MODELS) <= set(found), "every model the local stack creates is deployed"
    for stage in STAGES:
        tables = {t["Properties"]["TableName"]: t["Properties"]
                  for t in assembly.resources(stage, "AWS::DynamoDB::Table").values()}
        expected_names = {f"edgeplane-{stage}-{m.TABLE}" for m in found}
        assert set(tables) == expected_names, "one table per model, and no other"
        for model in found:
            table = tables[f"edgeplane-{stage}-{model.TABLE}"]
            want = _expected_table(model)
            assert sorted(table["KeySchema"], key=lambda k: k["KeyType"]) == want["keys"], \
                model.__name__
            assert {d["AttributeName"]: d["AttributeType"]
                    for d in table["AttributeDefinitions"]} == want["definitions"], \
                model.__name__
            got_indexes = {
                i["IndexName"]: (sorted(i["KeySchema"], key=lambda k: k["KeyType"]),
                                 i["Projection"]["ProjectionType"])
                for i in table.get("GlobalSecondaryIndexes", [])}
            assert got_indexes == want["indexes"], model.__name__
            assert table["BillingMode"] == "PAY_PER_REQUEST"
            assert table["PointInTimeRecoverySpecification"] == {
                "PointInTimeRecoveryEnabled": True}
            ttl = [a.attr_name for a in model.get_attributes().values()
                   if isinstance(a, TTLAttribute)]
            if ttl:
                assert table["TimeToLiveSpecification"] == {"AttributeName": ttl[0],
                                                             "Enabled": True}
            else:
                assert "TimeToLiveSpecification" not in table


def test_a_model_with_ttl_and_indexes_gets_them_in_its_spec():
    """The derivation itself, on a model made for the test: a TTL attribute, a sparse
    global index projecting some attributes, and a local index."""
    from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
    from pynamodb.indexes import (
        GlobalSecondaryIndex,
        IncludeProjection,
        KeysOnlyProjection,
        LocalSecondaryIndex,
    )
    from pynamodb.models import Model

    from infra.tables import Index, Key, spec

    class ByOwner(GlobalSecondaryIndex):  # type: ignore[type-arg]
        class Meta:
            index_name = "by-owner"
            projection = IncludeProjection(["size"])

        owner = UnicodeAttribute(hash_key=True)

    class ByAge(LocalSecondaryIndex):  # type: ignore[type-arg]
        class Meta:
            index_name = "by-age"
            projection = KeysOnlyProjection()

        name = UnicodeAttribute(hash_key=True)
        age = NumberAttribute(range_key=True)

    class Thing(Model):
        TABLE = "things"

        class Meta:
            table_name = "edgeplane-things"

        name = UnicodeAttribute(hash_key=True)
        version = NumberAttribute(range_key=True)
        owner = UnicodeAttribute(null=True)
        age = NumberAttribute(null=True)
        by_owner = ByOwner()
        by_age = ByAge()
        expires = TTLAttribute(null=True, attr_name="expires_at")

    table = spec(Thing)
    assert (table.suffix, table.hash_key, table.range_key) == (
        "things", Key("name", "S"), Key("version", "N"))
    assert table.global_indexes == (Index("by-owner", Key("owner", "S"), None, "INCLUDE",
                                          ("size",)),)
    assert table.local_indexes == (Index("by-age", Key("name", "S"), Key("age", "N"),
                                         "KEYS_ONLY"),)
    assert table.ttl_attribute == "expires_at"


def test_production_tables_are_protected_and_kept(assembly):
    for stage, protected in (("dev", False), ("prod", True)):
        for table in assembly.resources(stage, "AWS::DynamoDB::Table").values():
            assert table["Properties"]["DeletionProtectionEnabled"] is protected
            assert table["DeletionPolicy"] == ("Retain" if protected else "Delete")


# --- what the functions may do ------------------------------------------------------------


def test_no_statement_allows_a_wildcard_action_or_any_resource(assembly):
    for stage in STAGES:
        for policy, statement in statements(assembly, stage):
            assert statement["Effect"] == "Allow"
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{policy}: {action}"
            for resource in as_list(statement["Resource"]):
                assert resource != "*", f"{policy}: {statement}"


def test_the_app_writes_only_its_tables_publishes_only_plans_and_cancels(assembly):
    from edgeplane import protocol

    for stage in STAGES:
        tables = set(assembly.resources(stage, "AWS::DynamoDB::Table"))
        bus = set(assembly.resources(stage, "AWS::Events::EventBus"))
        secrets = assembly.resources(stage, "AWS::SecretsManager::Secret")
        signing_key = [name for name in secrets if name.startswith("PlanSigningKey")]
        published: list[str] = []
        for _, statement in statements(assembly, stage):
            actions = as_list(statement["Action"])
            resources = as_list(statement["Resource"])
            services = {action.split(":")[0] for action in actions}
            if "dynamodb" in services:
                assert services == {"dynamodb"}
                assert not {a for a in actions if "Table" in a and a != "dynamodb:DescribeTable"}
                for resource in resources:  # the table, or its indexes (table/index/*)
                    table = resource["Fn::Join"][1][0] if "Fn::Join" in resource else resource
                    assert ref_name(table) in tables
            if "iot" in services:
                assert actions == ["iot:Publish"] or actions == "iot:Publish"
                published += [flat(r).split(":topic/", 1)[1] for r in resources]
            if "events" in services:
                assert actions in (["events:PutEvents"], "events:PutEvents")
                assert {ref_name(r) for r in resources} <= bus
            if "secretsmanager" in services:
                assert actions in (["secretsmanager:GetSecretValue"],
                                   "secretsmanager:GetSecretValue")
                assert [ref_name(r) for r in resources] == signing_key
        assert published, "the app may publish plans and cancels"

        def may_publish(topic: str, patterns: list[str] = published) -> bool:
            return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)

        assert may_publish(protocol.plan_topic("shop-0042"))
        assert may_publish(protocol.cancel_topic("shop-0042"))
        assert not may_publish(protocol.up_topic("shop-0042", "result")), \
            "the cloud never speaks for a site"
        assert not may_publish("edgeplane/v1/sites/shop-0042/down/other")


def test_only_ingest_reads_the_queue_and_each_function_has_a_role_of_the_stack(assembly):
    for stage in STAGES:
        queue, _ = assembly.one(stage, "AWS::SQS::Queue", "DeviceIngest")
        roles = set(assembly.resources(stage, "AWS::IAM::Role"))
        readers = set()
        for policy, statement in statements(assembly, stage):
            if "sqs:ReceiveMessage" in as_list(statement["Action"]):
                assert [ref_name(r) for r in as_list(statement["Resource"])] == [queue]
                readers |= {ref_name(r) for r in assembly.templates[stage]["Resources"][
                    policy]["Properties"]["Roles"]}
        by_handler = {p["Handler"]: ref_name(p["Role"]) for p in functions(assembly,
                                                                          stage).values()}
        assert set(by_handler.values()) <= roles
        assert readers == {by_handler["app.ingest_reports"]}
        assert by_handler["app.app"] != by_handler["app.ingest_reports"]


def test_every_setting_the_app_reads_is_set_or_left_unset_on_purpose(assembly):
    from infra.stack import UNSET_SETTINGS

    read = set()
    for path in [*(ROOT / "chalicelib").rglob("*.py"), ROOT / "app.py"]:
        read |= set(re.findall(r"\b(EDGEPLANE_[A-Z0-9_]+)\b", path.read_text()))
    for stage in STAGES:
        for name, properties in functions(assembly, stage).items():
            variables = properties["Environment"]["Variables"]
            missing = read - set(variables) - set(UNSET_SETTINGS)
            assert not missing, f"{name} lacks {sorted(missing)}: set them in infra/stack.py"
            assert variables["EDGEPLANE_TABLE_PREFIX"] == f"edgeplane-{stage}-"
            assert variables["EDGEPLANE_PUBLISHER"] == "iot"
            assert flat(variables["EDGEPLANE_PLAN_SIGNING_KEY"]).startswith(
                "secretsmanager:<PlanSigningKey")
            bus = ref_name(variables["EDGEPLANE_EVENT_BUS"])
            assert assembly.templates[stage]["Resources"][bus]["Type"] == \
                "AWS::Events::EventBus"
            assert "{{resolve:secretsmanager:" in flat(variables["EDGEPLANE_API_TOKEN"]), \
                "the bootstrap token is resolved at deploy time, never in the template"


# --- the device channel -------------------------------------------------------------


def _policy_allows(document: dict[str, Any], thing: str, action: str, resource: str) -> bool:
    """IoT Core's answer for a client connected as ``thing`` (policy variable substituted,
    ``*`` matching any characters as IoT policies do)."""
    for statement in document["Statement"]:
        if statement["Effect"] != "Allow" or action not in as_list(statement["Action"]):
            continue
        for pattern in as_list(statement["Resource"]):
            pattern = flat(pattern).replace("${iot:Connection.Thing.ThingName}", thing)
            pattern = re.sub(r"<AWS::[A-Za-z]+>", "x", pattern)
            if fnmatch.fnmatchcase(resource, pattern.replace("#", "*")):
                return True
    return False


def test_a_site_may_speak_and_listen_only_on_its_own_topics(assembly):
    from edgeplane import protocol

    _, policy = assembly.one("dev", "AWS::IoT::Policy", "DeviceSitePolicy")
    document = policy["Properties"]["PolicyDocument"]
    arn = "arn:x:iot:x:x"

    def may(action: str, resource: str) -> bool:
        return _policy_allows(document, "shop-1", action, f"{arn}:{resource}")

    assert may("iot:Connect", "client/shop-1")
    assert not may("iot:Connect", "client/shop-2"), "connect as another site"
    assert may("iot:Publish", f"topic/{protocol.up_topic('shop-1', 'result')}")
    assert not may("iot:Publish", f"topic/{protocol.up_topic('shop-2', 'result')}")
    assert not may("iot:Publish", f"topic/{protocol.plan_topic('shop-1')}"), \
        "a site sends itself no plan"
    assert may("iot:Subscribe", f"topicfilter/{protocol.down_filter('shop-1')}")
    assert not may("iot:Subscribe", f"topicfilter/{protocol.down_filter('shop-2')}")
    assert not may("iot:Subscribe", "topicfilter/#")
    assert may("iot:Receive", f"topic/{protocol.plan_topic('shop-1')}")
    assert not may("iot:Receive", f"topic/{protocol.plan_topic('shop-2')}")


def test_the_site_policy_is_the_one_docs_security_shows(assembly):
    text = (ROOT / "docs" / "security.md").read_text()
    block = re.search(r"```json\n(\{\"Version\".*?)```", text, re.DOTALL)
    assert block, "docs/security.md shows the site policy as a JSON block"
    documented = json.loads(block.group(1))
    _, policy = assembly.one("dev", "AWS::IoT::Policy", "DeviceSitePolicy")
    deployed = policy["Properties"]["PolicyDocument"]

    def normal(document: dict[str, Any]) -> list[tuple[str, str]]:
        return sorted((s["Action"], re.sub(r"^arn:[^:]+:iot:[^:]+:[^:]+:", "", re.sub(
            r"<AWS::[A-Za-z]+>", "x", flat(s["Resource"])))) for s in document["Statement"])

    assert normal(deployed) == normal(documented)


def test_reports_reach_ingest_through_a_queue_with_dead_letters(assembly):
    from edgeplane import protocol

    for stage in STAGES:
        queue, properties = assembly.one(stage, "AWS::SQS::Queue", "DeviceIngest")
        dead, dead_properties = assembly.one(stage, "AWS::SQS::Queue", "DeviceDeadLetters")
        redrive = properties["Properties"]["RedrivePolicy"]
        assert ref_name(redrive["deadLetterTargetArn"]) == dead
        assert 1 < redrive["maxReceiveCount"] <= 10
        assert dead_properties["Properties"]["MessageRetentionPeriod"] == 14 * 86400
        rules = assembly.resources(stage, "AWS::IoT::TopicRule")
        sources = {}
        for rule in rules.values():
            payload = rule["Properties"]["TopicRulePayload"]
            sources[payload["Sql"]] = payload
            (action,) = payload["Actions"]
            assert ref_name(action["Sqs"]["QueueUrl"]) == queue
            assert ref_name(payload["ErrorAction"]["Sqs"]["QueueUrl"]) == dead
        assert any(f"FROM '{protocol.UP_FILTER}'" in sql and "clientid() AS client_id" in sql
                   for sql in sources), "the rule adds who published each report"
        assert any("$aws/events/presence/" in sql for sql in sources)
        (ingest,) = [p for p in functions(assembly, stage).values()
                     if p["Handler"] == "app.ingest_reports"]
        (event,) = ingest["Events"].values()
        assert event["Type"] == "SQS" and ref_name(event["Properties"]["Queue"]) == queue
        assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] <= \
            ingest["ReservedConcurrentExecutions"], "no batch is throttled into dead letters"
        assert properties["Properties"]["VisibilityTimeout"] >= 6 * ingest["Timeout"]


def test_the_bus_archives_what_edgeplane_announces(assembly):
    from chalicelib.events import SOURCE

    for stage in STAGES:
        bus, _ = assembly.one(stage, "AWS::Events::EventBus", "EventsBus")
        (archive,) = assembly.resources(stage, "AWS::Events::Archive").values()
        assert ref_name(archive["Properties"]["SourceArn"]) == bus
        assert archive["Properties"]["EventPattern"] == {"source": [SOURCE]}
        for name, properties in functions(assembly, stage).items():
            for source in (properties.get("Events") or {}).values():
                if source["Type"] == "CloudWatchEvent":  # app.py's @app.on_cw_event
                    assert ref_name(source["Properties"]["EventBusName"]) == bus, name


# --- operations ---------------------------------------------------------------------


def test_an_operator_is_alarmed_by_dead_letters_ingest_errors_and_a_failing_tick(assembly):
    for stage in STAGES:
        alarms = list(assembly.resources(stage, "AWS::CloudWatch::Alarm").values())
        topic = set(assembly.resources(stage, "AWS::SNS::Topic"))
        named = {p["Handler"]: name for name, p in functions(assembly, stage).items()}
        dead, _ = assembly.one(stage, "AWS::SQS::Queue", "DeviceDeadLetters")

        def watching(metric: str, dimension: str, alarms: list[dict[str, Any]] = alarms,
                     topic: set[str] = topic) -> list[dict[str, Any]]:
            found = []
            for alarm in alarms:
                properties = alarm["Properties"]
                dimensions = [ref_name(d["Value"]) for d in properties.get("Dimensions", [])
                              if isinstance(d["Value"], dict)]
                if properties.get("MetricName") == metric and dimension in dimensions:
                    assert {ref_name(a) for a in properties["AlarmActions"]} == topic
                    found.append(properties)
            return found

        assert watching("ApproximateNumberOfMessagesVisible", dead)[0]["Threshold"] == 1
        assert watching("Errors", named["app.ingest_reports"])
        assert watching("Errors", named["app.rollout_tick"])
        stopped = watching("Invocations", named["app.rollout_tick"])
        assert stopped and stopped[0]["TreatMissingData"] == "breaching", \
            "a tick that does not run at all is alarmed too"


def test_every_function_logs_json_to_a_group_with_retention(assembly):
    for stage, days in (("dev", 14), ("prod", 90)):
        groups = assembly.resources(stage, "AWS::Logs::LogGroup")
        for name, properties in functions(assembly, stage).items():
            logging = properties["LoggingConfig"]
            assert logging["LogFormat"] == "JSON", name
            assert groups[ref_name(logging["LogGroup"])]["Properties"]["RetentionInDays"] == days


def test_the_api_logs_every_request_as_json_to_a_group_with_retention(assembly):
    for stage, days in (("dev", 14), ("prod", 90)):
        groups = assembly.resources(stage, "AWS::Logs::LogGroup")
        (api,) = assembly.resources(stage, "AWS::Serverless::Api").values()
        setting = api["Properties"]["AccessLogSetting"]
        group = ref_name(setting["DestinationArn"])
        assert groups[group]["Properties"]["RetentionInDays"] == days
        line = json.loads(setting["Format"])  # one JSON object per request
        assert {"requestId": "$context.requestId", "route": "$context.resourcePath",
                "method": "$context.httpMethod", "status": "$context.status",
                "latencyMs": "$context.responseLatency",
                "caller": "$context.identity.caller", "ip": "$context.identity.sourceIp",
                }.items() <= line.items()
        outputs = assembly.templates[stage]["Outputs"]
        assert ref_name(outputs["ApiAccessLogGroup"]["Value"]) == group


def test_no_account_id_is_written_in_the_code_or_the_templates(assembly):
    account = re.compile(r"(?<![0-9a-f])\d{12}(?![0-9a-f])")
    for path in (ROOT / "infra").glob("*.py"):
        assert not account.search(path.read_text()), path
    for stage in STAGES:
        text = json.dumps(assembly.templates[stage])
        assert not account.search(text)


# --- the Lambda bundle ----------------------------------------------------------------


def _bundle(assembly: Assembly, stage: str) -> Path:
    keys = {p["CodeUri"]["Key"] for p in functions(assembly, stage).values()}
    assert len(keys) == 1, "every function runs the one bundle"
    return assembly.out / f"asset.{keys.pop()}"


def test_the_bundle_is_small_and_holds_the_app_and_the_wire_contract(assembly):
    from infra.bundle import MAX_BUNDLE_BYTES

    bundle = _bundle(assembly, "dev")
    assert bundle.stat().st_size <= MAX_BUNDLE_BYTES, \
        f"{bundle.stat().st_size / 2**20:.2f} MiB"
    names = set(zipfile.ZipFile(bundle).namelist())
    assert {"app.py", "chalice/app.py", "chalicelib/models.py", "edgeplane/__init__.py",
            "edgeplane/protocol.py"} <= names
    assert not {n for n in names if n.split("/")[0] in ("botocore", "boto3", "s3transfer")}, \
        "the runtime's boto3 and botocore are not shipped"
    assert "chalicelib/__pycache__/models.cpython-" \
        f"{sys.version_info.major}{sys.version_info.minor}.pyc" in names, \
        "what a cold start imports is shipped compiled"


def test_the_bundle_imports_with_nothing_but_the_runtimes_boto3(assembly, tmp_path):
    """``import app`` from the unpacked bundle, with the standard library and botocore as
    the Lambda runtime has them, and no environment: what a cold start does."""
    import botocore

    zipfile.ZipFile(_bundle(assembly, "dev")).extractall(tmp_path)
    runtime = Path(botocore.__file__).resolve().parent.parent
    isolated = tmp_path / "runtime"
    isolated.mkdir()
    for name in ("botocore", "boto3", "s3transfer", "jmespath", "dateutil", "urllib3",
                 "six.py"):
        if (runtime / name).exists():
            (isolated / name).symlink_to(runtime / name)
    answer = subprocess.run(
        [sys.executable, "-S", "-c", "import app; print(sorted(app.app.routes)[:1])"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{isolated}", "PATH": os.environ["PATH"]})
    assert answer.returncode == 0, answer.stderr
    assert "/" in answer.stdout
