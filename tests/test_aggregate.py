"""Aggregation engine: per-grid counts against an independent computation, roll-ups, periods
in local time, incremental runs equal full runs, and readers only see published runs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from gridwatch.ingest import ImportOptions, import_file
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import AggregationRun
from gridwatch.workers import engine as engine_module
from gridwatch.workers.countywide import local_today
from gridwatch.workers.engine import (
    RunRequest,
    create_run,
    mark_dirty,
    plan_units,
    read_layer,
    read_metrics,
    run_eager,
    start_run,
)

DATA = Path(__file__).parent / "data" / "minneapolis"


@pytest.fixture
def minneapolis(engine, db_settings):
    opts = ImportOptions(mapping=DATA / "neighborhoods.mapping.yaml")
    import_file("grids", DATA / "mnNeighborhood.geojson", db_settings, engine, opts)
    opts = ImportOptions(mapping=DATA / "stops.mapping.yaml")
    import_file("incidents", DATA / "MplsStops_every10th.csv", db_settings, engine, opts)
    return engine, db_settings


def independent_counts(settings) -> pd.DataFrame:
    """Per-neighbourhood, per-quarter counts from geopandas alone (ties → lowest code)."""
    stops = pd.read_csv(DATA / "MplsStops_every10th.csv")
    hoods = gpd.read_file(DATA / "mnNeighborhood.geojson")
    hoods["code"] = hoods["BDNUM"].astype(str)
    points = gpd.GeoDataFrame(
        stops, geometry=gpd.points_from_xy(stops["long"], stops["lat"]), crs="EPSG:4326"
    )
    joined = gpd.sjoin(points, hoods[["code", "geometry"]], predicate="intersects")
    joined = joined.sort_values(["rownames", "code"]).drop_duplicates("rownames")
    local = pd.to_datetime(joined["date"], utc=True).dt.tz_convert(settings.timezone.key)
    joined["quarter"] = local.dt.year.astype(str) + "Q" + local.dt.quarter.astype(str)
    return joined.groupby(["code", "quarter"]).size()


def test_grid_counts_equal_independent_join_and_roll_ups_add_up(minneapolis):
    engine, settings = minneapolis
    summary = run_eager(engine, settings, RunRequest(period_kinds=("year", "quarter")))
    assert summary["status"] == "done" and summary["mode"] == "eager"
    expected = independent_counts(settings)
    quarters = sorted(expected.index.get_level_values("quarter").unique())
    assert len(quarters) >= 4
    for quarter in quarters:
        got = {r["area_code"]: r["incidents_total"] for r in read_metrics(engine, "grid", quarter)}
        want = expected.xs(quarter, level="quarter").to_dict()
        assert {k: v for k, v in got.items() if v} == want
        assert len(got) == 87  # every neighbourhood listed, zeros included
    # late-December UTC stops fall in 2018 in Shanghai: compare over every year present
    years = sorted({q[:4] for q in quarters})
    assert years == ["2017", "2018"]
    year_total = sum(r["incidents_total"] for y in years for r in read_metrics(engine, "grid", y))
    assert year_total == sum(
        r["incidents_total"] for q in quarters for r in read_metrics(engine, "grid", q)
    )


def test_periods_are_cut_in_local_time_and_roll_up(loaded_county):
    engine, settings = loaded_county
    run_eager(engine, settings, RunRequest())
    # 2026-06-30 16:30 UTC is 00:30 on 1 July in Shanghai: Q3, July, night
    grid = {r["area_code"]: r for r in read_metrics(engine, "grid", "2026Q3")}
    g1 = grid["430000001001001"]
    assert g1["incidents_total"] == 2 and g1["incidents_night"] == 2
    assert g1["incidents_by_category"] == {"theft": 1, "burglary": 1}
    assert g1["incidents_by_group"]["two_robberies_one_theft"] == 2
    assert g1["incidents_patrol"] == 1 and g1["incidents_reported"] == 1
    assert g1["incidents_per_1000"] == pytest.approx(2.0)  # population 1000
    assert read_metrics(engine, "grid", "2026Q2")[0]["incidents_total"] == 0
    day = {
        r["area_code"]: r["incidents_total"] for r in read_metrics(engine, "grid", "2026-07-01")
    }
    assert day["430000001001001"] == 1
    for period in ("2026", "2026Q3", "2026-07", "2026-W27"):
        grids = sum(r["incidents_total"] for r in read_metrics(engine, "grid", period))
        village = read_metrics(engine, "village", period)[0]["incidents_total"]
        township = read_metrics(engine, "township", period)[0]["incidents_total"]
        county = read_metrics(engine, "county", period)[0]["incidents_total"]
        assert grids == village == township == county, period
    county = read_metrics(engine, "county", "2026Q3")[0]
    assert county["solved_rate_pct"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert county["not_notified_pct"] == pytest.approx(50.0)


def test_incremental_run_equals_full_run(loaded_county, tmp_path):
    engine, settings = loaded_county
    run_eager(engine, settings, RunRequest())
    extra = tmp_path / "more.csv"
    extra.write_text(
        "id,occurred_at,category,lon,lat\n"
        "N1,2026-08-01 10:00,theft,113.015,28.015\nN2,2026-08-02 23:00,robbery,113.015,28.015\n",
        "utf-8",
    )
    summary = import_file("incidents", extra, settings, engine)
    mark_dirty(engine, summary.affected_grid_ids)
    incremental = run_eager(engine, settings, RunRequest())
    assert incremental["scope"] == "incremental" and incremental["townships_total"] == 1
    after_incremental = {
        (lvl, p): read_metrics(engine, lvl, p)
        for lvl in ("grid", "township", "county")
        for p in ("2026Q3", "2026-08", "2026")
    }
    full = run_eager(engine, settings, RunRequest(full=True))
    assert full["scope"] == "full" and full["run_id"] != incremental["run_id"]
    for key, rows in after_incremental.items():
        fresh = read_metrics(engine, *key)
        strip = [{k: v for k, v in r.items() if k != "run_id"} for r in rows]
        assert strip == [{k: v for k, v in r.items() if k != "run_id"} for r in fresh], key
    assert read_metrics(engine, "county", "2026-08")[0]["incidents_total"] == 3  # I3 + N1 + N2


def test_readers_see_only_published_runs(loaded_county):
    engine, settings = loaded_county
    first = run_eager(engine, settings, RunRequest())
    before = read_metrics(engine, "county", "2026Q3")
    # a second run that has written rows but is not finished must stay invisible
    run_id = create_run(engine, RunRequest(full=True), mode="eager")
    units = plan_units(engine, run_id)
    start_run(engine, run_id, units, None)
    from gridwatch.workers.engine import compute_unit

    compute_unit(engine, settings, run_id, units[0].grid_ids, units[0].label)
    assert read_metrics(engine, "county", "2026Q3") == before
    assert before[0]["run_id"] == first["run_id"]
    with session_scope(engine) as s:
        s.execute(
            update(AggregationRun).where(AggregationRun.id == run_id).values(status="failed")
        )
        assert (
            s.scalar(select(AggregationRun.status).where(AggregationRun.id == run_id)) == "failed"
        )
    assert read_metrics(engine, "county", "2026Q3") == before


def test_metrics_cli_json(loaded_county):
    from click.testing import CliRunner

    from gridwatch.cli import main

    engine, settings = loaded_county
    env = {
        "GRIDWATCH_DATABASE_URL": settings.database_url,
        "GRIDWATCH_VAR_DIR": str(settings.var_dir),
        "GRIDWATCH_SECRET_KEY": "s" * 20,
    }
    runner = CliRunner()
    result = runner.invoke(main, ["aggregate", "--json"], env=env)
    assert result.exit_code == 0, result.output
    import json

    run = json.loads(result.stdout)
    assert run["status"] == "done" and run["mode"] == "eager"
    result = runner.invoke(
        main, ["metrics", "--level", "grid", "--period", "2026Q3", "--json"], env=env
    )
    rows = json.loads(result.stdout)
    assert {
        "area_code",
        "level",
        "period",
        "incidents_total",
        "incidents_by_category",
        "incidents_by_group",
        "run_id",
    } <= set(rows[0])
    assert sum(r["incidents_total"] for r in rows) == 3
    assert rows[0]["run_id"] == run["run_id"]
    runs = json.loads(runner.invoke(main, ["runs", "--json"], env=env).stdout)
    assert runs[0]["run_id"] == run["run_id"] and runs[0]["status"] == "done"


def test_patrol_dosage_hot_spots_and_forecast_are_published(engine, db_settings, tmp_path):
    """A 6×6 lattice with a burglary cluster in one corner and a team patrolling it."""
    import geopandas as gpd
    from shapely.geometry import box

    from gridwatch.ingest import import_file

    cells = [
        {
            "code": f"G{i}{j}",
            "name": f"网格{i}{j}",
            "level": "grid",
            "parent_code": "T1",
            "population": 1000,
            "geometry": box(113 + 0.01 * i, 28 + 0.01 * j, 113.01 + 0.01 * i, 28.01 + 0.01 * j),
        }
        for i in range(6)
        for j in range(6)
    ]
    town = {
        "code": "T1",
        "name": "镇",
        "level": "township",
        "parent_code": None,
        "population": 36000,
        "geometry": box(113, 28, 113.06, 28.06),
    }
    frame = gpd.GeoDataFrame([town, *cells], geometry="geometry", crs="EPSG:4326")
    frame.to_file(tmp_path / "g.geojson", driver="GeoJSON")
    import_file("grids", tmp_path / "g.geojson", db_settings, engine)
    lines = ["id,occurred_at,category,lon,lat,source"]
    n = 0
    for month in range(1, 11):
        for day in range(1, 28, 3):  # the hot corner: 3×3 cells, every third day
            for i in range(3):
                for j in range(3):
                    n += 1
                    lines.append(
                        f"H{n},2026-{month:02d}-{day:02d} 22:00,burglary,"
                        f"{113.005 + 0.01 * i:.3f},{28.005 + 0.01 * j:.3f},call_110"
                    )
        n += 1
        lines.append(f"C{n},2026-{month:02d}-15 10:00,theft,113.055,28.055,walk_in")
    (tmp_path / "i.csv").write_text("\n".join(lines) + "\n", "utf-8")
    import_file("incidents", tmp_path / "i.csv", db_settings, engine)
    pings = ["team_code,ts,lon,lat"]
    for minute in range(0, 120, 2):  # one 2-hour patrol inside cell G00 on 2026-10-05
        pings.append(f"P1,2026-10-05 {20 + minute // 60}:{minute % 60:02d}:00,113.004,28.004")
    (tmp_path / "t.csv").write_text("code,name,kind,home_area_code\nP1,巡防队,township,T1\n")
    import_file("teams", tmp_path / "t.csv", db_settings, engine)
    (tmp_path / "p.csv").write_text("\n".join(pings) + "\n", "utf-8")
    import_file("patrols", tmp_path / "p.csv", db_settings, engine)

    summary = run_eager(engine, db_settings, RunRequest())
    assert summary["status"] == "done"
    grid = {r["area_code"]: r for r in read_metrics(engine, "grid", "2026-10")}
    # patrol: 60 pings 2 minutes apart = 120 minutes, all at night (20:00–22:00), one visit
    assert grid["G00"]["patrol_minutes"] == pytest.approx(120.0)
    assert grid["G00"]["patrol_night_minutes"] == pytest.approx(120.0)
    assert grid["G00"]["patrol_visits"] == 1 and grid["G00"]["patrol_teams"] == 1
    assert grid["G55"]["patrol_minutes"] == 0
    # the patrol ended 2026-10-05 22:00 Beijing time; G55 was never visited
    since = grid["G00"]["hours_since_last_visit"]
    elapsed = (datetime.now(UTC) - datetime(2026, 10, 5, 14, 0, tzinfo=UTC)).total_seconds()
    assert since == pytest.approx(elapsed / 3600, abs=0.1)
    assert grid["G55"]["hours_since_last_visit"] is None
    town = read_metrics(engine, "township", "2026-10")[0]
    assert town["patrol_minutes"] == pytest.approx(120.0)
    # the burglary corner is a significant hot spot, the far corner is not
    assert grid["G11"]["hotspot"].startswith("hot_") and grid["G11"]["gi_star_z"] > 2.5
    assert grid["G55"]["hotspot"] in (None, "not_significant") or not str(
        grid["G55"]["hotspot"]
    ).startswith("hot")
    # forecasts exist for every grid and add up to the township's
    assert grid["G11"]["forecast_next"] > grid["G55"]["forecast_next"]
    total = sum(r["forecast_next"] for r in grid.values())
    assert town["forecast_next"] == pytest.approx(total, rel=1e-3)
    with session_scope(engine) as s:
        card = s.scalar(
            select(AggregationRun.scorecard).where(AggregationRun.id == summary["run_id"])
        )
    assert set(card["targets"]) == {"week", "month", "quarter"}
    assert set(card["7d"]["model"]["pai"]) == {"5", "10", "20"}
    assert "baseline" in card["7d"]


def test_forecast_cli_any_past_period_with_actuals(loaded_county):
    import json

    from click.testing import CliRunner

    from gridwatch.cli import main

    engine, settings = loaded_county
    env = {
        "GRIDWATCH_DATABASE_URL": settings.database_url,
        "GRIDWATCH_VAR_DIR": str(settings.var_dir),
        "GRIDWATCH_SECRET_KEY": "s" * 20,
    }
    runner = CliRunner()
    result = runner.invoke(
        main, ["forecast", "--level", "grid", "--period", "2026-08", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["period"] == "2026-08" and len(data["forecast"]) == 4
    # the one August incident (I3, reported by walk-in) is the actual; nothing after is used
    assert sum(r["actual"] for r in data["forecast"]) == 1
    assert all(r["expected"] >= 0 for r in data["forecast"])
    county = json.loads(
        runner.invoke(
            main, ["forecast", "--level", "county", "--period", "2026-08", "--json"], env=env
        ).stdout
    )
    assert county["forecast"][0]["expected"] == pytest.approx(
        sum(r["expected"] for r in data["forecast"]), abs=0.01
    )
    too_early = runner.invoke(main, ["forecast", "--period", "2026-07"], env=env)
    assert too_early.exit_code == 2 and "not enough history" in too_early.stderr


def test_camera_coverage_and_blind_spot_incidents(loaded_county, tmp_path):
    engine, settings = loaded_county
    # grid 001 is [113.00, 113.01] × [28.00, 28.01]; I1 and I2 are at its centre (113.005, 28.005)
    (tmp_path / "cams.csv").write_text(
        "id,lon,lat,type,status,direction_deg,fov_deg,range_m\n"
        "CAM1,113.005,28.0055,hd,online,180,90,100\n"  # looks south onto the centre point
        "CAM2,113.015,28.015,hd,broken,,,\n"  # broken: counted, sees nothing
        "CAM3,113.0151,28.0151,checkpoint,online,0,60,30\n",  # looks north, away from I3
        "utf-8",
    )
    import_file("cameras", tmp_path / "cams.csv", settings, engine)
    run_eager(engine, settings, RunRequest())
    grid = {r["area_code"]: r for r in read_metrics(engine, "grid", "2026Q3")}
    g1, g4 = grid["430000001001001"], grid["430000001001004"]
    assert g1["incidents_total"] == 2 and g1["incidents_blind_spot"] == 0
    assert g4["incidents_total"] == 1 and g4["incidents_blind_spot"] == 1  # I3: unseen
    assert g4["blind_spot_incident_pct"] == pytest.approx(100.0)
    assert (g4["cameras_total"], g4["cameras_working"]) == (2, 1)
    assert grid["430000001001002"]["cameras_working"] == 0
    # a 100 m quarter circle in a ~1.1 km × 1.0 km grid: about 0.7 % covered
    sector = 3.14159 * 100**2 / 4
    assert g1["camera_coverage_pct"] == pytest.approx(100 * sector / 1.09e6, rel=0.05)
    county = read_metrics(engine, "county", "2026Q3")[0]
    assert county["cameras_total"] == 3 and county["cameras_working"] == 2
    assert county["grids_without_working_camera"] == 2
    assert county["incidents_blind_spot"] == 1
    assert 0 < county["camera_coverage_pct"] < g1["camera_coverage_pct"]


def test_finalize_waits_for_every_township_and_repeats_are_harmless(engine, db_settings, tmp_path):
    """A redelivered township task must not make a run publish before the others are in."""
    import geopandas as gpd
    from shapely.geometry import box

    from gridwatch.workers.engine import RunNotReady, compute_unit, finalize_run, get_run

    rows = [
        {
            "code": "C",
            "name": "县",
            "level": "county",
            "parent_code": None,
            "geometry": box(113, 28, 113.02, 28.01),
        }
    ]
    for t in range(2):
        rows.append(
            {
                "code": f"T{t}",
                "name": f"镇{t}",
                "level": "township",
                "parent_code": "C",
                "geometry": box(113 + 0.01 * t, 28, 113.01 + 0.01 * t, 28.01),
            }
        )
        rows.append(
            {
                "code": f"G{t}",
                "name": f"网格{t}",
                "level": "grid",
                "parent_code": f"T{t}",
                "geometry": box(113 + 0.01 * t, 28, 113.01 + 0.01 * t, 28.01),
            }
        )
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_file(
        tmp_path / "a.geojson", driver="GeoJSON"
    )
    import_file("grids", tmp_path / "a.geojson", db_settings, engine)
    (tmp_path / "i.csv").write_text(
        "id,occurred_at,category,lon,lat\nA,2026-07-01 10:00,theft,113.005,28.005\n"
        "B,2026-07-01 10:00,theft,113.015,28.005\n",
        "utf-8",
    )
    import_file("incidents", tmp_path / "i.csv", db_settings, engine)
    run_id = create_run(engine, RunRequest(), mode="worker")
    units = plan_units(engine, run_id)
    assert [u.label.split(":")[0] for u in units] == ["township", "township"]
    start_run(engine, run_id, units, None)
    first = units[0]
    compute_unit(engine, db_settings, run_id, first.grid_ids, first.label)
    compute_unit(engine, db_settings, run_id, first.grid_ids, first.label)  # redelivered
    assert get_run(engine, run_id)["townships_done"] == 1
    with pytest.raises(RunNotReady):
        finalize_run(engine, db_settings, run_id)
    assert get_run(engine, run_id)["status"] == "running"
    second = units[1]
    compute_unit(engine, db_settings, run_id, second.grid_ids, second.label)
    summary = finalize_run(engine, db_settings, run_id)
    assert summary["status"] == "done" and summary["townships_done"] == 2
    county = read_metrics(engine, "county", "2026Q3")[0]
    assert county["incidents_total"] == 2  # each township counted once


def test_export_gpkg_carries_the_published_metrics(loaded_county, tmp_path):
    import pyogrio
    from click.testing import CliRunner

    from gridwatch.cli import main
    from gridwatch.ingest import ImportOptions

    engine, settings = loaded_county
    run_eager(engine, settings, RunRequest())
    env = {
        "GRIDWATCH_DATABASE_URL": settings.database_url,
        "GRIDWATCH_VAR_DIR": str(settings.var_dir),
        "GRIDWATCH_SECRET_KEY": "s" * 20,
    }
    out = tmp_path / "out.gpkg"
    result = CliRunner().invoke(main, ["export", "gpkg", str(out), "--period", "2026Q3"], env=env)
    assert result.exit_code == 0, result.output
    assert "published metrics of 2026Q3" in result.stdout
    areas = pyogrio.read_dataframe(out, layer="areas").set_index("code")
    grid = {r["area_code"]: r for r in read_metrics(engine, "grid", "2026Q3")}
    for code, metrics in grid.items():
        assert areas.at[code, "incidents_total"] == metrics["incidents_total"]
        assert areas.at[code, "metrics_period"] == "2026Q3"
    county = read_metrics(engine, "county", "2026Q3")[0]
    assert (
        areas.at["430000000000", "two_robberies_one_theft"]
        == (county["incidents_by_group"]["two_robberies_one_theft"])
    )
    # the areas layer, metrics and all, still imports back as areas
    from conftest import make_settings

    from gridwatch.storage import create_db_engine, upgrade_database

    fresh = make_settings(tmp_path / "fresh")
    fresh_engine = create_db_engine(fresh.database_url)
    upgrade_database(fresh_engine)
    summary = import_file("grids", out, fresh, fresh_engine, ImportOptions(layer="areas"))
    assert (summary.imported, summary.rejected) == (7, 0)


def test_from_and_to_are_whole_local_days(loaded_county):
    from datetime import date

    engine, settings = loaded_county
    # I1 is 2026-06-30 16:30 UTC = 1 July 00:30 in Shanghai; I2 is 5 July 21:00 local
    run_eager(
        engine,
        settings,
        RunRequest(full=True, date_from=date(2026, 7, 1), date_to=date(2026, 7, 5)),
    )
    county = read_metrics(engine, "county", "2026Q3")[0]
    assert county["incidents_total"] == 2
    assert county["incidents_by_category"] == {"theft": 1, "burglary": 1}


def test_forecast_of_a_future_period_uses_history_up_to_today(loaded_county):
    from gridwatch.workers.countywide import local_today, next_periods
    from gridwatch.workers.engine import forecast_period

    engine, settings = loaded_county
    today = local_today(settings.timezone)
    target = next_periods(today)["quarter"]  # always starts after today
    result = forecast_period(engine, settings, "grid", target)
    first_day = date(2026, 7, 1)  # I1, local date (I2 is patrol-found: not in forecasts)
    assert result["history_days"] == (today - first_day).days
    assert all("actual" not in row for row in result["forecast"])


def test_daily_situation_summary_compares_days_and_is_stored(loaded_county, tmp_path):
    from gridwatch.workers.situation import build_daily_situation, get_daily_situation

    engine, settings = loaded_county
    extra = tmp_path / "days.csv"
    # I2 (patrol-found) is on 5 July local; add two on 4 July and one on 28 June
    extra.write_text(
        "id,occurred_at,category,lon,lat\n"
        "D1,2026-07-04 10:00,theft,113.005,28.005\n"
        "D2,2026-07-04 11:00,fraud,113.015,28.015\n"
        "D3,2026-06-28 11:00,theft,113.015,28.015\n",
        "utf-8",
    )
    import_file("incidents", extra, settings, engine)
    run = run_eager(engine, settings, RunRequest(full=True))
    report = build_daily_situation(engine, settings, date(2026, 7, 5))
    county = next(a for a in report["areas"] if a["level"] == "county")
    assert (county["incidents"], county["day_before"], county["week_before"]) == (1, 2, 1)
    assert county["change_day_before_pct"] == pytest.approx(-50.0)
    assert county["year_before"] == 0 and county["change_year_before_pct"] is None
    assert report["run_id"] == run["run_id"]
    assert get_daily_situation(engine, date(2026, 7, 5)) == report
    again = build_daily_situation(engine, settings, date(2026, 7, 5))  # replaced, not added
    assert get_daily_situation(engine, date(2026, 7, 5))["generated_at"] == again["generated_at"]


def test_beat_schedules_the_daily_report_at_six(settings):
    from gridwatch.workers.celery_app import beat_schedule

    entry = beat_schedule(settings)["report.daily"]
    assert entry["task"] == "report.daily"
    assert entry["schedule"].hour == {6} and entry["schedule"].minute == {0}


def test_blind_spot_polygons_and_density_layers_are_published(loaded_county, tmp_path):
    from shapely.geometry import Point

    from gridwatch.workers.engine import read_layer

    engine, settings = loaded_county
    assert read_layer(engine, "blind_spots").empty  # nothing published yet
    (tmp_path / "cams.csv").write_text(
        "id,lon,lat,type,status,direction_deg,fov_deg,range_m\n"
        "CAM1,113.005,28.005,hd,online,,,100\n",  # a 100 m circle round grid 001's centre
        "utf-8",
    )
    import_file("cameras", tmp_path / "cams.csv", settings, engine)
    run_eager(engine, settings, RunRequest(full=True))
    blind = read_layer(engine, "blind_spots").set_index("area_id")
    assert len(blind) == 4
    grid = {r["area_code"]: r for r in read_metrics(engine, "grid", "2026Q3")}
    g1 = grid["430000001001001"]
    with session_scope(engine) as session:
        from gridwatch.storage.models import Area

        g1_id = session.scalar(select(Area.id).where(Area.code == "430000001001001"))
    hole = blind.loc[g1_id, "geometry"]
    assert not hole.contains(Point(113.005, 28.005))  # the camera sees the centre
    assert hole.contains(Point(113.001, 28.001))  # but not the corner
    assert 0 < g1["camera_coverage_pct"] < 5
    density = read_layer(engine, "density")
    assert {"density", "west", "south", "east", "north"} <= set(density.columns)


def test_incremental_run_after_a_patrol_import_equals_full_run(loaded_county, tmp_path):
    engine, settings = loaded_county
    run_eager(engine, settings, RunRequest())
    (tmp_path / "t.csv").write_text(
        "code,name,kind,home_area_code\nP1,巡防队,township,430000001000\n"
    )
    import_file("teams", tmp_path / "t.csv", settings, engine)
    pings = ["team_code,ts,lon,lat"] + [
        f"P1,2026-08-10 21:{m:02d}:00,113.015,28.015" for m in range(0, 40, 2)
    ]
    (tmp_path / "p.csv").write_text("\n".join(pings) + "\n", "utf-8")
    summary = import_file("patrols", tmp_path / "p.csv", settings, engine)
    mark_dirty(engine, summary.affected_grid_ids)
    incremental = run_eager(engine, settings, RunRequest())
    assert incremental["scope"] == "incremental"
    after = read_metrics(engine, "grid", "2026-08")
    assert max(r["patrol_minutes"] for r in after) == pytest.approx(40.0)
    run_eager(engine, settings, RunRequest(full=True))
    strip = [
        {k: v for k, v in r.items() if k not in ("run_id", "hours_since_last_visit")}
        for r in after
    ]
    fresh = read_metrics(engine, "grid", "2026-08")
    assert strip == [
        {k: v for k, v in r.items() if k not in ("run_id", "hours_since_last_visit")}
        for r in fresh
    ]


@pytest.mark.parametrize("same_process", [True, False], ids=["same-process", "other-process"])
def test_chained_incremental_runs_patch_blocks_and_equal_a_full_run(
    loaded_county, tmp_path, same_process
):
    """Three incremental runs in a row: a township's recounts first ride as a delta on its
    counts, then are merged into them; each run patches the base run's blocks, and the end
    result equals a full recompute, including the forecasts and emerging classes."""
    engine, settings = loaded_county
    # CAM1 sees the centre of grid 001, where C1 falls: the incremental runs ask the
    # county's camera views which new incidents no camera saw
    (tmp_path / "cams.csv").write_text(
        "id,lon,lat,type,status,direction_deg,fov_deg,range_m\n"
        "CAM1,113.005,28.0055,hd,online,180,90,100\n"
        "CAM2,113.015,28.015,hd,broken,,,\n",
        "utf-8",
    )
    import_file("cameras", tmp_path / "cams.csv", settings, engine)
    run_eager(engine, settings, RunRequest())
    yesterday = local_today(settings.timezone) - timedelta(days=1)
    imports = [
        f"A1,{yesterday} 10:00,theft,113.015,28.015\nA2,2026-08-03 23:00,robbery,113.015,28.015",
        f"B1,{yesterday} 22:00,fraud,113.005,28.015",  # a second grid: the delta is merged
        "C1,2026-07-07 09:00,theft,113.005,28.005\nC2,2026-07-08 09:00,theft,113.015,28.015",
    ]
    summaries = []
    for i, rows in enumerate(imports):
        path = tmp_path / f"more{i}.csv"
        path.write_text("id,occurred_at,category,lon,lat\n" + rows + "\n", "utf-8")
        mark_dirty(engine, import_file("incidents", path, settings, engine).affected_grid_ids)
        if not same_process:  # as when another worker process finalised the base run
            engine_module._RUN_MEMORY.clear()
        summary = run_eager(engine, settings, RunRequest())
        assert summary["scope"] == "incremental"
        summaries.append(summary)
    with session_scope(engine) as session:
        paths = [session.get(AggregationRun, s["run_id"]).extras["counts_from"] for s in summaries]
    assert paths == ["patched"] * 3
    keys = [
        (level, period)
        for level in ("grid", "village", "county")
        for period in ("2026Q3", "2026-08", "2026-W28", "2026", yesterday.isoformat())
    ]
    drop = ("run_id", "hours_since_last_visit")
    after = {
        k: [{n: v for n, v in r.items() if n not in drop} for r in read_metrics(engine, *k)]
        for k in keys
    }
    assert after[("county", "2026")][0]["incidents_total"] == 3 + 5 - (yesterday.year != 2026) * 2
    seen = after[("grid", "2026Q3")][0]  # grid 001: I1, I2 and C1 all in CAM1's view
    assert seen["incidents_total"] == 3 and seen["incidents_blind_spot"] == 0
    density = read_layer(engine, "density")
    full = run_eager(engine, settings, RunRequest(full=True))
    fresh_density = read_layer(engine, "density")
    assert len(density) and len(density) == len(fresh_density)
    for a, b in zip(density["density"], fresh_density["density"], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    for key, rows in after.items():
        fresh = [{n: v for n, v in r.items() if n not in drop} for r in read_metrics(engine, *key)]
        assert rows == fresh, key
    with session_scope(engine) as session:
        scorecards = [
            session.get(AggregationRun, run_id).scorecard
            for run_id in (summaries[-1]["run_id"], full["run_id"])
        ]
    assert scorecards[0] == scorecards[1]
