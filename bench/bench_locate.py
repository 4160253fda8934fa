"""Benchmark the raster point-in-grid locator against the exact joins it replaces.

Builds a county of 60 km × 60 km around (117.0° E, 31.0° N) (WGS84, seeded RNG):

- ``--grids`` irregular grids (default 5,000): Voronoi cells of random seeds, clipped to the
  county, densified to about 100 vertices each and bent by one smooth displacement field of
  some tens of metres, applied to coordinates rounded to 1 mm, so neighbouring grids share
  their (wiggly) boundaries vertex for vertex, like digitised boundaries;
- ``--points`` points (default 1,000,000), like incidents: 35 % around road junctions (the
  Voronoi vertices, where grid boundaries meet: the hard case), 55 % in a few hundred broad
  clusters, 10 % scattered, of which a few fall outside the county.

Then it times, in the same run:

- **GridWatch**: building :class:`RasterLocator` and its :meth:`~RasterLocator.assign` (cold
  first call, then the best and median of ``--repeat`` runs);
- **GridIndex STRtree path**: :meth:`GridIndex.assign_exact`, the exact join GridIndex used
  before (``shapely.points`` + ``STRtree.query(points, predicate="intersects")`` + the
  lowest code per point);
- **BASELINE, plain geopandas**: ``geopandas.points_from_xy`` + ``geopandas.sjoin(points,
  grids, predicate="within")``.

The baselines get fresh, unprepared copies of the grids. The locator must return exactly the
STRtree path's grid for every point, and the number of points per grid must be the same for
all three (``within`` leaves out points exactly on a boundary, which random points do not
hit); otherwise the script prints ``CHECK FAILED`` and exits non-zero. About half a minute.

Examples
--------
::

    .venv/bin/python bench/bench_locate.py
    .venv/bin/python bench/bench_locate.py --points 200000 --cells-per-grid 64
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
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from gridwatch.geo.locate import DEFAULT_CELLS_PER_GRID, RasterLocator
from gridwatch.ingest.spatial import GridIndex

CENTRE_LON, CENTRE_LAT = 117.0, 31.0
COUNTY_M = 60_000.0
TARGET_SECONDS = 0.3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Synthetic county
# ------------------------------------------------------------------------------------------


def to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """County metres (origin at the south-west corner) → WGS84, after a smooth bend."""
    bend_x = 25 * np.sin(x / 170.0 + 1.3 * np.sin(y / 410.0)) + 9 * np.sin(y / 53.0)
    bend_y = 25 * np.sin(y / 190.0 + 1.1 * np.sin(x / 370.0)) + 9 * np.sin(x / 61.0)
    east = 111_320.0 * np.cos(np.radians(CENTRE_LAT))
    north = 110_574.0
    lon = CENTRE_LON + (x + bend_x - COUNTY_M / 2) / east
    lat = CENTRE_LAT + (y + bend_y - COUNTY_M / 2) / north
    return lon, lat


def build_county(
    grid_count: int, point_count: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the grids (WGS84 polygons) and the points' longitudes and latitudes."""
    rng = np.random.default_rng(seed)
    county = shapely.box(0, 0, COUNTY_M, COUNTY_M)
    seeds = rng.uniform(0, COUNTY_M, size=(grid_count, 2))
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=county.buffer(1000))
    )
    cells = shapely.intersection(cells, county)
    # one step for all grids, so both neighbours cut a shared edge at the same places
    step = float(np.mean(shapely.length(cells))) / 100
    dense = shapely.segmentize(cells, step)

    def bend(xy: np.ndarray) -> np.ndarray:
        rounded = np.round(xy, 3)  # neighbours' copies of a vertex agree to far below 1 mm
        return np.column_stack(to_lonlat(rounded[:, 0], rounded[:, 1]))

    grids = shapely.transform(dense, bend)

    corners = np.unique(np.round(shapely.get_coordinates(cells), 3), axis=0)
    inner = ((corners > 1) & (corners < COUNTY_M - 1)).all(axis=1)
    junctions = corners[inner]
    near_junction = point_count * 35 // 100
    scattered = point_count // 10
    clustered = point_count - near_junction - scattered
    at = rng.integers(0, len(junctions), near_junction)
    centres = rng.uniform(0, COUNTY_M, size=(300, 2))
    spread = rng.uniform(300, 2000, size=300)
    around = rng.integers(0, len(centres), clustered)
    x = np.concatenate(
        [
            junctions[at, 0] + rng.normal(0, 60, near_junction),
            centres[around, 0] + rng.normal(0, 1, clustered) * spread[around],
            rng.uniform(-0.01 * COUNTY_M, 1.01 * COUNTY_M, scattered),
        ]
    )
    y = np.concatenate(
        [
            junctions[at, 1] + rng.normal(0, 60, near_junction),
            centres[around, 1] + rng.normal(0, 1, clustered) * spread[around],
            rng.uniform(-0.01 * COUNTY_M, 1.01 * COUNTY_M, scattered),
        ]
    )
    lon, lat = to_lonlat(x, y)
    shuffle = rng.permutation(point_count)
    return grids, lon[shuffle], lat[shuffle]


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def timed(function: Callable[[], Any], repeat: int) -> tuple[Any, list[float], list[float]]:
    """Run ``function`` ``repeat`` times; return the last result, wall and CPU seconds."""
    wall, cpu = [], []
    result = None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return result, wall, cpu


def row(name: str, seconds: float, cpu: float, note: str = "") -> str:
    return f"  {name:<58} {seconds:8.3f} s  ({cpu:6.3f} s)  {note}".rstrip()


def sjoin_grid(grids: gpd.GeoDataFrame, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Plain geopandas: points_from_xy + sjoin(within); the lowest code wins a tie."""
    points = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=4326)
    joined = gpd.sjoin(points, grids, how="inner", predicate="within")
    joined = joined.sort_values("code").loc[lambda frame: ~frame.index.duplicated()]
    result = np.full(len(lon), -1, dtype=np.int64)
    result[joined.index.to_numpy()] = joined["grid_id"].to_numpy()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=5000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--repeat", type=int, default=5, help="runs of the locator's assign")
    parser.add_argument("--cells-per-grid", type=float, default=DEFAULT_CELLS_PER_GRID)
    args = parser.parse_args(argv)

    log("building the synthetic county …")
    start = time.perf_counter()
    grids, lon, lat = build_county(args.grids, args.points, args.seed)
    built = time.perf_counter() - start
    vertices = shapely.get_num_coordinates(grids).mean()
    ids = np.arange(1, grids.size + 1, dtype=np.int64)
    codes = [f"341122{n:06d}" for n in np.random.default_rng(args.seed).permutation(grids.size)]

    def fresh() -> np.ndarray:
        return shapely.from_wkb(shapely.to_wkb(grids))

    log("GridWatch RasterLocator …")
    locator, t_build, c_build = timed(
        lambda: RasterLocator(ids, codes, fresh(), cells_per_grid=args.cells_per_grid), 1
    )
    ours, t_assign, c_assign = timed(lambda: locator.assign(lon, lat), args.repeat)
    assert locator._labels is not None
    cells = locator._labels[locator._cells_of(lon, lat)]
    edge_share = float(np.mean(cells > len(locator)))
    edge_cells = int(np.sum(locator._labels > len(locator)))

    log("GridIndex STRtree path …")
    index, t_tree, c_tree = timed(lambda: GridIndex(ids, codes, fresh()), 1)
    exact, t_exact, c_exact = timed(lambda: index.assign_exact(lon, lat), 1)

    log("plain geopandas sjoin …")
    frame = gpd.GeoDataFrame({"grid_id": ids, "code": codes}, geometry=fresh(), crs=4326)
    _, t_sindex, c_sindex = timed(lambda: frame.sindex, 1)  # built lazily; timed apart
    baseline, t_sjoin, c_sjoin = timed(lambda: sjoin_grid(frame, lon, lat), 1)

    # --------------------------------------------------------------------------------------
    best = int(np.argmin(t_assign))
    median = statistics.median(t_assign)
    print()
    print(
        f"Point-in-grid benchmark — Python {platform.python_version()}, shapely "
        f"{shapely.__version__} (GEOS {shapely.geos_version_string}), geopandas "
        f"{gpd.__version__}, {os.cpu_count()} CPUs, single-threaded; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"synthetic county {COUNTY_M / 1000:.0f} km × {COUNTY_M / 1000:.0f} km: "
        f"{grids.size:,} grids ({vertices:.0f} vertices on average), {args.points:,} points "
        f"(built in {built:.1f} s, seed {args.seed})"
    )
    print(
        f"raster {locator.columns} × {locator.rows} cells of {locator.cell_size * 1e3:.3f}e-3° "
        f"({args.cells_per_grid:g} per grid), {edge_cells:,} edge cells; "
        f"{edge_share * 100:.1f} % of the points in edge cells"
    )
    print("wall-clock seconds (CPU seconds of this process in brackets)")
    print()
    print(f"GridWatch RasterLocator (assign: first run, then best of {args.repeat}):")
    print(row("build", t_build[0], c_build[0]))
    print(row("assign, first run", t_assign[0], c_assign[0]))
    verdict = "within" if t_assign[best] <= TARGET_SECONDS else "OVER"
    print(
        row(
            "assign, best",
            t_assign[best],
            c_assign[best],
            f"median {median:.3f} s; {verdict} the {TARGET_SECONDS} s target",
        )
    )
    print()
    print("GridIndex STRtree path (one run):")
    print(row("STRtree build", t_tree[0], c_tree[0]))
    print(
        row(
            "shapely.points + STRtree.query('intersects') + lowest code",
            t_exact[0],
            c_exact[0],
        )
    )
    print()
    print("BASELINE, plain geopandas (one run):")
    print(row("sindex build", t_sindex[0], c_sindex[0]))
    print(row("points_from_xy + sjoin(predicate='within')", t_sjoin[0], c_sjoin[0]))
    print()
    print("Ratios to the RasterLocator's best assign (wall; CPU in brackets):")
    for name, wall, cpu in (
        ("STRtree path", t_exact[0], c_exact[0]),
        ("BASELINE sjoin", t_sjoin[0], c_sjoin[0]),
    ):
        print(
            f"  {name + ' / RasterLocator:':<50} {wall / t_assign[best]:5.1f}×  "
            f"({cpu / c_assign[best]:5.1f}×)"
        )
    print(
        f"  {'BASELINE sjoin / (RasterLocator build + assign):':<50} "
        f"{t_sjoin[0] / (t_build[0] + t_assign[best]):5.1f}×  "
        f"({c_sjoin[0] / (c_build[0] + c_assign[best]):5.1f}×)"
    )

    # --------------------------------------------------------------------------------------
    print()
    print("Results:")
    failures = []
    per_grid = {
        name: np.bincount(result[result >= 0], minlength=grids.size + 1)
        for name, result in (("RasterLocator", ours), ("STRtree", exact), ("sjoin", baseline))
    }
    located = int((ours >= 0).sum())
    print(
        f"  points in a grid: {located:,} ({located / args.points * 100:.2f} %); "
        f"grids with no point: {int((per_grid['RasterLocator'][1:] == 0).sum()):,}"
    )
    differing = int((ours != exact).sum())
    print(f"  points whose grid differs from the STRtree path: {differing}")
    if differing:
        failures.append(f"{differing} points differ from the exact STRtree join")
    for name in ("STRtree", "sjoin"):
        grids_differing = int((per_grid[name] != per_grid["RasterLocator"]).sum())
        print(f"  grids whose point count differs from {name}: {grids_differing}")
        if grids_differing:
            failures.append(f"{grids_differing} grids' counts differ from {name}")
    summary = pd.Series(per_grid["RasterLocator"][1:]).describe(percentiles=[0.5, 0.99])
    print(
        f"  points per grid: median {summary['50%']:.0f}, 99th percentile "
        f"{summary['99%']:.0f}, max {summary['max']:.0f}"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the whole run: {peak:,.0f} MB")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
