"""The console's fleet-wide readings saved in the store (moto DynamoDB): a new API process
answers its first view from the saved reading and says when it was taken, a slow reading is
saved for the next process, the schedule renews them, and a reading that is old, half
replaced or of another version of the code is computed again instead."""

from __future__ import annotations

import os
import time

import pytest

from chalicelib.console import cache, fleet, readings, renew
from chalicelib.models import Reading
from chalicelib.views import iso
from tests.support import call, wait_until
from tests.test_console import add_site


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Nothing remembered in this process; readings live a minute."""
    monkeypatch.setenv("EDGEPLANE_CONSOLE_CACHE_S", "60")
    cache.forget()
    yield
    cache.forget()


def total(api) -> tuple[int, str]:
    status, body = call(api, "GET", "/fleet/summary")
    assert status == 200, body
    return body["total"], body["counted_at"]


def test_a_reading_larger_than_an_item_is_saved_in_parts_and_read_back_whole(api):
    data = {"rows": [os.urandom(24).hex() for _ in range(20_000)]}  # ~1 MB, incompressible
    taken_at = time.time() - 5
    assert readings.save("big", data, taken_at)
    head = Reading.get("big", 0)
    assert head.size > 400_000 and head.parts >= 2, "cut under DynamoDB's 400 KB an item"
    assert readings.load("big") == (data, taken_at)


def test_an_older_reading_never_replaces_a_newer_one(api):
    now = time.time()
    assert readings.save("fleet-x", {"n": 2}, now)
    assert not readings.save("fleet-x", {"n": 1}, now - 10)
    assert readings.load("fleet-x") == ({"n": 2}, now)
    assert readings.save("fleet-x", {"n": 3}, now + 1)
    assert readings.load("fleet-x") == ({"n": 3}, now + 1)


def test_a_reading_too_old_or_half_replaced_is_not_used(api):
    now = time.time()
    readings.save("old", {"n": 1}, now - readings.MAX_AGE_S - 1)
    assert readings.load("old") is None
    readings.save("torn", {"n": 1}, now)
    head = Reading.get("torn", 0)
    part = Reading.get("torn", int(head.slot) * readings.SLOT_SPAN + 1)
    part.generation = "another"  # as if a writer had replaced it since
    part.save()
    assert readings.load("torn") is None


def test_a_new_process_answers_from_the_saved_reading_then_reads_the_fleet_behind_it(
        api, monkeypatch):
    add_site(api, "shop-1", "eu-west", ["retail"])
    taken_at = time.time() - 30
    fleet.FLEET.save(fleet.site_rows(), taken_at)  # what the schedule saved 30 s ago
    add_site(api, "shop-2", "eu-west", ["retail"])

    assert total(api) == (1, iso(taken_at)), "the saved reading, and when it was taken"
    assert total(api) == (1, iso(taken_at)), "remembered within its minute"

    monkeypatch.setenv("EDGEPLANE_CONSOLE_CACHE_S", "0.001")  # now it has expired
    wait_until(lambda: total(api)[0] == 2, timeout=30, what="the fleet to be read again")


def test_without_a_usable_saved_reading_the_fleet_is_read(api):
    add_site(api, "shop-1", "eu-west", ["retail"])
    fleet.FLEET.save(fleet.site_rows(), time.time() - readings.MAX_AGE_S - 5)  # too old
    add_site(api, "shop-2", "eu-west", ["retail"])
    assert total(api)[0] == 2


def test_rows_saved_by_another_version_of_the_code_are_read_again(api):
    add_site(api, "shop-1", "eu-west", ["retail"])
    saved = fleet.rows_as_json(fleet.site_rows())
    saved["fields"] = [*saved["fields"], "something_new"]
    readings.save("fleet", saved, time.time())
    add_site(api, "shop-2", "eu-west", ["retail"])
    assert total(api)[0] == 2


def test_only_a_slow_reading_is_saved(api, monkeypatch):
    add_site(api, "shop-1", "eu-west", ["retail"])
    total(api)  # a few sites read in milliseconds: nothing saved, every process reads them
    assert readings.load("fleet") is None

    monkeypatch.setattr(cache, "SLOW_S", 0.0)  # as if reading them had been slow
    cache.forget()
    total(api)
    rows, _ = fleet.FLEET.load()
    assert [row.site_id for row in rows] == ["shop-1"]


def test_the_schedule_renews_every_saved_reading_and_they_read_back_as_computed(
        api, monkeypatch):
    from app import console_readings

    add_site(api, "shop-1", "eu-west", ["retail"], "Contoso")
    monkeypatch.setattr(cache, "SLOW_S", 0.0)
    console_readings({"version": "0", "id": "1", "detail-type": "Scheduled Event",
                      "source": "aws.events", "account": "123456789012",
                      "time": "2026-12-05T00:00:00Z", "region": "us-east-1", "resources": [],
                      "detail": {}}, None)
    assert {kept.name for kept in renew.SAVED} == {"fleet", "failures", "matrix"}
    for kept in renew.SAVED:
        value, taken_at = kept.load()
        assert time.time() - taken_at < 60
        assert kept.encode(value) == kept.encode(kept.build()), kept.name
    rows, _ = fleet.FLEET.load()
    assert rows[0].vendors == {"Contoso"} and isinstance(rows[0].vendors, set)
