"""The cron schedule of spec.garbageCollection: fire times, day-field semantics, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from registry_operator import cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2026-03-01T12:00:30", "2026-03-01T12:01:00"),
        ("*/15 * * * *", "2026-03-01T12:01:00", "2026-03-01T12:15:00"),
        ("0 3 * * 0", "2026-03-01T12:00:00", "2026-03-08T03:00:00"),  # 2026-03-01 is a Sunday
        ("0 3 * * sun", "2026-03-01T02:59:00", "2026-03-01T03:00:00"),
        ("0 3 * * 7", "2026-03-01T03:00:00", "2026-03-08T03:00:00"),
        ("30 1 1,15 * *", "2026-03-02T00:00:00", "2026-03-15T01:30:00"),
        ("0 0 1 jan *", "2026-03-01T00:00:00", "2027-01-01T00:00:00"),
        ("0 12 * * mon-fri", "2026-03-06T12:00:00", "2026-03-09T12:00:00"),
        # Both day fields restricted: either matches (the 13th, or any Friday).
        ("0 0 13 * 5", "2026-03-01T00:00:00", "2026-03-06T00:00:00"),
        ("0 0 29 2 *", "2026-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("@daily", "2026-03-01T23:59:00", "2026-03-02T00:00:00"),
        ("@hourly", "2026-03-01T23:59:00", "2026-03-02T00:00:00"),
        ("5-10/5 * * * *", "2026-03-01T00:06:00", "2026-03-01T00:10:00"),
    ],
)
def test_next_fire_time(expression: str, after: str, expected: str) -> None:
    assert cron.parse(expression).next_after(at(after)) == at(expected)


@pytest.mark.parametrize(
    "expression", ["", "* * * *", "61 * * * *", "* 24 * * *", "*/0 * * * *", "5-1 * * * *", "x * * * *"]
)
def test_invalid_expressions_are_refused(expression: str) -> None:
    with pytest.raises(cron.CronError):
        cron.parse(expression)


def test_a_schedule_that_never_fires_is_refused() -> None:
    with pytest.raises(cron.CronError, match="never fires"):
        cron.parse("0 0 30 2 *").next_after(at("2026-03-01T00:00:00"))


def test_missed_runs_collapse_into_the_latest_and_stay_fast() -> None:
    schedule = cron.parse("* * * * *")
    started = time.perf_counter()
    latest = schedule.last_at_or_before(at("2026-03-01T00:00:00"), at("2026-03-08T00:00:30"))
    assert latest == at("2026-03-08T00:00:00")
    assert time.perf_counter() - started < 5
