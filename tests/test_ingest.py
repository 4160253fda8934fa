"""Importer tests on both databases: good files, each kind of bad row, encodings, Chinese
headers, coordinate systems, mapping files, idempotent re-import, whole-file failures."""

from __future__ import annotations

import csv
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import gpxpy
import gpxpy.gpx
import pytest
from conftest import X0, Y0, D, grid_frame  # the tiny county shared with loaded_county
from openpyxl import Workbook
from shapely.geometry import Point, box
from sqlalchemy import func, select

from gridwatch.geo.coords import wgs84_to_bd09, wgs84_to_gcj02
from gridwatch.ingest import ImportFileError, ImportOptions, import_file
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    Area,
    Camera,
    ImportBatch,
    Incident,
    PatrolPing,
    PatrolTeam,
    PatrolTrack,
    RejectedRow,
    Station,
    SurveyResponse,
    SurveyResult,
    SurveyWave,
)


def grid_of(lon: float, lat: float) -> str:
    i, j = int((lon - X0) // D), int((lat - Y0) // D)
    return f"430000001001{i * 2 + j + 1:03d}"


@pytest.fixture
def grids_file(tmp_path: Path) -> Path:
    path = tmp_path / "areas.geojson"
    # children before parents: the importer must resolve parents after reading everything
    grid_frame().iloc[::-1].to_file(path, driver="GeoJSON")
    return path


@pytest.fixture
def loaded(engine, db_settings, grids_file):
    summary = import_file("grids", grids_file, db_settings, engine)
    assert summary.imported == 7 and summary.rejected == 0
    return engine, db_settings


def write_csv(path: Path, header: list[str], rows: list[list[object]], encoding="utf-8-sig"):
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def count(engine, model) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(model))


def rejected(engine, kind: str) -> list[tuple[int, str, str]]:
    with session_scope(engine) as s:
        rows = s.execute(
            select(RejectedRow.row_number, RejectedRow.column_name, RejectedRow.reason)
            .where(RejectedRow.kind == kind)
            .order_by(RejectedRow.row_number)
        ).all()
    return [tuple(r) for r in rows]


# --- areas -------------------------------------------------------------------------------


def test_area_tree_nests_and_resolves_parents_in_any_order(loaded):
    engine, _ = loaded
    with session_scope(engine) as s:
        areas = {a.code: a for a in s.scalars(select(Area))}
        grid = areas["430000001001001"]
        assert grid.parent.code == "430000001001"
        assert grid.parent.parent.parent.code == "430000000000"
        assert areas["430000000000"].parent_id is None
        assert grid.geom.geom_type == "MultiPolygon"
        assert grid.geom.area == pytest.approx(D * D)
        assert sorted(a.level for a in areas.values()).count("grid") == 4


@pytest.mark.parametrize("fmt", ["gpkg", "shpzip"])
def test_grids_from_geopackage_and_zipped_shapefile(engine, db_settings, tmp_path, fmt):
    frame = grid_frame()
    if fmt == "gpkg":
        path = tmp_path / "areas.gpkg"
        frame.to_file(path, driver="GPKG", layer="wangge")
        options = ImportOptions(layer="wangge")
    else:
        shp_dir = tmp_path / "shp"
        shp_dir.mkdir()
        frame.rename(columns={"parent_code": "parent"}).to_file(shp_dir / "areas.shp")
        path = tmp_path / "areas.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for part in shp_dir.iterdir():
                archive.write(part, part.name)
        options = ImportOptions()
    summary = import_file("grids", path, db_settings, engine, options)
    assert (summary.read, summary.imported, summary.rejected) == (7, 7, 0)
    with session_scope(engine) as s:
        assert s.scalar(select(Area.parent_code).where(Area.code == "430000001001004")) == (
            "430000001001"
        )


def test_flat_grids_without_parents_or_levels(engine, db_settings, tmp_path):
    frame = grid_frame()
    flat = frame[frame["level"] == "grid"][["code", "name", "geometry"]]
    path = tmp_path / "flat.geojson"
    flat.to_file(path, driver="GeoJSON")
    assert import_file("grids", path, db_settings, engine).imported == 4
    with session_scope(engine) as s:
        assert set(s.scalars(select(Area.level))) == {"grid"}
        assert s.scalar(select(func.count()).where(Area.parent_id.is_not(None))) == 0
    # incidents join to flat grids too
    inc = write_csv(
        tmp_path / "i.csv",
        ["id", "occurred_at", "category", "lon", "lat"],
        [["F1", "2026-07-01 10:00", "theft", X0 + 0.015, Y0 + 0.005]],
    )
    import_file("incidents", inc, db_settings, engine)
    with session_scope(engine) as s:
        code = s.scalar(select(Area.code).join(Incident, Incident.grid_id == Area.id))
    assert code == grid_of(X0 + 0.015, Y0 + 0.005)


def test_bad_area_rows_are_quarantined(engine, db_settings, tmp_path):
    frame = grid_frame()
    extra = gpd.GeoDataFrame(
        {
            "code": ["X1", "X2", "X3", "", "X5"],
            "name": ["孤儿", "孙", "点", "无编码", "负人口"],
            "level": ["grid"] * 5,
            "parent_code": ["NOPE", "X1", None, None, None],
            "population": [1, 1, 1, 1, -5],
        },
        geometry=[
            box(0, 0, 1, 1),
            box(0, 0, 1, 1),
            Point(113, 28),
            box(0, 0, 1, 1),
            box(0, 0, 1, 1),
        ],
        crs="EPSG:4326",
    )
    path = tmp_path / "bad.gpkg"
    gpd.GeoDataFrame(
        __import__("pandas").concat([frame, extra], ignore_index=True), crs="EPSG:4326"
    ).to_file(path, driver="GPKG")
    summary = import_file("grids", path, db_settings, engine)
    assert (summary.read, summary.imported, summary.rejected) == (12, 7, 5)
    reasons = {row: (col, reason) for row, col, reason in rejected(engine, "grids")}
    assert reasons[8] == ("parent_code", "parent area 'NOPE' is neither in this file nor imported")
    assert reasons[9][0] == "parent_code"  # child of a rejected parent
    assert reasons[10][0] == "geometry" and "Point" in reasons[10][1]
    assert reasons[11] == ("code", "required value is missing")
    assert reasons[12][0] == "population"
    report = Path(summary.report).read_text("utf-8-sig")
    assert "NOPE" in report and "孤儿" in report


def test_grids_in_gcj02_are_stored_as_wgs84(engine, db_settings, tmp_path):
    frame = grid_frame()
    shifted = frame.copy()
    shifted["geometry"] = frame.geometry.apply(
        lambda g: __import__("shapely").transform(
            g, lambda c: __import__("numpy").column_stack(wgs84_to_gcj02(c[:, 0], c[:, 1]))
        )
    )
    path = tmp_path / "gcj.geojson"
    shifted.to_file(path, driver="GeoJSON")
    import_file("grids", path, db_settings, engine, ImportOptions(crs="gcj02"))
    with session_scope(engine) as s:
        geom = s.scalar(select(Area.geom).where(Area.code == "430000001001001"))
    minx, miny, _, _ = geom.bounds
    assert minx == pytest.approx(X0, abs=2e-7) and miny == pytest.approx(Y0, abs=2e-7)


# --- incidents ---------------------------------------------------------------------------

CN_HEADER = [
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


def incident_rows():
    return [
        [
            "J1",
            "2026-07-04 13:05:00",
            "2026-07-04 13:20:00",
            "盗窃",
            X0 + 0.005,
            Y0 + 0.005,
            "城关镇东村一组",
            "110报警",
            "已受理",
            "",
            "",
            "电动车被盗",
        ],
        [
            "J2",
            "2026/7/4 22:05",
            "",
            "入室盗窃",
            X0 + 0.015,
            Y0 + 0.015,
            "东村二组",
            "巡逻发现",
            "已破案",
            "2026-07-06 09:00",
            "",
            "",
        ],
        [
            "J3",
            "2026年7月5日 8时30分",
            "",
            "robbery",
            X0 + 0.005,
            Y0 + 0.015,
            "",
            "来所报案",
            "已破案",
            "2026-07-05 12:00",
            "2026-07-07 10:00",
            "",
        ],
        [
            "J4",
            "2026-07-05T01:00:00+08:00",
            "",
            "Telecom and online fraud",
            X0 + 0.015,
            Y0 + 0.005,
            "",
            "110",
            "已报警",
            "",
            "",
            "",
        ],
    ]


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8-sig", "utf-8"])
def test_incidents_chinese_headers_any_encoding(loaded, tmp_path, encoding):
    engine, settings = loaded
    path = write_csv(tmp_path / "jq.csv", CN_HEADER, incident_rows(), encoding=encoding)
    summary = import_file("incidents", path, settings, engine)
    assert summary.as_dict() | {"batch_id": None} == {
        "file": str(path),
        "kind": "incidents",
        "read": 4,
        "imported": 4,
        "duplicates": 0,
        "rejected": 0,
        "report": None,
        "batch_id": None,
    }
    with session_scope(engine) as s:
        got = {i.source_id: i for i in s.scalars(select(Incident))}
        grid_codes = dict(s.execute(select(Area.id, Area.code)).all())
    j1 = got["J1"]
    assert j1.occurred_at == datetime(2026, 7, 4, 5, 5, tzinfo=UTC)  # 13:05 Beijing time
    assert j1.reported_at == datetime(2026, 7, 4, 5, 20, tzinfo=UTC)
    assert (j1.category, j1.source, j1.status, j1.address) == (
        "theft",
        "call_110",
        "accepted",
        "城关镇东村一组",
    )
    assert got["J2"].occurred_at == datetime(2026, 7, 4, 14, 5, tzinfo=UTC)
    assert (got["J2"].source, got["J2"].status) == ("patrol", "solved")
    assert got["J3"].occurred_at == datetime(2026, 7, 5, 0, 30, tzinfo=UTC)
    assert got["J3"].victim_notified_at == datetime(2026, 7, 7, 2, 0, tzinfo=UTC)
    assert got["J3"].source == "walk_in"
    assert got["J4"].category == "telecom_fraud"
    assert got["J4"].occurred_at == datetime(2026, 7, 4, 17, 0, tzinfo=UTC)
    for sid, inc in got.items():
        assert grid_codes[inc.grid_id] == grid_of(inc.lon, inc.lat), sid
        assert not inc.outside_grids
        assert inc.geom.x == pytest.approx(inc.lon)


def test_every_kind_of_bad_incident_row_is_quarantined(loaded, tmp_path):
    engine, settings = loaded
    good = incident_rows()
    bad = [
        ["B1", "", "", "盗窃", X0, Y0, "", "", "", "", "", ""],  # missing time
        ["B2", "2026-13-45 25:00", "", "盗窃", X0, Y0, "", "", "", "", "", ""],  # bad date
        ["B3", "2026-07-01 10:00", "", "外星人入侵", X0, Y0, "", "", "", "", "", ""],  # category
        ["B4", "2026-07-01 10:00", "", "盗窃", "abc", Y0, "", "", "", "", "", ""],  # lon text
        ["B5", "2026-07-01 10:00", "", "盗窃", 500, 95, "", "", "", "", "", ""],  # invalid coord
        ["J1", "2026-07-01 10:00", "", "抢劫", X0, Y0, "", "", "", "", "", ""],  # duplicate id
        ["B7", "2026-07-01 10:00", "", "盗窃", X0, Y0, "", "飞鸽传书", "", "", "", ""],  # source
        ["B8", "2026-07-01 10:00", "", "盗窃", X0, Y0, "", "", "已破案", "2026-06-01", "", ""],
        ["B9", "2099-07-01 10:00", "", "盗窃", X0, Y0, "", "", "", "", "", ""],  # future
        ["B10", "2026-07-01 10:00", "", "", X0, Y0, "", "", "", "", "", ""],  # no category
    ]
    path = write_csv(tmp_path / "mixed.csv", CN_HEADER, good[:2] + bad + good[2:], "gbk")
    summary = import_file("incidents", path, settings, engine)
    assert (summary.read, summary.imported, summary.rejected) == (14, 4, 10)
    got = rejected(engine, "incidents")
    assert [(r, c) for r, c, _ in got] == [
        (4, "occurred_at"),
        (5, "occurred_at"),
        (6, "category"),
        (7, "lon"),
        (8, "lon"),
        (9, "id"),
        (10, "source"),
        (11, "solved_at"),
        (12, "occurred_at"),
        (13, "category"),
    ]
    reasons = {r: reason for r, _, reason in got}
    assert reasons[4] == "required value is missing"
    assert "外星人入侵" in reasons[6]
    assert "'abc' is not a number" in reasons[7]
    assert "first at row 2" in reasons[9]
    # the report lists every rejected row with file, row, column and reason
    with open(summary.report, encoding="utf-8-sig") as fh:
        report = list(csv.DictReader(fh))
    assert [int(r["row"]) for r in report] == [r for r, _, _ in got]
    assert {r["file"] for r in report} == {"mixed.csv"}
    assert report[0]["警情编号"] == "B1"


def test_reimport_changes_nothing(loaded, tmp_path):
    engine, settings = loaded
    rows = incident_rows() + [["B1", "", "", "盗窃", X0, Y0, "", "", "", "", "", ""]]
    path = write_csv(tmp_path / "jq.csv", CN_HEADER, rows, "gbk")
    first = import_file("incidents", path, settings, engine)
    before = (count(engine, Incident), count(engine, RejectedRow))
    second = import_file("incidents", path, settings, engine)
    assert (first.imported, first.rejected) == (4, 1)
    assert (second.imported, second.duplicates, second.rejected) == (0, 4, 1)
    # only new rows mark grids for recomputation
    assert len(first.affected_grid_ids) == 4 and second.affected_grid_ids == set()
    assert (count(engine, Incident), count(engine, RejectedRow)) == before
    with session_scope(engine) as s:
        statuses = s.scalars(select(ImportBatch.status).order_by(ImportBatch.id)).all()
    assert statuses == ["done", "done", "done"]  # grids, first and second import


def test_rows_without_ids_get_stable_ids_and_identical_rows_are_kept(loaded, tmp_path):
    engine, settings = loaded
    header = ["发案时间", "案件类别", "经度", "纬度"]
    same = ["2026-07-01 10:00", "盗窃", X0 + 0.001, Y0 + 0.001]
    path = write_csv(
        tmp_path / "noid.csv",
        header,
        [same, same, same, ["2026-07-02 10:00", "赌博", X0, Y0 + 0.001]],
    )
    first = import_file("incidents", path, settings, engine)
    assert (first.imported, first.rejected) == (4, 0)
    second = import_file("incidents", path, settings, engine)
    assert (second.imported, second.duplicates) == (0, 4)
    assert count(engine, Incident) == 4
    # a file with one more identical row adds exactly that row
    path2 = write_csv(
        tmp_path / "noid2.csv",
        header,
        [same, same, same, same, ["2026-07-02 10:00", "赌博", X0, Y0 + 0.001]],
    )
    third = import_file("incidents", path2, settings, engine)
    assert (third.imported, third.duplicates) == (1, 4)


def test_boundary_points_go_to_the_lowest_code_and_outside_points_are_flagged(loaded, tmp_path):
    engine, settings = loaded
    rows = [
        ["E1", "2026-07-01 10:00", "theft", X0 + D, Y0 + D],  # corner shared by 4 grids
        ["E2", "2026-07-01 10:00", "theft", X0 + D, Y0 + 0.005],  # edge of grids 1 and 3
        ["E3", "2026-07-01 10:00", "theft", X0 + 0.5, Y0 + 0.5],  # outside every grid
    ]
    path = write_csv(tmp_path / "edge.csv", ["id", "occurred_at", "category", "lon", "lat"], rows)
    summary = import_file("incidents", path, settings, engine)
    assert summary.imported == 3
    with session_scope(engine) as s:
        got = dict(
            s.execute(
                select(Incident.source_id, Area.code).outerjoin(Area, Incident.grid_id == Area.id)
            ).all()
        )
        flagged = s.scalar(select(Incident.outside_grids).where(Incident.source_id == "E3"))
    assert got == {"E1": "430000001001001", "E2": "430000001001001", "E3": None}
    assert flagged is True


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_incident_coordinates_in_chinese_offsets(loaded, tmp_path, crs):
    engine, settings = loaded
    lon, lat = X0 + 0.0123, Y0 + 0.0177
    convert = wgs84_to_gcj02 if crs == "gcj02" else wgs84_to_bd09
    x, y = convert(lon, lat)
    assert abs(float(x) - lon) > 1e-4  # the offset is real (hundreds of metres)
    path = write_csv(
        tmp_path / "o.csv",
        ["id", "occurred_at", "category", "lon", "lat"],
        [["C1", "2026-07-01 10:00", "theft", f"{float(x):.7f}", f"{float(y):.7f}"]],
    )
    import_file("incidents", path, settings, engine, ImportOptions(crs=crs))
    with session_scope(engine) as s:
        inc = s.scalars(select(Incident)).one()
        code = s.scalar(select(Area.code).where(Area.id == inc.grid_id))
    assert inc.lon == pytest.approx(lon, abs=2e-6) and inc.lat == pytest.approx(lat, abs=2e-6)
    assert code == grid_of(lon, lat)


def test_county_extent_rejects_points_outside(engine, tmp_path, db_url, grids_file):
    from conftest import make_settings

    settings = make_settings(
        tmp_path, GRIDWATCH_DATABASE_URL=db_url, GRIDWATCH_COUNTY_EXTENT="112.9,27.9,113.1,28.1"
    )
    import_file("grids", grids_file, settings, engine)
    rows = [
        ["K1", "2026-07-01 10:00", "theft", X0, Y0],
        ["K2", "2026-07-01 10:00", "theft", 116.4, 39.9],
    ]
    path = write_csv(tmp_path / "k.csv", ["id", "occurred_at", "category", "lon", "lat"], rows)
    summary = import_file("incidents", path, settings, engine)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "outside the county extent" in rejected(engine, "incidents")[0][2]


def test_mapping_file_imports_a_foreign_export(loaded, tmp_path):
    engine, settings = loaded
    mapping = tmp_path / "chicago.yaml"
    mapping.write_text(
        "columns: {id: ID, occurred_at: Date, category: Primary Type,\n"
        "          lon: Longitude, lat: Latitude}\n"
        "categories: {THEFT: theft, BURGLARY: burglary, ROBBERY: robbery}\n"
        "values: {source: {'911': call_110}}\n"
        "constants: {source: '911'}\n"
        'datetime_format: "%m/%d/%Y %I:%M:%S %p"\n'
        "source_timezone: America/Chicago\n",
        "utf-8",
    )
    rows = [
        ["X1", "07/04/2026 01:05:00 PM", "THEFT", X0 + 0.001, Y0 + 0.001, "ignored"],
        ["X2", "07/04/2026 11:00:00 PM", "BURGLARY", X0 + 0.011, Y0 + 0.001, "ignored"],
        ["X3", "07/04/2026 11:00:00 PM", "ARSON BY UFO", X0, Y0, ""],
    ]
    path = write_csv(
        tmp_path / "foreign.csv",
        ["ID", "Date", "Primary Type", "Longitude", "Latitude", "Beat"],
        rows,
    )
    summary = import_file("incidents", path, settings, engine, ImportOptions(mapping=mapping))
    assert (summary.imported, summary.rejected) == (2, 1)
    with session_scope(engine) as s:
        x1 = s.scalars(select(Incident).where(Incident.source_id == "X1")).one()
    assert x1.category == "theft" and x1.source == "call_110"
    assert x1.occurred_at == datetime(2026, 7, 4, 18, 5, tzinfo=UTC)  # CDT = UTC-5


def test_mapping_file_errors_are_clear(loaded, tmp_path):
    engine, settings = loaded
    path = write_csv(tmp_path / "f.csv", ["ID", "Date"], [["1", "2026-01-01"]])
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {nonsense_field: ID}\n", "utf-8")
    with pytest.raises(ImportFileError, match="nonsense_field"):
        import_file("incidents", path, settings, engine, ImportOptions(mapping=bad))
    bad.write_text("columns: {id: Missing}\n", "utf-8")
    with pytest.raises(ImportFileError, match="names column 'Missing'"):
        import_file("incidents", path, settings, engine, ImportOptions(mapping=bad))
    bad.write_text("colums: {}\n", "utf-8")
    with pytest.raises(ImportFileError, match="unknown keys"):
        import_file("incidents", path, settings, engine, ImportOptions(mapping=bad))


def test_whole_file_failures_commit_nothing(loaded, tmp_path):
    engine, settings = loaded
    with pytest.raises(ImportFileError, match="no such file"):
        import_file("incidents", tmp_path / "missing.csv", settings, engine)
    wrong = write_csv(tmp_path / "cols.csv", ["foo", "bar"], [["1", "2"]])
    with pytest.raises(ImportFileError, match="required columns missing: occurred_at"):
        import_file("incidents", wrong, settings, engine)
    (tmp_path / "x.pdf").write_bytes(b"%PDF-1.4")
    with pytest.raises(ImportFileError, match="unsupported file type"):
        import_file("incidents", tmp_path / "x.pdf", settings, engine)
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ImportFileError, match="not a readable XLSX"):
        import_file("cameras", tmp_path / "broken.xlsx", settings, engine)
    # invalid bytes after the first megabyte: detected mid-stream, everything rolled back
    good = incident_rows()[0]
    big = tmp_path / "late.csv"
    with open(big, "wb") as fh:
        fh.write((",".join(CN_HEADER) + "\n").encode("gbk"))
        for n in range(30000):
            fh.write(",".join(str(v) for v in [f"L{n}", *good[1:]]).encode("gbk") + b"\n")
        fh.write(b"L-bad,\xff\xfe\xfd,\x81\n")
    with pytest.raises(ImportFileError, match="not valid"):
        import_file("incidents", big, settings, engine)
    assert count(engine, Incident) == 0
    with session_scope(engine) as s:
        failed = s.scalars(select(ImportBatch).where(ImportBatch.status == "failed")).all()
    assert any(b.file_name == "late.csv" for b in failed)


def test_row_with_too_many_fields_is_rejected(loaded, tmp_path):
    engine, settings = loaded
    path = tmp_path / "extra.csv"
    path.write_text(
        "id,occurred_at,category,lon,lat\nA,2026-07-01 10:00,theft,113.001,28.001,EXTRA\n"
        "B,2026-07-01 10:00,theft,113.001,28.001\n",
        "utf-8",
    )
    summary = import_file("incidents", path, settings, engine)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "6 fields but the header has 5" in rejected(engine, "incidents")[0][2]


# --- cameras, stations, teams, patrols ---------------------------------------------------


def write_cameras_xlsx(path: Path) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.append(
        [
            "点位编号",
            "点位名称",
            "经度",
            "纬度",
            "类型",
            "状态",
            "分辨率",
            "朝向",
            "视场角",
            "监控距离",
            "建设时间",
            "建设单位",
        ]
    )
    ws.append(
        [
            "C1",
            "东村路口",
            X0 + 0.002,
            Y0 + 0.002,
            "卡口",
            "在线",
            "1080P",
            90,
            60,
            80,
            datetime(2024, 5, 1),
            "县公安局",
        ]
    )
    ws.append(
        [
            "C2",
            "村委会",
            X0 + 0.012,
            Y0 + 0.002,
            "高清",
            "故障",
            "400万",
            None,
            None,
            None,
            "2023-01-02",
            "城关镇",
        ]
    )
    ws.append(
        ["C3", "小卖部", X0 + 0.002, Y0 + 0.012, "社会联网", "离线", None, 400, 90, 50, None, None]
    )
    ws.append(
        [
            "C4",
            "桥头",
            X0 + 0.012,
            Y0 + 0.012,
            "高清",
            "被偷了",
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    )
    ws.append(
        [
            "C5",
            "山上",
            X0 + 0.012,
            Y0 + 0.012,
            "激光炮",
            "在线",
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    )
    ws.append([None] * 12)  # blank rows are not data
    ws.append(
        [
            None,
            "无编号",
            X0 + 0.003,
            Y0 + 0.003,
            "标清",
            "在线",
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    )
    ws.append(
        [1234, "太远", X0 + 0.003, Y0 + 0.003, "标清", "在线", None, None, None, 9999, None, None]
    )
    ws.append(
        [
            5678.0,
            "数字编号",
            X0 + 0.003,
            Y0 + 0.003,
            "标清",
            "在线",
            None,
            None,
            None,
            None,
            None,
            None,
        ]
    )
    wb.save(path)
    return path


def test_cameras_from_xlsx(loaded, tmp_path):
    engine, settings = loaded
    summary = import_file("cameras", write_cameras_xlsx(tmp_path / "cams.xlsx"), settings, engine)
    assert (summary.read, summary.imported, summary.rejected) == (8, 3, 5)
    assert [(r, c) for r, c, _ in rejected(engine, "cameras")] == [
        (4, "direction_deg"),
        (5, "status"),
        (6, "type"),
        (8, "id"),  # the file has ids, so a blank one is an error
        (9, "range_m"),
    ]
    with session_scope(engine) as s:
        cams = {c.source_id: c for c in s.scalars(select(Camera))}
    assert set(cams) == {"C1", "C2", "5678"}  # a numeric id cell keeps no ".0"
    c1 = cams["C1"]
    assert (c1.type, c1.status, c1.direction_deg, c1.fov_deg, c1.range_m) == (
        "checkpoint",
        "online",
        90.0,
        60.0,
        80.0,
    )
    assert c1.installed_at == datetime(2024, 4, 30, 16, 0, tzinfo=UTC)
    assert (cams["C2"].status, cams["C2"].direction_deg) == ("broken", None)
    assert (cams["5678"].type, cams["5678"].range_m) == ("standard", None)


def test_stations_teams_and_patrol_pings(loaded, tmp_path):
    engine, settings = loaded
    stations = write_csv(
        tmp_path / "stations.csv",
        ["派出所编码", "派出所名称", "经度", "纬度", "辖区乡镇"],
        [
            ["PS1", "城关派出所", X0 + 0.01, Y0 + 0.01, "430000001000"],
            ["PS2", "错误派出所", X0, Y0, "430000001000;999999999999"],
        ],
    )
    s_sum = import_file("stations", stations, settings, engine)
    assert (s_sum.imported, s_sum.rejected) == (1, 1)
    teams = write_csv(
        tmp_path / "teams.csv",
        ["队伍编号", "队伍名称", "类型", "所属派出所", "所属区域", "人数"],
        [
            ["T1", "城关巡逻组", "公安", "PS1", "", 4],
            ["T2", "城关镇巡防队", "巡防队", "", "430000001000", 12],
            ["T3", "东村护村队", "村巡防队", "", "430000001001", ""],
            ["T4", "幽灵队", "公安", "PS9", "", 3],
            ["T5", "无名", "海军", "PS1", "", 3],
        ],
    )
    t_sum = import_file("teams", teams, settings, engine)
    assert (t_sum.imported, t_sum.rejected) == (3, 2)
    with session_scope(engine) as s:
        kinds = dict(s.execute(select(PatrolTeam.code, PatrolTeam.kind)).all())
        station = s.scalars(select(Station)).one()
        township_codes = [link.area.code for link in station.townships]
    assert kinds == {"T1": "police", "T2": "township", "T3": "village"}
    assert township_codes == ["430000001000"]
    pings = write_csv(
        tmp_path / "pings.csv",
        ["team_code", "ts", "lon", "lat"],
        [
            ["T1", "2026-11-01 20:00:00", X0 + 0.001, Y0 + 0.001],
            ["T1", "2026-11-01 20:02:00", X0 + 0.011, Y0 + 0.001],
            ["T9", "2026-11-01 20:02:00", X0, Y0],
            ["T2", "not a time", X0, Y0],
        ],
    )
    p_sum = import_file("patrols", pings, settings, engine)
    assert (p_sum.imported, p_sum.rejected) == (2, 2)
    assert [c for _, c, _ in rejected(engine, "patrols")] == ["team_code", "ts"]
    with session_scope(engine) as s:
        got = s.execute(
            select(PatrolPing.ts, Area.code)
            .join(Area, PatrolPing.grid_id == Area.id)
            .order_by(PatrolPing.ts)
        ).all()
    assert [c for _, c in got] == ["430000001001001", "430000001001003"]
    assert got[0][0] == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert import_file("patrols", pings, settings, engine).duplicates == 2


def test_gpx_track(loaded, tmp_path):
    engine, settings = loaded
    teams = write_csv(
        tmp_path / "teams.csv",
        ["code", "name", "kind", "home_area_code"],
        [["T2", "城关镇巡防队", "township", "430000001000"]],
    )
    import_file("teams", teams, settings, engine)
    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name="T2")
    segment = gpxpy.gpx.GPXTrackSegment()
    for k in range(5):
        segment.points.append(
            gpxpy.gpx.GPXTrackPoint(
                Y0 + 0.002 * k, X0 + 0.003 * k, time=datetime(2026, 11, 1, 12, k * 2, tzinfo=UTC)
            )
        )
    track.segments.append(segment)
    gpx.tracks.append(track)
    path = tmp_path / "t2.gpx"
    path.write_text(gpx.to_xml(), "utf-8")
    summary = import_file("patrols", path, settings, engine)
    assert (summary.read, summary.imported, summary.rejected) == (5, 5, 0)
    with session_scope(engine) as s:
        tr = s.scalars(select(PatrolTrack)).one()
        linked = s.scalar(select(func.count()).where(PatrolPing.track_id == tr.id))
    assert tr.geom.geom_type == "LineString" and len(tr.geom.coords) == 5
    assert tr.started_at == datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    assert linked == 5
    assert import_file("patrols", path, settings, engine).duplicates == 5
    assert count(engine, PatrolTrack) == 1


# --- surveys ---------------------------------------------------------------------------


def test_survey_results_with_factor_columns(loaded, tmp_path):
    engine, settings = loaded
    header = [
        "area_code",
        "period",
        "respondents",
        "security_pct",
        "satisfaction_pct",
        "composite_score",
        "awareness_pct",
        "participation_pct",
        "two_robberies_one_theft",
        "赌博",
        "police_rarely_seen",
    ]
    rows = [
        ["430000001000", "2026Q3", 400, 88.5, 90.1, 83.66, 29, 25, 53.7, 10.2, 5],
        ["430000001001", "2026q3", 40, "91.25%", 92, 85, 30, 20, 40, 0, 10],
        ["430000001000", "2026Q2", 380, 79.9, 85, 80, 28, 24, 60, 5, 3],
        ["999999999999", "2026Q3", 10, 90, 90, 90, 1, 1, 1, 1, 1],  # unknown area
        ["430000001000", "2026Q5", 10, 90, 90, 90, 1, 1, 1, 1, 1],  # bad period
        ["430000001001", "2026Q2", 10, 120, 90, 90, 1, 1, 1, 1, 1],  # > 100 %
    ]
    path = write_csv(tmp_path / "survey.csv", header, rows)
    summary = import_file("surveys", path, settings, engine)
    assert (summary.imported, summary.rejected) == (3, 3)
    assert [c for _, c, _ in rejected(engine, "surveys")] == [
        "area_code",
        "period",
        "security_pct",
    ]
    with session_scope(engine) as s:
        res = s.execute(
            select(SurveyResult, SurveyWave.period, Area.code)
            .join(SurveyWave)
            .join(Area, SurveyResult.area_id == Area.id)
        ).all()
        waves = s.scalars(select(SurveyWave.period).order_by(SurveyWave.period)).all()
    assert waves == ["2026Q2", "2026Q3"]
    by = {(p, c): r for r, p, c in res}
    r = by[("2026Q3", "430000001000")]
    assert (r.respondents, r.security_pct, r.composite_score) == (400, 88.5, 83.66)
    assert r.factor_shares == {
        "two_robberies_one_theft": 53.7,
        "gambling": 10.2,
        "police_rarely_seen": 5.0,
    }
    assert by[("2026Q3", "430000001001")].security_pct == 91.25
    assert import_file("surveys", path, settings, engine).duplicates == 3


def test_survey_responses(loaded, tmp_path):
    engine, settings = loaded
    header = [
        "受访者编号",
        "测评期",
        "区划代码",
        "访问结果",
        "安全感",
        "满意度",
        "知晓综治",
        "是否参与",
        "不安全因素",
        "权重",
    ]
    rows = [
        [
            "R1",
            "2026Q3",
            "430000001001",
            "完成",
            "基本安全",
            "满意",
            "是",
            "否",
            "两抢一盗;赌博",
            1.2,
        ],
        ["R2", "2026Q3", "430000001001", "挂断", "", "", "", "", "", ""],
        [
            "R3",
            "2026Q3",
            "430000001001",
            "completed",
            "unsafe",
            "dissatisfied",
            "no",
            "no",
            "police_rarely_seen、lack_of_cameras",
            "",
        ],
        ["R4", "2026Q3", "430000001001", "完成", "", "满意", "是", "否", "", ""],  # no answer
        ["R5", "2026Q3", "430000001001", "完成", "安全", "满意", "是", "否", "飞碟", ""],  # factor
        ["R6", "2026Q3", "430000001001", "完成", "安全", "满意", "是", "否", "", -1],  # weight
    ]
    path = write_csv(tmp_path / "resp.csv", header, rows, "gbk")
    summary = import_file("survey-responses", path, settings, engine)
    assert (summary.imported, summary.rejected) == (3, 3)
    assert [c for _, c, _ in rejected(engine, "survey-responses")] == [
        "security",
        "factors",
        "weight",
    ]
    with session_scope(engine) as s:
        got = {r.respondent: r for r in s.scalars(select(SurveyResponse))}
    assert got["R1"].answers == {
        "security": "basically_safe",
        "satisfaction": "satisfied",
        "aware": "yes",
        "participated": "no",
    }
    assert got["R1"].factors == ["two_robberies_one_theft", "gambling"]
    assert got["R1"].weight == 1.2
    assert got["R2"].outcome == "hung_up" and got["R2"].answers == {}
    assert got["R3"].factors == ["police_rarely_seen", "lack_of_cameras"]


# --- CLI ----------------------------------------------------------------------------------


def test_cli_import_json_summary_and_exit_codes(tmp_path, grids_file):
    from click.testing import CliRunner

    from gridwatch.cli import main

    env = {
        "GRIDWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "GRIDWATCH_VAR_DIR": str(tmp_path / "var"),
        "GRIDWATCH_SECRET_KEY": "x" * 20,
    }
    runner = CliRunner()
    result = runner.invoke(main, ["import", "grids", str(grids_file), "--json"], env=env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("kind", "read", "imported", "duplicates", "rejected")} == {
        "kind": "grids",
        "read": 7,
        "imported": 7,
        "duplicates": 0,
        "rejected": 0,
    }
    assert set(summary) >= {"file", "kind", "read", "imported", "duplicates", "rejected", "report"}
    path = write_csv(
        tmp_path / "jq.csv",
        CN_HEADER,
        incident_rows()[:1] + [["BAD", "", "", "盗窃", X0, Y0, "", "", "", "", "", ""]],
        "gbk",
    )
    result = runner.invoke(main, ["import", "incidents", str(path)], env=env)
    assert result.exit_code == 0
    assert "imported 1" in result.stdout and "rejected 1" in result.stdout
    missing = runner.invoke(main, ["import", "incidents", str(tmp_path / "nope.csv")], env=env)
    assert missing.exit_code == 2
    assert "nope.csv: no such file" in missing.stderr and "Traceback" not in missing.output
    badenv = runner.invoke(
        main, ["import", "incidents", str(path)], env={**env, "GRIDWATCH_TIMEZONE": "Mars/Olympus"}
    )
    assert badenv.exit_code == 2 and "GRIDWATCH_TIMEZONE" in badenv.stderr
