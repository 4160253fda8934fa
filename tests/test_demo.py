"""The demo county end to end: generated files go through the real importers.

Every deliberately bad row the generator reports must be quarantined at exactly that row, every
good row must be imported, and running the demo again must change nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from gridwatch.cli import main
from gridwatch.demo.build import build_demo
from gridwatch.status import collect_status
from gridwatch.storage import create_db_engine
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Area, Incident, PatrolPing, PatrolTeam, RejectedRow

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from conftest import make_settings

    root = tmp_path_factory.mktemp("demo")
    settings = make_settings(root)
    engine = create_db_engine(settings.database_url)
    report = build_demo(settings, engine, root / "files", seed=7, scale="small")
    yield settings, engine, report
    engine.dispose()


def test_every_good_row_imported_and_every_bad_row_quarantined(demo):
    settings, engine, report = demo
    files = report.files
    by_file = {Path(s.file).name: s for s in report.imports}
    for name, summary in by_file.items():
        bad = files.bad_rows.get(name, 0)
        good = files.row_counts[name]
        assert (summary.imported, summary.rejected, summary.duplicates) == (good, bad, 0), name
        assert summary.read == good + bad, name
    with session_scope(engine) as s:
        stored = {
            (kind, row)
            for kind, row in s.execute(select(RejectedRow.file_name, RejectedRow.row_number))
        }
    expected = {(name, bad.line) for name, rows in files.bad_row_details.items() for bad in rows}
    assert stored == expected


def test_demo_county_is_calibrated(demo):
    settings, engine, report = demo
    status = collect_status(engine, settings)
    areas = status["counts"]["areas"]
    assert areas["county"] == 1
    assert 65 <= areas["township"] <= 75
    assert 600 <= areas["village"] <= 800
    assert 2000 <= areas["grid"] <= 5000
    assert 19_000 <= status["counts"]["incidents"] <= 21_000
    assert 14_000 <= status["counts"]["cameras"] <= 16_000
    assert status["counts"]["patrol_teams"] == 56
    assert status["counts"]["rejected_rows"] == sum(report.files.bad_rows.values()) > 20
    with session_scope(engine) as s:
        active = s.scalar(select(func.count(func.distinct(PatrolPing.team_id))))
        teams = s.scalar(select(func.count()).select_from(PatrolTeam))
        # GCJ-02 points were converted: almost every incident lands in a grid
        outside = s.scalar(select(func.count()).where(Incident.outside_grids.is_(True)))
        grid_ids = {i for (i,) in s.execute(select(Area.id).where(Area.level == "grid"))}
        assigned = {i for (i,) in s.execute(select(func.distinct(Incident.grid_id)))}
    assert teams == 56 and 38 <= active <= 46
    assert outside == 0
    assert assigned - {None} <= grid_ids


def test_running_the_demo_again_changes_nothing(demo, tmp_path):
    settings, engine, first = demo
    before = collect_status(engine, settings)["counts"]
    again = build_demo(settings, engine, tmp_path / "files", seed=7, scale="small")
    assert sum(s.imported for s in again.imports) == 0
    assert sum(s.duplicates for s in again.imports) == sum(s.imported for s in first.imports)
    assert collect_status(engine, settings)["counts"] == before


def test_demo_cli_no_serve_and_status_json(tmp_path):
    env = {
        "GRIDWATCH_VAR_DIR": str(tmp_path / "var"),
        "GRIDWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'gw.db'}",
        "GRIDWATCH_SECRET_KEY": "k" * 20,
    }
    runner = CliRunner()
    result = runner.invoke(
        main, ["demo", "--no-serve", "--seed", "3", "--out", str(tmp_path / "d")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "deliberately bad rows quarantined" in result.stdout
    assert (tmp_path / "d" / "incidents.csv").exists()
    status = runner.invoke(main, ["status", "--json"], env=env)
    assert status.exit_code == 0
    data = json.loads(status.stdout)
    assert data["task_mode"] == "eager"
    # the demo ends with an aggregation run, visible in status
    assert data["last_runs"][0]["status"] == "done"
    assert (
        data["last_runs"][0]["incidents_read"]
        == data["counts"]["incidents"] - data["counts"]["incidents_outside_grids"]
    )
    assert data["counts"]["incidents"] > 19_000
    assert data["counts"]["survey_responses"] > 40_000


def test_demo_grid_counts_equal_an_independent_join(demo):
    """Aggregated grid counts for a quarter equal geopandas' own join of the demo files."""
    import geopandas as gpd
    import pandas as pd

    from gridwatch.geo.coords import gcj02_to_wgs84
    from gridwatch.workers.engine import RunRequest, read_metrics, run_eager

    settings, engine, report = demo
    run_eager(engine, settings, RunRequest(period_kinds=("quarter",)))
    files = report.files
    raw = pd.read_csv(files.incidents, encoding="gbk", dtype=str)
    bad_lines = {bad.line for bad in files.bad_row_details[files.incidents.name]}
    raw = raw[~(raw.index + 2).isin(bad_lines)]  # header is line 1
    lon, lat = gcj02_to_wgs84(raw["经度"].astype(float), raw["纬度"].astype(float))
    local = pd.to_datetime(raw["发案时间"]).dt.tz_localize(settings.timezone.key)
    points = gpd.GeoDataFrame(
        {"quarter": local.dt.year.astype(str) + "Q" + local.dt.quarter.astype(str)},
        geometry=gpd.points_from_xy(lon, lat),
        crs="EPSG:4326",
    )
    areas = gpd.read_file(files.grids)
    grids = areas[areas["level"] == "grid"][["code", "geometry"]]
    joined = gpd.sjoin(points, grids, predicate="intersects")
    joined = joined.reset_index().sort_values(["index", "code"]).drop_duplicates("index")
    expected = joined[joined["quarter"] == "2026Q3"].groupby("code").size().to_dict()
    got = {
        r["area_code"]: r["incidents_total"]
        for r in read_metrics(engine, "grid", "2026Q3")
        if r["incidents_total"]
    }
    assert sum(expected.values()) > 3000
    assert got == expected
