"""A small regularised model of the sense of security on grid metrics, honest about its fit.

Ridge regression (closed form, NumPy only) of an area's single-item security % on the grid
metrics of the same quarter (:data:`gridwatch.targeting.linkage.LINK_METRICS`), pooled over
areas and quarters. Rates per 1,000 residents enter as ``log(1 + rate)`` (the survey falls with
the *ratio* of crime rates, not their difference) and every feature is standardised, so a
coefficient is "security points per standard deviation of the feature".

How far it holds
----------------
* The penalty ``alpha`` is chosen by cross-validation in which whole areas are held out
  together (an area's quarters are not independent), from :data:`ALPHAS`.
* The reported **CV R²** is *nested*: each outer fold chooses its own ``alpha`` on its training
  areas only, then predicts areas it has never seen; the benchmark is the training mean. An R²
  at or below zero means the metrics do not predict security better than the county average,
  and the model is then reported but marked ``used: false``.
* Coefficient intervals come from a cluster bootstrap (areas resampled with their quarters) at
  the chosen ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine

from gridwatch.config import Settings
from gridwatch.targeting.linkage import LINK_METRICS, linked_rows

FloatArray = NDArray[np.float64]
#: Area codes of the rows (a list or an object array).
Groups = Sequence[Any] | NDArray[Any]

#: Penalties tried by cross-validation (on standardised features).
ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 25))
DEFAULT_FOLDS = 5
DEFAULT_REPLICATES = 200
DEFAULT_SEED = 20262
#: A feature missing in more than this share of rows is left out rather than imputed.
MAX_MISSING_SHARE = 0.4
#: Quarter-on-quarter changes are clipped to this range (a grid going from 1 to 9 incidents
#: is +800 % and would dominate a linear model).
CHANGE_CLIP = (-100.0, 300.0)


def transform_feature(name: str, value: float | None) -> float:
    """Return a metric on the scale the model uses (``NaN`` when missing)."""
    if value is None:
        return math.nan
    x = float(value)
    if not math.isfinite(x):
        return math.nan
    if name.endswith("_per_1000"):
        return math.log1p(max(x, 0.0))
    if name.startswith("change_"):
        return min(max(x, CHANGE_CLIP[0]), CHANGE_CLIP[1])
    return x


@dataclass(frozen=True)
class Design:
    """Rows ready for the model: features (NaN imputed), target and cluster of each row."""

    features: list[str]
    x: FloatArray
    y: FloatArray
    groups: NDArray[np.object_]
    periods: NDArray[np.object_]
    dropped: dict[str, str]


def design_matrix(
    rows: Sequence[dict[str, Any]],
    features: Sequence[str] = tuple(LINK_METRICS),
    metrics_key: str = "metrics",
    target: str = "security_pct",
    extra: Sequence[str] = (),
) -> Design:
    """Build the design matrix from linked rows (:func:`gridwatch.targeting.linkage.linked_rows`).

    Features missing in more than :data:`MAX_MISSING_SHARE` of rows, or constant, are dropped
    (with the reason in ``dropped``); other missing values take the feature's median. ``extra``
    names row fields (not metrics) used as features as they are, e.g. last quarter's score.
    """
    keep_rows = [r for r in rows if r.get(target) is not None]
    names = list(features) + list(extra)
    raw = np.full((len(keep_rows), len(names)), np.nan)
    for i, row in enumerate(keep_rows):
        metrics = row.get(metrics_key) or {}
        for j, name in enumerate(names):
            value = row.get(name) if name in extra else metrics.get(name)
            raw[i, j] = transform_feature(name, value)
    kept: list[int] = []
    dropped: dict[str, str] = {}
    for j, name in enumerate(names):
        column = raw[:, j]
        present = np.isfinite(column)
        if len(column) == 0 or present.mean() < 1.0 - MAX_MISSING_SHARE:
            dropped[name] = "missing"
            continue
        if np.ptp(column[present]) == 0:
            dropped[name] = "constant"
            continue
        column[~present] = float(np.median(column[present]))
        kept.append(j)
    return Design(
        features=[names[j] for j in kept],
        x=raw[:, kept],
        y=np.array([float(r[target]) for r in keep_rows]),
        groups=np.array([r["area_code"] for r in keep_rows], dtype=object),
        periods=np.array([r["period"] for r in keep_rows], dtype=object),
        dropped=dropped,
    )


@dataclass(frozen=True)
class RidgeFit:
    """A fitted ridge model on standardised features."""

    alpha: float
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float

    def predict(self, x: FloatArray) -> FloatArray:
        """Predict the target for rows ``x`` (original feature scale)."""
        return np.asarray(((x - self.mean) / self.scale) @ self.coef + self.intercept)


def fit_ridge(x: FloatArray, y: FloatArray, alpha: float) -> RidgeFit:
    """Fit ridge regression with an unpenalised intercept on standardised columns."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale
    intercept = float(y.mean())
    gram = z.T @ z + alpha * np.eye(z.shape[1])
    coef = np.linalg.solve(gram, z.T @ (y - intercept)) if z.shape[1] else np.zeros(0)
    return RidgeFit(alpha, mean, scale, coef, intercept)


def group_folds(groups: Groups, k: int, seed: int) -> list[NDArray[np.int64]]:
    """Split row indices into ``k`` folds that keep each group (area) whole."""
    labels = np.asarray(groups, dtype=object)
    unique = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    fold_of = {unique[g]: position % k for position, g in enumerate(order)}
    assignment = np.array([fold_of[g] for g in labels], dtype=np.int64)
    return [np.flatnonzero(assignment == f) for f in range(k) if (assignment == f).any()]


def choose_alpha(
    x: FloatArray,
    y: FloatArray,
    groups: Groups,
    alphas: Sequence[float] = ALPHAS,
    k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> float:
    """Return the penalty with the smallest grouped cross-validated squared error."""
    folds = group_folds(groups, k, seed)
    if len(folds) < 2:
        return float(alphas[len(alphas) // 2])
    errors = []
    for alpha in alphas:
        sse = 0.0
        for test in folds:
            train = np.setdiff1d(np.arange(len(y)), test)
            fit = fit_ridge(x[train], y[train], alpha)
            sse += float(((fit.predict(x[test]) - y[test]) ** 2).sum())
        errors.append(sse)
    return float(alphas[int(np.argmin(errors))])


def nested_cv(
    x: FloatArray,
    y: FloatArray,
    groups: Groups,
    alphas: Sequence[float] = ALPHAS,
    k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> dict[str, float | None]:
    """Out-of-sample R² and MAE with ``alpha`` chosen inside each training fold.

    R² compares the squared error with that of predicting each held-out area by the training
    areas' mean: 0 is "no better than the average", negative is worse.
    """
    folds = group_folds(groups, k, seed)
    if len(folds) < 2:
        return {"r2": None, "mae": None, "baseline_mae": None}
    labels = np.asarray(groups, dtype=object)
    sse = sst = abs_err = abs_base = 0.0
    for f, test in enumerate(folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        alpha = choose_alpha(x[train], y[train], labels[train], alphas, k, seed + f + 1)
        fit = fit_ridge(x[train], y[train], alpha)
        predicted = fit.predict(x[test])
        mean = float(y[train].mean())
        sse += float(((predicted - y[test]) ** 2).sum())
        sst += float(((mean - y[test]) ** 2).sum())
        abs_err += float(np.abs(predicted - y[test]).sum())
        abs_base += float(np.abs(mean - y[test]).sum())
    return {
        "r2": 1.0 - sse / sst if sst > 0 else None,
        "mae": abs_err / len(y),
        "baseline_mae": abs_base / len(y),
    }


def bootstrap_coefficients(
    x: FloatArray,
    y: FloatArray,
    groups: Groups,
    alpha: float,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> FloatArray:
    """Coefficients refitted on cluster-bootstrap samples (areas drawn with replacement).

    Returns
    -------
    numpy.ndarray
        Shape ``(replicates, n_features)``, standardised like :attr:`RidgeFit.coef`.
    """
    labels = np.asarray(groups, dtype=object)
    unique, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    rng = np.random.default_rng(seed)
    out = np.empty((replicates, x.shape[1]))
    for b in range(replicates):
        chosen = rng.integers(0, len(unique), len(unique))
        index = np.concatenate([members[g] for g in chosen])
        out[b] = fit_ridge(x[index], y[index], alpha).coef
    return out


def security_model(
    rows: Sequence[dict[str, Any]],
    features: Sequence[str] = tuple(LINK_METRICS),
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    folds: int = DEFAULT_FOLDS,
) -> dict[str, Any]:
    """Fit and judge the ridge model of security % on the grid metrics of ``rows``.

    Parameters
    ----------
    rows : sequence of dict
        Linked rows (``area_code, period, security_pct, metrics``).
    features : sequence of str
        Metric names to use (default: every link metric).
    replicates, seed, folds : int
        Bootstrap size, random seed and cross-validation folds.

    Returns
    -------
    dict
        ``n, areas, quarters, features, dropped, alpha, cv_r2, cv_mae, baseline_mae, used``,
        ``verdict`` (one English sentence) and ``coefficients``: per feature ``coef`` (security
        points per SD), ``ci_low, ci_high`` (95 % cluster bootstrap), ``holds`` (interval
        excludes 0), ``expected_sign`` and ``as_expected``.
    """
    design = design_matrix(rows, features)
    n = len(design.y)
    areas = len(set(design.groups.tolist()))
    base: dict[str, Any] = {
        "n": n,
        "areas": areas,
        "quarters": sorted(set(design.periods.tolist())),
        "features": design.features,
        "dropped": design.dropped,
        "alpha": None,
        "cv_r2": None,
        "cv_mae": None,
        "baseline_mae": None,
        "used": False,
        "coefficients": [],
    }
    if areas < 2 * folds or not design.features:
        base["verdict"] = (
            f"too little data for a model ({n} rows from {areas} areas, "
            f"{len(design.features)} usable metrics)"
        )
        return base
    alpha = choose_alpha(design.x, design.y, design.groups, ALPHAS, folds, seed)
    cv = nested_cv(design.x, design.y, design.groups, ALPHAS, folds, seed)
    fit = fit_ridge(design.x, design.y, alpha)
    draws = bootstrap_coefficients(design.x, design.y, design.groups, alpha, replicates, seed)
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    coefficients: list[dict[str, Any]] = []
    for j, name in enumerate(design.features):
        sign = LINK_METRICS.get(name)
        coef = float(fit.coef[j])
        coefficients.append(
            {
                "feature": name,
                "coef": round(coef, 3),
                "ci_low": round(float(low[j]), 3),
                "ci_high": round(float(high[j]), 3),
                "holds": bool(low[j] > 0 or high[j] < 0),
                "expected_sign": sign,
                "as_expected": None if sign is None or coef == 0 else (coef > 0) == (sign > 0),
            }
        )
    coefficients.sort(key=lambda c: -abs(c["coef"]))
    r2 = cv["r2"]
    used = r2 is not None and r2 > 0
    if r2 is None:
        verdict = "no variation in security to explain; model not used"
    elif used:
        verdict = (
            f"the grid metrics explain about {100 * r2:.0f} % of the variation in security "
            f"in areas the model has not seen (cross-validated R² {r2:.2f}, mean error "
            f"{cv['mae']:.2f} points against {cv['baseline_mae']:.2f} for the average)"
        )
    else:
        verdict = (
            f"the grid metrics do not predict security better than the county average "
            f"(cross-validated R² {r2:.2f}); the model is not used"
        )
    base.update(
        alpha=round(alpha, 4),
        cv_r2=None if r2 is None else round(r2, 3),
        cv_mae=None if cv["mae"] is None else round(float(cv["mae"]), 3),
        baseline_mae=None if cv["baseline_mae"] is None else round(float(cv["baseline_mae"]), 3),
        used=used,
        verdict=verdict,
        coefficients=coefficients,
        intercept=round(fit.intercept, 3),
    )
    return base


def security_model_report(
    engine: Engine,
    settings: Settings,
    level: str = "village",
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Fit :func:`security_model` on every quarter with survey figures and published metrics.

    Returns
    -------
    dict
        The fields of :func:`security_model` plus ``level``.
    """
    rows = linked_rows(engine, settings, level)
    return {"level": level, **security_model(rows, replicates=replicates, seed=seed)}
