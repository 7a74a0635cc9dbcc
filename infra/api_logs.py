"""The REST API's access log: one JSON line per request, in a log group of the stack.

Who called is what API Gateway knows of the caller: the IAM identity (``iam`` mode), the
Cognito user's ``sub`` (``cognito`` mode). A bearer token (``token`` mode, the default) is
checked by the app, not by API Gateway: its principal is in the audit trail
(``GET /audit``), whose records carry the request id of this log's ``requestId``.

API Gateway writes access logs with the account's CloudWatch role for API Gateway, a
setting of the account and region that the stack leaves alone (docs/deploy.md, step 1).
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

# Every value is quoted: a variable with no value is written "-", which would not be JSON
# where a number is expected.
FIELDS = {
    "requestId": "$context.requestId",
    "time": "$context.requestTimeEpoch",
    "ip": "$context.identity.sourceIp",
    "caller": "$context.identity.caller",
    "userArn": "$context.identity.userArn",
    "cognitoSub": "$context.authorizer.claims.sub",
    "method": "$context.httpMethod",
    "route": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "responseLength": "$context.responseLength",
    "error": "$context.error.responseType",
    "userAgent": "$context.identity.userAgent",
}


def access_log_format() -> str:
    """The format API Gateway fills in: one line of JSON."""
    return json.dumps(FIELDS, separators=(",", ":"))


class ApiAccessLogs(Construct):
    """The access log group, kept as long as the stage keeps its other logs."""

    def __init__(self, scope: Construct, construct_id: str,
                 retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.group = logs.LogGroup(self, "Group", retention=retention,
                                   removal_policy=cdk.RemovalPolicy.DESTROY)

    def setting(self) -> dict[str, str]:
        """The ``AccessLogSetting`` of an ``AWS::Serverless::Api``."""
        return {"DestinationArn": self.group.log_group_arn, "Format": access_log_format()}
