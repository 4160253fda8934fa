"""Camera coverage per grid: view sectors, covered share, blind spots and camera health counts.

Pure functions on plain data (pandas, GeoPandas, NumPy, Shapely); the engine loads cameras,
grids and incidents and calls them. Coordinates are WGS84 longitude / latitude throughout.

Geometry in metres
------------------
Views are built in a local metric frame at each camera: metres per degree of longitude and
latitude on the WGS84 ellipsoid at the camera's latitude (:func:`metres_per_degree`). Across a
view of 2 km the scale changes by less than 0.01 %, so a sector is exact to far better than
its own polygonal approximation (:data:`SEGMENTS_PER_QUARTER_CIRCLE`: an inscribed polygon
with 64 sides holds 99.84 % of the circle's area).

Areas (:func:`area_m2`) scale each polygon's area in square degrees by the ellipsoid's area
element at the polygon's centroid latitude. The area element varies smoothly with latitude and
the centroid cancels its first-order change, so the area is slightly too large, by about half
the variance of the latitude (in radians) over the polygon: 3e-8 for a grid 5 km across, 3e-6
for a whole county 50 km across (checked against the exact ellipsoidal integral in the
tests). The straight edges are the edges drawn in longitude / latitude, which is what the
stored polygons mean.

Which points a camera sees
--------------------------
A point is seen when it *intersects* a working camera's view polygon: inside it or on its
boundary. ``contains`` would exclude the boundary, and the camera's own position is the apex of
its sector (a boundary vertex), so an incident recorded at the camera's junction would count as
a blind-spot incident. :func:`points_outside_views` answers exactly what
``shapely.intersects`` over all views answers: NumPy prefilters (a cell table, bounding boxes,
and an inner and an outer disc per view, all with safety margins) settle the clear cases and
GEOS decides every point near a view's edge.

Speed
-----
:func:`grid_coverage` unions each cluster of overlapping views once (not all views at once, and
not once per grid) and then takes one vectorised difference per grid. On the synthetic city of
``bench/bench_coverage.py`` (5,000 grids of ~100 vertices, 15,000 views, 1,000,000 incidents)
views, coverage and blind-spot flags together take about 1.2 s on one core. Both functions
first drop the views whose bounding box misses the grids (or points) they are given, so a call
for one township costs what its own cameras cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

#: Camera status whose view counts as coverage; ``offline`` and ``broken`` cameras are counted
#: but see nothing.
WORKING_STATUS = "online"
CAMERA_STATUSES = ("online", "offline", "broken")
CAMERA_TYPES = ("checkpoint", "hd", "standard", "private")

#: Straight segments per 90° of arc in a view polygon (64 for a full circle). The polygon is
#: inscribed: its area is 99.84 % of the circle's and its edges lie at most 0.12 % of the radius
#: inside the arc (6 cm at 50 m).
SEGMENTS_PER_QUARTER_CIRCLE = 16

#: Columns of :func:`camera_counts`, in order.
CAMERA_COUNT_COLUMNS = (
    "cameras_total",
    "cameras_working",
    "cameras_offline",
    "cameras_broken",
    *(f"cameras_{camera_type}" for camera_type in CAMERA_TYPES),
)

_WGS84_SEMI_MAJOR_AXIS_M = 6_378_137.0
_WGS84_ECCENTRICITY_SQUARED = 0.00669437999014
_RADIANS_PER_DEGREE = math.pi / 180.0
# Points handled per step of points_outside_views: bounds the (point, view) candidate arrays.
_POINT_CHUNK = 262_144
# Most cells in the point index's table (12 bytes each) and most (cell, view) entries in it
# (4 bytes each); beyond them the cells grow.
_MAX_CELLS = 4_000_000
_MAX_CELL_ENTRIES = 8_000_000
# Safety margin of the point index's discs, in (scaled) degrees: about 0.1 mm, while the
# rounding it guards against is below 1e-13 degrees.
_DISC_MARGIN = 1e-9


def metres_per_degree(lat: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return metres per degree of longitude (east) and of latitude (north) at ``lat``.

    Exact on the WGS84 ellipsoid: the parallel's radius ``N cos φ`` and the meridian's radius of
    curvature ``M``, times π / 180.

    Parameters
    ----------
    lat : array_like
        Latitudes in degrees.

    Returns
    -------
    east, north : numpy.ndarray
        Metres per degree of longitude and of latitude.
    """
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    one_minus_e2_sin2 = 1.0 - _WGS84_ECCENTRICITY_SQUARED * np.sin(phi) ** 2
    prime_vertical = _WGS84_SEMI_MAJOR_AXIS_M / np.sqrt(one_minus_e2_sin2)
    meridional = (
        _WGS84_SEMI_MAJOR_AXIS_M * (1.0 - _WGS84_ECCENTRICITY_SQUARED) / one_minus_e2_sin2**1.5
    )
    east = prime_vertical * np.cos(phi) * _RADIANS_PER_DEGREE
    north = meridional * _RADIANS_PER_DEGREE
    return east, north


def area_m2(geometries: ArrayLike, reference_lat: ArrayLike | None = None) -> NDArray[np.float64]:
    """Return the area in square metres of WGS84 polygons.

    Each area in square degrees is scaled by the ellipsoid's area element at the polygon's
    centroid latitude (or at ``reference_lat``); see the module notes for the error (below
    1e-7 for a grid a few kilometres across).

    Parameters
    ----------
    geometries : array_like of shapely geometries
        Polygons or MultiPolygons in longitude / latitude; ``None`` and empty give 0.
    reference_lat : array_like, optional
        Latitude at which to take the scale, one per geometry. Pass a grid's centroid latitude
        for the pieces of that grid so that the pieces' areas add up to the grid's.

    Returns
    -------
    numpy.ndarray
        Areas in m².
    """
    geometries = np.asarray(geometries, dtype=object)
    if reference_lat is None:
        reference_lat = _centroid_lat(geometries)
    east, north = metres_per_degree(reference_lat)
    area = shapely.area(geometries) * east * north
    return np.nan_to_num(area, nan=0.0)


def _centroid_lat(geometries: NDArray[np.object_]) -> NDArray[np.float64]:
    """Return each geometry's centroid latitude, NaN for ``None`` and empty geometries."""
    lat = np.full(geometries.size, np.nan)
    present = np.array([shape is not None for shape in geometries], dtype=bool)
    present[present] = ~shapely.is_empty(geometries[present])
    lat[present] = shapely.get_y(shapely.centroid(geometries[present]))
    return lat


def _numeric_column(frame: pd.DataFrame, column: str) -> NDArray[np.float64]:
    """Return ``frame[column]`` as floats, NaN where missing (or an all-NaN array if absent)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def camera_views(cameras: pd.DataFrame, default_radius_m: float = 50.0) -> NDArray[np.object_]:
    """Build each working camera's field of view as a WGS84 polygon.

    A camera sees a sector of radius ``range_m`` and angle ``fov_deg`` centred on
    ``direction_deg`` (compass bearing: 0 = north, 90 = east, clockwise), with the camera at the
    apex. When the direction or the angle is unknown, or the angle is 360° or more, it sees a
    full circle. An unknown, zero or negative range means ``default_radius_m``. Arcs are drawn
    with :data:`SEGMENTS_PER_QUARTER_CIRCLE` segments per 90°.

    Parameters
    ----------
    cameras : pandas.DataFrame
        Columns ``lon``, ``lat`` (WGS84), ``status`` (``online`` / ``offline`` / ``broken``);
        optional ``direction_deg``, ``fov_deg``, ``range_m`` (NaN or None when unknown).
    default_radius_m : float, default 50.0
        Radius of a view whose range is unknown.

    Returns
    -------
    numpy.ndarray
        Object array aligned with ``cameras``' rows: a shapely Polygon for each working
        (``online``) camera with coordinates, ``None`` for the others.
    """
    if not default_radius_m > 0:
        raise ValueError(f"default_radius_m must be positive, got {default_radius_m!r}")
    views = np.full(len(cameras), None, dtype=object)
    lon = _numeric_column(cameras, "lon")
    lat = _numeric_column(cameras, "lat")
    working = (
        cameras["status"].eq(WORKING_STATUS).fillna(False).to_numpy(dtype=bool)
        & np.isfinite(lon)
        & np.isfinite(lat)
    )
    camera_rows = np.flatnonzero(working)
    if camera_rows.size == 0:
        return views
    lon, lat = lon[camera_rows], lat[camera_rows]
    direction = _numeric_column(cameras, "direction_deg")[camera_rows]
    fov = _numeric_column(cameras, "fov_deg")[camera_rows]
    radius = _numeric_column(cameras, "range_m")[camera_rows]
    radius = np.where(np.isfinite(radius) & (radius > 0), radius, default_radius_m)
    full_circle = ~np.isfinite(direction) | ~np.isfinite(fov) | (fov >= 360.0) | (fov <= 0.0)
    fov = np.where(full_circle, 360.0, fov)
    direction = np.where(full_circle, 0.0, direction)

    # Ring layout. A circle: arc vertices 0..n-1 and a closing copy of vertex 0 (n + 1 points).
    # A sector: apex, arc vertices 0..n, apex again (n + 3 points).
    segments = np.where(
        full_circle,
        4 * SEGMENTS_PER_QUARTER_CIRCLE,
        np.maximum(2, np.ceil(fov * SEGMENTS_PER_QUARTER_CIRCLE / 90.0 - 1e-9)).astype(np.int64),
    )
    points_per_ring = np.where(full_circle, segments + 1, segments + 3)
    ring_of_point = np.repeat(np.arange(camera_rows.size), points_per_ring)
    position = np.arange(ring_of_point.size) - np.repeat(
        np.cumsum(points_per_ring) - points_per_ring, points_per_ring
    )
    circle_point = full_circle[ring_of_point]
    point_segments = segments[ring_of_point]
    arc_step = np.where(circle_point, position % point_segments, position - 1)
    is_apex = ~circle_point & ((position == 0) | (position == point_segments + 2))
    bearing = np.radians(
        direction[ring_of_point]
        - fov[ring_of_point] / 2.0
        + fov[ring_of_point] * arc_step / point_segments
    )
    distance = np.where(is_apex, 0.0, radius[ring_of_point])
    east, north = metres_per_degree(lat)
    x = lon[ring_of_point] + distance * np.sin(bearing) / east[ring_of_point]
    y = lat[ring_of_point] + distance * np.cos(bearing) / north[ring_of_point]
    rings = shapely.linearrings(np.column_stack([x, y]), indices=ring_of_point)
    views[camera_rows] = shapely.polygons(rings)
    return views


def _usable_views(
    views: ArrayLike, near: tuple[float, float, float, float] | None = None
) -> NDArray[np.object_]:
    """Return the non-missing, non-empty views, optionally only those whose box meets ``near``.

    ``near`` is ``(min_x, min_y, max_x, max_y)``; NaN bounds (nothing to look at) keep no view.
    Dropping far views first keeps a call for one township as cheap as its own cameras.
    """
    candidates = np.asarray(views, dtype=object).ravel()
    present = np.array([view is not None for view in candidates], dtype=bool)
    present[present] = ~shapely.is_empty(candidates[present])
    usable = candidates[present]
    if near is not None and usable.size:
        min_x, min_y, max_x, max_y = shapely.bounds(usable).T
        usable = usable[
            (min_x <= near[2]) & (max_x >= near[0]) & (min_y <= near[3]) & (max_y >= near[1])
        ]
    return usable


def _coverage_pieces(views: NDArray[np.object_]) -> NDArray[np.object_]:
    """Return the coverage of ``views`` as pieces that share no point with each other.

    Views are clustered by overlapping bounding boxes (directly or through other views) and
    each cluster is unioned once; a view whose box meets no other is its own piece. Boxes are
    a superset of "intersects", so two pieces never intersect and the parts of any set of
    pieces make a valid MultiPolygon. Far cheaper than one union of all views, whose cascade
    spends most of its time merging pieces that never meet; and the box test is cheaper than an
    exact one, which would save almost no union work.
    """
    if views.size == 0:
        return views
    first, second = shapely.STRtree(views).query(views)
    graph = coo_array(
        (np.ones(first.size, dtype=np.int8), (first, second)), shape=(views.size, views.size)
    )
    _, cluster = connected_components(graph, directed=False)
    order = np.argsort(cluster, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(cluster[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    pieces = views[order[starts]].copy()
    for piece in np.flatnonzero(sizes > 1):
        start = starts[piece]
        pieces[piece] = shapely.union_all(views[order[start : start + sizes[piece]]])
    return pieces


def grid_coverage(grids: gpd.GeoDataFrame, views: ArrayLike) -> pd.DataFrame:
    """Measure how much of each grid the working cameras see, and where they do not.

    Parameters
    ----------
    grids : geopandas.GeoDataFrame
        Index: grid id. Geometry: Polygon or MultiPolygon in WGS84 (invalid ones are repaired
        with :func:`shapely.make_valid`).
    views : array_like of shapely Polygons
        View polygons from :func:`camera_views`; ``None`` entries are ignored.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``grids``, with columns ``area_m2``, ``covered_m2``, ``blind_spot_m2``
        (``area_m2 - covered_m2``), ``camera_coverage_pct`` (0–100; 0 for a grid without area)
        and ``blind_spot``: the grid minus the union of all views (a shapely geometry in WGS84,
        possibly empty). The covered part is the grid minus its blind spot, and both areas use
        the grid's own scale, so they add up to the grid's area.
    """
    geometry = np.asarray(grids.geometry.values, dtype=object)
    for position in np.flatnonzero([shape is None for shape in geometry]):
        geometry[position] = shapely.Polygon()
    invalid = ~shapely.is_valid(geometry)
    if invalid.any():
        geometry[invalid] = shapely.make_valid(geometry[invalid])
    reference_lat = _centroid_lat(geometry)
    grid_area = area_m2(geometry, reference_lat)

    blind_spot = geometry.copy()
    pieces = np.empty(0, dtype=object)
    if geometry.size:
        min_x, min_y, max_x, max_y = (float(bound) for bound in shapely.total_bounds(geometry))
        pieces = _coverage_pieces(_usable_views(views, near=(min_x, min_y, max_x, max_y)))
    if pieces.size:
        grid_index, piece_index = shapely.STRtree(pieces).query(geometry, predicate="intersects")
        if grid_index.size:
            # One MultiPolygon of disjoint parts per grid, then one vectorised difference.
            parts, part_piece = shapely.get_parts(pieces, return_index=True)
            parts_start = np.searchsorted(part_piece, np.arange(pieces.size))
            parts_count = np.bincount(part_piece, minlength=pieces.size)
            pair_parts = parts_count[piece_index]
            part_grid = np.repeat(grid_index, pair_parts)
            part_position = np.repeat(parts_start[piece_index], pair_parts) + (
                np.arange(part_grid.size)
                - np.repeat(np.cumsum(pair_parts) - pair_parts, pair_parts)
            )
            order = np.argsort(part_grid, kind="stable")
            seen_grids, part_grid_slot = np.unique(part_grid[order], return_inverse=True)
            coverage = shapely.multipolygons(parts[part_position[order]], indices=part_grid_slot)
            blind_spot[seen_grids] = shapely.difference(geometry[seen_grids], coverage)
    blind_area = area_m2(blind_spot, reference_lat)
    covered = np.clip(grid_area - blind_area, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage_pct = np.where(grid_area > 0, 100.0 * covered / grid_area, 0.0)
    return pd.DataFrame(
        {
            "area_m2": grid_area,
            "covered_m2": covered,
            "blind_spot_m2": grid_area - covered,
            "camera_coverage_pct": np.clip(coverage_pct, 0.0, 100.0),
            "blind_spot": blind_spot,
        },
        index=grids.index.copy(),
    )


def points_outside_views(lon: ArrayLike, lat: ArrayLike, views: ArrayLike) -> NDArray[np.bool_]:
    """Return, per point, whether no working camera sees it.

    A point is seen when it intersects some view (inside or on the boundary). The answer is
    exactly ``~np.any([shapely.intersects(view, point) for view in views], axis=0)``; see
    :class:`_ViewPointIndex` for the prefilters that decide most points without GEOS.

    Parameters
    ----------
    lon, lat : array_like
        WGS84 coordinates of the points (e.g. incidents); NaN means "no location" and counts as
        outside.
    views : array_like of shapely Polygons
        View polygons from :func:`camera_views`; ``None`` entries are ignored.

    Returns
    -------
    numpy.ndarray of bool
        ``True`` where the point lies outside every view.
    """
    x = np.asarray(lon, dtype=np.float64).ravel()
    y = np.asarray(lat, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"lon and lat differ in length: {x.size} and {y.size}")
    outside = np.ones(x.size, dtype=bool)
    located = np.isfinite(x) & np.isfinite(y)
    if not located.any():
        return outside
    points_extent = (
        float(x[located].min()),
        float(y[located].min()),
        float(x[located].max()),
        float(y[located].max()),
    )
    usable = _usable_views(views, near=points_extent)
    if usable.size == 0:
        return outside
    index = _ViewPointIndex(usable)
    for start in range(0, x.size, _POINT_CHUNK):
        stop = min(start + _POINT_CHUNK, x.size)
        outside[start:stop] = ~index.seen(x[start:stop], y[start:stop])
    return outside


class ViewIndex:
    """Camera views indexed once for many "which points does no camera see?" queries.

    :func:`points_outside_views` builds its index per call; a run that asks once per
    township builds this once and gets the same answers.

    Parameters
    ----------
    views : array_like of shapely Polygons
        View polygons from :func:`camera_views`; ``None`` and empty entries are ignored.
    """

    def __init__(self, views: ArrayLike) -> None:
        usable = _usable_views(views)
        self._index = _ViewPointIndex(usable) if usable.size else None

    def outside(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
        """Return, per point, whether it lies outside every view (see points_outside_views)."""
        x = np.asarray(lon, dtype=np.float64).ravel()
        y = np.asarray(lat, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"lon and lat differ in length: {x.size} and {y.size}")
        outside = np.ones(x.size, dtype=bool)
        located = np.isfinite(x) & np.isfinite(y)
        if self._index is None or not located.any():
            return outside
        for start in range(0, x.size, _POINT_CHUNK):
            stop = min(start + _POINT_CHUNK, x.size)
            outside[start:stop] = ~self._index.seen(x[start:stop], y[start:stop])
        outside[~located] = True
        return outside


class _ViewPointIndex:
    """Answer "does any view intersect this point?" for many points, exactly as GEOS does.

    Three filters, each of which can only be conservative:

    1. **Cells.** A uniform table of cells over the views' extent lists, per cell, the views
       whose bounding box meets it. Cell numbers are ``floor((coordinate - origin) / size)``,
       which never decreases as the coordinate grows, so a point inside a bounding box always
       lands in a cell that box was listed in. A bounding-box test then trims the candidates.
    2. **Discs.** In a frame where longitude is scaled by the ratio of metres per degree east
       and north (so that circles on the ground are round), each view gets an inner disc
       (around its centroid, or a point on its surface, of radius the distance to its
       boundary, minus :data:`_DISC_MARGIN`) and an outer disc (reaching its farthest vertex,
       plus the margin). A point strictly inside an inner disc is inside the view; a point
       beyond the outer disc is outside it. The margin (about 0.1 mm) is many orders of
       magnitude larger than the rounding in these computations, so points on or near a
       view's edge never decide here.
    3. **GEOS.** Every remaining pair whose point is not already seen goes to
       :func:`shapely.intersects_xy` on the prepared view.
    """

    def __init__(self, views: NDArray[np.object_]) -> None:
        self.views = views
        shapely.prepare(views)
        self.min_x, self.min_y, self.max_x, self.max_y = (
            np.ascontiguousarray(column) for column in shapely.bounds(views).T
        )
        self.origin_x, self.origin_y = float(self.min_x.min()), float(self.min_y.min())
        self._build_cells()
        self._build_discs()

    def _build_cells(self) -> None:
        widths, heights = self.max_x - self.min_x, self.max_y - self.min_y
        # Cells half a typical view across: most pairs that pass the cell lookup also pass the
        # bounding-box test. Grown (doubled) while the table or the entry list is too big, as
        # with views spread over a province or a few very long-range cameras.
        self.size_x = max(float(np.median(widths)) / 2.0, 1e-9)
        self.size_y = max(float(np.median(heights)) / 2.0, 1e-9)
        extent_x = float(self.max_x.max()) - self.origin_x
        extent_y = float(self.max_y.max()) - self.origin_y
        # Every view meets at least one cell, so at least one entry per view is always allowed.
        max_entries = max(_MAX_CELL_ENTRIES, 4 * self.views.size)
        while self.size_x <= extent_x or self.size_y <= extent_y:
            table_cells = (extent_x / self.size_x + 2.0) * (extent_y / self.size_y + 2.0)
            entries = float(np.sum((widths / self.size_x + 2.0) * (heights / self.size_y + 2.0)))
            if table_cells <= _MAX_CELLS and entries <= max_entries:
                break
            self.size_x *= 2.0
            self.size_y *= 2.0
        first_column, last_column = self._column(self.min_x), self._column(self.max_x)
        first_row, last_row = self._row(self.min_y), self._row(self.max_y)
        self.columns = int(last_column.max()) + 1
        self.rows = int(last_row.max()) + 1
        columns_spanned = last_column - first_column + 1
        cells_per_view = columns_spanned * (last_row - first_row + 1)
        view_of_entry = np.repeat(np.arange(self.views.size), cells_per_view)
        offset = _ranks_within_runs(cells_per_view)
        entry_cell = (first_row[view_of_entry] + offset // columns_spanned[view_of_entry]) * (
            self.columns
        ) + (first_column[view_of_entry] + offset % columns_spanned[view_of_entry])
        order = np.argsort(entry_cell, kind="stable")
        self.view_of_entry = view_of_entry[order].astype(np.int32)
        cell_entries = np.bincount(entry_cell, minlength=self.columns * self.rows)
        self.cell_first_entry = np.cumsum(cell_entries) - cell_entries
        self.cell_entries = cell_entries.astype(np.int32)

    def _build_discs(self) -> None:
        east, north = metres_per_degree(0.5 * (self.min_y + self.max_y))
        # Longitude scaled so that circles on the ground are round here; any positive factor
        # would be correct, this one makes the inner discs large.
        self.aspect = float(np.median(east / north))
        aspect, origin = np.array([self.aspect, 1.0]), np.array([self.origin_x, self.origin_y])
        scaled = shapely.transform(self.views, lambda xy: (xy - origin) * aspect)
        centre = shapely.centroid(scaled)
        off_surface = ~shapely.contains_properly(scaled, centre)
        centre[off_surface] = shapely.point_on_surface(scaled[off_surface])
        self.centre_x, self.centre_y = shapely.get_x(centre), shapely.get_y(centre)
        inner = shapely.distance(centre, shapely.boundary(scaled)) - _DISC_MARGIN
        self.inner_squared = np.where(inner > 0, inner, 0.0) ** 2
        vertices, vertex_view = shapely.get_coordinates(scaled, return_index=True)
        reach = np.hypot(
            vertices[:, 0] - self.centre_x[vertex_view],
            vertices[:, 1] - self.centre_y[vertex_view],
        )
        farthest = np.zeros(self.views.size)
        np.maximum.at(farthest, vertex_view, reach)
        self.outer_squared = (farthest + _DISC_MARGIN) ** 2

    def _column(self, x: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor((x - self.origin_x) / self.size_x).astype(np.int64)

    def _row(self, y: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor((y - self.origin_y) / self.size_y).astype(np.int64)

    def seen(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Return whether some view intersects each point ``(x, y)``."""
        column = np.floor((x - self.origin_x) / self.size_x)
        row = np.floor((y - self.origin_y) / self.size_y)
        # NaN coordinates fail these comparisons and drop out here.
        point = np.flatnonzero(
            (column >= 0) & (column < self.columns) & (row >= 0) & (row < self.rows)
        )
        cell = row[point].astype(np.int64) * self.columns + column[point].astype(np.int64)
        entries = self.cell_entries[cell]
        pair_point = np.repeat(point, entries)
        pair_view = self.view_of_entry[
            np.repeat(self.cell_first_entry[cell], entries) + _ranks_within_runs(entries)
        ]
        px, py = x[pair_point], y[pair_point]
        in_box = (
            (px >= self.min_x[pair_view])
            & (px <= self.max_x[pair_view])
            & (py >= self.min_y[pair_view])
            & (py <= self.max_y[pair_view])
        )
        pair_point, pair_view, px, py = (
            pair_point[in_box],
            pair_view[in_box],
            px[in_box],
            py[in_box],
        )
        dx = (px - self.origin_x) * self.aspect - self.centre_x[pair_view]
        dy = (py - self.origin_y) - self.centre_y[pair_view]
        distance_squared = dx * dx + dy * dy
        surely_inside = distance_squared < self.inner_squared[pair_view]
        seen = np.zeros(x.size, dtype=bool)
        seen[pair_point[surely_inside]] = True
        undecided = np.flatnonzero(
            ~surely_inside
            & (distance_squared <= self.outer_squared[pair_view])
            & ~seen[pair_point]
        )
        candidate_views = self.views[pair_view[undecided]]
        exact = shapely.intersects_xy(candidate_views, px[undecided], py[undecided])
        seen[pair_point[undecided[exact]]] = True
        return seen


def _ranks_within_runs(run_lengths: NDArray[np.integer]) -> NDArray[np.int64]:
    """Return 0, 1, …, n-1 for each run of ``run_lengths``, concatenated."""
    run_lengths = np.asarray(run_lengths, dtype=np.int64)
    total = int(run_lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(
        np.cumsum(run_lengths) - run_lengths, run_lengths
    )


def camera_counts(cameras: pd.DataFrame, grid_ids: Iterable[int] | None = None) -> pd.DataFrame:
    """Count cameras per grid by status and by type.

    Parameters
    ----------
    cameras : pandas.DataFrame
        Columns ``grid_id`` (nullable: cameras outside every grid are left out), ``type``
        (``checkpoint`` / ``hd`` / ``standard`` / ``private``) and ``status`` (``online`` /
        ``offline`` / ``broken``).
    grid_ids : iterable of int, optional
        Grids to report, in this order; those without cameras get zeros (so
        ``cameras_working == 0`` finds the grids with no working camera) and cameras in other
        grids are left out. Default: every grid that has a camera.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``grid_id`` (int64; sorted unless ``grid_ids`` gives the order), with the
        int64 columns :data:`CAMERA_COUNT_COLUMNS`: ``cameras_total``, ``cameras_working``
        (online), ``cameras_offline``, ``cameras_broken``, then one column per type. Status and
        type columns count only the known values, so they need not add up to the total.
    """
    grid_id = pd.to_numeric(cameras["grid_id"], errors="coerce")
    located = grid_id.notna().to_numpy()
    grid = grid_id.to_numpy(dtype=np.float64, na_value=np.nan)[located].astype(np.int64)
    status = cameras["status"].to_numpy(dtype=object)[located]
    camera_type = cameras["type"].to_numpy(dtype=object)[located]
    indicators = {
        "cameras_total": np.ones(grid.size, dtype=np.int64),
        "cameras_working": status == WORKING_STATUS,
        "cameras_offline": status == "offline",
        "cameras_broken": status == "broken",
        **{f"cameras_{kind}": camera_type == kind for kind in CAMERA_TYPES},
    }
    frame = pd.DataFrame(
        {name: np.asarray(flag, dtype=np.int64) for name, flag in indicators.items()},
        index=pd.Index(grid, name="grid_id"),
    )
    counts = frame.groupby(level="grid_id", sort=True).sum()
    if grid_ids is not None:
        wanted = pd.Index(np.asarray(list(grid_ids), dtype=np.int64), name="grid_id")
        counts = counts.reindex(wanted, fill_value=0)
    return counts.astype(np.int64)
