"""The device channel in AWS IoT Core: what sites may do, and how what they send reaches the
cloud.

- The topic rules put every report a site publishes (and IoT Core's lifecycle events, which
  ingest turns into presence) on the ingest queue, each record the message plus its topic
  and the publisher's client id (``chalicelib.ingest.unwrap_rule_record`` reads them).
- The ingest queue has a dead-letter queue: a record that fails ``MAX_RECEIVES`` times is
  kept there for an operator instead of being retried for ever; a record the rule itself
  could not deliver goes there too.
- The site policy, attached to each site's certificate at enrolment, scopes a gateway to its
  own topics through ``${iot:Connection.Thing.ThingName}`` (docs/security.md): connect as
  itself only, publish only under its own ``up`` topics, subscribe to and receive only its
  own ``down`` topics. The local stack's mosquitto ACL (``edgeplane_dev.mosquitto``) is the
  same rule.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from edgeplane import protocol
from infra.stages import Stage

THING = "${iot:Connection.Thing.ThingName}"  # an IoT policy variable, not a CloudFormation one
# What the rules select: the message, its topic, and who published it.
REPORTS_SQL = (f"SELECT *, topic() AS topic, clientid() AS client_id "  # noqa: S608 - no input
               f"FROM '{protocol.UP_FILTER}'")
LIFECYCLE_SQL = "SELECT *, topic() AS topic FROM '$aws/events/presence/+/+'"
SQL_VERSION = "2016-03-23"
MAX_RECEIVES = 5  # deliveries of one record before it goes to the dead-letter queue
INGEST_TIMEOUT = cdk.Duration.seconds(60)  # .chalice/config.json: ingest_reports' timeout


def site_policy_document() -> dict[str, Any]:
    """The IoT policy of every site's certificate, with the ARNs of this stack's account and
    region."""
    arn = f"arn:{cdk.Aws.PARTITION}:iot:{cdk.Aws.REGION}:{cdk.Aws.ACCOUNT_ID}"
    own = f"{protocol.TOPIC_ROOT}/{THING}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}:client/{THING}"},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": f"{arn}:topic/{own}/up/*"},
            {"Effect": "Allow", "Action": "iot:Subscribe",
             "Resource": f"{arn}:topicfilter/{own}/down/#"},
            {"Effect": "Allow", "Action": "iot:Receive",
             "Resource": f"{arn}:topic/{own}/down/*"},
        ],
    }


def cloud_topics() -> list[str]:
    """The topics the cloud publishes on (plans and cancels) for every site, as IAM resource
    patterns: the wire contract's topic builders with the site left open."""
    sample = "site"
    root = protocol.site_topic_root(sample)
    every_site = f"{protocol.TOPIC_ROOT}/*"
    return [builder(sample).replace(root, every_site, 1)
            for builder in (protocol.plan_topic, protocol.cancel_topic)]


class DeviceChannel(Construct):
    """The ingest queue and its dead letters, the rules that fill it, the site policy, and
    the thing type and group sites are registered under."""

    def __init__(self, scope: Construct, construct_id: str, stage: Stage) -> None:
        super().__init__(scope, construct_id)
        prefix = f"edgeplane-{stage.name}"
        # A literal name: app.py reads it when Chalice loads the app to package it.
        self.queue_name = f"{prefix}-ingest"
        self.dead_letters = sqs.Queue(
            self, "DeadLetters", queue_name=f"{prefix}-ingest-dead-letters",
            retention_period=cdk.Duration.days(14),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.queue = sqs.Queue(
            self, "Ingest", queue_name=self.queue_name,
            # AWS's advice for a Lambda event source: six times the function's timeout, so
            # that a batch being retried is not handed to a second consumer meanwhile.
            visibility_timeout=cdk.Duration.seconds(INGEST_TIMEOUT.to_seconds() * 6),
            retention_period=cdk.Duration.days(4),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letters,
                                                  max_receive_count=MAX_RECEIVES))

        rule_role = iam.Role(self, "RuleRole",
                             assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
                             description="The IoT rules: send sites' reports to the queue")
        self.queue.grant_send_messages(rule_role)
        self.dead_letters.grant_send_messages(rule_role)
        self.rules = [
            self._rule("Reports", REPORTS_SQL, rule_role, "Sites' reports to ingestion"),
            self._rule("Lifecycle", LIFECYCLE_SQL, rule_role,
                       "IoT Core's connect and disconnect events: sites' presence"),
        ]

        self.policy = iot.CfnPolicy(self, "SitePolicy", policy_name=f"{prefix}-site",
                                    policy_document=site_policy_document())
        self.thing_type = iot.CfnThingType(
            self, "SiteType", thing_type_name=f"{prefix}-site",
            thing_type_properties=iot.CfnThingType.ThingTypePropertiesProperty(
                thing_type_description="An Edgeplane site's gateway (thing name = site id)",
                searchable_attributes=["region"]))
        self.thing_group = iot.CfnThingGroup(
            self, "Sites", thing_group_name=f"{prefix}-sites",
            thing_group_properties=iot.CfnThingGroup.ThingGroupPropertiesProperty(
                thing_group_description="Every enrolled Edgeplane site"))

    def _rule(self, construct_id: str, sql: str, role: iam.IRole,
              description: str) -> iot.CfnTopicRule:
        def to(queue: sqs.IQueue) -> iot.CfnTopicRule.ActionProperty:
            return iot.CfnTopicRule.ActionProperty(sqs=iot.CfnTopicRule.SqsActionProperty(
                queue_url=queue.queue_url, role_arn=role.role_arn, use_base64=False))

        return iot.CfnTopicRule(
            self, construct_id,
            topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
                sql=sql, aws_iot_sql_version=SQL_VERSION, rule_disabled=False,
                description=description, actions=[to(self.queue)],
                error_action=to(self.dead_letters)))
