"""Standard five-field cron expressions (as a Kubernetes CronJob reads them), evaluated in UTC; pure.

`minute hour day-of-month month day-of-week`, each `*`, `?` (= `*`), a number or name (`jan`, `mon`),
a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those; day-of-week 0 and 7 are Sunday.
When both day fields are restricted, a day matching either one matches (cron's rule). Macros:
`@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`, `@hourly`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES: Final = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTHS: Final = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_DAYS: Final = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# Every schedule fires within this horizon (Feb 29 on a given weekday: 28 years at most).
_SEARCH_DAYS: Final = 366 * 29


class CronError(ValueError):
    """An expression that is not a valid cron schedule."""


def _value(text: str, low: int, high: int, names: dict[str, int]) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit():
        raise CronError(f"{text!r} is not a number between {low} and {high}")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"{number} is out of range {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"step {step_text!r} in {part!r} is not a positive number")
            step = int(step_text)
        if spec in ("*", "?"):
            start, end = low, high
        elif "-" in spec:
            first, _, last = spec.partition("-")
            start, end = _value(first, low, high, names or {}), _value(last, low, high, names or {})
            if start > end:
                raise CronError(f"range {spec!r} runs backwards")
        else:
            start = _value(spec, low, high, names or {})
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    day_of_month_any: bool
    day_of_week_any: bool

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        text = MACROS.get(expression.strip().lower(), expression)
        fields = text.split()
        if len(fields) != 5:
            raise CronError(f"{expression!r} has {len(fields)} fields, not 5 (minute hour day month weekday)")
        minute, hour, dom, month, dow = fields
        weekdays = _field(dow, 0, 7, _DAYS)
        return cls(
            minutes=_field(minute, 0, 59),
            hours=_field(hour, 0, 23),
            days_of_month=_field(dom, 1, 31),
            months=_field(month, 1, 12, _MONTHS),
            days_of_week=frozenset(day % 7 for day in weekdays),
            day_of_month_any=dom in ("*", "?"),
            day_of_week_any=dow in ("*", "?"),
        )

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days_of_month
        in_week = (day.isoweekday() % 7) in self.days_of_week
        if self.day_of_month_any or self.day_of_week_any:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (UTC, whole minutes)."""
        start = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        minutes, hours = sorted(self.minutes), sorted(self.hours)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(day):
                first_day = day.date() == start.date()
                for hour in hours:
                    if first_day and hour < start.hour:
                        continue
                    for minute in minutes:
                        if first_day and hour == start.hour and minute < start.minute:
                            continue
                        return day.replace(hour=hour, minute=minute)
            day += timedelta(days=1)
        raise CronError("the schedule never fires (e.g. February 30)")

    def last_at_or_before(self, first: datetime, now: datetime, limit: int = 100_000) -> datetime:
        """The latest fire time in [`first`, `now`], given that `first` is one (missed runs collapse
        into one, as a CronJob's would)."""
        latest = first
        for _ in range(limit):
            following = self.next_after(latest)
            if following > now:
                return latest
            latest = following
        return latest


def parse(expression: str) -> Schedule:
    return Schedule.parse(expression)
