"""Go duration parsing/formatting: the syntax of account TTLs and OPERATOR_SECRET_TTL."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry_operator.goduration import (
    GO_DURATION_PATTERN,
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    DurationError,
    format_duration,
    format_duration_nanoseconds,
    parse_duration,
    parse_duration_nanoseconds,
)


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("24h", 24 * HOUR),
        ("24h0m0s", 24 * HOUR),
        ("1h30m", HOUR + 30 * MINUTE),
        ("12h30m", 12 * HOUR + 30 * MINUTE),
        ("90s", 90 * SECOND),
        ("500ms", 500 * MILLISECOND),
        ("2h45m30.5s", 2 * HOUR + 45 * MINUTE + 30 * SECOND + 500 * MILLISECOND),
        ("1.5h", HOUR + 30 * MINUTE),
        (".5s", 500 * MILLISECOND),
        ("1.s", SECOND),
        ("100ns", 100),
        ("3us", 3 * MICROSECOND),
        ("3\u00b5s", 3 * MICROSECOND),  # micro sign
        ("3\u03bcs", 3 * MICROSECOND),  # Greek mu
        ("1m1m", 2 * MINUTE),  # Go allows repeated units
        ("0", 0),
        ("-1h", -HOUR),
        ("+5m", 5 * MINUTE),
    ],
)
def test_parses_go_durations(text: str, nanoseconds: int) -> None:
    assert parse_duration_nanoseconds(text) == nanoseconds


@pytest.mark.parametrize(
    "text", ["", "banana", "1", "1d", "h", ".s", "1.2.3s", "-", "1h 30m", "0x10s", "5 s"]
)
def test_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration_nanoseconds(text)


def test_rejects_overflow_like_go() -> None:
    with pytest.raises(DurationError, match="out of range"):
        parse_duration_nanoseconds("2562048h")  # > 2^63 ns


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (MICROSECOND, "1\u00b5s"),
        (1500 * MICROSECOND, "1.5ms"),
        (500 * MILLISECOND, "500ms"),
        (1500 * MILLISECOND, "1.5s"),
        (90 * SECOND, "1m30s"),
        (HOUR, "1h0m0s"),
        (24 * HOUR, "24h0m0s"),
        (2 * HOUR + 45 * MINUTE + 30 * SECOND + 500 * MILLISECOND, "2h45m30.5s"),
        (-HOUR, "-1h0m0s"),
    ],
)
def test_formats_like_go(nanoseconds: int, text: str) -> None:
    assert format_duration_nanoseconds(nanoseconds) == text


def test_timedelta_api() -> None:
    assert parse_duration("24h") == timedelta(hours=24)
    assert parse_duration("1500ns") == timedelta(microseconds=1)  # truncated to timedelta resolution
    assert parse_duration("-1500ns") == timedelta(microseconds=-1)
    assert format_duration(timedelta(hours=12, minutes=30)) == "12h30m0s"


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_format_then_parse_round_trips(nanoseconds: int) -> None:
    assert parse_duration_nanoseconds(format_duration_nanoseconds(nanoseconds)) == nanoseconds


@given(st.integers(min_value=1, max_value=2**63 - 1))
def test_every_positive_formatted_duration_passes_the_crd_pattern(nanoseconds: int) -> None:
    # The operator writes format_duration(OPERATOR_SECRET_TTL) into accounts' spec.ttl.
    assert re.match(GO_DURATION_PATTERN, format_duration_nanoseconds(nanoseconds))


@given(st.text(alphabet="0123456789.hmsun\u00b5", max_size=12))
def test_crd_pattern_accepts_only_parsable_durations(text: str) -> None:
    """What the pattern lets through parses, or is past Go's range, which the CRD's CEL rule refuses
    (`duration(self)`, e2e/api/test_api_crds.py: ttl-too-long)."""
    if re.match(GO_DURATION_PATTERN, text):
        try:
            assert parse_duration_nanoseconds(text) >= 0
        except DurationError as error:
            assert str(error).endswith("out of range"), error


# Cases of the account TTLs the authn sidecar reads (accounts.account_expiry).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("24h0m0s", timedelta(hours=24)),
        ("1.5h", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("300ms", timedelta(milliseconds=300)),
        ("2us", timedelta(microseconds=2)),
        ("2µs", timedelta(microseconds=2)),
        ("+5s", timedelta(seconds=5)),
        ("-1h", timedelta(hours=-1)),
        ("0", timedelta(0)),
        (".5s", timedelta(milliseconds=500)),
    ],
)
def test_go_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "-", "h", "24", "1d", "1h 2m", "abc", "1h-2m", "1.h.5"])
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
