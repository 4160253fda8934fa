"""Benchmark camera coverage and blind-spot incident counts on a synthetic city.

Builds a city of about 60 km × 50 km near Changsha (WGS84, seeded RNG):

- ``--grids`` irregular grids (default 5,000): Voronoi cells of random seeds, clipped to the
  city, densified to about 100 vertices each and bent by one smooth displacement field (so
  neighbouring grids still share their boundaries exactly, like digitised boundaries);
- ``--cameras`` cameras (default 17,000, of which about 88 % online: ~15,000 view sectors),
  clustered at junctions (the Voronoi vertices, some junctions busier than others), a third
  without direction, angles of 60°/90°/120°/360° and ranges of 30–120 m or unknown;
- ``--incidents`` incidents (default 1,000,000): half around junctions, most of the rest in
  broad clusters, 4.5 % scattered and 0.5 % recorded exactly at a camera's position.

Then it times :func:`camera_views`, :func:`grid_coverage`, :func:`points_outside_views` and the
per-grid blind-spot incident count (each the best of ``--repeat`` runs), and in the same run:

- **BASELINE (naive)**: one ``shapely.union_all`` of all views, ``shapely.difference(grid,
  union)`` for every grid, and ``shapely.contains(union, point)`` for every incident with no
  index, no preparation and no raster. Run once (it takes a minute or more); ``--skip-naive``
  leaves it out.
- **Indexed shapely**: what a careful plain-shapely program does (one union of all views, an
  STRtree of its parts per grid, an STRtree query of all incidents with
  ``predicate="intersects"``); comparable to the ~3.5 s quoted in issue 3. Its per-incident
  answer is exact, so GridWatch's flags must equal it: the script prints ``CHECK FAILED`` and
  exits non-zero otherwise, or when the coverage differs from the naive one.

The grid of each incident (the incident module's job) is found once before timing.

Examples
--------
::

    .venv/bin/python bench/bench_coverage.py
    .venv/bin/python bench/bench_coverage.py --incidents 200000 --skip-naive
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.workers.aggregate.coverage import (
    camera_views,
    grid_coverage,
    metres_per_degree,
    points_outside_views,
)

ORIGIN_LON, ORIGIN_LAT = 112.70, 28.00
CITY_WIDTH_M, CITY_HEIGHT_M = 60_000.0, 50_000.0
TARGET_SECONDS = 2.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Synthetic city
# ------------------------------------------------------------------------------------------


@dataclass
class City:
    """Grids, cameras and incidents of the synthetic city."""

    grids: gpd.GeoDataFrame
    cameras: pd.DataFrame
    incident_lon: np.ndarray
    incident_lat: np.ndarray


def to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """City metres → WGS84, after a smooth bend shared by every coordinate."""
    bend_x = 12 * np.sin(x / 37.0 + 1.3 * np.sin(y / 91.0)) + 7 * np.sin(y / 23.0)
    bend_y = 12 * np.sin(y / 41.0 + 1.1 * np.sin(x / 77.0)) + 7 * np.sin(x / 29.0)
    east, north = metres_per_degree(ORIGIN_LAT + CITY_HEIGHT_M / 2 / 111_000)
    return ORIGIN_LON + (x + bend_x) / east, ORIGIN_LAT + (y + bend_y) / north


def build_city(grid_count: int, camera_count: int, incident_count: int, seed: int) -> City:
    rng = np.random.default_rng(seed)
    city = shapely.box(0, 0, CITY_WIDTH_M, CITY_HEIGHT_M)
    seeds = rng.uniform((0, 0), (CITY_WIDTH_M, CITY_HEIGHT_M), size=(grid_count, 2))
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=city.buffer(1000))
    )
    cells = shapely.intersection(cells, city)
    densified = shapely.segmentize(cells, shapely.length(cells) / 100)
    grids = shapely.transform(densified, lambda xy: np.column_stack(to_lonlat(xy[:, 0], xy[:, 1])))

    corners = np.unique(np.round(shapely.get_coordinates(cells), 3), axis=0)
    inner = (corners > 1).all(axis=1) & (corners < (CITY_WIDTH_M - 1, CITY_HEIGHT_M - 1)).all(
        axis=1
    )
    junctions = corners[inner]
    busy = rng.lognormal(0.0, 1.0, len(junctions))
    busy /= busy.sum()

    at = rng.choice(len(junctions), size=camera_count, p=busy)
    cam_lon, cam_lat = to_lonlat(
        junctions[at, 0] + rng.normal(0, 10, camera_count),
        junctions[at, 1] + rng.normal(0, 10, camera_count),
    )
    direction = rng.uniform(0, 360, camera_count)
    direction[rng.random(camera_count) < 1 / 3] = np.nan
    cameras = pd.DataFrame(
        {
            "lon": cam_lon,
            "lat": cam_lat,
            "status": rng.choice(
                ["online", "offline", "broken"], camera_count, p=[0.88, 0.08, 0.04]
            ),
            "type": rng.choice(["checkpoint", "hd", "standard", "private"], camera_count),
            "direction_deg": direction,
            "fov_deg": rng.choice(
                [60.0, 90.0, 120.0, 360.0], camera_count, p=[0.3, 0.4, 0.2, 0.1]
            ),
            "range_m": rng.choice(
                [30.0, 50.0, 80.0, 120.0, np.nan], camera_count, p=[0.2, 0.3, 0.2, 0.1, 0.2]
            ),
        }
    )

    near_junction = incident_count // 2
    at_camera = incident_count // 200
    scattered = incident_count * 45 // 1000
    clustered = incident_count - near_junction - at_camera - scattered
    at = rng.choice(len(junctions), size=near_junction, p=busy)
    centres = rng.uniform((0, 0), (CITY_WIDTH_M, CITY_HEIGHT_M), size=(300, 2))
    around = rng.integers(0, len(centres), clustered)
    x = np.concatenate(
        [
            junctions[at, 0] + rng.normal(0, 60, near_junction),
            centres[around, 0] + rng.normal(0, 1500, clustered),
            rng.uniform(0, CITY_WIDTH_M, scattered),
        ]
    )
    y = np.concatenate(
        [
            junctions[at, 1] + rng.normal(0, 60, near_junction),
            centres[around, 1] + rng.normal(0, 1500, clustered),
            rng.uniform(0, CITY_HEIGHT_M, scattered),
        ]
    )
    lon, lat = to_lonlat(np.clip(x, 0, CITY_WIDTH_M), np.clip(y, 0, CITY_HEIGHT_M))
    camera_at = rng.integers(0, camera_count, at_camera)
    lon = np.concatenate([lon, cam_lon[camera_at]])
    lat = np.concatenate([lat, cam_lat[camera_at]])
    shuffle = rng.permutation(lon.size)
    frame = gpd.GeoDataFrame(
        geometry=grids, index=pd.RangeIndex(1, grid_count + 1, name="grid_id"), crs=4326
    )
    return City(frame, cameras, lon[shuffle], lat[shuffle])


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def timed(function: Callable[[], Any], repeat: int) -> tuple[Any, list[float]]:
    """Run ``function`` ``repeat`` times; return the last result and every duration."""
    seconds = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def row(name: str, seconds: float, note: str = "") -> str:
    return f"  {name:<52} {seconds:9.3f} s  {note}".rstrip()


def gridwatch_blind_counts(outside: np.ndarray, incident_grid: np.ndarray, grids: int) -> Any:
    located = incident_grid >= 0
    blind = np.bincount(incident_grid[located & outside], minlength=grids)
    total = np.bincount(incident_grid[located], minlength=grids)
    with np.errstate(divide="ignore", invalid="ignore"):
        return blind, np.where(total > 0, 100.0 * blind / total, np.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=5000)
    parser.add_argument("--cameras", type=int, default=17_000)
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each GridWatch step")
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive baseline")
    args = parser.parse_args(argv)

    log("building the synthetic city …")
    start = time.perf_counter()
    city = build_city(args.grids, args.cameras, args.incidents, args.seed)
    built = time.perf_counter() - start
    grid_geometry = np.asarray(city.grids.geometry.values)
    vertices = shapely.get_num_coordinates(grid_geometry).mean()

    log("locating incidents in grids (the incident module's job, not timed) …")
    start = time.perf_counter()
    points = shapely.points(city.incident_lon, city.incident_lat)
    t_make_points = time.perf_counter() - start  # charged to both shapely versions
    point_index, grid_index = shapely.STRtree(grid_geometry).query(points, predicate="intersects")
    incident_grid = np.full(points.size, -1, dtype=np.int64)
    incident_grid[point_index[::-1]] = grid_index[::-1]  # first grid wins on a shared edge

    log("GridWatch …")
    views, t_views = timed(lambda: camera_views(city.cameras), args.repeat)
    usable = np.array([view for view in views if view is not None], dtype=object)
    result, t_coverage = timed(lambda: grid_coverage(city.grids, views), args.repeat)
    outside, t_points = timed(
        lambda: points_outside_views(city.incident_lon, city.incident_lat, views), args.repeat
    )
    (blind, blind_pct), t_counts = timed(
        lambda: gridwatch_blind_counts(outside, incident_grid, args.grids), args.repeat
    )

    log("indexed plain shapely …")
    start = time.perf_counter()
    union = shapely.union_all(usable)
    t_indexed_union = time.perf_counter() - start
    start = time.perf_counter()
    parts = shapely.get_parts(union)
    grid_of_pair, part_of_pair = shapely.STRtree(parts).query(
        grid_geometry, predicate="intersects"
    )
    indexed_blind = grid_geometry.copy()
    with_parts, slot = np.unique(grid_of_pair, return_inverse=True)
    indexed_blind[with_parts] = shapely.difference(
        grid_geometry[with_parts], shapely.multipolygons(parts[part_of_pair], indices=slot)
    )
    t_indexed_grids = time.perf_counter() - start
    start = time.perf_counter()
    seen_index = shapely.STRtree(usable).query(points, predicate="intersects")[0]
    indexed_outside = np.ones(points.size, dtype=bool)
    indexed_outside[seen_index] = False
    t_indexed_points = time.perf_counter() - start + t_make_points
    t_indexed = t_indexed_union + t_indexed_grids + t_indexed_points

    naive: dict[str, float] = {}
    naive_outside = None
    if not args.skip_naive:
        log("naive baseline (a minute or more) …")
        start = time.perf_counter()
        naive_union = shapely.union_all(usable)
        naive["union_all"] = time.perf_counter() - start
        start = time.perf_counter()
        naive_blind = shapely.difference(grid_geometry, naive_union)
        naive["difference"] = time.perf_counter() - start
        start = time.perf_counter()
        naive_outside = ~shapely.contains(naive_union, points)
        naive["contains"] = time.perf_counter() - start + t_make_points

    # --------------------------------------------------------------------------------------
    best = {
        "views": min(t_views),
        "coverage": min(t_coverage),
        "points": min(t_points),
        "counts": min(t_counts),
    }
    total = sum(best.values())
    median_total = statistics.median(t_views) + statistics.median(t_coverage)
    median_total += statistics.median(t_points) + statistics.median(t_counts)

    print()
    print(
        f"Camera coverage benchmark — Python {platform.python_version()}, shapely "
        f"{shapely.__version__} (GEOS {shapely.geos_version_string}), "
        f"{os.cpu_count()} CPUs, single-threaded"
    )
    print(
        f"synthetic city {CITY_WIDTH_M / 1000:.0f} km × {CITY_HEIGHT_M / 1000:.0f} km: "
        f"{args.grids:,} grids ({vertices:.0f} vertices on average), {args.cameras:,} cameras "
        f"→ {usable.size:,} working views, {args.incidents:,} incidents "
        f"(built in {built:.1f} s, seed {args.seed})"
    )
    print()
    print(f"GridWatch — best of {args.repeat} (median in brackets):")
    for name, key, times in [
        ("camera_views", "views", t_views),
        ("grid_coverage", "coverage", t_coverage),
        ("points_outside_views", "points", t_points),
        ("blind-spot incidents per grid (bincount)", "counts", t_counts),
    ]:
        print(row(name, best[key], f"({statistics.median(times):.3f} s)"))
    verdict = "within" if total <= TARGET_SECONDS else "OVER"
    print(
        row("total", total, f"({median_total:.3f} s)  {verdict} the {TARGET_SECONDS:.0f} s target")
    )
    print()
    print("Indexed plain shapely (one run; comparable to issue 3's ~3.5 s):")
    print(row("union_all of all views", t_indexed_union))
    print(row("STRtree of union parts + difference per grid", t_indexed_grids))
    print(row("shapely.points + STRtree.query(points, 'intersects')", t_indexed_points))
    print(row("total", t_indexed, f"→ GridWatch is {t_indexed / total:.1f}× faster"))
    if naive:
        naive_total = sum(naive.values())
        print()
        print("BASELINE, naive plain shapely (one run, no index, no preparation, no raster):")
        print(row("shapely.union_all of all views", naive["union_all"]))
        print(row("shapely.difference(grid, union) for every grid", naive["difference"]))
        print(row("shapely.points + contains(union, point) for each", naive["contains"]))
        print(row("total", naive_total))
        print(f"  ratio BASELINE / GridWatch: {naive_total / total:,.0f}×")

    # --------------------------------------------------------------------------------------
    print()
    print("Results:")
    failures = []
    print(
        f"  mean coverage {result['camera_coverage_pct'].mean():.2f} %, "
        f"grids with no coverage {(result['covered_m2'] == 0).sum():,}, "
        f"incidents outside every view {outside.mean() * 100:.2f} %, "
        f"grids with blind-spot incidents {(blind > 0).sum():,}, "
        f"median blind-spot incident share {np.nanmedian(blind_pct):.1f} %"
    )
    differing = int((outside != indexed_outside).sum())
    print(f"  incidents whose flag differs from the exact indexed query: {differing}")
    if differing:
        failures.append(f"{differing} incidents differ from the exact STRtree answer")
    reference_blind = naive_blind if naive else indexed_blind
    reference_area = shapely.area(reference_blind)
    own_area = shapely.area(np.asarray(result["blind_spot"].values))
    grid_area = shapely.area(grid_geometry)
    worst = float(np.max(np.abs(own_area - reference_area) / grid_area))
    print(f"  largest blind-spot area difference from one big union: {worst:.1e} of a grid")
    if worst > 1e-9:
        failures.append(f"blind spots differ from one big union by {worst:.1e} of a grid")
    if naive_outside is not None:
        naive_differs = int((outside != naive_outside).sum())
        on_boundary = int((outside != naive_outside)[~outside].sum())
        print(
            f"  incidents flagged differently from the naive `contains`: {naive_differs} "
            f"({on_boundary} on a view's edge, seen by GridWatch, not contained by the union)"
        )
        if naive_differs != on_boundary:
            failures.append("the naive baseline sees incidents that GridWatch does not")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the whole run: {peak:,.0f} MB")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
