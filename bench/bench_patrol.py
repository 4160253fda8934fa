"""Benchmark patrol dosage against a straightforward per-row pandas version.

Synthesises ``--teams`` patrol teams (default 100) walking over a lattice of ``--grids`` cells
(default 5,000 = 100 x 50, synthetic grid ids; a team straying off the lattice is "outside
every grid") for ``--days`` days (default 120) in Asia/Shanghai. Patrols last 1-4 hours, are
spread over day and night, and total ``--hours`` patrol hours (default 50,000). For each value
of ``--pings`` (default 1,500,000 and 3,000,000, i.e. one ping per 2 min and per 1 min on
average, each interval jittered by +-25 %) it times, over ``--repeat`` runs, the first (cold:
fresh memory, as in the engine's one call per run), the best and the median run of:

- :func:`presence_segments` on pings ordered by team and time (as the engine loads them with
  ``ORDER BY team_id, ts``), and once on shuffled pings (the sort included);
- :func:`grid_dosage` for each of the five period kinds;
- :func:`time_since_last_visit` and :func:`team_activity` (roster = the teams plus
  ``--idle-teams`` teams that never log a ping);
- the total: presence + five dosages + time since last visit + team activity.

The BASELINE, measured in the same run: ``groupby("team_id").apply`` of a per-team function
that walks the pings with ``itertuples``, cuts each interval at local midnight / 06:00 / 20:00
with Timestamp arithmetic, then ``groupby([grid, local date]).agg`` (minutes, night minutes,
visits, distinct teams, last visit) -- the obvious pandas version of the same rules, daily
periods only. It runs on whole teams totalling about ``--baseline-sample`` pings (default
100,000) and is scaled linearly to the full ping count (its cost is per ping). Its per-grid,
per-day figures are checked against the vectorised ones on the same sample; the script exits
non-zero with ``CHECK FAILED`` when they differ.

Examples
--------
::

    .venv/bin/python bench/bench_patrol.py
    .venv/bin/python bench/bench_patrol.py --pings 300000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from gridwatch.workers.aggregate.patrol import (
    DEFAULT_MAX_GAP,
    grid_dosage,
    presence_segments,
    team_activity,
    time_since_last_visit,
)

TZ = ZoneInfo("Asia/Shanghai")
KINDS = ("day", "week", "month", "quarter", "year")
LATTICE_WIDTH = 100


def segmented_cumsum(values: np.ndarray, group_starts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each index in ``group_starts`` (sorted, includes 0)."""
    total = np.cumsum(values)
    before = np.zeros(len(group_starts), dtype=total.dtype)
    before[1:] = total[group_starts[1:] - 1]
    lengths = np.diff(np.append(group_starts, len(values)))
    return total - np.repeat(before, lengths)


def synthesize(
    n_pings: int, hours: float, teams: int, grids: int, days: int, seed: int
) -> pd.DataFrame:
    """Return pings (team_id, ts UTC, grid_id Int64) ordered by team and time."""
    rng = np.random.default_rng(seed)
    mean_interval = hours * 3600 / n_pings
    height = max(1, grids // LATTICE_WIDTH)

    # Patrols of 1-4 h until the hours are used up.
    durations = rng.uniform(3600, 4 * 3600, size=int(hours / 2.5 * 1.2) + 10)
    used = np.cumsum(durations)
    n_patrols = int(np.searchsorted(used, hours * 3600)) + 1
    durations = durations[:n_patrols]
    durations[-1] -= used[n_patrols - 1] - hours * 3600

    # Uneven workloads, each team's patrols spread over the period with >= 30 min between.
    weights = rng.uniform(0.4, 1.6, size=teams)
    team = np.sort(rng.choice(teams, size=n_patrols, p=weights / weights.sum()))
    first_of_team = np.flatnonzero(np.r_[True, team[1:] != team[:-1]])
    per_team = np.diff(np.append(first_of_team, n_patrols))
    busy = np.add.reduceat(durations, first_of_team)
    free = days * 86400 - busy - per_team * 1800
    if (free <= 0).any():
        raise SystemExit("too many patrol hours for the period: raise --days or --teams")
    raw = rng.exponential(size=n_patrols)
    share = raw / np.repeat(np.add.reduceat(raw, first_of_team), per_team)
    gaps = 1800 + share * np.repeat(free, per_team) * 0.98
    previous = np.r_[0.0, durations[:-1]]
    previous[first_of_team] = 0.0
    starts = segmented_cumsum(gaps + previous, first_of_team)

    # Pings every mean_interval +-25 % from each patrol's start.
    counts = np.maximum(1, np.rint(durations / mean_interval).astype(np.int64))
    first_ping = np.r_[0, np.cumsum(counts)[:-1]]
    total = int(counts.sum())
    steps = rng.uniform(0.75, 1.25, size=total) * mean_interval
    steps[first_ping] = 0.0
    offsets = segmented_cumsum(steps, first_ping)
    patrol_of_ping = np.repeat(np.arange(n_patrols), counts)
    origin = pd.Timestamp("2026-04-01", tz=TZ).tz_convert("UTC").as_unit("ns").value
    # whole seconds, as GPS loggers write them
    ts = origin + np.rint(starts[patrol_of_ping] + offsets).astype(np.int64) * 10**9

    # A random walk from near the team's home cell, one step every ~6 pings.
    home_x = rng.integers(0, LATTICE_WIDTH, size=teams)
    home_y = rng.integers(0, height, size=teams)
    move = rng.random(total) < 1 / 6
    direction = rng.integers(0, 4, size=total)
    dx = np.where(move, np.array([1, -1, 0, 0])[direction], 0)
    dy = np.where(move, np.array([0, 0, 1, -1])[direction], 0)
    start_x = home_x[team] + rng.integers(-3, 4, size=n_patrols)
    start_y = home_y[team] + rng.integers(-3, 4, size=n_patrols)
    dx[first_ping], dy[first_ping] = start_x, start_y
    x = segmented_cumsum(dx, first_ping)
    y = segmented_cumsum(dy, first_ping)
    inside = (x >= 0) & (x < LATTICE_WIDTH) & (y >= 0) & (y < height)
    grid_id = pd.arrays.IntegerArray(
        np.where(inside, y * LATTICE_WIDTH + x + 1, 0).astype(np.int64), ~inside
    )
    return pd.DataFrame(
        {
            "team_id": team[patrol_of_ping] + 1,
            "ts": pd.DatetimeIndex(ts.astype("datetime64[ns]")).tz_localize("UTC"),
            "grid_id": grid_id,
        }
    )


def roster(teams: int, idle: int, seed: int) -> pd.DataFrame:
    """Return the team roster: the walking teams plus ``idle`` that never log a ping."""
    rng = np.random.default_rng(seed + 1)
    ids = np.arange(1, teams + idle + 1)
    return pd.DataFrame(
        {
            "code": [f"T{i:04d}" for i in ids],
            "kind": rng.choice(["police", "township", "village"], size=len(ids)),
        },
        index=pd.Index(ids, name="team_id"),
    )


# --- the baseline: the obvious pandas version of the same rules ----------------------------


def _next_boundary(instant: pd.Timestamp) -> pd.Timestamp:
    """Return the first local midnight / 06:00 / 20:00 after ``instant``."""
    local = instant.tz_convert(TZ)
    day = local.normalize().tz_localize(None)
    for hours in (6, 20, 24):
        candidate = (day + pd.Timedelta(hours=hours)).tz_localize(TZ)
        if candidate > local:
            return candidate.tz_convert("UTC")
    raise AssertionError("unreachable")


def _baseline_team(df: pd.DataFrame, max_gap: pd.Timedelta) -> pd.DataFrame:
    df = df.sort_values("ts")
    times = list(df["ts"])
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    regular = [s for s in steps if pd.Timedelta(0) < s <= max_gap]
    nominal = min(statistics.median(regular), max_gap) if regular else max_gap
    rows: list[dict[str, Any]] = []
    previous_end, previous_grid = None, object()
    for i, ping in enumerate(df.itertuples(index=False)):
        step = steps[i] if i < len(steps) else None
        end = ping.ts + (step if step is not None and step <= max_gap else nominal)
        if end <= ping.ts:
            continue
        grid = None if pd.isna(ping.grid_id) else int(ping.grid_id)
        visit = previous_end != ping.ts or previous_grid != grid
        previous_end, previous_grid = end, grid
        cursor = ping.ts
        while cursor < end:
            piece_end = min(end, _next_boundary(cursor))
            local = cursor.tz_convert(TZ)
            rows.append(
                {
                    "team_id": ping.team_id,
                    "grid_id": grid,
                    "local_date": local.date(),
                    "minutes": (piece_end - cursor).total_seconds() / 60,
                    "night": local.hour >= 20 or local.hour < 6,
                    "visit": visit and cursor == ping.ts,
                    "end": piece_end,
                }
            )
            cursor = piece_end
    return pd.DataFrame(rows)


def baseline_daily_dosage(pings: pd.DataFrame, max_gap: pd.Timedelta) -> pd.DataFrame:
    """Per (grid, local date): the same figures as grid_dosage(..., 'day'), row by row."""
    pieces = pings.groupby("team_id", group_keys=False)[["team_id", "ts", "grid_id"]].apply(
        _baseline_team, max_gap
    )
    pieces = pieces[pieces["grid_id"].notna()]
    pieces = pieces.assign(night_minutes=pieces["minutes"].where(pieces["night"], 0.0))
    return (
        pieces.groupby(["grid_id", "local_date"])
        .agg(
            patrol_minutes=("minutes", "sum"),
            patrol_night_minutes=("night_minutes", "sum"),
            patrol_visits=("visit", "sum"),
            patrol_teams=("team_id", "nunique"),
            last_visit_at=("end", "max"),
        )
        .reset_index()
    )


# --- timing ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float, float]:
    """Run ``fn`` ``repeat`` times; return the last result and the first, best, median seconds.

    The first run is "cold": it pays the page faults of fresh memory, as the engine's single
    call per run does.
    """
    seconds = []
    result = None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - began)
    return result, seconds[0], min(seconds), statistics.median(seconds)


def bench_one(n_pings: int, args: argparse.Namespace) -> bool:
    """Time one ping count; return whether the baseline check passed."""
    began = time.perf_counter()
    pings = synthesize(n_pings, args.hours, args.teams, args.grids, args.days, args.seed)
    teams = roster(args.teams, args.idle_teams, args.seed)
    made = time.perf_counter() - began
    as_of = (pd.Timestamp("2026-04-01", tz=TZ) + pd.Timedelta(days=args.days)).to_pydatetime()
    span = (pings["ts"].max() - pings["ts"].min()) / pd.Timedelta(days=1)
    outside = pings["grid_id"].isna().mean()
    print(
        f"\n== {len(pings):,} pings, {args.teams} teams (+{args.idle_teams} idle), "
        f"{pings['grid_id'].nunique():,} of {args.grids:,} grids visited, {span:.0f} days, "
        f"{outside:.1%} outside grids, mean interval {args.hours * 3600 / len(pings):.0f} s "
        f"(synthesised in {made:.1f} s)"
    )

    rep = args.repeat
    rows: list[tuple[str, float, float, float]] = []
    segments, *times = timed(lambda: presence_segments(pings, tz=TZ), rep)
    rows.append(("presence_segments (ordered input)", *times))
    hours = segments["minutes"].sum() / 60
    shuffled = pings.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    _, *shuffled_times = timed(lambda: presence_segments(shuffled, tz=TZ), rep)
    dosages = {}
    for kind in KINDS:
        dosages[kind], *times = timed(lambda k=kind: grid_dosage(segments, k), rep)
        rows.append((f"grid_dosage({kind!r})", *times))
    _, *times = timed(lambda: time_since_last_visit(segments, as_of), rep)
    rows.append(("time_since_last_visit", *times))
    activity, *times = timed(
        lambda: team_activity(pings, teams, as_of, TZ, segments=segments), rep
    )
    rows.append(("team_activity (given segments)", *times))
    total = tuple(sum(r[i] for r in rows) for i in (1, 2, 3))
    rows.append(("TOTAL patrol dosage (all five periods)", *total))
    rows.append(("presence_segments (shuffled input, sorts)", *shuffled_times))
    day = tuple(rows[0][i] + rows[1][i] for i in (1, 2, 3))
    rows.append(("presence + grid_dosage('day') only", *day))
    _, *times = timed(lambda: team_activity(pings, teams, as_of, TZ), rep)
    rows.append(("team_activity (computes its own segments)", *times))

    print(f"   presence {hours:,.0f} h in {len(segments):,} pieces; {rep} runs each:")
    print(f"   {'':<44} {'first':>9} {'best':>9} {'median':>9}")
    for name, first, b, m in rows:
        print(f"   {name:<44} {first:7.3f} s {b:7.3f} s {m:7.3f} s")
    total_best, day_best = total[1], day[1]
    print(
        f"   grids x days {len(dosages['day']):,}, grids x quarters {len(dosages['quarter']):,};"
        f" inactive teams {int(activity['inactive'].sum())} of {len(activity)}"
    )

    # Baseline on whole teams totalling about --baseline-sample pings.
    sizes = pings.groupby("team_id").size()
    chosen = sizes.index[: max(1, int(np.searchsorted(sizes.cumsum(), args.baseline_sample)))]
    sample = pings[pings["team_id"].isin(chosen)].reset_index(drop=True)
    expected, base_seconds, *_ = timed(lambda: baseline_daily_dosage(sample, DEFAULT_MAX_GAP), 1)
    fast, _, fast_best, _ = timed(
        lambda: grid_dosage(presence_segments(sample, tz=TZ), "day"), max(rep, 1)
    )
    scaled = base_seconds * len(pings) / len(sample)
    print(
        f"   BASELINE groupby(team).apply + itertuples, daily only: {base_seconds:.2f} s on "
        f"{len(sample):,} pings ({len(chosen)} teams) -> {scaled:.0f} s scaled to "
        f"{len(pings):,} pings"
    )
    print(
        f"   same sample vectorised (presence + day dosage): {fast_best:.3f} s "
        f"-> {base_seconds / fast_best:.0f}x; full run: baseline (scaled) / "
        f"presence+day = {scaled / day_best:.0f}x, / TOTAL (five periods) = "
        f"{scaled / total_best:.0f}x"
    )
    return check(expected, fast)


def check(expected: pd.DataFrame, fast: pd.DataFrame) -> bool:
    """Compare the baseline's daily figures with the vectorised ones."""
    expected = expected.assign(period=expected["local_date"].map(lambda d: d.isoformat()))
    merged = fast.merge(
        expected.astype({"grid_id": "int64"}), on=["grid_id", "period"], suffixes=("", "_ref")
    )
    ok = len(merged) == len(fast) == len(expected)
    for column in ("patrol_minutes", "patrol_night_minutes"):
        ok &= bool(np.allclose(merged[column], merged[f"{column}_ref"], atol=1e-6))
    for column in ("patrol_visits", "patrol_teams"):
        ok &= bool((merged[column] == merged[f"{column}_ref"]).all())
    # medians of an even count of intervals round half-to-even here, down in the baseline
    drift = (merged["last_visit_at"] - merged["last_visit_at_ref"]).abs()
    ok &= bool((drift <= pd.Timedelta(microseconds=1)).all())
    print(
        f"   CHECK baseline == vectorised on {len(expected):,} grid-days: "
        + ("ok" if ok else "CHECK FAILED")
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pings", type=int, nargs="+", default=[1_500_000, 3_000_000], help="ping counts"
    )
    parser.add_argument("--hours", type=float, default=50_000, help="total patrol hours")
    parser.add_argument("--teams", type=int, default=100)
    parser.add_argument("--idle-teams", type=int, default=30)
    parser.add_argument("--grids", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--seed", type=int, default=20260401)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-sample", type=int, default=100_000)
    args = parser.parse_args(argv)

    print(
        f"bench_patrol: {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}; "
        f"{args.hours:,.0f} patrol hours, max_gap {DEFAULT_MAX_GAP}, tz {TZ.key}, "
        f"seed {args.seed}"
    )
    ok = True
    for n in args.pings:
        ok &= bench_one(n, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS (ru_maxrss) {peak:,.0f} MB; target: TOTAL <= 2 s on 2 cores")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
