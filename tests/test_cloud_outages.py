"""The cloud while its store or its broker is down: nothing lost, nothing waits for it, and
``/health`` says which is down.

In this process (moto for the store, a store that does not answer made by pointing the
tables at a port where nothing listens), then on the whole local stack: the broker stopped
while a rollout is created (the request answers at once; the plans go out when the broker
is back) and the store crashed (``/health`` names it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib import ingest
from edgeplane import protocol
from edgeplane_cli.client import ApiClient, ApiError
from edgeplane_dev.ports import free_port
from tests.support import REGION, call, up, wait_until

STEPS = [{"task": "power.ensure", "params": {"state": "on"}}]


@pytest.fixture
def store_down(aws) -> Iterator[int]:
    """The tables, as if the store did not answer (nothing listens on their port)."""
    from chalicelib import models

    port = free_port()
    models.configure(f"http://127.0.0.1:{port}", "test-", REGION)
    try:
        yield port
    finally:
        models.configure(None, "test-", REGION)


def test_a_store_that_does_not_answer_is_a_503_naming_it_on_every_route(api, store_down):
    status, body = call(api, "GET", "/sites")
    assert status == 503
    assert body["error"]["code"] == "store_unavailable"
    assert "the store does not answer" in body["error"]["message"]
    assert f"127.0.0.1:{store_down}" in body["error"]["message"]
    assert call(api, "PUT", "/sites/shop-1", {})[0] == 503

    status, body = call(api, "GET", "/health")
    assert status == 503
    assert body["error"]["code"] == "unavailable"
    assert body["error"]["message"].startswith("down: the store (")
    assert "broker" not in body["error"]["message"]


def test_health_is_200_while_both_are_up(api):
    status, body = call(api, "GET", "/health")
    assert (status, body) == (200, {"ok": True, "version": "0.1.0", "protocol": 1})


def test_sqs_records_go_back_whole_when_the_store_does_not_answer(store_down, caplog):
    records = [(f"m-{n}", json.dumps({**json.loads(payload), "topic": topic}))
               for n, (topic, payload) in enumerate(
                   up(protocol.Presence(site=f"shop-{n}", session=1.0)) for n in range(3))]
    failed = ingest.handle_sqs_records(records)
    assert failed == ["m-0", "m-1", "m-2"], "every record back to the queue, none dropped"
    assert "the store does not answer" in caplog.text
    assert "one by one" not in caplog.text, "no record tried alone: none is at fault"


# --- on the local stack ----------------------------------------------------------------------


def health(api: ApiClient) -> str:
    """"up", or what the 503 says is down."""
    try:
        api.get("/health")
        return "up"
    except ApiError as exc:
        if exc.status != 503:
            raise
        return exc.message


def down_says(api: ApiClient) -> str:
    """What /health's 503 says, once it says it (its answer is kept a few seconds)."""
    def said() -> str:
        answer = health(api)
        return "" if answer == "up" else answer

    return wait_until(said, timeout=15, interval=0.5, what="/health saying 503")


def bridge_log(stack_dir: Path) -> str:
    log = stack_dir / "logs" / "bridge.log"
    return log.read_text(errors="replace") if log.exists() else ""


@pytest.mark.e2e
def test_a_rollout_created_while_the_broker_is_down_answers_at_once_and_finishes_later(
        stack):
    from edgeplane_dev.fleet_sim import FleetSimulator
    from edgeplane_dev.stack import pinned_keys, pki_dir

    state = stack.state
    api = ApiClient(state.context, timeout=30)
    with FleetSimulator(state.mqtt_port, 4, machines_per_site=1, power_delay=(0.2, 0.5),
                        pki=pki_dir(stack.directory),
                        plan_keys=pinned_keys(stack.directory)) as fleet:
        sites = fleet.site_ids
        wait_until(lambda: {s["site_id"] for s in api.get("/sites")["sites"]} >= set(sites)
                   and all(api.get(f"/sites/{s}/machines")["machines"] for s in sites),
                   timeout=60, interval=0.3, what="every site registered with its machine")
        assert health(api) == "up"

        stack.stop_broker()
        # (how long it takes: benchmarks/outages.py)
        created = api.post("/rollouts", {"name": "while the broker is down",
                                         "sites": sites, "steps": STEPS})
        rollout_id = created["rollout"]["rollout_id"]
        assert sorted(e["state"] for e in created["executions"]) == ["queued"] * len(sites)
        assert all(not e["message"] for e in created["executions"]), \
            "no plan claimed or tried: the request did not wait on the broker"
        down = down_says(api)
        assert "down: the broker (" in down and "the store" not in down

        stack.start_broker()
        # The ticker sends the plans once its publisher is back; the sites run them.
        wait_until(lambda: api.get(f"/rollouts/{rollout_id}?executions=false")["rollout"]
                   ["state"] != "running", timeout=120, interval=0.5, what="the rollout's end")
        final = api.get(f"/rollouts/{rollout_id}")
        assert final["rollout"]["state"] == "succeeded"
        assert [e["state"] for e in final["executions"]] == ["succeeded"] * len(sites)
        wait_until(lambda: health(api) == "up", timeout=15, interval=0.5,
                   what="/health up again")

        # The store crashes: /health names it (the token is checked in the store, so the
        # refusal may come from there: it names the store all the same).
        stack.stop_store(crash=True)
        down = down_says(api)
        assert "store" in down
        with pytest.raises(ApiError) as refused:
            api.get("/sites")
        assert refused.value.status == 503
        assert "the store does not answer" in refused.value.message
        stack.start_store()
        wait_until(lambda: health(api) == "up", timeout=30, interval=0.5,
                   what="/health up again")
    assert "dropped" not in bridge_log(stack.directory)
