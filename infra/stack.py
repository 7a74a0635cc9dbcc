"""Edgeplane's cloud half as one stack per stage: the Chalice app (API, ingest, tick and
event handlers) through ``chalice.cdk``, its tables, the device channel, the event bus, the
plan-signing key, logs and alarms. Wiring only: names reach the app through environment
variables (``chalicelib/settings.py``), and each function's role allows what the app does
and no more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from cdk_nag import NagPackSuppression, NagSuppressions
from chalice.cdk import Chalice
from constructs import Construct

from chalicelib.signing import SECRET_PREFIX
from infra import bundle
from infra.alarms import Alarms
from infra.api_logs import ApiAccessLogs
from infra.bus import EventBus
from infra.device import INGEST_TIMEOUT, DeviceChannel, cloud_topics
from infra.stages import Stage
from infra.tables import Tables

# Settings the app reads that the stack leaves unset, and why (every other one is set).
UNSET_SETTINGS = {
    "EDGEPLANE_DYNAMODB_ENDPOINT": "DynamoDB's own endpoint (the local stack's store only)",
    "EDGEPLANE_EVENTS_ENDPOINT": "EventBridge's own endpoint (moto on the local stack only)",
    "EDGEPLANE_IOT_ENDPOINT": "botocore's default for iot-data is the region's ATS data "
                              "endpoint",
    "EDGEPLANE_MQTT_CA": "the cloud publishes through IoT Core's API with its IAM role, "
                         "not as a broker client",
    "EDGEPLANE_MQTT_CERT": "as EDGEPLANE_MQTT_CA",
    "EDGEPLANE_MQTT_KEY": "as EDGEPLANE_MQTT_CA",
    "EDGEPLANE_AUTHORIZER": "bearer tokens of the principals in the store",
    "EDGEPLANE_AUDIT_RETENTION_DAYS": "the app's default",
    "EDGEPLANE_CONSOLE_CACHE_S": "the app's default (chalicelib/console/fleet.py)",
    "EDGEPLANE_STORE_CLIENT": "the app's default: item requests on the wire "
                              "(chalicelib/store_wire.py)",
}
# What the app does with its tables' items (no table is created or deleted by it).
TABLE_ACTIONS = ("GetItem", "BatchGetItem", "Query", "Scan", "ConditionCheckItem", "PutItem",
                 "UpdateItem", "DeleteItem", "BatchWriteItem", "DescribeTable")
MEMORY_MB = 512  # CPU comes with memory: a cold start takes half as long as at 128 MB
INGEST_HANDLER = "ingest_reports"
TICK_HANDLER = "rollout_tick"
API_HANDLER = "api_handler"
# Lambda's advanced logging: each line a JSON object, with the fields logging's ``extra``
# gives (ingest's ``dropped_reports``), which the alarms' metric filters read.
LOG_FORMAT = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}


class EdgeplaneStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, stage: Stage,
                 bootstrap_token: bool = True, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, description=f"Edgeplane ({stage.name})",
                         **kwargs)
        self.stage = stage
        prefix = f"edgeplane-{stage.name}"
        retain = cdk.RemovalPolicy.RETAIN if stage.production else cdk.RemovalPolicy.DESTROY

        self.tables = Tables(self, "Tables", stage)
        self.device = DeviceChannel(self, "Device", stage)
        self.bus = EventBus(self, "Events", stage)

        self.signing_key = secretsmanager.Secret(
            self, "PlanSigningKey", secret_name=f"{prefix}/plan-signing-key",
            description="The Ed25519 key (PKCS8 PEM) plans and cancels are signed with; put "
                        "it here after the first deploy (docs/deploy.md)",
            removal_policy=cdk.RemovalPolicy.RETAIN)  # every site pins its public half
        _suppress(self.signing_key, "AwsSolutions-SMG4",
                  "Rotating the plan-signing key is a fleet operation: its public half is "
                  "pinned at every site first (chalicelib/signing.py), not a Lambda rotation")
        environment = {
            "EDGEPLANE_TABLE_PREFIX": self.tables.prefix,
            "EDGEPLANE_PUBLISHER": "iot",
            "EDGEPLANE_INGEST_QUEUE": self.device.queue_name,
            "EDGEPLANE_EVENT_BUS": self.bus.bus.event_bus_name,
            "EDGEPLANE_PLAN_SIGNING_KEY": f"{SECRET_PREFIX}{self.signing_key.secret_arn}",
        }
        self.bootstrap_token: secretsmanager.Secret | None = None
        if bootstrap_token:
            # The first admin's token (chalicelib/access/identity.py): resolved by
            # CloudFormation when it deploys, never written in the template. Deploy with
            # -c bootstrap_token=off once named admins exist.
            self.bootstrap_token = secretsmanager.Secret(
                self, "BootstrapToken", secret_name=f"{prefix}/bootstrap-token",
                description="Edgeplane's bootstrap admin token (EDGEPLANE_API_TOKEN)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=48, exclude_punctuation=True),
                removal_policy=retain)
            _suppress(self.bootstrap_token, "AwsSolutions-SMG4",
                      "A one-off token to create the first named admins, then switched off "
                      "(-c bootstrap_token=off); rotating it would only break that step")
            environment["EDGEPLANE_API_TOKEN"] = \
                self.bootstrap_token.secret_value.unsafe_unwrap()
        self.app_environment = environment

        self.access = self._access_policy()
        self.app_role = self._role("AppRole", "The API, the rollout tick and event handlers")
        self.ingest_role = self._role("IngestRole", "Ingest: the queue of sites' reports")
        self.device.queue.grant_consume_messages(self.ingest_role)

        project = bundle.stage_project()
        functions = _function_settings(project, self.to_string())
        self.chalice = Chalice(self, "App", source_dir=str(project), stage_config={
            "api_gateway_stage": "api",
            "manage_iam_role": False,
            "iam_role_arn": self.app_role.role_arn,
            "environment_variables": environment,
            "lambda_memory_size": MEMORY_MB,
        })
        self.sam = _sam_template(self.chalice)
        self.functions = {name: resource for name, resource in self.sam["Resources"].items()
                          if resource["Type"] == "AWS::Serverless::Function"}
        self.log_groups = self._logs(stage)
        self._wire_ingest(functions.get(INGEST_HANDLER, {}), self.ingest_role)
        self.bus.route_handlers((self.chalice.get_resource(name), resource["Properties"])
                                for name, resource in self.functions.items())
        api_name = self._api(stage, prefix)

        handlers = {_handler_name(resource): name for name, resource in self.functions.items()}
        self.alarms = Alarms(
            self, "Alarms", prefix=prefix, ingest_queue=self.device.queue,
            dead_letters=self.device.dead_letters, rules=self.device.rules,
            functions={handler: self.chalice.get_resource(handlers[handler]).ref
                       for handler in (INGEST_HANDLER, TICK_HANDLER)},
            log_groups={handler: self.log_groups[handlers[handler]]
                        for handler in (INGEST_HANDLER, TICK_HANDLER)},
            api_name=api_name)
        self._outputs()

    # --- access ------------------------------------------------------------------------

    def _access_policy(self) -> iam.ManagedPolicy:
        """What every function of the app may do: its tables' items, publish plans and
        cancels, announce on Edgeplane's bus, read the plan-signing key."""
        policy = iam.ManagedPolicy(self, "AppAccess",
                                   description="Edgeplane's functions: tables, plans, events")
        for suffix, table in self.tables.tables.items():
            indexed = any(spec.global_indexes or spec.local_indexes
                          for spec in self.tables.specs if spec.suffix == suffix)
            policy.add_statements(iam.PolicyStatement(
                actions=[f"dynamodb:{action}" for action in TABLE_ACTIONS],
                resources=[table.table_arn] + ([f"{table.table_arn}/index/*"] if indexed
                                               else [])))
        policy.add_statements(
            iam.PolicyStatement(actions=["events:PutEvents"],
                                resources=[self.bus.bus.event_bus_arn]),
            iam.PolicyStatement(actions=["iot:Publish"], resources=[
                self.format_arn(service="iot", resource="topic", resource_name=topic)
                for topic in cloud_topics()]),
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"],
                                resources=[self.signing_key.secret_arn]),
        )
        _suppress(policy, "AwsSolutions-IAM5",
                  "A table's indexes (table/NAME/index/*) are queried with the table",
                  applies_to=_index_wildcards(self))
        _suppress(policy, "AwsSolutions-IAM5",
                  "Plans and cancels go to each site's own topic, one per site "
                  "(sites/*/down/plan and sites/*/down/cancel, nothing else)",
                  applies_to=[f"Resource::arn:<AWS::Partition>:iot:<AWS::Region>:"
                              f"<AWS::AccountId>:topic/{topic}" for topic in cloud_topics()])
        return policy

    def _role(self, construct_id: str, description: str) -> iam.Role:
        role = iam.Role(self, construct_id, description=description,
                        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                        managed_policies=[self.access])
        return role

    # --- the Chalice app ------------------------------------------------------------------

    def _logs(self, stage: Stage) -> dict[str, logs.LogGroup]:
        """A log group per function, with the stage's retention, in JSON."""
        groups = {}
        for name in self.functions:
            group = logs.LogGroup(self, f"{name}Logs", retention=stage.log_retention,
                                  removal_policy=cdk.RemovalPolicy.DESTROY)
            self.chalice.get_resource(name).add_property_override(
                "LoggingConfig", {**LOG_FORMAT, "LogGroup": group.log_group_name})
            groups[name] = group
        writes = iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{group.log_group_arn}" for group in groups.values()])
        for role in (self.app_role, self.ingest_role):
            role.add_to_policy(writes)
        return groups

    def _wire_ingest(self, settings: dict[str, Any], role: iam.IRole) -> None:
        """Ingest runs under its own role, reads the stack's queue, reports partial batch
        failures (only the records that failed go back), and is never handed more batches
        than it may run at once (a throttled batch would count as a failed delivery)."""
        wired = []
        for name, resource in self.functions.items():
            if _handler_name(resource) != INGEST_HANDLER:
                continue
            for event, source in (resource["Properties"].get("Events") or {}).items():
                if source.get("Type") != "SQS":
                    continue
                path = f"Events.{event}.Properties"
                function = self.chalice.get_resource(name)
                # Chalice's stage-wide role is the app role; its per-function setting
                # cannot override one given to the construct.
                function.add_property_override("Role", role.role_arn)
                function.add_property_override(f"{path}.Queue", self.device.queue.queue_arn)
                function.add_property_override(f"{path}.FunctionResponseTypes",
                                               ["ReportBatchItemFailures"])
                concurrency = settings.get("reserved_concurrency")
                if concurrency:
                    function.add_property_override(f"{path}.ScalingConfig",
                                                   {"MaximumConcurrency": max(2, concurrency)})
                wired.append(name)
        if not wired:
            raise ValueError(f"app.py has no @app.on_sqs_message handler {INGEST_HANDLER}")
        if INGEST_TIMEOUT.to_seconds() != settings.get("lambda_timeout"):
            raise ValueError(f"{INGEST_HANDLER}'s lambda_timeout in .chalice/config.json is "
                             f"{settings.get('lambda_timeout')} s; infra/device.py sizes the "
                             f"queue for {INGEST_TIMEOUT.to_seconds()} s")

    def _api(self, stage: Stage, prefix: str) -> str:
        """Name the API after the stage, throttle it and log every request; returns its
        name."""
        apis = [name for name, resource in self.sam["Resources"].items()
                if resource["Type"] == "AWS::Serverless::Api"]
        self.api_logs = ApiAccessLogs(self, "ApiAccessLogs", stage.log_retention)
        for name in apis:
            api = self.chalice.get_resource(name)
            api.add_property_override("Name", prefix)
            api.add_property_override("AccessLogSetting", self.api_logs.setting())
            api.add_property_override("MethodSettings", [{
                "ResourcePath": "/*", "HttpMethod": "*",
                "ThrottlingRateLimit": stage.api_rate,
                "ThrottlingBurstLimit": stage.api_burst}])
        return prefix

    def _outputs(self) -> None:
        values = {
            "SitePolicyName": (self.device.policy.ref, "IoT policy to attach to each "
                                                       "site's certificate"),
            "SiteThingType": (self.device.thing_type.ref, "Thing type of sites"),
            "SiteThingGroup": (self.device.thing_group.ref, "Thing group of sites"),
            "PlanSigningKeySecret": (self.signing_key.secret_arn,
                                     "Put the plan-signing key's PEM here"),
            "EventBusName": (self.bus.bus.event_bus_name, "Edgeplane's EventBridge bus"),
            "ApiAccessLogGroup": (self.api_logs.group.log_group_name,
                                  "The API's access log: a JSON line per request"),
            "AlarmTopic": (self.alarms.topic.topic_arn, "Subscribe to be told of alarms"),
            "IngestQueue": (self.device.queue.queue_url, "Sites' reports"),
            "DeadLetterQueue": (self.device.dead_letters.queue_url,
                                "Reports that could not be stored"),
        }
        if self.bootstrap_token is not None:
            values["BootstrapTokenSecret"] = (self.bootstrap_token.secret_arn,
                                              "The bootstrap admin token")
        for name, (value, description) in values.items():
            cdk.CfnOutput(self, name, value=value, description=description)


def _function_settings(project: Path, chalice_stage: str) -> dict[str, dict[str, Any]]:
    """Each function's timeout and concurrency as ``.chalice/config.json`` gives them (its
    dev stage, which the local stack uses too), copied in the staged project to the stage
    the construct packages as (the stack's name): Chalice reads per-function settings from
    its config file only, never from the construct's ``stage_config``."""
    path = project / ".chalice" / "config.json"
    config = json.loads(path.read_text())
    stages = config.setdefault("stages", {})
    functions = stages.get("dev", {}).get("lambda_functions", {})
    stages[chalice_stage] = {"lambda_functions": functions}
    path.write_text(json.dumps(config, indent=2))
    return {name: dict(values) for name, values in functions.items()}


def _sam_template(chalice: Chalice) -> dict[str, Any]:
    """The SAM template ``chalice package`` wrote for the construct."""
    path = Path(chalice._sam_package_dir) / "sam.json"
    template: dict[str, Any] = json.loads(path.read_text())
    return template


def _handler_name(resource: dict[str, Any]) -> str:
    """``app.ingest_reports`` -> ``ingest_reports``; the API's is ``api_handler``."""
    handler: str = resource["Properties"]["Handler"]
    name = handler.rsplit(".", 1)[-1]
    return API_HANDLER if name == "app" else name


def _index_wildcards(stack: EdgeplaneStack) -> list[str]:
    """cdk-nag's names of the table/NAME/index/* resources in the access policy."""
    names = []
    for spec in stack.tables.specs:
        if spec.global_indexes or spec.local_indexes:
            table = stack.tables.tables[spec.suffix].node.default_child
            assert isinstance(table, cdk.CfnElement)
            names.append(f"Resource::<{stack.get_logical_id(table)}.Arn>/index/*")
    return names


def _suppress(construct: Construct, rule: str, reason: str,
              applies_to: list[str] | None = None) -> None:
    NagSuppressions.add_resource_suppressions(
        construct, [NagPackSuppression(id=rule, reason=reason, applies_to=applies_to)],
        apply_to_children=True)
