"""The cloud's configuration, read from the environment when asked (never at import).

Reading lazily keeps import side-effect free (tests and the local stack set the environment
after importing the app) and lets one Lambda container pick up nothing stale: every call
reads ``os.environ`` again, which costs microseconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_TABLE_PREFIX = "edgeplane-"
DEFAULT_REGION = "us-east-1"
DEFAULT_PUBLISHER = "iot"
DEFAULT_INGEST_QUEUE = "edgeplane-ingest"
DEFAULT_EVENT_BUS = "default"


@dataclass(frozen=True)
class Settings:
    api_token: str | None  # the bootstrap admin's token (chalicelib/access/identity.py)
    table_prefix: str
    dynamodb_endpoint: str | None
    region: str
    publisher: str
    iot_endpoint: str | None
    ingest_queue: str
    event_bus: str  # EventBridge bus for state-change events
    events_endpoint: str | None  # moto server locally; None: AWS
    # The key plans and cancels are signed with: a PEM file, or secretsmanager:<secret id>
    # (see chalicelib/signing.py).
    plan_signing_key: str | None
    # Who calls the API (chalicelib/access/identity.py): None, bearer tokens; "cognito" or
    # "iam", what API Gateway's authorizer put in the request context.
    authorizer: str | None = None
    # Days an audit record is kept (chalicelib/access/trail.py checks it; unset: its default).
    audit_retention_days: str | None = None
    # How item requests reach DynamoDB: "wire" (chalicelib/store_wire.py) or "botocore"
    # (what moto inside a test's process intercepts).
    store_client: str = "wire"


def _get(name: str) -> str | None:
    """An environment variable, with empty strings treated as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


def load() -> Settings:
    return Settings(
        api_token=_get("EDGEPLANE_API_TOKEN"),
        table_prefix=_get("EDGEPLANE_TABLE_PREFIX") or DEFAULT_TABLE_PREFIX,
        dynamodb_endpoint=_get("EDGEPLANE_DYNAMODB_ENDPOINT"),
        region=_get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        publisher=_get("EDGEPLANE_PUBLISHER") or DEFAULT_PUBLISHER,
        iot_endpoint=_get("EDGEPLANE_IOT_ENDPOINT"),
        ingest_queue=ingest_queue_name(),
        event_bus=_get("EDGEPLANE_EVENT_BUS") or DEFAULT_EVENT_BUS,
        events_endpoint=_get("EDGEPLANE_EVENTS_ENDPOINT"),
        plan_signing_key=_get("EDGEPLANE_PLAN_SIGNING_KEY"),
        authorizer=_get("EDGEPLANE_AUTHORIZER"),
        audit_retention_days=_get("EDGEPLANE_AUDIT_RETENTION_DAYS"),
        store_client=store_client(),
    )


STORE_CLIENTS = ("wire", "botocore")


def store_client() -> str:
    """EDGEPLANE_STORE_CLIENT: "wire" (the default) or "botocore"."""
    value = (_get("EDGEPLANE_STORE_CLIENT") or "wire").lower()
    if value not in STORE_CLIENTS:
        raise ValueError(f"EDGEPLANE_STORE_CLIENT is {value!r}: it must be one of "
                         f"{', '.join(STORE_CLIENTS)}")
    return value


def ingest_queue_name() -> str:
    """The SQS queue ingestion reads; app.py needs it at import for ``chalice deploy``."""
    return _get("EDGEPLANE_INGEST_QUEUE") or DEFAULT_INGEST_QUEUE


@dataclass(frozen=True)
class MqttIdentity:
    """The files of a client certificate for a broker that requires one (``mqtts://``)."""

    ca_file: str
    cert_file: str
    key_file: str


def mqtt_identity() -> MqttIdentity | None:
    """EDGEPLANE_MQTT_CA, EDGEPLANE_MQTT_CERT and EDGEPLANE_MQTT_KEY: this process's
    identity on the broker, when it publishes through one (the local stack); in AWS the
    cloud publishes through IoT Core's data API and its IAM role instead."""
    names = ("EDGEPLANE_MQTT_CA", "EDGEPLANE_MQTT_CERT", "EDGEPLANE_MQTT_KEY")
    values = [_get(name) for name in names]
    if not any(values):
        return None
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise ValueError(f"{', '.join(missing)} unset: a broker identity needs all of "
                         f"{', '.join(names)}")
    ca, cert, key = values
    assert ca and cert and key
    return MqttIdentity(ca, cert, key)
