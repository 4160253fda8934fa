"""County-wide steps of a run: patrol dosage, hot spots and forecasts.

These need every grid at once (a patrol crosses township borders, Gi* looks at neighbours,
a forecast is scored across the whole area), so they run when a run is finalised rather than
in the per-township tasks. Each returns plain frames that the engine merges into its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gridwatch.periods import PeriodKind, parse_period, period_of
from gridwatch.storage.db import epoch_seconds, read_frame
from gridwatch.storage.models import Area, Incident, PatrolPing, PatrolTeam
from gridwatch.storage.types import wkb_of

#: Period kinds that get Gi* and emerging-hot-spot classes (days are too short to be stable).
HOTSPOT_KINDS: tuple[PeriodKind, ...] = ("week", "month", "quarter", "year")
FORECAST_KINDS: tuple[PeriodKind, ...] = ("week", "month", "quarter")


@dataclass
class GridGeometry:
    """The leaf grids of the area tree as a GeoDataFrame (index = area id)."""

    frame: gpd.GeoDataFrame
    area_km2: pd.Series = field(default_factory=pd.Series)
    #: West, south, east, north; taken from the polygons unless given.
    bounds: tuple[float, float, float, float] | None = None

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """Return the grids' bounding box (west, south, east, north)."""
        if self.bounds is not None:
            return self.bounds
        west, south, east, north = (float(v) for v in self.frame.total_bounds)
        return west, south, east, north

    @classmethod
    def without_polygons(
        cls,
        ids: Sequence[int],
        area_km2: Sequence[float],
        bounds: tuple[float, ...],
        weights: Any,
    ) -> GridGeometry:
        """Describe grids by ids, areas, extent and contiguity alone (no polygons).

        Enough for hot spots, forecasts and the density surface, whose inputs these are.
        """
        index = pd.Index(np.asarray(ids, dtype=np.int64), name="id")
        frame = gpd.GeoDataFrame(geometry=[None] * len(index), index=index, crs="EPSG:4326")
        west, south, east, north = (float(v) for v in bounds)
        km2 = pd.Series(area_km2, index=index, dtype=float)
        grids = cls(frame, km2, (west, south, east, north))
        grids.__dict__["weights"] = weights
        return grids

    @classmethod
    def load(cls, session: Session, grid_ids: Sequence[int]) -> GridGeometry:
        """Load the polygons of ``grid_ids`` (grids without a polygon are left out)."""
        wanted = list(grid_ids)
        ids: list[int] = []
        wkbs: list[bytes] = []
        for start in range(0, len(wanted), 20_000):
            rows = session.execute(
                select(Area.id, wkb_of(Area.__table__.c.geom)).where(
                    Area.id.in_(wanted[start : start + 20_000]), Area.geom.is_not(None)
                )
            ).all()
            ids.extend(int(r[0]) for r in rows)
            wkbs.extend(bytes(r[1]) for r in rows)
        geometry = shapely.from_wkb(wkbs) if wkbs else []
        frame = gpd.GeoDataFrame({"id": ids}, geometry=geometry, crs="EPSG:4326").set_index("id")
        # Local equirectangular scale per grid: well under 1 % error at county size.
        geoms = frame.geometry.to_numpy()
        lat = shapely.get_y(shapely.centroid(geoms)) if len(geoms) else np.array([])
        km2 = shapely.area(geoms) * 111.32 * 110.57 * np.cos(np.radians(lat))
        return cls(frame, pd.Series(km2, index=frame.index, dtype=float))

    @cached_property
    def weights(self) -> Any:
        """Contiguity of the grids (built once; hot spots and forecasts share it)."""
        from gridwatch.workers.aggregate.hotspots import grid_adjacency

        return grid_adjacency(self.frame)


# -- patrol --------------------------------------------------------------------------------


def patrol_rows(
    session: Session, tz: ZoneInfo, kinds: Sequence[PeriodKind], as_of: datetime
) -> tuple[pd.DataFrame, dict[str, Any], pd.Series]:
    """Return grid × period patrol dosage rows and a team-activity summary.

    Returns
    -------
    rows : pandas.DataFrame
        ``area_id, period_kind, period, patrol_minutes, patrol_night_minutes, patrol_visits,
        patrol_teams``.
    teams : dict
        ``{"teams": [...], "inactive": n, "total": n}`` for the county's current row.
    since : pandas.Series
        Hours since a team was last present in each grid (grids never visited are absent).
    """
    from gridwatch.workers.aggregate.patrol import (
        grid_dosage,
        presence_segments,
        team_activity,
        time_since_last_visit,
    )

    # A plain scan (no ORDER BY, no NULLs) reads far faster than walking the (team, ts)
    # index; the pings are sorted here instead.
    pings = read_frame(
        session,
        select(
            PatrolPing.team_id,
            epoch_seconds(PatrolPing.ts),
            func.coalesce(PatrolPing.grid_id, -1),
        ),
        ["team_id", "ts", "grid_id"],
    )
    order = np.lexsort((pings["ts"].to_numpy(), pings["team_id"].to_numpy()))
    pings = pings.iloc[order].reset_index(drop=True)
    pings["ts"] = pd.to_datetime(pings["ts"].to_numpy(dtype=np.int64), unit="s", utc=True)
    pings["grid_id"] = pings["grid_id"].astype("Int64").mask(pings["grid_id"] < 0)
    teams = pd.DataFrame(
        session.execute(select(PatrolTeam.id, PatrolTeam.code, PatrolTeam.kind)).all(),
        columns=["id", "code", "kind"],
    ).set_index("id")
    segments = presence_segments(pings, tz=tz)
    parts = []
    for kind in kinds:
        dosage = grid_dosage(segments, kind)
        if dosage.empty:
            continue
        dosage = dosage.rename(columns={"grid_id": "area_id"}).assign(period_kind=kind)
        parts.append(dosage.drop(columns=["last_visit_at"]))
    columns = [
        "area_id",
        "period_kind",
        "period",
        "patrol_minutes",
        "patrol_night_minutes",
        "patrol_visits",
        "patrol_teams",
    ]
    rows = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    activity = team_activity(pings, teams, as_of, tz, segments=segments)
    since = time_since_last_visit(segments, as_of) if len(segments) else pd.Series(dtype=float)
    summary = {
        "total": int(len(activity)),
        "inactive": int(activity["inactive"].sum()) if len(activity) else 0,
        "teams": [
            {
                "code": str(r.code),
                "kind": str(r.kind),
                "active_days": int(r.active_days),
                "patrol_minutes_30d": round(float(r.patrol_minutes_30d), 1),
                "last_patrol_at": None
                if pd.isna(r.last_patrol_at)
                else pd.Timestamp(r.last_patrol_at).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "inactive": bool(r.inactive),
            }
            for r in activity.itertuples()
        ],
    }
    return rows, summary, since


def patrol_frames(
    session: Session, tz: ZoneInfo, kinds: Sequence[PeriodKind], as_of: datetime
) -> tuple[dict[str, pd.DataFrame], dict[str, Any], pd.DataFrame]:
    """Return patrol dosage per kind, the team-activity summary and each grid's last visit.

    Returns
    -------
    dosage : dict
        Period kind → ``area_id, period, patrol_minutes, patrol_night_minutes,
        patrol_visits, patrol_teams``.
    teams : dict
        As from :func:`patrol_rows`.
    last_visit : pandas.DataFrame
        ``area_id, last_visit_s``: when a team was last present (UTC epoch seconds).
    """
    rows, teams, since = patrol_rows(session, tz, kinds, as_of)
    dosage = {
        str(kind): frame.drop(columns=["period_kind"]).reset_index(drop=True)
        for kind, frame in rows.groupby("period_kind")
    }
    last_visit = pd.DataFrame(
        {
            "area_id": since.index.to_numpy(dtype=np.int64),
            "last_visit_s": as_of.timestamp() - 3600.0 * since.to_numpy(dtype=float),
        }
    )
    return dosage, teams, last_visit


# -- hot spots -----------------------------------------------------------------------------


def completed(labels: Sequence[str], today: date) -> list[str]:
    """Return the labels of periods that ended before ``today``, oldest first."""
    done = [label for label in labels if parse_period(label).end <= today]
    return sorted(done, key=lambda label: parse_period(label).start)


def period_matrix(
    series: pd.DataFrame, ids: Sequence[int], labels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dense grid × period matrices of reported incidents from count rows.

    Parameters
    ----------
    series : pandas.DataFrame
        ``area_id``, ``period`` (labels, plain or categorical) and ``incidents_reported``;
        one row per grid and period with incidents.
    ids : sequence of int
        Grid ids, the matrices' rows in order.
    labels : sequence of str, optional
        The periods wanted, the matrices' columns; by default every period in ``series``,
        sorted.

    Returns
    -------
    reported : numpy.ndarray
        Reported incidents.
    present : numpy.ndarray of bool
        Whether the grid has a row (any incident) in the period.
    labels : list of str
        The columns' periods.
    """
    if labels is not None and isinstance(series["period"].dtype, pd.CategoricalDtype):
        # only the rows of the wanted periods (often one period of a long series)
        categories = series["period"].cat.categories.astype(str)
        wanted = np.flatnonzero(categories.isin(list(labels)))
        series = series[np.isin(series["period"].cat.codes.to_numpy(), wanted)]
    period = series["period"]
    if isinstance(period.dtype, pd.CategoricalDtype):
        used = period.cat.remove_unused_categories()
        categories = used.cat.categories.astype(str).to_numpy()
        codes = used.cat.codes.to_numpy()
    else:
        categories, codes = np.unique(period.astype(str).to_numpy(), return_inverse=True)
    if labels is None:
        labels = sorted(str(c) for c in categories)
    column = pd.Index(list(labels)).get_indexer(categories)[codes] if len(codes) else codes
    row = pd.Index(list(ids)).get_indexer(series["area_id"].to_numpy(dtype=np.int64))
    known = (row >= 0) & (column >= 0)
    shape = (len(ids), len(labels))
    cell = row[known].astype(np.int64) * shape[1] + column[known]
    size = shape[0] * shape[1]
    weights = series["incidents_reported"].to_numpy(dtype=float)[known]
    reported = np.bincount(cell, weights=weights, minlength=size).reshape(shape)
    present = (np.bincount(cell, minlength=size) > 0).reshape(shape)
    return reported, present, list(labels)


def hotspot_frame(
    series: pd.DataFrame,
    grids: GridGeometry,
    kind: str,
    today: date,
    only: set[str] | None = None,
    classes: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Gi* per grid and period of one kind, and each grid's emerging-hot-spot class.

    Parameters
    ----------
    series : pandas.DataFrame
        Grid counts of the kind (``area_id``, ``period``, ``incidents_reported``).
    grids : GridGeometry
        The grids (their contiguity weights are used).
    kind : str
        The period kind; kinds outside :data:`HOTSPOT_KINDS` get nothing.
    today : datetime.date
        Periods ending after today are not part of the emerging-class history.
    only : set of str, optional
        Compute Gi* for these periods only (the class always uses the whole history).
    classes : pandas.Series, optional
        The emerging classes, when known to be unchanged (an incremental run whose changed
        periods have not ended): they are returned as given instead of recomputed.

    Returns
    -------
    rows : pandas.DataFrame
        ``area_id, period, gi_star_z, gi_star_p, gi_star_q, hotspot`` for every (grid,
        period) with data or a significant result.
    classes : pandas.Series
        Emerging class per grid id.
    """
    from gridwatch.workers.aggregate.hotspots import emerging_hotspots, gi_star_periods

    empty = pd.DataFrame(), pd.Series(dtype=object)
    if kind not in HOTSPOT_KINDS or len(grids.frame) < 3 or series.empty:
        return empty
    weights = grids.weights
    ids = list(weights.id_order)
    if classes is None:
        reported, present, all_labels = period_matrix(series, ids)
        classes = pd.Series("none", index=ids, dtype=object)
        history = completed(all_labels, today)
        if len(history) >= 2:
            matrix = pd.DataFrame(reported, index=ids, columns=all_labels)
            classes = emerging_hotspots(matrix[history], weights).reindex(ids).fillna("none")
        labels = [c for c in all_labels if only is None or c in only]
        wanted = pd.Index(all_labels).get_indexer(labels)
        reported, present = reported[:, wanted], present[:, wanted]
    else:
        classes = classes.reindex(ids).fillna("none")
        labels = sorted(only or ())
        reported, present, labels = period_matrix(series, ids, labels)
    if not labels:
        return pd.DataFrame(), classes
    result = gi_star_periods(pd.DataFrame(reported, index=ids, columns=labels), weights)
    # Keep a (grid, period) when it has data or a significant result.
    grid, period = np.nonzero(result["significant"] | present)
    rows = pd.DataFrame(
        {
            "area_id": np.asarray(ids, dtype=np.int64)[grid],
            "period": np.asarray(labels, dtype=object)[period],
            "gi_star_z": result["gi_star_z"][grid, period].round(4),
            "gi_star_p": result["gi_star_p"][grid, period].round(6),
            "gi_star_q": result["gi_star_q"][grid, period].round(6),
            "hotspot": result["hotspot"][grid, period],
        }
    )
    return rows, classes


# -- forecasts -----------------------------------------------------------------------------


def daily_matrix(
    session: Session, grid_ids: Sequence[int], tz: ZoneInfo, before: date
) -> pd.DataFrame:
    """Count reported incidents per grid and local day, up to ``before`` (excluded)."""
    frame = read_frame(
        session,
        select(Incident.grid_id, epoch_seconds(Incident.occurred_at)).where(
            Incident.grid_id.is_not(None), Incident.source != "patrol"
        ),
        ["grid_id", "occurred_at"],
    )
    if frame.empty:
        return pd.DataFrame(index=list(grid_ids))
    seconds = frame["occurred_at"].to_numpy(dtype=np.int64)
    local = pd.DatetimeIndex(pd.to_datetime(seconds, unit="s", utc=True)).tz_convert(tz)
    frame["day"] = local.tz_localize(None).normalize()
    frame = frame[frame["day"] < pd.Timestamp(before)]
    counts = frame.groupby(["grid_id", "day"]).size().unstack(fill_value=0)
    if counts.empty:
        return pd.DataFrame(index=list(grid_ids))
    days = pd.date_range(counts.columns.min(), pd.Timestamp(before) - timedelta(days=1))
    counts = counts.reindex(index=list(grid_ids), columns=days, fill_value=0).fillna(0)
    counts.columns = [pd.Timestamp(d).date() for d in counts.columns]
    return counts.astype(float)


def next_periods(today: date) -> dict[str, str]:
    """Return the label of the period after the current one, per forecast kind."""
    return {kind: period_of(today, kind).next().label for kind in FORECAST_KINDS}


def forecast_rows(
    daily: pd.DataFrame, grids: GridGeometry, today: date, neighbours: dict[int, list[int]] | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Forecast the next week, month and quarter per grid, and back-test the model.

    Returns
    -------
    rows : pandas.DataFrame
        Index = grid id; columns ``forecast_next_week``, ``forecast_next_month``,
        ``forecast_next_quarter``.
    scorecard : dict
        Back-test of the model against "last period's counts" for 7- and 28-day windows.
    """
    from gridwatch.workers.aggregate.forecast import backtest, forecast_counts, rolling_origins

    out = pd.DataFrame(index=daily.index)
    scorecard: dict[str, Any] = {"targets": next_periods(today)}
    if daily.shape[1] < 56:
        scorecard["note"] = "fewer than 56 days of history: no forecast"
        return out, scorecard
    for kind, label in scorecard["targets"].items():
        period = parse_period(label)
        expected = forecast_counts(
            daily, period.start, (period.end - period.start).days, neighbours=neighbours
        )
        out[f"forecast_next_{kind}"] = expected.reindex(out.index).round(3)
    area = grids.area_km2.reindex(daily.index).fillna(grids.area_km2.median())
    for window in (7, 28):
        try:
            origins = rolling_origins(daily, window, count=6)
            scorecard[f"{window}d"] = backtest(daily, area, window, origins, neighbours=neighbours)
        except ValueError as exc:  # too little history for this window
            scorecard[f"{window}d"] = {"error": str(exc)}
    return out, scorecard


def neighbours_of(grids: GridGeometry) -> dict[int, list[int]] | None:
    """Return each grid's contiguity neighbours (for the near-repeat term)."""
    if len(grids.frame) < 3:
        return None
    return {int(k): [int(n) for n in v] for k, v in grids.weights.neighbors.items()}


def local_today(tz: ZoneInfo) -> date:
    """Return today's date in the configured zone."""
    return datetime.now(UTC).astimezone(tz).date()


#: Days of reported incidents behind the density surface of the heat maps.
DENSITY_DAYS = 90


def density_since(tz: ZoneInfo, today: date, days: int = DENSITY_DAYS) -> datetime:
    """Return the instant the density surface's window of ``days`` days starts."""
    return datetime.combine(today - timedelta(days=days), datetime.min.time(), tzinfo=tz)


def density_points(session: Session, since: datetime) -> pd.DataFrame:
    """Read the reported incidents behind the density surface: ``area_id, lon, lat``."""
    return read_frame(
        session,
        select(Incident.grid_id, Incident.lon, Incident.lat).where(
            Incident.occurred_at >= since,
            Incident.source != "patrol",
            Incident.grid_id.is_not(None),
        ),
        ["area_id", "lon", "lat"],
    )


def density_part(grids: GridGeometry, points: pd.DataFrame) -> pd.DataFrame | None:
    """Kernel density of reported incidents (:func:`density_points`), for the heat maps.

    Returns
    -------
    pandas.DataFrame or None
        One row per raster row (north to south) with ``density`` (points per km², a list per
        row) and the raster's ``west, south, east, north`` on every row; ``None`` without
        grids.
    """
    from gridwatch.workers.aggregate.hotspots import kde_surface

    if grids.frame.empty:
        return None
    lon = points["lon"].to_numpy(dtype=float)
    lat = points["lat"].to_numpy(dtype=float)
    west, south, east, north = grids.extent
    width_m = (east - west) * 111_320.0 * np.cos(np.radians((south + north) / 2.0))
    height_m = (north - south) * 110_570.0
    cell_m = max(200.0, float(np.sqrt(max(width_m * height_m, 1.0) / 250_000.0)))
    density, bounds = kde_surface(
        lon, lat, (west, south, east, north), cell_m=cell_m, bandwidth_m=max(500.0, 2.5 * cell_m)
    )
    return pd.DataFrame(
        {
            "density": [row.astype(np.float32) for row in density],
            "west": bounds[0],
            "south": bounds[1],
            "east": bounds[2],
            "north": bounds[3],
        }
    )
