"""Example answers for the OpenAPI document, built as the response models themselves: an
example that no longer fits its schema fails when the document is built
(``tests/test_openapi.py`` builds it), not in a reader's hands. Loaded with the document
only (``chalicelib.api.document``)."""

from __future__ import annotations

import functools
from typing import Any

from chalicelib.api import responses as r
from chalicelib.api.examples import AT, CLIENT_TOKEN, LATER, ROLLOUT_ID, STEPS
from chalicelib.rollouts.states import RolloutState
from edgeplane.protocol import ExecutionState


@functools.cache
def by_model() -> dict[type, Any]:
    """An example answer by the model a route answers with (built once)."""
    site = r.Site(site_id="shop-0042", name="Shop 42", region="eu-west", tags=["paris", "retail"],
                  timezone="Europe/Paris", facts={"rack_count": 1},
                  maintenance_window=r.Window(days=["sat", "sun"], start="01:00", end="05:00"),
                  created_at=AT, updated_at=AT, online=True, presence_changed_at=AT,
                  last_seen_at=LATER, gateway_version="0.1.0",
                  cache=r.SiteCache(artifacts=2, bytes=2831413248, max_bytes=214748364800,
                                    hits=49, downloads=2, wire_bytes=2831413248,
                                    served_requests=6120, served_bytes=141570662400,
                                    evictions=0, reported_at=LATER))
    machine = r.Machine(site_id="shop-0042", machine_id="srv-1", protocol="redfish",
                        address="https://10.0.0.5", machine_class="edge-small",
                        labels={"rack": "a"}, capabilities=["boot", "inventory", "power"],
                        manufacturer="Contoso", model="E1", serial="SN1", power="on",
                        inventory_error=None, source="api", desired=None, updated_at=AT)
    rollout = r.Rollout(rollout_id=ROLLOUT_ID, name="pxe reinstall", state=RolloutState.RUNNING,
                        steps=STEPS, blueprint=None, target=r.Target(sites=["shop-0042"]),
                        site_ids=["shop-0042"], client_token=CLIENT_TOKEN, message=None,
                        policy={"max_in_flight": 50}, waves=[1], current_wave=0, total=1,
                        done=0, in_flight=1, state_counts={"sent": 1},
                        expires_at="2025-03-08T09:30:00.123Z",
                        created_at=AT, updated_at=AT, counts={"sent": 1}, wave_counts=[{"sent": 1}])
    execution = r.Execution(site_id="shop-0042", execution_id=f"{ROLLOUT_ID}.shop-0042",
                            state=ExecutionState.RUNNING, wave=0, attempt=1, message="",
                            plan_message_id="9c1e4b7a", not_before=None, sent_at=AT,
                            started_at=LATER, finished_at=None, last_seq=3, updated_at=LATER,
                            machines=[r.MachineResult(
                                machine="srv-1", state="running", seq=3, updated_at=LATER,
                                steps=[r.StepResult(task="power.ensure", state="succeeded",
                                                    changed=True, message="powered on",
                                                    started_at=AT, finished_at=LATER,
                                                    retryable=False)])])
    blueprint = r.Definition(kind="blueprint", name="baseline",
                             spec={"description": "", "params": {}, "steps": STEPS},
                             revision=2, latest=2, revisions=[1, 2], deleted=False)

    principal = r.Principal(name="ci-deployer", role="operator", created_by="admin", created_at=AT,
                            revoked_at=None, revoked_by=None, active=True)

    return {
        r.Health: r.Health(ok=True, version="0.1.0", protocol=1),
        r.Document: r.Document.model_validate({"openapi": "3.1.0", "info": {
            "title": "Edgeplane API", "version": "0.1.0"}}),
        r.SiteList: r.SiteList(sites=[site]),
        r.SiteOne: r.SiteOne(site=site),
        r.SiteWithMachines: r.SiteWithMachines(site=site, machines=[machine]),
        r.MachineList: r.MachineList(machines=[machine]),
        r.MachineOne: r.MachineOne(machine=machine),
        r.MachineDeleted: r.MachineDeleted(site_id="shop-0042", machine_id="srv-1", deleted=True),
        r.RolloutCreated: r.RolloutCreated(rollout=rollout, executions=[
            execution.model_copy(update={"machines": None})]),
        r.RolloutList: r.RolloutList(rollouts=[rollout.model_copy(
            update={"site_ids": None, "target": r.Target(sites=None), "counts": None,
                    "wave_counts": None})]),
        r.RolloutDetail: r.RolloutDetail(rollout=rollout, executions=[execution]),
        r.RolloutOne: r.RolloutOne(rollout=rollout.model_copy(
            update={"state": RolloutState.PAUSED, "counts": None, "wave_counts": None})),
        r.EventList: r.EventList(events=[r.Event(ts=1740821400.123, type="Rollout State Changed",
                                                 detail={"rollout_id": ROLLOUT_ID,
                                                         "state": "running", "previous": None})]),
        r.AppliedList: r.AppliedList(results=[r.Applied(kind="group", name="emea",
                                                        action="created",
                                                        diff=['+ spec.tags: ["emea"]'],
                                                        dry_run=True)]),
        r.DefinitionList: r.DefinitionList(items=[blueprint.model_copy(
            update={"latest": None, "revisions": None, "deleted": None})]),
        r.DefinitionOne: r.DefinitionOne(item=blueprint),
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
            principal=principal,
            token="ep1.ci-deployer.<43 characters, shown once>",  # noqa: S106 - a placeholder
            note="the token is shown once; only its hash is stored"),
        r.PrincipalList: r.PrincipalList(principals=[principal]),
        r.PrincipalOne: r.PrincipalOne(principal=principal.model_copy(
            update={"revoked_at": LATER, "revoked_by": "admin", "active": False})),
        r.ExecutionOne: r.ExecutionOne(execution=execution),
        r.WhoAmI: r.WhoAmI(name="ci-deployer", role="operator", via="token"),
        r.SitesPage: r.SitesPage(
            total=1000, counted_at=LATER, offset=0, limit=50, sort="last_seen", order="desc",
            filters={"region": "eu-west"}, sites=[r.SiteRow(
                site_id="shop-0042", name="Shop 42", region="eu-west", tags=["paris", "retail"],
                online=True, stale=False, last_seen_at=LATER, gateway_version="0.1.0",
                desired_gateway=None, machines=3, healthy=3, with_desired=3, in_sync=2,
                drifted=True, failing=False)]),
        r.SiteRuns: r.SiteRuns(executions=[r.SiteRun(
            rollout_id=ROLLOUT_ID, rollout_name="pxe reinstall", rollout_created_at=AT,
            execution=execution.model_copy(update={"machines": None}))]),
        r.FailureMatrix: r.FailureMatrix(
            counted_at=LATER, rollouts=[ROLLOUT_ID], vendors=["Contoso", "Fabrikam"],
            firmware=["1.45.455b66", "2.10"], cells=[
                r.MatrixCell(vendor="Fabrikam", firmware="2.10", machines=40, failed=12,
                             rate=0.3),
                r.MatrixCell(vendor="Contoso", firmware="1.45.455b66", machines=900, failed=9,
                             rate=0.01)]),
        r.FleetSummary: r.FleetSummary(
            total=1000, online=991, offline=9, stale=2, drifted=14, failing=3,
            stale_after_s=7200.0, counted_at=LATER,
            filters={"region": "eu-west"}, facets={
                "region": {"eu-west": 1000, "us-east": 1200}, "tag": {"retail": 2200},
                "group": {"emea": 1000}, "vendor": {"Contoso": 1900, "Fabrikam": 300},
                "firmware": {"1.45.455b66": 1900, "2.10": 300},
                "gateway_version": {"0.1.0": 2150, "0.2.0": 50}}),
        r.FailureGroups: r.FailureGroups(
            counted_at=LATER, rollouts=[ROLLOUT_ID], failed_sites=3, groups_total=1,
            groups=[r.FailureGroup(
                task="media.insert",
                message="The image <url> could not be fetched: [Errno <n>] Connection refused.",
                example="The image http://10.0.0.9/boot.iso could not be fetched: "
                        "[Errno 111] Connection refused.",
                machines=3, sites=3, samples=[r.FailureSample(
                    rollout_id=ROLLOUT_ID, site_id="shop-0042", machine="srv-1")])]),
        r.AuditPage: r.AuditPage(next=None, records=[r.AuditEntry(
            id="1740821400.123456-0123456789ab", at=AT, principal="ci-deployer", role="operator",
            method="POST", route="/rollouts/{rollout_id}/cancel",
            path=f"/rollouts/{ROLLOUT_ID}/cancel", status=200,
            target=r.AuditTarget(kind="rollout", id=ROLLOUT_ID), action="canceled",
            site_id=None, rollout_id=ROLLOUT_ID, before={"state": "running"},
            after={"state": "canceled"}, summary=None, request_id="c0ffee", source_ip="10.1.2.3",
            expires_at="2026-03-01T09:30:00.123Z")]),
    }
