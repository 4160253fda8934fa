"""The accountability ladder on hand-made quarter sequences: each rung fires exactly when due."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gridwatch.targeting.ladder import (
    STATUSES,
    county_titles,
    evaluate_ladder,
    places_from_bottom,
)
from gridwatch.targeting.rules import (
    AccountabilityRules,
    RulesError,
    load_accountability_rules,
)

# Bottom 1 of three townships keeps the sequences readable; the rungs are the defaults.
RULES = replace(AccountabilityRules(), bottom_n=1)
OTHERS = {"B": 90.0, "C": 92.0}


def quarters(first: str, scores_of_a: list[float | None]) -> dict[str, dict[str, float]]:
    """Consecutive quarters from ``first``: A's score (None = not surveyed), B and C fixed."""
    year, q = int(first[:4]), int(first[5])
    out = {}
    for score in scores_of_a:
        scores = dict(OTHERS)
        if score is not None:
            scores["A"] = score
        out[f"{year}Q{q}"] = scores
        year, q = (year + 1, 1) if q == 4 else (year, q + 1)
    return out


def statuses(history, code="A"):
    return [e.status for e in history[code]]


LOW, OK = 80.0, 95.0


def test_shipped_rules_are_the_domain_brief():
    rules = load_accountability_rules()
    assert rules.level == "township" and rules.score == "security_pct"
    assert rules.bottom_n == 5
    assert (rules.summons_after, rules.yellow_card_after, rules.listed_after) == (1, 2, 3)
    assert (rules.veto_listings, rules.veto_within_quarters) == (2, 8)
    assert (rules.veto_annual_below, rules.veto_annual_years) == (80.0, 2)
    assert rules.veto_annual_in_bottom is True
    assert (rules.red_line_pct, rules.target_pct) == (80.0, 90.0)
    assert rules.safe_title_min_pct == 80.0 and rules.safe_city_min_share_pct == 75.0


def test_each_rung_fires_on_its_quarter_and_not_before():
    history = evaluate_ladder(quarters("2025Q1", [OK, LOW, LOW, LOW, LOW]), RULES)
    assert statuses(history) == ["none", "summons", "yellow_card", "listed", "listed"]
    events = [e.events for e in history["A"]]
    assert events[1] == ["summons"]
    assert events[2] == ["summons", "yellow_card"]
    assert events[3] == ["summons", "listed"]
    assert events[4] == ["summons"]  # still listed, not a new listing
    assert statuses(history, "B") == ["summons"] + ["none"] * 4


def test_leaving_the_bottom_for_one_quarter_restarts_the_count():
    history = evaluate_ladder(quarters("2025Q1", [LOW, LOW, OK, LOW, LOW]), RULES)
    assert statuses(history) == ["summons", "yellow_card", "none", "summons", "yellow_card"]
    assert [e.streak for e in history["A"]] == [1, 2, 0, 1, 2]


def test_a_quarter_without_a_survey_breaks_the_run_unless_configured():
    scores = quarters("2025Q1", [LOW, LOW, LOW])
    scores["2025Q4"] = scores.pop("2025Q3")  # no wave in 2025Q3
    assert statuses(evaluate_ladder(scores, RULES)) == ["summons", "yellow_card", "summons"]
    lenient = replace(RULES, gap_breaks_streak=False)
    assert statuses(evaluate_ladder(scores, lenient)) == ["summons", "yellow_card", "listed"]


def test_a_township_missing_from_a_wave_is_not_ranked_and_its_run_breaks():
    history = evaluate_ladder(quarters("2025Q1", [LOW, LOW, None, LOW]), RULES)
    assert [e.score for e in history["A"]][2] is None
    assert statuses(history) == ["summons", "yellow_card", "none", "summons"]
    # B was bottom while A was missing
    assert statuses(history, "B")[2] == "summons"


def test_ties_at_the_boundary_are_all_in():
    assert places_from_bottom({"A": 80.0, "B": 80.0, "C": 90.0}) == {"A": 1, "B": 1, "C": 3}
    history = evaluate_ladder({"2026Q1": {"A": 80.0, "B": 80.0, "C": 90.0}}, RULES)
    assert statuses(history, "A") == statuses(history, "B") == ["summons"]
    assert statuses(history, "C") == ["none"]


def test_listed_twice_within_two_years_is_a_veto_for_the_rest_of_that_year():
    # listed in 2025Q3, out in 2025Q4, bottom again 2026Q1–Q3: second listing in 2026Q3
    history = evaluate_ladder(quarters("2025Q1", [LOW, LOW, LOW, OK, LOW, LOW, LOW, LOW]), RULES)
    got = statuses(history)
    assert got[:7] == [
        "summons",
        "yellow_card",
        "listed",
        "none",
        "summons",
        "yellow_card",
        "veto",
    ]
    assert "veto_listed_again" in history["A"][6].events
    assert got[7] == "veto"  # 2026Q4, same year
    assert "veto_listed_again" not in history["A"][2].events  # first listing is no veto


def test_two_listings_further_apart_than_two_years_are_no_veto():
    seq = [LOW, LOW, LOW] + [OK] * 6 + [LOW, LOW, LOW]  # listings 2025Q3 and 2027Q4: 9 apart
    history = evaluate_ladder(quarters("2025Q1", seq), RULES)
    assert "veto" not in statuses(history)
    assert statuses(history)[-1] == "listed"
    closer = evaluate_ladder(quarters("2025Q1", [LOW, LOW, LOW] + [OK] * 4 + [LOW] * 3), RULES)
    assert statuses(closer)[-1] == "veto"  # 2025Q3 → 2027Q2: 7 quarters apart


def test_annual_score_below_80_two_years_running_in_the_bottom_is_a_veto():
    # A scores 79 every quarter but is bottom only in Q1 of each year (C drops below it
    # otherwise), so no quarterly listing; annual means put it in the bottom both years.
    seq: dict[str, dict[str, float]] = {}
    for year in (2025, 2026):
        for q in range(1, 5):
            c = 95.0 if q == 1 else 78.9
            seq[f"{year}Q{q}"] = {"A": 79.0, "B": 90.0, "C": c}
    history = evaluate_ladder(seq, RULES)
    got = statuses(history)
    assert "listed" not in got
    assert got[:4] == ["summons", "none", "none", "none"]  # 2025 alone: no veto
    assert got[4:7] == ["summons", "none", "none"]
    assert got[7] == "veto" and history["A"][7].events == ["veto_annual"]
    # not in the bottom of the annual ranking → no veto
    no_bottom = {p: {**s, "D": 70.0} for p, s in seq.items()}
    assert "veto" not in statuses(evaluate_ladder(no_bottom, RULES))
    # one year below 80 is not enough
    mixed = {p: ({**s, "A": 85.0} if p.startswith("2025") else s) for p, s in seq.items()}
    assert "veto" not in statuses(evaluate_ladder(mixed, RULES))
    # an incomplete year is not judged
    partial = {p: s for p, s in seq.items() if p != "2026Q4"}
    assert "veto" not in statuses(evaluate_ladder(partial, RULES))


def test_imported_annual_results_count_as_annual_scores():
    seq = quarters("2025Q1", [OK] * 8)
    annual = {"2025": {"A": 78.0, "B": 90.0, "C": 92.0}, "2026": {"A": 79.0, "B": 90.0}}
    history = evaluate_ladder(seq, RULES, annual)
    assert statuses(history)[-1] == "veto"
    assert statuses(history)[3] == "none"


def test_statuses_are_the_documented_ones():
    history = evaluate_ladder(quarters("2025Q1", [LOW] * 8), RULES)
    assert set(statuses(history)) <= set(STATUSES)


def test_county_titles():
    rules = AccountabilityRules()
    quarterly = {
        f"2025Q{q}": {"X": 79.0 + 0.2 * q, "Y": 91.0, "Z": 85.0, "W": 88.0} for q in range(1, 5)
    }
    quarterly["2026Q1"] = {"X": 85.0, "Y": 92.0}
    titles = county_titles(quarterly, rules)
    x = titles["counties"]["X"]
    assert [q["below_red_line"] for q in x["quarters"]] == [True, True, True, True, False]
    year_2025 = next(y for y in x["years"] if y["year"] == "2025")
    assert year_2025["complete"] and year_2025["safe_county"] is False
    year_2026 = next(y for y in x["years"] if y["year"] == "2026")
    assert not year_2026["complete"] and year_2026["safe_county"] is None
    (city_2025,) = titles["city"]
    assert city_2025["safe_counties"] == 3 and city_2025["counties_judged"] == 4
    assert city_2025["may_apply_safe_city"] is True  # exactly 75 %
    assert titles["counties"]["Y"]["quarters"][0]["meets_target"] is True


def test_rules_file_overrides_and_errors(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("ranking: {bottom_n: 3}\nladder: {listed_after: 4}\n", "utf-8")
    rules = load_accountability_rules(path)
    assert rules.bottom_n == 3 and rules.listed_after == 4 and rules.yellow_card_after == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("ladder: {summons_after: 3, yellow_card_after: 2}\n", "utf-8")
    with pytest.raises(RulesError, match="summons_after"):
        load_accountability_rules(bad)
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("thresholds: {red_line_pct: eighty}\n", "utf-8")
    with pytest.raises(RulesError, match="red_line_pct"):
        load_accountability_rules(wrong_type)


def test_settings_point_at_a_local_rules_file(tmp_path):
    from conftest import make_settings

    path = tmp_path / "rules.yaml"
    path.write_text("ranking: {bottom_n: 2}\n", "utf-8")
    settings = make_settings(tmp_path, GRIDWATCH_ACCOUNTABILITY_RULES_FILE=str(path))
    from gridwatch.targeting.ladder import accountability_rules

    assert accountability_rules(settings).bottom_n == 2
