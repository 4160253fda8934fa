"""Ridge model of security on grid metrics, and the early warning's validation."""

from __future__ import annotations

import numpy as np
import pytest

from gridwatch.targeting.early_warning import (
    LAST_SCORE,
    bottom_probabilities,
    validate,
    warning_rows,
)
from gridwatch.targeting.model import (
    design_matrix,
    fit_ridge,
    group_folds,
    security_model,
    transform_feature,
)


def _rows(n_areas: int, quarters: int, signal: float, seed: int = 0) -> list[dict]:
    """Linked rows where security falls with the theft rate by ``signal`` points per log unit."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 1.0, n_areas)
    rows = []
    for q in range(quarters):
        for a in range(n_areas):
            theft = float(np.exp(rng.normal(0.5 + 0.3 * level[a], 0.6)))
            noise_metric = float(rng.normal(50, 10))
            security = 90 - signal * np.log1p(theft) + rng.normal(0, 1.0)
            rows.append(
                {
                    "area_code": f"a{a:03d}",
                    "period": f"2026Q{q + 1}",
                    "security_pct": float(security),
                    "metrics": {
                        "two_robberies_one_theft_per_1000": theft,
                        "night_share_pct": noise_metric,
                        "change_prev_pct": None if q == 0 else float(rng.normal(0, 900)),
                        "vice_per_1000": None,
                    },
                }
            )
    return rows


def test_transform_logs_rates_and_clips_changes():
    assert transform_feature("two_robberies_one_theft_per_1000", np.e - 1) == pytest.approx(1.0)
    assert transform_feature("change_prev_pct", 900.0) == 300.0
    assert transform_feature("change_prev_pct", -150.0) == -100.0
    assert np.isnan(transform_feature("night_share_pct", None))
    assert transform_feature("night_share_pct", 40.0) == 40.0


def test_design_drops_missing_and_imputes_medians():
    rows = _rows(30, 4, 3.0)
    design = design_matrix(
        rows, ["two_robberies_one_theft_per_1000", "vice_per_1000", "change_prev_pct"]
    )
    assert design.dropped == {"vice_per_1000": "missing"}
    assert design.features == ["two_robberies_one_theft_per_1000", "change_prev_pct"]
    assert np.isfinite(design.x).all() and design.x.shape == (120, 2)


def test_group_folds_keep_each_area_whole():
    groups = [f"a{i % 17}" for i in range(170)]
    folds = group_folds(groups, 5, 1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(170))
    for fold in folds:
        inside = {groups[i] for i in fold}
        outside = {groups[i] for i in range(170) if i not in set(fold.tolist())}
        assert not inside & outside


def test_ridge_penalty_shrinks_towards_zero():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = 3 * x[:, 0] + rng.normal(0, 0.1, 200)
    loose, tight = fit_ridge(x, y, 0.01), fit_ridge(x, y, 1e6)
    assert loose.coef[0] == pytest.approx(3 * x[:, 0].std(), rel=0.02)
    assert abs(tight.coef[0]) < 0.01
    assert fit_ridge(x, y, 0.01).predict(x[:5]) == pytest.approx(y[:5], abs=0.5)


def test_a_real_signal_is_found_with_intervals_and_used():
    result = security_model(_rows(80, 4, 4.0), replicates=100, seed=3)
    assert result["used"] and result["cv_r2"] > 0.3
    assert "explain about" in result["verdict"]
    by_name = {c["feature"]: c for c in result["coefficients"]}
    theft = by_name["two_robberies_one_theft_per_1000"]
    assert theft["coef"] < 0 and theft["ci_high"] < 0 and theft["holds"] and theft["as_expected"]
    noise = by_name["night_share_pct"]
    assert noise["ci_low"] < 0 < noise["ci_high"] and not noise["holds"]
    assert result["dropped"]["vice_per_1000"] == "missing"


def test_no_signal_gives_r2_at_most_zero_and_the_model_is_not_used():
    for seed in (0, 3, 5):
        # chance alone may give a hair above 0, never a real share of the variance
        result = security_model(_rows(80, 4, 0.0, seed=seed), replicates=20, seed=3)
        assert abs(result["cv_r2"]) < 0.05
        assert result["used"] == (result["cv_r2"] > 0)
    result = security_model(_rows(80, 4, 0.0, seed=4), replicates=20, seed=3)
    assert result["cv_r2"] <= 0
    assert not result["used"] and "do not predict security better" in result["verdict"]
    few = security_model(_rows(6, 2, 4.0), replicates=10)
    assert not few["used"] and few["cv_r2"] is None and "too little data" in few["verdict"]


# --------------------------------------------------------------------------------------------
# Early warning
# --------------------------------------------------------------------------------------------


def _township_history(signal: float, n: int = 40, quarters: int = 5, seed: int = 1):
    """Scores that follow this quarter's theft rate (plus a stable area effect)."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 2.0, n)
    labels = [f"2025Q{q}" for q in (1, 2, 3, 4)] + ["2026Q1"]
    labels = labels[:quarters]
    quarterly: dict[str, dict[str, float]] = {}
    metrics: dict[str, dict[str, dict]] = {}
    for label in labels:
        theft = np.exp(rng.normal(0.8, 0.7, n))
        quarterly[label] = {}
        metrics[label] = {}
        for a in range(n):
            code = f"t{a:02d}"
            quarterly[label][code] = float(
                88 + effect[a] - signal * np.log1p(theft[a]) + rng.normal(0, 0.3)
            )
            metrics[label][code] = {"incidents_by_group": {"two_robberies_one_theft": theft[a]}}
    population = {f"t{a:02d}": 1000 for a in range(n)}
    return quarterly, metrics, population, labels


def test_early_warning_rows_use_only_what_is_known_before_the_survey():
    quarterly, metrics, population, labels = _township_history(3.0, n=12)
    rows = warning_rows(quarterly, lambda p: metrics.get(p, {}), population, labels, lead=1)
    first = [r for r in rows if r["period"] == "2025Q2"]
    assert len(first) == 12
    row = next(r for r in first if r["area_code"] == "t03")
    assert row["metrics_period"] == "2025Q1"
    assert row[LAST_SCORE] == quarterly["2025Q1"]["t03"]
    assert row["security_pct"] == quarterly["2025Q2"]["t03"]
    theft_q1 = metrics["2025Q1"]["t03"]["incidents_by_group"]["two_robberies_one_theft"]
    assert row["metrics"]["two_robberies_one_theft_per_1000"] == pytest.approx(theft_q1)
    # the first quarter has no metrics before it: no row at lead 1
    assert not [r for r in rows if r["period"] == "2025Q1"]


def test_validation_beats_persistence_when_the_metrics_lead_and_not_otherwise():
    quarterly, metrics, population, labels = _township_history(3.0)
    # from the second quarter on, every row also has the metrics of the quarter before
    rows = warning_rows(quarterly, lambda p: metrics.get(p, {}), population, labels[1:], lead=0)
    assert all("prev_two_robberies_one_theft_per_1000" in r["metrics"] for r in rows)
    result = validate(rows, bottom_n=5)
    assert len(result["quarters"]) == 4
    assert result["beats_persistence"] and result["mae"] < 0.7 * result["persistence_mae"]
    assert result["bottom_hit_rate"] >= 0.6
    assert result["bottom_hit_rate"] >= result["persistence_bottom_hit_rate"]
    for q in result["quarters"]:
        assert 0 <= q["bottom_hits"] <= q["bottom_n"] and q["bottom_n"] >= 5
    # the scores do not depend on the metrics: the model must not claim to beat persistence
    # by much (stable area effects make persistence strong)
    quarterly, metrics, population, labels = _township_history(0.0, seed=4)
    rows = warning_rows(quarterly, lambda p: metrics.get(p, {}), population, labels, lead=0)
    flat = validate(rows, bottom_n=5)
    assert flat["mae"] > 0.9 * flat["persistence_mae"]


def test_bottom_probabilities():
    probability = bottom_probabilities([70, 80, 90, 90.5, 91, 95], 1.0, 2, 4000, 1)
    assert probability.sum() == pytest.approx(2.0)
    assert probability[0] > 0.99 and probability[1] > 0.99 and probability[-1] < 0.01
    tied = bottom_probabilities([80.0] * 4, 1.0, 1, 8000, 2)
    assert tied == pytest.approx([0.25] * 4, abs=0.03)
