"""``gridwatch status`` and ``gridwatch export gpkg`` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pyogrio
import pytest
from click.testing import CliRunner
from shapely.geometry import MultiPolygon, Point, box
from sqlalchemy import create_engine, select

from gridwatch.cli import main
from gridwatch.export import LAYER_FIELDS, LAYER_GEOMETRY, export_gpkg
from gridwatch.ingest import ImportOptions, import_file
from gridwatch.status import collect_status, database_label, format_status, iso_utc
from gridwatch.storage import create_db_engine, head_revision, session_scope
from gridwatch.storage.models import (
    Area,
    Camera,
    ImportBatch,
    Incident,
    PatrolPing,
    PatrolTeam,
    RejectedRow,
    Station,
    StationTownship,
    SurveyResponse,
    SurveyResult,
    SurveyWave,
    User,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
COUNTY, TOWN_A, TOWN_B = "330102000000", "330102001000", "330102002000"
VILLAGE = "330102001001"
GRID_1, GRID_2 = "330102001001G01", "330102001001G02"


def _multi(minx: float, miny: float, maxx: float, maxy: float) -> MultiPolygon:
    return MultiPolygon([box(minx, miny, maxx, maxy)])


def _point(lon: float, lat: float) -> dict:
    return {"lon": lon, "lat": lat, "geom": Point(lon, lat)}


def populate(engine) -> None:
    """A small county: one of every kind of row the status and the export look at."""
    with session_scope(engine) as session:
        grids_batch = ImportBatch(
            kind="grids",
            file_name="grids.gpkg",
            file_sha256="a" * 64,
            started_at=datetime(2026, 7, 1, 8, 0, tzinfo=UTC),
            finished_at=datetime(2026, 7, 1, 8, 0, 5, tzinfo=UTC),
            status="done",
            rows_read=6,
            rows_imported=6,
        )
        incidents_batch = ImportBatch(
            kind="incidents",
            file_name="警情.csv",
            file_sha256="b" * 64,
            started_at=datetime(2026, 7, 5, 1, 0, tzinfo=UTC),
            finished_at=datetime(2026, 7, 5, 1, 2, 3, tzinfo=UTC),
            status="done",
            rows_read=5,
            rows_imported=3,
            rows_duplicate=1,
            rows_rejected=1,
        )
        session.add_all([grids_batch, incidents_batch])
        session.flush()
        session.add(
            RejectedRow(
                batch_id=incidents_batch.id,
                kind="incidents",
                file_name="警情.csv",
                file_sha256="b" * 64,
                row_number=4,
                column_name="occurred_at",
                reason="not a date",
                raw={"occurred_at": "yesterday"},
            )
        )

        county = Area(code=COUNTY, name="西湖县", level="county", geom=_multi(0, 0, 4, 2))
        town_a = Area(code=TOWN_A, name="甲镇", level="township", parent=county)
        town_b = Area(code=TOWN_B, name="乙镇", level="township", parent=county)
        town_a.geom = _multi(0, 0, 2, 2)
        town_b.geom = _multi(2, 0, 4, 2)
        # The village has no polygon: it must still be exported, with a null geometry.
        village = Area(code=VILLAGE, name="一村", level="village", parent=town_a, population=800)
        grid_1 = Area(code=GRID_1, name="一网格", level="grid", parent=village, population=300)
        grid_2 = Area(code=GRID_2, name="二网格", level="grid", parent=village, population=500)
        grid_1.geom = _multi(0, 0, 1, 1)
        grid_2.geom = _multi(1, 0, 2, 1)
        for area in (county, town_a, town_b, village, grid_1, grid_2):
            area.batch_id = grids_batch.id
        session.add_all([county, town_a, town_b, village, grid_1, grid_2])
        session.flush()

        session.add_all(
            [
                Incident(
                    source_id="INC-1",
                    occurred_at=datetime(2026, 7, 4, 13, 5, tzinfo=SHANGHAI),
                    category="theft",
                    source="call_110",
                    status="accepted",
                    grid_id=grid_1.id,
                    batch_id=incidents_batch.id,
                    **_point(0.5, 0.5),
                ),
                Incident(
                    source_id="INC-2",
                    occurred_at=datetime(2026, 7, 4, 23, 30, 15, tzinfo=SHANGHAI),
                    category="burglary",
                    source="walk_in",
                    status="reported",
                    grid_id=grid_2.id,
                    batch_id=incidents_batch.id,
                    **_point(1.5, 0.5),
                ),
                Incident(
                    source_id="INC-3",
                    occurred_at=datetime(2026, 7, 3, 2, 0, tzinfo=UTC),
                    category="fighting",
                    source="patrol",
                    status="solved",
                    outside_grids=True,
                    batch_id=incidents_batch.id,
                    **_point(3.5, 1.5),
                ),
            ]
        )
        session.add_all(
            [
                Camera(
                    source_id="CAM-1",
                    type="hd",
                    status="online",
                    grid_id=grid_1.id,
                    **_point(0.2, 0.2),
                ),
                Camera(
                    source_id="CAM-2",
                    type="private",
                    status="broken",
                    outside_grids=True,
                    **_point(3.2, 1.2),
                ),
            ]
        )
        station = Station(code="PS-01", name="甲镇派出所", **_point(1.0, 1.0))
        session.add(station)
        session.flush()
        # Added in reverse order: the export sorts the codes.
        session.add_all(
            [
                StationTownship(station_id=station.id, area_id=town_b.id),
                StationTownship(station_id=station.id, area_id=town_a.id),
            ]
        )
        team = PatrolTeam(code="TEAM-A", name="甲镇巡防队", kind="township", station_id=station.id)
        session.add(team)
        session.flush()
        session.add_all(
            [
                PatrolPing(
                    source_id=f"PING-{i}",
                    team_id=team.id,
                    ts=datetime(2026, 7, 4, 12, i, 30, tzinfo=UTC),
                    grid_id=grid_1.id if i < 2 else None,
                    outside_grids=i >= 2,
                    **_point(0.1 * (i + 1), 0.3),
                )
                for i in range(3)
            ]
        )
        wave = SurveyWave(period="2026Q2")
        session.add(wave)
        session.flush()
        session.add(SurveyResult(source_id="SR-1", wave_id=wave.id, area_id=town_a.id))
        session.add(
            SurveyResponse(source_id="RESP-1", wave_id=wave.id, area_id=town_a.id, respondent="r1")
        )
        session.add(User(username="admin", password_hash="x", role="admin"))


def _cli_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "GRIDWATCH_DATABASE_URL": db_url,
        "GRIDWATCH_VAR_DIR": str(tmp_path / "var"),
        "GRIDWATCH_SECRET_KEY": "test-secret-key-0123456789",
        "GRIDWATCH_REDIS_URL": "",
    }


# --------------------------------------------------------------------------------------------
# status
# --------------------------------------------------------------------------------------------

EXPECTED_COUNTS = {
    "areas": {"county": 1, "township": 2, "village": 1, "grid": 2},
    "incidents": 3,
    "incidents_outside_grids": 1,
    "cameras": 2,
    "stations": 1,
    "patrol_teams": 1,
    "patrol_pings": 3,
    "patrol_tracks": 0,
    "survey_waves": 1,
    "survey_results": 1,
    "survey_responses": 1,
    "rejected_rows": 1,
    "users": 1,
}


def test_collect_status_counts_everything(engine, db_settings):
    populate(engine)
    status = collect_status(engine, db_settings)

    assert status["counts"] == EXPECTED_COUNTS
    assert status["task_mode"] == "eager"
    assert status["schema_revision"] == head_revision(engine)
    assert status["rejected_by_kind"] == {"incidents": 1}
    newest, oldest = status["last_imports"]
    assert newest == {
        "id": newest["id"],
        "kind": "incidents",
        "file": "警情.csv",
        "finished_at": "2026-07-05T01:02:03Z",
        "read": 5,
        "imported": 3,
        "duplicates": 1,
        "rejected": 1,
        "status": "done",
    }
    assert oldest["kind"] == "grids" and oldest["id"] < newest["id"]
    json.dumps(status)  # plain data only


def test_status_lists_only_the_ten_newest_imports(engine, db_settings):
    with session_scope(engine) as session:
        session.add_all(
            ImportBatch(kind="cameras", file_name=f"c{i}.csv", file_sha256=f"{i:064d}")
            for i in range(12)
        )
    imports = collect_status(engine, db_settings)["last_imports"]
    assert [item["file"] for item in imports] == [f"c{i}.csv" for i in range(11, 1, -1)]
    assert imports[0]["finished_at"] is None and imports[0]["status"] == "running"


def test_status_reports_extra_area_levels(engine, db_settings):
    with session_scope(engine) as session:
        session.add(Area(code="X1", name="小区", level="compound"))
    areas = collect_status(engine, db_settings)["counts"]["areas"]
    assert areas == {"county": 0, "township": 0, "village": 0, "grid": 0, "compound": 1}


def test_status_of_a_database_without_schema(db_url, db_settings):
    engine = create_db_engine(db_url)
    try:
        status = collect_status(engine, db_settings)
    finally:
        engine.dispose()
    assert status["schema_revision"] is None
    assert status["counts"]["areas"] == {"county": 0, "township": 0, "village": 0, "grid": 0}
    assert status["counts"]["incidents"] == 0
    assert status["last_imports"] == [] and status["rejected_by_kind"] == {}
    assert "gridwatch db upgrade" in format_status(status)


def test_status_does_not_create_a_sqlite_file(tmp_path, settings):
    path = tmp_path / "absent" / "gridwatch.db"
    status = collect_status(create_db_engine(f"sqlite:///{path}"), settings)
    assert status["schema_revision"] is None
    assert not path.exists()


def test_database_label_hides_the_password():
    engine = create_engine("postgresql+psycopg://gw:s3cret@db.example:5432/gridwatch")
    assert database_label(engine) == "postgresql+psycopg://gw@db.example:5432/gridwatch"


def test_iso_utc():
    assert iso_utc(datetime(2026, 7, 4, 13, 5, tzinfo=SHANGHAI)) == "2026-07-04T05:05:00Z"
    assert iso_utc(datetime(2026, 7, 4, 5, 5, 0, 250000, tzinfo=UTC)) == (
        "2026-07-04T05:05:00.250000Z"
    )
    assert iso_utc(None) is None


def test_status_cli_json(engine, db_url, tmp_path):
    populate(engine)
    result = CliRunner().invoke(main, ["status", "--json"], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["counts"] == EXPECTED_COUNTS
    assert status["last_imports"][0]["finished_at"] == "2026-07-05T01:02:03Z"
    assert "s3cret" not in result.stdout


def test_status_cli_table(engine, db_url, tmp_path):
    populate(engine)
    result = CliRunner().invoke(main, ["status"], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("  网格 grid") and line.endswith(" 2") for line in lines)
    assert any(line.startswith("警情 incidents") and line.endswith(" 3") for line in lines)
    assert "警情.csv" in result.stdout and "2026-07-05T01:02:03Z" in result.stdout
    assert "eager" in result.stdout


def test_status_cli_without_schema(db_url, tmp_path):
    result = CliRunner().invoke(main, ["status"], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 0, result.output
    assert "run `gridwatch db upgrade`" in result.stdout
    as_json = CliRunner().invoke(main, ["status", "--json"], env=_cli_env(db_url, tmp_path))
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["schema_revision"] is None


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _read(path: Path, layer: str):
    return pyogrio.read_dataframe(path, layer=layer)


def test_export_gpkg_layers(engine, tmp_path):
    populate(engine)
    out = tmp_path / "out.gpkg"
    calls: list[tuple[str, int, int]] = []
    counts = export_gpkg(
        engine, out, SHANGHAI, chunk_size=2, progress=lambda *args: calls.append(args)
    )

    assert counts == {"areas": 6, "incidents": 3, "cameras": 2, "stations": 1, "patrol_pings": 3}
    assert [name for name, _ in pyogrio.list_layers(out)] == list(LAYER_FIELDS)
    for layer, fields in LAYER_FIELDS.items():
        info = pyogrio.read_info(out, layer=layer)
        assert list(info["fields"]) == list(fields)
        assert info["crs"] == "EPSG:4326"
        assert info["geometry_type"] == LAYER_GEOMETRY[layer]
        assert info["features"] == counts[layer]
    # chunk_size=2 streams three incidents in two appends
    assert [c for c in calls if c[0] == "incidents"] == [("incidents", 2, 3), ("incidents", 3, 3)]
    assert [c for c in calls if c[0] == "areas"] == [
        ("areas", 2, 6),
        ("areas", 4, 6),
        ("areas", 6, 6),
    ]

    areas = _read(out, "areas")
    # Parents come before their children, so the layer imports back in one pass.
    assert list(areas["code"]) == [COUNTY, TOWN_A, TOWN_B, VILLAGE, GRID_1, GRID_2]
    assert list(areas["level"]) == ["county", "township", "township", "village", "grid", "grid"]
    assert areas["parent_code"].tolist()[1:] == [COUNTY, COUNTY, TOWN_A, VILLAGE, VILLAGE]
    assert areas["parent_code"].isna().tolist()[0]
    assert areas.loc[4, "population"] == 300
    assert areas["population"].isna()[1]  # the township has no population
    assert areas.geometry[3] is None  # the village has no polygon
    assert areas.geometry[4].equals(_multi(0, 0, 1, 1))
    assert areas.loc[0, "name"] == "西湖县"

    incidents = _read(out, "incidents").set_index("source_id")
    assert incidents.loc["INC-1", "occurred_at"] == "2026-07-04T05:05:00Z"
    assert incidents.loc["INC-1", "occurred_local"] == "2026-07-04T13:05:00+08:00"
    assert incidents.loc["INC-2", "occurred_at"] == "2026-07-04T15:30:15Z"
    assert incidents.loc["INC-1", "grid_code"] == GRID_1
    assert incidents.loc["INC-2", "grid_code"] == GRID_2
    assert incidents["grid_code"].isna()["INC-3"]
    assert incidents.loc["INC-3", ["category", "source", "status"]].tolist() == [
        "fighting",
        "patrol",
        "solved",
    ]
    assert incidents.geometry["INC-2"].equals(Point(1.5, 0.5))

    cameras = _read(out, "cameras").set_index("source_id")
    assert cameras.loc["CAM-1", ["type", "status", "grid_code"]].tolist() == [
        "hd",
        "online",
        GRID_1,
    ]
    assert cameras["grid_code"].isna()["CAM-2"]

    stations = _read(out, "stations")
    assert stations.loc[0, "code"] == "PS-01"
    assert stations.loc[0, "township_codes"] == f"{TOWN_A};{TOWN_B}"
    assert stations.geometry[0].equals(Point(1.0, 1.0))

    pings = _read(out, "patrol_pings")
    assert pings["team_id"].tolist() == ["TEAM-A"] * 3
    assert pings["ts"].tolist() == [
        "2026-07-04T12:00:30Z",
        "2026-07-04T12:01:30Z",
        "2026-07-04T12:02:30Z",
    ]
    assert pings.loc[0, "ts_local"] == "2026-07-04T20:00:30+08:00"
    assert pings["grid_code"].tolist()[:2] == [GRID_1, GRID_1]
    assert pings["grid_code"].isna().tolist()[2]


def test_export_gpkg_empty_database_writes_empty_layers(engine, tmp_path):
    out = tmp_path / "empty.gpkg"
    counts = export_gpkg(engine, out, SHANGHAI)
    assert counts == dict.fromkeys(LAYER_FIELDS, 0)
    for layer, fields in LAYER_FIELDS.items():
        info = pyogrio.read_info(out, layer=layer)
        assert list(info["fields"]) == list(fields)
        assert info["geometry_type"] == LAYER_GEOMETRY[layer]
        assert info["crs"] == "EPSG:4326"
        assert info["features"] == 0


def test_export_gpkg_replaces_an_existing_file(engine, tmp_path):
    out = tmp_path / "out.gpkg"
    out.write_bytes(b"not a geopackage")
    populate(engine)
    export_gpkg(engine, out, SHANGHAI)
    export_gpkg(engine, out, SHANGHAI)  # twice: layers are not appended to the old file
    assert pyogrio.read_info(out, layer="incidents")["features"] == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gpkg") == ["out.gpkg"]


def test_export_gpkg_cli(engine, db_url, tmp_path):
    populate(engine)
    out = tmp_path / "county.gpkg"
    result = CliRunner().invoke(main, ["export", "gpkg", str(out)], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    counts = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert counts == {
        "areas": "6",
        "incidents": "3",
        "cameras": "2",
        "stations": "1",
        "patrol_pings": "3",
    }
    assert pyogrio.read_info(out, layer="areas")["features"] == 6


def test_export_gpkg_cli_without_schema(db_url, tmp_path):
    out = tmp_path / "county.gpkg"
    result = CliRunner().invoke(main, ["export", "gpkg", str(out)], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 2
    assert "gridwatch db upgrade" in result.stderr
    assert not out.exists()


def test_export_gpkg_cli_missing_folder(engine, db_url, tmp_path):
    out = tmp_path / "nowhere" / "county.gpkg"
    result = CliRunner().invoke(main, ["export", "gpkg", str(out)], env=_cli_env(db_url, tmp_path))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("chunk_size", [0, -5])
def test_export_gpkg_rejects_a_bad_chunk_size(engine, tmp_path, chunk_size):
    with pytest.raises(ValueError, match="chunk_size"):
        export_gpkg(engine, tmp_path / "x.gpkg", SHANGHAI, chunk_size=chunk_size)


def _area_rows(engine) -> set[tuple]:
    with session_scope(engine) as session:
        return {
            (
                area.code,
                area.name,
                area.level,
                area.parent.code if area.parent else None,
                area.population,
                None if area.geom is None else area.geom.wkt,
            )
            for area in session.scalars(select(Area))
        }


def test_exported_areas_import_back_unchanged(engine, settings, tmp_path):
    populate(engine)
    out = tmp_path / "out.gpkg"
    export_gpkg(engine, out, SHANGHAI)

    target = create_db_engine(f"sqlite:///{tmp_path / 'copy' / 'copy.db'}")
    try:
        summary = import_file("grids", out, settings, target, ImportOptions(layer="areas"))
        assert (summary.imported, summary.rejected) == (6, 0)
        assert _area_rows(target) == _area_rows(engine)
    finally:
        target.dispose()
