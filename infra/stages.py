"""The stages Edgeplane deploys as (``cdk deploy -c stage=prod``): what differs between a
development stack and the production one. No account or region here: the CDK CLI takes
them from the credentials it deploys with."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_logs as logs


@dataclass(frozen=True)
class Stage:
    name: str
    production: bool  # deletion protection, retained tables and secrets, longer retention
    log_retention: logs.RetentionDays
    archive_days: int  # how long the event bus's archive keeps events
    api_rate: float  # requests/s the API takes in steady state, all callers together
    api_burst: int


STAGES = {
    "dev": Stage("dev", production=False, log_retention=logs.RetentionDays.TWO_WEEKS,
                 archive_days=7, api_rate=50, api_burst=100),
    "prod": Stage("prod", production=True, log_retention=logs.RetentionDays.THREE_MONTHS,
                  archive_days=365, api_rate=200, api_burst=400),
}


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}: use one of "
                         f"{', '.join(sorted(STAGES))} (cdk ... -c stage=NAME)") from None
