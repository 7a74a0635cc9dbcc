"""The gateway's shared threads: an elastic pool, serial lanes on it, bounded parallel maps."""

from __future__ import annotations

import threading
import time

import pytest

from edge_gateway.workers import SerialLane, WorkerPool, run_bounded
from tests.support import wait_until


class Concurrency:
    """Counts how many calls are inside ``during()`` at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def during(self, seconds: float) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self._lock:
            self.now -= 1


@pytest.fixture
def pool():
    made = WorkerPool(8, idle_timeout=0.2, name="test-worker")
    yield made
    made.shutdown()


def test_the_pool_starts_threads_on_demand_up_to_its_size_and_ends_idle_ones(pool):
    assert pool.threads == 0
    seen = Concurrency()
    futures = [pool.submit(seen.during, 0.1) for _ in range(20)]
    assert [f.result(5) for f in futures] == [None] * 20
    assert seen.peak == 8 and pool.peak_threads == 8
    wait_until(lambda: pool.threads == 0, what="idle threads ending after idle_timeout")
    assert pool.submit(lambda: 42).result(5) == 42  # and start again when needed


def test_a_shut_down_pool_finishes_its_queue_joins_its_threads_and_refuses_work():
    pool = WorkerPool(2, name="test-closing")
    done: list[int] = []
    for n in range(6):
        pool.submit(lambda n=n: (time.sleep(0.02), done.append(n)))
    pool.shutdown()
    assert sorted(done) == list(range(6))
    assert pool.threads == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("test-closing")]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_an_exception_reaches_the_future_and_the_thread_goes_on(pool):
    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        pool.submit(fail).result(5)
    assert pool.submit(lambda: "still working").result(5) == "still working"


def test_a_lane_runs_its_items_one_at_a_time_in_order(pool):
    ran: list[int] = []
    seen = Concurrency()

    def handle(item: int) -> None:
        seen.during(0.005)
        ran.append(item)

    lane = SerialLane(pool, handle)
    for n in range(30):
        assert lane.put(n)
    assert lane.idle.wait(5)
    assert ran == list(range(30)) and seen.peak == 1


def test_lanes_share_the_pool_and_borrow_no_thread_while_empty(pool):
    ran: dict[int, list[int]] = {n: [] for n in range(20)}
    seen = Concurrency()
    lanes = [SerialLane(pool, lambda item, n=n: (seen.during(0.02), ran[n].append(item)))
             for n in range(20)]
    for lane in lanes:
        for item in range(3):
            lane.put(item)
    assert all(lane.idle.wait(5) for lane in lanes)
    assert all(items == [0, 1, 2] for items in ran.values())
    assert pool.peak_threads == 8 and seen.peak == 8, "20 lanes, 8 threads"
    wait_until(lambda: pool.threads == 0, what="the idle threads ending")


def test_a_lane_is_busy_until_its_last_item_has_run(pool):
    release = threading.Event()
    lane = SerialLane(pool, lambda item: release.wait(5))
    lane.put("first")
    lane.put("second")
    assert not lane.idle.wait(0.1) and len(lane) == 1
    release.set()
    assert lane.idle.wait(5) and len(lane) == 0


def test_a_closed_lane_refuses_new_items_and_still_runs_those_queued(pool):
    release = threading.Event()
    ran: list[str] = []
    lane = SerialLane(pool, lambda item: (release.wait(5), ran.append(item)))
    lane.put("running")
    lane.put("queued")
    lane.close()
    assert lane.put("late") is False
    release.set()
    assert lane.idle.wait(5)
    assert ran == ["running", "queued"]


def test_a_failing_item_does_not_stop_the_lane(pool):
    ran: list[int] = []

    def handle(item: int) -> None:
        if item == 1:
            raise RuntimeError("a bug")
        ran.append(item)

    lane = SerialLane(pool, handle)
    for n in range(3):
        lane.put(n)
    assert lane.idle.wait(5)
    assert ran == [0, 2]


def test_run_bounded_keeps_the_order_and_the_limit(pool):
    seen = Concurrency()

    def square(n: int) -> int:
        seen.during(0.02 if n % 2 else 0.001)
        return n * n

    assert run_bounded(pool, square, range(12), limit=3) == [n * n for n in range(12)]
    assert seen.peak == 3


def test_run_bounded_on_a_full_pool_runs_on_the_caller_without_deadlock():
    with WorkerPool(1, name="test-single") as single:
        # The only thread runs the outer call; its helpers can never start.
        outer = single.submit(run_bounded, single, lambda n: n + 1, [1, 2, 3, 4], 4)
        assert outer.result(5) == [2, 3, 4, 5]


def test_run_bounded_raises_the_first_failure_after_every_item_ran(pool):
    ran: list[int] = []

    def work(n: int) -> int:
        ran.append(n)
        if n in (2, 5):
            raise ValueError(f"item {n}")
        return n

    with pytest.raises(ValueError, match="item 2"):
        run_bounded(pool, work, range(8), limit=3)
    assert sorted(ran) == list(range(8))


def test_run_bounded_of_nothing_is_nothing(pool):
    assert run_bounded(pool, lambda n: n, [], limit=4) == []
    assert pool.threads == 0


def test_a_thread_that_cannot_start_fails_the_submit_and_the_pool_stays_usable(pool,
                                                                             monkeypatch):
    def refuse(self) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        with pytest.raises(RuntimeError, match="can't start"):
            pool.submit(lambda: None)
    assert pool.threads == 0
    assert pool.submit(lambda: "ran").result(5) == "ran"
