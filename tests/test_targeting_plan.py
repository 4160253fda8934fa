"""Prevention plan (camera siting, repairs, patrol focus, …), grid priorities, early warning
and the issue's command names, on hand-made instances and on the demo county."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.sparse import csr_array

from gridwatch.targeting.grid_priorities import explain_grid
from gridwatch.targeting.prevention import (
    LocalFrame,
    cell_candidates,
    coverage_matrix,
    covered_weight,
    greedy_sites,
    merge_demand,
    peak_hours,
    solve_mclp,
)


def _matrix(rows: list[list[int]], sites: int) -> csr_array:
    dense = np.zeros((len(rows), sites), dtype=np.int8)
    for i, reach in enumerate(rows):
        dense[i, reach] = 1
    return csr_array(dense)


def test_mclp_beats_greedy_where_greedy_is_myopic():
    # demands a, b (5 each) and c, d (4 each); site 0 reaches a+b, site 1 a+c, site 2 b+d.
    cover = _matrix([[0, 1], [0, 2], [1], [2]], 3)
    weights = np.array([5.0, 5.0, 4.0, 4.0])
    greedy = greedy_sites(cover, weights, 2)
    assert greedy[0] == 0 and covered_weight(cover, weights, greedy) == 14.0
    chosen, info = solve_mclp(cover, weights, 2, greedy, time_limit_s=5)
    assert sorted(chosen) == [1, 2] and info["optimal"]
    assert covered_weight(cover, weights, chosen) == 18.0


@pytest.mark.parametrize("seed", range(6))
def test_mclp_never_worse_than_greedy_and_respects_n(seed):
    rng = np.random.default_rng(seed)
    demand = rng.normal(0, 300, (400, 2))
    sites = np.vstack([rng.normal(0, 300, (150, 2)), demand[:50] + 10])
    cover, weights = merge_demand(coverage_matrix(demand, sites, 80.0), np.ones(len(demand)))
    for n in (1, 5, 12):
        greedy = greedy_sites(cover, weights, n)
        chosen, info = solve_mclp(cover, weights, n, greedy, time_limit_s=5, seed=seed)
        assert len(chosen) <= n and len(greedy) <= n
        assert covered_weight(cover, weights, chosen) >= covered_weight(cover, weights, greedy)
        assert info["objective"] == pytest.approx(covered_weight(cover, weights, chosen))


def test_coverage_matrix_and_merged_demand():
    demand = np.array([[0.0, 0.0], [0.0, 49.0], [0.0, 51.0], [500.0, 500.0], [0.0, 0.0]])
    sites = np.array([[0.0, 0.0], [0.0, 100.0]])
    cover = coverage_matrix(demand, sites, 50.0)
    assert cover.toarray().tolist() == [[1, 0], [1, 0], [0, 1], [0, 0], [1, 0]]
    merged, weights = merge_demand(cover, np.ones(5))
    # three demands reach only site 0, one only site 1; the unreachable one is dropped
    assert sorted(weights.tolist()) == [1.0, 3.0] and merged.shape == (2, 2)


def test_cell_candidates_sit_at_the_centre_of_mass_of_the_heaviest_cells():
    xy = np.array([[10.0, 10.0], [20.0, 30.0], [30.0, 20.0], [260.0, 10.0]])
    centres = cell_candidates(xy, 50.0, limit=5)
    assert centres[0].tolist() == pytest.approx([20.0, 20.0])
    assert centres[1].tolist() == pytest.approx([260.0, 10.0])
    assert len(cell_candidates(xy, 50.0, limit=1)) == 1


def test_local_frame_round_trip_and_scale():
    frame = LocalFrame(112.8, 28.1)
    xy = frame.to_xy([112.8, 112.801], [28.1, 28.1])
    assert xy[1, 0] == pytest.approx(98.2, abs=0.5)  # 0.001° of longitude at 28° N
    lon, lat = frame.to_lonlat(xy)
    assert lon.tolist() == pytest.approx([112.8, 112.801]) and lat.tolist() == [28.1, 28.1]


def test_peak_hours_wrap_midnight():
    assert peak_hours(np.array([23, 23, 0, 1, 12])) == (23, 80)
    assert peak_hours(np.array([], dtype=np.int64)) is None


def test_junctions_come_from_the_configured_road_network(tmp_path, settings):
    from dataclasses import replace

    from gridwatch.targeting.prevention import _junctions
    from gridwatch.targeting.rules import TargetingError

    frame = LocalFrame(112.8, 28.1)
    box = (112.79, 28.09, 112.81, 28.11)
    assert _junctions(settings, frame, box).shape == (0, 2)  # no roads configured
    lines = [
        [[112.8, 28.1], [112.801, 28.1]],
        [[112.8, 28.1], [112.8, 28.101]],
        [[112.799, 28.1], [112.8, 28.1]],
        [[112.801, 28.1], [112.802, 28.1]],  # a bend (degree 2), not a junction
    ]
    features = [
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": c}}
        for c in lines
    ]
    path = tmp_path / "roads.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    found = _junctions(replace(settings, route_roads_file=path), frame, box)
    assert found.shape == (1, 2) and np.abs(found[0]).max() < 1e-6
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json", "utf-8")
    with pytest.raises(TargetingError, match="cannot read the road network"):
        _junctions(replace(settings, route_roads_file=broken), frame, box)


def _inputs(incidents: list[tuple[float, float]], cameras: list[dict]):
    from datetime import UTC, datetime

    import pandas as pd
    from shapely.geometry import box

    from gridwatch.targeting.prevention import CameraInputs

    frame = LocalFrame(112.8, 28.1)
    grids = [box(112.79, 28.09, 112.80, 28.11), box(112.80, 28.09, 112.81, 28.11)]
    xy = np.array(incidents, dtype=float).reshape(-1, 2)
    lon, lat = frame.to_lonlat(xy)
    columns = ["source_id", "name", "lon", "lat", "type", "status", "direction_deg", "fov_deg"]
    columns += ["range_m", "grid_id", "grid_code", "in_township"]
    return CameraInputs(
        township_code="T",
        township_name="测试镇",
        grid_codes=["G1", "G2"],
        grid_geoms=np.array(grids, dtype=object),
        incident_lon=np.asarray(lon),
        incident_lat=np.asarray(lat),
        incident_grid=["G1" if x < 0 else "G2" for x in xy[:, 0]],
        cameras=pd.DataFrame(cameras, columns=columns),
        since=datetime(2025, 11, 1, tzinfo=UTC),
        until=datetime(2026, 11, 1, tzinfo=UTC),
    )


def test_camera_plan_places_sites_on_the_blind_clusters(settings):
    from gridwatch.targeting.prevention import camera_plan, repair_list

    frame = LocalFrame(112.8, 28.1)
    seen_lon, seen_lat = frame.to_lonlat(np.array([[-300.0, 0.0]]))
    down_lon, down_lat = frame.to_lonlat(np.array([[300.0, 300.0]]))
    camera = {"type": "hd", "direction_deg": None, "fov_deg": None, "range_m": 60.0}
    cameras = [
        {
            **camera,
            "source_id": "C1",
            "name": "路口",
            "lon": seen_lon[0],
            "lat": seen_lat[0],
            "status": "online",
            "grid_id": 1,
            "grid_code": "G1",
            "in_township": True,
        },
        {
            **camera,
            "source_id": "C2",
            "name": "超市",
            "lon": down_lon[0],
            "lat": down_lat[0],
            "status": "broken",
            "grid_id": 2,
            "grid_code": "G2",
            "in_township": True,
        },
    ]
    incidents = [(-300.0 + d, 0.0) for d in (0, 5, 10)]  # seen by the working camera
    incidents += [(300.0 + d, -300.0) for d in (0, 4, 8, 12, 16)]  # the big blind cluster
    incidents += [(300.0 + d, 300.0) for d in (0, 6)]  # under the broken camera
    incidents += [(-500.0, 800.0)]  # a lone one
    data = _inputs(incidents, cameras)
    plan = camera_plan(None, settings, "T", n=1, radius_m=50.0, inputs=data)
    assert plan["incidents"] == 11 and plan["covered_before"] == 3
    assert plan["blind_spot_incidents"] == 8
    assert len(plan["sites"]) == 1 and plan["covered_after"] == 8
    site = plan["sites"][0]
    x, y = frame.to_xy([site["lon"]], [site["lat"]])[0]
    # at the centre of mass of the cluster's cell (the lattice may cut off its edge point)
    assert abs(x - 308.0) < 5 and abs(y + 300.0) < 1 and site["grid_code"] == "G2"
    assert site["covered_incidents"] == 5 and site["kind"] == "hotspot_cell"
    two = camera_plan(None, settings, "T", n=2, radius_m=50.0, inputs=data)
    assert two["covered_after"] == 10 == two["greedy_covered_after"]
    assert [s["covered_incidents"] for s in two["sites"]] == [5, 2]
    repairs = repair_list(data, {"G2": 80.0})
    assert [(r["camera_id"], r["would_see_incidents"]) for r in repairs] == [("C2", 2)]
    # nothing to gain: no incidents at all
    empty = camera_plan(None, settings, "T", n=3, inputs=_inputs([], cameras))
    assert empty["sites"] == [] and empty["covered_after"] == empty["covered_before"] == 0


def test_grid_explanation_names_village_red_line_and_counts():
    text = explain_grid(
        {
            "grid_name": "东村第1网格",
            "village_name": "东村",
            "security_pct": 78.5,
            "top_factor": "两抢一盗",
            "incidents_label": "两抢一盗",
            "factor_incidents": 12,
            "factor_incidents_prev": 5,
            "night_share_pct": 60.0,
            "blind_spot_incidents": 7,
            "patrol_visits_per_week": 0.5,
            "not_notified": 2,
        },
        80.0,
    )
    assert text.startswith("东村第1网格(东村,村安全感 78.5%,低于80%红线,首要不满意因素 两抢一盗)")
    assert "两抢一盗警情 12 起,上季度 5 起" in text and "7 起发生在监控盲区" in text
    assert "2 起已破案件未回访" in text and text.endswith("。")


# --------------------------------------------------------------------------------------------
# The demo county end to end
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.storage import create_db_engine
    from gridwatch.workers.engine import RunRequest, run_eager

    root = tmp_path_factory.mktemp("plan_demo")
    settings = make_settings(root)
    engine = create_db_engine(settings.database_url)
    report = build_demo(settings, engine, root / "files", seed=7, scale="small")
    run_eager(engine, settings, RunRequest(period_kinds=("quarter",)))
    yield settings, engine, report.files.truths
    engine.dispose()


@pytest.fixture(scope="module")
def demo_county(demo_build):
    settings, engine, _truths = demo_build
    return settings, engine


def _cli(settings, *args, code=0):
    from click.testing import CliRunner

    from gridwatch.cli import main

    result = CliRunner().invoke(main, list(args), obj={"settings": settings})
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def worst_township(demo_county) -> str:
    from gridwatch.targeting.ladder import scores_of_record

    settings, engine = demo_county
    quarterly, _annual = scores_of_record(engine, settings, "township", "security_pct")
    scores = quarterly["2026Q3"]
    return min(scores, key=lambda code: (scores[code], code))


@pytest.mark.slow
def test_demo_rankings_command_prints_the_issue_list(demo_county):
    from gridwatch.targeting.ladder import STATUSES

    settings, _engine = demo_county
    rows = json.loads(
        _cli(settings, "rankings", "--period", "2026Q3", "--replicates", "100", "--json")
    )
    assert isinstance(rows, list) and 65 <= len(rows) <= 75
    for row in rows:
        assert {"area_code", "rank", "security_pct", "ci_low", "ci_high", "status"} <= set(row)
        assert row["status"] in STATUSES
        assert all({"period", "status"} == set(h) for h in row["status_history"])
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows)
    county = json.loads(
        _cli(
            settings,
            "rankings",
            "--period",
            "2026Q3",
            "--level",
            "county",
            "--replicates",
            "20",
            "--json",
        )
    )
    assert len(county) == 1
    text = _cli(settings, "rankings", "--period", "2026Q3", "--replicates", "20")
    assert "bottom 5" in text
    _cli(settings, "rankings", "--period", "2026Q9", code=2)


@pytest.mark.slow
def test_demo_camera_plan_respects_n_and_beats_or_equals_greedy(demo_county, worst_township):
    settings, engine = demo_county
    from gridwatch.areas import load_tree

    township = worst_township
    plan = json.loads(
        _cli(settings, "plan", "cameras", "--township", township, "--n", "12", "--json")
    )
    assert {"sites", "covered_before", "covered_after", "greedy_covered_after"} <= set(plan)
    assert 0 < len(plan["sites"]) <= 12
    assert plan["covered_after"] >= plan["greedy_covered_after"] >= plan["covered_before"]
    assert plan["covered_after"] >= plan["naive_covered_after"]
    gained = plan["covered_after"] - plan["covered_before"]
    assert sum(s["covered_incidents"] for s in plan["sites"]) == gained
    assert 0 < gained <= plan["blind_spot_incidents"]
    assert plan["covered_before"] + plan["blind_spot_incidents"] == plan["incidents"]
    tree = load_tree(engine)
    inside = tree.subtree(tree.by_code[township].id)
    for site in plan["sites"]:
        assert {"lon", "lat", "grid_code", "covered_incidents"} <= set(site)
        assert tree.by_code[site["grid_code"]].id in inside
    # more cameras never cover less
    more = json.loads(
        _cli(settings, "plan", "cameras", "--township", township, "--n", "30", "--json")
    )
    assert more["covered_after"] >= plan["covered_after"] and len(more["sites"]) <= 30
    bad = _cli(settings, "plan", "cameras", "--township", "439901047001", code=2)
    assert "not a township" in bad
    assert "no area" in _cli(settings, "plan", "cameras", "--township", "x", code=2)


@pytest.mark.slow
def test_demo_prevention_plan_lists(demo_county, worst_township):
    from gridwatch.targeting.prevention import prevention_plan

    settings, engine = demo_county
    township = worst_township
    plan = prevention_plan(
        engine, settings, township, "2026Q3", n=10, time_limit_s=5, replicates=100
    )
    assert plan["period"] == "2026Q3" and len(plan["cameras"]["sites"]) <= 10
    repairs = plan["repairs"]
    assert repairs and all(r["status"] in ("offline", "broken") for r in repairs)
    seen = [r["would_see_incidents"] for r in repairs]
    assert seen == sorted(seen, reverse=True)
    focus = plan["patrol_focus"]
    assert focus and focus[0]["priority_index"] >= focus[-1]["priority_index"]
    assert all(r["peak_hours"] is None or "–" in r["peak_hours"] for r in focus)
    for village in plan["publicity"]:
        assert village["households_per_visit"] == 10 and village["low"]
        assert (
            village["awareness_pct"] < village["county_median_awareness_pct"]
            or village["participation_pct"] < village["county_median_participation_pct"]
        )
    cases = [c for station in plan["follow_up"] for c in station["cases"]]
    assert cases and all(c["solved_at"] for c in cases)
    text = _cli(
        settings, "plan", "prevention", "--township", township, "--n", "5", "--replicates", "50"
    )
    assert "repair first" in text and "破而不馈" in text


@pytest.mark.slow
def test_demo_grid_priorities_find_the_theft_grids(demo_county):
    from gridwatch.targeting.grid_priorities import grid_priorities
    from gridwatch.targeting.linkage import MetricReader, priorities

    settings, engine = demo_county
    villages = priorities(engine, settings, "2026Q3", replicates=100)
    result = grid_priorities(engine, settings, "2026Q3", village_result=villages)
    rows = result["rows"]
    assert len(rows) > 2000
    surveyed = {r["area_code"] for r in villages["rows"]}
    assert all(r["village_code"] in surveyed for r in rows)
    top, rest = rows[: len(rows) // 10], rows[len(rows) // 10 :]
    assert np.mean([r["counts"]["factor_incidents"] for r in top]) > 2 * np.mean(
        [r["counts"]["factor_incidents"] for r in rest]
    )
    assert np.mean([r["security_pct"] for r in top]) < np.mean([r["security_pct"] for r in rest])
    # the demo's villages without a working camera (a built-in truth) rank higher on average
    reader = MetricReader(engine)
    village_metrics = reader.get("village", "2026Q3")
    without = [
        r["priority_index"]
        for r in villages["rows"]
        if not village_metrics[r["area_code"]].get("cameras_working")
    ]
    with_cameras = [
        r["priority_index"]
        for r in villages["rows"]
        if village_metrics[r["area_code"]].get("cameras_working")
    ]
    assert len(without) > 50 and np.mean(without) > np.mean(with_cameras) + 2.0
    for r in top[:20]:
        assert r["area_name"] in r["explanation"] and r["village_name"] in r["explanation"]
    # the top village's grids with the most incidents are named in its own explanation
    first = villages["rows"][0]
    if "集中在" in first["explanation"]:
        its_grids = [r for r in rows if r["village_code"] == first["area_code"]]
        busiest = max(its_grids, key=lambda r: r["counts"]["factor_incidents"])
        assert busiest["area_name"] in first["explanation"]
    # a township's grids keep their county-wide index
    township = rows[0]["township_code"]
    part = grid_priorities(engine, settings, "2026Q3", township, village_result=villages)
    index = {r["area_code"]: r["priority_index"] for r in rows}
    assert part["rows"] and all(index[r["area_code"]] == r["priority_index"] for r in part["rows"])
    assert all(r["township_code"] == township for r in part["rows"])
    text = _cli(settings, "priorities", "--period", "2026Q3", "--level", "grid", "--limit", "2")
    assert "网格" in text and "首要不满意因素" in text


@pytest.mark.slow
def test_demo_early_warning_and_model_commands(demo_county):
    settings, _engine = demo_county
    warning = json.loads(_cli(settings, "survey", "early-warning", "--json"))
    assert warning["target_period"] == "2026Q4" and warning["metrics_period"] == "2026Q3"
    validation = warning["validation"]
    assert [q["period"] for q in validation["quarters"]] == ["2026Q1", "2026Q2", "2026Q3"]
    assert validation["beats_persistence"] == (validation["mae"] < validation["persistence_mae"])
    assert warning["method"] == ("ridge" if validation["beats_persistence"] else "persistence")
    rows = warning["rows"]
    assert 65 <= len(rows) <= 75
    assert sum(r["predicted_bottom"] for r in rows) >= 5
    assert all(r["at_risk"] for r in rows if r["predicted_bottom"])
    assert sum(r["bottom_probability"] for r in rows) == pytest.approx(5.0, abs=0.01)
    # the quarter that is not over yet cannot be predicted from its own metrics
    refused = _cli(settings, "survey", "early-warning", "--lead", "0", code=2)
    assert "not complete" in refused
    model = json.loads(_cli(settings, "survey", "model", "--replicates", "30", "--json"))
    assert model["used"] == (model["cv_r2"] is not None and model["cv_r2"] > 0)
    theft = next(
        c for c in model["coefficients"] if c["feature"] == "two_robberies_one_theft_per_1000"
    )
    assert theft["coef"] < 0 and theft["holds"]


@pytest.mark.slow
def test_demo_built_in_truths_are_found_by_the_priority_index(demo_build):
    """The generator's rising 两抢一盗 townships and camera-less villages rank high."""
    from scipy.stats import mannwhitneyu

    from gridwatch.targeting.linkage import priorities

    settings, engine, truths = demo_build
    rising = set(truths["rising_townships"])
    blind = set(truths["villages_without_cameras"])
    assert len(rising) == 4 and 60 <= len(blind) <= 140

    # Townships: the rising ones are in the top quarter (one may be drowned by its noise,
    # chance alone puts 3 of 4 there 5 % of the time) and all in the top half; their
    # explanation names 两抢一盗, its rise on last quarter and the levers that fit it.
    townships = priorities(engine, settings, "2026Q3", level="township", replicates=100)["rows"]
    quarter = len(townships) / 4
    found = [r for r in townships if r["area_code"] in rising]
    assert len(found) == 4
    assert sum(r["rank"] <= quarter for r in found) >= 3
    assert all(r["rank"] <= len(townships) / 2 for r in found)
    for r in found:
        assert r["top_factor"]["code"] == "two_robberies_one_theft"
        assert "首要不满意因素 两抢一盗" in r["explanation"]
        assert re.search(r"两抢一盗警情 \d+ 起,较上季度 \+\d+%", r["explanation"])
        assert {lever["code"] for lever in r["levers"]} == {"cameras", "night_patrol"}

    villages = priorities(engine, settings, "2026Q3", level="village", replicates=100)["rows"]
    share = {r["area_code"]: r["rank"] / len(villages) for r in villages}
    # Villages of the rising townships: their median rank is in the top quarter.
    rising_ranks = [share[r["area_code"]] for r in villages if r["parent_code"] in rising]
    assert len(rising_ranks) >= 20 and float(np.median(rising_ranks)) <= 0.25

    # Villages without a working camera rank clearly above the others (their incidents are
    # few, so the index cannot put them all at the top), and their explanation says that
    # their incidents happened in blind spots and proposes camera coverage.
    blind_rows = [r for r in villages if r["area_code"] in blind]
    blind_ranks = [share[r["area_code"]] for r in blind_rows]
    other_ranks = [share[code] for code in share if code not in blind]
    assert mannwhitneyu(blind_ranks, other_ranks, alternative="less").pvalue < 0.01
    assert np.mean(np.array(blind_ranks) <= 0.5) >= 0.55
    blind_pcts = []
    for r in blind_rows:
        match = re.search(r"(\d+)% 的警情发生在监控盲区", r["explanation"])
        if match:
            blind_pcts.append(int(match.group(1)))
        if r["top_factor"]["code"] == "two_robberies_one_theft":
            assert "cameras" in {lever["code"] for lever in r["levers"]}
    assert len(blind_pcts) >= 0.8 * len(blind_rows) and min(blind_pcts) >= 50
    assert np.mean(blind_pcts) >= 95
