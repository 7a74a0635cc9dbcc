"""Examples for the OpenAPI document and its tests: requests, the ids they lead to, and
what each error status says. The answers are in ``chalicelib.api.response_examples``."""

from __future__ import annotations

from typing import Any

from chalicelib.rollouts.create import rollout_id_for

AT = "2025-03-01T09:30:00.123Z"
LATER = "2025-03-01T09:32:41.500Z"
CLIENT_TOKEN = "deploy-2025-03-01-1"  # noqa: S105 - an idempotency key, not a secret
ROLLOUT_ID = rollout_id_for(CLIENT_TOKEN)
STEPS: list[dict[str, Any]] = [{"task": "power.ensure", "params": {"state": "on"}},
                               {"task": "boot.override", "params": {"target": "pxe"}}]

SITE_IN = {"name": "Shop 42", "region": "eu-west", "tags": ["retail", "paris"],
           "timezone": "Europe/Paris",
           "maintenance_window": {"days": ["sat", "sun"], "start": "01:00", "end": "05:00"}}
MACHINE_IN = {"protocol": "redfish", "address": "https://10.0.0.5",
              "machine_class": "edge-small", "labels": {"rack": "a"}}
ROLLOUT_IN = {"name": "pxe reinstall", "sites": ["shop-0042"], "steps": STEPS,
              "policy": {"max_in_flight": 50}, "client_token": CLIENT_TOKEN}
DEFINITIONS_IN = {"documents": [{"kind": "group", "name": "emea",
                                 "spec": {"tags": ["emea"]}}], "dry_run": True}


# What each error status typically says.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "field 'site_id' is invalid: 'Shop_42' does not match "
                         "^[a-z0-9][a-z0-9-]{0,62}$"),
    401: ("unauthorized", "missing Authorization header; send 'Authorization: Bearer "
                          "<token>'"),
    403: ("forbidden", "this route needs the role 'admin'"),
    404: ("not_found", "site 'shop-9' does not exist"),
    409: ("conflict", f"rollout {ROLLOUT_ID!r} is succeeded: it cannot be canceled"),
    413: ("payload_too_large", "the request body is 2097152 bytes; PUT /sites/{site_id} "
                               "takes at most 131072"),
    415: ("unsupported_media_type", "Unsupported media type: text/plain"),
    503: ("not_configured", "EDGEPLANE_API_TOKEN is not configured: the API refuses every "
                            "request until it is set"),
}
