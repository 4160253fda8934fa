"""Patrol dosage: how long patrol teams were present in each grid, and which teams patrol at all.

The input is the ``patrol_pings`` table as a DataFrame (``team_id``, ``ts`` in UTC, ``grid_id``
with ``<NA>`` for pings outside every grid). Everything here is vectorised NumPy / pandas: no
Python loop runs per ping, only per local day or per period label.

Rules
-----
Presence
    Pings are ordered by team and time. A ping covers the time until the same team's next ping
    when that next ping comes at most ``max_gap`` later (default 10 minutes; a gap of exactly
    ``max_gap`` still continues). A longer gap ends the patrol, and so does the team's last
    ping: such a ping covers a *nominal interval*, the team's median interval between
    consecutive pings counting only the intervals ``0 < interval <= max_gap`` (so the gaps
    between patrols do not inflate it), and ``max_gap`` for a team that has no such interval
    (only isolated pings). Time is attributed to the grid of the ping that starts the
    interval. Pings with the same team and timestamp cover nothing but the last of them.
Local days and nights
    Intervals are cut at local midnight and at 06:00 and 20:00 local time in ``tz``, so every
    piece lies within one local date and is either night (20:00-06:00) or day. Night minutes
    after midnight belong to the calendar date they fall on, not to the evening before.
Visits
    A visit is a maximal run of contiguous presence of one team in one grid. A new visit starts
    at a team's first ping, when the team enters the grid from another grid or from outside
    every grid, and after a gap longer than ``max_gap``. A visit is counted once, in the period
    in which it starts (so visits add up over days into months); its minutes go to the periods
    they fall in.
Teams
    A team is inactive ("in name only") when it logged no ping in the last
    ``inactive_after_days`` days before ``as_of``, including a team that never logged any.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from gridwatch.periods import PeriodKind, period_of

#: Default longest gap between two pings of a team that still counts as continuous presence.
DEFAULT_MAX_GAP: Final = pd.Timedelta(minutes=10)
#: Local hours at which night starts and ends; night is ``[NIGHT_START_HOUR, NIGHT_END_HOUR)``.
NIGHT_START_HOUR: Final = 20
NIGHT_END_HOUR: Final = 6

#: Columns of :func:`presence_segments`' result, in order.
SEGMENT_COLUMNS: Final = (
    "team_id",
    "grid_id",
    "start",
    "end",
    "minutes",
    "night",
    "local_date",
    "visit_start",
)
#: Columns of :func:`grid_dosage`' result, in order.
DOSAGE_COLUMNS: Final = (
    "grid_id",
    "period",
    "patrol_minutes",
    "patrol_night_minutes",
    "patrol_visits",
    "patrol_teams",
    "last_visit_at",
)

_NS_PER_MINUTE: Final = 60_000_000_000
#: Above this many grid x period combinations grid_dosage hashes its keys (memory bound).
_MAX_DENSE_GROUPS: Final = 8_000_000
_NS_PER_HOUR: Final = 3_600_000_000_000
_EPOCH: Final = date(1970, 1, 1)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def presence_segments(
    pings: pd.DataFrame,
    max_gap: pd.Timedelta = DEFAULT_MAX_GAP,
    *,
    tz: ZoneInfo,
) -> pd.DataFrame:
    """Turn pings into pieces of presence, one per team, grid, local date and day/night part.

    Parameters
    ----------
    pings : pandas.DataFrame
        Columns ``team_id`` (integers, no missing values), ``ts`` (time-zone aware, any unit;
        converted to UTC) and ``grid_id`` (integers, ``<NA>``/NaN outside every grid). Other
        columns are ignored; the order of the rows does not matter.
    max_gap : pandas.Timedelta, default 10 minutes
        Longest gap between two pings of a team that still counts as continuous presence; see
        the module docstring for the rule applied after a longer gap and after a team's last
        ping. Must be positive.
    tz : zoneinfo.ZoneInfo
        Local time zone for local dates and the 20:00 / 06:00 night boundaries.

    Returns
    -------
    pandas.DataFrame
        One row per piece, ordered by team and start, with columns ``team_id`` (int64),
        ``grid_id`` (Int64, ``<NA>`` for time outside every grid), ``start`` and ``end``
        (``datetime64[ns, UTC]``, half-open), ``minutes`` (float64, > 0), ``night`` (bool),
        ``local_date`` (``datetime64[ns]`` without time zone: midnight of the local calendar
        date in ``tz``) and ``visit_start`` (bool: the piece starts a new visit of this team to
        this grid or to "outside").

    Raises
    ------
    ValueError
        When a column is missing, ``ts`` is naive or missing, ``team_id`` is missing, or
        ``max_gap`` is not positive.
    """
    gap_ns = _to_ns(max_gap)
    if gap_ns <= 0:
        raise ValueError(f"max_gap must be positive, got {max_gap!r}")
    team, ts, grid, grid_na = _sorted_pings(pings)
    n = ts.size
    if n == 0:
        return _empty_segments()

    new_team = np.empty(n, dtype=bool)
    new_team[0] = True
    np.not_equal(team[1:], team[:-1], out=new_team[1:])
    team_code = np.cumsum(new_team) - 1
    n_teams = int(team_code[-1]) + 1

    step = np.zeros(n, dtype=np.int64)
    step[:-1] = ts[1:] - ts[:-1]
    has_next = np.zeros(n, dtype=bool)
    has_next[:-1] = ~new_team[1:]
    continues = has_next & (step <= gap_ns)

    # The nominal interval of the ping that ends a patrol: the team's typical in-patrol
    # interval, so one lonely ping neither vanishes nor stands for a whole max_gap.
    regular = continues & (step > 0)
    nominal = np.full(n_teams, gap_ns, dtype=np.int64)
    if regular.any():
        medians = pd.Series(step[regular]).groupby(team_code[regular]).median()
        nominal[medians.index.to_numpy(dtype=np.int64)] = np.minimum(
            np.rint(medians.to_numpy(dtype=np.float64)).astype(np.int64), gap_ns
        )
    duration = np.where(continues, step, nominal[team_code])

    keep = duration > 0
    t0 = ts
    if keep.all():
        t1 = ts + duration
        code = team_code
    else:  # duplicate timestamps: only the last ping of a team at one instant covers time
        t0 = ts[keep]
        t1 = t0 + duration[keep]
        code = team_code[keep]
        team, grid, grid_na = team[keep], grid[keep], grid_na[keep]
    m = t0.size

    same_grid = (grid_na[1:] & grid_na[:-1]) | (
        ~grid_na[1:] & ~grid_na[:-1] & (grid[1:] == grid[:-1])
    )
    visit_start = np.ones(m, dtype=bool)
    visit_start[1:] = ~((code[1:] == code[:-1]) & (t1[:-1] == t0[1:]) & same_grid)

    # Cut intervals at the local boundaries. Few intervals cross one, so the first piece of
    # every interval is scattered to its place and only the extra pieces are built apart.
    bounds, slot_day, slot_night = _local_boundaries(int(t0.min()), int(t1.max()), tz)
    first_bound = np.searchsorted(bounds, t0, side="right")  # bounds[first - 1] <= t0
    cuts = np.searchsorted(bounds, t1, side="left") - first_bound  # bounds inside (t0, t1)
    cut = np.flatnonzero(cuts)
    if cut.size == 0:
        # copies: team and t0 may be views of the caller's columns, and the frame is built
        # without copying
        team_out, grid_out, na_out = team.copy(), grid.copy(), grid_na.copy()
        start, visit_out, end, slot = t0.copy(), visit_start, t1, first_bound - 1
    else:
        n_extra = cuts[cut]
        position = np.arange(m) + np.cumsum(cuts) - cuts  # of each interval's first piece
        owner = np.repeat(cut, n_extra)  # interval of each extra piece
        j = np.arange(owner.size) - np.repeat(np.cumsum(n_extra) - n_extra, n_extra) + 1
        extra_at = position[owner] + j
        total = m + owner.size

        def spread(first: npt.NDArray[Any], extra: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.empty(total, dtype=first.dtype)
            out[position] = first
            out[extra_at] = extra
            return out

        team_out = spread(team, team[owner])
        grid_out = spread(grid, grid[owner])
        na_out = spread(grid_na, grid_na[owner])
        visit_out = spread(visit_start, np.zeros(owner.size, dtype=bool))
        slot = spread(first_bound - 1, first_bound[owner] - 1 + j)
        start = spread(t0, bounds[first_bound[owner] + j - 1])
        first_end = np.where(cuts == 0, t1, bounds[np.minimum(first_bound, bounds.size - 1)])
        last_extra = j == n_extra.repeat(n_extra)
        extra_end = np.where(
            last_extra, t1[owner], bounds[np.minimum(first_bound[owner] + j, bounds.size - 1)]
        )
        end = spread(first_end, extra_end)

    frame = pd.DataFrame(
        {
            "team_id": team_out,
            "grid_id": pd.arrays.IntegerArray(grid_out, na_out),
            "start": _utc_index(start),
            "end": _utc_index(end),
            "minutes": (end - start) / _NS_PER_MINUTE,
            "night": slot_night[slot],
            "local_date": (slot_day[slot] * 86_400_000_000_000).view("datetime64[ns]"),
            "visit_start": visit_out,
        },
        copy=False,  # the arrays are ours: skip pandas' consolidating copy (~0.1 s per 1M)
    )
    return frame


def grid_dosage(segments: pd.DataFrame, period: PeriodKind) -> pd.DataFrame:
    """Sum presence pieces per grid and period.

    Parameters
    ----------
    segments : pandas.DataFrame
        The result of :func:`presence_segments`, possibly filtered (e.g. to some grids or
        dates); pieces outside every grid are ignored.
    period : {"year", "quarter", "month", "week", "day"}
        Kind of period; each piece's ``local_date`` is labelled with
        :func:`gridwatch.periods.period_of`, e.g. ``2026Q3`` or ``2026-W27``.

    Returns
    -------
    pandas.DataFrame
        One row per grid and period with any presence, ordered by ``grid_id`` then ``period``:
        ``grid_id`` (int64), ``period`` (label), ``patrol_minutes`` and
        ``patrol_night_minutes`` (float64), ``patrol_visits`` (int64; visits starting in the
        period, so a grid can have minutes and no visit when a visit began in the previous
        period), ``patrol_teams`` (int64, distinct teams present) and ``last_visit_at``
        (``datetime64[ns, UTC]``, end of the last piece in the period).
    """
    in_grid = segments["grid_id"].notna().to_numpy(dtype=bool)
    if not in_grid.any():
        return _empty_dosage()
    grid = segments["grid_id"].to_numpy(dtype=np.int64, na_value=0)[in_grid]
    team = segments["team_id"].to_numpy(dtype=np.int64)[in_grid]
    start = _utc_ns(segments["start"], "start")[in_grid]
    end = _utc_ns(segments["end"], "end")[in_grid]
    night = segments["night"].to_numpy(dtype=bool)[in_grid]
    visits = segments["visit_start"].to_numpy(dtype=bool)[in_grid]
    day = _day_numbers(segments["local_date"])[in_grid]

    period_code, period_labels = _period_codes(day, period)
    grid_code, grid_ids = _dense_codes(grid)
    n_periods = len(period_labels)
    key = grid_code * n_periods + period_code
    group_keys: IntArray | None = None
    n_groups = len(grid_ids) * n_periods
    if n_groups > _MAX_DENSE_GROUPS:
        # Many grids x many periods (days over years): hash the keys instead of sizing arrays
        # for every combination.
        codes, uniques = pd.factorize(key, sort=True)
        group = np.asarray(codes, dtype=np.int64)
        group_keys = np.asarray(uniques, dtype=np.int64)
        n_groups = len(group_keys)
    else:
        group = key

    # Scatter-adds instead of groupby: their cost does not depend on how the keys are laid out.
    duration = end - start
    pieces = np.bincount(group, minlength=n_groups)
    total_ns = np.zeros(n_groups, dtype=np.int64)
    np.add.at(total_ns, group, duration)
    night_ns = np.zeros(n_groups, dtype=np.int64)
    np.add.at(night_ns, group[night], duration[night])
    visit_count = np.bincount(group[visits], minlength=n_groups)
    last = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, group, end)

    # Distinct teams: pieces come ordered by team and time, so collapsing runs of the same
    # (group, team) first leaves few pairs to deduplicate.
    team_code, team_ids = _dense_codes(team)
    n_teams = len(team_ids)
    run = np.ones(group.size, dtype=bool)
    run[1:] = (group[1:] != group[:-1]) | (team_code[1:] != team_code[:-1])
    pairs = np.unique(group[run] * n_teams + team_code[run])
    teams = np.bincount(pairs // n_teams, minlength=n_groups)

    present = np.flatnonzero(pieces)
    keys = present if group_keys is None else group_keys[present]
    return pd.DataFrame(
        {
            "grid_id": grid_ids[keys // n_periods],
            "period": np.asarray(period_labels, dtype=object)[keys % n_periods],
            "patrol_minutes": total_ns[present] / _NS_PER_MINUTE,
            "patrol_night_minutes": night_ns[present] / _NS_PER_MINUTE,
            "patrol_visits": visit_count[present].astype(np.int64),
            "patrol_teams": teams[present].astype(np.int64),
            "last_visit_at": _utc_index(last[present]),
        },
        copy=False,
    )


def time_since_last_visit(segments: pd.DataFrame, as_of: datetime) -> pd.Series:
    """Return, per grid, the hours between the last patrol presence and ``as_of``.

    Only presence that started before ``as_of`` counts, and presence still going on at
    ``as_of`` counts as ending then (0 hours), so a past ``as_of`` gives the answer as it was
    then.

    Parameters
    ----------
    segments : pandas.DataFrame
        The result of :func:`presence_segments`.
    as_of : datetime.datetime
        Time-zone aware instant.

    Returns
    -------
    pandas.Series
        float64 hours indexed by ``grid_id`` (int64), sorted, named ``hours_since_last_visit``.
        Grids never visited before ``as_of`` are absent.
    """
    as_of_ns = _instant_ns(as_of)
    grid_na = segments["grid_id"].isna().to_numpy(dtype=bool)
    start = _utc_ns(segments["start"], "start")
    mask = ~grid_na & (start < as_of_ns)
    grid = segments["grid_id"].to_numpy(dtype=np.int64, na_value=0)[mask]
    end = np.minimum(_utc_ns(segments["end"], "end")[mask], as_of_ns)
    last = pd.Series(end).groupby(grid, sort=True).max()
    hours = (as_of_ns - last.to_numpy(dtype=np.int64)) / _NS_PER_HOUR
    return pd.Series(
        hours,
        index=pd.Index(last.index.to_numpy(dtype=np.int64), name="grid_id"),
        name="hours_since_last_visit",
        dtype=np.float64,
    )


def team_activity(
    pings: pd.DataFrame,
    teams: pd.DataFrame,
    as_of: datetime,
    tz: ZoneInfo,
    inactive_after_days: int = 14,
    *,
    segments: pd.DataFrame | None = None,
    max_gap: pd.Timedelta = DEFAULT_MAX_GAP,
    active_window_days: int = 90,
    minutes_window_days: int = 30,
) -> pd.DataFrame:
    """Summarise each team's patrolling and flag teams that exist in name only.

    Only pings at or before ``as_of`` count, so a past ``as_of`` gives the answer as it was
    then. Pings outside every grid count: patrolling a road between grids is patrolling.

    Parameters
    ----------
    pings : pandas.DataFrame
        Columns ``team_id`` and ``ts`` (time-zone aware), as for :func:`presence_segments`.
    teams : pandas.DataFrame
        The team roster, indexed by team id, with columns ``code`` and ``kind``. Pings of teams
        not in the roster are ignored (storage's foreign key makes them impossible).
    as_of : datetime.datetime
        Time-zone aware instant the figures are computed for.
    tz : zoneinfo.ZoneInfo
        Local time zone for active days.
    inactive_after_days : int, default 14
        A team with no ping in the last ``inactive_after_days`` days (``as_of`` minus that many
        24-hour days) is inactive; a ping exactly that long ago still counts.
    segments : pandas.DataFrame, optional
        :func:`presence_segments` of the same pings, when the caller has it. Without it the
        pings of the minutes window are turned into segments here; the nominal interval of a
        patrol's last ping then comes from those pings only and may differ slightly.
    max_gap : pandas.Timedelta, default 10 minutes
        Passed to :func:`presence_segments` when ``segments`` is not given.
    active_window_days : int, default 90
        ``active_days`` counts the distinct local dates with at least one ping among the
        ``active_window_days`` local dates ending with ``as_of``'s local date.
    minutes_window_days : int, default 30
        ``patrol_minutes_30d`` is the presence (in or outside grids) within the
        ``minutes_window_days`` 24-hour days before ``as_of``.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``teams`` (named ``team_id``), with columns ``code``, ``kind``,
        ``active_days`` (int64), ``last_patrol_at`` (``datetime64[ns, UTC]``, NaT when the team
        never logged a ping), ``patrol_minutes_30d`` (float64) and ``inactive`` (bool).
    """
    as_of_ns = _instant_ns(as_of)
    roster = pd.Index(teams.index.to_numpy(dtype=np.int64), name="team_id")
    team = pings["team_id"].to_numpy(dtype=np.int64)
    ts = _utc_ns(pings["ts"], "ts")
    past = ts <= as_of_ns
    team, ts = team[past], ts[past]

    never = np.iinfo(np.int64).min
    last = pd.Series(ts).groupby(team).max().reindex(roster, fill_value=never)
    last_ns = np.asarray(last.to_numpy(dtype=np.int64), dtype=np.int64)
    inactive = last_ns < as_of_ns - inactive_after_days * 86_400 * 10**9

    as_of_local = pd.Timestamp(as_of_ns, unit="ns", tz=UTC).tz_convert(tz).date()
    first_day = as_of_local - timedelta(days=active_window_days - 1)
    window_start = pd.Timestamp(first_day).tz_localize(
        tz, ambiguous=True, nonexistent="shift_forward"
    )
    recent = ts >= window_start.as_unit("ns").value
    active_days: IntArray = np.zeros(len(roster), dtype=np.int64)
    if recent.any():
        bounds, slot_day, _ = _local_boundaries(
            int(ts[recent].min()), int(ts[recent].max()), tz, hours=(0,)
        )
        day = slot_day[np.searchsorted(bounds, ts[recent], side="right") - 1]
        team_day = pd.DataFrame({"team": team[recent], "day": day}).drop_duplicates()
        counts = team_day.groupby("team").size().reindex(roster, fill_value=0)
        active_days = np.asarray(counts.to_numpy(dtype=np.int64), dtype=np.int64)

    window_ns = minutes_window_days * 86_400 * 10**9
    if segments is None:
        gap_ns = _to_ns(max_gap)
        # A ping up to max_gap before the window reaches into it; one up to max_gap after
        # as_of decides whether the last ping before as_of continues.
        near = _in_range(
            _utc_ns(pings["ts"], "ts"), as_of_ns - window_ns - gap_ns, as_of_ns + gap_ns
        )
        segments = presence_segments(pings.loc[near], max_gap, tz=tz)
    seg_start = np.maximum(_utc_ns(segments["start"], "start"), as_of_ns - window_ns)
    seg_end = np.minimum(_utc_ns(segments["end"], "end"), as_of_ns)
    overlap = np.maximum(seg_end - seg_start, 0)
    minutes = (
        pd.Series(overlap)
        .groupby(segments["team_id"].to_numpy(dtype=np.int64))
        .sum()
        .reindex(roster, fill_value=0)
        .to_numpy(dtype=np.int64)
        / _NS_PER_MINUTE
    )

    last_at = pd.DatetimeIndex(
        np.where(last_ns == never, np.datetime64("NaT", "ns"), last_ns.view("datetime64[ns]")),
        dtype=pd.DatetimeTZDtype("ns", UTC),
    )
    return pd.DataFrame(
        {
            "code": teams["code"].to_numpy(),
            "kind": teams["kind"].to_numpy(),
            "active_days": active_days,
            "last_patrol_at": last_at,
            "patrol_minutes_30d": minutes,
            "inactive": inactive,
        },
        index=roster,
    )


# --- helpers -----------------------------------------------------------------------------------


def _to_ns(delta: pd.Timedelta | timedelta) -> int:
    """Return a duration in integer nanoseconds."""
    return int(pd.Timedelta(delta).as_unit("ns").value)


def _instant_ns(instant: datetime) -> int:
    """Return an aware instant as UTC nanoseconds since the epoch."""
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"as_of must be time-zone aware, got {instant!r}")
    return int(pd.Timestamp(instant).tz_convert(UTC).as_unit("ns").value)


def _utc_ns(values: pd.Series, what: str) -> IntArray:
    """Return aware timestamps as UTC nanoseconds since the epoch (int64)."""
    if len(values) == 0:  # an empty column read from storage may have any dtype
        return np.array([], dtype=np.int64)
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        raise ValueError(f"{what} must be time-zone aware (UTC); got naive timestamps")
    if index.hasnans:
        raise ValueError(f"{what} has missing timestamps")
    return np.asarray(index.tz_convert(UTC).as_unit("ns").asi8, dtype=np.int64)


def _utc_index(ns: IntArray) -> pd.DatetimeIndex:
    """Return UTC nanoseconds as an aware ``DatetimeIndex``."""
    return pd.DatetimeIndex(
        ns.view("datetime64[ns]"), dtype=pd.DatetimeTZDtype("ns", UTC), copy=False
    )


def _in_range(values: IntArray, lo: int, hi: int) -> BoolArray:
    """Return ``lo <= values <= hi`` elementwise."""
    return np.asarray((values >= lo) & (values <= hi), dtype=bool)


def _day_numbers(local_dates: pd.Series) -> IntArray:
    """Return naive local dates as days since 1970-01-01."""
    days = local_dates.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    return np.asarray(days.astype(np.int64), dtype=np.int64)


def _dense_codes(values: IntArray) -> tuple[IntArray, IntArray]:
    """Return codes ``0..k-1`` in the order of the sorted distinct values, and those values.

    Ids in a compact range are coded by direct indexing (no hashing, no sort); others fall back
    to :func:`pandas.factorize`. ``values`` must not be empty.
    """
    lo = int(values.min())
    span = int(values.max()) - lo + 1
    if span <= max(2 * values.size, 1 << 16):
        present = np.zeros(span, dtype=bool)
        present[values - lo] = True
        code_of = np.cumsum(present, dtype=np.int64) - 1
        return code_of[values - lo], np.flatnonzero(present).astype(np.int64) + lo
    codes, uniques = pd.factorize(values, sort=True)
    return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=np.int64)


def _sorted_pings(pings: pd.DataFrame) -> tuple[IntArray, IntArray, IntArray, BoolArray]:
    """Return team ids, UTC nanoseconds, grid ids and the grid-missing mask, by team and time."""
    missing = {"team_id", "ts", "grid_id"} - set(pings.columns)
    if missing:
        raise ValueError(f"pings lacks column(s) {sorted(missing)}")
    if pings["team_id"].isna().any():
        raise ValueError("pings has rows without team_id")
    team: IntArray = np.asarray(pings["team_id"].to_numpy(dtype=np.int64), dtype=np.int64)
    ts = _utc_ns(pings["ts"], "ts")
    grids = pings["grid_id"].astype("Int64")
    grid_na: BoolArray = np.asarray(grids.isna().to_numpy(dtype=bool), dtype=bool)
    grid: IntArray = np.asarray(grids.to_numpy(dtype=np.int64, na_value=0), dtype=np.int64)
    if team.size > 1:
        ordered = np.all((team[1:] > team[:-1]) | ((team[1:] == team[:-1]) & (ts[1:] >= ts[:-1])))
        if not ordered:
            # Two stable sorts beat np.lexsort by ~2x: timsort is fast on the nearly
            # time-ordered rows storage returns, and small team codes get a radix sort.
            team_code, team_ids = _dense_codes(team)
            small = np.int16 if len(team_ids) < 2**15 else np.int64
            order = np.argsort(ts, kind="stable")
            order = order[np.argsort(team_code[order].astype(small), kind="stable")]
            team, ts, grid, grid_na = team[order], ts[order], grid[order], grid_na[order]
    return team, ts, grid, grid_na


def _local_boundaries(
    lo_ns: int,
    hi_ns: int,
    tz: ZoneInfo,
    hours: tuple[int, ...] = (0, NIGHT_END_HOUR, NIGHT_START_HOUR),
) -> tuple[IntArray, IntArray, BoolArray]:
    """Return the UTC instants of the given local hours on every local day around a span.

    The instants are sorted and start at least a day before ``lo_ns`` and end at least a day
    after ``hi_ns``. ``slot_day[i]`` (days since the epoch) and ``slot_night[i]`` describe the
    slot ``[bounds[i], bounds[i + 1])``. A local time that does not exist (a DST jump) moves
    forward; an ambiguous one takes its first occurrence.
    """
    first = pd.Timestamp(lo_ns, unit="ns", tz=UTC).tz_convert(tz).date() - timedelta(days=1)
    last = pd.Timestamp(hi_ns, unit="ns", tz=UTC).tz_convert(tz).date() + timedelta(days=2)
    days = pd.date_range(first, last, freq="D", unit="s")
    day_numbers = days.to_numpy().astype("datetime64[D]").astype(np.int64)
    hour_array = np.asarray(hours, dtype=np.int64)
    walls = np.repeat(days.to_numpy(), len(hours)) + np.tile(hour_array * 3600, len(days)).astype(
        "timedelta64[s]"
    )
    local = pd.DatetimeIndex(walls).tz_localize(
        tz, ambiguous=np.ones(walls.size, dtype=bool), nonexistent="shift_forward"
    )
    bounds = np.asarray(local.tz_convert(UTC).as_unit("ns").asi8, dtype=np.int64)
    slot_day = np.repeat(day_numbers, len(hours))
    slot_hour = np.tile(hour_array, len(days))
    order = np.argsort(bounds, kind="stable")
    bounds, slot_day, slot_hour = bounds[order], slot_day[order], slot_hour[order]
    distinct = np.ones(bounds.size, dtype=bool)
    distinct[:-1] = bounds[1:] != bounds[:-1]
    bounds, slot_day, slot_hour = bounds[distinct], slot_day[distinct], slot_hour[distinct]
    slot_night = (slot_hour >= NIGHT_START_HOUR) | (slot_hour < NIGHT_END_HOUR)
    return bounds, slot_day, np.asarray(slot_night, dtype=bool)


def _period_codes(day: IntArray, period: PeriodKind) -> tuple[IntArray, list[str]]:
    """Return a code per day number and the sorted period labels the codes index."""
    first = int(day.min())
    offset = day - first
    present = np.flatnonzero(np.bincount(offset))
    labels = [period_of(_EPOCH + timedelta(days=first + int(o)), period).label for o in present]
    uniques = sorted(set(labels))
    position = {label: i for i, label in enumerate(uniques)}
    code_of_offset = np.full(int(offset.max()) + 1, -1, dtype=np.int64)
    code_of_offset[present] = [position[label] for label in labels]
    return code_of_offset[offset], uniques


def _empty_segments() -> pd.DataFrame:
    """Return a segments frame with no rows and the right dtypes."""
    empty = np.array([], dtype=np.int64)
    return pd.DataFrame(
        {
            "team_id": empty,
            "grid_id": pd.array(empty, dtype="Int64"),
            "start": _utc_index(empty),
            "end": _utc_index(empty),
            "minutes": np.array([], dtype=np.float64),
            "night": np.array([], dtype=bool),
            "local_date": np.array([], dtype="datetime64[ns]"),
            "visit_start": np.array([], dtype=bool),
        }
    )


def _empty_dosage() -> pd.DataFrame:
    """Return a dosage frame with no rows and the right dtypes."""
    empty = np.array([], dtype=np.int64)
    return pd.DataFrame(
        {
            "grid_id": empty,
            "period": np.array([], dtype=object),
            "patrol_minutes": np.array([], dtype=np.float64),
            "patrol_night_minutes": np.array([], dtype=np.float64),
            "patrol_visits": empty,
            "patrol_teams": empty,
            "last_visit_at": _utc_index(empty),
        }
    )
