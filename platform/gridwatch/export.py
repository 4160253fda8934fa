"""Export the GridWatch data to a GeoPackage for QGIS and other GIS tools.

One layer per kind of data, all in WGS84 (EPSG:4326):

``areas``
    code, name, level, parent_code, population; multipolygon (null for areas without one).
    Exactly the fields the grid importer reads, so the layer imports back unchanged. Parents
    come before their children.
``incidents``
    source_id, occurred_at, occurred_local, category, source, status, grid_code; point.
``cameras``
    source_id, type, status, grid_code; point.
``stations``
    code, name, township_codes (township codes joined with ``;``); point.
``patrol_pings``
    team_id (the team's code), ts, ts_local, grid_code; point.

Instants are text: ``occurred_at`` / ``ts`` in ISO 8601 UTC (``2026-07-04T05:06:07Z``),
``occurred_local`` / ``ts_local`` in the configured zone with its offset
(``2026-07-04T13:06:07+08:00``) so that a local day can be filtered without arithmetic.
GeoPackage has a datetime type, but QGIS and GDAL read it back in different zones depending on
version and settings; text reads back the same everywhere.

An empty table still gets its layer, with its fields and geometry type, so a QGIS project
built on the file keeps working when a table is empty. Tables are read in chunks by primary
key and appended to their layer, so memory stays bounded for millions of incidents or pings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Connection, Engine, Row, Select, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, aliased

from gridwatch.status import database_label, iso_utc
from gridwatch.storage import DatabaseError, current_revision
from gridwatch.storage.models import (
    Area,
    Camera,
    Incident,
    PatrolPing,
    PatrolTeam,
    Station,
    StationTownship,
)

#: Rows read from the database and appended to the layer at a time.
DEFAULT_CHUNK_SIZE = 100_000

#: Fields of every layer, in order (the geometry column comes after them).
LAYER_FIELDS: dict[str, tuple[str, ...]] = {
    "areas": ("code", "name", "level", "parent_code", "population"),
    "incidents": (
        "source_id",
        "occurred_at",
        "occurred_local",
        "category",
        "source",
        "status",
        "grid_code",
    ),
    "cameras": ("source_id", "type", "status", "grid_code"),
    "stations": ("code", "name", "township_codes"),
    "patrol_pings": ("team_id", "ts", "ts_local", "grid_code"),
}

#: OGR geometry type of every layer.
LAYER_GEOMETRY: dict[str, str] = {
    "areas": "MultiPolygon",
    "incidents": "Point",
    "cameras": "Point",
    "stations": "Point",
    "patrol_pings": "Point",
}

#: Published metrics added to the ``areas`` layer when the export is given them: the period
#: they describe, then figures (float) and hot-spot labels (text).
AREA_METRIC_FIELDS: dict[str, str] = {
    "metrics_period": "text",
    "incidents_total": "float",
    "incidents_per_1000": "float",
    "two_robberies_one_theft": "float",
    "vice": "float",
    "change_prev_pct": "float",
    "night_share_pct": "float",
    "solved_rate_pct": "float",
    "not_notified_pct": "float",
    "blind_spot_incident_pct": "float",
    "camera_coverage_pct": "float",
    "cameras_working": "float",
    "patrol_minutes": "float",
    "hours_since_last_visit": "float",
    "gi_star_z": "float",
    "hotspot": "text",
    "hotspot_class": "text",
    "forecast_next": "float",
}

#: Called after each chunk with (layer, rows written so far, rows in the table).
ProgressCallback = Callable[[str, int, int], None]

# Integer fields; every other field is text.
_INTEGER_FIELDS = {"population"}

_Frames = Iterator[gpd.GeoDataFrame]


def _iso_local(instant: datetime | None, tz: tzinfo) -> str | None:
    if instant is None:
        return None
    spec = "microseconds" if instant.microsecond else "seconds"
    return instant.astimezone(tz).isoformat(timespec=spec)


def _frame(
    layer: str,
    columns: dict[str, list[Any]],
    geometry: Any,
    extra: dict[str, str] | None = None,
) -> gpd.GeoDataFrame:
    """Build one chunk with the layer's fields and types fixed, whatever the values."""
    data = {
        name: pd.Series(
            columns.get(name, []), dtype="Int64" if name in _INTEGER_FIELDS else object
        )
        for name in LAYER_FIELDS[layer]
    }
    for name, kind in (extra or {}).items():
        values = columns.get(name, [])
        data[name] = (
            pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
            if kind == "float"
            else pd.Series(values, dtype=object)
        )
    return gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geometry, crs="EPSG:4326"))


def _metric_value(metrics: dict[str, Any], name: str) -> Any:
    if name == "metrics_period":
        return metrics.get("period")
    if name in ("two_robberies_one_theft", "vice"):
        return (metrics.get("incidents_by_group") or {}).get(name)
    return metrics.get(name)


def _points(lons: Sequence[float | None], lats: Sequence[float | None]) -> gpd.GeoSeries:
    # None becomes NaN here, and points_from_xy makes POINT EMPTY of it.
    points = gpd.points_from_xy(
        np.asarray(lons, dtype=float), np.asarray(lats, dtype=float), crs="EPSG:4326"
    )
    # GeoPackage readers expect null for "no location", not an empty point.
    return gpd.GeoSeries(points).where(~points.is_empty, None)


def _keyset_chunks(
    conn: Connection,
    stmt: Select[*tuple[Any, ...]],
    key: InstrumentedAttribute[int],
    chunk_size: int,
) -> Iterator[Sequence[Row[*tuple[Any, ...]]]]:
    """Page through ``stmt`` by primary key (no OFFSET: each page is an index range scan)."""
    last: int | None = None
    while True:
        page = stmt if last is None else stmt.where(key > last)
        rows = conn.execute(page.order_by(key).limit(chunk_size)).all()
        if not rows:
            return
        yield rows
        if len(rows) < chunk_size:
            return
        last = rows[-1].key


def _area_frames(
    conn: Connection,
    chunk_size: int,
    metrics: dict[str, dict[str, Any]] | None = None,
) -> _Frames:
    # Parents first, so that an importer resolving parent_code row by row finds each parent.
    links = conn.execute(select(Area.id, Area.parent_id, Area.code)).all()
    children: dict[int | None, list[tuple[str, int]]] = {}
    known = {row.id for row in links}
    for row in links:
        parent = row.parent_id if row.parent_id in known else None
        children.setdefault(parent, []).append((row.code, row.id))
    ordered: list[int] = []
    generation = sorted(children.get(None, []))
    while generation:
        ordered.extend(area_id for _, area_id in generation)
        generation = sorted(
            child for _, area_id in generation for child in children.get(area_id, [])
        )
    # A parent loop (bad data) is unreachable from the roots; export it anyway, last.
    reached = set(ordered)
    ordered.extend(
        area_id
        for _, area_id in sorted((row.code, row.id) for row in links if row.id not in reached)
    )

    parent = aliased(Area)
    stmt = select(
        Area.id,
        Area.code,
        Area.name,
        Area.level,
        func.coalesce(parent.code, Area.parent_code).label("parent_code"),
        Area.population,
        Area.geom,
    ).outerjoin(parent, Area.parent_id == parent.id)
    for start in range(0, len(ordered), chunk_size):
        ids = ordered[start : start + chunk_size]
        by_id = {row.id: row for row in conn.execute(stmt.where(Area.id.in_(ids)))}
        rows = [by_id[area_id] for area_id in ids if area_id in by_id]
        geometry: list[BaseGeometry | None] = [row.geom for row in rows]
        columns: dict[str, list[Any]] = {
            "code": [row.code for row in rows],
            "name": [row.name for row in rows],
            "level": [row.level for row in rows],
            "parent_code": [row.parent_code for row in rows],
            "population": [row.population for row in rows],
        }
        if metrics is not None:
            for name in AREA_METRIC_FIELDS:
                columns[name] = [_metric_value(metrics.get(row.code, {}), name) for row in rows]
        yield _frame(
            "areas", columns, geometry, AREA_METRIC_FIELDS if metrics is not None else None
        )


def _incident_frames(conn: Connection, tz: tzinfo, chunk_size: int) -> _Frames:
    grid = aliased(Area)
    stmt = select(
        Incident.id.label("key"),
        Incident.source_id,
        Incident.occurred_at,
        Incident.category,
        Incident.source,
        Incident.status,
        grid.code.label("grid_code"),
        Incident.lon,
        Incident.lat,
    ).outerjoin(grid, Incident.grid_id == grid.id)
    for rows in _keyset_chunks(conn, stmt, Incident.id, chunk_size):
        yield _frame(
            "incidents",
            {
                "source_id": [row.source_id for row in rows],
                "occurred_at": [iso_utc(row.occurred_at) for row in rows],
                "occurred_local": [_iso_local(row.occurred_at, tz) for row in rows],
                "category": [row.category for row in rows],
                "source": [row.source for row in rows],
                "status": [row.status for row in rows],
                "grid_code": [row.grid_code for row in rows],
            },
            _points([row.lon for row in rows], [row.lat for row in rows]),
        )


def _camera_frames(conn: Connection, chunk_size: int) -> _Frames:
    grid = aliased(Area)
    stmt = select(
        Camera.id.label("key"),
        Camera.source_id,
        Camera.type,
        Camera.status,
        grid.code.label("grid_code"),
        Camera.lon,
        Camera.lat,
    ).outerjoin(grid, Camera.grid_id == grid.id)
    for rows in _keyset_chunks(conn, stmt, Camera.id, chunk_size):
        yield _frame(
            "cameras",
            {
                "source_id": [row.source_id for row in rows],
                "type": [row.type for row in rows],
                "status": [row.status for row in rows],
                "grid_code": [row.grid_code for row in rows],
            },
            _points([row.lon for row in rows], [row.lat for row in rows]),
        )


def _station_frames(conn: Connection, chunk_size: int) -> _Frames:
    stmt = select(Station.id.label("key"), Station.code, Station.name, Station.lon, Station.lat)
    for rows in _keyset_chunks(conn, stmt, Station.id, chunk_size):
        townships: dict[int, list[str]] = {}
        for station_id, code in conn.execute(
            select(StationTownship.station_id, Area.code)
            .join(Area, StationTownship.area_id == Area.id)
            .where(StationTownship.station_id.in_([row.key for row in rows]))
            .order_by(Area.code)
        ):
            townships.setdefault(station_id, []).append(code)
        yield _frame(
            "stations",
            {
                "code": [row.code for row in rows],
                "name": [row.name for row in rows],
                "township_codes": [";".join(townships.get(row.key, [])) for row in rows],
            },
            _points([row.lon for row in rows], [row.lat for row in rows]),
        )


def _ping_frames(conn: Connection, tz: tzinfo, chunk_size: int) -> _Frames:
    grid = aliased(Area)
    stmt = (
        select(
            PatrolPing.id.label("key"),
            PatrolTeam.code.label("team_code"),
            PatrolPing.ts,
            grid.code.label("grid_code"),
            PatrolPing.lon,
            PatrolPing.lat,
        )
        .join(PatrolTeam, PatrolPing.team_id == PatrolTeam.id)
        .outerjoin(grid, PatrolPing.grid_id == grid.id)
    )
    for rows in _keyset_chunks(conn, stmt, PatrolPing.id, chunk_size):
        yield _frame(
            "patrol_pings",
            {
                "team_id": [row.team_code for row in rows],
                "ts": [iso_utc(row.ts) for row in rows],
                "ts_local": [_iso_local(row.ts, tz) for row in rows],
                "grid_code": [row.grid_code for row in rows],
            },
            _points([row.lon for row in rows], [row.lat for row in rows]),
        )


def _write_layer(
    path: Path,
    layer: str,
    frames: _Frames,
    total: int,
    progress: ProgressCallback | None,
) -> int:
    options: dict[str, Any] = {
        "layer": layer,
        "driver": "GPKG",
        "geometry_type": LAYER_GEOMETRY[layer],
        "promote_to_multi": LAYER_GEOMETRY[layer].startswith("Multi"),
    }
    written = 0
    for frame in frames:
        pyogrio.write_dataframe(frame, path, append=written > 0, **options)
        written += len(frame)
        if progress is not None:
            progress(layer, written, total)
    if written == 0:
        pyogrio.write_dataframe(_frame(layer, {}, []), path, **options)
        if progress is not None:
            progress(layer, 0, 0)
    return written


def export_gpkg(
    engine: Engine,
    out_path: str | os.PathLike[str],
    tz: tzinfo,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    area_metrics: dict[str, dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Write areas, incidents, cameras, stations and patrol pings to one GeoPackage.

    The file is built next to ``out_path`` and moved over it when complete, so an existing
    file is replaced and a failed export leaves no half-written file behind.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The GridWatch database (SQLite or PostgreSQL), at the current schema revision.
    out_path : str or os.PathLike
        The ``.gpkg`` file to write; its directory must exist.
    tz : datetime.tzinfo
        Zone of the ``occurred_local`` / ``ts_local`` fields (``Settings.timezone``).
    chunk_size : int, default 100000
        Rows read and appended at a time.
    progress : callable, optional
        Called as ``progress(layer, rows_written, rows_total)`` after every chunk, and once
        with ``(layer, 0, 0)`` for an empty table.
    area_metrics : dict, optional
        Published metrics by area code (each with ``period``); their
        :data:`AREA_METRIC_FIELDS` are added to the ``areas`` layer.

    Returns
    -------
    dict of str to int
        Rows written per layer, in :data:`LAYER_FIELDS` order.

    Raises
    ------
    DatabaseError
        When the database cannot be reached or has no schema yet.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    try:
        revision = current_revision(engine)
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot read the database {database_label(engine)}: {exc.orig}"
        ) from exc
    if revision is None:
        raise DatabaseError(
            "the database has no schema yet: run `gridwatch db upgrade` and import data first"
        )
    out = Path(out_path)
    partial = out.with_name(f".{out.stem}.partial.gpkg")
    partial.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    tables = {
        "areas": Area,
        "incidents": Incident,
        "cameras": Camera,
        "stations": Station,
        "patrol_pings": PatrolPing,
    }
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # One snapshot for every layer, even while importers keep writing.
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            layers: dict[str, _Frames] = {
                "areas": _area_frames(conn, chunk_size, area_metrics),
                "incidents": _incident_frames(conn, tz, chunk_size),
                "cameras": _camera_frames(conn, chunk_size),
                "stations": _station_frames(conn, chunk_size),
                "patrol_pings": _ping_frames(conn, tz, chunk_size),
            }
            for layer, frames in layers.items():
                total = conn.execute(select(func.count()).select_from(tables[layer])).scalar_one()
                counts[layer] = _write_layer(partial, layer, frames, total, progress)
        os.replace(partial, out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return counts


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "LAYER_FIELDS",
    "LAYER_GEOMETRY",
    "ProgressCallback",
    "export_gpkg",
]
