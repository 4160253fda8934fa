"""The raster locator gives exactly the answers of a brute-force ``intersects`` join.

The reference tests every point against every grid with :func:`shapely.intersects` on fresh
(unprepared) copies of the geometries, then keeps the grid with the smallest code, which is
the documented meaning of :meth:`gridwatch.ingest.spatial.GridIndex.assign`. The locator is
also compared with the STRtree join it replaces. Tilings share their edges exactly (every
shared vertex has identical coordinates in both neighbours), so points on vertices and edges
are inside several grids at once and the smallest-code rule is exercised.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from gridwatch.geo.locate import RasterLocator
from gridwatch.ingest.spatial import RASTER_AFTER_POINTS_PER_GRID, GridIndex

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------
# Reference and helpers
# ------------------------------------------------------------------------------------------


def brute_force(
    ids: np.ndarray, codes: list[str], geoms: np.ndarray, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Test every point against every grid; the smallest code among the hits wins."""
    fresh = shapely.from_wkb(shapely.to_wkb(geoms))  # unprepared copies
    points = shapely.points(x, y)
    result = np.full(x.size, -1, dtype=np.int64)
    best_code: list[str | None] = [None] * x.size
    for grid_id, code, geom in zip(ids, codes, fresh, strict=True):
        if geom is None:
            continue
        for i in np.flatnonzero(shapely.intersects(geom, points)):
            if best_code[i] is None or code < best_code[i]:
                best_code[i] = code
                result[i] = grid_id
    return result


def shuffled_codes(rng: np.random.Generator, count: int) -> list[str]:
    """Codes whose order differs from the storage order, so ties test the code rule."""
    return [f"G{n:05d}" for n in rng.permutation(count)]


def jitter_shared(geoms: np.ndarray, amplitude: float, salt: int) -> np.ndarray:
    """Move every vertex by an offset that depends only on its (rounded) position.

    Neighbours hold a shared vertex at (almost) the same coordinates; rounding to 1e-7 first
    makes their keys equal, and both get the very same new coordinates.
    """

    def move(xy: np.ndarray) -> np.ndarray:
        key = np.round(xy * 1e7).astype(np.int64)
        mixed = (key[:, 0] * 0x9E3779B1) ^ (key[:, 1] * 0x85EBCA77) ^ salt
        mixed = (mixed ^ (mixed >> 13)) * 0xC2B2AE35
        dx = ((mixed & 0xFFFF) / 0xFFFF - 0.5) * 2 * amplitude
        dy = (((mixed >> 16) & 0xFFFF) / 0xFFFF - 0.5) * 2 * amplitude
        return np.column_stack([key[:, 0] / 1e7 + dx, key[:, 1] / 1e7 + dy])

    return shapely.transform(geoms, move)


def voronoi_tiling(
    rng: np.random.Generator, count: int, origin: tuple[float, float], size: float, wiggle: float
) -> np.ndarray:
    """Irregular grids tiling a square: Voronoi cells, densified, edges bent consistently."""
    seeds = rng.uniform(0, size, (count, 2)) + origin
    frame = box(origin[0], origin[1], origin[0] + size, origin[1] + size)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame.buffer(size))
    )
    cells = shapely.intersection(cells, frame)
    cells = cells[shapely.get_type_id(cells) == 3]
    step = float(np.mean(shapely.length(cells))) / 30
    dense = shapely.segmentize(cells, step)
    bent = jitter_shared(dense, wiggle * step, int(rng.integers(1 << 30)))
    # a grid that the jitter made invalid keeps its straight edges (no longer shared exactly)
    return np.where(shapely.is_valid(bent) & (shapely.area(bent) > 0), bent, dense)


def probe_points(
    rng: np.random.Generator, geoms: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random points around the grids, every vertex, and points along and on the edges."""
    min_x, min_y, max_x, max_y = shapely.total_bounds(geoms)
    pad_x, pad_y = 0.1 * (max_x - min_x), 0.1 * (max_y - min_y)
    random = np.column_stack(
        [
            rng.uniform(min_x - pad_x, max_x + pad_x, count),
            rng.uniform(min_y - pad_y, max_y + pad_y, count),
        ]
    )
    vertices = shapely.get_coordinates(geoms)
    # points on the segments (exactly on them when the arithmetic happens to be exact)
    t = rng.random((len(vertices) - 1, 1))
    along = vertices[:-1] + t * (vertices[1:] - vertices[:-1])
    xy = np.concatenate([random, vertices, along])
    return xy[:, 0], xy[:, 1]


def check_same(
    ids: np.ndarray,
    codes: list[str],
    geoms: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    **options: float,
) -> np.ndarray:
    expected = brute_force(ids, codes, geoms, x, y)
    locator = RasterLocator(ids, codes, geoms, **options)
    got = locator.assign(x, y)
    assert got.dtype == np.int64
    wrong = np.flatnonzero(got != expected)
    assert wrong.size == 0, (
        f"{wrong.size} of {x.size} points differ, e.g. ({x[wrong[0]]!r}, {y[wrong[0]]!r}): "
        f"{got[wrong[0]]} instead of {expected[wrong[0]]}"
    )
    np.testing.assert_array_equal(locator.assign_exact(x, y), expected)
    return expected


def cell_boxes(locator: RasterLocator) -> np.ndarray:
    rows, columns = np.divmod(np.arange(locator.rows * locator.columns), locator.columns)
    x0 = locator.origin_x + columns * locator.cell_size
    y0 = locator.origin_y + rows * locator.cell_size
    return shapely.box(x0, y0, x0 + locator.cell_size, y0 + locator.cell_size)


# ------------------------------------------------------------------------------------------
# (a), (b) irregular tilings, points on shared edges and vertices
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(2, 40),
    wiggle=st.sampled_from([0.0, 0.2, 0.45]),
    origin=st.sampled_from([(0.0, 0.0), (116.7, 30.7), (-500.0, 2000.0)]),
    size=st.sampled_from([0.05, 1.0, 600.0]),
    cells_per_grid=st.sampled_from([0.5, 4.0, 16.0, 256.0, 4000.0]),
)
def test_irregular_tiling_matches_brute_force(
    seed: int,
    count: int,
    wiggle: float,
    origin: tuple[float, float],
    size: float,
    cells_per_grid: float,
) -> None:
    rng = np.random.default_rng(seed)
    geoms = voronoi_tiling(rng, count, origin, size, wiggle)
    ids = np.arange(len(geoms), dtype=np.int64) * 7 + 3
    codes = shuffled_codes(rng, len(geoms))
    x, y = probe_points(rng, geoms, 1500)
    expected = check_same(ids, codes, geoms, x, y, cells_per_grid=cells_per_grid)
    # the tiling really shares vertices, so ties were tested
    vertices = shapely.get_coordinates(geoms)
    on_vertex = shapely.intersects(
        geoms[:, None], shapely.points(vertices[: len(vertices) // 4])[None, :]
    ).sum(axis=0)
    assert len(geoms) < 2 or (on_vertex >= 2).any()
    assert (expected >= 0).any()


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), cells_per_grid=st.sampled_from([1.0, 4.0, 9.0, 64.0]))
def test_edges_on_raster_lines(seed: int, cells_per_grid: float) -> None:
    """Unit squares: with 1, 4, 9 … cells per grid every edge lies on a raster line."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(1, 7))
    corners = np.array([(i, j) for i in range(side) for j in range(side)], dtype=float)
    geoms = shapely.segmentize(shapely.box(corners[:, 0], corners[:, 1], *(corners + 1).T), 0.5)
    ids = np.arange(len(geoms), dtype=np.int64)
    codes = shuffled_codes(rng, len(geoms))
    # raster lines, edges, vertices, cell centres (in quarters), and random points
    lattice = np.arange(-1, 4 * side + 2) / 4
    gx, gy = np.meshgrid(lattice, lattice)
    x = np.concatenate([gx.ravel(), rng.uniform(-0.5, side + 0.5, 2000)])
    y = np.concatenate([gy.ravel(), rng.uniform(-0.5, side + 0.5, 2000)])
    locator = RasterLocator(ids, codes, geoms, cells_per_grid=cells_per_grid)
    root = np.sqrt(cells_per_grid)
    if root == int(root):
        assert locator.cell_size == pytest.approx(1 / root)
    check_same(ids, codes, geoms, x, y, cells_per_grid=cells_per_grid)


def test_shared_vertex_goes_to_the_smallest_code() -> None:
    # four squares meeting at (1, 1); the smallest code is stored third
    geoms = np.array([box(0, 0, 1, 1), box(1, 0, 2, 1), box(0, 1, 1, 2), box(1, 1, 2, 2)])
    ids = np.array([10, 20, 30, 40])
    codes = ["b", "c", "a", "d"]
    locator = RasterLocator(ids, codes, geoms, cells_per_grid=1)
    x = np.array([1.0, 1.0, 0.5, 1.5, 2.0, 0.0])
    y = np.array([1.0, 0.5, 1.0, 1.0, 2.0, 0.0])
    got = locator.assign(x, y)
    np.testing.assert_array_equal(got, brute_force(ids, codes, geoms, x, y))
    assert got[0] == 30  # code "a" of the four at the common corner
    assert got[1] == 10  # edge of "b" and "c"
    assert got[2] == 30  # edge of "b" and "a"
    assert got[3] == 20  # edge of "c" and "d"


def test_interior_cells_lie_inside_one_grid_only() -> None:
    """The raster's own promise: a labelled cell is wholly inside its grid and no other."""
    rng = np.random.default_rng(7)
    geoms = voronoi_tiling(rng, 25, (116.7, 30.7), 0.05, 0.45)
    ring_grid = Polygon(
        [(116.69, 30.69), (116.76, 30.69), (116.76, 30.76), (116.69, 30.76)],
        [[(116.699, 30.699), (116.751, 30.699), (116.751, 30.751), (116.699, 30.751)]],
    )
    geoms = np.append(geoms, ring_grid)
    ids = np.arange(len(geoms), dtype=np.int64)
    locator = RasterLocator(ids, shuffled_codes(rng, len(geoms)), geoms, cells_per_grid=64)
    assert locator._labels is not None
    labels = locator._labels
    boxes = cell_boxes(locator)
    interior = np.flatnonzero(labels < len(geoms))
    outside = np.flatnonzero(labels == len(geoms))
    assert interior.size > 0 and outside.size > 0
    assert shapely.contains_properly(geoms[labels[interior]], boxes[interior]).all()
    for index, geom in enumerate(geoms):
        others = interior[labels[interior] != index]
        assert not shapely.intersects(geom, boxes[others]).any()
        assert not shapely.intersects(geom, boxes[outside]).any()


# ------------------------------------------------------------------------------------------
# (c) outside, (d) holes and multipolygons, (e) NaN, (f) empty
# ------------------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), cells_per_grid=st.sampled_from([1.0, 16.0, 256.0]))
def test_points_outside_every_grid(seed: int, cells_per_grid: float) -> None:
    rng = np.random.default_rng(seed)
    geoms = voronoi_tiling(rng, 12, (116.7, 30.7), 0.05, 0.3)
    # leave a gap in the middle of the tiling
    geoms = geoms[~shapely.intersects(geoms, shapely.Point(116.725, 30.725))]
    ids = np.arange(len(geoms), dtype=np.int64) + 1
    codes = shuffled_codes(rng, len(geoms))
    far = rng.uniform(-1000, 1000, (500, 2))
    x = np.concatenate([far[:, 0], [np.inf, -np.inf, 117.0, 1e300], [116.725]])
    y = np.concatenate([far[:, 1], [30.72, 30.72, np.inf, -1e300], [30.725]])
    got = check_same(ids, codes, geoms, x, y, cells_per_grid=cells_per_grid)
    assert got[-1] == -1  # in the gap
    assert (got[:-1] == -1).all()


@SETTINGS
@given(
    seed=st.integers(0, 2**32 - 1),
    cells_per_grid=st.sampled_from([1.0, 16.0, 256.0]),
    hole_filler_first=st.booleans(),
)
def test_holes_multipolygons_and_overlaps(
    seed: int, cells_per_grid: float, hole_filler_first: bool
) -> None:
    rng = np.random.default_rng(seed)
    shell = [(0, 0), (10, 0), (10, 10), (0, 10)]
    hole = [(3, 3), (7, 3), (7.5, 6.2), (3, 7)]
    with_hole = shapely.segmentize(Polygon(shell, [hole]), 0.7)
    filler = shapely.segmentize(Polygon(hole), 0.7)  # fills the hole exactly
    scattered = MultiPolygon(
        [
            box(12, 0, 14, 2),
            Polygon([(12, 5), (16, 5), (16, 9), (12, 9)], [[(13, 6), (15, 6), (14, 8)]]),
            box(20, 20, 21, 21),
        ]
    )
    in_that_hole = box(13.5, 6.5, 14.5, 6.8)  # partly in the triangular hole
    overlapping = box(8, 8, 13, 13)  # overlaps the holed grid and reaches the multipolygon
    nested = box(1, 1, 2, 2)  # inside the holed grid, not cut out of it
    geoms = np.array([with_hole, filler, scattered, in_that_hole, overlapping, nested])
    codes = ["h", "a" if hole_filler_first else "z", "m", "b", "c", "n"]
    ids = np.arange(len(geoms), dtype=np.int64) + 100
    x, y = probe_points(rng, geoms, 3000)
    got = check_same(ids, codes, geoms, x, y, cells_per_grid=cells_per_grid)
    # the hole's ring belongs to both the holed grid and its filler
    hole_vertex = np.flatnonzero((x == 3) & (y == 3))
    assert got[hole_vertex[0]] == (101 if hole_filler_first else 100)
    # inside the multipolygon's third part; in the nested square ("h" < "n")
    inside = RasterLocator(ids, codes, geoms).assign(np.array([20.5, 1.5]), np.array([20.5, 1.5]))
    np.testing.assert_array_equal(inside, [102, 100])


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), cells_per_grid=st.sampled_from([1.0, 16.0, 256.0]))
def test_invalid_geometries_get_the_geos_answer(seed: int, cells_per_grid: float) -> None:
    rng = np.random.default_rng(seed)
    overlapping_parts = MultiPolygon([box(0, 0, 2, 2), box(1, 1, 3, 3)])
    bowtie = Polygon([(4, 0), (6, 2), (6, 0), (4, 2)])
    hole_outside = Polygon([(0, 4), (2, 4), (2, 6), (0, 6)], [[(2.5, 4.5), (3, 4.5), (3, 5)]])
    overlapping_holes = Polygon(
        [(4, 4), (8, 4), (8, 8), (4, 8)],
        [[(5, 5), (6.5, 5), (6.5, 6.5), (5, 6.5)], [(6, 6), (7, 6), (7, 7), (6, 7)]],
    )
    neighbour = box(2, 0, 4, 2)
    geoms = np.array([overlapping_parts, bowtie, hole_outside, overlapping_holes, neighbour])
    assert not shapely.is_valid(geoms[:4]).any()
    shapely.prepare(geoms)  # prepared by whoever had them before: must not change answers
    ids = np.arange(len(geoms), dtype=np.int64) + 1
    codes = shuffled_codes(rng, len(geoms))
    x, y = probe_points(rng, geoms, 3000)
    check_same(ids, codes, geoms, x, y, cells_per_grid=cells_per_grid)


def test_nan_coordinates_are_outside() -> None:
    geoms = np.array([box(0, 0, 1, 1), box(1, 0, 2, 1)])
    locator = RasterLocator([1, 2], ["a", "b"], geoms, cells_per_grid=16)
    x = np.array([np.nan, 0.5, np.nan, 0.5, 1.5])
    y = np.array([0.5, np.nan, np.nan, 0.5, 0.5])
    np.testing.assert_array_equal(locator.assign(x, y), [-1, -1, -1, 1, 2])
    np.testing.assert_array_equal(locator.assign_exact(x, y), [-1, -1, -1, 1, 2])


def test_empty_locator() -> None:
    empty = RasterLocator(np.array([], dtype=np.int64), [], np.array([], dtype=object))
    assert len(empty) == 0
    np.testing.assert_array_equal(empty.assign(np.array([0.5, np.nan]), np.array([0.5, 1.0])), -1)
    assert empty.assign(np.array([]), np.array([])).shape == (0,)
    hollow = RasterLocator([1, 2], ["a", "b"], np.array([None, Polygon()], dtype=object))
    np.testing.assert_array_equal(hollow.assign(np.array([0.0]), np.array([0.0])), [-1])
    full = RasterLocator([1], ["a"], np.array([box(0, 0, 1, 1)]))
    assert full.assign(np.array([]), np.array([])).dtype == np.int64


def test_missing_geometry_among_grids() -> None:
    geoms = np.array([None, box(0, 0, 1, 1), Polygon()], dtype=object)
    locator = RasterLocator([5, 6, 7], ["a", "b", "c"], geoms)
    np.testing.assert_array_equal(
        locator.assign(np.array([0.5, 2.0, 1.0]), np.array([0.5, 2.0, 1.0])), [6, -1, 6]
    )


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        RasterLocator([1, 2], ["a"], np.array([box(0, 0, 1, 1), box(1, 0, 2, 1)]))
    locator = RasterLocator([1], ["a"], np.array([box(0, 0, 1, 1)]))
    with pytest.raises(ValueError):
        locator.assign(np.array([0.5, 0.5]), np.array([0.5]))


# ------------------------------------------------------------------------------------------
# GridIndex uses the locator, with the same answers
# ------------------------------------------------------------------------------------------


def test_grid_index_switches_to_the_raster_with_the_same_answers() -> None:
    rng = np.random.default_rng(11)
    geoms = voronoi_tiling(rng, 30, (116.7, 30.7), 0.05, 0.45)
    codes = shuffled_codes(rng, len(geoms))
    index = GridIndex.from_geometries(
        [(int(i) + 1, code, geom) for i, (code, geom) in enumerate(zip(codes, geoms, strict=True))]
    )
    x, y = probe_points(rng, geoms, RASTER_AFTER_POINTS_PER_GRID * len(geoms))
    expected = brute_force(index.ids, index.codes, index.geoms, x, y)
    small = index.assign(x[:10], y[:10])
    assert index._locator is None  # a few points: the exact join, no raster built
    np.testing.assert_array_equal(small, expected[:10])
    np.testing.assert_array_equal(index.assign(x, y), expected)
    assert index._locator is not None
    np.testing.assert_array_equal(index.assign(x, y), expected)
    np.testing.assert_array_equal(index.assign_exact(x, y), expected)


def test_grid_index_without_grids() -> None:
    index = GridIndex.from_geometries([])
    np.testing.assert_array_equal(index.assign(np.array([1.0]), np.array([1.0])), [-1])
