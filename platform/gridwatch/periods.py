"""Periods written the same way everywhere.

The five forms are ``2026``, ``2026Q3``, ``2026-07``, ``2026-W27`` and ``2026-07-04``.

A period is a span of local calendar days; :meth:`Period.bounds_utc` cuts it in the configured
time zone and returns the UTC instants that storage compares against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["year", "quarter", "month", "week", "day"]

_PATTERNS: tuple[tuple[PeriodKind, re.Pattern[str]], ...] = (
    ("year", re.compile(r"^(\d{4})$")),
    ("quarter", re.compile(r"^(\d{4})Q([1-4])$")),
    ("month", re.compile(r"^(\d{4})-(\d{2})$")),
    ("week", re.compile(r"^(\d{4})-W(\d{2})$")),
    ("day", re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")),
)


class PeriodError(ValueError):
    """A period string is not one of the accepted forms."""


@dataclass(frozen=True, order=True)
class Period:
    """A half-open span of local days ``[start, end)`` with its canonical label.

    Attributes
    ----------
    start, end : datetime.date
        First local day and the day after the last one.
    kind : {"year", "quarter", "month", "week", "day"}
    """

    start: date
    end: date
    kind: PeriodKind

    @property
    def label(self) -> str:
        """Return the canonical text form, e.g. ``2026Q3``."""
        s = self.start
        if self.kind == "year":
            return f"{s.year:04d}"
        if self.kind == "quarter":
            return f"{s.year:04d}Q{(s.month - 1) // 3 + 1}"
        if self.kind == "month":
            return f"{s.year:04d}-{s.month:02d}"
        if self.kind == "week":
            iso = s.isocalendar()
            return f"{iso.year:04d}-W{iso.week:02d}"
        return s.isoformat()

    def __str__(self) -> str:
        return self.label

    def bounds_utc(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """Return the UTC instants of local midnight at ``start`` and ``end``."""
        lo = datetime.combine(self.start, time.min, tzinfo=tz).astimezone(UTC)
        hi = datetime.combine(self.end, time.min, tzinfo=tz).astimezone(UTC)
        return lo, hi

    def contains(self, instant: datetime, tz: ZoneInfo) -> bool:
        """Return whether an aware instant falls in this period in zone ``tz``."""
        return self.start <= instant.astimezone(tz).date() < self.end

    def previous(self) -> Period:
        """Return the period of the same kind just before this one."""
        return period_of(self.start - timedelta(days=1), self.kind)

    def next(self) -> Period:
        """Return the period of the same kind just after this one."""
        return period_of(self.end, self.kind)

    def same_period_last_year(self) -> Period:
        """Return the corresponding period one year earlier (ISO week number for weeks)."""
        if self.kind == "week":
            iso = self.start.isocalendar()
            year = iso.year - 1
            week = min(iso.week, date(year, 12, 28).isocalendar().week)
            return parse_period(f"{year:04d}-W{week:02d}")
        s = self.start
        day = min(s.day, 28) if (s.month == 2 and s.day == 29) else s.day
        return period_of(date(s.year - 1, s.month, day), self.kind)


def parse_period(text: str) -> Period:
    """Parse ``2026``, ``2026Q3``, ``2026-07``, ``2026-W27`` or ``2026-07-04``.

    Raises
    ------
    PeriodError
        For anything else, including impossible dates such as ``2026-13`` or ``2026-W54``.
    """
    raw = str(text).strip().upper()
    for kind, pattern in _PATTERNS:
        m = pattern.match(raw)
        if not m:
            continue
        nums = [int(g) for g in m.groups()]
        try:
            if kind == "year":
                return Period(date(nums[0], 1, 1), date(nums[0] + 1, 1, 1), "year")
            if kind == "quarter":
                return period_of(date(nums[0], 3 * nums[1] - 2, 1), "quarter")
            if kind == "month":
                return period_of(date(nums[0], nums[1], 1), "month")
            if kind == "week":
                start = date.fromisocalendar(nums[0], nums[1], 1)
                return Period(start, start + timedelta(days=7), "week")
            return period_of(date(nums[0], nums[1], nums[2]), "day")
        except ValueError as exc:
            raise PeriodError(f"{text!r} is not a real {kind}") from exc
    raise PeriodError(
        f"{text!r} is not a period; write 2026, 2026Q3, 2026-07, 2026-W27 or 2026-07-04"
    )


def period_of(day: date | datetime, kind: PeriodKind, tz: ZoneInfo | None = None) -> Period:
    """Return the period of ``kind`` containing a local day (or an aware instant in ``tz``)."""
    if isinstance(day, datetime):
        if day.tzinfo is not None and tz is not None:
            day = day.astimezone(tz)
        day = day.date()
    if kind == "year":
        return Period(date(day.year, 1, 1), date(day.year + 1, 1, 1), "year")
    if kind == "quarter":
        first = 3 * ((day.month - 1) // 3) + 1
        end = date(day.year + 1, 1, 1) if first == 10 else date(day.year, first + 3, 1)
        return Period(date(day.year, first, 1), end, "quarter")
    if kind == "month":
        end = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
        return Period(date(day.year, day.month, 1), end, "month")
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return Period(start, start + timedelta(days=7), "week")
    if kind == "day":
        return Period(day, day + timedelta(days=1), "day")
    raise PeriodError(f"unknown period kind {kind!r}")


def periods_between(first: Period, last: Period) -> list[Period]:
    """Return every period of ``first``'s kind from ``first`` to ``last`` inclusive."""
    out = [first]
    while out[-1] < last and out[-1].kind == last.kind:
        out.append(out[-1].next())
    return out
