"""What a fleet operator is woken for, all sent to one SNS topic (subscribe to it after the
deploy, docs/deploy.md):

- a record in the ingest dead-letter queue: a site's report that could not be stored;
- the ingest queue falling behind (its oldest record older than ``BACKLOG``);
- ingest failing (Lambda errors), or dropping malformed reports (the ``dropped_reports``
  field ingest logs with each drop, counted by a metric filter);
- an IoT rule failing to deliver to the queue;
- the rollout tick failing, or not running at all (timeouts, retries and waves stop);
- the API answering 5xx.
"""

from __future__ import annotations

from collections.abc import Mapping

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iot as iot
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

NAMESPACE = "Edgeplane"
BACKLOG = cdk.Duration.minutes(10)
FIVE_MINUTES = cdk.Duration.minutes(5)
MINUTE = cdk.Duration.minutes(1)


class Alarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, prefix: str,
                 ingest_queue: sqs.IQueue, dead_letters: sqs.IQueue,
                 rules: list[iot.CfnTopicRule], functions: Mapping[str, str],
                 log_groups: Mapping[str, logs.ILogGroup], api_name: str) -> None:
        """``functions`` and ``log_groups``: by Chalice handler name (ingest_reports,
        rollout_tick), the function's physical name and its log group."""
        super().__init__(scope, construct_id)
        self.prefix = prefix
        self.topic = sns.Topic(self, "Topic", display_name="Edgeplane alarms",
                               enforce_ssl=True)
        self.alarms: list[cloudwatch.Alarm] = []

        self._alarm("DeadLetters", "A site's report could not be stored: see the dead-letter "
                    "queue (redrive it once the cause is fixed)",
                    dead_letters.metric_approximate_number_of_messages_visible(
                        period=FIVE_MINUTES, statistic="Maximum"), threshold=1)
        self._alarm("IngestBacklog", f"The ingest queue's oldest report waits more than "
                    f"{BACKLOG.to_minutes()} minutes",
                    ingest_queue.metric_approximate_age_of_oldest_message(
                        period=FIVE_MINUTES, statistic="Maximum"),
                    threshold=BACKLOG.to_seconds(), periods=2)
        self._alarm("IngestErrors", "Ingest failed to store reports (retried, then "
                    "dead-lettered)", _lambda_metric("Errors", functions["ingest_reports"]),
                    threshold=1)
        dropped = logs.MetricFilter(
            self, "DroppedReportsFilter", log_group=log_groups["ingest_reports"],
            filter_pattern=logs.FilterPattern.exists("$.dropped_reports"),
            metric_namespace=NAMESPACE, metric_name="DroppedReports",
            metric_value="$.dropped_reports", default_value=0)
        self._alarm("DroppedReports", "Ingest dropped reports that do not follow the wire "
                    "contract (a gateway on an unknown version, or a forged report)",
                    dropped.metric(period=FIVE_MINUTES, statistic="Sum"), threshold=1)
        for rule in rules:
            self._alarm(f"{rule.node.id}RuleFailures",
                        f"The IoT rule {rule.node.id} could not deliver to the queue",
                        cloudwatch.Metric(namespace="AWS/IoT", metric_name="Failure",
                                          dimensions_map={"RuleName": rule.ref},
                                          period=FIVE_MINUTES, statistic="Sum"),
                        threshold=1)
        self._alarm("TickErrors", "The rollout tick failed (timeouts, retries and waves wait "
                    "for it)", _lambda_metric("Errors", functions["rollout_tick"], MINUTE),
                    threshold=1, periods=3, datapoints=2)
        self._alarm("TickStopped", "The rollout tick has not run for 10 minutes",
                    _lambda_metric("Invocations", functions["rollout_tick"], FIVE_MINUTES),
                    threshold=1, periods=2,
                    comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                    missing=cloudwatch.TreatMissingData.BREACHING)
        self._alarm("Api5xx", "The API answered with server errors",
                    cloudwatch.Metric(namespace="AWS/ApiGateway", metric_name="5XXError",
                                      dimensions_map={"ApiName": api_name},
                                      period=FIVE_MINUTES, statistic="Sum"),
                    threshold=5)

    def _alarm(self, construct_id: str, description: str, metric: cloudwatch.IMetric, *,
               threshold: float, periods: int = 1, datapoints: int | None = None,
               comparison: cloudwatch.ComparisonOperator =
               cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
               missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
               ) -> None:
        alarm = cloudwatch.Alarm(
            self, construct_id, alarm_name=f"{self.prefix}-{construct_id}",
            alarm_description=description, metric=metric, threshold=threshold,
            evaluation_periods=periods, datapoints_to_alarm=datapoints or periods,
            comparison_operator=comparison, treat_missing_data=missing)
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)


def _lambda_metric(name: str, function_name: str,
                   period: cdk.Duration = FIVE_MINUTES) -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace="AWS/Lambda", metric_name=name,
                             dimensions_map={"FunctionName": function_name},
                             period=period, statistic="Sum")
