"""The maps' data: the published run's metrics and layers joined to area geometry.

Every function takes the set of area ids the caller may see (a jurisdiction, possibly narrowed
to one area's subtree) and returns only those areas: the map of a township user holds their
own grids in every layer, and the GeoJSON answers of the API likewise. The results are plain
GeoDataFrames and dicts for :mod:`gridwatch.maps` and the JSON API.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine, select

from gridwatch.maps.builder import MapData, empty_frame
from gridwatch.maps.cameras import camera_payload
from gridwatch.maps.heat import DensityRaster, WeeklyCounts, weekly_heat_payload
from gridwatch.maps.layers import feature_collection
from gridwatch.maps.tracks import track_payload
from gridwatch.periods import Period, parse_period, period_of
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import AggregationRun, Area, Camera, PatrolPing, PatrolTeam
from gridwatch.workers import blocks
from gridwatch.workers.engine import (
    latest_published_run_id,
    published_run_query,
    read_layer,
    read_metrics,
)

#: Metric columns the maps use, taken from the published metric objects.
MAP_COLUMNS = (
    "incidents_total",
    "incidents_per_1000",
    "forecast_next",
    "camera_coverage_pct",
    "blind_spot_incident_pct",
    "patrol_minutes",
    "patrol_night_minutes",
    "patrol_visits",
    "hours_since_last_visit",
    "gi_star_z",
    "gi_star_q",
    "hotspot",
    "hotspot_class",
)
#: Weeks of the heat layer's time slider.
HEAT_WEEKS = 8
#: Days of patrol tracks on the map (up to the end of the period, or today).
TRACK_DAYS = 7
#: Columns of the camera layer's rows, as :func:`gridwatch.maps.cameras.camera_payload` reads.
CAMERA_COLUMNS = (
    "id",
    "name",
    "lon",
    "lat",
    "status",
    "type",
    "resolution",
    "direction_deg",
    "fov_deg",
    "range_m",
)
#: Properties of a hot-spot feature in the API.
HOTSPOT_PROPERTIES = (
    "code",
    "name",
    "hotspot",
    "gi_star_z",
    "gi_star_q",
    "hotspot_class",
    "incidents_total",
)


def published_run_id(engine: Engine) -> int | None:
    """Return the id of the run whose results the maps show (``None`` before the first)."""
    with session_scope(engine) as session:
        return latest_published_run_id(session)


def published_run_stamp(engine: Engine) -> tuple[int | None, str | None]:
    """Return the id of the run the maps show and when it was published (ISO text).

    Both, for keys of caches shared between processes: ids start again at 1 in a database
    built anew, the moment of publishing does not.
    """
    with session_scope(engine) as session:
        row = session.execute(
            published_run_query().add_columns(AggregationRun.published_at)
        ).first()
    if row is None:
        return None, None
    return row[0], row[1].isoformat() if row[1] is not None else None


def area_frame(engine: Engine, area_ids: Iterable[int], level: str) -> gpd.GeoDataFrame:
    """Return the areas of ``level`` among ``area_ids``: ``id, code, name, geometry`` by code."""
    wanted = set(area_ids)
    with session_scope(engine) as session:
        rows = [
            row
            for row in session.execute(
                select(Area.id, Area.code, Area.name, Area.geom)
                .where(Area.level == level)
                .order_by(Area.code)
            )
            if row.id in wanted and row.geom is not None
        ]
    return gpd.GeoDataFrame(
        {
            "id": [r.id for r in rows],
            "code": [r.code for r in rows],
            "name": [r.name for r in rows],
        },
        geometry=[r.geom for r in rows],
        crs="EPSG:4326",
    )


def _metric_table(rows: list[dict[str, Any]], group: str | None) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "code": [r["area_code"] for r in rows],
            **{column: [r.get(column) for r in rows] for column in MAP_COLUMNS},
        }
    )
    if group is None:
        table["incidents"] = table["incidents_total"]
    else:
        table["incidents"] = [r.get("incidents_by_group", {}).get(group, 0) for r in rows]
    return table


def with_metrics(
    engine: Engine, frame: gpd.GeoDataFrame, level: str, period: str, group: str | None = None
) -> gpd.GeoDataFrame:
    """Join the published metrics of ``period`` to the areas of ``frame`` (all of ``level``).

    ``incidents`` is the count of the category ``group`` (all incidents without one).
    """
    rows = read_metrics(engine, level, period)
    wanted = set(frame["code"])
    table = _metric_table([r for r in rows if r["area_code"] in wanted], group)
    if table.empty:
        table = pd.DataFrame(columns=["code", *MAP_COLUMNS, "incidents"])
    merged = frame.merge(table, on="code", how="left")
    return gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")


def blind_spot_frame(engine: Engine, grids: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Return the uncovered part of each of ``grids`` (which carry ``id``, ``code``, ``name``).

    Keeps ``camera_coverage_pct`` when ``grids`` has it.
    """
    layer = read_layer(engine, "blind_spots")
    columns = ["id", "code", "name"] + (
        ["camera_coverage_pct"] if "camera_coverage_pct" in grids.columns else []
    )
    if layer.empty or grids.empty:
        return empty_frame(columns)
    joined = pd.DataFrame(grids[columns]).merge(
        layer.rename(columns={"area_id": "id"}), on="id", how="inner"
    )
    joined = joined[~shapely.is_empty(joined["geometry"].to_numpy())]
    return gpd.GeoDataFrame(joined, geometry="geometry", crs="EPSG:4326")


def density_raster(engine: Engine, grids: gpd.GeoDataFrame) -> DensityRaster | None:
    """Return the run's density raster with every cell outside ``grids`` set to 0.

    A cell belongs to the map when its centre lies in one of ``grids``.
    """
    layer = read_layer(engine, "density")
    if layer.empty or grids.empty:
        return None
    values = np.vstack([np.asarray(row, dtype=float) for row in layer["density"]])
    first = layer.iloc[0]
    raster = DensityRaster(
        values,
        float(first["west"]),
        float(first["south"]),
        float(first["east"]),
        float(first["north"]),
    )
    lon, lat = raster.cell_centres()
    xx, yy = np.meshgrid(lon, lat)
    points = shapely.points(xx.ravel(), yy.ravel())
    tree = shapely.STRtree(np.asarray(grids.geometry.values, dtype=object))
    hits = tree.query(points, predicate="intersects")
    inside = np.zeros(points.size, dtype=bool)
    inside[hits[0]] = True
    masked = np.where(inside.reshape(values.shape), values, 0.0)
    return DensityRaster(masked, raster.west, raster.south, raster.east, raster.north)


def period_last_day(period: str, today: date) -> date:
    """Return the last day of ``period`` that has happened (``today`` for the current one)."""
    return min(parse_period(period).end - timedelta(days=1), today)


def last_weeks(period: str, today: date, count: int = HEAT_WEEKS) -> list[Period]:
    """Return the ``count`` ISO weeks that end ``period``, oldest first.

    For a period still running (it ends after ``today``) they are the last complete weeks,
    so the slider never opens on a week only begun; for a past period, the last is the week
    of its last day.
    """
    target = parse_period(period)
    if target.end > today:
        week = period_of(today, "week").previous()
    else:
        week = period_of(target.end - timedelta(days=1), "week")
    weeks = [week]
    for _ in range(count - 1):
        weeks.append(weeks[-1].previous())
    return weeks[::-1]


def weekly_counts(
    engine: Engine,
    grids: gpd.GeoDataFrame,
    period: str,
    today: date,
    group: str | None = None,
    count: int = HEAT_WEEKS,
) -> WeeklyCounts | None:
    """Return the published incident counts of ``grids`` in the last weeks of ``period``.

    Counts come from the run's weekly grid blocks (incidents of the category ``group``, all
    incidents without one), one point per grid at its representative point: pre-binned, so
    no incident and no neighbour's count reaches the map. ``None`` before the first run or
    without grids.
    """
    if grids.empty:
        return None
    weeks = last_weeks(period, today, count)
    ids = grids["id"].to_numpy()
    counts = np.zeros((len(weeks), len(ids)))
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        if run_id is None:
            return None
        run = session.get(AggregationRun, run_id)
        groups: dict[str, list[str]] = dict(run.extras.get("groups", {})) if run else {}
        for row, week in enumerate(weeks):
            block = blocks.read_block(session, run_id, "grid", week.label)
            if block is None:
                continue
            if group is None:
                values = block["incidents_total"]
            else:
                columns = [f"cat:{c}" for c in groups.get(group, []) if f"cat:{c}" in block]
                values = block[columns].sum(axis=1) if columns else block["incidents_total"] * 0
            counts[row] = values.reindex(ids).fillna(0.0).to_numpy(dtype=float)
    points = grids.geometry.representative_point()
    last = [w.end - timedelta(days=1) for w in weeks]
    labels = [
        f"{w.label} ({w.start:%m-%d} – {end:%m-%d})" for w, end in zip(weeks, last, strict=True)
    ]
    return WeeklyCounts(points.x.to_numpy(), points.y.to_numpy(), labels, counts)


def _grid_ids(engine: Engine, area_ids: Iterable[int]) -> set[int]:
    wanted = set(area_ids)
    with session_scope(engine) as session:
        grids = session.scalars(select(Area.id).where(Area.level == "grid"))
        return {area_id for area_id in grids if area_id in wanted}


def camera_frame(engine: Engine, area_ids: Iterable[int]) -> pd.DataFrame:
    """Return the cameras inside the grids among ``area_ids`` (:data:`CAMERA_COLUMNS`).

    A camera belongs to the grid that contains it; cameras outside every grid are on no map.
    """
    grid_ids = _grid_ids(engine, area_ids)
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                Camera.grid_id,
                Camera.source_id.label("id"),
                Camera.name,
                Camera.lon,
                Camera.lat,
                Camera.status,
                Camera.type,
                Camera.resolution,
                Camera.direction_deg,
                Camera.fov_deg,
                Camera.range_m,
            ).order_by(Camera.source_id)
        ).all()
    frame = pd.DataFrame(rows, columns=["grid_id", *CAMERA_COLUMNS])
    return frame[frame["grid_id"].isin(grid_ids)][list(CAMERA_COLUMNS)].reset_index(drop=True)


def cameras_json(engine: Engine, area_ids: Iterable[int]) -> dict[str, Any]:
    """Return the camera layer's payload for the grids among ``area_ids``."""
    return camera_payload(camera_frame(engine, area_ids))


def track_window(period: str, today: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the UTC span of the patrol tracks shown: :data:`TRACK_DAYS` to the period's end.

    The span ends at the end of the period's last day that has happened (today's end for the
    current period), in local time.
    """
    end_day = period_last_day(period, today) + timedelta(days=1)
    end = datetime.combine(end_day, datetime.min.time(), tzinfo=tz).astimezone(UTC)
    return end - timedelta(days=TRACK_DAYS), end


def patrol_pings(
    engine: Engine, area_ids: Iterable[int], start: datetime, end: datetime, tz: ZoneInfo
) -> pd.DataFrame:
    """Return the pings in ``[start, end)`` inside the grids among ``area_ids``.

    Columns ``team_code``, ``team_name``, ``ts`` (local time in ``tz``), ``lon``, ``lat``. A
    team's patrol through a neighbour's grids is cut where it leaves the user's grids: those
    pings are the neighbour's to see.
    """
    grid_ids = _grid_ids(engine, area_ids)
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                PatrolPing.grid_id,
                PatrolTeam.code,
                PatrolTeam.name,
                PatrolPing.ts,
                PatrolPing.lon,
                PatrolPing.lat,
            )
            .join(PatrolTeam, PatrolTeam.id == PatrolPing.team_id)
            .where(PatrolPing.ts >= start, PatrolPing.ts < end)
        ).all()
    frame = pd.DataFrame(rows, columns=["grid_id", "team_code", "team_name", "ts", "lon", "lat"])
    frame = frame[frame["grid_id"].isin(grid_ids)].drop(columns="grid_id")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.tz_convert(tz)
    return frame.reset_index(drop=True)


def tracks_json(
    engine: Engine, area_ids: Iterable[int], period: str, today: date, tz: ZoneInfo
) -> dict[str, Any]:
    """Return the patrol-track layer's payload: simplified tracks per team, never pings."""
    start, end = track_window(period, today, tz)
    return track_payload(patrol_pings(engine, area_ids, start, end, tz))


def polygon_data(
    engine: Engine, area_ids: Iterable[int], level: str, period: str, group: str | None = None
) -> MapData:
    """Return the choropleth's areas of ``level`` and the grids, with the metrics of ``period``.

    What :func:`gridwatch.maps.builder.polygon_collection` needs (no other layer is read);
    when ``level`` is ``grid`` the two frames are one object.
    """
    ids = set(area_ids)
    grids = with_metrics(engine, area_frame(engine, ids, "grid"), "grid", period, group)
    areas = (
        grids
        if level == "grid"
        else with_metrics(engine, area_frame(engine, ids, level), level, period, group)
    )
    return MapData(areas=areas, grids=grids, blind_spots=empty_frame())


def map_data(
    engine: Engine,
    area_ids: Iterable[int],
    level: str,
    period: str,
    group: str | None = None,
    raster_heat: bool = True,
    today: date | None = None,
    blind_spots: bool = True,
    weekly: bool = True,
) -> MapData:
    """Read everything the main map shows for the areas ``area_ids``.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    area_ids : iterable of int
        The areas the map may show (jurisdiction and area filter applied).
    level : str
        Level of the choropleth's areas.
    period : str
        Period of the metrics, e.g. ``2026Q3``.
    group : str, optional
        Category group whose incidents are counted (all incidents without one).
    raster_heat : bool
        Draw the heat layer from the run's density raster (recent incidents of every
        category) rather than from the grids' counts of ``period``. Without a group only, and
        only for users who may see the whole raster: the kernel spreads incidents across
        boundaries.
    today : datetime.date, optional
        The local day (default: the machine's), which ends the weeks of the heat slider in
        the current period.
    blind_spots : bool
        Read the blind-spot polygons (``False`` when the page fetches them from a URL).
    weekly : bool
        Read the weeks of the heat slider (``False`` when the page fetches them from a URL:
        :func:`weekly_heat_json`).

    Cameras and patrol tracks are not read here: they are fetched by the page when their
    layers are first switched on (:func:`cameras_json`, :func:`tracks_json`).
    """
    ids = set(area_ids)
    polygons = polygon_data(engine, ids, level, period, group)
    areas, grids = polygons.areas, polygons.grids
    use_raster = raster_heat and group is None
    return MapData(
        areas=areas,
        grids=grids,
        blind_spots=blind_spot_frame(engine, grids) if blind_spots else empty_frame(),
        density=density_raster(engine, grids) if use_raster else None,
        heat_from_grids=not use_raster,
        weekly_heat=weekly_counts(engine, grids, period, today or date.today(), group)
        if weekly
        else None,
    )


def weekly_heat_json(
    engine: Engine, area_ids: Iterable[int], period: str, today: date, group: str | None = None
) -> dict[str, Any]:
    """Return the heat slider's payload for the grids among ``area_ids`` (no weeks before a run).

    See :func:`weekly_counts` and :func:`gridwatch.maps.heat.weekly_heat_payload`.
    """
    grids = area_frame(engine, area_ids, "grid")
    weekly = weekly_counts(engine, grids, period, today, group)
    return weekly_heat_payload(weekly) if weekly is not None else {"points": [], "weeks": []}


def metrics_geojson(
    engine: Engine, area_ids: Iterable[int], level: str, period: str
) -> dict[str, Any]:
    """Return the published metric objects of ``level`` and ``period`` as GeoJSON features.

    Each feature's properties are the object of ``gridwatch metrics --json`` plus ``name``.
    """
    frame = area_frame(engine, area_ids, level)
    rows = {r["area_code"]: r for r in read_metrics(engine, level, period)}
    properties = [
        {"name": name, **rows.get(code, {})}
        for code, name in zip(frame["code"], frame["name"], strict=True)
    ]
    frame = frame.assign(_properties=properties)
    collection = feature_collection(frame, ["_properties"])
    for feature in collection["features"]:
        feature["properties"] = feature["properties"]["_properties"]
    return collection


def hotspots_geojson(engine: Engine, area_ids: Iterable[int], period: str) -> dict[str, Any]:
    """Return the grids that are significant Gi* hot or cold spots in ``period`` as GeoJSON."""
    grids = with_metrics(engine, area_frame(engine, area_ids, "grid"), "grid", period)
    significant = grids[grids["hotspot"].astype(str).str.match(r"^(hot|cold)_\d+$")]
    return feature_collection(significant, list(HOTSPOT_PROPERTIES))


def blind_spots_geojson(engine: Engine, area_ids: Iterable[int]) -> dict[str, Any]:
    """Return the part of each visible grid that no working camera sees, as GeoJSON."""
    spots = blind_spot_frame(engine, area_frame(engine, area_ids, "grid"))
    return feature_collection(spots, ["code", "name"])


__all__ = [
    "MAP_COLUMNS",
    "area_frame",
    "blind_spot_frame",
    "blind_spots_geojson",
    "camera_frame",
    "cameras_json",
    "density_raster",
    "last_weeks",
    "patrol_pings",
    "track_window",
    "tracks_json",
    "weekly_counts",
    "weekly_heat_json",
    "hotspots_geojson",
    "map_data",
    "metrics_geojson",
    "polygon_data",
    "published_run_id",
    "with_metrics",
]
