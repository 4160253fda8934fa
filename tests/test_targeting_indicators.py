"""Survey indicators: Wilson intervals, design weights, quality flags, results vs responses."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gridwatch.targeting.indicators import (
    Contacts,
    from_responses,
    from_result,
    given_percentage,
    indicator_table,
    kish_effective_n,
    proportion,
    quality_flags,
    wilson_interval,
)
from gridwatch.targeting.rules import QualityRules

NAMES = {"two_robberies_one_theft": "两抢一盗", "gambling": "赌博", "drugs": "吸毒贩毒"}


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
# method 3 (Wilson score interval without continuity correction).
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got_low, got_high = wilson_interval(successes / n, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_by_hand():
    # p = 0.9, n = 50, z = 1.96: centre = (0.9 + z²/100) / (1 + z²/50),
    # half = z·sqrt(0.09/50 + z²/10000) / (1 + z²/50)
    z = 1.959963984540054
    denom = 1 + z * z / 50
    centre = (0.9 + z * z / 100) / denom
    half = z * math.sqrt(0.09 / 50 + z * z / 10000) / denom
    low, high = wilson_interval(0.9, 50)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert 0.78 < low < 0.79 and 0.95 < high < 0.96
    # never outside [0, 1], and a degenerate n gives the whole range
    assert wilson_interval(1.0, 5)[1] <= 1.0
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_interval_narrows_as_the_sample_grows():
    widths = [np.subtract(*wilson_interval(0.85, n)[::-1]) for n in (30, 100, 400, 1600)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))


def test_kish_effective_n():
    assert kish_effective_n(np.ones(40)) == pytest.approx(40)
    # (3+1+1+1)² / (9+1+1+1) = 36 / 12
    assert kish_effective_n(np.array([3.0, 1.0, 1.0, 1.0])) == pytest.approx(3.0)


def test_weighted_proportion_uses_weights_and_kish_n():
    hits = np.array([1, 1, 0, 0], dtype=bool)
    weights = np.array([3.0, 1.0, 1.0, 1.0])
    est = proportion(hits, weights)
    assert est.pct == pytest.approx(100 * 4 / 6)
    assert est.n == pytest.approx(3.0)
    low, high = wilson_interval(4 / 6, 3.0)
    assert (est.ci_low, est.ci_high) == pytest.approx((100 * low, 100 * high))
    # equal weights are the unweighted estimate
    assert proportion(hits, np.full(4, 2.5)) == proportion(hits)


def test_unequal_weights_widen_the_interval():
    rng = np.random.default_rng(1)
    hits = rng.random(400) < 0.85
    plain = proportion(hits)
    weights = np.exp(rng.normal(0, 0.8, 400))
    weighted = proportion(hits, weights)
    assert weighted.n < plain.n
    assert (weighted.ci_high - weighted.ci_low) > (plain.ci_high - plain.ci_low)


def test_given_percentage_needs_respondents_for_an_interval():
    assert given_percentage(88.0, None).ci_low is None
    est = given_percentage(88.0, 400)
    low, high = wilson_interval(0.88, 400)
    assert (est.ci_low, est.ci_high) == pytest.approx((100 * low, 100 * high))


def _contacts(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=[
            "outcome",
            "security",
            "satisfaction",
            "aware",
            "participated",
            "factors",
            "weight",
        ],
    )


def test_from_responses_bases_and_factor_shares():
    rows = [
        ("completed", "safe", "satisfied", "yes", "no", [], np.nan),
        ("completed", "basically_safe", "basically_satisfied", "no", "no", ["gambling"], np.nan),
        ("completed", "unsafe", "dissatisfied", "no", "yes", ["two_robberies_one_theft"], np.nan),
        (
            "completed",
            "not_very_safe",
            "dissatisfied",
            "no",
            "no",
            ["two_robberies_one_theft", "drugs"],
            np.nan,
        ),
        ("completed", "unknown", "unknown", "yes", "no", [], np.nan),
        ("refused", None, None, None, None, [], np.nan),
    ]
    row = from_responses(_contacts(rows), NAMES, QualityRules(min_respondents=3))
    assert row["respondents"] == 5
    # "说不清" is outside the base: 2 of 4
    assert row["security_pct"] == pytest.approx(50.0)
    assert row["satisfaction_pct"] == pytest.approx(50.0)
    assert row["awareness_pct"] == pytest.approx(40.0)
    assert row["participation_pct"] == pytest.approx(20.0)
    factors = {f["code"]: f["share_pct"] for f in row["factors"]}
    assert factors == pytest.approx(
        {"two_robberies_one_theft": 50.0, "gambling": 25.0, "drugs": 25.0}
    )
    assert row["factors"][0]["code"] == "two_robberies_one_theft"
    assert row["factors"][0]["name"] == "两抢一盗"
    assert row["weighted"] is False
    assert row["quality"]["nonresponse_pct"] == pytest.approx(100 / 6, abs=0.01)


def _survey(rng, n, probabilities, nonresponse=0.05, name_rate=None):
    answers = rng.choice(["safe", "basically_safe", "not_very_safe", "unsafe"], n, p=probabilities)
    rows = []
    for answer in answers:
        unsafe = answer in ("not_very_safe", "unsafe")
        rate = name_rate if name_rate is not None else (0.95 if unsafe else 0.2)
        factors = ["two_robberies_one_theft"] if rng.random() < rate else []
        outcome = "hung_up" if rng.random() < nonresponse else "completed"
        rows.append((outcome, answer, "satisfied", "yes", "no", factors, np.nan))
    return Contacts.from_frame(_contacts(rows))


def test_quality_flags_tell_fieldwork_problems_apart():
    rng = np.random.default_rng(7)
    rules = QualityRules()
    genuine = quality_flags(_survey(rng, 300, [0.5, 0.35, 0.1, 0.05]), rules)
    assert genuine["flags"] == []
    guessing = quality_flags(_survey(rng, 300, [0.25] * 4, name_rate=0.4), rules)
    assert "random_pattern" in guessing["flags"]
    # right answer mix, but factors named at random: the safe name them as often as the unsafe
    careless = quality_flags(_survey(rng, 400, [0.5, 0.35, 0.1, 0.05], name_rate=0.4), rules)
    assert "random_pattern" in careless["flags"]
    assert careless["consistency_p"] > rules.random_pattern_p
    dialect = quality_flags(_survey(rng, 300, [0.5, 0.35, 0.1, 0.05], nonresponse=0.4), rules)
    assert "high_nonresponse" in dialect["flags"]
    small = quality_flags(_survey(rng, 12, [0.5, 0.35, 0.1, 0.05]), rules)
    assert "few_respondents" in small["flags"]
    assert small["uniform_p"] is None  # too few to judge patterns


def test_from_result_gives_intervals_only_with_respondents():
    result = {
        "respondents": 400,
        "security_pct": 88.0,
        "satisfaction_pct": 85.0,
        "composite_score": 80.1,
        "awareness_pct": 30.0,
        "participation_pct": None,
        "factor_shares": {"gambling": 20.0, "two_robberies_one_theft": 60.0},
    }
    row = from_result(result, NAMES, QualityRules())
    assert row["security_ci_low"] < 88.0 < row["security_ci_high"]
    assert row["participation_pct"] is None
    assert [f["code"] for f in row["factors"]] == ["two_robberies_one_theft", "gambling"]
    # factor intervals rest on the ~48 dissatisfied respondents, so they are wide
    top = row["factors"][0]
    assert top["ci_high"] - top["ci_low"] > row["security_ci_high"] - row["security_ci_low"]
    unknown_n = from_result({**result, "respondents": None}, NAMES, QualityRules())
    assert unknown_n["security_pct"] == 88.0 and unknown_n["security_ci_low"] is None


# --------------------------------------------------------------------------------------------
# From the database
# --------------------------------------------------------------------------------------------


def _import_survey(tmp_path, engine, settings):
    from conftest import grid_frame

    from gridwatch.ingest import import_file

    frame = grid_frame()
    grids = tmp_path / "county.geojson"
    frame.to_file(grids, driver="GeoJSON")
    import_file("grids", grids, settings, engine)
    lines = ["respondent_id,period,area_code,outcome,security,factors,weight"]
    answers = ["safe"] * 30 + ["basically_safe"] * 10 + ["unsafe"] * 10
    for i, answer in enumerate(answers):
        factors = "两抢一盗" if answer == "unsafe" else ""
        weight = "2.0" if answer == "unsafe" else "1.0"
        lines.append(f"R{i},2026Q3,430000001001,completed,{answer},{factors},{weight}")
    lines.append("R99,2026Q3,430000001001,hung_up,,,")
    responses = tmp_path / "responses.csv"
    responses.write_text("\n".join(lines) + "\n", "utf-8")
    import_file("survey-responses", responses, settings, engine)
    results = tmp_path / "results.csv"
    results.write_text(
        "area_code,period,respondents,security_pct,两抢一盗\n"
        "430000001000,2026Q3,600,91.5,55\n"
        "430000001000,2026Q2,580,90.0,50\n",
        "utf-8",
    )
    import_file("surveys", results, settings, engine)


def test_indicator_table_results_first_then_responses(engine, db_settings, tmp_path):
    _import_survey(tmp_path, engine, db_settings)
    rules = QualityRules()
    auto = indicator_table(engine, "township", ["2026Q3", "2026Q2"], NAMES, rules)
    (q3,) = auto["2026Q3"]
    assert q3["source"] == "results" and q3["security_pct"] == 91.5
    # fieldwork figures still come from the raw contacts behind it
    assert q3["quality"]["contacts"] == 51
    raw = indicator_table(engine, "township", ["2026Q3"], NAMES, rules, source="responses")
    (row,) = raw["2026Q3"]
    assert row["source"] == "responses" and row["weighted"] is True
    # weights 1 for 40 safe, 2 for 10 unsafe: 40 / 60
    assert row["security_pct"] == pytest.approx(100 * 40 / 60, abs=0.01)
    assert row["effective_n"] == pytest.approx(60**2 / (40 + 40), abs=0.1)
    # the village level holds the same responses, not pooled from elsewhere
    village = indicator_table(engine, "village", ["2026Q3"], NAMES, rules, source="responses")
    assert village["2026Q3"][0]["security_pct"] == row["security_pct"]
    (q2,) = auto["2026Q2"]
    assert q2["source"] == "results" and q2["quality"]["contacts"] is None
