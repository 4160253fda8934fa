"""Fuzzing every importer, and formula injection in every spreadsheet GridWatch writes.

For each import kind the fuzz tests feed random bytes, truncated and byte-flipped valid files,
valid text in the wrong encoding, huge fields and a valid file with one corrupted cell. The only
acceptable outcomes are :class:`ImportFileError` (one sentence; then *nothing* is committed: the
row count of every table is unchanged) or an import whose counts add up (rows read = imported +
duplicates + rejected, the kind's table grew by exactly ``imported``, rejected rows are in
quarantine). Any other exception fails the test.

The fuzz tests share one SQLite county per module (a throwaway database per example would cost
more than the import); duplicates from earlier examples are part of what is checked. A small
import chunk size makes a file span several chunks, so a late failure has to roll back rows
that were already flushed. Examples are kept few (``FUZZ``) so the module runs in well under a
minute; raise ``GRIDWATCH_FUZZ_EXAMPLES`` for a longer hunt.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import gpxpy.gpx
import pytest
from conftest import X0, Y0, grid_frame, make_settings
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from sqlalchemy import func, select

from gridwatch.ingest import IMPORTERS, ImportFileError, import_file
from gridwatch.spreadsheet import FORMULA_PREFIXES, safe_cell, safe_csv_bytes, safe_row
from gridwatch.storage import create_db_engine, upgrade_database
from gridwatch.storage.models import Base, ImportBatch, RejectedRow

FUZZ = int(os.environ.get("GRIDWATCH_FUZZ_EXAMPLES", "6"))
FUZZ_SETTINGS = settings(
    max_examples=FUZZ,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------------------------------
# Valid sample files of every kind (the tiny county of conftest: grids around X0, Y0)
# ------------------------------------------------------------------------------------------

LON, LAT = X0 + 0.005, Y0 + 0.005
TOWNSHIP, VILLAGE = "430000001000", "430000001001"

TABLES: dict[str, tuple[list[str], list[list[Any]]]] = {
    "incidents": (
        ["id", "occurred_at", "category", "lon", "lat", "source", "status", "address"],
        [
            ["F1", "2026-07-01 10:00", "theft", LON, LAT, "call_110", "solved", "城关镇东街1号"],
            ["F2", "2026/7/2 21:05", "盗窃", LON + 0.01, LAT, "110报警", "accepted", ""],
            ["F3", "2026-07-03T08:00:00+08:00", "burglary", LON, LAT + 0.01, "", "", "东村"],
            ["F4", "2026年7月4日13时5分", "fraud", LON + 0.01, LAT + 0.01, "walk_in", "", ""],
        ],
    ),
    "cameras": (
        ["id", "name", "lon", "lat", "type", "status", "direction_deg", "fov_deg", "range_m"],
        [
            ["C1", "东街卡口", LON, LAT, "卡口", "在线", 90, 60, 50],
            ["C2", "村口", LON + 0.01, LAT, "高清", "离线", "", "", ""],
            ["C3", "市场", LON, LAT + 0.01, "标清", "故障", 180, 90, 30],
        ],
    ),
    "stations": (
        ["code", "name", "lon", "lat", "township_codes"],
        [["PSF1", "城关派出所", LON, LAT, TOWNSHIP], ["PSF2", "东派出所", LON, LAT, TOWNSHIP]],
    ),
    "teams": (
        ["code", "name", "kind", "station_code", "home_area_code", "members"],
        [
            ["TF1", "城关巡逻组", "police", "PS1", "", 4],
            ["TF2", "城关镇巡防队", "township", "", TOWNSHIP, 12],
            ["TF3", "东村护村队", "village", "", VILLAGE, ""],
        ],
    ),
    "patrols": (
        ["team_code", "ts", "lon", "lat"],
        [
            ["T1", "2026-11-01 20:00:00", LON, LAT],
            ["T1", "2026-11-01 20:02:00", LON + 0.01, LAT],
            ["T1", "2026-11-01 20:04:00", LON + 0.01, LAT + 0.01],
        ],
    ),
    "surveys": (
        ["area_code", "period", "respondents", "security_pct", "satisfaction_pct", "赌博"],
        [
            [TOWNSHIP, "2026Q3", 400, 88.5, 90.1, 10.2],
            [VILLAGE, "2026Q3", 40, "91.25%", 92, 0],
            [TOWNSHIP, "2026Q2", 380, 79.9, 85, 5],
        ],
    ),
    "survey-responses": (
        ["respondent_id", "period", "area_code", "outcome", "security", "factors", "weight"],
        [
            ["R1", "2026Q3", VILLAGE, "completed", "basically_safe", "两抢一盗;赌博", 1.2],
            ["R2", "2026Q3", VILLAGE, "hung_up", "", "", ""],
            ["R3", "2026Q3", VILLAGE, "completed", "unsafe", "police_rarely_seen", ""],
        ],
    ),
}
TABLE_KINDS = sorted(TABLES)
ALL_KINDS = sorted(IMPORTERS)
ENCODINGS = ["utf-16-le", "utf-16-be", "utf-32", "big5", "shift_jis", "cp1252", "latin-1"]


def csv_bytes(header: list[str], rows: list[list[Any]], encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # quotes a lone CR or LF in a cell
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(encoding, errors="replace")


def xlsx_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def grids_geojson(properties: dict[str, Any] | None = None) -> bytes:
    frame = grid_frame()
    document = json.loads(frame.to_json())
    if properties is not None:
        document["features"][-1]["properties"].update(properties)
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def patrol_gpx() -> bytes:
    from datetime import UTC, datetime

    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack(name="T1")
    segment = gpxpy.gpx.GPXTrackSegment()
    for k in range(4):
        segment.points.append(
            gpxpy.gpx.GPXTrackPoint(
                LAT + 0.002 * k, LON + 0.003 * k, time=datetime(2026, 11, 2, 12, k, tzinfo=UTC)
            )
        )
    track.segments.append(segment)
    gpx.tracks.append(track)
    return gpx.to_xml().encode("utf-8")


@functools.cache
def valid_files(kind: str) -> list[tuple[str, bytes]]:
    """Return (suffix, content) of valid files of ``kind`` in every format it reads.

    Built once: a workbook carries its save time, and hypothesis needs the same bytes on every
    example to replay one.
    """
    if kind == "grids":
        return [(".geojson", grids_geojson())]
    header, rows = TABLES[kind]
    files = [(".csv", csv_bytes(header, rows)), (".xlsx", xlsx_bytes(header, rows))]
    if kind == "patrols":
        files.append((".gpx", patrol_gpx()))
    return files


SUFFIXES = {
    kind: [".csv", ".xlsx", ".geojson", ".gpx", ".zip", ".gpkg", ".txt", ".tsv"]
    for kind in ALL_KINDS
}

# ------------------------------------------------------------------------------------------
# The shared county and the check every outcome must pass
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def county(tmp_path_factory: pytest.TempPathFactory):
    """The conftest county plus station PS1 and team T1; chunks of three rows."""
    directory = tmp_path_factory.mktemp("fuzz_county")
    config = make_settings(directory, GRIDWATCH_IMPORT_CHUNK_SIZE="3")
    engine = create_db_engine(config.database_url)
    upgrade_database(engine)
    grids = directory / "county.geojson"
    grid_frame().to_file(grids, driver="GeoJSON")
    import_file("grids", grids, config, engine)
    stations = directory / "stations.csv"
    stations.write_bytes(
        csv_bytes(
            ["code", "name", "lon", "lat", "township_codes"],
            [["PS1", "城关派出所", LON, LAT, TOWNSHIP]],
        )
    )
    assert import_file("stations", stations, config, engine).imported == 1
    teams = directory / "teams.csv"
    teams.write_bytes(
        csv_bytes(["code", "name", "kind", "station_code"], [["T1", "巡逻组", "police", "PS1"]])
    )
    assert import_file("teams", teams, config, engine).imported == 1
    yield engine, config, directory
    engine.dispose()


def row_counts(engine) -> dict[str, int]:
    """Return the number of rows of every table (import batches apart)."""
    counts = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name != ImportBatch.__tablename__:
                counts[table.name] = conn.execute(select(func.count()).select_from(table)).scalar()
    return counts


def check_import(county, kind: str, suffix: str, content: bytes, **options: Any):
    """Import ``content`` as a file of ``kind``; assert a clean outcome; return the summary.

    Returns ``None`` when the file was refused as a whole.
    """
    from gridwatch.ingest import ImportOptions

    engine, config, directory = county
    path = directory / f"fuzz-{uuid.uuid4().hex[:12]}{suffix}"
    path.write_bytes(content)
    before = row_counts(engine)
    try:
        summary = import_file(kind, path, config, engine, ImportOptions(**options))
    except ImportFileError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message.strip(), message
        assert "Traceback" not in message
        assert row_counts(engine) == before, f"a refused file committed rows: {message}"
        event(f"refused: {message.split(': ', 1)[-1][:40]}")
        return None
    finally:
        path.unlink(missing_ok=True)
    after = row_counts(engine)
    table = IMPORTERS[kind].table.name
    assert summary.read == summary.imported + summary.duplicates + summary.rejected, summary
    assert after[table] - before[table] == summary.imported, (kind, summary)
    grew_quarantine = after[RejectedRow.__tablename__] - before[RejectedRow.__tablename__]
    assert 0 <= grew_quarantine <= summary.rejected
    with engine.connect() as conn:
        batch = conn.execute(
            select(ImportBatch.status, ImportBatch.rows_imported, ImportBatch.rows_rejected).where(
                ImportBatch.id == summary.batch_id
            )
        ).one()
    assert tuple(batch) == ("done", summary.imported, summary.rejected)
    event(f"imported {min(summary.imported, 1)}+ rows, rejected {min(summary.rejected, 1)}+")
    return summary


# ------------------------------------------------------------------------------------------
# Fuzz: random bytes, truncation, flipped bytes, encodings, huge fields, one bad cell
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_KINDS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_random_bytes_are_refused_or_rejected_cleanly(county, kind, data):
    suffix = data.draw(st.sampled_from(SUFFIXES[kind]), label="suffix")
    content = data.draw(st.binary(max_size=4096), label="content")
    check_import(county, kind, suffix, content)


@pytest.mark.parametrize("kind", ALL_KINDS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_truncated_files_are_refused_or_rejected_cleanly(county, kind, data):
    suffix, content = data.draw(st.sampled_from(valid_files(kind)), label="file")
    cut = data.draw(st.integers(0, len(content) - 1), label="cut")
    check_import(county, kind, suffix, content[:cut])


@pytest.mark.parametrize("kind", ALL_KINDS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_files_with_flipped_bytes_are_refused_or_rejected_cleanly(county, kind, data):
    suffix, content = data.draw(st.sampled_from(valid_files(kind)), label="file")
    damaged = bytearray(content)
    for _ in range(data.draw(st.integers(1, 8), label="flips")):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    check_import(county, kind, suffix, bytes(damaged))


@pytest.mark.parametrize("kind", TABLE_KINDS)
@FUZZ_SETTINGS
@given(encoding=st.sampled_from(ENCODINGS), declared=st.sampled_from(["auto", "utf-8", "gbk"]))
def test_wrong_encodings_are_refused_or_rejected_cleanly(county, kind, encoding, declared):
    header, rows = TABLES[kind]
    check_import(county, kind, ".csv", csv_bytes(header, rows, encoding), encoding=declared)


@pytest.mark.parametrize("kind", TABLE_KINDS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_huge_fields_are_refused_or_rejected_cleanly(county, kind, data):
    header, rows = TABLES[kind]
    rows = [list(r) for r in rows]
    row = data.draw(st.integers(0, len(rows) - 1), label="row")
    column = data.draw(st.integers(0, len(header) - 1), label="column")
    size = data.draw(st.sampled_from([5_000, 70_000, 140_000, 600_000]), label="size")
    unit = data.draw(st.sampled_from(["x", "盗", "9", "=", ",", '"', "\n"]), label="unit")
    rows[row][column] = unit * size
    suffix = data.draw(st.sampled_from([".csv", ".xlsx"]), label="suffix")
    if suffix == ".xlsx":
        assume(unit not in "\n")  # a worksheet cell holds at most 32 767 characters anyway
        rows[row][column] = rows[row][column][:32_767]
        content = xlsx_bytes(header, rows)
    else:
        content = csv_bytes(header, rows)
    check_import(county, kind, suffix, content)


CELL_VALUES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(
        [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-",
            "@SUM(A1)",
            "\t",
            "nan",
            "inf",
            "-inf",
            "1e309",
            "９９",
            "0x1F",
            "2026-02-30 10:00",
            "9999-12-31 23:59",
            "0000-01-01",
            "1900/1/0",
            "\x00",
            "\ufeff",
            "NULL",
            "None",
            ";;;",
            "、",
            "999999999999999999999999",
        ]
    ),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)


@pytest.mark.parametrize("kind", TABLE_KINDS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_one_corrupted_cell_rejects_at_most_its_row(county, kind, data):
    header, rows = TABLES[kind]
    rows = [list(r) for r in rows]
    row = data.draw(st.integers(0, len(rows) - 1), label="row")
    column = data.draw(st.integers(0, len(header) - 1), label="column")
    rows[row][column] = data.draw(CELL_VALUES, label="cell")
    suffix = data.draw(st.sampled_from([".csv", ".xlsx"]), label="suffix")
    if suffix == ".xlsx":
        cell = rows[row][column]
        if isinstance(cell, str):
            # Characters a worksheet cannot hold at all (openpyxl refuses to write them).
            from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

            rows[row][column] = ILLEGAL_CHARACTERS_RE.sub("", cell)
        elif isinstance(cell, float) and cell != cell:
            rows[row][column] = None
        content = xlsx_bytes(header, rows)
    else:
        content = csv_bytes(header, rows)
    summary = check_import(county, kind, suffix, content)
    if summary is not None and column != 0:
        # One bad cell cannot take the other rows with it (a bad id cell may also make its
        # row a duplicate of another, hence column 0 is left out here).
        assert summary.rejected <= 1, summary


@FUZZ_SETTINGS
@given(
    key=st.sampled_from(["code", "name", "level", "parent_code", "population"]),
    cell=CELL_VALUES,
)
def test_grids_with_one_corrupted_property_are_refused_or_rejected_cleanly(county, key, cell):
    if isinstance(cell, float) and cell != cell:
        cell = None
    try:
        content = grids_geojson({key: cell})
    except ValueError:  # infinity is no JSON; nothing to import
        return
    check_import(county, "grids", ".geojson", content)


# ------------------------------------------------------------------------------------------
# No partial commit: a file that fails after several chunks leaves nothing behind
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spoiler",
    [
        pytest.param(b"L-bad,\xff\xfe\xfd,\x81\n", id="undecodable-row"),
        pytest.param(b'L-big,"' + b"x" * 200_000 + b'"\n', id="field-beyond-csv-limit"),
    ],
)
def test_a_file_failing_after_flushed_chunks_commits_nothing(
    engine, db_settings, tmp_path, spoiler
):
    from dataclasses import replace

    from gridwatch.ingest import ImportOptions

    config = replace(db_settings, import_chunk_size=100)
    grids = tmp_path / "county.geojson"
    grid_frame().to_file(grids, driver="GeoJSON")
    import_file("grids", grids, config, engine)
    header, rows = TABLES["incidents"]
    lines = [csv_bytes(header, [])]
    # Thirty chunks of good rows (past the 64 KB the reader checks up front), then the spoiler.
    for n in range(3000):
        lines.append(csv_bytes(header, [[f"L{n}", *rows[0][1:]]]).split(b"\n", 1)[1])
    path = tmp_path / "late.csv"
    path.write_bytes(b"".join(lines) + spoiler)
    before = row_counts(engine)
    with pytest.raises(ImportFileError) as caught:
        import_file("incidents", path, config, engine, ImportOptions(encoding="utf-8"))
    # (The row named for an undecodable byte can be a little early: the text decoder reads
    # ahead of the CSV reader.)
    assert str(caught.value).startswith("late.csv: row ")
    assert row_counts(engine) == before
    with engine.connect() as conn:
        statuses = conn.execute(
            select(ImportBatch.status).where(ImportBatch.file_name == "late.csv")
        ).all()
    assert [s for (s,) in statuses] == ["failed"]


# ------------------------------------------------------------------------------------------
# Formula injection
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"),
        ("+1+1", "'+1+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("＝HYPERLINK()", "'＝HYPERLINK()"),
        ("-12.5", "-12.5"),
        ("+86", "+86"),
        ("1e5", "1e5"),
        ("盗窃", "盗窃"),
        ("", ""),
        ("'=already", "'=already"),
        (-3, -3),
        (2.5, 2.5),
        (None, None),
    ],
)
def test_safe_cell(value, expected):
    assert safe_cell(value) == expected


@given(st.text())
def test_safe_cell_leaves_no_formula_and_loses_nothing(value):
    escaped = safe_cell(value)
    assert safe_cell(escaped) == escaped  # idempotent
    if escaped != value:
        assert escaped == "'" + value
    else:
        try:
            float(value)
            numeric = True
        except ValueError:
            numeric = False
        assert not value.startswith(FORMULA_PREFIXES) or numeric
    assert safe_row([value, 1]) == [escaped, 1]


HOSTILE = ["=cmd|' /C calc'!A0", '+HYPERLINK("http://x")', "@SUM(1)", "-1+2", "\t=1"]


def _hostile_incidents(path: Path) -> Path:
    header = ["id", "occurred_at", "category", "lon", "lat", "=header"]
    rows = [[f"H{n}", "not a date", value, LON, LAT, value] for n, value in enumerate(HOSTILE)]
    path.write_bytes(csv_bytes(header, rows))
    return path


def _assert_no_formula(text: str) -> int:
    cells = [cell for row in csv.reader(io.StringIO(text.lstrip("\ufeff"))) for cell in row]
    assert all(
        not cell.startswith(FORMULA_PREFIXES) or cell.lstrip("+-").replace(".", "").isdigit()
        for cell in cells
    ), cells
    return len(cells)


def test_rejected_rows_report_neutralises_formulas(county, tmp_path):
    engine, config, _ = county
    summary = import_file(
        "incidents", _hostile_incidents(tmp_path / "hostile.csv"), config, engine
    )
    assert summary.rejected == len(HOSTILE) and summary.report
    text = Path(summary.report).read_text("utf-8-sig")
    assert _assert_no_formula(text) > 5 * len(HOSTILE)
    assert "'=cmd|' /C calc'!A0" in text  # kept readable after the apostrophe
    assert "'=header" in text


def test_rejected_csv_download_neutralises_formulas_even_in_old_reports(app, client, tmp_path):
    from web_support import login

    state = app.extensions["gridwatch"]
    summary = import_file(
        "incidents", _hostile_incidents(tmp_path / "hostile.csv"), state.settings, state.engine
    )
    # A report written before the writer escaped its cells.
    Path(summary.report).write_text(
        "file,row,column,reason,x\nhostile.csv,2,id,=1+1,@A1\n", "utf-8-sig"
    )
    assert login(client, "admin").status_code in (302, 303)
    response = client.get(f"/imports/{summary.batch_id}/rejected.csv")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    text = response.get_data().decode("utf-8-sig")
    _assert_no_formula(text)
    assert "'=1+1" in text and "'@A1" in text
    assert safe_csv_bytes(Path(summary.report)).decode("utf-8-sig") == text


def test_metrics_csv_neutralises_area_codes(runner, app):
    from sqlalchemy import update
    from web_support import TOWNSHIP_A

    from gridwatch.storage.models import Area

    engine = app.extensions["gridwatch"].engine
    hostile = '=HYPERLINK("http://x","y")'
    with engine.begin() as conn:
        conn.execute(update(Area).where(Area.code == TOWNSHIP_A).values(code=hostile))
    result = runner.invoke(["metrics", "--level", "township", "--period", "2026Q3", "--csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert "'" + hostile in [row["area_code"] for row in rows]
    _assert_no_formula(result.output)
