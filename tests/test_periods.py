"""Periods: the five written forms, local-day bounds in UTC, ISO weeks, navigation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridwatch.periods import (
    Period,
    PeriodError,
    PeriodKind,
    parse_period,
    period_of,
    periods_between,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
KINDS = ("year", "quarter", "month", "week", "day")


@pytest.mark.parametrize(
    ("text", "kind", "start", "end"),
    [
        ("2026", "year", date(2026, 1, 1), date(2027, 1, 1)),
        ("2026Q3", "quarter", date(2026, 7, 1), date(2026, 10, 1)),
        ("2026Q4", "quarter", date(2026, 10, 1), date(2027, 1, 1)),
        ("2026-07", "month", date(2026, 7, 1), date(2026, 8, 1)),
        ("2026-12", "month", date(2026, 12, 1), date(2027, 1, 1)),
        ("2026-W27", "week", date(2026, 6, 29), date(2026, 7, 6)),
        ("2026-07-04", "day", date(2026, 7, 4), date(2026, 7, 5)),
        ("2024-02-29", "day", date(2024, 2, 29), date(2024, 3, 1)),
    ],
)
def test_parse_and_format_round_trip(text, kind, start, end):
    period = parse_period(text)
    assert (period.kind, period.start, period.end) == (kind, start, end)
    assert period.label == text
    assert str(period) == text
    assert parse_period(period.label) == period


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("2026q3", "2026Q3"), (" 2026-w05 ", "2026-W05"), ("2026-07-04\n", "2026-07-04")],
)
def test_parse_accepts_lower_case_and_surrounding_space(text, canonical):
    assert parse_period(text).label == canonical


@pytest.mark.parametrize(
    "text",
    [
        "2026Q5",
        "2026Q0",
        "2026-13",
        "2026-00",
        "2026-W54",
        "2026-W00",
        "2025-W53",  # 2025 has only 52 ISO weeks
        "2026-02-30",
        "2025-02-29",
        "26Q1",
        "2026-7",
        "2026/07",
        "",
        "Q3 2026",
    ],
)
def test_invalid_periods_are_rejected(text):
    with pytest.raises(PeriodError):
        parse_period(text)


def test_error_message_shows_the_accepted_forms():
    with pytest.raises(PeriodError, match="2026Q3"):
        parse_period("last month")


def test_bounds_utc_cut_at_shanghai_midnight():
    lo, hi = parse_period("2026Q3").bounds_utc(SHANGHAI)
    assert lo == datetime(2026, 6, 30, 16, 0, tzinfo=UTC)
    assert hi == datetime(2026, 9, 30, 16, 0, tzinfo=UTC)
    assert lo.utcoffset() == timedelta(0)
    assert hi.utcoffset() == timedelta(0)


def test_bounds_utc_depend_on_the_zone():
    lo, _ = parse_period("2026-01-01").bounds_utc(ZoneInfo("UTC"))
    assert lo == datetime(2026, 1, 1, tzinfo=UTC)
    # New York observes DST: 2026-07-04 local midnight is 04:00 UTC, in January 05:00 UTC.
    ny = ZoneInfo("America/New_York")
    assert parse_period("2026-07-04").bounds_utc(ny)[0] == datetime(2026, 7, 4, 4, tzinfo=UTC)
    assert parse_period("2026-01-04").bounds_utc(ny)[0] == datetime(2026, 1, 4, 5, tzinfo=UTC)


def test_iso_week_one_starts_in_the_previous_calendar_year():
    week = parse_period("2026-W01")
    assert week.start == date(2025, 12, 29)
    assert week.end == date(2026, 1, 5)
    # 2025-12-31 belongs to ISO week 2026-W01, not to a week of 2025.
    assert period_of(date(2025, 12, 31), "week").label == "2026-W01"


def test_years_with_53_iso_weeks():
    assert parse_period("2020-W53").start == date(2020, 12, 28)
    assert parse_period("2026-W53").start == date(2026, 12, 28)
    assert period_of(date(2021, 1, 3), "week").label == "2020-W53"
    assert parse_period("2020-W53").next().label == "2021-W01"


@pytest.mark.parametrize(
    ("text", "previous", "following"),
    [
        ("2026", "2025", "2027"),
        ("2026Q1", "2025Q4", "2026Q2"),
        ("2026Q4", "2026Q3", "2027Q1"),
        ("2026-01", "2025-12", "2026-02"),
        ("2026-12", "2026-11", "2027-01"),
        ("2026-W01", "2025-W52", "2026-W02"),
        ("2026-W53", "2026-W52", "2027-W01"),
        ("2024-03-01", "2024-02-29", "2024-03-02"),
        ("2026-12-31", "2026-12-30", "2027-01-01"),
    ],
)
def test_previous_and_next(text, previous, following):
    period = parse_period(text)
    assert period.previous().label == previous
    assert period.next().label == following
    assert period.previous().end == period.start
    assert period.next().start == period.end


@pytest.mark.parametrize(
    ("text", "last_year"),
    [
        ("2026", "2025"),
        ("2026Q3", "2025Q3"),
        ("2026-07", "2025-07"),
        ("2026-W27", "2025-W27"),
        ("2026-W53", "2025-W52"),  # 2025 has no week 53
        ("2021-W52", "2020-W52"),  # not 2020-W53: weeks keep their number
        ("2026-07-04", "2025-07-04"),
        ("2024-02-29", "2023-02-28"),
    ],
)
def test_same_period_last_year(text, last_year):
    assert parse_period(text).same_period_last_year().label == last_year


def test_local_midnight_instant_belongs_to_the_new_day():
    midnight = datetime(2026, 7, 3, 16, 0, tzinfo=UTC)  # 2026-07-04 00:00 in Shanghai
    just_before = midnight - timedelta(microseconds=1)
    assert period_of(midnight, "day", SHANGHAI).label == "2026-07-04"
    assert period_of(just_before, "day", SHANGHAI).label == "2026-07-03"
    day = parse_period("2026-07-04")
    assert day.contains(midnight, SHANGHAI)
    assert not day.contains(just_before, SHANGHAI)
    # New Year in Shanghai is still the old year in UTC.
    new_year = datetime(2025, 12, 31, 16, 30, tzinfo=UTC)
    assert period_of(new_year, "year", SHANGHAI).label == "2026"
    assert period_of(new_year, "quarter", SHANGHAI).label == "2026Q1"


def test_period_of_each_kind():
    day = date(2026, 8, 15)
    assert [period_of(day, kind).label for kind in KINDS] == [
        "2026",
        "2026Q3",
        "2026-08",
        "2026-W33",
        "2026-08-15",
    ]
    with pytest.raises(PeriodError):
        period_of(day, cast(PeriodKind, "decade"))


def test_periods_between_is_inclusive():
    labels = [p.label for p in periods_between(parse_period("2025Q4"), parse_period("2026Q3"))]
    assert labels == ["2025Q4", "2026Q1", "2026Q2", "2026Q3"]
    assert periods_between(parse_period("2026-07"), parse_period("2026-07")) == [
        parse_period("2026-07")
    ]


def test_periods_are_ordered_and_hashable():
    a, b = parse_period("2026-06"), parse_period("2026-07")
    assert a < b
    assert len({a, b, parse_period("2026-06")}) == 2


@given(
    day=st.dates(min_value=date(1900, 1, 8), max_value=date(2199, 12, 24)),
    kind=st.sampled_from(KINDS),
)
def test_property_label_round_trip_and_containment(day: date, kind: str) -> None:
    period = period_of(day, cast(PeriodKind, kind))
    assert isinstance(period, Period)
    assert period.start <= day < period.end
    assert parse_period(period.label) == period
    assert period.next().start == period.end
    assert period.previous().next() == period
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=SHANGHAI)
    assert period.contains(noon, SHANGHAI)
    lo, hi = period.bounds_utc(SHANGHAI)
    assert lo <= noon < hi
