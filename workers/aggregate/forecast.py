"""Per-grid risk forecast and its rolling-origin back-test, over a daily count matrix.

Pure functions, no database and no Celery: the engine builds a matrix of daily incident counts
(rows are grid ids, columns consecutive local dates, zeros filled) and calls
:func:`forecast_counts` for the next week, month or quarter, and :func:`backtest` to score the
same model, and the naive baseline "last period's counts" (:func:`naive_forecast`), on the
data's own history. A forecast for a period only ever sees the days before the period starts,
so any past period can be forecast and checked against what happened.

The scorecard follows the hot-spot literature: flag the grids with the highest forecast until
they cover 5 %, 10 % or 20 % of the area; the *hit rate* is the share of the period's incidents
that fell in them and the *Predictive Accuracy Index* is hit rate / area share (Chainey,
Tompson & Uhlig 2008, "The utility of hotspot mapping for predicting spatial patterns of
crime"). Count errors (MAE, RMSE, Poisson deviance) are reported beside it, so a model that does
not beat the baseline is seen not to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, sparse

#: Shares of the total area at which the scorecard flags grids.
COVERAGES: tuple[float, ...] = (0.05, 0.10, 0.20)
#: Relative slack when a cumulative area is compared with a coverage threshold, so that
#: ``0.1 * 30`` grids of 1 km² flags exactly 3 grids despite floating-point rounding.
AREA_TOLERANCE = 1e-9
#: Forecasts are floored here inside the Poisson deviance used to *fit* weights (a zero forecast
#: for a grid that then has incidents would make the objective infinite).
FIT_FLOOR = 1e-6

Scores = dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class ForecastModel:
    """Parameters of the forecast; see :func:`forecast_counts` for the model itself.

    Parameters
    ----------
    recent_weight : float
        Weight of the grid's mean daily count over the last ``recent_days`` observed days.
    long_run_weight : float
        Weight of the grid's long-run mean daily count (last ``long_run_days`` observed days, or
        all history when shorter), shrunk toward the mean of all grids. With the two weights
        summing to 1 a stationary grid is forecast without bias; a fit may move the sum away
        from 1 to follow a trend.
    near_repeat_uplift : float
        Branching ratio of the near-repeat term: the expected number of follow-on incidents in
        the same grid caused by one incident *in excess of the grid's usual rate*, integrated
        over all future time. 0 switches the term off.
    neighbour_weight : float
        Strength of an excess incident in a neighbouring grid relative to one in the grid itself
        (applied to the mean excess over the grid's neighbours).
    recent_days : int
        Length of the "recent" window in days.
    long_run_days : int
        Length of the "long-run" window in days.
    near_repeat_days : int
        How far back (days before the target starts) incidents still raise the risk.
    near_repeat_decay_days : float
        e-folding time of the near-repeat kernel, in days.
    prior_days : float or None
        Strength, in days of observation, of the empirical-Bayes prior that shrinks each grid's
        long-run rate toward the mean of all grids passed in. ``None`` estimates it from the
        spread of the grids' rates (method of moments); 0 disables shrinkage.

    Notes
    -----
    The defaults are fixed, documented choices, not fitted values: an even-handed blend
    leaning on the long run (a month of counts is noisy at grid level), and a modest
    near-repeat term whose two-week reach and one-week decay follow the near-repeat
    burglary/theft studies (Johnson & Bowers 2004; Mohler et al. 2011). :func:`fit_model`
    fits the three weights on a data set's own history.
    """

    recent_weight: float = 0.3
    long_run_weight: float = 0.7
    near_repeat_uplift: float = 0.1
    neighbour_weight: float = 0.5
    recent_days: int = 28
    long_run_days: int = 365
    near_repeat_days: int = 14
    near_repeat_decay_days: float = 7.0
    prior_days: float | None = None

    def __post_init__(self) -> None:
        for name in ("recent_weight", "long_run_weight", "near_repeat_uplift", "neighbour_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ForecastModel.{name} must be a finite number >= 0, got {value}")
        for name in ("recent_days", "long_run_days", "near_repeat_days"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"ForecastModel.{name} must be at least 1 day")
        if not self.near_repeat_decay_days > 0:
            raise ValueError("ForecastModel.near_repeat_decay_days must be > 0")
        if self.prior_days is not None and not self.prior_days >= 0:
            raise ValueError("ForecastModel.prior_days must be None or >= 0")


#: The model used when none is given (module constant: a call in a default argument is B008).
DEFAULT_MODEL = ForecastModel()


# --------------------------------------------------------------------------------------------
# The count matrix
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matrix:
    """A validated count matrix: grid ids, consecutive days, float counts."""

    ids: pd.Index
    first_day: date
    values: np.ndarray  # shape (grids, days), float64

    @property
    def n_days(self) -> int:
        return int(self.values.shape[1])

    def position(self, day: date) -> int:
        """Column of ``day`` (may be negative or past the end)."""
        return (day - self.first_day).days


def _as_day(value: date, what: str) -> date:
    stamp = pd.Timestamp(value)
    if stamp != stamp.normalize():
        raise ValueError(f"{what} must be a date, got {value!r}")
    return stamp.date()


def _matrix(daily: pd.DataFrame, before: date | None = None) -> _Matrix:
    """Validate ``daily`` and return it as a matrix of consecutive days.

    Only columns strictly before ``before`` are read (when given). Missing dates inside the
    span are filled with zeros; duplicated grids or dates, times of day, NaN and negative counts
    are refused.
    """
    if not isinstance(daily, pd.DataFrame):
        raise TypeError(f"daily must be a pandas DataFrame, got {type(daily).__name__}")
    if daily.index.has_duplicates:
        raise ValueError("daily has duplicated grid ids")
    try:
        stamps = pd.DatetimeIndex(pd.to_datetime(daily.columns))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"daily's columns must be dates: {exc}") from exc
    if stamps.tz is not None or not (stamps == stamps.normalize()).all():
        raise ValueError("daily's columns must be local calendar dates, without time or zone")
    if stamps.has_duplicates:
        raise ValueError("daily has duplicated dates")
    keep = np.ones(len(stamps), dtype=bool)
    if before is not None:
        keep = stamps < pd.Timestamp(before)
    stamps = stamps[keep]
    if len(stamps) == 0:
        return _Matrix(daily.index, before or date(1970, 1, 1), np.zeros((len(daily), 0)))
    frame = daily.loc[:, keep]
    values = frame.to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("daily has missing counts (NaN); fill days without incidents with 0")
    if (values < 0).any():
        raise ValueError("daily has negative counts")
    day_numbers = stamps.to_numpy().astype("datetime64[D]").astype(np.int64)
    first = int(day_numbers.min())
    span = int(day_numbers.max()) - first + 1
    if span != len(day_numbers) or not (np.diff(day_numbers) > 0).all():
        full = np.zeros((len(daily), span))
        full[:, day_numbers - first] = values
        values = full
    first_day = date(1970, 1, 1) + timedelta(days=first)
    return _Matrix(daily.index, first_day, values)


def _neighbour_matrix(
    ids: pd.Index, neighbours: Mapping[Any, Sequence[Any]] | None
) -> sparse.csr_matrix | None:
    """Row-normalised adjacency: ``(W @ x)[i]`` is the mean of ``x`` over grid i's neighbours.

    Neighbours that are not rows of the matrix, and a grid listed as its own neighbour, are
    ignored; a grid without neighbours gets a zero row.
    """
    if not neighbours:
        return None
    cached = _NEIGHBOUR_CACHE.get(id(neighbours))
    if cached is not None and cached[0] is neighbours and cached[1].equals(ids):
        return cached[2]
    matrix = _build_neighbour_matrix(ids, neighbours)
    _NEIGHBOUR_CACHE.clear()
    _NEIGHBOUR_CACHE[id(neighbours)] = (neighbours, ids, matrix)
    return matrix


#: The last matrix built, keyed by the identity of its neighbour mapping (a run forecasts
#: three periods and back-tests two windows with the same grids and neighbours).
_NEIGHBOUR_CACHE: dict[int, tuple[Any, pd.Index, sparse.csr_matrix | None]] = {}


def _build_neighbour_matrix(
    ids: pd.Index, neighbours: Mapping[Any, Sequence[Any]]
) -> sparse.csr_matrix | None:
    position = {gid: i for i, gid in enumerate(ids.tolist())}
    rows: list[int] = []
    cols: list[int] = []
    for gid, listed in neighbours.items():
        i = position.get(gid)
        if i is None:
            continue
        js = sorted({position[n] for n in listed if n in position and position[n] != i})
        rows.extend([i] * len(js))
        cols.extend(js)
    if not rows:
        return None
    row_array = np.asarray(rows)
    degree = np.bincount(row_array, minlength=len(ids)).astype(np.float64)
    data = 1.0 / degree[row_array]
    return sparse.csr_matrix((data, (row_array, np.asarray(cols))), shape=(len(ids), len(ids)))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Components:
    """The pieces of the forecast at one origin; the forecast is linear in the weights."""

    target_days: int
    recent_rate: np.ndarray  # mean daily count, recent window
    long_rate: np.ndarray  # empirical-Bayes long-run daily rate
    near_repeat: np.ndarray  # sum over lags of kernel x count, own grid
    kernel_mass: float  # sum over the same lags of the kernel
    neighbours: sparse.csr_matrix | None

    def expected(
        self, recent_weight: float, long_run_weight: float, uplift: float, nu: float
    ) -> np.ndarray:
        """Return the expected incidents per grid in the target window (floored at 0)."""
        baseline = recent_weight * self.recent_rate + long_run_weight * self.long_rate
        excess = self.near_repeat - self.kernel_mass * baseline
        if self.neighbours is not None and nu > 0:
            # One-sided: a burst next door raises a grid's risk, a quiet fortnight next door
            # says little about it (and must not push a cold grid beside a hot one to zero).
            excess = excess + nu * np.maximum(self.neighbours @ excess, 0.0)
        expected = self.target_days * baseline + uplift * excess
        return np.maximum(expected, 0.0)


def _shrunk_rate(totals: np.ndarray, exposure_days: int, prior_days: float | None) -> np.ndarray:
    """Gamma-Poisson empirical-Bayes daily rate per grid (Marshall 1991, method of moments).

    With grid totals ``X_i`` over ``E`` days, the prior is a gamma with the mean ``m`` of the
    grids' rates and a strength of ``beta`` days; the posterior mean is
    ``(X_i + beta * m) / (E + beta)``. Estimated, ``beta = m / (s^2 - m / E)``: ``s^2`` is the
    variance of the raw rates and ``s^2 - m / E`` what is left of it once Poisson noise is
    taken away, so the more the grids really differ, the less they are shrunk (all the way to
    ``m`` when nothing is left). The total over grids is preserved.
    """
    rates = totals / exposure_days
    if len(rates) == 0:
        return rates
    mean = float(rates.mean())
    if mean == 0.0 or len(rates) == 1:
        return rates
    if prior_days is None:
        between = float(rates.var(ddof=1)) - mean / exposure_days
        if between <= 0:
            return np.full_like(rates, mean)
        beta = mean / between
    else:
        beta = float(prior_days)
    return (totals + beta * mean) / (exposure_days + beta)


def _components(
    history: np.ndarray,
    gap_days: int,
    target_days: int,
    model: ForecastModel,
    neighbours: sparse.csr_matrix | None,
) -> _Components:
    """Compute the forecast's pieces from ``history`` alone (all of it lies before the target).

    ``history`` holds the observed days before the target, oldest first; ``gap_days`` is the
    number of unobserved days between its last column and the target's first day.
    """
    n_days = history.shape[1]
    if n_days == 0:
        raise ValueError("no history before the target window: nothing to forecast from")
    recent_n = min(model.recent_days, n_days)
    recent_rate = history[:, n_days - recent_n :].sum(axis=1) / recent_n
    long_n = min(model.long_run_days, n_days)
    long_rate = _shrunk_rate(history[:, n_days - long_n :].sum(axis=1), long_n, model.prior_days)
    # Near repeat: an incident a days before the target (on average a - 0.5 days before its
    # first instant) adds uplift * g(t) with g(t) = exp(-t / tau) / tau, whose mass inside the
    # target window is exp(-(a - 0.5) / tau) * (1 - exp(-D / tau)).
    near_n = max(0, min(n_days, model.near_repeat_days - gap_days))
    tau = model.near_repeat_decay_days
    lags = gap_days + np.arange(near_n, 0, -1, dtype=np.float64)
    kernel = np.exp(-(lags - 0.5) / tau) * (1.0 - math.exp(-target_days / tau))
    near_repeat = history[:, n_days - near_n :] @ kernel if near_n else np.zeros(history.shape[0])
    return _Components(
        target_days=target_days,
        recent_rate=recent_rate,
        long_rate=long_rate,
        near_repeat=near_repeat,
        kernel_mass=float(kernel.sum()),
        neighbours=neighbours,
    )


def _model_expected(components: _Components, model: ForecastModel) -> np.ndarray:
    return components.expected(
        model.recent_weight,
        model.long_run_weight,
        model.near_repeat_uplift,
        model.neighbour_weight,
    )


def _check_days(value: int, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{what} must be a whole number of days >= 1, got {value!r}")
    return int(value)


def forecast_counts(
    daily: pd.DataFrame,
    target_start: date,
    target_days: int,
    model: ForecastModel = DEFAULT_MODEL,
    neighbours: dict[int, list[int]] | None = None,
) -> pd.Series:
    r"""Forecast the incidents per grid in ``[target_start, target_start + target_days)``.

    For grid *i*, with the daily baseline rate

    .. math:: b_i = w_r \bar c_i^{(28)} + w_l \tilde c_i^{(365)}

    (the mean daily count over the last 28 observed days, and over the last 365, or all
    history, shrunk toward the mean of all grids by a gamma-Poisson empirical-Bayes prior), the
    forecast for a window of *D* days is

    .. math:: \hat y_i = D b_i + \eta \left[e_i + \nu \max(0, \operatorname{mean}_{j \sim i}
              e_j)\right], \qquad e_i = \sum_{a=1}^{14} k_D(a) (c_{i,a} - b_i)

    where :math:`c_{i,a}` is the count *a* days before the window starts and
    :math:`k_D(a) = e^{-(a - 1/2)/\tau}(1 - e^{-D/\tau})` is the share of an exponential
    near-repeat kernel that falls inside the window; the result is floored at 0.

    Why this model: grid counts are sparse, so a month is a noisy estimate of a grid's rate and
    the long run (shrunk for grids with few incidents) carries most of the weight, while the
    recent mean follows genuine change. The near-repeat term is the conditional intensity of a
    self-exciting (Hawkes) process (Mohler et al. 2011) written relative to the stationary rate:
    only incidents *in excess of* a grid's usual level raise its forecast, and a quiet
    fortnight lowers it slightly, so a grid with a steady rate is forecast without bias, while
    a burst in the grid or its neighbours — the near-repeat pattern of burglary and theft
    (Johnson & Bowers 2004) — raises the next days' risk and fades with time (a quiet
    neighbourhood does not lower it: the spill-over is one-sided). It has few
    parameters, each with a meaning, and :func:`backtest` shows whether it beats the naive
    baseline on the data at hand.

    Parameters
    ----------
    daily : pandas.DataFrame
        Daily counts: rows are grid ids, columns consecutive local dates (``datetime.date``,
        ``Timestamp`` or ISO strings), zeros filled. Only columns strictly before
        ``target_start`` are read. Dates missing inside the span count as zero days; when the
        history ends before ``target_start`` the rate windows end at its last day and the
        near-repeat lags count the unobserved days in between.
    target_start : datetime.date
        First day of the target window.
    target_days : int
        Length of the target window in days.
    model : ForecastModel
        Parameters.
    neighbours : dict, optional
        Grid id -> ids of its neighbouring grids (e.g. queen contiguity), for the near-repeat
        spill-over. Ids that are not rows of ``daily`` are ignored.

    Returns
    -------
    pandas.Series
        Expected incidents (float) in the target window, indexed like ``daily``'s rows.

    Raises
    ------
    ValueError
        When there is no history before ``target_start`` or ``daily`` is malformed.
    """
    start = _as_day(target_start, "target_start")
    days = _check_days(target_days, "target_days")
    matrix = _matrix(daily, before=start)
    if matrix.n_days == 0:
        raise ValueError(f"daily has no dates before {start.isoformat()}")
    gap = matrix.position(start) - matrix.n_days
    components = _components(
        matrix.values, gap, days, model, _neighbour_matrix(matrix.ids, neighbours)
    )
    return pd.Series(_model_expected(components, model), index=daily.index, name="expected")


def naive_forecast(daily: pd.DataFrame, target_start: date, target_days: int) -> pd.Series:
    """Forecast last period's counts: the baseline every forecast is scored against.

    Parameters
    ----------
    daily : pandas.DataFrame
        Daily counts as for :func:`forecast_counts`; only columns before ``target_start``
        are read.
    target_start : datetime.date
        First day of the target window.
    target_days : int
        Length of the target window (and of the previous window that is copied).

    Returns
    -------
    pandas.Series
        Counts (float) over the last ``target_days`` observed days before ``target_start`` —
        the window ``[target_start - target_days, target_start)`` when the data reaches the day
        before the target.

    Raises
    ------
    ValueError
        When fewer than ``target_days`` days of history precede ``target_start``.
    """
    start = _as_day(target_start, "target_start")
    days = _check_days(target_days, "target_days")
    matrix = _matrix(daily, before=start)
    return pd.Series(_naive(matrix.values, days), index=daily.index, name="expected")


def _naive(history: np.ndarray, target_days: int) -> np.ndarray:
    n_days = history.shape[1]
    if n_days < target_days:
        raise ValueError(
            f"the naive baseline needs {target_days} days of history, only {n_days} available"
        )
    return history[:, n_days - target_days :].sum(axis=1)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def coverage_key(coverage: float) -> str:
    """Key of a coverage share in score dicts: ``0.05`` -> ``"5"``, ``0.025`` -> ``"2.5"``."""
    return f"{round(coverage * 100, 6):g}"


def scorecard(
    expected: pd.Series,
    actual: pd.Series,
    area_km2: pd.Series,
    coverages: Sequence[float] = COVERAGES,
) -> Scores:
    """Score a forecast: hit rate and PAI when the grids with the highest forecast are flagged.

    Grids are ranked by ``expected`` (highest first, ties broken by ascending grid id) and
    flagged until their cumulative area first reaches each coverage share of the total area
    (so the flagged share may exceed the target by part of one grid; the share actually
    flagged is reported and used).

    Parameters
    ----------
    expected : pandas.Series
        Forecast per grid, indexed by grid id; its index defines the grids scored.
    actual : pandas.Series
        Incidents that happened per grid; grids missing from it had none. Incidents in grids
        absent from ``expected`` are an error (they would silently leave the denominator).
    area_km2 : pandas.Series
        Area per grid (> 0), covering every grid of ``expected``.
    coverages : sequence of float
        Area shares in (0, 1].

    Returns
    -------
    dict
        ``{"pai": {"5": x, ...}, "hit_rate": {...}, "area_share": {...}}`` keyed by
        :func:`coverage_key`. ``hit_rate`` = share of the incidents in flagged grids,
        ``area_share`` = flagged area / total area, ``pai`` = hit_rate / area_share. Hit rate
        and PAI are ``None`` when no incident happened (undefined, not zero).
    """
    grids = expected.index
    if grids.has_duplicates or actual.index.has_duplicates or area_km2.index.has_duplicates:
        raise ValueError("duplicated grid ids in expected, actual or area_km2")
    if len(grids) == 0:
        raise ValueError("no grids to score")
    forecast = expected.to_numpy(dtype=np.float64)
    if not np.isfinite(forecast).all():
        raise ValueError("expected has NaN or infinite values")
    outside = actual[~actual.index.isin(grids)]
    if (outside.fillna(0) != 0).any():
        raise ValueError(
            f"actual has incidents in grids without a forecast: {list(outside.index)}"
        )
    counts = actual.reindex(grids).fillna(0).to_numpy(dtype=np.float64)
    if (counts < 0).any():
        raise ValueError("actual has negative counts")
    areas = area_km2.reindex(grids).to_numpy(dtype=np.float64)
    if np.isnan(areas).any():
        missing = list(grids[np.isnan(areas)])
        raise ValueError(f"area_km2 is missing grids: {missing}")
    if not (areas > 0).all() or not np.isfinite(areas).all():
        raise ValueError("area_km2 must be finite and > 0 for every grid")
    ranking = pd.DataFrame({"expected": forecast, "grid": grids})
    order = ranking.sort_values(
        ["expected", "grid"], ascending=[False, True], kind="mergesort"
    ).index.to_numpy()
    cum_area = np.cumsum(areas[order])
    cum_counts = np.cumsum(counts[order])
    total_area = float(cum_area[-1])
    total_counts = float(cum_counts[-1])
    result: Scores = {"pai": {}, "hit_rate": {}, "area_share": {}}
    for coverage in coverages:
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage shares must be in (0, 1], got {coverage}")
        threshold = coverage * total_area * (1 - AREA_TOLERANCE)
        flagged = min(int(np.searchsorted(cum_area, threshold, side="left")) + 1, len(order))
        area_share = float(cum_area[flagged - 1]) / total_area
        key = coverage_key(coverage)
        result["area_share"][key] = area_share
        if total_counts > 0:
            hit_rate = float(cum_counts[flagged - 1]) / total_counts
            result["hit_rate"][key] = hit_rate
            result["pai"][key] = hit_rate / area_share
        else:
            result["hit_rate"][key] = None
            result["pai"][key] = None
    return result


def _errors(expected: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE and mean Poisson deviance per grid (deviance None when infinite)."""
    mae = float(np.abs(expected - actual).mean())
    rmse = float(np.sqrt(((expected - actual) ** 2).mean()))
    if ((expected <= 0) & (actual > 0)).any():
        deviance: float | None = None
    else:
        deviance = float(_poisson_deviance(expected, actual))
    return {"mae": mae, "rmse": rmse, "poisson_deviance": deviance}


def _poisson_deviance(expected: np.ndarray, actual: np.ndarray) -> float:
    """Mean unit Poisson deviance 2 [y log(y / mu) - (y - mu)] (y log y = 0 at y = 0)."""
    positive = actual > 0
    log_term = np.zeros_like(actual)
    log_term[positive] = actual[positive] * np.log(actual[positive] / expected[positive])
    return float((2.0 * (log_term - (actual - expected))).mean())


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _average(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Average window scores; a nested score is averaged over windows where it is defined.

    The Poisson deviance is averaged only when it is finite in every window.
    """
    averaged: dict[str, Any] = {}
    for name in ("pai", "hit_rate", "area_share"):
        keys = windows[0][name].keys()
        averaged[name] = {k: _mean_or_none([w[name][k] for w in windows]) for k in keys}
    for name in ("mae", "rmse", "expected_total", "actual_total"):
        averaged[name] = float(np.mean([w[name] for w in windows]))
    deviances = [w["poisson_deviance"] for w in windows]
    averaged["poisson_deviance"] = (
        float(np.mean(deviances)) if all(d is not None for d in deviances) else None
    )
    return averaged


def _window_origin(matrix: _Matrix, origin: date, window_days: int) -> int:
    """Column of ``origin``, checking the whole window was observed."""
    start = matrix.position(origin)
    if start < 1:
        raise ValueError(f"no history before origin {origin.isoformat()}")
    if start + window_days > matrix.n_days:
        raise ValueError(
            f"the window starting {origin.isoformat()} ({window_days} days) runs past the "
            "last day of the data; only fully observed windows are scored"
        )
    return start


def backtest(
    daily: pd.DataFrame,
    area_km2: pd.Series,
    window_days: int,
    origins: Sequence[date],
    model: ForecastModel = DEFAULT_MODEL,
    neighbours: dict[int, list[int]] | None = None,
    coverages: Sequence[float] = COVERAGES,
) -> dict[str, Any]:
    """Rolling-origin evaluation of the model against the naive baseline.

    For each origin the model and :func:`naive_forecast` forecast
    ``[origin, origin + window_days)`` from the days before the origin only (the forecasting
    code is handed nothing else), and both are scored against what then happened.

    Parameters
    ----------
    daily : pandas.DataFrame
        Daily counts as for :func:`forecast_counts`. Every window must lie inside it.
    area_km2 : pandas.Series
        Area per grid, for the scorecard.
    window_days : int
        Length of each forecast window.
    origins : sequence of datetime.date
        First days of the windows (see :func:`rolling_origins`). Each needs at least
        ``window_days`` days of history, for the baseline.
    model : ForecastModel
        Parameters. Weights fitted on the same windows make the back-test in-sample; fit on
        earlier origins (or use the defaults) for an honest score.
    neighbours : dict, optional
        As for :func:`forecast_counts`.
    coverages : sequence of float
        Area shares of the scorecard.

    Returns
    -------
    dict
        ``model`` and ``baseline``: the :func:`scorecard` keys (``pai``, ``hit_rate``,
        ``area_share``) averaged over windows where defined, plus ``mae``, ``rmse`` and
        ``poisson_deviance`` per grid and window (the deviance is ``None`` when infinite, as for
        the baseline whenever a grid with no incidents last period has some in the next; RMSE
        and deviance score a mean forecast properly, MAE favours predicting zero for sparse
        grids), and ``expected_total`` / ``actual_total`` per window (calibration).
        ``windows`` (int), ``window_days`` (int), ``origins`` (ISO dates), ``parameters`` (the
        model's fields) and ``per_window`` (each origin's scores, to show the spread).
    """
    days = _check_days(window_days, "window_days")
    if not origins:
        raise ValueError("backtest needs at least one origin")
    starts = [_as_day(o, "origin") for o in origins]
    matrix = _matrix(daily)
    weights = _neighbour_matrix(matrix.ids, neighbours)
    per_window: list[dict[str, Any]] = []
    for origin in starts:
        start = _window_origin(matrix, origin, days)
        history = matrix.values[:, :start]  # the only data either forecast sees
        model_expected = _model_expected(_components(history, 0, days, model, weights), model)
        baseline_expected = _naive(history, days)
        actual_counts = matrix.values[:, start : start + days].sum(axis=1)
        actual = pd.Series(actual_counts, index=matrix.ids)
        scored: dict[str, Any] = {"origin": origin.isoformat()}
        for name, expected in (("model", model_expected), ("baseline", baseline_expected)):
            scores: dict[str, Any] = dict(
                scorecard(pd.Series(expected, index=matrix.ids), actual, area_km2, coverages)
            )
            scores.update(_errors(expected, actual_counts))
            scores["expected_total"] = float(expected.sum())
            scores["actual_total"] = float(actual_counts.sum())
            scored[name] = scores
        per_window.append(scored)
    return {
        "model": _average([w["model"] for w in per_window]),
        "baseline": _average([w["baseline"] for w in per_window]),
        "windows": len(per_window),
        "window_days": days,
        "origins": [o.isoformat() for o in starts],
        "parameters": asdict(model),
        "per_window": per_window,
    }


def rolling_origins(daily: pd.DataFrame, window_days: int, count: int = 6) -> list[date]:
    """Origins of the last ``count`` back-to-back windows that end on the data's last day.

    Windows without at least ``window_days`` days of history before them are left out, so
    fewer than ``count`` origins come back when the history is short. Build the matrix up to
    the last *complete* day, or the latest window is scored on a partial period.

    Parameters
    ----------
    daily : pandas.DataFrame
        Daily counts as for :func:`forecast_counts`.
    window_days : int
        Length of each window.
    count : int
        Number of windows wanted.

    Returns
    -------
    list of datetime.date
        Oldest first.
    """
    days = _check_days(window_days, "window_days")
    matrix = _matrix(daily)
    origins = []
    for k in range(count, 0, -1):
        start = matrix.n_days - k * days
        if start >= days:
            origins.append(matrix.first_day + timedelta(days=start))
    return origins


def fit_model(
    daily: pd.DataFrame,
    window_days: int,
    origins: Sequence[date],
    model: ForecastModel = DEFAULT_MODEL,
    neighbours: dict[int, list[int]] | None = None,
) -> ForecastModel:
    """Fit ``recent_weight``, ``long_run_weight`` and ``near_repeat_uplift`` on history.

    Minimises the mean Poisson deviance of the forecasts for the windows
    ``[origin, origin + window_days)`` (forecasts floored at :data:`FIT_FLOOR`), bounded
    (weights in [0, 2]; uplift in [0, 1], since a branching ratio of 1 or more describes an
    explosive process) with L-BFGS-B, starting from ``model``; the other
    parameters are kept. Score the result with :func:`backtest` on *later* origins than those
    used here, or the back-test is in-sample.

    Parameters
    ----------
    daily : pandas.DataFrame
        Daily counts as for :func:`forecast_counts`.
    window_days : int
        Length of each fitting window.
    origins : sequence of datetime.date
        First days of the fitting windows.
    model : ForecastModel
        Starting point and fixed parameters.
    neighbours : dict, optional
        As for :func:`forecast_counts`.

    Returns
    -------
    ForecastModel
        ``model`` with the three fitted weights (unchanged if the optimiser fails).
    """
    days = _check_days(window_days, "window_days")
    if not origins:
        raise ValueError("fit_model needs at least one origin")
    matrix = _matrix(daily)
    weights = _neighbour_matrix(matrix.ids, neighbours)
    windows = []
    for origin in (_as_day(o, "origin") for o in origins):
        start = _window_origin(matrix, origin, days)
        components = _components(matrix.values[:, :start], 0, days, model, weights)
        windows.append((components, matrix.values[:, start : start + days].sum(axis=1)))

    def objective(theta: np.ndarray) -> float:
        total = 0.0
        for components, actual in windows:
            expected = components.expected(
                float(theta[0]), float(theta[1]), float(theta[2]), model.neighbour_weight
            )
            total += _poisson_deviance(np.maximum(expected, FIT_FLOOR), actual)
        return total / len(windows)

    start_point = np.array([model.recent_weight, model.long_run_weight, model.near_repeat_uplift])
    fitted = optimize.minimize(
        objective,
        np.clip(start_point, 0.0, [2.0, 2.0, 1.0]),
        method="L-BFGS-B",
        bounds=[(0.0, 2.0), (0.0, 2.0), (0.0, 1.0)],
    )
    if not fitted.success or objective(fitted.x) > objective(start_point):
        return model
    return replace(
        model,
        recent_weight=float(fitted.x[0]),
        long_run_weight=float(fitted.x[1]),
        near_repeat_uplift=float(fitted.x[2]),
    )
