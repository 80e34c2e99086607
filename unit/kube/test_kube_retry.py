"""Retry policy: conflict retries (client-go's RetryOnConflict) and connect retries of one request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import urllib3

from registry_operator.kube.errors import Conflict, NotFound
from registry_operator.kube.retry import (
    DEFAULT_BACKOFF,
    DEFAULT_RETRY,
    DEFAULT_TRANSPORT_RETRY,
    NO_TRANSPORT_RETRY,
    TransportRetry,
    retry_on_conflict,
)


def test_retry_on_conflict_makes_five_attempts_with_10ms_steps() -> None:
    assert (DEFAULT_RETRY.steps, DEFAULT_RETRY.duration, DEFAULT_RETRY.factor, DEFAULT_RETRY.jitter) == (
        5,
        0.010,
        1.0,
        0.1,
    )
    assert (DEFAULT_BACKOFF.steps, DEFAULT_BACKOFF.factor) == (4, 5.0)
    calls: list[int] = []
    sleeps: list[float] = []

    def always_conflict() -> None:
        calls.append(1)
        raise Conflict(409, "Conflict", "the object has been modified")

    with pytest.raises(Conflict):
        retry_on_conflict(always_conflict, sleep=sleeps.append)
    assert len(calls) == 5
    assert len(sleeps) == 4
    assert all(0.010 <= s <= 0.011 for s in sleeps)


def test_retry_on_conflict_returns_after_a_success_and_does_not_retry_other_errors() -> None:
    attempts: Iterator[Exception | str] = iter(
        [Conflict(409, "Conflict", "x"), Conflict(409, "Conflict", "x"), "done"]
    )

    def flaky() -> str:
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retry_on_conflict(flaky, sleep=lambda _: None) == "done"
    calls: list[int] = []

    def not_found() -> None:
        calls.append(1)
        raise NotFound(404, "NotFound", "x")

    with pytest.raises(NotFound):
        retry_on_conflict(not_found, sleep=lambda _: None)
    assert len(calls) == 1


def test_default_backoff_grows_by_factor_five() -> None:
    delays = list(DEFAULT_BACKOFF.delays())
    assert len(delays) == 3
    assert delays[0] == pytest.approx(0.010, rel=0.11)
    assert delays[1] == pytest.approx(0.050, rel=0.11)
    assert delays[2] == pytest.approx(0.250, rel=0.11)


# --- connect retries ------------------------------------------------------------------------------
def test_transport_retry_waits_like_the_urllib3_retry_it_replaces() -> None:
    # The pool used to retry connects itself with Retry(connect=3, backoff_factor=0.1).
    old = urllib3.Retry(total=3, connect=3, read=0, status=0, other=0, redirect=0, backoff_factor=0.1)
    expected = []
    error = urllib3.exceptions.NewConnectionError(None, "refused")  # type: ignore[arg-type]
    while True:
        try:
            old = old.increment("GET", "/", error=error)
        except urllib3.exceptions.MaxRetryError:
            break
        expected.append(old.get_backoff_time())
    assert list(DEFAULT_TRANSPORT_RETRY.delays()) == pytest.approx(expected)
    assert expected == pytest.approx([0.0, 0.2, 0.4])
    assert list(NO_TRANSPORT_RETRY.delays()) == []


def test_only_failed_connects_are_retried() -> None:
    assert TransportRetry.retriable(urllib3.exceptions.NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    assert TransportRetry.retriable(urllib3.exceptions.ConnectTimeoutError("SYN not answered"))
    # Once the request may have reached the server, repeating it is the caller's decision.
    assert not TransportRetry.retriable(urllib3.exceptions.ReadTimeoutError(None, "/", "slow"))  # type: ignore[arg-type]
    assert not TransportRetry.retriable(urllib3.exceptions.ProtocolError("connection reset"))
