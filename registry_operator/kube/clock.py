"""Injectable time source, so queues, limiters and leader election are testable without sleeping.

All framework components take a `Clock`. `RealClock` is the production one; `FakeClock` only moves
when a test calls `step()`, and wakes every thread waiting on it when it does.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    def wall(self) -> datetime:
        """Timezone-aware UTC wall-clock time (for timestamps written to the API)."""
        ...

    def wait_until(self, cond: threading.Condition, deadline: float | None) -> None:
        """Wait on `cond` (whose lock the caller holds) until notified or `deadline` (clock time).

        May return early (spurious wake-up); callers re-check their state in a loop.
        """
        ...

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep `seconds` of clock time; return True early if `stop` gets set."""
        ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait_until(self, cond: threading.Condition, deadline: float | None) -> None:
        if deadline is None:
            cond.wait()
        else:
            cond.wait(max(0.0, deadline - time.monotonic()))

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        if stop is None:
            time.sleep(max(0.0, seconds))
            return False
        return stop.wait(max(0.0, seconds))


REAL_CLOCK = RealClock()


class FakeClock:
    """A clock that only advances through `step()`.

    Threads blocked in `wait_until` or `sleep` are woken on every step and re-check their deadline.
    A waiter registers itself before reading the time, so a concurrent `step()` can never be missed.
    """

    # A stop event cannot notify our condition, so fake sleeps poll it at this real-time interval.
    _STOP_POLL_SECONDS = 0.005

    def __init__(self, start: float = 1000.0, wall_start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._wall_start = wall_start or datetime(2030, 1, 1, tzinfo=UTC)
        self._start = start
        self._waiters: set[threading.Condition] = set()
        self._sleep_cond = threading.Condition()

    def now(self) -> float:
        with self._lock:
            return self._now

    def wall(self) -> datetime:
        with self._lock:
            return self._wall_start + timedelta(seconds=self._now - self._start)

    def step(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            waiters = list(self._waiters)
        for cond in [*waiters, self._sleep_cond]:
            with cond:
                cond.notify_all()

    def wait_until(self, cond: threading.Condition, deadline: float | None) -> None:
        with self._lock:
            self._waiters.add(cond)
            expired = deadline is not None and self._now >= deadline
        if not expired:
            cond.wait()

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        with self._sleep_cond:
            deadline = self.now() + seconds
            while self.now() < deadline:
                if stop is not None and stop.is_set():
                    return True
                self._sleep_cond.wait(self._STOP_POLL_SECONDS if stop is not None else None)
        return stop is not None and stop.is_set()

    @property
    def has_waiters(self) -> bool:
        with self._lock:
            return bool(self._waiters)
