"""Import real public data nobody on this project wrote, and check it against geopandas.

The Minneapolis police stops (carData ``MplsStops``, GPL-3) and the city's 87 official
neighbourhood polygons go through :func:`gridwatch.ingest.import_file` on both databases; the
per-neighbourhood counts GridWatch stores must equal an independent ``geopandas.sjoin`` of the
same CSV. The Trafford CCTV cameras (OGL v3) check a camera file without view directions.
See ``tests/data/*/README.md`` for sources, licences and how the samples were taken.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import geopandas
import pandas as pd
import pytest
import shapely
import yaml
from click.testing import CliRunner
from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from gridwatch.cli import main
from gridwatch.config import Settings
from gridwatch.ingest import ImportOptions, ImportSummary, import_file
from gridwatch.storage.models import Area, Camera, Incident, RejectedRow

DATA = Path(__file__).parent / "data"
MPLS = DATA / "minneapolis"
NEIGHBOURHOODS = MPLS / "mnNeighborhood.geojson"
NEIGHBOURHOODS_MAPPING = MPLS / "neighborhoods.mapping.yaml"
STOPS = MPLS / "MplsStops_every10th.csv"
STOPS_MAPPING = MPLS / "stops.mapping.yaml"
TRAFFORD = DATA / "trafford"
CAMERAS = TRAFFORD / "trafford_cctv_cameras.csv"
CAMERAS_MAPPING = TRAFFORD / "cameras.mapping.yaml"

#: Rows in the committed sample (every 10th of the 51,920 stops) and polygons in the layer.
STOP_ROWS = 5192
NEIGHBOURHOOD_COUNT = 87
CAMERA_ROWS = 98
#: GridWatch stores coordinates rounded to 7 decimals (about 1 cm).
COORD_TOLERANCE = 5.1e-8


def read_stops() -> pd.DataFrame:
    """Read the stops sample as text, exactly as written (no NA guessing, no type inference)."""
    return pd.read_csv(STOPS, dtype=str, keep_default_na=False)


def expected_codes_for(stops: pd.DataFrame) -> dict[str, str | None]:
    """Return idNum → neighbourhood code by an independent geopandas join.

    A point matching several polygons (a shared boundary) goes to the smallest code compared
    as a string, GridWatch's documented tie rule; a point matching none maps to ``None``.
    """
    hoods = geopandas.read_file(NEIGHBOURHOODS)[["BDNUM", "geometry"]]
    hoods["BDNUM"] = hoods["BDNUM"].astype(str)
    points = geopandas.GeoDataFrame(
        {"idNum": stops["idNum"]},
        geometry=geopandas.points_from_xy(stops["long"].astype(float), stops["lat"].astype(float)),
        crs=hoods.crs,
    )
    joined = geopandas.sjoin(points, hoods, how="left", predicate="intersects")
    joined = joined.sort_values(["idNum", "BDNUM"], na_position="last")
    first = joined.drop_duplicates("idNum", keep="first")
    assert len(first) == len(stops)
    return {
        row.idNum: (None if pd.isna(row.BDNUM) else str(row.BDNUM))
        for row in first.itertuples(index=False)
    }


def check_summary(summary: ImportSummary, engine: Engine, rows: int) -> None:
    """Check the bookkeeping of one import and that every rejected row carries a reason."""
    assert summary.read == rows
    assert summary.imported + summary.rejected + summary.duplicates == summary.read
    with Session(engine) as session:
        rejected = session.scalars(
            select(RejectedRow).where(RejectedRow.batch_id == summary.batch_id)
        ).all()
    assert len(rejected) == summary.rejected
    assert all(r.reason.strip() for r in rejected)
    if summary.rejected:
        assert summary.report is not None and Path(summary.report).is_file()
    else:
        assert summary.report is None


def import_neighbourhoods(settings: Settings, engine: Engine) -> ImportSummary:
    """Import the 87 neighbourhoods as a flat set of grids."""
    return import_file(
        "grids", NEIGHBOURHOODS, settings, engine, ImportOptions(mapping=NEIGHBOURHOODS_MAPPING)
    )


def import_stops(settings: Settings, engine: Engine) -> ImportSummary:
    """Import the stops sample as incidents."""
    return import_file("incidents", STOPS, settings, engine, ImportOptions(mapping=STOPS_MAPPING))


def test_sample_files_are_what_the_readme_says() -> None:
    with open(STOPS, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:4] == ["rownames", "idNum", "date", "problem"]
    assert len(rows) - 1 == STOP_ROWS
    hoods = geopandas.read_file(NEIGHBOURHOODS)
    assert len(hoods) == NEIGHBOURHOOD_COUNT
    assert hoods["BDNUM"].is_unique
    # The renamed neighbourhood: the stops still say CARAG, the polygons say South Uptown.
    assert "CARAG" in {r[14] for r in rows[1:]}
    assert "South Uptown" in set(hoods["BDNAME"]) and "CARAG" not in set(hoods["BDNAME"])


def test_minneapolis_stops_match_an_independent_geopandas_join(
    engine: Engine, db_settings: Settings
) -> None:
    grids = import_neighbourhoods(db_settings, engine)
    check_summary(grids, engine, NEIGHBOURHOOD_COUNT)
    assert (grids.imported, grids.rejected, grids.duplicates) == (NEIGHBOURHOOD_COUNT, 0, 0)

    first = import_stops(db_settings, engine)
    check_summary(first, engine, STOP_ROWS)
    # Every row of the real file is valid: ids unique, dates ISO 8601, categories mapped.
    assert (first.imported, first.rejected, first.duplicates) == (STOP_ROWS, 0, 0)

    stops = read_stops()
    expected = expected_codes_for(stops)
    with Session(engine) as session:
        stored = {
            source_id: code
            for source_id, code in session.execute(
                select(Incident.source_id, Area.code).outerjoin(Area, Incident.grid_id == Area.id)
            )
        }
        db_counts = {
            code: n
            for code, n in session.execute(
                select(Area.code, func.count(Incident.id))
                .join(Incident, Incident.grid_id == Area.id)
                .group_by(Area.code)
            )
        }
        outside = session.scalar(
            select(func.count()).select_from(Incident).where(Incident.outside_grids.is_(True))
        )
        inconsistent = session.scalar(
            select(func.count())
            .select_from(Incident)
            .where(
                or_(
                    Incident.grid_id.is_(None) & Incident.outside_grids.is_(False),
                    Incident.grid_id.is_not(None) & Incident.outside_grids.is_(True),
                )
            )
        )
        stored_rows = {
            r.source_id: r
            for r in session.execute(
                select(
                    Incident.source_id,
                    Incident.occurred_at,
                    Incident.category,
                    Incident.source,
                    Incident.lon,
                    Incident.lat,
                )
            )
        }

    # Per incident first (a mismatch names the stop), then per neighbourhood as asked.
    assert stored == expected
    expected_counts = Counter(code for code in expected.values() if code is not None)
    assert db_counts == dict(expected_counts)
    assert sum(db_counts.values()) + outside == STOP_ROWS
    assert outside == sum(1 for code in expected.values() if code is None)
    assert outside == 10  # the sample's stops outside every polygon (84 in the full file)
    assert inconsistent == 0

    # Dates: the CSV's ISO 8601 "…Z" read as UTC, stored and returned as aware UTC.
    when = pd.to_datetime(stops["date"], utc=True)
    categories = {"traffic": "traffic", "suspicious": "public_order"}
    for stop, moment in zip(stops.itertuples(index=False), when, strict=True):
        row = stored_rows[stop.idNum]
        assert row.occurred_at == moment.to_pydatetime(), stop.idNum
        assert row.occurred_at.utcoffset() == timedelta(0)
        assert row.category == categories[stop.problem], stop.idNum
        assert row.source == "patrol"
        assert abs(row.lon - float(stop.long)) <= COORD_TOLERANCE, stop.idNum
        assert abs(row.lat - float(stop.lat)) <= COORD_TOLERANCE, stop.idNum
    assert min(r.occurred_at for r in stored_rows.values()) == datetime(
        2017, 1, 1, 6, 0, 42, tzinfo=UTC
    )

    # Re-importing the same file adds nothing: every row is a duplicate of the first run.
    again = import_stops(db_settings, engine)
    check_summary(again, engine, STOP_ROWS)
    assert (again.imported, again.rejected, again.duplicates) == (0, 0, first.imported)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == STOP_ROWS


def test_stops_on_shared_vertices_go_to_the_lowest_code(
    engine: Engine, db_settings: Settings, tmp_path: Path
) -> None:
    """The real stops never sit exactly on a shared edge, so put stops on real shared vertices.

    Every vertex that two to four neighbourhood polygons have in common becomes one stop
    (coordinates written with ``repr`` so they round-trip exactly). Each must go to the
    smallest ``BDNUM`` compared as text — where that differs from the numeric smallest
    (``"13"`` before ``"7"``) the test tells the two rules apart.
    """
    hoods = geopandas.read_file(NEIGHBOURHOODS)
    owners: dict[tuple[float, float], set[str]] = {}
    for code, geom in zip(hoods["BDNUM"].astype(str), hoods.geometry, strict=True):
        for x, y in shapely.get_coordinates(geom).tolist():
            owners.setdefault((x, y), set()).add(code)
    shared = sorted((xy, codes) for xy, codes in owners.items() if len(codes) >= 2)
    assert len(shared) > 1000
    assert any(min(codes) != min(codes, key=int) for _, codes in shared)
    path = tmp_path / "vertex_stops.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["idNum", "date", "problem", "lat", "long"])
        for n, ((x, y), _) in enumerate(shared):
            writer.writerow([f"V-{n:05d}", "2017-06-01T12:00:00Z", "traffic", repr(y), repr(x)])

    import_neighbourhoods(db_settings, engine)
    summary = import_file(
        "incidents", path, db_settings, engine, ImportOptions(mapping=STOPS_MAPPING)
    )
    check_summary(summary, engine, len(shared))
    assert (summary.imported, summary.rejected) == (len(shared), 0)

    stops = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = expected_codes_for(stops)
    with Session(engine) as session:
        stored = {
            source_id: code
            for source_id, code in session.execute(
                select(Incident.source_id, Area.code).outerjoin(Area, Incident.grid_id == Area.id)
            )
        }
    assert expected == {f"V-{n:05d}": min(codes) for n, (_, codes) in enumerate(shared)}
    assert stored == expected


def test_trafford_cameras_without_grids_are_all_outside(
    engine: Engine, db_settings: Settings
) -> None:
    summary = import_file(
        "cameras", CAMERAS, db_settings, engine, ImportOptions(mapping=CAMERAS_MAPPING)
    )
    check_summary(summary, engine, CAMERA_ROWS)
    assert (summary.imported, summary.rejected, summary.duplicates) == (CAMERA_ROWS, 0, 0)

    source = pd.read_csv(CAMERAS, dtype=str, keep_default_na=False).set_index("camera_id")
    with Session(engine) as session:
        cameras = session.scalars(select(Camera)).all()
    assert len(cameras) == CAMERA_ROWS
    assert {c.source_id for c in cameras} == set(source.index)
    for camera in cameras:
        row = source.loc[camera.source_id]
        assert camera.outside_grids is True
        assert camera.grid_id is None
        assert camera.direction_deg is None and camera.fov_deg is None
        assert camera.range_m is None
        assert camera.type == "standard" and camera.status == "online"
        # Quoted names with commas ("Grove Lane, Hale (Altrincham)") come through whole.
        assert camera.name == row["location"]
        assert abs(camera.lon - float(row["lon"])) <= COORD_TOLERANCE
        assert abs(camera.lat - float(row["lat"])) <= COORD_TOLERANCE
    assert sum("," in (c.name or "") for c in cameras) == 3


def test_cli_import_prints_the_json_summary(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    env = {
        "GRIDWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "GRIDWATCH_VAR_DIR": str(var_dir),
        "GRIDWATCH_SECRET_KEY": "x" * 20,
    }
    runner = CliRunner()

    def run(kind: str, path: Path, mapping: Path) -> dict[str, object]:
        args = ["import", kind, str(path), "--mapping", str(mapping), "--json"]
        result = runner.invoke(main, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        data: dict[str, object] = json.loads(result.stdout)
        assert {"file", "kind", "read", "imported", "duplicates", "rejected", "report"} <= set(
            data
        )
        return data

    grids = run("grids", NEIGHBOURHOODS, NEIGHBOURHOODS_MAPPING)
    assert grids["file"] == str(NEIGHBOURHOODS)
    assert grids["kind"] == "grids"
    assert (grids["read"], grids["imported"], grids["duplicates"]) == (87, 87, 0)
    assert (grids["rejected"], grids["report"]) == (0, None)

    stops = run("incidents", STOPS, STOPS_MAPPING)
    assert stops["kind"] == "incidents"
    assert (stops["read"], stops["imported"], stops["rejected"]) == (STOP_ROWS, STOP_ROWS, 0)

    again = run("incidents", STOPS, STOPS_MAPPING)
    assert (again["imported"], again["duplicates"]) == (0, STOP_ROWS)


@pytest.mark.parametrize("mapping", [STOPS_MAPPING, NEIGHBOURHOODS_MAPPING, CAMERAS_MAPPING])
def test_mapping_files_name_only_real_columns(mapping: Path) -> None:
    data = yaml.safe_load(mapping.read_text("utf-8"))
    source = {
        STOPS_MAPPING: STOPS,
        NEIGHBOURHOODS_MAPPING: NEIGHBOURHOODS,
        CAMERAS_MAPPING: CAMERAS,
    }[mapping]
    if source.suffix == ".csv":
        with open(source, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh))
    else:
        header = list(geopandas.read_file(source).columns)
    assert set(data["columns"].values()) <= set(header)
