"""Rate-limited, delaying work queue with client-go semantics.

Guarantees (client-go `util/workqueue`):
- Dedup: an item that is already waiting is not queued twice.
- An item is never handed to two workers at once: while it is being processed (between `get` and
  `done`) a new `add` only marks it dirty, and `done` queues it again — exactly one more pass, no
  matter how many adds happened meanwhile.
- `add_after` keeps the earliest ready time per item; ready items are moved to the queue by `get`
  itself, which sleeps on a condition variable until the next ready time (no polling, no missed
  timers).
- `add_rate_limited` = `add_after(item, limiter.when(item))`; `forget` resets the item's backoff.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from registry_operator.kube import metrics
from registry_operator.kube.clock import REAL_CLOCK, Clock

T = TypeVar("T", bound=Hashable)


# --- rate limiters ---------------------------------------------------------------------------------
class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds to wait before the item may be processed again; records one more failure."""
        ...

    def forget(self, item: Hashable) -> None: ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    """base·2^failures per item, capped at max_delay (client-go: 5 ms .. 1000 s)."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def when(self, item: Hashable) -> float:
        with self._lock:
            exponent = self._failures.get(item, 0)
            self._failures[item] = exponent + 1
        # 2**1100 would overflow a float; the cap is hit long before that anyway.
        if exponent > 64:
            return self._max
        return min(self._base * 2.0**exponent, self._max)

    def forget(self, item: Hashable) -> None:
        with self._lock:
            self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        with self._lock:
            return self._failures.get(item, 0)


class BucketRateLimiter:
    """Overall token bucket (qps, burst); `when` reserves a token and returns the wait for it."""

    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock = REAL_CLOCK) -> None:
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock.now()
        self._lock = threading.Lock()

    def when(self, item: Hashable) -> float:
        with self._lock:
            now = self._clock.now()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The longest delay of several limiters; failure counts come from the largest one."""

    def __init__(self, *limiters: RateLimiter) -> None:
        self._limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self._limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(clock: Clock = REAL_CLOCK) -> RateLimiter:
    """client-go's DefaultControllerRateLimiter: max(5ms·2^n capped at 1000 s, 10 qps/burst 100)."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock)
    )


# --- queue -----------------------------------------------------------------------------------------
class WorkQueue(Generic[T]):
    """Deduplicating, delaying, rate-limited work queue. All methods are thread-safe.

    Worker loop::

        while (item := queue.get()) is not None:
            try:
                ...
            finally:
                queue.done(item)

    `get` returns None once the queue is shut down and empty (or after `timeout`).
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock = REAL_CLOCK,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        self.name = name
        self._clock = clock
        self._rate_limiter = rate_limiter or default_controller_rate_limiter(clock)
        self._cond = threading.Condition()
        self._queue: deque[T] = deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        # Delayed adds: a heap of (ready_at, sequence, item); `_ready_at` holds each item's earliest
        # time, so entries superseded by an earlier add_after are skipped when they surface.
        self._waiting: list[tuple[float, int, T]] = []
        self._ready_at: dict[T, float] = {}
        self._sequence = itertools.count()
        self._shutting_down = False
        # Metrics bookkeeping.
        self._added_at: dict[T, float] = {}
        self._started_at: dict[T, float] = {}
        labels = {"name": name, "controller": name}
        self._m_depth = metrics.WORKQUEUE_DEPTH.labels(priority="", **labels)
        self._m_adds = metrics.WORKQUEUE_ADDS.labels(**labels)
        self._m_queue_duration = metrics.WORKQUEUE_QUEUE_DURATION.labels(**labels)
        self._m_work_duration = metrics.WORKQUEUE_WORK_DURATION.labels(**labels)
        self._m_retries = metrics.WORKQUEUE_RETRIES.labels(**labels)
        self._m_depth.set(0)
        # Computed at scrape time instead of refreshed every 500 ms; weak refs so a dropped queue
        # can be garbage-collected.
        ref = weakref.ref(self)
        metrics.WORKQUEUE_UNFINISHED_WORK.labels(**labels).set_function(
            lambda: q.unfinished_work_seconds() if (q := ref()) is not None else 0.0
        )
        metrics.WORKQUEUE_LONGEST_RUNNING_PROCESSOR.labels(**labels).set_function(
            lambda: q.longest_running_processor_seconds() if (q := ref()) is not None else 0.0
        )

    # --- adding ------------------------------------------------------------------------------
    def add(self, item: T) -> None:
        with self._cond:
            self._add_locked(item)

    def _add_locked(self, item: T) -> None:
        if self._shutting_down or item in self._dirty:
            return
        self._m_adds.inc()
        self._dirty.add(item)
        self._added_at.setdefault(item, self._clock.now())
        if item in self._processing:
            return  # re-queued by done()
        self._queue.append(item)
        self._m_depth.inc()
        self._cond.notify()

    def add_after(self, item: T, delay: float) -> None:
        """Add `item` once `delay` seconds have passed; an earlier pending time wins."""
        with self._cond:
            if self._shutting_down:
                return
            if delay <= 0:
                self._add_locked(item)
                return
            self._m_retries.inc()
            ready_at = self._clock.now() + delay
            current = self._ready_at.get(item)
            if current is not None and current <= ready_at:
                return
            self._ready_at[item] = ready_at
            heapq.heappush(self._waiting, (ready_at, next(self._sequence), item))
            # Wake a waiting get() so it re-computes its deadline.
            self._cond.notify()

    def add_rate_limited(self, item: T) -> None:
        self.add_after(item, self._rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """Reset the item's failure count (call `done` as well)."""
        self._rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._rate_limiter.num_requeues(item)

    # --- processing ----------------------------------------------------------------------------
    def _promote_ready_locked(self) -> float | None:
        """Move due delayed items to the queue; return the next pending ready time, if any."""
        now = self._clock.now()
        while self._waiting:
            ready_at, _, item = self._waiting[0]
            if self._ready_at.get(item) != ready_at:
                heapq.heappop(self._waiting)  # superseded by an earlier add_after
                continue
            if ready_at > now:
                return ready_at
            heapq.heappop(self._waiting)
            del self._ready_at[item]
            self._add_locked(item)
        return None

    def get(self, timeout: float | None = None) -> T | None:
        """Block until an item is ready and hand it out; None on shutdown or after `timeout`.

        `timeout` is measured on the queue's clock (0 = don't block).
        """
        with self._cond:
            give_up_at = None if timeout is None else self._clock.now() + timeout
            while True:
                next_ready = None if self._shutting_down else self._promote_ready_locked()
                if self._queue:
                    item = self._queue.popleft()
                    self._m_depth.dec()
                    self._dirty.discard(item)
                    self._processing.add(item)
                    now = self._clock.now()
                    added_at = self._added_at.pop(item, None)
                    if added_at is not None:
                        self._m_queue_duration.observe(max(0.0, now - added_at))
                    self._started_at[item] = now
                    return item
                if self._shutting_down:
                    return None
                if give_up_at is not None and self._clock.now() >= give_up_at:
                    return None
                deadlines = [d for d in (next_ready, give_up_at) if d is not None]
                self._clock.wait_until(self._cond, min(deadlines) if deadlines else None)

    def done(self, item: T) -> None:
        """Mark `item` finished; if it was added meanwhile it goes back into the queue."""
        with self._cond:
            self._processing.discard(item)
            started_at = self._started_at.pop(item, None)
            if started_at is not None:
                self._m_work_duration.observe(max(0.0, self._clock.now() - started_at))
            if item in self._dirty:
                self._queue.append(item)
                self._m_depth.inc()
                self._cond.notify()
            elif not self._processing:
                self._cond.notify_all()  # shutdown_with_drain may be waiting

    # --- shutdown ------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Refuse new adds, drop pending delayed adds; `get` drains the queue, then returns None."""
        with self._cond:
            self._shutting_down = True
            self._waiting.clear()
            self._ready_at.clear()
            self._cond.notify_all()

    def shutdown_with_drain(self, timeout: float | None = None) -> bool:
        """`shutdown`, then wait (real seconds) until every handed-out item is `done`.

        Returns False if items were still being processed when `timeout` expired.
        """
        self.shutdown()
        with self._cond:
            return self._cond.wait_for(lambda: not self._processing, timeout)

    @property
    def shutting_down(self) -> bool:
        with self._cond:
            return self._shutting_down

    # --- introspection -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Items ready to be handed out (client-go `Len`)."""
        with self._cond:
            return len(self._queue)

    def pending_delayed(self) -> int:
        with self._cond:
            return len(self._ready_at)

    def next_ready_in(self) -> float | None:
        """Seconds until the earliest delayed item is due (for tests and diagnostics)."""
        with self._cond:
            if not self._ready_at:
                return None
            return min(self._ready_at.values()) - self._clock.now()

    def processing(self) -> set[T]:
        with self._cond:
            return set(self._processing)

    def unfinished_work_seconds(self) -> float:
        with self._cond:
            now = self._clock.now()
            return sum(now - started for started in self._started_at.values())

    def longest_running_processor_seconds(self) -> float:
        with self._cond:
            now = self._clock.now()
            return max((now - started for started in self._started_at.values()), default=0.0)
