"""Examples for the OpenAPI document, built as the response models themselves: an example
that no longer fits its schema fails when this module is imported, not in a reader's hands."""

from __future__ import annotations

from typing import Any

from chalicelib.api import responses as r
from chalicelib.rollouts.create import rollout_id_for
from chalicelib.rollouts.states import RolloutState
from edgeplane.protocol import ExecutionState

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

SITE = r.Site(site_id="shop-0042", name="Shop 42", region="eu-west", tags=["paris", "retail"],
              timezone="Europe/Paris", facts={"rack_count": 1},
              maintenance_window=r.Window(days=["sat", "sun"], start="01:00", end="05:00"),
              created_at=AT, updated_at=AT, online=True, presence_changed_at=AT,
              last_seen_at=LATER, gateway_version="0.1.0")
MACHINE = r.Machine(site_id="shop-0042", machine_id="srv-1", protocol="redfish",
                    address="https://10.0.0.5", machine_class="edge-small",
                    labels={"rack": "a"}, capabilities=["boot", "inventory", "power"],
                    manufacturer="Contoso", model="E1", serial="SN1", power="on",
                    inventory_error=None, source="api", desired=None, updated_at=AT)
ROLLOUT = r.Rollout(rollout_id=ROLLOUT_ID, name="pxe reinstall", state=RolloutState.RUNNING,
                    steps=STEPS, blueprint=None, target=r.Target(sites=["shop-0042"]),
                    site_ids=["shop-0042"], client_token=CLIENT_TOKEN, message=None,
                    policy={"max_in_flight": 50}, waves=[1], current_wave=0, total=1, done=0,
                    in_flight=1, state_counts={"sent": 1}, expires_at="2025-03-08T09:30:00.123Z",
                    created_at=AT, updated_at=AT, counts={"sent": 1}, wave_counts=[{"sent": 1}])
EXECUTION = r.Execution(site_id="shop-0042", execution_id=f"{ROLLOUT_ID}.shop-0042",
                        state=ExecutionState.RUNNING, wave=0, attempt=1, message="",
                        plan_message_id="9c1e4b7a", not_before=None, sent_at=AT,
                        started_at=LATER, finished_at=None, last_seq=3, updated_at=LATER,
                        machines=[r.MachineResult(
                            machine="srv-1", state="running", seq=3, updated_at=LATER,
                            steps=[r.StepResult(task="power.ensure", state="succeeded",
                                                changed=True, message="powered on",
                                                started_at=AT, finished_at=LATER,
                                                retryable=False)])])
BLUEPRINT = r.Definition(kind="blueprint", name="baseline",
                         spec={"description": "", "params": {}, "steps": STEPS},
                         revision=2, latest=2, revisions=[1, 2], deleted=False)

PRINCIPAL = r.Principal(name="ci-deployer", role="operator", created_by="admin", created_at=AT,
                        revoked_at=None, revoked_by=None, active=True)

# By the model a route answers with.
RESPONSES: dict[type, Any] = {
    r.Health: r.Health(ok=True, version="0.1.0", protocol=1),
    r.Document: r.Document.model_validate({"openapi": "3.1.0", "info": {
        "title": "Edgeplane API", "version": "0.1.0"}}),
    r.SiteList: r.SiteList(sites=[SITE]),
    r.SiteOne: r.SiteOne(site=SITE),
    r.SiteWithMachines: r.SiteWithMachines(site=SITE, machines=[MACHINE]),
    r.MachineList: r.MachineList(machines=[MACHINE]),
    r.MachineOne: r.MachineOne(machine=MACHINE),
    r.MachineDeleted: r.MachineDeleted(site_id="shop-0042", machine_id="srv-1", deleted=True),
    r.RolloutCreated: r.RolloutCreated(rollout=ROLLOUT, executions=[
        EXECUTION.model_copy(update={"machines": None})]),
    r.RolloutList: r.RolloutList(rollouts=[ROLLOUT.model_copy(
        update={"site_ids": None, "target": r.Target(sites=None), "counts": None,
                "wave_counts": None})]),
    r.RolloutDetail: r.RolloutDetail(rollout=ROLLOUT, executions=[EXECUTION]),
    r.RolloutOne: r.RolloutOne(rollout=ROLLOUT.model_copy(
        update={"state": RolloutState.PAUSED, "counts": None, "wave_counts": None})),
    r.EventList: r.EventList(events=[r.Event(ts=1740821400.123, type="Rollout State Changed",
                                             detail={"rollout_id": ROLLOUT_ID,
                                                     "state": "running", "previous": None})]),
    r.AppliedList: r.AppliedList(results=[r.Applied(kind="group", name="emea",
                                                    action="created",
                                                    diff=['+ spec.tags: ["emea"]'],
                                                    dry_run=True)]),
    r.DefinitionList: r.DefinitionList(items=[BLUEPRINT.model_copy(
        update={"latest": None, "revisions": None, "deleted": None})]),
    r.DefinitionOne: r.DefinitionOne(item=BLUEPRINT),
    r.DefinitionDeleted: r.DefinitionDeleted(kind="profile", name="emea-perf", deleted=True),
    r.Explanation: r.Explanation(
        site="shop-0042", machine="srv-1", machine_class="edge-small", groups=["emea"],
        blueprint="baseline", params=[r.Explained(
            name="boot_mode", value="uefi", level="site", profile="shop-0042-boot",
            redundant=False, overrides=[r.Overridden(level="fleet", profile="fleet-boot",
                                                     value="legacy")])]),
    r.Variation: r.Variation(sites=1000, customized_sites=12, parameters=[
        r.ParameterVariation(name="boot_mode", distinct_values=2, sites_without_value=0,
                             sites_by_level={"fleet": 988, "site": 12}, site_overrides=12,
                             machine_overrides=0, redundant_overrides=[])],
        varying_parameters=["boot_mode"], redundant=[], conflicts=[], computed_in_ms=4.2),
    r.DriftList: r.DriftList(drifted=1, machines=[r.Drift(
        site_id="shop-0042", machine_id="srv-1", blueprint="baseline", revision=2,
        rollout_id=ROLLOUT_ID, expect={"power": "on"}, observed={"power": "off"},
        observed_at=LATER, drift=[{"field": "power", "desired": "on", "observed": "off"}],
        in_sync=False, drift_changed_at=LATER)], gateways_drifted=1, gateways=[
        r.GatewayDrift(site_id="shop-0042", desired="1.4.0", running="1.3.2", online=True,
                       rollout_id=ROLLOUT_ID, desired_at=LATER, in_sync=False)]),
    r.PrincipalCreated: r.PrincipalCreated(
        principal=PRINCIPAL,
        token="ep1.ci-deployer.<43 characters, shown once>",  # noqa: S106 - a placeholder
        note="the token is shown once; only its hash is stored"),
    r.PrincipalList: r.PrincipalList(principals=[PRINCIPAL]),
    r.PrincipalOne: r.PrincipalOne(principal=PRINCIPAL.model_copy(
        update={"revoked_at": LATER, "revoked_by": "admin", "active": False})),
    r.AuditPage: r.AuditPage(next=None, records=[r.AuditEntry(
        id="1740821400.123456-0123456789ab", at=AT, principal="ci-deployer", role="operator",
        method="POST", route="/rollouts/{rollout_id}/cancel",
        path=f"/rollouts/{ROLLOUT_ID}/cancel", status=200,
        target=r.AuditTarget(kind="rollout", id=ROLLOUT_ID), action="canceled",
        site_id=None, rollout_id=ROLLOUT_ID, before={"state": "running"},
        after={"state": "canceled"}, summary=None, request_id="c0ffee", source_ip="10.1.2.3",
        expires_at="2026-03-01T09:30:00.123Z")]),
}

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
