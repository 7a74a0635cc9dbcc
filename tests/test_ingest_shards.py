"""The bridge's ingest processes: each site's reports in one process, failures told apart."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from edgeplane import protocol
from edgeplane_dev.ingest_shards import ShardedIngest, ShareFailed, shard_of
from tests.support import wait_until

HANDLER = f"{__name__}:record"
LOG_ENV = "EDGEPLANE_TEST_SHARD_LOG"


def record(messages: list[tuple[str, bytes]]) -> None:
    """The handler the ingest processes run: each message, with the pid that handled it,
    appended to the file named in the environment; a payload may ask it to fail."""
    lines = []
    for topic, payload in messages:
        if payload == b"store down":
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        if payload == b"bad":
            raise ValueError("a report the handler cannot store")
        lines.append(json.dumps({"topic": topic, "payload": payload.decode(),
                                 "pid": os.getpid(),
                                 "cert": os.environ.get("EDGEPLANE_MQTT_CERT")}) + "\n")
    with open(os.environ[LOG_ENV], "a") as log:
        log.write("".join(lines))


def handled(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] \
        if path.exists() else []


def topic(site: str) -> str:
    return protocol.up_topic(site, "result")


@pytest.fixture
def shards(tmp_path, monkeypatch):
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "handled.jsonl"))
    sharded = ShardedIngest(2, threads=2, handler=HANDLER)
    try:
        yield sharded
    finally:
        sharded.close()


def test_each_sites_reports_are_handled_in_one_process_in_the_order_they_came(shards,
                                                                             tmp_path):
    sites = [f"site-{n:03d}" for n in range(40)]
    assert {shard_of(topic(site), 2) for site in sites} == {0, 1}  # both have a share
    for seq in range(3):
        shards([(topic(site), f"{site} {seq}".encode()) for site in sites])

    seen = handled(tmp_path / "handled.jsonl")
    assert len(seen) == 120
    by_site: dict[str, list[dict]] = {}
    for entry in seen:
        by_site.setdefault(entry["topic"], []).append(entry)
    assert len({entry["pid"] for entry in seen}) == 2
    for site in sites:
        entries = by_site[topic(site)]
        assert len({entry["pid"] for entry in entries}) == 1
        assert [entry["payload"] for entry in entries] == [f"{site} {n}" for n in range(3)]


def test_a_store_outage_is_told_from_a_report_at_fault(shards):
    with pytest.raises(ShareFailed) as down:
        shards([(topic("site-001"), b"store down"), (topic("site-002"), b"fine")])
    assert down.value.unavailable and "Could not connect" in down.value.unavailable

    with pytest.raises(ShareFailed) as bad:
        shards([(topic("site-001"), b"bad")])
    assert bad.value.unavailable is None
    assert "a report the handler cannot store" in str(bad.value)


def test_an_ingest_process_that_dies_is_started_again(shards, tmp_path):
    site = next(f"site-{n:03d}" for n in range(100) if shard_of(topic(f"site-{n:03d}"), 2)
                == 0)
    first = shards.pids[0]
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: shards.pids[0] != first, timeout=30)

    shards([(topic(site), b"after the restart")])
    assert [entry["pid"] for entry in handled(tmp_path / "handled.jsonl")] == \
        [shards.pids[0]]


def test_each_ingest_process_runs_with_the_environment_given_to_it(tmp_path, monkeypatch):
    """Each process sends the plans it dispatches as an identity of its own."""
    monkeypatch.setenv(LOG_ENV, str(tmp_path / "handled.jsonl"))
    with pytest.raises(ValueError, match="1 environments for 2 ingest processes"):
        ShardedIngest(2, handler=HANDLER, process_envs=[{"EDGEPLANE_MQTT_CERT": "a"}])
    sharded = ShardedIngest(2, threads=2, handler=HANDLER, process_envs=[
        {"EDGEPLANE_MQTT_CERT": f"ingest-{n}.pem"} for n in range(2)])
    try:
        sharded([(topic(f"site-{n:03d}"), b"r") for n in range(40)])
    finally:
        sharded.close()
    seen = handled(tmp_path / "handled.jsonl")
    certs_by_pid: dict[int, set[str]] = {}
    for entry in seen:
        certs_by_pid.setdefault(entry["pid"], set()).add(entry["cert"])
    assert sorted(certs_by_pid.values(), key=sorted) == [{"ingest-0.pem"}, {"ingest-1.pem"}]
