"""Patrol dosage: presence pieces, per-grid dosage, time since last visit, team activity.

Expectations are computed by hand from small constructed patrols; the property test checks the
vectorised code against a plain per-ping reference of the documented rule.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridwatch.periods import period_of
from gridwatch.workers.aggregate.patrol import (
    DOSAGE_COLUMNS,
    SEGMENT_COLUMNS,
    grid_dosage,
    presence_segments,
    team_activity,
    time_since_last_visit,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
A, B = 101, 202


def local(text: str, tz: ZoneInfo = SHANGHAI) -> pd.Timestamp:
    return pd.Timestamp(text).tz_localize(tz)


def pings_frame(rows: list[tuple[int, pd.Timestamp, int | None]]) -> pd.DataFrame:
    """Build a pings frame from (team, aware time, grid or None) rows."""
    return pd.DataFrame(
        {
            "team_id": [r[0] for r in rows],
            "ts": pd.to_datetime([r[1] for r in rows], utc=True).as_unit("ns"),
            "grid_id": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )


def patrol(
    team: int, first: pd.Timestamp, count: int, grids: int | None | list[int | None], every=2
) -> list[tuple[int, pd.Timestamp, int | None]]:
    """``count`` pings ``every`` minutes from ``first``; one grid for all or one per ping."""
    per_ping = grids if isinstance(grids, list) else [grids] * count
    assert len(per_ping) == count
    return [(team, first + pd.Timedelta(minutes=every * i), per_ping[i]) for i in range(count)]


def dosage_row(dosage: pd.DataFrame, grid: int, period: str) -> pd.Series:
    rows = dosage[(dosage["grid_id"] == grid) & (dosage["period"] == period)]
    assert len(rows) == 1, dosage
    return rows.iloc[0]


# --- presence ------------------------------------------------------------------------------


def test_pings_every_two_minutes_for_an_hour_give_sixty_minutes_and_one_visit():
    # 30 pings 09:00 .. 09:58: 29 intervals of 2 min, and the last ping counts the team's
    # median interval (2 min) -> presence 09:00-10:00.
    pings = pings_frame(patrol(1, local("2026-07-01 09:00"), 30, A))
    segments = presence_segments(pings, tz=SHANGHAI)

    assert list(segments.columns) == list(SEGMENT_COLUMNS)
    assert segments["minutes"].sum() == 60.0
    assert segments["start"].min() == local("2026-07-01 09:00")
    assert segments["end"].max() == local("2026-07-01 10:00")
    assert str(segments["start"].dtype) == "datetime64[ns, UTC]"
    assert segments["visit_start"].sum() == 1
    assert not segments["night"].any()
    assert (segments["local_date"] == pd.Timestamp("2026-07-01")).all()

    dosage = grid_dosage(segments, "day")
    assert list(dosage.columns) == list(DOSAGE_COLUMNS)
    row = dosage_row(dosage, A, "2026-07-01")
    assert row["patrol_minutes"] == 60.0
    assert row["patrol_night_minutes"] == 0.0
    assert row["patrol_visits"] == 1
    assert row["patrol_teams"] == 1
    assert row["last_visit_at"] == local("2026-07-01 10:00")


def test_last_ping_counts_the_median_interval_not_the_mean():
    # Intervals 1, 1, 3 min: median 1 min (mean would be 5/3).
    first = local("2026-07-01 09:00")
    pings = pings_frame([(1, first + pd.Timedelta(minutes=m), A) for m in (0, 1, 2, 5)])
    assert presence_segments(pings, tz=SHANGHAI)["minutes"].sum() == 1 + 1 + 3 + 1


def test_a_lone_ping_counts_max_gap():
    # No interval within max_gap to take a median of: the nominal interval is max_gap.
    pings = pings_frame([(1, local("2026-07-01 09:00"), A)])
    segments = presence_segments(pings, max_gap=pd.Timedelta(minutes=7), tz=SHANGHAI)
    assert segments["minutes"].tolist() == [7.0]


def test_a_three_hour_gap_is_no_presence():
    # 09:00, 09:02, 09:04, then 12:04, 12:06: the 3 h gap ends the first patrol; 09:04 counts
    # the nominal 2 min, and the gap counts nothing.
    first = local("2026-07-01 09:00")
    rows = patrol(1, first, 3, A) + patrol(1, first + pd.Timedelta(hours=3, minutes=4), 2, A)
    segments = presence_segments(pings_frame(rows), tz=SHANGHAI)
    assert segments["minutes"].sum() == 6 + 4
    dosage = grid_dosage(segments, "day")
    row = dosage_row(dosage, A, "2026-07-01")
    assert row["patrol_minutes"] == 10.0
    assert row["patrol_visits"] == 2  # a gap > max_gap starts a new visit in the same grid
    assert segments["end"].max() == first + pd.Timedelta(hours=3, minutes=8)


def test_gap_of_exactly_max_gap_continues_and_one_longer_does_not():
    first = local("2026-07-01 09:00")
    at = [0, 2, 12, 14]  # the 10 min interval is exactly max_gap
    pings = pings_frame([(1, first + pd.Timedelta(minutes=m), A) for m in at])
    segments = presence_segments(pings, tz=SHANGHAI)
    assert segments["minutes"].sum() == 2 + 10 + 2 + 2
    assert segments["visit_start"].sum() == 1

    at = [0, 2, 13, 15]  # 11 min > max_gap: 09:02 counts the nominal 2 min instead
    pings = pings_frame([(1, first + pd.Timedelta(minutes=m), A) for m in at])
    segments = presence_segments(pings, tz=SHANGHAI)
    assert segments["minutes"].sum() == 2 + 2 + 2 + 2
    assert segments["visit_start"].sum() == 2


def test_moving_a_b_a_makes_two_visits_to_a_and_one_to_b():
    # 5 pings in A (10 min), 3 in B (6 min), 4 in A (6 min + nominal 2 min).
    grids: list[int | None] = [A] * 5 + [B] * 3 + [A] * 4
    pings = pings_frame(patrol(1, local("2026-07-01 09:00"), 12, grids))
    dosage = grid_dosage(presence_segments(pings, tz=SHANGHAI), "day")

    row_a = dosage_row(dosage, A, "2026-07-01")
    row_b = dosage_row(dosage, B, "2026-07-01")
    assert (row_a["patrol_minutes"], row_a["patrol_visits"]) == (18.0, 2)
    assert (row_b["patrol_minutes"], row_b["patrol_visits"]) == (6.0, 1)
    # Time goes to the grid of the ping that starts the interval: the 09:08 -> 09:10 interval
    # (last ping in A, first in B) belongs to A.
    assert row_b["last_visit_at"] == local("2026-07-01 09:16")


def test_patrol_from_1930_to_2030_has_thirty_night_minutes():
    pings = pings_frame(patrol(1, local("2026-07-01 19:30"), 30, A))
    segments = presence_segments(pings, tz=SHANGHAI)
    row = dosage_row(grid_dosage(segments, "day"), A, "2026-07-01")
    assert row["patrol_minutes"] == 60.0
    assert row["patrol_night_minutes"] == 30.0
    assert segments.loc[segments["night"], "start"].min() == local("2026-07-01 20:00")


def test_an_interval_across_the_night_boundary_is_cut_at_2000_local():
    # One interval 19:55 -> 20:05: 5 day minutes and 5 night minutes.
    first = local("2026-07-01 19:55")
    pings = pings_frame([(1, first, A), (1, first + pd.Timedelta(minutes=10), A)])
    segments = presence_segments(pings, max_gap=pd.Timedelta(minutes=10), tz=SHANGHAI)
    first_interval = segments[segments["end"] <= first + pd.Timedelta(minutes=10)]
    assert first_interval["minutes"].tolist() == [5.0, 5.0]
    assert first_interval["night"].tolist() == [False, True]
    assert first_interval["visit_start"].tolist() == [True, False]


def test_a_patrol_across_midnight_splits_over_two_dates_and_two_quarters():
    # 23:30 on 30 June .. 00:30 on 1 July (30 pings): 30 min on each date, all night; the
    # quarter changes at midnight, and the visit counts in the quarter where it started.
    pings = pings_frame(patrol(1, local("2026-06-30 23:30"), 30, A))
    segments = presence_segments(pings, tz=SHANGHAI)
    per_date = segments.groupby("local_date")["minutes"].sum()
    assert per_date.to_dict() == {
        pd.Timestamp("2026-06-30"): 30.0,
        pd.Timestamp("2026-07-01"): 30.0,
    }
    assert segments["night"].all()

    days = grid_dosage(segments, "day")
    assert dosage_row(days, A, "2026-06-30")["patrol_minutes"] == 30.0
    assert dosage_row(days, A, "2026-07-01")["patrol_minutes"] == 30.0
    quarters = grid_dosage(segments, "quarter")
    q2, q3 = dosage_row(quarters, A, "2026Q2"), dosage_row(quarters, A, "2026Q3")
    assert (q2["patrol_minutes"], q2["patrol_night_minutes"], q2["patrol_visits"]) == (30, 30, 1)
    assert (q3["patrol_minutes"], q3["patrol_night_minutes"], q3["patrol_visits"]) == (30, 30, 0)
    assert q2["last_visit_at"] == local("2026-07-01 00:00")
    months = grid_dosage(segments, "month")
    assert months["period"].tolist() == ["2026-06", "2026-07"]
    assert grid_dosage(segments, "year")["patrol_minutes"].tolist() == [60.0]


def test_local_dates_follow_the_time_zone_not_utc():
    # 07:30-08:30 Shanghai is 23:30-00:30 UTC: one local date, day time.
    pings = pings_frame(patrol(1, local("2026-07-01 07:30"), 30, A))
    segments = presence_segments(pings, tz=SHANGHAI)
    assert (segments["local_date"] == pd.Timestamp("2026-07-01")).all()
    assert not segments["night"].any()


def test_local_midnight_that_does_not_exist_still_splits_the_day():
    # Chile moves its clocks from 24:00 to 01:00 on 6 September 2026 (04:00 UTC): a patrol
    # 03:30-04:30 UTC is 23:30-24:00 on 5 September and 01:00-01:30 on 6 September.
    santiago = ZoneInfo("America/Santiago")
    first = pd.Timestamp("2026-09-06 03:30", tz="UTC")
    segments = presence_segments(pings_frame(patrol(1, first, 30, A)), tz=santiago)
    per_date = segments.groupby("local_date")["minutes"].sum()
    assert per_date.to_dict() == {
        pd.Timestamp("2026-09-05"): 30.0,
        pd.Timestamp("2026-09-06"): 30.0,
    }
    assert segments["night"].all()


def test_pings_outside_grids_count_for_the_team_but_for_no_grid():
    # 5 pings in A then 5 outside every grid (NA): 10 min in A, 10 min outside.
    grids: list[int | None] = [A] * 5 + [None] * 5
    pings = pings_frame(patrol(1, local("2026-07-01 09:00"), 10, grids))
    segments = presence_segments(pings, tz=SHANGHAI)
    assert segments.loc[segments["grid_id"].isna(), "minutes"].sum() == 10.0
    dosage = grid_dosage(segments, "day")
    assert dosage["grid_id"].tolist() == [A]
    assert dosage["patrol_minutes"].tolist() == [10.0]

    outside_only = pings_frame(patrol(2, local("2026-07-01 09:00"), 5, None))
    outside_segments = presence_segments(outside_only, tz=SHANGHAI)
    assert grid_dosage(outside_segments, "day").empty
    teams = pd.DataFrame({"code": ["T2"], "kind": ["village"]}, index=[2])
    activity = team_activity(outside_only, teams, datetime(2026, 7, 2, tzinfo=UTC), SHANGHAI)
    assert activity.loc[2, "patrol_minutes_30d"] == 10.0
    assert activity.loc[2, "active_days"] == 1
    assert not activity.loc[2, "inactive"]


def test_two_teams_in_the_same_grid_at_the_same_time_add_up():
    first = local("2026-07-01 09:00")
    pings = pings_frame(patrol(1, first, 15, A) + patrol(2, first, 15, A))
    row = dosage_row(grid_dosage(presence_segments(pings, tz=SHANGHAI), "day"), A, "2026-07-01")
    assert row["patrol_minutes"] == 60.0
    assert row["patrol_visits"] == 2
    assert row["patrol_teams"] == 2


def test_row_order_does_not_matter_and_duplicate_pings_add_nothing():
    rows = patrol(1, local("2026-07-01 09:00"), 10, A) + patrol(2, local("2026-07-01 09:01"), 5, B)
    ordered = presence_segments(pings_frame(rows), tz=SHANGHAI)
    shuffled = pings_frame([rows[i] for i in np.random.default_rng(3).permutation(len(rows))])
    pd.testing.assert_frame_equal(presence_segments(shuffled, tz=SHANGHAI), ordered)

    doubled = presence_segments(pings_frame(rows + rows[:4]), tz=SHANGHAI)
    assert doubled["minutes"].sum() == ordered["minutes"].sum() == 20 + 10


def test_any_timestamp_unit_and_zone_is_accepted_but_naive_is_refused():
    pings = pings_frame(patrol(1, local("2026-07-01 09:00"), 30, A))
    other = pings.assign(ts=pings["ts"].dt.tz_convert(SHANGHAI).dt.as_unit("s"))
    pd.testing.assert_frame_equal(
        presence_segments(other, tz=SHANGHAI), presence_segments(pings, tz=SHANGHAI)
    )
    with pytest.raises(ValueError, match="time-zone aware"):
        presence_segments(pings.assign(ts=pings["ts"].dt.tz_localize(None)), tz=SHANGHAI)
    with pytest.raises(ValueError, match="max_gap"):
        presence_segments(pings, max_gap=pd.Timedelta(0), tz=SHANGHAI)


def test_empty_inputs_give_empty_frames_with_the_right_columns():
    empty = pings_frame([])
    segments = presence_segments(empty, tz=SHANGHAI)
    assert list(segments.columns) == list(SEGMENT_COLUMNS) and segments.empty
    dosage = grid_dosage(segments, "month")
    assert list(dosage.columns) == list(DOSAGE_COLUMNS) and dosage.empty
    assert time_since_last_visit(segments, datetime(2026, 7, 1, tzinfo=UTC)).empty


# --- time since last visit -----------------------------------------------------------------


def test_time_since_last_visit_counts_from_the_end_of_presence():
    rows = patrol(1, local("2026-07-01 09:00"), 30, A)  # presence until 10:00 in A
    rows += patrol(1, local("2026-07-01 12:00"), 30, B)  # 12:00-13:00 in B
    rows += patrol(1, local("2026-07-02 09:00"), 5, 303)  # after as_of: ignored
    segments = presence_segments(pings_frame(rows), tz=SHANGHAI)

    hours = time_since_last_visit(segments, local("2026-07-01 13:00").to_pydatetime())
    assert hours.to_dict() == {A: 3.0, B: 0.0}
    during = time_since_last_visit(segments, local("2026-07-01 12:30").to_pydatetime())
    assert during.to_dict() == {A: 2.5, B: 0.0}
    with pytest.raises(ValueError, match="aware"):
        time_since_last_visit(segments, datetime(2026, 7, 1))


# --- team activity -------------------------------------------------------------------------


def test_team_activity_flags_silent_teams_as_in_name_only():
    as_of = datetime(2026, 7, 20, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    base = pd.Timestamp(as_of)
    rows = patrol(1, base - pd.Timedelta(days=15), 5, A)  # last ping 15 days ago
    rows += patrol(2, base - pd.Timedelta(days=2), 5, A)  # 2 days ago
    rows += patrol(2, base - pd.Timedelta(days=40), 5, A)  # an older patrol of the same team
    rows += [(4, base - pd.Timedelta(days=14), A)]  # exactly 14 days ago: still active
    rows += patrol(5, base + pd.Timedelta(hours=1), 5, A)  # only after as_of: not yet
    teams = pd.DataFrame(
        {"code": ["T1", "T2", "T3", "T4", "T5"], "kind": ["township"] * 5}, index=[1, 2, 3, 4, 5]
    )
    activity = team_activity(pings_frame(rows), teams, as_of, SHANGHAI)

    assert activity["inactive"].to_dict() == {1: True, 2: False, 3: True, 4: False, 5: True}
    assert activity["active_days"].to_dict() == {1: 1, 2: 2, 3: 0, 4: 1, 5: 0}
    assert activity.loc[2, "last_patrol_at"] == base - pd.Timedelta(days=2, minutes=-8)
    assert pd.isna(activity.loc[3, "last_patrol_at"])  # never logged: 'in name only'
    assert pd.isna(activity.loc[5, "last_patrol_at"])
    assert activity["patrol_minutes_30d"].to_dict() == {1: 10.0, 2: 10.0, 3: 0.0, 4: 10.0, 5: 0}
    assert activity.loc[1, "code"] == "T1"
    assert str(activity["last_patrol_at"].dtype) == "datetime64[ns, UTC]"

    strict = team_activity(pings_frame(rows), teams, as_of, SHANGHAI, inactive_after_days=10)
    assert strict.loc[4, "inactive"]


def test_team_activity_windows_and_precomputed_segments():
    as_of = datetime(2026, 7, 20, 4, 0, tzinfo=UTC)
    base = pd.Timestamp(as_of)
    rows = patrol(1, base - pd.Timedelta(days=31), 5, A)  # outside the 30-day minutes window
    rows += patrol(1, base - pd.Timedelta(days=89), 5, A)  # inside the 90 local days
    rows += patrol(1, base - pd.Timedelta(days=95), 5, A)  # outside them
    rows += patrol(1, base - pd.Timedelta(minutes=4), 5, A)  # runs past as_of: cut at as_of
    pings = pings_frame(rows)
    teams = pd.DataFrame({"code": ["T1"], "kind": ["police"]}, index=[1])
    activity = team_activity(pings, teams, as_of, SHANGHAI)
    assert activity.loc[1, "active_days"] == 3
    assert activity.loc[1, "patrol_minutes_30d"] == 4.0
    with_segments = team_activity(
        pings, teams, as_of, SHANGHAI, segments=presence_segments(pings, tz=SHANGHAI)
    )
    pd.testing.assert_frame_equal(with_segments, activity)


# --- property: the vectorised code against a per-ping reference of the rule ---------------

MAX_GAP_S = 600


def reference_presence(rows: list[tuple[int, int, int | None]]) -> dict[int, dict]:
    """Per team: total presence seconds, seconds per grid (None = outside), visits per grid."""
    out: dict[int, dict] = {}
    for team in sorted({r[0] for r in rows}):
        own = sorted((r for r in rows if r[0] == team), key=lambda r: r[1])
        steps = [b[1] - a[1] for a, b in zip(own, own[1:], strict=False)]
        regular = [s for s in steps if 0 < s <= MAX_GAP_S]
        # in whole seconds the median is exact to the half second, like the nanoseconds rule
        nominal = min(statistics.median(regular), MAX_GAP_S) if regular else MAX_GAP_S
        per_grid: dict[int | None, float] = {}
        visits: dict[int | None, int] = {}
        previous_end, previous_grid = None, object()
        for i, (_, t, grid) in enumerate(own):
            step = steps[i] if i < len(steps) else None
            duration = step if step is not None and step <= MAX_GAP_S else nominal
            if duration == 0:
                continue
            if previous_end != t or previous_grid != grid:
                visits[grid] = visits.get(grid, 0) + 1
            per_grid[grid] = per_grid.get(grid, 0) + duration
            previous_end, previous_grid = t + duration, grid
        out[team] = {
            "total": sum(per_grid.values()),
            "per_grid": per_grid,
            "visits": visits,
            "span": own[-1][1] - own[0][1],
        }
    return out


ping_rows = st.lists(
    st.tuples(
        st.integers(1, 3),  # team
        st.integers(0, 3 * 86_400),  # seconds after the origin: three days
        st.one_of(st.none(), st.integers(1, 4)),  # grid or outside
    ),
    min_size=1,
    max_size=60,
)
clustered = st.lists(st.integers(0, 900), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    rows=ping_rows,
    steps=clustered,
    tz_name=st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York"]),
)
def test_presence_matches_a_per_ping_reference(rows, steps, tz_name):
    # Half of the rows are spread over three days, the other half close together, so both
    # gaps and continuous patrols occur; DST zones exercise the local-day cut.
    tz = ZoneInfo(tz_name)
    seconds = np.cumsum(steps)
    rows = rows + [
        (rows[i % len(rows)][0], int(s), rows[i % len(rows)][2]) for i, s in enumerate(seconds)
    ]
    origin = pd.Timestamp("2026-03-28 18:00", tz="UTC")  # the European DST change is near
    frame = pd.DataFrame(
        {
            "team_id": [r[0] for r in rows],
            "ts": pd.DatetimeIndex([origin + pd.Timedelta(seconds=r[1]) for r in rows]),
            "grid_id": pd.array([r[2] for r in rows], dtype="Int64"),
        }
    )
    segments = presence_segments(frame, max_gap=pd.Timedelta(seconds=MAX_GAP_S), tz=tz)
    expected = reference_presence(rows)

    seconds_of = (segments["end"] - segments["start"]).dt.total_seconds()
    assert (seconds_of > 0).all()
    assert np.allclose(segments["minutes"], seconds_of / 60)
    for team, ref in expected.items():
        own = segments[segments["team_id"] == team]
        total = seconds_of[own.index].sum()
        assert total == ref["total"]
        # never more than the wall-clock span plus the nominal interval of the last ping
        assert total <= ref["span"] + MAX_GAP_S
        assert (own["start"].iloc[1:].to_numpy() >= own["end"].iloc[:-1].to_numpy()).all()
        outside = seconds_of[own.index[own["grid_id"].isna()]].sum()
        assert outside == ref["per_grid"].get(None, 0)

    # Each piece lies within one local date and one side of 20:00 / 06:00.
    start_local = segments["start"].dt.tz_convert(tz)
    last_local = (segments["end"] - pd.Timedelta(1, "ns")).dt.tz_convert(tz)
    assert (start_local.dt.tz_localize(None).dt.normalize() == segments["local_date"]).all()
    assert (last_local.dt.date == start_local.dt.date).all()
    night = (start_local.dt.hour >= 20) | (start_local.dt.hour < 6)
    assert (night == segments["night"]).all()
    assert (((last_local.dt.hour >= 20) | (last_local.dt.hour < 6)) == night).all()

    # Grid dosage adds up to the reference per grid, over every kind of period.
    for kind in ("day", "week", "year"):
        dosage = grid_dosage(segments, kind)
        per_grid = dosage.groupby("grid_id")[["patrol_minutes", "patrol_visits"]].sum()
        for grid in range(1, 5):
            ref_seconds = sum(r["per_grid"].get(grid, 0) for r in expected.values())
            ref_visits = sum(r["visits"].get(grid, 0) for r in expected.values())
            got = per_grid.loc[grid] if grid in per_grid.index else pd.Series([0.0, 0])
            assert got.iloc[0] * 60 == pytest.approx(ref_seconds, abs=1e-6)
            assert got.iloc[1] == ref_visits
        in_grid = segments[segments["grid_id"].notna()]
        total = (
            dosage["patrol_minutes"].sum()
            + segments.loc[segments["grid_id"].isna(), "minutes"].sum()
        )
        assert total == pytest.approx(segments["minutes"].sum())
        labels = {period_of(d.date(), kind).label for d in in_grid["local_date"]}
        assert set(dosage["period"]) == labels
        assert (dosage["patrol_teams"] >= 1).all()
    years = grid_dosage(segments, "year").groupby("grid_id")["patrol_teams"].max()
    for grid in range(1, 5):
        teams_in_grid = sum(1 for r in expected.values() if r["per_grid"].get(grid, 0) > 0)
        assert years.get(grid, 0) == teams_in_grid  # one year: 2026 only


def test_team_activity_keeps_exact_times_and_ignores_teams_off_the_roster():
    odd = pd.Timestamp("2026-07-10 01:02:03.123456789", tz="UTC")
    pings = pings_frame([(1, odd, None), (99, odd, A)])
    teams = pd.DataFrame({"code": ["T1"], "kind": ["police"]}, index=[1])
    activity = team_activity(pings, teams, datetime(2026, 7, 11, tzinfo=UTC), SHANGHAI)
    assert activity.index.tolist() == [1]
    assert activity.loc[1, "last_patrol_at"] == odd
