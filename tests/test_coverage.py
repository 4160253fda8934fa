"""Camera coverage: view sectors, grid coverage and blind spots, points outside views, counts.

Distances on the ground are set out with pyproj's geodesic ``Geod.fwd`` and areas checked with
``Geod.geometry_area_perimeter``, independently of the module's own metric frame.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod
from scipy import integrate

from gridwatch.workers.aggregate import coverage
from gridwatch.workers.aggregate.coverage import (
    CAMERA_COUNT_COLUMNS,
    area_m2,
    camera_counts,
    camera_views,
    grid_coverage,
    points_outside_views,
)

GEOD = Geod(ellps="WGS84")
LON0, LAT0 = 112.95, 28.20  # Changsha
TRAFFORD_CSV = Path(__file__).parent / "data" / "trafford" / "trafford_cctv_cameras.csv"


def offset(lon, lat, bearing_deg, distance_m):
    """Return the point ``distance_m`` from (lon, lat) along the compass bearing."""
    count = np.broadcast(lon, lat, bearing_deg, distance_m).shape
    lon2, lat2, _ = GEOD.fwd(
        np.broadcast_to(lon, count).astype(float),
        np.broadcast_to(lat, count).astype(float),
        np.broadcast_to(bearing_deg, count).astype(float),
        np.broadcast_to(distance_m, count).astype(float),
    )
    return np.asarray(lon2), np.asarray(lat2)


def geodesic_area(geometry):
    return abs(GEOD.geometry_area_perimeter(geometry)[0])


def cameras_frame(rows):
    frame = pd.DataFrame(rows)
    for column in ("direction_deg", "fov_deg", "range_m"):
        if column not in frame:
            frame[column] = np.nan
    if "status" not in frame:
        frame["status"] = "online"
    return frame


def seen_by_brute_force(lon, lat, views):
    """Per point: does any view intersect it? One GEOS call per (view, point)."""
    polygons = np.array([view for view in views if view is not None], dtype=object)
    points = shapely.points(lon, lat)
    return shapely.intersects(polygons[:, None], points[None, :]).any(axis=0)


def square_grid(lon, lat, half_side_m):
    """A lon/lat rectangle centred on (lon, lat) reaching half_side_m in each direction."""
    west, _ = offset(lon, lat, 270.0, half_side_m)
    east, _ = offset(lon, lat, 90.0, half_side_m)
    _, south = offset(lon, lat, 180.0, half_side_m)
    _, north = offset(lon, lat, 0.0, half_side_m)
    return shapely.box(float(west), float(south), float(east), float(north))


# ------------------------------------------------------------------------------------------
# camera_views
# ------------------------------------------------------------------------------------------


def test_sector_sees_along_its_direction_only():
    cameras = cameras_frame(
        [{"lon": LON0, "lat": LAT0, "direction_deg": 90.0, "fov_deg": 90.0, "range_m": 100.0}]
    )
    views = camera_views(cameras)
    probes = {
        "50 m east": (90.0, 50.0, True),
        "99 m east": (90.0, 99.0, True),
        "50 m at bearing 130 (inside 45–135)": (130.0, 50.0, True),
        "50 m north": (0.0, 50.0, False),
        "50 m at bearing 140": (140.0, 50.0, False),
        "50 m west": (270.0, 50.0, False),
        "150 m east": (90.0, 150.0, False),
        "101 m east": (90.0, 101.0, False),
    }
    bearings = np.array([bearing for bearing, _, _ in probes.values()])
    distances = np.array([distance for _, distance, _ in probes.values()])
    lon, lat = offset(LON0, LAT0, bearings, distances)
    outside = points_outside_views(lon, lat, views)
    for (name, (_, _, expect_seen)), is_outside in zip(probes.items(), outside, strict=True):
        assert is_outside == (not expect_seen), name


@pytest.mark.parametrize(
    ("fov_deg", "range_m", "lat"),
    [(90.0, 100.0, LAT0), (30.0, 60.0, LAT0), (200.0, 250.0, LAT0), (120.0, 1500.0, 53.4)],
)
def test_sector_area_matches_the_circle_fraction(fov_deg, range_m, lat):
    cameras = cameras_frame(
        [{"lon": LON0, "lat": lat, "direction_deg": 33.0, "fov_deg": fov_deg, "range_m": range_m}]
    )
    view = camera_views(cameras)[0]
    expected = math.pi * range_m**2 * fov_deg / 360.0
    assert geodesic_area(view) == pytest.approx(expected, rel=0.01)
    assert area_m2([view])[0] == pytest.approx(expected, rel=0.01)
    # The apex is the camera and the arc reaches the range on the ground in every direction.
    assert shapely.Point(LON0, lat).intersects(view)
    edge_lon, edge_lat = offset(LON0, lat, 33.0, range_m * 0.995)
    assert shapely.intersects_xy(view, edge_lon, edge_lat)


@pytest.mark.parametrize(
    "camera",
    [
        {"direction_deg": np.nan, "fov_deg": 90.0, "range_m": np.nan},  # direction unknown
        {"direction_deg": 45.0, "fov_deg": 360.0, "range_m": np.nan},  # a dome camera
        {"direction_deg": 45.0, "fov_deg": np.nan, "range_m": None},  # angle unknown
    ],
)
def test_unknown_direction_or_full_angle_gives_a_circle_of_the_default_radius(camera):
    radius = 80.0
    cameras = cameras_frame([{"lon": LON0, "lat": LAT0, **camera}])
    view = camera_views(cameras, default_radius_m=radius)[0]
    assert geodesic_area(view) == pytest.approx(math.pi * radius**2, rel=0.01)
    bearings = np.arange(0.0, 360.0, 7.5)
    inside = offset(LON0, LAT0, bearings, 0.97 * radius)
    beyond = offset(LON0, LAT0, bearings, 1.03 * radius)
    assert not points_outside_views(*inside, [view]).any()
    assert points_outside_views(*beyond, [view]).all()


def test_broken_and_offline_cameras_see_nothing_but_are_counted():
    cameras = cameras_frame(
        [
            {"lon": LON0, "lat": LAT0, "status": "online", "type": "hd", "grid_id": 7},
            {"lon": LON0, "lat": LAT0, "status": "offline", "type": "hd", "grid_id": 7},
            {"lon": LON0, "lat": LAT0, "status": "broken", "type": "checkpoint", "grid_id": 7},
        ]
    )
    views = camera_views(cameras)
    assert views[0] is not None and views[0].geom_type == "Polygon"
    assert views[1] is None and views[2] is None
    counts = camera_counts(cameras)
    row = counts.loc[7]
    assert row["cameras_total"] == 3
    assert row["cameras_working"] == 1
    assert row["cameras_offline"] == 1
    assert row["cameras_broken"] == 1
    assert row["cameras_hd"] == 2 and row["cameras_checkpoint"] == 1


def test_a_camera_without_coordinates_gets_no_view():
    cameras = cameras_frame(
        [{"lon": np.nan, "lat": LAT0}, {"lon": LON0, "lat": LAT0}, {"lon": LON0, "lat": None}]
    )
    views = camera_views(cameras)
    assert views[0] is None and views[2] is None and views[1] is not None


# ------------------------------------------------------------------------------------------
# grid_coverage
# ------------------------------------------------------------------------------------------


def test_grid_half_covered_by_a_large_half_circle():
    # A 2 km half-circle facing north with its straight edge along the grid's middle parallel.
    grid = square_grid(LON0, LAT0, 100.0)
    cameras = cameras_frame(
        [{"lon": LON0, "lat": LAT0, "direction_deg": 0.0, "fov_deg": 180.0, "range_m": 2000.0}]
    )
    grids = gpd.GeoDataFrame(geometry=[grid], index=[42], crs=4326)
    result = grid_coverage(grids, camera_views(cameras))
    assert result.loc[42, "camera_coverage_pct"] == pytest.approx(50.0, abs=0.01)
    assert result.loc[42, "area_m2"] == pytest.approx(geodesic_area(grid), rel=1e-5)
    north_half = shapely.box(grid.bounds[0], LAT0, grid.bounds[2], grid.bounds[3])
    south_half = shapely.box(grid.bounds[0], grid.bounds[1], grid.bounds[2], LAT0)
    blind = result.loc[42, "blind_spot"]
    assert geodesic_area(blind.symmetric_difference(south_half)) < 1e-3
    assert not blind.intersects(north_half.buffer(-1e-7))


def test_grid_inside_a_large_circle_is_fully_covered():
    grid = square_grid(LON0, LAT0, 100.0)
    cameras = cameras_frame([{"lon": LON0, "lat": LAT0, "range_m": 1000.0}])
    grids = gpd.GeoDataFrame(geometry=[grid], index=[1], crs=4326)
    result = grid_coverage(grids, camera_views(cameras))
    assert result.loc[1, "camera_coverage_pct"] == pytest.approx(100.0)
    assert result.loc[1, "blind_spot"].is_empty
    assert result.loc[1, "covered_m2"] == pytest.approx(result.loc[1, "area_m2"])


def random_cameras(rng, count, lon=LON0, lat=LAT0, spread_m=400.0):
    """Cameras scattered around (lon, lat): sectors and circles of mixed ranges and states."""
    clon, clat = offset(lon, lat, rng.uniform(0, 360, count), rng.uniform(0, spread_m, count))
    direction = rng.uniform(0, 360, count)
    direction[rng.random(count) < 1 / 3] = np.nan
    return cameras_frame(
        {
            "lon": clon,
            "lat": clat,
            "direction_deg": direction,
            "fov_deg": rng.choice([45.0, 90.0, 120.0, 270.0, 360.0], count),
            "range_m": rng.choice([30.0, 60.0, 120.0, np.nan], count),
            "status": rng.choice(["online", "online", "online", "offline", "broken"], count),
        }
    )


def irregular_grids(rng, lon=LON0, lat=LAT0, half_side_m=450.0, cells=12):
    """Voronoi cells clipped to a square, densified and nudged: irregular polygons."""
    frame = square_grid(lon, lat, half_side_m)
    west, south, east, north = frame.bounds
    seeds = shapely.points(rng.uniform(west, east, cells), rng.uniform(south, north, cells))
    voronoi_cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds)))
    shapes = shapely.intersection(voronoi_cells, frame)
    shapes = shapely.segmentize(shapes, (east - west) / 40)
    return gpd.GeoDataFrame(geometry=shapes, index=np.arange(100, 100 + shapes.size), crs=4326)


def test_coverage_matches_an_independent_union_and_geodesic_areas():
    rng = np.random.default_rng(3)
    grids = irregular_grids(rng)
    # A grid made of two separate parts, far from every camera on one side.
    part_a = square_grid(LON0 + 0.002, LAT0 + 0.006, 40.0)
    part_b = square_grid(LON0 - 0.003, LAT0 + 0.006, 30.0)
    grids.loc[999, "geometry"] = shapely.MultiPolygon([part_a, part_b])
    cameras = random_cameras(rng, 120)
    views = camera_views(cameras)
    result = grid_coverage(grids, views)

    union = shapely.union_all([view for view in views if view is not None])
    for grid_id, grid in grids.geometry.items():
        covered_part = grid.intersection(union)
        grid_area = geodesic_area(grid)
        row = result.loc[grid_id]
        assert row["area_m2"] == pytest.approx(grid_area, rel=1e-5)
        assert row["covered_m2"] == pytest.approx(geodesic_area(covered_part), rel=1e-4, abs=0.5)
        assert row["camera_coverage_pct"] == pytest.approx(
            100 * geodesic_area(covered_part) / grid_area, abs=0.01
        )
        assert row["area_m2"] == pytest.approx(row["covered_m2"] + row["blind_spot_m2"])
        # The blind spot and the covered part partition the grid.
        blind = row["blind_spot"]
        assert geodesic_area(blind) + geodesic_area(covered_part) == pytest.approx(
            grid_area, rel=1e-6, abs=0.5
        )
        assert geodesic_area(blind.union(covered_part).symmetric_difference(grid)) < 0.5
        assert geodesic_area(blind.intersection(union)) < 0.5
    assert 0 < result["camera_coverage_pct"].max() <= 100
    assert result["camera_coverage_pct"].min() >= 0


def test_grid_without_cameras_has_no_coverage_and_is_all_blind_spot():
    rng = np.random.default_rng(5)
    grids = irregular_grids(rng, lon=LON0 + 0.1)  # about 10 km east of every camera
    far_away = camera_views(random_cameras(rng, 30))
    for views in (far_away, np.array([None, None], dtype=object), []):
        result = grid_coverage(grids, views)
        assert (result["camera_coverage_pct"] == 0).all()
        assert (result["covered_m2"] == 0).all()
        assert (result["blind_spot_m2"] == result["area_m2"]).all()
        for grid_id, grid in grids.geometry.items():
            assert result.loc[grid_id, "blind_spot"].equals(grid)


def test_grid_coverage_keeps_the_grid_ids():
    rng = np.random.default_rng(11)
    grids = irregular_grids(rng, cells=5)
    grids.index = pd.Index([9, 3, 77, 5, 1], name="grid_id")
    result = grid_coverage(grids, camera_views(random_cameras(rng, 40)))
    assert list(result.index) == [9, 3, 77, 5, 1]
    assert list(result.columns[:4]) == [
        "area_m2",
        "covered_m2",
        "blind_spot_m2",
        "camera_coverage_pct",
    ]


def test_a_call_for_some_grids_or_points_gives_the_same_answers_as_the_full_call():
    # The engine calls per township with every camera's view: views far from the township's
    # grids or incidents are dropped first, which must not change any answer.
    rng = np.random.default_rng(21)
    grids = irregular_grids(rng, cells=16)
    views = camera_views(random_cameras(rng, 150, spread_m=600.0))
    full = grid_coverage(grids, views)
    some = grids.iloc[[0, 5, 9]]
    part = grid_coverage(some, views)
    pd.testing.assert_frame_equal(
        part.drop(columns="blind_spot"), full.loc[some.index].drop(columns="blind_spot")
    )
    for grid_id in some.index:
        difference = part.loc[grid_id, "blind_spot"].symmetric_difference(
            full.loc[grid_id, "blind_spot"]
        )
        assert geodesic_area(difference) < 1e-6
    lon, lat = offset(LON0, LAT0, rng.uniform(0, 360, 4000), rng.uniform(0, 700, 4000))
    everything = points_outside_views(lon, lat, views)
    west = lon < np.median(lon)
    assert np.array_equal(points_outside_views(lon[west], lat[west], views), everything[west])
    assert everything.any() and (~everything).any()


def test_missing_or_empty_grid_geometry_and_no_grids_at_all():
    views = camera_views(cameras_frame([{"lon": LON0, "lat": LAT0}]))
    grids = gpd.GeoDataFrame(
        geometry=[None, shapely.Polygon(), square_grid(LON0, LAT0, 20.0)], index=[1, 2, 3]
    )
    result = grid_coverage(grids, views)
    assert result.loc[[1, 2], ["area_m2", "covered_m2", "camera_coverage_pct"]].eq(0).all().all()
    assert result.loc[1, "blind_spot"].is_empty and result.loc[2, "blind_spot"].is_empty
    assert result.loc[3, "camera_coverage_pct"] == pytest.approx(100.0)
    empty = grid_coverage(gpd.GeoDataFrame(geometry=[], crs=4326), views)
    assert empty.empty and "camera_coverage_pct" in empty.columns


# ------------------------------------------------------------------------------------------
# points_outside_views
# ------------------------------------------------------------------------------------------


def tricky_points(views, rng):
    """Points exactly on view vertices and edges, and a hair's breadth either side of them."""
    coords = shapely.get_coordinates(np.array([v for v in views if v is not None]))
    pick = rng.choice(len(coords) - 1, size=min(3000, len(coords) - 1), replace=False)
    start, end = coords[pick], coords[pick + 1]
    fraction = rng.random((pick.size, 1))
    on_edges = start + fraction * (end - start)
    midpoints = 0.5 * (start + end)
    nudged = [
        on_edges + rng.choice([-1, 1], on_edges.shape) * np.spacing(on_edges) * k
        for k in (1, 2, 1e3, 1e6)
    ]
    return np.vstack([start, on_edges, midpoints, *nudged])


def test_points_outside_views_equals_a_brute_force_check():
    rng = np.random.default_rng(2026)
    cameras = random_cameras(rng, 300, spread_m=800.0)
    cameras.loc[:4, ["range_m", "direction_deg", "status"]] = [2000.0, 10.0, "online"]
    views = camera_views(cameras)
    scattered = np.column_stack(
        offset(LON0, LAT0, rng.uniform(0, 360, 20_000), rng.uniform(0, 1200, 20_000))
    )
    camera_spots = cameras[["lon", "lat"]].to_numpy()
    points = np.vstack([scattered, camera_spots, tricky_points(views, rng)])
    lon, lat = points[:, 0], points[:, 1]

    outside = points_outside_views(lon, lat, views)
    expected_outside = ~seen_by_brute_force(lon, lat, views)
    assert np.array_equal(outside, expected_outside)
    # Both answers occur, also among the points placed on or next to edges.
    tricky = slice(len(scattered) + len(camera_spots), None)
    assert outside[tricky].any() and (~outside[tricky]).any()
    # Every point strictly inside some view (GEOS `contains`) is seen.
    polygons = np.array([v for v in views if v is not None], dtype=object)
    strictly_inside = shapely.contains_xy(polygons[:, None], lon[None, :], lat[None, :]).any(
        axis=0
    )
    assert not outside[strictly_inside].any()
    # The camera's own position (the apex of its sector) counts as seen.
    working = cameras["status"].eq("online").to_numpy()
    assert not outside[len(scattered) : len(scattered) + len(camera_spots)][working].any()


def test_points_outside_views_is_exact_with_a_coarse_cell_table(monkeypatch):
    # Force the cell table to grow (as for views spread over a province) and check again.
    monkeypatch.setattr(coverage, "_MAX_CELLS", 50)
    monkeypatch.setattr(coverage, "_MAX_CELL_ENTRIES", 200)
    monkeypatch.setattr(coverage, "_POINT_CHUNK", 1000)
    rng = np.random.default_rng(8)
    views = camera_views(random_cameras(rng, 150, spread_m=3000.0))
    lon, lat = offset(LON0, LAT0, rng.uniform(0, 360, 5000), rng.uniform(0, 3100, 5000))
    tricky = tricky_points(views, rng)
    lon, lat = np.r_[lon, tricky[:, 0]], np.r_[lat, tricky[:, 1]]
    assert np.array_equal(
        points_outside_views(lon, lat, views), ~seen_by_brute_force(lon, lat, views)
    )


def test_points_without_location_or_without_views_are_outside():
    views = camera_views(cameras_frame([{"lon": LON0, "lat": LAT0}]))
    outside = points_outside_views([np.nan, LON0, LON0], [LAT0, np.nan, LAT0], views)
    assert outside.tolist() == [True, True, False]
    assert points_outside_views([LON0], [LAT0], [None]).tolist() == [True]
    assert points_outside_views([], [], views).shape == (0,)
    with pytest.raises(ValueError):
        points_outside_views([LON0, LON0], [LAT0], views)


# ------------------------------------------------------------------------------------------
# camera_counts
# ------------------------------------------------------------------------------------------


def test_camera_counts_per_grid_by_type_and_status():
    cameras = pd.DataFrame(
        {
            "grid_id": [1, 1, 1, 2, 2, None, 3],
            "type": ["checkpoint", "hd", "standard", "private", "private", "hd", "hd"],
            "status": ["online", "broken", "online", "offline", "online", "online", "broken"],
        }
    )
    counts = camera_counts(cameras, grid_ids=[1, 2, 3, 4])
    assert list(counts.columns) == list(CAMERA_COUNT_COLUMNS)
    assert counts.index.name == "grid_id"
    assert counts.loc[1].to_dict() == {
        "cameras_total": 3,
        "cameras_working": 2,
        "cameras_offline": 0,
        "cameras_broken": 1,
        "cameras_checkpoint": 1,
        "cameras_hd": 1,
        "cameras_standard": 1,
        "cameras_private": 0,
    }
    assert counts.loc[2, ["cameras_total", "cameras_working", "cameras_offline"]].tolist() == [
        2,
        1,
        1,
    ]
    assert counts.loc[2, "cameras_private"] == 2
    # A grid whose only camera is broken, and a grid with none: no working camera at all.
    assert counts.loc[3, "cameras_working"] == 0 and counts.loc[3, "cameras_broken"] == 1
    assert (counts.loc[4] == 0).all()
    # The camera outside every grid is not counted anywhere.
    assert counts["cameras_total"].sum() == 6
    assert (counts.dtypes == np.int64).all()
    assert camera_counts(cameras).index.tolist() == [1, 2, 3]


# ------------------------------------------------------------------------------------------
# Areas
# ------------------------------------------------------------------------------------------


def exact_rectangle_area(west, south, east, north):
    """Ellipsoidal area of a lon/lat rectangle: Δλ · ∫ M N cos φ dφ, by quadrature."""
    a, e2 = 6_378_137.0, 0.00669437999014

    def element(phi):
        w = 1 - e2 * math.sin(phi) ** 2
        return a * (1 - e2) / w**1.5 * a / math.sqrt(w) * math.cos(phi)

    strip, _ = integrate.quad(element, math.radians(south), math.radians(north), epsabs=0)
    return strip * math.radians(east - west)


@pytest.mark.parametrize("half_side_m", [50.0, 1000.0, 25_000.0])
def test_area_of_a_lon_lat_rectangle_is_exact_to_a_millionth(half_side_m):
    box = square_grid(LON0, LAT0, half_side_m)
    assert area_m2([box])[0] == pytest.approx(exact_rectangle_area(*box.bounds), rel=1e-5)


def test_area_of_irregular_grids_agrees_with_geodesic_area():
    rng = np.random.default_rng(4)
    grids = irregular_grids(rng, lat=45.0)
    areas = area_m2(grids.geometry.values)
    geodesic = np.array([geodesic_area(grid) for grid in grids.geometry])
    np.testing.assert_allclose(areas, geodesic, rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Real data: Trafford council's CCTV cameras (no direction, angle or range)
# ------------------------------------------------------------------------------------------


def test_trafford_cameras_get_default_circles_that_contain_them():
    cameras = pd.read_csv(TRAFFORD_CSV).assign(status="online")
    assert len(cameras) == 98
    views = camera_views(cameras)
    assert all(view is not None and view.geom_type == "Polygon" for view in views)
    areas = np.array([geodesic_area(view) for view in views])
    np.testing.assert_allclose(areas, math.pi * 50.0**2, rtol=0.01)
    assert not points_outside_views(cameras["lon"], cameras["lat"], views).any()
    # Each circle is round on the ground at 53° N: 48 m from its camera in any direction is
    # inside the camera's own view.
    bearings = np.tile([0.0, 60.0, 135.0, 270.0], len(cameras))
    lon, lat = offset(np.repeat(cameras["lon"], 4), np.repeat(cameras["lat"], 4), bearings, 48.0)
    own_view = np.repeat(views, 4)
    assert shapely.intersects_xy(own_view, lon, lat).all()
