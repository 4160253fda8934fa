"""Risk forecast and back-test: pure functions over a daily count matrix (no database)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from gridwatch.workers.aggregate.forecast import (
    ForecastModel,
    backtest,
    coverage_key,
    fit_model,
    forecast_counts,
    naive_forecast,
    rolling_origins,
    scorecard,
)

START = date(2024, 1, 1)


def day(offset: int) -> date:
    return START + timedelta(days=offset)


def matrix(counts: np.ndarray, ids=None) -> pd.DataFrame:
    """Daily count matrix from an array (grids x days), columns from START."""
    n_grids, n_days = counts.shape
    index = pd.Index(range(1, n_grids + 1) if ids is None else ids)
    return pd.DataFrame(counts, index=index, columns=[day(d) for d in range(n_days)])


def lattice_neighbours(ids: list[int], side: int) -> dict[int, list[int]]:
    """Rook neighbours of ids laid out row by row on a lattice ``side`` wide."""
    neighbours = {}
    rows = len(ids) // side
    for k, gid in enumerate(ids):
        r, c = divmod(k, side)
        near = [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        neighbours[gid] = [ids[a * side + b] for a, b in near if 0 <= a < rows and 0 <= b < side]
    return neighbours


def stable_hot_spots(seed: int, n_grids: int = 300, n_days: int = 730):
    """Grids with stable, very unequal rates (mean 0.05 a day) and Poisson noise."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(0.5, 0.1, n_grids)
    counts = rng.poisson(rates[:, None], (n_grids, n_days))
    daily = matrix(counts)
    area = pd.Series(rng.uniform(0.5, 2.0, n_grids), index=daily.index)
    return daily, area, rates


# --------------------------------------------------------------------------------------------
# forecast_counts / naive_forecast
# --------------------------------------------------------------------------------------------


def test_forecast_uses_only_days_before_target_start():
    rng = np.random.default_rng(7)
    daily = matrix(rng.poisson(0.3, (36, 500)))
    neighbours = lattice_neighbours(list(daily.index), side=6)
    target = day(400)
    before = forecast_counts(daily, target, 28, neighbours=neighbours)
    naive_before = naive_forecast(daily, target, 28)

    changed = daily.copy()
    future = [c for c in changed.columns if c >= target]
    changed[future] = rng.poisson(50.0, (36, len(future)))
    pd.testing.assert_series_equal(
        forecast_counts(changed, target, 28, neighbours=neighbours), before
    )
    pd.testing.assert_series_equal(naive_forecast(changed, target, 28), naive_before)
    # Cutting the future off entirely gives the same numbers too.
    past = daily[[c for c in daily.columns if c < target]]
    pd.testing.assert_series_equal(
        forecast_counts(past, target, 28, neighbours=neighbours), before
    )

    # ...while a change on the last day before the target does move it (the test can fail).
    changed_past = daily.copy()
    changed_past[day(399)] = 40
    assert not forecast_counts(changed_past, target, 28, neighbours=neighbours).equals(before)


def test_constant_poisson_process_is_forecast_at_rate_times_days():
    rng = np.random.default_rng(11)
    rates = np.linspace(0.5, 5.0, 60)
    daily = matrix(rng.poisson(rates[:, None], (60, 730)))
    neighbours = lattice_neighbours(list(daily.index), side=10)
    expected = forecast_counts(daily, day(730), 28, neighbours=neighbours)
    truth = rates * 28
    assert np.all(np.abs(expected.to_numpy() / truth - 1) < 0.25)
    assert expected.sum() == pytest.approx(truth.sum(), rel=0.03)
    # No systematic bias from the near-repeat term on a process without near repeats.
    assert np.mean(expected.to_numpy() / truth) == pytest.approx(1.0, abs=0.03)


def test_recent_burst_raises_the_forecast():
    # Two grids with the same 365-day total; grid 2 had its incidents in a recent burst.
    counts = np.zeros((2, 365))
    counts[0, ::5] = 1  # 73 incidents spread over the year
    counts[1, 300:365:5] = 1  # 13 in the last two months ...
    counts[1, 360:365] += 12  # ... and 60 in the last 5 days
    assert counts[0].sum() == counts[1].sum()
    daily = matrix(counts)
    target = day(365)
    default = forecast_counts(daily, target, 7)
    assert default[2] > default[1]
    # The near-repeat term alone (no recent-window weight) also ranks the burst higher,
    # and more so for the next week than, per day, for the next quarter (it decays).
    near_repeat_only = ForecastModel(recent_weight=0.0, long_run_weight=1.0)
    week = forecast_counts(daily, target, 7, model=near_repeat_only)
    quarter = forecast_counts(daily, target, 91, model=near_repeat_only)
    assert week[2] > week[1]
    assert (week[2] - week[1]) / 7 > (quarter[2] - quarter[1]) / 91
    # With neither term the two grids are the same.
    flat = forecast_counts(daily, target, 7, model=replace(near_repeat_only, near_repeat_uplift=0))
    assert flat[2] == pytest.approx(flat[1])


def test_burst_in_a_neighbour_raises_the_forecast():
    counts = np.ones((4, 200)) * 0.0
    counts[:, ::4] = 1  # every grid: one incident every 4 days
    counts[1, 190:200] += 5  # grid 2 has a burst; grid 1 is its neighbour, grid 3 is not
    daily = matrix(counts)
    neighbours = {1: [2], 2: [1], 3: [4], 4: [3]}
    expected = forecast_counts(daily, day(200), 7, neighbours=neighbours)
    assert expected[1] > expected[3]
    assert expected[1] < expected[2]
    assert expected[4] == pytest.approx(expected[3])


def test_forecast_accepts_timestamp_columns_unsorted_and_missing_days():
    rng = np.random.default_rng(3)
    counts = rng.poisson(0.5, (5, 120))
    counts[:, 50] = 0  # this day will be missing from the frame
    daily = matrix(counts)
    reference = forecast_counts(daily, day(120), 14)
    other = daily.drop(columns=[day(50)])
    other.columns = pd.to_datetime(other.columns)
    other = other[other.columns[::-1]]
    pd.testing.assert_series_equal(forecast_counts(other, day(120), 14), reference)


def test_history_ending_early_still_forecasts_with_decayed_near_repeat():
    counts = np.zeros((2, 100))
    counts[:, ::2] = 1
    counts[1, 95:100] += 6
    daily = matrix(counts)
    right_after = forecast_counts(daily, day(100), 7, model=ForecastModel(recent_weight=0))
    ten_days_later = forecast_counts(daily, day(110), 7, model=ForecastModel(recent_weight=0))
    assert right_after[2] - right_after[1] > ten_days_later[2] - ten_days_later[1] > 0


def test_no_history_or_short_history_is_an_error():
    daily = matrix(np.ones((3, 10)))
    with pytest.raises(ValueError, match="no dates before"):
        forecast_counts(daily, day(0), 7)
    with pytest.raises(ValueError, match="14 days of history"):
        naive_forecast(daily, day(10), 14)
    with pytest.raises(ValueError, match="target_days"):
        forecast_counts(daily, day(10), 0)
    bad = daily.astype(float)
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        forecast_counts(bad, day(10), 7)


def test_naive_forecast_is_last_periods_counts():
    counts = np.arange(60, dtype=float).reshape(2, 30)
    daily = matrix(counts)
    naive = naive_forecast(daily, day(30), 7)
    assert naive.tolist() == [counts[0, 23:30].sum(), counts[1, 23:30].sum()]
    # Columns on/after the target are ignored: the previous window ends the day before.
    assert naive_forecast(daily, day(20), 7).tolist() == [
        counts[0, 13:20].sum(),
        counts[1, 13:20].sum(),
    ]


# --------------------------------------------------------------------------------------------
# scorecard
# --------------------------------------------------------------------------------------------


def test_scorecard_on_a_hand_made_example():
    # Ranking by expected, ties by grid id: 10 (5), 20 (5), 30 (2), 40 (0).
    # Areas 1, 1, 2, 6 (total 10); actual 3, 1, 4, 2 (total 10).
    # 5 %  -> flag until area >= 0.5: grid 10           -> area 0.1, hits 3/10, PAI 3
    # 10 % -> flag until area >= 1.0: grid 10 (exactly) -> area 0.1, hits 3/10, PAI 3
    # 20 % -> flag until area >= 2.0: grids 10, 20      -> area 0.2, hits 4/10, PAI 2
    # 50 % -> flag until area >= 5.0: 10, 20, 30 (4), 40 -> area 1.0, hits 1, PAI 1
    ids = [40, 30, 20, 10]  # deliberately not in rank order
    expected = pd.Series([0.0, 2.0, 5.0, 5.0], index=ids)
    actual = pd.Series([2, 4, 1, 3], index=ids)
    area = pd.Series([6.0, 2.0, 1.0, 1.0], index=ids)
    result = scorecard(expected, actual, area, coverages=(0.05, 0.10, 0.20, 0.5))
    assert set(result) == {"pai", "hit_rate", "area_share"}
    assert result["hit_rate"] == pytest.approx({"5": 0.3, "10": 0.3, "20": 0.4, "50": 1.0})
    assert result["area_share"] == pytest.approx({"5": 0.1, "10": 0.1, "20": 0.2, "50": 1.0})
    assert result["pai"] == pytest.approx({"5": 3.0, "10": 3.0, "20": 2.0, "50": 1.0})
    # Swap which of the tied grids had the incidents: grid 10 is still flagged first.
    swapped = pd.Series([2, 4, 3, 1], index=ids)
    assert scorecard(expected, swapped, area)["hit_rate"]["5"] == pytest.approx(0.1)


def test_scorecard_thresholds_reached_exactly_flag_no_extra_grid():
    ids = list(range(30))
    expected = pd.Series(np.arange(30, 0, -1, dtype=float), index=ids)
    actual = pd.Series(1, index=ids)
    area = pd.Series(1.0, index=ids)
    result = scorecard(expected, actual, area, coverages=(0.1, 0.2))
    assert result["area_share"] == pytest.approx({"10": 0.1, "20": 0.2})
    assert result["pai"] == pytest.approx({"10": 1.0, "20": 1.0})


def test_scorecard_undefined_without_incidents_and_strict_on_inputs():
    expected = pd.Series([1.0, 0.5], index=[1, 2])
    area = pd.Series([1.0, 1.0], index=[1, 2])
    empty = scorecard(expected, pd.Series([0, 0], index=[1, 2]), area)
    assert empty["hit_rate"] == {"5": None, "10": None, "20": None}
    assert empty["pai"] == {"5": None, "10": None, "20": None}
    assert empty["area_share"]["5"] == pytest.approx(0.5)
    # Grids missing from actual had no incidents.
    assert scorecard(expected, pd.Series([2], index=[1]), area)["hit_rate"]["5"] == 1.0
    with pytest.raises(ValueError, match="without a forecast"):
        scorecard(expected, pd.Series([1, 1], index=[1, 3]), area)
    with pytest.raises(ValueError, match="missing grids"):
        scorecard(expected, pd.Series([1, 1], index=[1, 2]), area.iloc[:1])


def test_coverage_keys():
    assert [coverage_key(c) for c in (0.05, 0.10, 0.20, 0.025, 0.07)] == [
        "5",
        "10",
        "20",
        "2.5",
        "7",
    ]


# --------------------------------------------------------------------------------------------
# backtest / fit_model
# --------------------------------------------------------------------------------------------


def test_model_beats_naive_baseline_on_stable_hot_spots():
    daily, area, _ = stable_hot_spots(seed=20260101)
    origins = rolling_origins(daily, 7, count=6)
    result = backtest(daily, area, 7, origins)
    model, baseline = result["model"], result["baseline"]
    assert model["pai"]["10"] > 1.2 * baseline["pai"]["10"]
    assert model["hit_rate"]["10"] > baseline["hit_rate"]["10"]
    assert model["rmse"] < baseline["rmse"]
    # The baseline forecasts 0 for grids that then have incidents: infinite deviance.
    assert model["poisson_deviance"] is not None
    assert baseline["poisson_deviance"] is None


def test_backtest_never_sees_the_window_it_scores():
    # 20 grids of 1 km². Grids 7..20 have one incident every day; grid k (1..6) has 100 a day
    # inside window k and none at any other time. A forecast that peeked at its window would
    # flag grid k first and catch at least 1400 of the window's 1596 incidents (hit rate
    # > 0.87 at every coverage); one that does not has never seen grid k busy, ranks it below
    # every busy grid, and catches only background incidents (at most 4 x 14 of 1596).
    window = 14
    counts = np.zeros((20, 28 + 6 * window))
    counts[6:, :] = 1
    origins = []
    for k in range(6):
        first = 28 + k * window
        counts[k, first : first + window] = 100
        origins.append(day(first))
    daily = matrix(counts)
    area = pd.Series(1.0, index=daily.index)
    result = backtest(daily, area, window, origins)
    assert result["windows"] == 6
    for k, scored in enumerate(result["per_window"]):
        assert scored["model"]["actual_total"] == 100 * window + 14 * window
        for side in ("model", "baseline"):
            assert all(rate < 0.05 for rate in scored[side]["hit_rate"].values())
        # The same forecast, made directly from the days before the origin only.
        expected = forecast_counts(daily, origins[k], window)
        assert expected[k + 1] == expected.min()
    assert all(pai < 0.3 for pai in result["model"]["pai"].values())


def test_backtest_output_keys_and_types():
    daily, area, _ = stable_hot_spots(seed=5, n_grids=50, n_days=200)
    origins = rolling_origins(daily, 28, count=3)
    result = backtest(daily, area, 28, origins)
    assert {"model", "baseline", "windows", "window_days", "origins"} <= set(result)
    assert result["windows"] == 3 and isinstance(result["windows"], int)
    assert result["window_days"] == 28 and isinstance(result["window_days"], int)
    assert result["origins"] == [o.isoformat() for o in origins]
    for side in ("model", "baseline"):
        scores = result[side]
        for name in ("pai", "hit_rate", "area_share"):
            assert set(scores[name]) == {"5", "10", "20"}
            assert all(isinstance(v, float) for v in scores[name].values())
        for name in ("mae", "rmse", "expected_total", "actual_total"):
            assert isinstance(scores[name], float)
        assert scores["poisson_deviance"] is None or isinstance(scores["poisson_deviance"], float)
    assert result["parameters"]["recent_weight"] == ForecastModel().recent_weight
    assert len(result["per_window"]) == 3
    json.dumps(result, allow_nan=False)  # storable as strict JSON


def test_backtest_refuses_windows_it_cannot_score():
    daily = matrix(np.ones((3, 60)))
    area = pd.Series(1.0, index=daily.index)
    with pytest.raises(ValueError, match="runs past the last day"):
        backtest(daily, area, 14, [day(50)])
    with pytest.raises(ValueError, match="no history"):
        backtest(daily, area, 14, [day(0)])


def test_rolling_origins_are_back_to_back_and_end_on_the_last_day():
    daily = matrix(np.zeros((2, 100)))
    assert rolling_origins(daily, 7, count=3) == [day(79), day(86), day(93)]
    # Windows without a full period of history before them are dropped.
    assert rolling_origins(daily, 30, count=6) == [day(40), day(70)]


def test_fit_model_improves_in_sample_deviance_and_respects_bounds():
    daily, area, _ = stable_hot_spots(seed=9, n_grids=200, n_days=500)
    origins = rolling_origins(daily, 28, count=4)
    start = ForecastModel(recent_weight=0.9, long_run_weight=0.1, near_repeat_uplift=0.5)
    fitted = fit_model(daily, 28, origins, model=start)
    assert 0 <= fitted.recent_weight <= 2 and 0 <= fitted.long_run_weight <= 2
    assert 0 <= fitted.near_repeat_uplift <= 1
    assert fitted.recent_days == start.recent_days
    # Stable rates: the long run should carry the weight.
    assert fitted.long_run_weight > fitted.recent_weight
    before = backtest(daily, area, 28, origins, model=start)["model"]["poisson_deviance"]
    after = backtest(daily, area, 28, origins, model=fitted)["model"]["poisson_deviance"]
    assert after < before


def test_model_parameters_are_validated():
    with pytest.raises(ValueError, match="recent_weight"):
        ForecastModel(recent_weight=-0.1)
    with pytest.raises(ValueError, match="near_repeat_decay_days"):
        ForecastModel(near_repeat_decay_days=0)
