"""Work queue and rate limiter semantics (client-go util/workqueue), on a fake clock."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from registry_operator.kube import metrics
from registry_operator.kube.clock import FakeClock, RealClock
from registry_operator.kube.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    WorkQueue,
    default_controller_rate_limiter,
)

_names = itertools.count()


def new_queue(clock: FakeClock | None = None) -> WorkQueue[str]:
    return WorkQueue(f"test-queue-{next(_names)}", clock=clock or FakeClock())


def queue_metric(queue: WorkQueue[str], metric: str, **extra: str) -> float:
    return metrics.sample_value(metric, {"name": queue.name, "controller": queue.name, **extra})


# --- basic queue semantics -------------------------------------------------------------------------
def test_add_deduplicates_waiting_items_and_counts_only_real_adds() -> None:
    queue = new_queue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert queue_metric(queue, "workqueue_adds_total") == 2
    assert queue_metric(queue, "workqueue_depth", priority="") == 2
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["a", "b", None]
    assert queue_metric(queue, "workqueue_depth", priority="") == 0


def test_item_being_processed_is_not_handed_out_again_until_done() -> None:
    queue = new_queue()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.add("a")
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "a dirty item in processing must not be queued"
    assert queue.get(0) is None
    queue.done("a")
    assert queue.get(0) == "a", "adds during processing cause one more pass"
    queue.done("a")
    assert queue.get(0) is None, "... and exactly one"


def test_done_without_new_add_does_not_requeue() -> None:
    queue = new_queue()
    queue.add("a")
    assert queue.get(0) == "a"
    queue.done("a")
    assert len(queue) == 0
    assert queue.processing() == set()


def test_fifo_order() -> None:
    queue = new_queue()
    for item in "cab":
        queue.add(item)
    assert [queue.get(0) for _ in range(3)] == ["c", "a", "b"]


# --- delayed adds ------------------------------------------------------------------------------------
def test_add_after_becomes_ready_only_when_the_clock_reaches_it() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after("a", 10)
    assert queue.get(0) is None
    clock.step(9.999)
    assert queue.get(0) is None
    clock.step(0.001)
    assert queue.get(0) == "a"
    assert queue_metric(queue, "workqueue_retries_total") == 1


def test_add_after_earliest_time_wins() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after("a", 10)
    queue.add_after("a", 5)
    queue.add_after("a", 30)
    assert queue.next_ready_in() == pytest.approx(5)
    clock.step(5)
    assert queue.get(0) == "a"
    queue.done("a")
    clock.step(100)
    assert queue.get(0) is None, "superseded later times must not fire again"
    assert queue.pending_delayed() == 0


def test_add_after_zero_or_negative_is_an_immediate_add() -> None:
    queue = new_queue()
    queue.add_after("a", 0)
    queue.add_after("b", -1)
    assert [queue.get(0), queue.get(0)] == ["a", "b"]


def test_delayed_items_come_out_in_ready_order() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after("late", 3)
    queue.add_after("early", 1)
    queue.add_after("middle", 2)
    clock.step(3)
    assert [queue.get(0), queue.get(0), queue.get(0)] == ["early", "middle", "late"]


def test_blocked_get_wakes_when_the_clock_reaches_a_delayed_item() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after("a", 60)
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    clock.step(30)
    assert got == []
    clock.step(30)
    worker.join(5)
    assert got == ["a"]


def test_blocked_get_wakes_on_a_new_earlier_delayed_add() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_after("late", 1000)
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.add_after("soon", 1)
    clock.step(1)
    worker.join(5)
    assert got == ["soon"]


def test_real_clock_delayed_add_is_delivered_without_polling() -> None:
    queue: WorkQueue[str] = WorkQueue(f"test-queue-{next(_names)}", clock=RealClock())
    queue.add_after("a", 0.05)
    assert queue.get(timeout=5) == "a"


# --- rate limiting -----------------------------------------------------------------------------------
def test_item_exponential_limiter_doubles_from_5ms_and_caps_at_1000s() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("x") for _ in range(22)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[17] == pytest.approx(655.36)
    assert all(delay == 1000.0 for delay in delays[18:])  # n >= 18: the 19th failure on
    assert limiter.num_requeues("x") == 22
    assert limiter.when("other") == 0.005, "failures are counted per item"
    limiter.forget("x")
    assert limiter.num_requeues("x") == 0
    assert limiter.when("x") == 0.005


def test_item_exponential_limiter_survives_huge_failure_counts() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    for _ in range(2000):
        delay = limiter.when("x")
    assert delay == 1000.0


def test_bucket_limiter_allows_a_burst_of_100_then_10_per_second() -> None:
    clock = FakeClock()
    bucket = BucketRateLimiter(10, 100, clock)
    assert [bucket.when(i) for i in range(100)] == [0.0] * 100
    assert bucket.when("101st") == pytest.approx(0.1)
    assert bucket.when("102nd") == pytest.approx(0.2)
    clock.step(10)  # refills, but never above the burst
    assert [bucket.when(i) for i in range(98)] == [0.0] * 98
    assert bucket.when("over") == pytest.approx(0.1)


def test_default_controller_limiter_is_the_max_of_both() -> None:
    clock = FakeClock()
    limiter = default_controller_rate_limiter(clock)
    assert isinstance(limiter, MaxOfRateLimiter)
    assert [limiter.when(f"item-{i}") for i in range(100)] == [0.005] * 100
    # The bucket is empty now: a new item waits for a token although its own backoff is 5 ms.
    assert limiter.when("item-100") == pytest.approx(0.1)
    clock.step(1000)
    for _ in range(17):
        limiter.when("hot")
    assert limiter.when("hot") == pytest.approx(655.36)
    assert limiter.num_requeues("hot") == 18


def test_add_rate_limited_uses_the_limiter_and_forget_resets_it() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add_rate_limited("a")
    assert queue.num_requeues("a") == 1
    assert queue.next_ready_in() == pytest.approx(0.005)
    clock.step(0.005)
    assert queue.get(0) == "a"
    queue.add_rate_limited("a")
    queue.done("a")
    assert queue.next_ready_in() == pytest.approx(0.01)
    queue.forget("a")
    assert queue.num_requeues("a") == 0


# --- shutdown ---------------------------------------------------------------------------------------
def test_shutdown_drains_queued_items_then_returns_none_and_ignores_adds() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add("a")
    queue.add_after("later", 1)
    queue.shutdown()
    queue.add("b")
    clock.step(5)
    assert queue.get() == "a"
    assert queue.get() is None
    assert queue.shutting_down


def test_shutdown_wakes_blocked_getters() -> None:
    queue = new_queue()
    results: list[str | None] = []
    workers = [threading.Thread(target=lambda: results.append(queue.get())) for _ in range(3)]
    for worker in workers:
        worker.start()
    queue.shutdown()
    for worker in workers:
        worker.join(5)
    assert results == [None, None, None]


def test_shutdown_with_drain_waits_for_in_flight_items() -> None:
    queue = new_queue()
    queue.add("a")
    assert queue.get(0) == "a"
    drained: list[bool] = []
    waiter = threading.Thread(target=lambda: drained.append(queue.shutdown_with_drain(10)))
    waiter.start()
    waiter.join(0.05)
    assert waiter.is_alive(), "must wait while 'a' is being processed"
    queue.done("a")
    waiter.join(5)
    assert drained == [True]


def test_shutdown_with_drain_reports_a_timeout() -> None:
    queue = new_queue()
    queue.add("a")
    queue.get(0)
    assert queue.shutdown_with_drain(0.01) is False


# --- metrics ----------------------------------------------------------------------------------------
def test_duration_and_in_flight_metrics_use_the_queue_clock() -> None:
    clock = FakeClock()
    queue = new_queue(clock)
    queue.add("a")
    clock.step(2)
    queue.get(0)
    assert queue_metric(queue, "workqueue_queue_duration_seconds_sum") == pytest.approx(2)
    clock.step(3)
    assert queue_metric(queue, "workqueue_unfinished_work_seconds") == pytest.approx(3)
    assert queue_metric(queue, "workqueue_longest_running_processor_seconds") == pytest.approx(3)
    queue.done("a")
    assert queue_metric(queue, "workqueue_work_duration_seconds_sum") == pytest.approx(3)
    assert queue_metric(queue, "workqueue_work_duration_seconds_count") == 1
    assert queue_metric(queue, "workqueue_unfinished_work_seconds") == 0


# --- properties -------------------------------------------------------------------------------------
class WorkQueueModel(RuleBasedStateMachine):
    """Single-threaded model check: arbitrary interleavings of add / add_after / get / done / time."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.queue = new_queue(self.clock)
        self.held: set[str] = set()  # handed out, not yet done
        self.owed: set[str] = set()  # added since last handed out: must be delivered (once)
        self.delayed: dict[str, float] = {}  # item -> earliest ready time (clock)

    @rule(item=st.sampled_from("abcde"))
    def add(self, item: str) -> None:
        self.queue.add(item)
        self.owed.add(item)

    @rule(item=st.sampled_from("abcde"), delay=st.floats(0.001, 10))
    def add_after(self, item: str, delay: float) -> None:
        self.queue.add_after(item, delay)
        ready = self.clock.now() + delay
        self.delayed[item] = min(ready, self.delayed.get(item, ready))

    @rule(seconds=st.floats(0, 5))
    def step(self, seconds: float) -> None:
        self.clock.step(seconds)

    @rule()
    def get(self) -> None:
        now = self.clock.now()
        for item, ready in list(self.delayed.items()):
            if ready <= now:
                self.owed.add(item)
                del self.delayed[item]
        got = self.queue.get(0)
        deliverable = self.owed - self.held
        if got is None:
            assert not deliverable, f"{deliverable} were owed but not handed out"
            return
        item = got
        assert item not in self.held, f"{item} handed out twice concurrently"
        assert item in deliverable
        self.held.add(item)
        self.owed.discard(item)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(sorted(self.held)))
        self.queue.done(item)
        self.held.discard(item)

    @invariant()
    def queue_length_matches_model(self) -> None:
        # Only owed items that are not held can be in the ready queue, each at most once.
        assert len(self.queue) <= len(self.owed - self.held)
        assert self.queue.processing() == self.held


TestWorkQueueModel = WorkQueueModel.TestCase
TestWorkQueueModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


def test_concurrent_workers_never_share_a_key_and_every_add_is_processed() -> None:
    """4 workers, 4 producers, real threads: per-key exclusivity and no lost adds."""
    queue: WorkQueue[str] = WorkQueue(f"test-queue-{next(_names)}", clock=RealClock())
    keys = [f"k{i}" for i in range(8)]
    lock = threading.Lock()
    in_flight: Counter[str] = Counter()
    violations: list[str] = []
    # For each key: the sequence number of the last add and of the add last covered by a pass.
    last_add: dict[str, int] = dict.fromkeys(keys, 0)
    covered: dict[str, int] = dict.fromkeys(keys, 0)
    sequence = itertools.count(1)
    passes: Counter[str] = Counter()

    def produce(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(500):
            key = rnd.choice(keys)
            with lock:
                last_add[key] = next(sequence)
            queue.add(key)

    def work() -> None:
        while (key := queue.get()) is not None:
            with lock:
                in_flight[key] += 1
                if in_flight[key] > 1:
                    violations.append(key)
                # Everything added before this pass started is covered by it.
                covered[key] = last_add[key]
                passes[key] += 1
            time.sleep(0)  # yield the GIL so overlapping passes would actually overlap
            with lock:
                in_flight[key] -= 1
            queue.done(key)

    workers = [threading.Thread(target=work) for _ in range(4)]
    producers = [threading.Thread(target=produce, args=(seed,)) for seed in range(4)]
    for thread in workers + producers:
        thread.start()
    for thread in producers:
        thread.join(30)
    assert queue.shutdown_with_drain(30)
    for thread in workers:
        thread.join(30)
    assert violations == []
    assert covered == last_add, "an add was never followed by a processing pass"
    assert sum(passes.values()) <= 2000
