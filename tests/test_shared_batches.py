"""Puts of several threads gathered into shared batch writes (``chalicelib.shared_batches``),
and a registration storm's machines written so (``ingest``)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any

import pytest

from chalicelib.shared_batches import SharedBatches


class Recorder:
    """Stands for a model: what each ``batch_write`` saved; ``fail`` makes the next raise."""

    writes: list[list[Any]] = []
    fail: Exception | None = None

    @classmethod
    @contextmanager
    def batch_write(cls):
        saved: list[Any] = []

        class Batch:
            def save(self, item: Any) -> None:
                saved.append(item)

        yield Batch()
        if cls.fail is not None:
            error, cls.fail = cls.fail, None
            raise error
        cls.writes.append(saved)


@pytest.fixture(autouse=True)
def fresh_recorder():
    Recorder.writes, Recorder.fail = [], None


def run_sites(batches: SharedBatches, sites: list[list[str]],
              before_put: threading.Barrier | None = None) -> dict[int, BaseException]:
    """Each site on a thread of its own: ``put`` its items (after the barrier, if any)."""
    errors: dict[int, BaseException] = {}

    def site(n: int) -> None:
        with batches.working():
            if before_put is not None:
                before_put.wait()
            try:
                batches.put(sites[n])
            except BaseException as exc:  # noqa: BLE001 - the test reads it
                errors[n] = exc

    threads = [threading.Thread(target=site, args=(n,)) for n in range(len(sites))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive(), "a put never returned"
    return errors


def items(site: int, count: int = 4) -> list[str]:
    return [f"s{site}-m{n}" for n in range(count)]


def test_a_site_alone_is_written_at_once():
    batches = SharedBatches(Recorder)
    with batches.working():
        batches.put(items(1))
        assert Recorder.writes == [items(1)]


def test_sites_at_work_together_share_one_write():
    sites = [items(n) for n in range(5)]
    errors = run_sites(SharedBatches(Recorder), sites, threading.Barrier(5))
    assert errors == {}
    assert len(Recorder.writes) == 1
    assert sorted(Recorder.writes[0]) == sorted(i for site in sites for i in site)


def test_a_request_s_worth_goes_without_waiting_for_the_sites_still_at_work():
    batches = SharedBatches(Recorder)
    busy = threading.Event()
    release = threading.Event()

    def slow_site() -> None:  # at work the whole time, never putting
        with batches.working():
            busy.set()
            release.wait(10)

    slow = threading.Thread(target=slow_site)
    slow.start()
    busy.wait(10)
    try:
        sites = [items(n, 5) for n in range(5)]  # 25 items: a request's worth
        assert run_sites(batches, sites, threading.Barrier(5)) == {}
        assert sum(len(write) for write in Recorder.writes) == 25
    finally:
        release.set()
        slow.join(10)


def test_a_site_that_finishes_lets_the_waiting_ones_be_written():
    batches = SharedBatches(Recorder)
    waiting = threading.Event()
    done = threading.Event()

    def putting_site() -> None:
        with batches.working():
            waiting.set()
            batches.put(items(1))
            done.set()

    with batches.working():  # another site at work: the put waits for it
        thread = threading.Thread(target=putting_site)
        thread.start()
        waiting.wait(10)
        assert not done.wait(0.2) and Recorder.writes == []
    thread.join(10)
    assert done.is_set() and Recorder.writes == [items(1)]


def test_a_failed_write_fails_every_site_in_it_and_not_the_next():
    Recorder.fail = RuntimeError("the store refused")
    sites = [items(n) for n in range(3)]
    errors = run_sites(SharedBatches(Recorder), sites, threading.Barrier(3))
    assert sorted(errors) == [0, 1, 2]
    assert all("refused" in str(error) for error in errors.values())
    assert run_sites(SharedBatches(Recorder), sites, threading.Barrier(3)) == {}
    assert len(Recorder.writes) == 1


def test_nothing_to_put_writes_nothing():
    batches = SharedBatches(Recorder)
    with batches.working():
        batches.put([])
    assert Recorder.writes == []
