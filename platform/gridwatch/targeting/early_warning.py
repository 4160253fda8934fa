"""Early warning: each township's security % predicted before its survey comes out.

A township's score next quarter is predicted from what is known before that survey: its last
survey score and the grid metrics of the last complete quarter (``lead`` 1, the default), or,
once a quarter is over but its survey not yet published, that quarter's own metrics (``lead``
0). The model is the ridge regression of :mod:`gridwatch.targeting.model`, its penalty chosen
by cross-validation over townships.

Validation is leave-one-quarter-out: each past quarter is predicted by a model fitted on the
others only, and the error (MAE) and how many of the quarter's actual bottom 5 the predicted
bottom 5 caught are shown next to the same figures for the naive forecast "same score as last
quarter" (persistence). The model is used for the forward prediction only when it beats
persistence on those held-out quarters; otherwise persistence is, and the report says so.

The chance of landing in the bottom 5 comes from the held-out errors: each township's
prediction plus a normal error with the held-out root-mean-square error, ranked over
seeded draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period
from gridwatch.targeting.ladder import accountability_rules, places_from_bottom, scores_of_record
from gridwatch.targeting.linkage import LINK_METRICS, MetricReader, link_values
from gridwatch.targeting.model import (
    ALPHAS,
    choose_alpha,
    design_matrix,
    fit_ridge,
    transform_feature,
)
from gridwatch.targeting.rules import TargetingError

DEFAULT_SEED = 20263
DEFAULT_DRAWS = 2000
#: A township whose chance of the bottom N next quarter is at least this is "at risk".
AT_RISK_PROBABILITY = 0.25
LAST_SCORE = "last_score"
PREVIOUS = "prev_"
#: Metrics also taken from the quarter before the metrics quarter (their change is informative).
PREVIOUS_METRICS = tuple(m for m in LINK_METRICS if m != "change_prev_pct")
FEATURES = tuple(LINK_METRICS) + tuple(PREVIOUS + m for m in PREVIOUS_METRICS)


def _shift(label: str, quarters: int) -> str:
    period = parse_period(label)
    for _ in range(quarters):
        period = period.previous()
    return period.label


def _next_quarter(label: str) -> str:
    return parse_period(label).next().label


def warning_rows(
    quarterly: dict[str, dict[str, float]],
    metrics_for: Any,
    population: dict[str, int | None],
    targets: Sequence[str],
    lead: int,
) -> list[dict[str, Any]]:
    """Build one row per township and target quarter: features known before its survey.

    Parameters
    ----------
    quarterly : dict
        Quarter label → area code → score of record.
    metrics_for : callable
        ``metrics_for(label)`` → area code → published metrics (empty when none).
    population : dict
        Area code → residents.
    targets : sequence of str
        Quarters to build rows for (a target without a score gets ``security_pct`` None).
    lead : int
        0: the target quarter's own metrics; 1: the quarter before's.
    """
    out = []
    for target in targets:
        source = _shift(target, lead)
        metrics = metrics_for(source)
        if not metrics:
            continue
        before = metrics_for(_shift(source, 1))
        last = quarterly.get(_shift(target, 1), {})
        scores = quarterly.get(target, {})
        codes = sorted(set(metrics) & (set(scores) | set(last)))
        for code in codes:
            values = link_values(metrics[code], population.get(code))
            earlier = before.get(code)
            if earlier is not None:
                # The quarter before too: a score moves with the change in what drives it.
                previous = link_values(earlier, population.get(code))
                values.update({f"{PREVIOUS}{k}": previous[k] for k in PREVIOUS_METRICS})
            out.append(
                {
                    "area_code": code,
                    "period": target,
                    "metrics_period": source,
                    "security_pct": scores.get(code),
                    LAST_SCORE: last.get(code),
                    "metrics": values,
                }
            )
    return out


def _fit_predict(
    train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]], seed: int
) -> np.ndarray:
    """Fit on ``train`` (alpha by grouped CV) and predict ``test`` with the same features.

    The model predicts the *change* from last quarter's score, so the ridge penalty shrinks
    towards persistence ("same as last quarter"), the forecast to beat, not towards the mean.
    A township without a last score gets the training mean.
    """
    with_last = [
        dict(r, change_from_last=r["security_pct"] - r[LAST_SCORE])
        for r in train
        if r[LAST_SCORE] is not None
    ]
    mean_level = float(np.mean([r["security_pct"] for r in train]))
    # Last quarter's metrics only when every row has them: a median stand-in for a whole
    # quarter's would read as "no change" and bias that quarter.
    complete = all(f"{PREVIOUS}{PREVIOUS_METRICS[0]}" in r["metrics"] for r in [*train, *test])
    features = FEATURES if complete else tuple(LINK_METRICS)
    design = design_matrix(with_last, features, target="change_from_last", extra=(LAST_SCORE,))
    names = design.features
    if len(set(design.groups.tolist())) < 10 or not names:
        return _persistence(test, mean_level)
    alpha = choose_alpha(design.x, design.y, design.groups, ALPHAS, 5, seed)
    fit = fit_ridge(design.x, design.y, alpha)
    medians = np.median(design.x, axis=0)
    x = np.empty((len(test), len(names)))
    for i, row in enumerate(test):
        for j, name in enumerate(names):
            value = row.get(LAST_SCORE) if name == LAST_SCORE else row["metrics"].get(name)
            x[i, j] = _scaled(name, value, medians[j])
    change = fit.predict(x)
    last = np.array([np.nan if r[LAST_SCORE] is None else r[LAST_SCORE] for r in test])
    return np.where(np.isfinite(last), last + change, mean_level)


def _scaled(name: str, value: float | None, fallback: float) -> float:
    x = transform_feature(name, value)
    return fallback if math.isnan(x) else x


def _persistence(rows: Sequence[dict[str, Any]], fallback: float) -> np.ndarray:
    return np.array([r[LAST_SCORE] if r[LAST_SCORE] is not None else fallback for r in rows])


def _bottom(codes: Sequence[str], scores: Sequence[float], n: int) -> set[str]:
    """Codes in the bottom ``n`` (ties at the boundary all in, as on the ladder)."""
    places = places_from_bottom(dict(zip(codes, scores, strict=True)))
    return {code for code, place in places.items() if place <= n}


def validate(
    rows: Sequence[dict[str, Any]], bottom_n: int, seed: int = DEFAULT_SEED
) -> dict[str, Any]:
    """Leave-one-quarter-out validation of the model against persistence.

    Returns
    -------
    dict
        ``quarters``: per held-out quarter ``period, townships, mae, persistence_mae,
        bottom_hits, persistence_bottom_hits, bottom_n``; and over all of them ``mae,
        persistence_mae, rmse, bottom_hit_rate, persistence_bottom_hit_rate, beats_persistence``.
    """
    known = [r for r in rows if r["security_pct"] is not None]
    quarters = sorted({r["period"] for r in known}, key=lambda p: parse_period(p).start)
    per_quarter = []
    errors: list[float] = []
    naive_errors: list[float] = []
    hits = naive_hits = possible = 0
    for index, quarter in enumerate(quarters):
        test = [r for r in known if r["period"] == quarter]
        train = [r for r in known if r["period"] != quarter]
        if len({r["area_code"] for r in train}) < 10 or not test:
            continue
        predicted = _fit_predict(train, test, seed + index)
        actual = np.array([r["security_pct"] for r in test], dtype=float)
        naive = _persistence(test, float(np.mean([r["security_pct"] for r in train])))
        codes = [r["area_code"] for r in test]
        truth = _bottom(codes, actual.tolist(), bottom_n)
        model_bottom = _bottom(codes, predicted.tolist(), bottom_n)
        naive_bottom = _bottom(codes, naive.tolist(), bottom_n)
        quarter_hits = len(truth & model_bottom)
        quarter_naive_hits = len(truth & naive_bottom)
        hits += quarter_hits
        naive_hits += quarter_naive_hits
        possible += len(truth)
        errors.extend((predicted - actual).tolist())
        naive_errors.extend((naive - actual).tolist())
        per_quarter.append(
            {
                "period": quarter,
                "townships": len(test),
                "mae": round(float(np.abs(predicted - actual).mean()), 3),
                "persistence_mae": round(float(np.abs(naive - actual).mean()), 3),
                "bottom_n": len(truth),
                "bottom_hits": quarter_hits,
                "persistence_bottom_hits": quarter_naive_hits,
            }
        )
    if not errors:
        return {
            "quarters": [],
            "mae": None,
            "persistence_mae": None,
            "rmse": None,
            "persistence_rmse": None,
            "bottom_hit_rate": None,
            "persistence_bottom_hit_rate": None,
            "beats_persistence": False,
        }
    err, naive_err = np.array(errors), np.array(naive_errors)
    mae, naive_mae = float(np.abs(err).mean()), float(np.abs(naive_err).mean())
    return {
        "quarters": per_quarter,
        "mae": round(mae, 3),
        "persistence_mae": round(naive_mae, 3),
        "rmse": round(float(np.sqrt((err**2).mean())), 3),
        "persistence_rmse": round(float(np.sqrt((naive_err**2).mean())), 3),
        "bottom_hit_rate": round(hits / possible, 3) if possible else None,
        "persistence_bottom_hit_rate": round(naive_hits / possible, 3) if possible else None,
        "beats_persistence": mae < naive_mae,
    }


def bottom_probabilities(
    predicted: Sequence[float], sigma: float, bottom_n: int, draws: int, seed: int
) -> np.ndarray:
    """Share of simulated outcomes (prediction + N(0, sigma)) in which each area is bottom N."""
    mean = np.asarray(predicted, dtype=float)
    if len(mean) == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    simulated = mean[None, :] + rng.normal(0.0, max(sigma, 1e-9), (draws, len(mean)))
    places = np.argsort(np.argsort(simulated, axis=1), axis=1)  # 0 = lowest
    return np.asarray((places < bottom_n).mean(axis=0))


def early_warning(
    engine: Engine,
    settings: Settings,
    lead: int = 1,
    today: date | None = None,
    seed: int = DEFAULT_SEED,
    draws: int = DEFAULT_DRAWS,
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Predict next quarter's township scores and who risks the bottom N, with validation.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    settings : Settings
    lead : {1, 0}
        1: from the last surveyed quarter's metrics (a full quarter ahead); 0: from the target
        quarter's own metrics, which must be complete.
    today : datetime.date, optional
        For the completeness check (default: today).
    seed, draws : int
        Seed and size of the bottom-N simulation.
    tree : AreaTree, optional

    Returns
    -------
    dict
        ``level, score, bottom_n, lead, target_period, metrics_period, method`` (``ridge`` or
        ``persistence``), ``verdict`` (one English sentence), ``validation`` (see
        :func:`validate`) and ``rows``: per township ``area_code, area_name, predicted_pct,
        last_pct, change, bottom_probability, predicted_bottom, at_risk``, lowest first.

    Raises
    ------
    TargetingError
        For a ``lead`` other than 0 or 1, or when the metrics needed are not complete yet.
    """
    if lead not in (0, 1):
        raise TargetingError("the lead must be 0 (this quarter's metrics) or 1 (last quarter's)")
    rules = accountability_rules(settings)
    tree = tree or load_tree(engine)
    quarterly, _annual = scores_of_record(engine, settings, rules.level, rules.score, tree)
    reader = MetricReader(engine)
    population = {node.code: node.population for node in tree.by_code.values()}

    def metrics_for(label: str) -> dict[str, dict[str, Any]]:
        return reader.get(rules.level, label)

    waves = sorted(quarterly, key=lambda p: parse_period(p).start)
    base: dict[str, Any] = {
        "level": rules.level,
        "score": rules.score,
        "bottom_n": rules.bottom_n,
        "lead": lead,
        "target_period": None,
        "metrics_period": None,
        "method": None,
        "validation": validate([], rules.bottom_n),
        "rows": [],
    }
    if not waves:
        base["verdict"] = "no quarterly survey imported yet"
        return base
    target = _next_quarter(waves[-1])
    source = _shift(target, lead)
    base.update(target_period=target, metrics_period=source)
    history = warning_rows(quarterly, metrics_for, population, waves, lead)
    validation = validate(history, rules.bottom_n, seed)
    base["validation"] = validation
    today = today or date.today()
    if parse_period(source).end > today:  # end is exclusive: the first day after
        raise TargetingError(
            f"the metrics of {source} are not complete until {parse_period(source).end}; "
            "use lead 1 (last quarter's metrics)"
        )
    current = warning_rows(quarterly, metrics_for, population, [target], lead)
    if not current:
        base["verdict"] = f"no published metrics for {source} — run `gridwatch aggregate`"
        return base
    known = [r for r in history if r["security_pct"] is not None]
    use_model = bool(validation["beats_persistence"]) and len(known) > 0
    if use_model:
        predicted = _fit_predict(known, current, seed)
        sigma = float(validation["rmse"])
        method = "ridge"
        verdict = (
            f"ridge model on {len(known)} township-quarters: held-out mean error "
            f"{validation['mae']:.2f} points against {validation['persistence_mae']:.2f} for "
            f"'same as last quarter'; it caught {100 * validation['bottom_hit_rate']:.0f} % "
            f"of the actual bottom {rules.bottom_n} (persistence "
            f"{100 * validation['persistence_bottom_hit_rate']:.0f} %)"
        )
    else:
        fallback = float(
            np.mean(
                [r[LAST_SCORE] for r in current if r[LAST_SCORE] is not None] or [rules.target_pct]
            )
        )
        predicted = _persistence(current, fallback)
        sigma = float(validation["persistence_rmse"] or 0.0)
        method = "persistence"
        verdict = (
            "the grid metrics did not beat 'same score as last quarter' on past quarters "
            + (
                f"(held-out mean error {validation['mae']:.2f} against "
                f"{validation['persistence_mae']:.2f} points); "
                if validation["mae"] is not None
                else "(too few past quarters to test); "
            )
            + "last quarter's score stands as the forecast"
        )
    codes = [r["area_code"] for r in current]
    probability = bottom_probabilities(predicted.tolist(), sigma, rules.bottom_n, draws, seed)
    predicted_bottom = _bottom(codes, predicted.tolist(), rules.bottom_n)
    rows = []
    for i, row in enumerate(current):
        node = tree.by_code.get(row["area_code"])
        last = row[LAST_SCORE]
        value = float(predicted[i])
        rows.append(
            {
                "area_code": row["area_code"],
                "area_name": node.name if node else row["area_code"],
                "predicted_pct": round(value, 2),
                "interval_low": round(value - 1.96 * sigma, 2),
                "interval_high": round(value + 1.96 * sigma, 2),
                "last_pct": None if last is None else round(float(last), 2),
                "change": None if last is None else round(value - float(last), 2),
                "bottom_probability": round(float(probability[i]), 3),
                "predicted_bottom": row["area_code"] in predicted_bottom,
                "at_risk": bool(
                    row["area_code"] in predicted_bottom or probability[i] >= AT_RISK_PROBABILITY
                ),
                "below_red_line": value < rules.red_line_pct,
            }
        )
    rows.sort(key=lambda r: (r["predicted_pct"], r["area_code"]))
    base.update(method=method, verdict=verdict, rows=rows, sigma=round(sigma, 3))
    return base
