"""Tests of the synthetic demo county generator (generated once per module, scale 'small')."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path

import gpxpy
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import shape

from gridwatch.demo import DemoFiles, generate_demo
from gridwatch.geo.coords import gcj02_to_wgs84
from gridwatch.taxonomy import load_survey_factors, load_taxonomy

TODAY = date(2026, 11, 22)
INCIDENT_HEADER = [
    "警情编号",
    "发案时间",
    "报警时间",
    "案件类别",
    "经度",
    "纬度",
    "发案地址",
    "警情来源",
    "办理状态",
    "破案时间",
    "回访时间",
    "简要案情",
]
TWO_ROBBERIES_ONE_THEFT_ZH = {"盗窃", "入室盗窃", "盗窃机动车", "扒窃", "抢劫", "抢夺"}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoFiles, list[str]]:
    messages: list[str] = []
    files = generate_demo(
        tmp_path_factory.mktemp("demo"),
        seed=7,
        scale="small",
        today=TODAY,
        progress=messages.append,
    )
    return files, messages


@pytest.fixture(scope="module")
def demo(generated: tuple[DemoFiles, list[str]]) -> DemoFiles:
    return generated[0]


@pytest.fixture(scope="module")
def areas(demo: DemoFiles) -> pd.DataFrame:
    collection = json.loads(demo.grids.read_text("utf-8"))
    frame = pd.DataFrame([feature["properties"] for feature in collection["features"]])
    frame["geometry"] = [shape(feature["geometry"]) for feature in collection["features"]]
    return frame


@pytest.fixture(scope="module")
def county_shape(areas: pd.DataFrame):
    return areas.loc[areas["level"] == "county", "geometry"].iloc[0]


@pytest.fixture(scope="module")
def incidents(demo: DemoFiles) -> pd.DataFrame:
    return pd.read_csv(demo.incidents, encoding="gbk", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def cameras(demo: DemoFiles) -> pd.DataFrame:
    return pd.read_excel(demo.cameras, dtype=object)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, encoding="utf-8-sig", dtype=str, keep_default_na=False)


def _lines(demo: DemoFiles, file_name: str) -> set[int]:
    return {bad.line for bad in demo.bad_row_details[file_name]}


def _sha256_of_files(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
    }


def _inside_county(county_shape, lon: pd.Series, lat: pd.Series) -> np.ndarray:
    lon_values = pd.to_numeric(lon, errors="coerce").to_numpy(dtype=float)
    lat_values = pd.to_numeric(lat, errors="coerce").to_numpy(dtype=float)
    numeric = ~(np.isnan(lon_values) | np.isnan(lat_values))
    inside = np.zeros(len(lon_values), dtype=bool)
    inside[numeric] = shapely.contains_xy(
        county_shape.buffer(1e-6), lon_values[numeric], lat_values[numeric]
    )
    return inside


# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_scale_and_today_give_byte_identical_files(demo, tmp_path):
    again = generate_demo(tmp_path, seed=7, scale="small", today=TODAY)
    first = _sha256_of_files(demo.grids.parent)
    second = _sha256_of_files(tmp_path)
    assert len(first) == 9
    assert first == second
    assert again.bad_row_details == demo.bad_row_details
    assert again.extent == demo.extent


def test_progress_reports_every_stage(generated):
    _, messages = generated
    assert len(messages) >= 7
    assert any("incidents" in message for message in messages)
    assert any("grids" in message for message in messages)


def test_today_too_early_is_refused(tmp_path):
    with pytest.raises(ValueError, match="less than a month"):
        generate_demo(tmp_path, today=date(2025, 10, 15))


def test_area_tree_has_the_expected_shape_and_codes(areas):
    levels = areas["level"].value_counts()
    assert levels["county"] == 1
    assert levels["township"] == 70
    assert 600 <= levels["village"] <= 800
    assert 2_000 <= levels["grid"] <= 5_000
    assert list(areas.columns[:5]) == ["code", "name", "level", "parent_code", "population"]

    by_code = areas.set_index("code")
    assert by_code.index.is_unique
    county = areas[areas["level"] == "county"].iloc[0]
    assert county["code"] == "439901000000" and pd.isna(county["parent_code"])
    digits = {"township": 12, "village": 12, "grid": 15}
    kept_prefix = {"township": 6, "village": 9, "grid": 12}
    for row in areas[areas["level"] != "county"].itertuples():
        assert re.fullmatch(rf"\d{{{digits[row.level]}}}", row.code), row.code
        assert row.code.startswith(row.parent_code[: kept_prefix[row.level]]), row.code
        parent_level = by_code.loc[row.parent_code, "level"]
        assert {"township": "county", "village": "township", "grid": "village"}[
            row.level
        ] == parent_level
    townships = areas[areas["level"] == "township"]
    assert townships["name"].str.contains("镇|乡|街道").all()
    assert areas[areas["level"] == "village"]["name"].str.contains("村|社区").all()
    assert areas[areas["level"] == "grid"]["name"].str.contains(r"第\d+网格").all()


def test_every_child_lies_inside_its_parent_and_populations_add_up(areas):
    geometries = areas["geometry"].to_numpy()
    assert shapely.is_valid(geometries).all()
    assert set(shapely.get_type_id(geometries)) <= {3, 6}  # Polygon, MultiPolygon
    by_code = areas.set_index("code")
    children = areas[areas["level"] != "county"]
    parents = by_code.loc[children["parent_code"], "geometry"].to_numpy()
    assert shapely.within(children["geometry"].to_numpy(), shapely.buffer(parents, 1e-7)).all()
    for level in ("county", "township", "village"):
        parents_of_level = by_code[by_code["level"] == level]
        child_sums = areas.groupby("parent_code")["population"].sum()
        assert (child_sums.reindex(parents_of_level.index) == parents_of_level["population"]).all()
    village_population = areas.loc[areas["level"] == "village", "population"]
    assert village_population.between(800, 5_000).all()


def test_extent_is_the_county_bbox_in_hunan(demo, county_shape):
    min_lon, min_lat, max_lon, max_lat = demo.extent
    assert np.allclose(demo.extent, county_shape.bounds, atol=1e-6)
    assert 112.5 < min_lon < max_lon < 113.4
    assert 27.8 < min_lat < max_lat < 28.5
    width_km = (max_lon - min_lon) * 111.32 * np.cos(np.radians(28.15))
    height_km = (max_lat - min_lat) * 110.57
    assert 50 < width_km < 75 and 40 < height_km < 60


def test_incidents_file_is_gbk_with_the_chinese_header(demo):
    raw = demo.incidents.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("gbk")
    assert text.splitlines()[0].split(",") == INCIDENT_HEADER


def test_incident_volume_time_span_and_labels(demo, incidents):
    bad = _lines(demo, "incidents.csv")
    good = incidents[~(incidents.index + 2).isin(bad)]
    assert len(good) == demo.row_counts["incidents.csv"] == 20_000
    occurred = pd.to_datetime(good["发案时间"], format=TIME_FORMAT)
    assert occurred.min() >= pd.Timestamp("2025-10-01")
    assert occurred.max() < pd.Timestamp(TODAY)
    assert occurred.max() - occurred.min() > pd.Timedelta(days=365)
    assert set(good["警情来源"]) == {"110报警", "来所报案", "巡逻发现"}
    assert 0.6 < (good["警情来源"] == "110报警").mean() < 0.8
    assert set(good["办理状态"]) == {"已报警", "已受理", "已破案", "已结案"}
    assert good["警情编号"].str.fullmatch(r"J439901\d{7}").all()


def test_two_robberies_one_theft_is_the_largest_group(demo, incidents):
    taxonomy = load_taxonomy()
    bad = _lines(demo, "incidents.csv")
    good = incidents[~(incidents.index + 2).isin(bad)]
    codes = good["案件类别"].map(taxonomy.resolve)
    assert codes.notna().all()
    shares = {
        group: codes.isin(taxonomy.in_group(group)).mean()
        for group in taxonomy.groups
        if group not in ("property",)  # property crime contains 两抢一盗 itself
    }
    assert max(shares, key=shares.__getitem__) == "two_robberies_one_theft"
    assert 0.45 < shares["two_robberies_one_theft"] < 0.65
    assert set(good["案件类别"]) >= TWO_ROBBERIES_ONE_THEFT_ZH


def test_burglary_and_theft_peak_at_night(incidents):
    hours = pd.to_datetime(incidents["发案时间"], format=TIME_FORMAT, errors="coerce").dt.hour
    night = (hours >= 20) | (hours < 6)  # ten hours: a flat day would give 10/24
    for category in ("入室盗窃", "盗窃"):
        chosen = (incidents["案件类别"] == category) & hours.notna()
        assert night[chosen].mean() > 10 / 24, category
    pickpocketing = (incidents["案件类别"] == "扒窃") & hours.notna()
    assert night[pickpocketing].mean() < night[incidents["案件类别"] == "入室盗窃"].mean()


def test_incident_lifecycle_times_are_ordered(demo, incidents):
    bad = _lines(demo, "incidents.csv")
    good = incidents[~(incidents.index + 2).isin(bad)]
    occurred = pd.to_datetime(good["发案时间"], format=TIME_FORMAT)
    reported = pd.to_datetime(good["报警时间"], format=TIME_FORMAT)
    solved = pd.to_datetime(good["破案时间"], format=TIME_FORMAT, errors="coerce")
    notified = pd.to_datetime(good["回访时间"], format=TIME_FORMAT, errors="coerce")
    assert (reported >= occurred).all()
    assert (reported - occurred).median() < pd.Timedelta(hours=2)
    is_solved = good["办理状态"].isin(["已破案", "已结案"])
    assert solved[is_solved].notna().all() and solved[~is_solved].isna().all()
    assert (solved[is_solved] >= reported[is_solved]).all()
    assert notified[~is_solved].isna().all()
    assert (notified.dropna() >= solved[notified.notna()]).all()
    told = notified[is_solved].notna().mean()
    assert 0.4 < told < 0.95  # most but not all solved cases: 破而不馈


def test_gcj02_coordinates_convert_back_inside_the_county(demo, incidents, county_shape):
    lon = pd.to_numeric(incidents["经度"], errors="coerce")
    lat = pd.to_numeric(incidents["纬度"], errors="coerce")
    numeric = lon.notna() & lat.notna()
    wgs_lon, wgs_lat = gcj02_to_wgs84(lon[numeric].to_numpy(), lat[numeric].to_numpy())
    inside = pd.Series(False, index=incidents.index)
    inside[numeric] = shapely.contains_xy(county_shape.buffer(1e-6), wgs_lon, wgs_lat)
    min_lon, min_lat, max_lon, max_lat = demo.extent
    in_box = pd.Series(False, index=incidents.index)
    in_box[numeric] = (
        (wgs_lon >= min_lon) & (wgs_lon <= max_lon) & (wgs_lat >= min_lat) & (wgs_lat <= max_lat)
    )
    outside_lines = set((incidents.index[~inside] + 2).tolist())
    assert outside_lines <= _lines(demo, "incidents.csv")
    assert len(outside_lines) == 2  # the Beijing row and the non-numeric one
    assert in_box.sum() == len(incidents) - 2
    # The file really is shifted: read as WGS84 it would sit hundreds of metres off.
    shift = np.hypot(lon[numeric].to_numpy() - wgs_lon, lat[numeric].to_numpy() - wgs_lat)
    assert np.median(shift) > 0.002


def test_stations_cover_every_township_in_groups_of_three_or_four(demo, areas):
    stations = _csv(demo.stations)
    good = stations[~(stations.index + 2).isin(_lines(demo, "stations.csv"))]
    assert 18 <= len(good) <= 23
    assert good["code"].str.fullmatch(r"PS439901\d{4}").all()
    assert good["name"].str.endswith("派出所").all()
    covered = good["township_codes"].str.split(";")
    assert covered.map(len).between(3, 4).all()
    all_covered = [code for codes in covered for code in codes]
    townships = set(areas.loc[areas["level"] == "township", "code"])
    assert sorted(all_covered) == sorted(townships)


def test_56_teams_of_which_42_log_pings(demo):
    teams = _csv(demo.teams)
    good = teams[~(teams.index + 2).isin(_lines(demo, "teams.csv"))]
    assert len(good) == 56
    assert set(good["kind"]) == {"police", "township", "village"}
    assert (good.loc[good["kind"] != "village", "station_code"] != "").all()

    pings = _csv(demo.patrols)
    known = pings[pings["team_code"].isin(good["code"])]
    assert known["team_code"].nunique() == 42
    assert len(pings) < 100_000
    times = pd.to_datetime(known["ts"], format=TIME_FORMAT, errors="coerce").dropna()
    assert times.min() >= pd.Timestamp(TODAY) - pd.Timedelta(weeks=8)
    assert times.max() < pd.Timestamp(TODAY)
    gaps = (
        known.assign(ts=pd.to_datetime(known["ts"], format=TIME_FORMAT, errors="coerce"))
        .dropna()
        .groupby("team_code")["ts"]
        .diff()
        .dropna()
    )
    assert gaps.mode().iloc[0] == pd.Timedelta(minutes=2)
    township_teams = set(good.loc[good["kind"] == "township", "code"])
    evening = pd.to_datetime(
        known.loc[known["team_code"].isin(township_teams), "ts"], format=TIME_FORMAT
    ).dt.hour
    assert ((evening >= 19) | (evening < 6)).mean() > 0.9


def test_gpx_track_is_one_patrol_of_an_active_team_in_utc(demo, county_shape):
    with demo.patrol_gpx.open(encoding="utf-8") as handle:
        gpx = gpxpy.parse(handle)
    assert len(gpx.tracks) == 1
    track = gpx.tracks[0]
    teams = _csv(demo.teams)
    pinging = set(_csv(demo.patrols)["team_code"])
    assert track.name in set(teams["code"]) and track.name in pinging
    points = [point for segment in track.segments for point in segment.points]
    assert len(points) >= 20
    assert all(
        point.time is not None and point.time.utcoffset().total_seconds() == 0 for point in points
    )
    lon = np.array([point.longitude for point in points])
    lat = np.array([point.latitude for point in points])
    assert shapely.contains_xy(county_shape.buffer(0.01), lon, lat).all()


def test_cameras_sheet_has_the_chinese_header_and_realistic_mix(demo, areas, cameras):
    assert list(cameras.columns) == [
        "点位编号", "点位名称", "经度", "纬度", "类型", "状态",
        "分辨率", "朝向", "视场角", "监控距离", "建设时间", "建设单位",
    ]  # fmt: skip
    good = cameras[~(cameras.index + 2).isin(_lines(demo, "cameras.xlsx"))]
    assert 14_000 <= len(good) <= 16_000
    kinds = good["类型"].value_counts()
    assert kinds["卡口"] == 266
    assert set(kinds.index) == {"卡口", "高清", "标清", "社会联网"}
    broken = good["状态"].isin(["离线", "故障"]).mean()
    assert 0.08 < broken < 0.18
    assert 0.2 < good["朝向"].isna().mean() < 0.4

    villages = areas[areas["level"] == "village"].reset_index(drop=True)
    tree = shapely.STRtree(villages["geometry"].to_numpy())
    points = shapely.points(good["经度"].astype(float), good["纬度"].astype(float))
    _, holding = tree.query(points, predicate="intersects")
    without = 1 - len(set(holding.tolist())) / len(villages)
    assert 0.10 <= without <= 0.20


def test_survey_security_in_range_and_falls_with_two_robberies_one_theft(demo, areas, incidents):
    results = _csv(demo.surveys)
    factors = list(load_survey_factors())
    assert list(results.columns) == [
        "area_code", "period", "respondents", "security_pct", "satisfaction_pct",
        "composite_score", "awareness_pct", "participation_pct", *factors,
    ]  # fmt: skip
    good = results[~(results.index + 2).isin(_lines(demo, "survey_results.csv"))].copy()
    assert set(good["period"]) == {"2025Q3", "2025Q4", "2026Q1", "2026Q2", "2026Q3"}
    security = good["security_pct"].astype(float)
    assert security.between(75, 98).all()
    assert np.allclose(good[factors].astype(float).sum(axis=1), 100, atol=0.2)

    townships = areas[areas["level"] == "township"].reset_index(drop=True)
    township_results = good[good["area_code"].isin(townships["code"])]
    assert (township_results.groupby("period").size() == 70).all()
    assert (township_results["security_pct"].astype(float) < 80).any()

    # 两抢一盗 per 1,000 residents per township and quarter, from the incident file itself.
    theft = incidents[incidents["案件类别"].isin(TWO_ROBBERIES_ONE_THEFT_ZH)]
    occurred = pd.to_datetime(theft["发案时间"], format=TIME_FORMAT, errors="coerce")
    lon = pd.to_numeric(theft["经度"], errors="coerce")
    lat = pd.to_numeric(theft["纬度"], errors="coerce")
    usable = occurred.notna() & lon.notna() & lat.notna()
    wgs_lon, wgs_lat = gcj02_to_wgs84(lon[usable].to_numpy(), lat[usable].to_numpy())
    tree = shapely.STRtree(townships["geometry"].to_numpy())
    point_index, township_index = tree.query(
        shapely.points(wgs_lon, wgs_lat), predicate="intersects"
    )
    located = pd.DataFrame(
        {
            "area_code": townships["code"].to_numpy()[township_index],
            "period": occurred[usable].dt.to_period("Q").astype(str).to_numpy()[point_index],
        }
    )
    counts = located.groupby(["area_code", "period"]).size().rename("count")
    population = townships.set_index("code")["population"]
    correlations = []
    for period in ("2025Q4", "2026Q1", "2026Q2", "2026Q3"):  # quarters the incidents cover
        wave = township_results[township_results["period"] == period].set_index("area_code")
        per_thousand = (
            counts.xs(period, level="period").reindex(wave.index, fill_value=0)
            / population.reindex(wave.index)
            * 1000
        )
        spearman = wave["security_pct"].astype(float).rank().corr(per_thousand.rank())
        correlations.append(spearman)
        assert spearman < -0.4, period
    assert np.mean(correlations) < -0.6


def test_survey_responds_to_cameras_patrols_and_vice(demo, areas, cameras, incidents):
    results = _csv(demo.surveys)
    good = results[~(results.index + 2).isin(_lines(demo, "survey_results.csv"))]
    numbers = good.columns[2:]
    good = good.assign(**{column: good[column].astype(float) for column in numbers})

    # Villages with no working camera feel less safe and name missing cameras more often.
    villages = areas[areas["level"] == "village"].reset_index(drop=True)
    usable = cameras[
        pd.to_numeric(cameras["经度"], errors="coerce").notna()
        & (pd.to_numeric(cameras["纬度"], errors="coerce") < 90)
        & (cameras["状态"] == "在线")
    ]
    tree = shapely.STRtree(villages["geometry"].to_numpy())
    _, holding = tree.query(
        shapely.points(usable["经度"].astype(float), usable["纬度"].astype(float)),
        predicate="intersects",
    )
    has_working_camera = villages["code"].isin(villages["code"].to_numpy()[holding])
    blind = set(villages.loc[~has_working_camera, "code"])
    village_rows = good[good["area_code"].isin(villages["code"])]
    without = village_rows[village_rows["area_code"].isin(blind)]
    with_camera = village_rows[~village_rows["area_code"].isin(blind)]
    assert without["security_pct"].mean() < with_camera["security_pct"].mean() - 1
    assert without["lack_of_cameras"].mean() > 2 * with_camera["lack_of_cameras"].mean()

    # Townships whose 巡防队 logs nothing see police less often than those whose team works.
    teams = _csv(demo.teams)
    pinging = set(_csv(demo.patrols)["team_code"])
    township_teams = teams[teams["kind"] == "township"]
    idle = set(township_teams.loc[~township_teams["code"].isin(pinging), "home_area_code"])
    working = set(township_teams.loc[township_teams["code"].isin(pinging), "home_area_code"])
    by_township = good.groupby("area_code")[["police_rarely_seen", "security_pct"]].mean()
    assert idle and working
    assert (
        by_township.loc[sorted(idle), "police_rarely_seen"].mean()
        > by_township.loc[sorted(working), "police_rarely_seen"].mean()
    )
    assert (
        by_township.loc[sorted(idle), "security_pct"].mean()
        < by_township.loc[sorted(working), "security_pct"].mean()
    )

    # Where gambling is reported more, residents name gambling more.
    townships = areas[areas["level"] == "township"].reset_index(drop=True)
    gambling = incidents[incidents["案件类别"] == "赌博"]
    lon, lat = gcj02_to_wgs84(gambling["经度"].astype(float), gambling["纬度"].astype(float))
    township_tree = shapely.STRtree(townships["geometry"].to_numpy())
    _, township_index = township_tree.query(shapely.points(lon, lat), predicate="intersects")
    per_resident = (
        pd.Series(townships["code"].to_numpy()[township_index]).value_counts()
        / townships.set_index("code")["population"]
    ).fillna(0)
    share = good[good["area_code"].isin(townships["code"])].groupby("area_code")["gambling"].mean()
    assert share.rank().corr(per_resident.reindex(share.index).rank()) > 0.5


def test_bottom_five_townships_persist_between_quarters(demo, areas):
    results = _csv(demo.surveys)
    good = results[~(results.index + 2).isin(_lines(demo, "survey_results.csv"))]
    townships = set(areas.loc[areas["level"] == "township", "code"])
    table = (
        good[good["area_code"].isin(townships)]
        .assign(security_pct=lambda frame: frame["security_pct"].astype(float))
        .pivot(index="area_code", columns="period", values="security_pct")
    )
    bottom = [set(table[period].nsmallest(5).index) for period in sorted(table.columns)]
    overlaps = [len(a & b) for a, b in zip(bottom, bottom[1:], strict=False)]
    assert max(overlaps) >= 3


def test_survey_responses_cover_the_last_two_waves_consistently(demo):
    responses = _csv(demo.survey_responses)
    good = responses[~(responses.index + 2).isin(_lines(demo, "survey_responses.csv"))]
    assert set(good["period"]) == {"2026Q2", "2026Q3"}
    assert good["respondent_id"].is_unique
    assert good["respondent_id"].str.fullmatch(r"R2026Q[23]-\d{6}").all()
    completed = good[good["outcome"] == "completed"]
    others = good[good["outcome"] != "completed"]
    assert set(good["outcome"]) == {"completed", "refused", "hung_up", "no_answer"}
    assert (
        (others[["security", "satisfaction", "aware", "participated", "factors"]] == "")
        .all()
        .all()
    )
    assert 0.22 < (completed["aware"] == "yes").mean() < 0.36
    assert 0.18 < (completed["participated"] == "yes").mean() < 0.32
    assert (completed.loc[completed["security"] == "safe", "factors"] == "").all()
    named = completed["factors"].str.split(";").map(lambda codes: [c for c in codes if c])
    assert named.map(len).max() <= 3
    assert set(code for codes in named for code in codes) <= set(load_survey_factors())
    assert completed["weight"].astype(float).between(0.3, 3.0).all()
    per_village = good.groupby(["period", "area_code"]).size()
    assert per_village.between(20, 50).all()


def _incident_problems(frame: pd.DataFrame, county_shape) -> pd.Series:
    taxonomy = load_taxonomy()
    bad_time = pd.to_datetime(frame["发案时间"], format=TIME_FORMAT, errors="coerce").isna()
    lon = pd.to_numeric(frame["经度"], errors="coerce")
    lat = pd.to_numeric(frame["纬度"], errors="coerce")
    numeric = lon.notna() & lat.notna()
    inside = pd.Series(False, index=frame.index)
    wgs_lon, wgs_lat = gcj02_to_wgs84(lon[numeric].to_numpy(), lat[numeric].to_numpy())
    inside[numeric] = shapely.contains_xy(county_shape.buffer(1e-6), wgs_lon, wgs_lat)
    unknown_category = frame["案件类别"].map(taxonomy.resolve).isna()
    duplicated = frame["警情编号"].duplicated()
    return bad_time | ~inside | unknown_category | duplicated


def test_bad_rows_are_where_the_generator_says_and_nowhere_else(
    demo, areas, county_shape, cameras
):
    """An independent check of each file finds exactly the rows listed as bad."""
    area_codes = set(areas["code"])
    factors = set(load_survey_factors())
    found: dict[str, pd.Series] = {}

    incidents = pd.read_csv(demo.incidents, encoding="gbk", dtype=str, keep_default_na=False)
    found["incidents.csv"] = _incident_problems(incidents, county_shape)

    built = pd.to_datetime(cameras["建设时间"].astype(str), errors="coerce")
    found["cameras.xlsx"] = (
        cameras["点位编号"].isna()
        | ~_inside_county(county_shape, cameras["经度"], cameras["纬度"])
        | ~cameras["类型"].isin(["卡口", "高清", "标清", "社会联网"])
        | ~cameras["状态"].isin(["在线", "离线", "故障"])
        | built.isna()
    )

    stations = _csv(demo.stations)
    found["stations.csv"] = (
        (stations["name"] == "")
        | ~_inside_county(county_shape, stations["lon"], stations["lat"])
        | stations["township_codes"].str.split(";").map(lambda codes: not set(codes) <= area_codes)
    )

    teams = _csv(demo.teams)
    found["teams.csv"] = (
        ~teams["kind"].isin(["police", "township", "village"])
        | ~teams["station_code"].isin(set(stations["code"]) | {""})
        | ~teams["home_area_code"].isin(area_codes)
    )

    pings = _csv(demo.patrols)
    found["patrol_pings.csv"] = (
        ~pings["team_code"].isin(set(teams["code"]))
        | pd.to_datetime(pings["ts"], format=TIME_FORMAT, errors="coerce").isna()
        | ~_inside_county(county_shape, pings["lon"], pings["lat"])
    )

    results = _csv(demo.surveys)
    percent_columns = [
        "security_pct", "satisfaction_pct", "awareness_pct", "participation_pct",
    ]  # fmt: skip
    percents = results[percent_columns].apply(pd.to_numeric, errors="coerce")
    found["survey_results.csv"] = (
        ~results["area_code"].isin(area_codes)
        | ~results["period"].str.fullmatch(r"\d{4}Q[1-4]")
        | percents.isna().any(axis=1)
        | (percents > 100).any(axis=1)
        | pd.to_numeric(results["respondents"], errors="coerce").isna()
    )

    responses = _csv(demo.survey_responses)
    found["survey_responses.csv"] = (
        ~responses["area_code"].isin(area_codes)
        | ~responses["outcome"].isin(["completed", "refused", "hung_up", "no_answer"])
        | ~responses["security"].isin(
            ["", "safe", "basically_safe", "not_very_safe", "unsafe", "unknown"]
        )
        | responses["factors"].str.split(";").map(lambda codes: not set(codes) <= factors | {""})
        | (
            (responses["weight"] != "")
            & pd.to_numeric(responses["weight"], errors="coerce").isna()
        )
    )

    for file_name, problems in found.items():
        details = demo.bad_row_details[file_name]
        assert 3 <= len(details) <= 6, file_name
        assert demo.bad_rows[file_name] == len(details)
        assert len({bad.problem for bad in details}) == len(details), file_name
        lines = set((problems[problems].index + 2).tolist())
        assert lines == _lines(demo, file_name), file_name
    assert demo.bad_rows["areas.geojson"] == 0
