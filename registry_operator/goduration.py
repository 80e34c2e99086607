"""Go `time.Duration` text: parsing (`time.ParseDuration`) and formatting (`Duration.String`).

Account TTLs (`spec.ttl`) and `OPERATOR_SECRET_TTL` use Go's syntax because the original operator,
its users and `metav1.Duration` do: `24h`, `12h30m`, `90s`, `500ms`, `2h45m30.5s`. The operator
writes TTLs the way Go formats them (`24h0m0s`), so objects look the same as the original's.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

NANOSECOND: Final = 1
MICROSECOND: Final = 1000 * NANOSECOND
MILLISECOND: Final = 1000 * MICROSECOND
SECOND: Final = 1000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

# Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC) for microseconds.
_UNITS: Final = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,
    "\u03bcs": MICROSECOND,
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_MAX_NANOSECONDS: Final = 2**63 - 1  # Go's Duration is an int64 of nanoseconds

# A non-negative Go duration with at least one unit: what the CRDs accept for a TTL. (Go also parses
# a sign and the bare "0"; neither makes sense for a TTL.)
GO_DURATION_PATTERN: Final = r"^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$"

_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


class DurationError(ValueError):
    """The text is not a Go duration."""


def parse_duration_nanoseconds(text: str) -> int:
    """Parse like Go's `time.ParseDuration`; returns nanoseconds (may be negative)."""
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise DurationError(f"invalid duration {text!r}")
    total = 0
    while rest:
        match = _COMPONENT.match(rest)
        # The regex always matches (all parts optional); the checks below give Go's error cases.
        assert match is not None
        whole, fraction, unit = match.group(1), match.group(2), match.group(3)
        if not whole and not fraction:
            raise DurationError(f"invalid duration {text!r}")
        if not unit:
            raise DurationError(f"missing unit in duration {text!r}")
        if unit not in _UNITS:
            raise DurationError(f"unknown unit {unit!r} in duration {text!r}")
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if fraction:
            # Truncate below one nanosecond, as Go does.
            total += int(fraction) * scale // 10 ** len(fraction)
        if total > _MAX_NANOSECONDS:
            raise DurationError(f"invalid duration {text!r}: out of range")
        rest = rest[match.end() :]
    return -total if negative else total


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration into a timedelta (whose resolution is one microsecond)."""
    nanoseconds = parse_duration_nanoseconds(text)
    # Truncate towards zero below one microsecond (timedelta's resolution), keeping the sign.
    micros = abs(nanoseconds) // MICROSECOND
    return timedelta(microseconds=-micros if nanoseconds < 0 else micros)


def _format_fraction(value: int, digits: int) -> str:
    """`value` scaled by 10**-digits, without trailing zeros (Go's fmtFrac)."""
    whole, fraction = divmod(value, 10**digits)
    fraction_text = f"{fraction:0{digits}d}".rstrip("0")
    return f"{whole}.{fraction_text}" if fraction_text else str(whole)


def format_duration_nanoseconds(nanoseconds: int) -> str:
    """Format like Go's `Duration.String`: `24h0m0s`, `1m30s`, `1.5s`, `500ms`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < SECOND:
        if value < MICROSECOND:
            return f"{sign}{value}ns"
        if value < MILLISECOND:
            return f"{sign}{_format_fraction(value, 3)}\u00b5s"
        return f"{sign}{_format_fraction(value, 6)}ms"
    hours, value = divmod(value, HOUR)
    minutes, value = divmod(value, MINUTE)
    seconds = _format_fraction(value, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def format_duration(duration: timedelta) -> str:
    """Format a timedelta like Go's `Duration.String`."""
    return format_duration_nanoseconds((duration // timedelta(microseconds=1)) * MICROSECOND)
