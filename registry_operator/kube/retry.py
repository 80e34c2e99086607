"""Retry policy: when to try a call again, and how long to wait in between.

- `RetryBackoff` / `retry_on_conflict`: client-go's `wait.Backoff` and `retry.RetryOnConflict`, for
  read-modify-write loops that lost an optimistic-lock race (the caller re-reads each time).
- `TransportRetry`: how often one request is re-sent after it could not even connect (never after
  it may have reached the server: whether to repeat a sent request is the caller's decision).
  `NO_TRANSPORT_RETRY` is for calls that must finish within a deadline, such as lease renewals.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import urllib3

from registry_operator.kube.errors import Conflict

T = TypeVar("T")


@dataclass(frozen=True)
class RetryBackoff:
    """client-go wait.Backoff: `steps` attempts, sleeping duration·factor^i (+jitter) in between."""

    steps: int
    duration: float
    factor: float = 1.0
    jitter: float = 0.0
    cap: float | None = None

    def delays(self) -> Iterator[float]:
        duration = self.duration
        for _ in range(self.steps - 1):
            delay = duration * (1.0 + random.random() * self.jitter) if self.jitter > 0 else duration
            yield delay
            duration = duration * self.factor
            if self.cap is not None:
                duration = min(duration, self.cap)


DEFAULT_RETRY = RetryBackoff(steps=5, duration=0.010, factor=1.0, jitter=0.1)
DEFAULT_BACKOFF = RetryBackoff(steps=4, duration=0.010, factor=5.0, jitter=0.1)


def retry_on_conflict(
    fn: Callable[[], T],
    backoff: RetryBackoff = DEFAULT_RETRY,
    *,
    retriable: Callable[[Exception], bool] = lambda error: isinstance(error, Conflict),
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn` until it does not raise a retriable error, at most `backoff.steps` times.

    `fn` must re-read the object (GET) before mutating it; the last error is re-raised.
    """
    delays = backoff.delays()
    while True:
        try:
            return fn()
        except Exception as error:
            if not retriable(error):
                raise
            delay = next(delays, None)
            if delay is None:
                raise
            sleep(delay)


@dataclass(frozen=True)
class TransportRetry:
    """Re-send a request after a failed connect (refused, or no answer to SYN within the timeout).

    The delays are urllib3's `Retry(backoff_factor)` ones: 0, then factor·2^i. The client applies
    this itself, attempt by attempt, so that a deadline bounds the sum of all attempts.
    """

    connect_retries: int = 3
    backoff_factor: float = 0.1

    def delays(self) -> Iterator[float]:
        for attempt in range(self.connect_retries):
            yield self.backoff_factor * 2**attempt if attempt else 0.0

    @staticmethod
    def retriable(error: Exception) -> bool:
        # NewConnectionError (refused, unreachable) is a ConnectTimeoutError too. Read errors are
        # not: the request may have been received.
        return isinstance(error, urllib3.exceptions.ConnectTimeoutError)


DEFAULT_TRANSPORT_RETRY = TransportRetry()
NO_TRANSPORT_RETRY = TransportRetry(connect_retries=0)
