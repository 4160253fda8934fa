"""Factor map, rank correlation, priority explanations, and the demo county end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gridwatch.targeting.linkage import (
    LEVERS,
    PriorityFacts,
    explain_priority,
    load_factor_map,
    spearman_with_ci,
)
from gridwatch.targeting.rules import RulesError
from gridwatch.taxonomy import load_survey_factors, load_taxonomy


def test_default_factor_map_covers_all_25_factors_with_valid_targets():
    fmap = load_factor_map()
    factors = load_survey_factors()
    assert len(factors) == 25 and set(fmap.factors) == set(factors)
    taxonomy = load_taxonomy()
    for link in fmap.factors.values():
        assert link.levers, f"{link.code} has no lever"
        assert set(link.levers) <= set(LEVERS)
        assert set(link.categories) <= set(taxonomy.categories)
    two = fmap.factors["two_robberies_one_theft"]
    assert {"cameras", "night_patrol"} <= set(two.levers)
    counts = {"incidents_by_category": {"theft": 4, "robbery": 1, "gambling": 7}}
    assert two.incidents(counts, taxonomy) == 5
    assert fmap.factors["gambling"].incidents(counts, taxonomy) == 7
    assert fmap.factors["police_rarely_seen"].incidents(counts, taxonomy) is None
    assert "patrol_dosage" in fmap.factors["police_rarely_seen"].levers
    assert sum(fmap.weights.values()) > 0


def test_factor_map_rejects_unknown_names(tmp_path):
    base = "levers: {cameras: {zh: 视频}}\n"
    for body, message in (
        ("factors: {no_such_factor: {levers: [cameras]}}", "not a survey factor"),
        ("factors: {gambling: {categories: [poker]}}", "unknown category"),
        ("factors: {gambling: {levers: [drones]}}", "unknown lever"),
        ("factors: {}\npriority: {luck: 3}", "unknown priority component"),
    ):
        path = tmp_path / "map.yaml"
        path.write_text(base + body + "\n", "utf-8")
        load_factor_map.cache_clear()
        with pytest.raises(RulesError, match=message):
            load_factor_map(path)
    load_factor_map.cache_clear()


def test_spearman_with_ci():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    clusters = [f"a{i % 50}" for i in range(200)]
    strong = spearman_with_ci(x, -x + rng.normal(0, 0.3, 200), clusters, 300, 1, -1)
    assert strong["rho"] < -0.8 and strong["ci_high"] < 0 and strong["holds"]
    assert strong["strength"] == "strong" and strong["areas"] == 50
    noise = spearman_with_ci(x, rng.normal(size=200), clusters, 300, 1, -1)
    assert noise["ci_low"] < 0 < noise["ci_high"] and not noise["holds"]
    # the right size but the wrong sign does not "hold"
    wrong = spearman_with_ci(x, x, clusters, 300, 1, -1)
    assert wrong["rho"] == pytest.approx(1.0) and not wrong["holds"]
    # missing values are dropped; too few pairs give no estimate
    few = spearman_with_ci([1, 2, None, 4], [1, 2, 3, None], ["a", "b", "c", "d"])
    assert few["rho"] is None and few["n"] == 2


def test_explanation_names_the_top_factor_and_the_red_line():
    facts = PriorityFacts(
        area_name="东村",
        security_pct=78.5,
        half_width=4.1,
        top_factor="两抢一盗",
        top_factor_share_pct=61.0,
        incidents_label="两抢一盗",
        factor_incidents=27,
        factor_incidents_prev=20,
        concentrated_in=["东村第1网格", "东村第2网格"],
        concentrated_share_pct=70.0,
        night_share_pct=55.0,
        blind_spot_pct=58.0,
        patrol_visits_per_week=2.0,
    )
    text = explain_priority(facts, 80.0, 90.0)
    assert text.startswith("东村:安全感 78.5%(±4.1,低于80%红线)")
    assert "首要不满意因素 两抢一盗(61%)" in text
    assert "较上季度 +35%" in text
    assert "70% 集中在 东村第1网格、东村第2网格" in text
    assert "58% 的警情发生在监控盲区" in text and "巡逻每周约 2.0 次" in text
    above = explain_priority(PriorityFacts(area_name="西村", security_pct=85.0), 80.0, 90.0)
    assert "红线" not in above and "未达90%目标" in above
    fine = explain_priority(PriorityFacts(area_name="南村", security_pct=93.0), 80.0, 90.0)
    assert "红线" not in fine and "目标" not in fine
    # the red line comes from the rules, not a constant
    assert "低于85%红线" in explain_priority(PriorityFacts("北村", 84.0), 85.0, 90.0)


# --------------------------------------------------------------------------------------------
# The demo county end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_county(tmp_path_factory):
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.storage import create_db_engine
    from gridwatch.workers.engine import RunRequest, run_eager

    root = tmp_path_factory.mktemp("targeting_demo")
    settings = make_settings(root)
    engine = create_db_engine(settings.database_url)
    build_demo(settings, engine, root / "files", seed=7, scale="small")
    run_eager(engine, settings, RunRequest(period_kinds=("quarter",)))
    yield settings, engine
    engine.dispose()


@pytest.mark.slow
def test_demo_security_falls_with_theft_and_without_cameras(demo_county):
    from gridwatch.targeting.linkage import associations, linked_rows

    settings, engine = demo_county
    rows = linked_rows(engine, settings, "village")
    assert {r["period"] for r in rows} >= {"2026Q2", "2026Q3"}
    found = {(a["metric"], a["lag"]): a for a in associations(rows, replicates=200)}
    theft = found[("two_robberies_one_theft_per_1000", 0)]
    assert theft["rho"] < 0 and theft["ci_high"] < 0 and theft["holds"]
    assert theft["areas"] > 500
    # the generator penalises villages without a working camera
    q3 = [r for r in rows if r["period"] == "2026Q3"]
    none = [r["security_pct"] for r in q3 if not r["_metrics"].get("cameras_working")]
    some = [r["security_pct"] for r in q3 if r["_metrics"].get("cameras_working")]
    assert len(none) > 20 and np.mean(none) < np.mean(some) - 1.0


@pytest.mark.slow
def test_demo_priorities_rank_the_worst_villages_first(demo_county):
    from gridwatch.targeting.linkage import priorities

    settings, engine = demo_county
    result = priorities(engine, settings, "2026Q3", replicates=200)
    rows = result["rows"]
    assert len(rows) > 500
    used = {c["name"]: c["used"] for c in result["components"]}
    assert used["security_shortfall"] and used["factor_incidents"]
    top = rows[: len(rows) // 10]
    rest = rows[len(rows) // 10 :]
    assert np.mean([r["security_pct"] for r in top]) < np.mean([r["security_pct"] for r in rest])

    def per_1000(group):
        return np.mean([r["components"]["factor_incidents"] or 0 for r in group])

    assert per_1000(top) > per_1000(rest)
    for r in rows[:50]:
        assert r["top_factor"]["name"] in r["explanation"]
        assert ("低于80%红线" in r["explanation"]) == (r["security_pct"] < 80)
        assert r["levers"]


@pytest.mark.slow
def test_demo_cli_survey_commands(demo_county):
    from click.testing import CliRunner

    from gridwatch.cli import main
    from gridwatch.targeting.ladder import STATUSES

    settings, engine = demo_county
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, ["survey", *args], obj={"settings": settings})
        assert result.exit_code == 0, result.output
        return result.output

    ranking = json.loads(run("ranking", "--quarter", "2026Q3", "--replicates", "200", "--json"))
    rows = ranking["rows"]
    assert 65 <= len(rows) <= 75
    keys = {"area_code", "rank", "security_pct", "ci_low", "ci_high", "status", "status_history"}
    assert keys <= set(rows[0])
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    bottom = [r for r in rows if r["in_bottom"]]
    assert len(bottom) >= 5 and all(r["status"] in STATUSES[1:] for r in bottom)
    assert all(r["status"] == "none" for r in rows if not r["in_bottom"])
    assert all(r["ci_low"] <= r["security_pct"] <= r["ci_high"] for r in rows)
    ladder = json.loads(run("ladder", "--json"))
    assert ladder["quarters"][-1] == "2026Q3" and len(ladder["townships"]) == len(rows)
    indicators = json.loads(run("indicators", "--level", "village", "--wave", "2026Q3", "--json"))
    assert len(indicators) > 500
    text = run("priorities", "--quarter", "2026Q3", "--limit", "3")
    assert "安全感" in text and "首要不满意因素" in text
    bad = runner.invoke(
        main, ["survey", "ranking", "--quarter", "2026Q9"], obj={"settings": settings}
    )
    assert bad.exit_code == 2 and "not a period" in bad.output
