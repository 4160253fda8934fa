"""Storage on SQLite and PostgreSQL + PostGIS: migrations, column types, constraints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from gridwatch.storage import (
    create_db_engine,
    current_revision,
    head_revision,
    session_scope,
    upgrade_database,
)
from gridwatch.storage.models import (
    GEOMETRY_TABLES,
    Area,
    Base,
    Camera,
    Incident,
    PatrolTeam,
    PatrolTrack,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")

# SQLAlchemy cannot reflect PostGIS' "geometry" type (reflection sees NullType); expected here.
pytestmark = pytest.mark.filterwarnings("ignore:Did not recognize type 'geometry':Warning")

TOWNSHIP_SHAPE = MultiPolygon(
    [
        Polygon([(114.00, 22.50), (114.10, 22.50), (114.10, 22.60), (114.00, 22.60)]),
        Polygon([(114.20, 22.50), (114.25, 22.50), (114.25, 22.55)]),
    ]
)


def incident(source_id: str, lon: float = 114.05, lat: float = 22.55, **kw: object) -> Incident:
    values: dict[str, object] = {
        "source_id": source_id,
        "occurred_at": datetime(2026, 7, 4, 8, 30, tzinfo=SHANGHAI),
        "category": "theft",
        "lon": lon,
        "lat": lat,
        "geom": Point(lon, lat),
    }
    values.update(kw)
    return Incident(**values)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def schema_snapshot(engine: Engine) -> dict[str, object]:
    """Tables, columns (name, type, nullability) and indexes, as comparable plain data."""
    inspector = inspect(engine)  # a new inspector each time: reflection is cached per inspector
    return {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted(str(sorted(index.items())) for index in inspector.get_indexes(table)),
        )
        for table in inspector.get_table_names()
    }


# ------------------------------------------------------------------------------------------
# Migrations
# ------------------------------------------------------------------------------------------


def test_upgrade_creates_every_table(engine: Engine):
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert current_revision(engine) == head_revision(engine)
    assert head_revision(engine) is not None


def test_upgrade_is_idempotent(engine: Engine):
    with session_scope(engine) as session:
        session.add(incident("keep-me"))
    before = schema_snapshot(engine)
    assert upgrade_database(engine) == head_revision(engine)
    assert upgrade_database(engine) == head_revision(engine)
    assert schema_snapshot(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    with session_scope(engine) as session:
        assert session.scalars(select(Incident.source_id)).all() == ["keep-me"]


def test_upgrade_on_an_empty_database_from_a_new_engine(db_url: str):
    engine = create_db_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade_database(engine) == head_revision(engine)
    finally:
        engine.dispose()


def _include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    if type_ == "table" and reflected and name not in Base.metadata.tables:
        return False  # alembic_version, PostGIS' spatial_ref_sys
    if type_ == "index" and name and name.startswith("ix_") and name.endswith("_geom"):
        return False  # GiST indexes: created by the migration only, on PostgreSQL
    return True


def test_migration_matches_the_models(engine: Engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _include_object}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models.py and the migrations differ: {diff}"


# ------------------------------------------------------------------------------------------
# Column types
# ------------------------------------------------------------------------------------------


def test_geometry_round_trip(engine: Engine):
    track_line = LineString([(114.01, 22.51), (114.02, 22.52), (114.05, 22.55)])
    with session_scope(engine) as session:
        area = Area(code="440300001", name="某某街道", level="township", geom=TOWNSHIP_SHAPE)
        team = PatrolTeam(code="T1", name="一队", kind="township")
        session.add_all([area, team, incident("i-1", 114.05, 22.55)])
        session.flush()
        session.add(PatrolTrack(source_id="trk-1", team_id=team.id, geom=track_line))
        session.add(Area(code="440300002", name="无边界", level="village", parent_id=area.id))
    with session_scope(engine) as session:
        stored_area = session.scalars(select(Area).where(Area.code == "440300001")).one()
        assert stored_area.geom is not None
        assert stored_area.geom.geom_type == "MultiPolygon"
        assert stored_area.geom.equals(TOWNSHIP_SHAPE)
        assert stored_area.geom.wkb == TOWNSHIP_SHAPE.wkb
        point = session.scalars(select(Incident.geom)).one()
        assert point is not None and point.geom_type == "Point"
        assert (point.x, point.y) == (114.05, 22.55)
        track = session.scalars(select(PatrolTrack.geom)).one()
        assert track is not None and track.equals(track_line)
        empty = session.scalars(select(Area.geom).where(Area.code == "440300002")).one()
        assert empty is None


def test_utc_datetime_round_trip(engine: Engine):
    local = datetime(2026, 7, 4, 8, 30, 15, 123456, tzinfo=SHANGHAI)
    with session_scope(engine) as session:
        session.add(incident("i-1", occurred_at=local, reported_at=None))
    with session_scope(engine) as session:
        stored = session.scalars(select(Incident)).one()
        assert stored.occurred_at == local  # the same instant …
        assert stored.occurred_at.utcoffset() == timedelta(0)  # … handed back in UTC
        assert stored.occurred_at.tzinfo is not None
        assert stored.occurred_at.replace(tzinfo=None) == datetime(2026, 7, 4, 0, 30, 15, 123456)
        assert stored.reported_at is None


def test_utc_datetime_compares_as_instants(engine: Engine):
    # 07:59 and 08:01 Shanghai time straddle 00:00 UTC; a filter in UTC must split them.
    with session_scope(engine) as session:
        session.add(incident("early", occurred_at=datetime(2026, 7, 4, 7, 59, tzinfo=SHANGHAI)))
        session.add(incident("late", occurred_at=datetime(2026, 7, 4, 8, 1, tzinfo=SHANGHAI)))
    boundary = datetime(2026, 7, 4, 0, 0, tzinfo=UTC)
    with session_scope(engine) as session:
        later = session.scalars(select(Incident.source_id).where(Incident.occurred_at >= boundary))
        assert later.all() == ["late"]


def test_naive_datetime_is_rejected(engine: Engine):
    with pytest.raises(StatementError, match="naive datetime"):
        with session_scope(engine) as session:
            session.add(incident("naive", occurred_at=datetime(2026, 7, 4, 8, 30)))
    with session_scope(engine) as session:
        assert session.scalars(select(Incident)).all() == []


# ------------------------------------------------------------------------------------------
# Constraints and relationships
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["incident", "camera"])
def test_source_id_is_unique(engine: Engine, model: str):
    def make() -> Incident | Camera:
        if model == "incident":
            return incident("dup-1")
        return Camera(source_id="dup-1", lon=114.0, lat=22.5, geom=Point(114.0, 22.5))

    with session_scope(engine) as session:
        session.add(make())
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(make())
    with session_scope(engine) as session:
        table = Incident if model == "incident" else Camera
        assert len(session.scalars(select(table)).all()) == 1


def test_foreign_keys_are_enforced(engine: Engine):
    # SQLite only enforces them with PRAGMA foreign_keys=ON, which create_db_engine sets.
    with pytest.raises(IntegrityError):
        with session_scope(engine) as session:
            session.add(incident("orphan", grid_id=999_999))


def test_area_parent_and_children(engine: Engine):
    with session_scope(engine) as session:
        county = Area(code="440300", name="某县", level="county")
        towns = [
            Area(code=f"44030000{i}", name=f"镇{i}", level="township", parent=county)
            for i in (1, 2)
        ]
        grid = Area(code="440300001001", name="网格1", level="grid", parent=towns[0])
        session.add_all([county, *towns, grid])
    with session_scope(engine) as session:
        county = session.scalars(select(Area).where(Area.code == "440300")).one()
        assert county.parent is None
        assert sorted(child.code for child in county.children) == ["440300001", "440300002"]
        town = session.scalars(select(Area).where(Area.code == "440300001")).one()
        assert town.parent_id == county.id
        assert town.parent is not None and town.parent.code == "440300"
        assert [g.code for g in town.children] == ["440300001001"]
        assert town.children[0].parent is town


# ------------------------------------------------------------------------------------------
# PostGIS specifics
# ------------------------------------------------------------------------------------------


def test_geometry_column_storage(engine: Engine):
    if is_postgres(engine):
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT f_table_name, f_geometry_column, type, srid FROM geometry_columns "
                    "WHERE f_table_schema = current_schema()"
                )
            ).all()
        found = {row.f_table_name: (row.f_geometry_column, row.type, row.srid) for row in rows}
        assert found == {table: ("geom", kind, 4326) for table, kind in GEOMETRY_TABLES.items()}
    else:
        columns = {c["name"]: c for c in inspect(engine).get_columns("incidents")}
        assert str(columns["geom"]["type"]).upper() == "BLOB"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgis_gist_indexes(engine: Engine):
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE indexname LIKE :p"),
            {"p": "%_geom"},
        ).all()
    indexes = {row.tablename: (row.indexname, row.indexdef) for row in rows}
    assert set(indexes) == set(GEOMETRY_TABLES)
    for table, (name, definition) in indexes.items():
        assert name == f"ix_{table}_geom"
        assert "USING gist (geom)" in definition


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgis_rejects_a_wrong_srid(engine: Engine):
    with pytest.raises(Exception, match="SRID"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO incidents (source_id, occurred_at, category, lon, lat, geom, "
                "source, status, outside_grids) VALUES ('srid', now(), 'theft', 0, 0, "
                "ST_SetSRID(ST_MakePoint(0, 0), 3857), 'other', 'reported', false)"
            )
        )


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_st_contains_on_stored_geometries(engine: Engine):
    with session_scope(engine) as session:
        session.add(Area(code="T1", name="镇", level="township", geom=TOWNSHIP_SHAPE))
        session.add_all(
            [
                incident("inside-first-part", 114.05, 22.55),
                incident("inside-second-part", 114.24, 22.51),
                incident("outside", 114.15, 22.55),
            ]
        )
    with engine.connect() as conn:
        inside = conn.execute(
            text(
                "SELECT i.source_id FROM incidents i JOIN areas a "
                "ON ST_Contains(a.geom, i.geom) WHERE a.code = 'T1' ORDER BY i.source_id"
            )
        ).scalars()
        assert inside.all() == ["inside-first-part", "inside-second-part"]
        # Geometries are stored in WGS84 (SRID 4326), so geography distances are in metres.
        metres = conn.execute(
            text(
                "SELECT ST_Distance(a.geom::geography, b.geom::geography) FROM incidents a, "
                "incidents b WHERE a.source_id = 'inside-first-part' AND b.source_id = 'outside'"
            )
        ).scalar_one()
    assert 10_000 < metres < 10_500  # 0.1 degree of longitude at 22.55°N ≈ 10.3 km
