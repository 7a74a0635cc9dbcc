"""The pynamodb models: configuration, table creation, and the conditional writes."""

from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer

from chalicelib import models
from chalicelib.models import Execution, Rollout, Site, Wave
from chalicelib.rollouts import states
from chalicelib.rollouts.moves import move_rollout, transition
from chalicelib.rollouts.states import RolloutState
from edgeplane.protocol import ExecutionState
from edgeplane_dev.ports import free_port
from tests.support import REGION


def new_execution(state: str = "queued") -> Execution:
    execution = Execution("r-1", "shop-1", execution_id="r-1.shop-1", state=state,
                          created_at=1.0, updated_at=1.0)
    execution.save()
    return execution


def test_create_tables_is_idempotent(aws):
    assert models.create_tables() == []
    assert {m.Meta.table_name for m in models.MODELS} == {
        "test-sites", "test-machines", "test-rollouts", "test-executions",
        "test-definitions", "test-blueprint-revisions",
        "test-rollout-events", "test-rollout-targets", "test-waves", "test-result-parts",
        "test-principals", "test-audit", "test-commands", "test-readings"}


def test_the_audit_table_expires_its_records(aws):
    import boto3

    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    ttl = dynamodb.describe_time_to_live(TableName="test-audit")["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_execution_moves_only_along_the_table_and_counts_once(aws):
    Wave("r-1", 0, size=1).save()
    execution = new_execution()
    assert transition(execution, ExecutionState.SENT, plan_message_id="m-1", sent_at=2.0)
    assert not transition(execution, ExecutionState.QUEUED)  # nothing leads back to queued
    assert not transition(execution, ExecutionState.SENT)  # sent -> sent is not a transition
    assert transition(execution, ExecutionState.RUNNING)
    assert transition(execution, ExecutionState.FAILED, message="srv-1 failed")
    for target in ExecutionState:
        assert not transition(execution, target)
    stored = Execution.get("r-1", "shop-1")
    assert (stored.state, stored.message, stored.plan_message_id) == ("failed", "srv-1 failed",
                                                                      "m-1")
    counters = Rollout.get("r-1")
    assert (counters.done, counters.in_flight) == (1, 0)
    assert (Wave.get("r-1", 0).done, Wave.get("r-1", 0).failed) == (1, 1)


def test_a_stale_copy_cannot_undo_a_newer_state(aws):
    Wave("r-1", 0, size=1).save()
    fresh, stale = new_execution(), Execution.get("r-1", "shop-1")
    assert transition(fresh, ExecutionState.SUCCEEDED)
    assert stale.state == "queued"
    assert not transition(stale, ExecutionState.SENT)
    assert Execution.get("r-1", "shop-1").state == "succeeded"
    assert Rollout.get("r-1").done == 1, "counted once"


def test_moving_a_missing_execution_creates_nothing(aws):
    assert not transition(Execution("r-1", "nowhere"), ExecutionState.RUNNING)
    assert list(Execution.query("r-1")) == []


def test_rollout_leaves_running_once(aws):
    rollout = Rollout("r-1", steps=[], target_tag="x", target_ref="t-1",
                      state=RolloutState.RUNNING, created_at=1.0, updated_at=1.0)
    rollout.save()
    stale = Rollout.get("r-1")
    assert move_rollout(rollout, RolloutState.FAILED)
    assert not move_rollout(stale, RolloutState.SUCCEEDED)
    assert Rollout.get("r-1").state == "failed"


def test_rollout_outcome():
    assert states.rollout_outcome([]) is None
    assert states.rollout_outcome(["succeeded", "running"]) is None
    assert states.rollout_outcome(["succeeded", "succeeded"]) == RolloutState.SUCCEEDED
    assert states.rollout_outcome(["succeeded", "timed_out"]) == RolloutState.FAILED


def test_execution_ids():
    assert Execution.make_id("r-1", "shop-1") == "r-1.shop-1"
    assert Execution.split_id("r-1.shop-1") == ("r-1", "shop-1")
    with pytest.raises(ValueError, match="is not <rollout>.<site>"):
        Execution.split_id("r-1")


@pytest.fixture
def moto_server(monkeypatch):
    """moto as a server on a free port, as the local stack runs it."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    models.forget_configuration()


def test_models_configure_from_the_environment_against_moto_server(moto_server, monkeypatch):
    monkeypatch.setenv("EDGEPLANE_DYNAMODB_ENDPOINT", moto_server)
    monkeypatch.setenv("EDGEPLANE_TABLE_PREFIX", "local-")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    models.forget_configuration()
    assert len(models.create_tables()) == len(models.MODELS)  # configures on first use
    assert Site.Meta.host == moto_server and Site.Meta.table_name == "local-sites"
    Site("shop-1", name="Shop").save()
    assert Site.get("shop-1").name == "Shop"
    models.configure(moto_server, "other-", REGION)
    assert not Site.exists()


def test_threads_using_a_model_first_all_at_once_build_one_client(aws, monkeypatch):
    import threading

    from botocore.session import Session

    built = []
    create_client = Session.create_client

    def counted(self, *args, **kwargs):
        built.append(args[0] if args else kwargs.get("service_name"))
        return create_client(self, *args, **kwargs)

    monkeypatch.setattr(Session, "create_client", counted)
    monkeypatch.setattr(Site, "_connection", None)  # as in a new process
    monkeypatch.setattr(models, "_clients", {})
    start = threading.Barrier(8)

    def first_use() -> None:
        start.wait()
        Site(f"shop-{threading.get_ident()}").save()

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert built == ["dynamodb"]
    assert len(list(Site.scan())) == 8
