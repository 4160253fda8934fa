"""Find the grid of many points fast, with the exact answer of a spatial join.

:class:`RasterLocator` lays a uniform raster of cells over the grids. A cell that no grid
boundary comes near lies wholly inside one grid (or outside all of them), so a point in it is
answered by one array lookup. Only points in the cells that a boundary passes through ("edge"
cells) are tested exactly, with GEOS, against the few grids listed for their cell.

The answer is the one of an exact join with the predicate ``intersects``: a point on a grid's
boundary (outer ring or hole) is inside it, and a point inside several grids goes to the one
with the smallest code. Points with a NaN coordinate are outside every grid.

Why the raster cannot be wrong
------------------------------
Coordinates are measured in cells from the raster's origin. A cell is an edge cell when a
segment of some grid's linework comes within :data:`_MARGIN` cells of it (closed square):
every segment marks the cells around its vertices and around each place where it crosses a
row or column line, which includes every cell it passes through or grazes. The margin is
orders of magnitude larger than the rounding in these computations, so rounding can add edge
cells but never lose one. A cell that is not an edge cell is therefore crossed by no boundary
and lies in one face of the grids' arrangement: its centre is inside exactly the grids that
contain the whole cell. Which grids contain each centre is found by a scan-line fill (even-odd
crossings of every ring on each row's centre line), counting the grids and summing their
numbers per cell, so a count of one names the grid.

For an edge cell the candidates are the grids whose linework marked it plus the grid
containing its centre (when the count is one): any other grid that holds a point of the cell
holds the whole cell, centre included. Where the count is two or more (overlapping grids), the
candidates are all grids whose bounding box meets the cell. Candidates are tested in code order,
so the first hit is the answer.

Even-odd crossings are what GEOS computes for valid polygons only (for overlapping parts of an
invalid multipolygon, say, it is not), so an invalid geometry stays out of the fill and every
cell of its bounding box gets the exact test instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from shapely.geometry.base import BaseGeometry

#: Cells of the raster per grid, on average over the grids' area. More cells mean fewer points
#: in edge cells (their share falls with the cell size) but a longer build.
DEFAULT_CELLS_PER_GRID = 256.0

#: Upper bound on the raster's cells (labels are 4 bytes each; the build holds a few such
#: arrays at once). Beyond it the cells grow, and more points get an exact test.
MAX_CELLS = 4_000_000

#: How close (in cells) a segment must come to a cell to make it an edge cell. Rounding in the
#: cell coordinates is about 1e-12 cells for longitudes and latitudes; any value well above
#: that and well below one cell is correct.
_MARGIN = 1e-6

# shapely type ids of geometries made of parts
_MULTI_TYPES = (4, 5, 6, 7)
_POLYGON, _LINESTRING, _LINEARRING = 3, 1, 2


class RasterLocator:
    """Assign points to grids: a raster lookup, with exact tests only in edge cells.

    Parameters
    ----------
    ids : array_like of int
        The id returned for each grid.
    codes : sequence of str
        The code of each grid; a point inside several grids goes to the smallest code.
    geoms : array_like of shapely geometries
        The polygon (or multipolygon, holes allowed) of each grid. ``None`` or empty
        geometries contain no point.
    cells_per_grid : float, optional
        Raster cells per grid on average over the grids' total area.
    max_cells : int, optional
        Upper bound on the number of raster cells.

    Notes
    -----
    The results are identical to an :class:`shapely.STRtree` query with the predicate
    ``intersects`` followed by taking the lowest code, as in
    :class:`gridwatch.ingest.spatial.GridIndex`. Valid geometries are prepared in place
    (:func:`shapely.prepare`).
    """

    def __init__(
        self,
        ids: ArrayLike,
        codes: Sequence[str],
        geoms: ArrayLike,
        *,
        cells_per_grid: float = DEFAULT_CELLS_PER_GRID,
        max_cells: int = MAX_CELLS,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self.geoms = np.empty(self.ids.size, dtype=object)
        self.geoms[:] = list(np.asarray(geoms, dtype=object).reshape(-1))
        if len(codes) != self.ids.size or self.geoms.size != self.ids.size:
            raise ValueError("ids, codes and geoms must have the same length")
        count = self.ids.size
        # rank of each grid by code: ties on shared boundaries resolve to the lowest code
        self._by_rank = np.array(
            sorted(range(count), key=list(codes).__getitem__), dtype=np.int64
        ).reshape(-1)
        self._rank = np.empty(count, dtype=np.int64)
        self._rank[self._by_rank] = np.arange(count, dtype=np.int64)
        self._ids_or_outside = np.append(self.ids, np.int64(-1))
        self._tree: shapely.STRtree | None = None
        self._labels: NDArray[np.int32] | None = None
        self._exact_only = False
        usable = ~(shapely.is_missing(self.geoms) | shapely.is_empty(self.geoms))
        valid = usable & shapely.is_valid(self.geoms)
        # GEOS answers differently for invalid geometries once they are prepared (e.g. in the
        # overlap of two parts of a multipolygon); the exact join does not prepare them, so
        # neither do we: the exact tests use unprepared copies of invalid geometries.
        self._test_geoms = self.geoms.copy()
        invalid = usable & ~valid
        if invalid.any():
            self._test_geoms[invalid] = shapely.from_wkb(shapely.to_wkb(self.geoms[invalid]))
        if not usable.any():
            return
        shapely.prepare(self.geoms[valid])
        self._build(usable, valid, cells_per_grid, max_cells)

    @classmethod
    def from_geometries(cls, items: Sequence[tuple[int, str, BaseGeometry]]) -> RasterLocator:
        """Build from ``(grid id, code, polygon)`` triples.

        Parameters
        ----------
        items : sequence of tuple
            ``(grid id, code, polygon)`` for each grid.

        Returns
        -------
        RasterLocator
            The locator over these grids.
        """
        geoms = np.empty(len(items), dtype=object)
        geoms[:] = [g for _, _, g in items]
        return cls([i for i, _, _ in items], [c for _, c, _ in items], geoms)

    def __len__(self) -> int:
        return int(self.ids.size)

    # ------------------------------------------------------------------------------------
    # Build
    # ------------------------------------------------------------------------------------

    def _build(
        self,
        usable: NDArray[np.bool_],
        valid: NDArray[np.bool_],
        cells_per_grid: float,
        max_cells: int,
    ) -> None:
        min_x, min_y, max_x, max_y = (float(v) for v in shapely.total_bounds(self.geoms[usable]))
        if not all(np.isfinite([min_x, min_y, max_x, max_y])):
            self._exact_only = True  # no raster over infinite coordinates: exact tests only
            return
        width, height = max_x - min_x, max_y - min_y
        area = float(np.sum(shapely.area(self.geoms[usable])))
        if not area > 0:
            area = max(width * height, 1e-18)
        cells_wanted = min(max(cells_per_grid * int(usable.sum()), 1.0), float(max_cells))
        size = np.sqrt(area / cells_wanted)
        # Cells not so small that rounding in cell coordinates nears the margin.
        magnitude = max(width, height, abs(min_x), abs(min_y), abs(max_x), abs(max_y), 1.0)
        # Two empty cells on every side: points beyond the raster are clamped onto them.
        while True:
            size = max(size, magnitude * 1e-7)
            columns = int(np.floor(width / size)) + 5
            rows = int(np.floor(height / size)) + 5
            if columns * rows <= max(max_cells, 64):
                break
            size *= 1.25
        self.cell_size = float(size)
        self.origin_x = min_x - 2 * self.cell_size
        self.origin_y = min_y - 2 * self.cell_size
        self.columns, self.rows = columns, rows

        # Only valid geometries take part in the fill: there, even-odd over all rings is what
        # GEOS computes. Every cell of an invalid geometry's bounding box gets the exact test.
        linework = _Linework(self.geoms, usable, valid, self)
        if not linework.finite:
            self._exact_only = True
            return
        edge_keys = self._edge_keys(linework)
        if not valid[usable].all():
            invalid = np.flatnonzero(usable & ~valid)
            edge_keys = _sorted_unique(
                np.concatenate([edge_keys, self._bounding_box_cells(invalid)])
            )
        count, owner_sum = self._fill(linework)
        outside = self.ids.size
        labels = np.full(rows * columns, outside, dtype=np.int32)
        single = count == 1
        labels[single] = owner_sum[single]

        # candidate (cell, grid rank) keys for the cells that need an exact test
        edge_cells = _sorted_unique(edge_keys // outside)
        single_edge = edge_cells[single[edge_cells]]
        keys = [edge_keys, single_edge * outside + self._rank[owner_sum[single_edge]]]
        overlapped = np.flatnonzero(count >= 2)
        if overlapped.size:
            keys.append(self._bounding_box_keys(overlapped))
        all_keys = _sorted_unique(np.concatenate(keys))
        cell_of_key = all_keys // outside
        first = np.ones(all_keys.size, dtype=bool)
        first[1:] = cell_of_key[1:] != cell_of_key[:-1]
        slot_start = np.flatnonzero(first)
        labels[cell_of_key[slot_start]] = outside + 1 + np.arange(slot_start.size)
        self._candidate_start = slot_start
        self._candidate_count = np.diff(np.append(slot_start, all_keys.size))
        self._candidates = self._by_rank[all_keys % outside]
        self._labels = labels

    def _cell_keys(self, rows: NDArray[np.int64], columns: NDArray[np.int64]) -> NDArray[np.int64]:
        rows = np.clip(rows, 0, self.rows - 1)
        columns = np.clip(columns, 0, self.columns - 1)
        return rows * self.columns + columns

    def _edge_keys(self, linework: _Linework) -> NDArray[np.int64]:
        """Return ``cell * grids + rank`` for each cell that some grid's linework comes near."""
        cells: list[NDArray[np.int64]] = []
        owners: list[NDArray[np.int64]] = []

        def mark(
            rows: tuple[NDArray[np.float64], NDArray[np.float64]],
            columns: tuple[NDArray[np.float64], NDArray[np.float64]],
            owner: NDArray[np.int64],
        ) -> None:
            # Each of the row and column pairs usually names one cell twice; mark the second
            # only where it differs.
            low_r, high_r = (np.floor(r).astype(np.int64) for r in rows)
            low_c, high_c = (np.floor(c).astype(np.int64) for c in columns)
            cells.append(self._cell_keys(low_r, low_c))
            owners.append(owner)
            for row, column, where in (
                (high_r, low_c, high_r != low_r),
                (low_r, high_c, high_c != low_c),
                (high_r, high_c, (high_r != low_r) & (high_c != low_c)),
            ):
                cells.append(self._cell_keys(row[where], column[where]))
                owners.append(owner[where])

        # around every vertex
        vx, vy = linework.vertex_x, linework.vertex_y
        mark((vy - _MARGIN, vy + _MARGIN), (vx - _MARGIN, vx + _MARGIN), linework.vertex_owner)

        # around every crossing of a row line (y = k) and of a column line (x = k)
        ax, ay, bx, by = linework.ax, linework.ay, linework.bx, linework.by
        for along_a, along_b, across_a, across_b, rows_first in (
            (ay, by, ax, bx, True),
            (ax, bx, ay, by, False),
        ):
            low, high = np.minimum(along_a, along_b), np.maximum(along_a, along_b)
            first_line = np.ceil(low).astype(np.int64)
            lines = np.floor(high).astype(np.int64) - first_line + 1
            lines[(along_a == along_b) | (lines < 0)] = 0
            segment = np.repeat(np.arange(lines.size), lines)
            line = first_line[segment] + _ranks_within_runs(lines)
            a, b = along_a[segment], along_b[segment]
            across = across_a[segment] + (line - a) / (b - a) * (
                across_b[segment] - across_a[segment]
            )
            # never beyond the segment's own extent, whatever the rounding
            across = np.clip(
                across,
                np.minimum(across_a, across_b)[segment],
                np.maximum(across_a, across_b)[segment],
            )
            line_f = line.astype(np.float64)
            side = (line_f - 0.5, line_f + 0.5)
            near = (across - _MARGIN, across + _MARGIN)
            owner = linework.segment_owner[segment]
            if rows_first:
                mark(side, near, owner)
            else:
                mark(near, side, owner)
        cell = np.concatenate(cells)
        owner = np.concatenate(owners)
        return _sorted_unique(cell * self.ids.size + self._rank[owner])

    def _fill(self, linework: _Linework) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Count the grids containing each cell centre and sum their numbers (scan lines)."""
        ring = linework.segment_is_ring
        ax, ay, bx, by = (v[ring] for v in (linework.ax, linework.ay, linework.bx, linework.by))
        owner = linework.segment_owner[ring]
        # Row r's centre line is y = r + 0.5. A segment crosses the rows in
        # [ceil(low - 0.5), ceil(high - 0.5)): half-open, computed from each vertex alone, so
        # every closed ring crosses every row an even number of times.
        row_a, row_b = np.ceil(ay - 0.5).astype(np.int64), np.ceil(by - 0.5).astype(np.int64)
        first_row = np.minimum(row_a, row_b)
        crossed = np.abs(row_b - row_a)
        segment = np.repeat(np.arange(crossed.size), crossed)
        row = first_row[segment] + _ranks_within_runs(crossed)
        a_x, a_y = ax[segment], ay[segment]
        x = a_x + (row + 0.5 - a_y) * ((bx[segment] - a_x) / (by[segment] - a_y))
        group = owner[segment] * self.rows + row
        order = np.lexsort((x, group))
        group, x = group[order], x[order]
        if not np.array_equal(group[0::2], group[1::2]):  # pragma: no cover - see above
            raise RuntimeError("scan-line fill found an odd number of ring crossings")
        span_row = np.clip(group[0::2] % self.rows, 0, self.rows - 1)
        span_owner = group[0::2] // self.rows
        # cells whose centre x = c + 0.5 lies in [start, end)
        start = np.clip(np.ceil(x[0::2] - 0.5), 0, self.columns).astype(np.int64)
        end = np.clip(np.ceil(x[1::2] - 0.5), 0, self.columns).astype(np.int64)
        keep = end > start
        span_row, span_owner, start, end = (v[keep] for v in (span_row, span_owner, start, end))
        width = self.columns + 1
        size = self.rows * width
        opened, closed = span_row * width + start, span_row * width + end
        count = np.bincount(opened, minlength=size) - np.bincount(closed, minlength=size)
        owner_weight = span_owner.astype(np.float64)
        owner_sum = np.bincount(opened, owner_weight, minlength=size) - np.bincount(
            closed, owner_weight, minlength=size
        )
        count = np.cumsum(count.reshape(self.rows, width), axis=1)[:, :-1].reshape(-1)
        # sums of grid numbers stay far below 2**53, so the float sums are exact integers
        owner_sum = np.cumsum(owner_sum.reshape(self.rows, width), axis=1)[:, :-1].reshape(-1)
        return count, np.rint(owner_sum).astype(np.int64)

    def _bounding_box_cells(self, grids: NDArray[np.int64]) -> NDArray[np.int64]:
        """Return ``cell * grids + rank`` for every cell of these grids' bounding boxes."""
        bounds = shapely.bounds(self.geoms[grids])
        scale = 1.0 / self.cell_size
        first_column = np.floor((bounds[:, 0] - self.origin_x) * scale - _MARGIN).astype(np.int64)
        last_column = np.floor((bounds[:, 2] - self.origin_x) * scale + _MARGIN).astype(np.int64)
        first_row = np.floor((bounds[:, 1] - self.origin_y) * scale - _MARGIN).astype(np.int64)
        last_row = np.floor((bounds[:, 3] - self.origin_y) * scale + _MARGIN).astype(np.int64)
        width = last_column - first_column + 1
        per_grid = width * (last_row - first_row + 1)
        grid = np.repeat(np.arange(grids.size), per_grid)
        offset = _ranks_within_runs(per_grid)
        cell = self._cell_keys(
            first_row[grid] + offset // width[grid], first_column[grid] + offset % width[grid]
        )
        return cell * self.ids.size + self._rank[grids[grid]]

    def _bounding_box_keys(self, cells: NDArray[np.int64]) -> NDArray[np.int64]:
        """Return ``cell * grids + rank`` for every grid whose bounding box meets a cell."""
        row, column = np.divmod(cells, self.columns)
        slack = 2 * _MARGIN * self.cell_size
        x0 = self.origin_x + column * self.cell_size - slack
        y0 = self.origin_y + row * self.cell_size - slack
        boxes = shapely.box(
            x0, y0, x0 + self.cell_size + 2 * slack, y0 + self.cell_size + 2 * slack
        )
        box_index, grid = self._strtree().query(boxes)
        return np.asarray(cells[box_index] * self.ids.size + self._rank[grid], dtype=np.int64)

    def _strtree(self) -> shapely.STRtree:
        if self._tree is None:
            self._tree = shapely.STRtree(self.geoms)
        return self._tree

    # ------------------------------------------------------------------------------------
    # Lookup
    # ------------------------------------------------------------------------------------

    def assign(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.int64]:
        """Return the id of the grid containing each point, or ``-1`` outside every grid.

        Parameters
        ----------
        lon, lat : array_like of float
            Point coordinates, in the grids' coordinate system.

        Returns
        -------
        numpy.ndarray of int64
            One id per point. A point on a boundary is inside; a point inside several grids
            goes to the one with the smallest code; NaN coordinates give ``-1``.
        """
        x = np.ascontiguousarray(lon, dtype=np.float64).reshape(-1)
        y = np.ascontiguousarray(lat, dtype=np.float64).reshape(-1)
        if x.size != y.size:
            raise ValueError("lon and lat must have the same length")
        if self._labels is None:
            if self._exact_only and x.size:
                return self.assign_exact(x, y)
            return np.full(x.size, -1, dtype=np.int64)
        labels = self._labels[self._cells_of(x, y)]
        outside = self.ids.size
        result = self._ids_or_outside[np.minimum(labels, outside)]
        edge = np.flatnonzero(labels > outside)
        if edge.size:
            slot = labels[edge].astype(np.int64) - (outside + 1)
            result[edge] = self._exact_in_cells(x[edge], y[edge], slot)
        return result

    def _cells_of(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return the raster cell of each point; points beyond the raster land on its border."""
        # fmax/fmin drop NaN in favour of the bound: NaN points land on the (empty) border.
        column = np.subtract(x, self.origin_x)
        column *= 1.0 / self.cell_size
        np.fmax(column, 0.0, out=column)
        np.fmin(column, self.columns - 1, out=column)
        row = np.subtract(y, self.origin_y)
        row *= 1.0 / self.cell_size
        np.fmax(row, 0.0, out=row)
        np.fmin(row, self.rows - 1, out=row)
        cell = row.astype(np.int64)
        cell *= self.columns
        cell += column.astype(np.int64)
        return cell

    def _exact_in_cells(
        self, x: NDArray[np.float64], y: NDArray[np.float64], slot: NDArray[np.int64]
    ) -> NDArray[np.int64]:
        """Test points against their cell's candidates in code order; the first hit wins."""
        result = np.full(x.size, -1, dtype=np.int64)
        pending = np.arange(x.size)
        start, count = self._candidate_start[slot], self._candidate_count[slot]
        step = 0
        while pending.size:
            grid = self._candidates[start[pending] + step]
            # grouped by grid, GEOS keeps each grid's point locator in cache
            order = np.argsort(grid, kind="stable")
            pending, grid = pending[order], grid[order]
            hit = shapely.intersects_xy(self._test_geoms[grid], x[pending], y[pending])
            result[pending[hit]] = self.ids[grid[hit]]
            step += 1
            pending = pending[~hit & (count[pending] > step)]
        return result

    def assign_exact(self, lon: ArrayLike, lat: ArrayLike) -> NDArray[np.int64]:
        """Answer like :meth:`assign` with an STRtree query of every point (no raster).

        Parameters
        ----------
        lon, lat : array_like of float
            Point coordinates, in the grids' coordinate system.

        Returns
        -------
        numpy.ndarray of int64
            One id per point, ``-1`` outside every grid.
        """
        x = np.asarray(lon, dtype=np.float64).reshape(-1)
        y = np.asarray(lat, dtype=np.float64).reshape(-1)
        return exact_join(self._strtree(), self._rank, self.ids, x, y)


def exact_join(
    tree: shapely.STRtree,
    rank: NDArray[np.int64],
    ids: NDArray[np.int64],
    lon: NDArray[np.float64],
    lat: NDArray[np.float64],
) -> NDArray[np.int64]:
    """Join points to the tree's grids with ``intersects``; the lowest rank wins a tie.

    Parameters
    ----------
    tree : shapely.STRtree
        Tree over the grids' geometries.
    rank : numpy.ndarray of int64
        Rank of each grid by code.
    ids : numpy.ndarray of int64
        Id of each grid.
    lon, lat : numpy.ndarray of float64
        Point coordinates.

    Returns
    -------
    numpy.ndarray of int64
        One id per point, ``-1`` where no grid intersects it.
    """
    result = np.full(len(lon), -1, dtype=np.int64)
    if len(ids) == 0 or len(lon) == 0:
        return result
    points = shapely.points(lon, lat)
    point_idx, grid_idx = tree.query(points, predicate="intersects")
    if len(point_idx) == 0:
        return result
    order = np.lexsort((rank[grid_idx], point_idx))
    point_idx, grid_idx = point_idx[order], grid_idx[order]
    first = np.ones(len(point_idx), dtype=bool)
    first[1:] = point_idx[1:] != point_idx[:-1]
    result[point_idx[first]] = ids[grid_idx[first]]
    return result


class _Linework:
    """Segments and vertices of the grids' rings and lines, in raster cell coordinates.

    ``segment_is_ring`` marks the segments of the rings of the ``filled`` geometries, the only
    ones the scan-line fill uses.
    """

    def __init__(
        self,
        geoms: NDArray[np.object_],
        usable: NDArray[np.bool_],
        filled: NDArray[np.bool_],
        raster: RasterLocator,
    ) -> None:
        parts, owner = shapely.get_parts(geoms[usable], return_index=True)
        owner = np.flatnonzero(usable)[owner]
        while True:
            nested = np.isin(shapely.get_type_id(parts), _MULTI_TYPES)
            if not nested.any():
                break
            inner, inner_owner = shapely.get_parts(parts[nested], return_index=True)
            parts = np.concatenate([parts[~nested], inner])
            owner = np.concatenate([owner[~nested], owner[nested][inner_owner]])
        keep = ~shapely.is_empty(parts)
        parts, owner = parts[keep], owner[keep]
        type_id = shapely.get_type_id(parts)
        polygon = type_id == _POLYGON
        rings, ring_part = shapely.get_rings(parts[polygon], return_index=True)
        line = (type_id == _LINESTRING) | (type_id == _LINEARRING)
        paths = np.concatenate([rings, parts[line]])
        path_owner = np.concatenate([owner[polygon][ring_part], owner[line]])
        path_is_ring = (np.arange(paths.size) < rings.size) & filled[path_owner]

        def to_cells(xy: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            scale = 1.0 / raster.cell_size
            return (xy[:, 0] - raster.origin_x) * scale, (xy[:, 1] - raster.origin_y) * scale

        xy, path = shapely.get_coordinates(paths, return_index=True)
        x, y = to_cells(xy)
        same = path[1:] == path[:-1]
        self.ax, self.ay = x[:-1][same], y[:-1][same]
        self.bx, self.by = x[1:][same], y[1:][same]
        self.segment_owner = path_owner[path[:-1][same]]
        self.segment_is_ring = path_is_ring[path[:-1][same]]
        point_xy, point_part = shapely.get_coordinates(parts[type_id == 0], return_index=True)
        px, py = to_cells(point_xy)
        self.vertex_x = np.concatenate([x, px])
        self.vertex_y = np.concatenate([y, py])
        self.vertex_owner = np.concatenate([path_owner[path], owner[type_id == 0][point_part]])
        self.finite = bool(np.isfinite(self.vertex_x).all() and np.isfinite(self.vertex_y).all())


def _sorted_unique(values: NDArray[np.int64]) -> NDArray[np.int64]:
    """Return the distinct values in increasing order (faster than :func:`numpy.unique`)."""
    values = np.sort(values)
    keep = np.ones(values.size, dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def _ranks_within_runs(run_lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """Return 0, 1, …, n-1 for each run of ``run_lengths``, concatenated."""
    total = int(run_lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(
        np.cumsum(run_lengths) - run_lengths, run_lengths
    )
