"""Benchmark counting incidents per grid and category against geopandas and PostGIS.

On the synthetic city of ``city.py`` (default 5,000 irregular grids of ~100 vertices and
1,000,000 clustered incidents; see that module), every method counts the incidents of each
(grid, category) pair, and all the counts must be identical:

- **ours**: :class:`gridwatch.geo.locate.RasterLocator` (built once for the grids, timed
  apart) ``.assign(lon, lat)`` and one ``np.bincount`` of ``grid * categories + category``.
  When ``gridwatch.geo.locate`` is missing, :class:`gridwatch.ingest.spatial.GridIndex` stands
  in, and the output says so.
- **geopandas** (the issue's ~1.7 s baseline): ``gpd.sjoin(points, grids,
  predicate="within")`` and a ``groupby`` count; ``points_from_xy`` is timed apart.
- **plain shapely**: ``STRtree(grids).query(points, predicate="intersects")``, lowest code on
  a shared edge (the exact answer ``RasterLocator`` promises), untimed reference for the checks
  and timed for comparison.
- **PostGIS** (the issue's 3.4 s best form to 11 s plain JOIN): the grids and incidents are
  copied into a throwaway database ``gridwatch_bench`` (created and dropped here) with GiST
  indexes, then these forms run (``jit=off``, otherwise server defaults): the plain ``JOIN …
  ON ST_Contains … GROUP BY``; a join against the grids cut by ``ST_Subdivide`` (the cutting
  timed apart, like an index build); a ``LATERAL`` subquery per grid, which makes PostgreSQL
  scan the incident index once per grid with that grid's polygon kept prepared; and the same
  after ``CLUSTER`` of the incidents on their GiST index (timed apart), the best form found.

Each in-process method gets its own copy of the grid polygons (``RasterLocator`` and
``GridIndex`` prepare the ones they are given, which would speed up later users). Times are
the best of ``--repeat`` runs (``--pg-repeat`` for PostgreSQL), medians in brackets.

Examples
--------
::

    .venv/bin/python bench/bench_count.py
    .venv/bin/python bench/bench_count.py --grids 1000 --incidents 100000 --skip-postgis
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import psycopg
import shapely
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from city import city_frames  # noqa: E402

BENCH_DATABASE = "gridwatch_bench"
SUBDIVIDE_VERTICES = 64


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(function: Callable[[], Any], repeat: int) -> tuple[Any, list[float]]:
    """Run ``function`` ``repeat`` times; return the last result and every duration."""
    seconds = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def fresh(geoms: np.ndarray) -> np.ndarray:
    """Copies of the polygons, not prepared by any earlier user."""
    return shapely.from_wkb(shapely.to_wkb(geoms))


# ------------------------------------------------------------------------------------------
# Methods; each returns an (n_grids, n_categories) int64 matrix
# ------------------------------------------------------------------------------------------


def build_ours(codes: list[str], geoms: np.ndarray) -> tuple[str, Any]:
    """Build RasterLocator, or GridIndex when gridwatch.geo.locate is not there yet."""
    ids = np.arange(len(codes), dtype=np.int64)
    try:
        from gridwatch.geo.locate import RasterLocator
    except ImportError:
        from gridwatch.ingest.spatial import GridIndex

        return "GridIndex.assign (RasterLocator not found)", GridIndex(ids, codes, geoms)
    return "RasterLocator", RasterLocator(ids, codes, geoms)


def count_ours(
    locator: Any, lon: np.ndarray, lat: np.ndarray, category: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    grid = locator.assign(lon, lat)
    inside = grid >= 0
    flat = grid[inside] * shape[1] + category[inside]
    return np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)


def count_geopandas(points: gpd.GeoDataFrame, grids: gpd.GeoDataFrame) -> pd.Series:
    joined = gpd.sjoin(points, grids, predicate="within")
    return joined.groupby(["index_right", "category"], observed=True).size()


def geopandas_matrix(counts: pd.Series, categories: list[str], shape: tuple[int, int]) -> Any:
    matrix = np.zeros(shape, dtype=np.int64)
    grid = counts.index.get_level_values(0).to_numpy()
    category = pd.Categorical(counts.index.get_level_values(1), categories=categories).codes
    matrix[grid, category] = counts.to_numpy()
    return matrix


def count_strtree(
    geoms: np.ndarray,
    rank: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    category: np.ndarray,
    shape: tuple[int, int],
) -> np.ndarray:
    points = shapely.points(lon, lat)
    point_index, grid_index = shapely.STRtree(geoms).query(points, predicate="intersects")
    order = np.lexsort((rank[grid_index], point_index))
    point_index, grid_index = point_index[order], grid_index[order]
    first = np.ones(point_index.size, dtype=bool)
    first[1:] = point_index[1:] != point_index[:-1]
    flat = grid_index[first] * shape[1] + category[point_index[first]]
    return np.bincount(flat, minlength=shape[0] * shape[1]).reshape(shape)


# ------------------------------------------------------------------------------------------
# PostGIS
# ------------------------------------------------------------------------------------------

_GRID_LATERAL = """
    SELECT g.id, c.category, c.n
    FROM bench_grids g
    CROSS JOIN LATERAL (
        SELECT i.category, count(*) AS n
        FROM bench_incidents i WHERE ST_Contains(g.geom, i.geom)
        GROUP BY i.category
    ) AS c
"""

#: PostGIS query forms: short name → (description, SQL). The planner runs the plain JOIN
#: point by point (a nested loop over the incidents probing the grid index), so each
#: ST_Contains gets another polygon; the LATERAL form forces one index scan of the incidents
#: per grid, where PostGIS keeps the grid's polygon prepared from one test to the next.
PG_QUERIES = {
    "PostGIS plain JOIN": (
        "plain JOIN … ON ST_Contains(g.geom, i.geom) GROUP BY",
        """
        SELECT g.id, i.category, count(*)
        FROM bench_grids g JOIN bench_incidents i ON ST_Contains(g.geom, i.geom)
        GROUP BY g.id, i.category
    """,
    ),
    "PostGIS subdivided JOIN": (
        f"JOIN ST_Subdivide(grid, {SUBDIVIDE_VERTICES}) pieces ON ST_Intersects GROUP BY",
        """
        SELECT s.id, i.category, count(*)
        FROM bench_grid_pieces s JOIN bench_incidents i ON ST_Intersects(s.geom, i.geom)
        GROUP BY s.id, i.category
    """,
    ),
    "PostGIS LATERAL per grid": (
        "LATERAL per grid (ST_Contains, GROUP BY category inside)",
        _GRID_LATERAL,
    ),
}
#: Run after ``CLUSTER bench_incidents USING`` its GiST index (incidents stored in spatial
#: order, so one grid's incidents sit on a few heap pages): the best form found.
PG_CLUSTERED_QUERIES = {
    "PostGIS LATERAL per grid, clustered": (
        "same LATERAL per grid, incidents CLUSTERed on the GiST index",
        _GRID_LATERAL,
    ),
}


class PostGIS:
    """A throwaway PostGIS database holding the grids and the incidents."""

    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        self.conninfo = {
            "host": url.host or "127.0.0.1",
            "port": url.port or 5432,
            "user": url.username or "postgres",
            "password": url.password or None,
        }
        self.admin_db = url.database or "postgres"
        self.conn: psycopg.Connection[Any] | None = None

    def _connect(self, dbname: str) -> psycopg.Connection[Any]:
        options = {k: v for k, v in self.conninfo.items() if v is not None}
        return psycopg.connect(dbname=dbname, autocommit=True, **options)

    def create(self) -> None:
        with self._connect(self.admin_db) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {BENCH_DATABASE}")
        self.conn = self._connect(BENCH_DATABASE)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        # JIT compilation adds 0.3–1 s to every query here and saves nothing
        self.conn.execute("SET jit = off")

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        with self._connect(self.admin_db) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")

    def versions(self) -> str:
        assert self.conn is not None
        server = self.conn.execute("SHOW server_version").fetchone()
        postgis = self.conn.execute("SELECT postgis_lib_version()").fetchone()
        workers = self.conn.execute("SHOW max_parallel_workers_per_gather").fetchone()
        work_mem = self.conn.execute("SHOW work_mem").fetchone()
        assert server and postgis and workers and work_mem
        return (
            f"PostgreSQL {server[0].split()[0]} + PostGIS {postgis[0]}, server defaults "
            f"(max_parallel_workers_per_gather={workers[0]}, work_mem={work_mem[0]}) "
            "but jit=off"
        )

    def load(
        self, geoms: np.ndarray, lon: np.ndarray, lat: np.ndarray, category: np.ndarray
    ) -> dict[str, float]:
        """Copy grids and incidents in, index and analyse; return the seconds of each step."""
        assert self.conn is not None
        conn = self.conn
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        conn.execute(
            "CREATE TABLE bench_grids (id integer PRIMARY KEY, geom geometry(MultiPolygon, 4326))"
        )
        conn.execute(
            "CREATE TABLE bench_incidents (id integer, category text, geom geometry(Point, 4326))"
        )
        polygons = shapely.get_type_id(geoms) == 3
        multi = geoms.copy()
        if polygons.any():
            multi[polygons] = shapely.multipolygons(
                geoms[polygons], indices=np.arange(int(polygons.sum()))
            )
        multi = shapely.set_srid(multi, 4326)
        self._copy(
            "bench_grids (id, geom)",
            [np.arange(geoms.size), shapely.to_wkb(multi, hex=True, include_srid=True)],
        )
        points = shapely.set_srid(shapely.points(lon, lat), 4326)
        for begin in range(0, lon.size, 250_000):
            part = slice(begin, begin + 250_000)
            self._copy(
                "bench_incidents (id, category, geom)",
                [
                    np.arange(lon.size)[part],
                    category[part],
                    shapely.to_wkb(points[part], hex=True, include_srid=True),
                ],
            )
        seconds["copy"] = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("CREATE INDEX ON bench_grids USING gist (geom)")
        conn.execute("CREATE INDEX ON bench_incidents USING gist (geom)")
        seconds["gist"] = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute(
            "CREATE TABLE bench_grid_pieces AS "
            f"SELECT id, ST_Subdivide(geom, {SUBDIVIDE_VERTICES}) AS geom FROM bench_grids"
        )
        conn.execute("CREATE INDEX ON bench_grid_pieces USING gist (geom)")
        seconds["subdivide"] = time.perf_counter() - start
        start = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        seconds["analyze"] = time.perf_counter() - start
        return seconds

    def cluster(self) -> float:
        """Rewrite the incidents in the order of their GiST index; return the seconds."""
        assert self.conn is not None
        start = time.perf_counter()
        self.conn.execute("CLUSTER bench_incidents USING bench_incidents_geom_idx")
        self.conn.execute("ANALYZE bench_incidents")
        return time.perf_counter() - start

    def _copy(self, target: str, columns: list[np.ndarray]) -> None:
        assert self.conn is not None
        buffer = io.StringIO()
        buffer.writelines("\t".join(map(str, row)) + "\n" for row in zip(*columns, strict=True))
        with self.conn.cursor() as cursor, cursor.copy(f"COPY {target} FROM STDIN") as copy:
            copy.write(buffer.getvalue())

    def pieces(self) -> int:
        assert self.conn is not None
        row = self.conn.execute("SELECT count(*) FROM bench_grid_pieces").fetchone()
        assert row is not None
        return int(row[0])

    def count(self, query: str, categories: list[str], shape: tuple[int, int]) -> np.ndarray:
        assert self.conn is not None
        rows = self.conn.execute(query).fetchall()
        matrix = np.zeros(shape, dtype=np.int64)
        if rows:
            grid, category, count = zip(*rows, strict=True)
            codes = pd.Categorical(category, categories=categories).codes
            np.add.at(matrix, (np.asarray(grid), codes), np.asarray(count))
        return matrix


# ------------------------------------------------------------------------------------------


def row(name: str, seconds: list[float] | float, note: str = "") -> str:
    if isinstance(seconds, list):
        best = f"{min(seconds):9.3f} s"
        median = f"({statistics.median(seconds):.3f} s)" if len(seconds) > 1 else ""
    else:
        best, median = f"{seconds:9.3f} s", ""
    return f"  {name:<60} {best} {median:<11} {note}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=5000)
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each in-process method")
    parser.add_argument("--pg-repeat", type=int, default=2, help="runs of each PostGIS query")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GRIDWATCH_TEST_PG_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres",
        help=f"PostgreSQL server (a database {BENCH_DATABASE} is created and dropped there)",
    )
    parser.add_argument("--skip-postgis", action="store_true")
    parser.add_argument("--keep-db", action="store_true", help=f"keep {BENCH_DATABASE}")
    args = parser.parse_args(argv)

    log("building the synthetic city (grids and incidents only) …")
    start = time.perf_counter()
    city = city_frames(
        args.seed, grids=args.grids, incidents=args.incidents, cameras=0, patrol_hours=0
    )
    built = time.perf_counter() - start
    grids = city.grids
    codes = grids["code"].tolist()
    geoms = np.asarray(grids.geometry.values)
    incidents = city.incidents
    lon = incidents["lon"].to_numpy()
    lat = incidents["lat"].to_numpy()
    categories = list(incidents["category"].cat.categories)
    category = incidents["category"].cat.codes.to_numpy().astype(np.int64)
    shape = (len(codes), len(categories))
    vertices = shapely.get_num_coordinates(geoms)
    rank = np.empty(len(codes), dtype=np.int64)
    rank[np.argsort(np.array(codes), kind="stable")] = np.arange(len(codes))

    results: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {}

    log("ours …")
    own_geoms = fresh(geoms)
    (ours_name, locator), times["ours build"] = timed(lambda: build_ours(codes, own_geoms), 1)
    results["ours"], times["ours"] = timed(
        lambda: count_ours(locator, lon, lat, category, shape), args.repeat
    )

    log("geopandas …")
    gp_grids = gpd.GeoDataFrame(geometry=fresh(geoms), crs=4326)
    points, times["points_from_xy"] = timed(
        lambda: gpd.GeoDataFrame(
            {"category": incidents["category"]}, geometry=gpd.points_from_xy(lon, lat), crs=4326
        ),
        args.repeat,
    )
    counts, times["geopandas"] = timed(lambda: count_geopandas(points, gp_grids), args.repeat)
    results["geopandas"] = geopandas_matrix(counts, categories, shape)

    log("plain shapely STRtree …")
    tree_geoms = fresh(geoms)
    results["strtree"], times["strtree"] = timed(
        lambda: count_strtree(tree_geoms, rank, lon, lat, category, shape), 1
    )

    pg_load: dict[str, float] = {}
    pg_versions = ""
    pieces = 0
    pg_error = ""
    if not args.skip_postgis:
        log(f"PostGIS: loading into {BENCH_DATABASE} …")
        database = PostGIS(args.pg_url)
        try:
            database.create()
            pg_versions = database.versions()
            pg_load = database.load(
                fresh(geoms), lon, lat, incidents["category"].to_numpy(dtype=object)
            )
            pieces = database.pieces()
            for forms in (PG_QUERIES, PG_CLUSTERED_QUERIES):
                if forms is PG_CLUSTERED_QUERIES:
                    log("PostGIS: CLUSTER bench_incidents USING its GiST index …")
                    pg_load["cluster"] = database.cluster()
                for name, (description, query) in forms.items():
                    log(f"{name}: {description} …")
                    results[name], times[name] = timed(
                        lambda query=query: database.count(query, categories, shape),
                        args.pg_repeat,
                    )
        except psycopg.Error as exc:
            pg_error = str(exc).strip().splitlines()[0]
        finally:
            if not args.keep_db:
                try:
                    database.drop()
                except psycopg.Error:
                    pass

    # --------------------------------------------------------------------------------------
    ours = min(times["ours"])
    build = times["ours build"][0]
    print()
    print(
        f"Incident counts per grid × category — Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, shapely {shapely.__version__} (GEOS "
        f"{shapely.geos_version_string}), geopandas {gpd.__version__}, pandas {pd.__version__}"
    )
    if pg_versions:
        print(pg_versions)
    print(
        f"synthetic city: {len(codes):,} grids ({vertices.mean():.0f} vertices on average, "
        f"{vertices.min()}–{vertices.max()}), {len(lon):,} incidents, {len(categories)} "
        f"categories (built in {built:.1f} s, seed {args.seed})"
    )
    print()
    print(f"ours: {ours_name}, best of {args.repeat} (median in brackets):")
    print(row("build for the grids (once per grid set)", build))
    print(row("assign(lon, lat) + np.bincount(grid × categories + category)", times["ours"]))
    print(row("total with the build", ours + build))
    print()
    print(f"geopandas, best of {args.repeat}:")
    print(row("points_from_xy → GeoDataFrame", times["points_from_xy"]))
    print(row('sjoin(points, grids, predicate="within") + groupby count', times["geopandas"]))
    print()
    print("plain shapely, one run:")
    print(
        row(
            'STRtree(grids).query(points, "intersects") + lowest code + bincount', times["strtree"]
        )
    )
    if pg_load:
        print()
        print(f"PostGIS ({BENCH_DATABASE}), best of {args.pg_repeat}:")
        print(row("COPY grids + incidents (once)", pg_load["copy"]))
        print(row("GiST indexes (once)", pg_load["gist"]))
        print(
            row(
                f"ST_Subdivide → {pieces:,} pieces + GiST (once, for the 2nd form)",
                pg_load["subdivide"],
            )
        )
        print(row("VACUUM ANALYZE (once)", pg_load["analyze"]))
        for name, (description, _) in PG_QUERIES.items():
            if name in times:
                print(row(description, times[name]))
        if "cluster" in pg_load:
            print(row("CLUSTER incidents USING GiST index + ANALYZE (once)", pg_load["cluster"]))
        for name, (description, _) in PG_CLUSTERED_QUERIES.items():
            if name in times:
                print(row(description, times[name]))
    if pg_error:
        print()
        print(f"PostGIS skipped: {pg_error}")

    print()
    print("Ratios (baseline / ours; ours = assign + count, build excluded | included):")
    baselines = {
        "geopandas sjoin + groupby": min(times["geopandas"]),
        "geopandas points_from_xy + sjoin + groupby": min(times["geopandas"])
        + min(times["points_from_xy"]),
        "plain shapely STRtree": min(times["strtree"]),
    }
    for name in [*PG_QUERIES, *PG_CLUSTERED_QUERIES]:
        if name in times:
            baselines[name] = min(times[name])
    for name, seconds in baselines.items():
        print(f"  {name:<60} {seconds / ours:7.1f}×  | {seconds / (ours + build):6.1f}×")

    print()
    print("Checks:")
    failures = []
    reference = results["strtree"]
    print(
        f"  incidents counted by the exact STRtree join: {int(reference.sum()):,} of "
        f"{len(lon):,}; non-empty (grid, category) pairs: {int((reference > 0).sum()):,}"
    )
    for name, matrix in results.items():
        if name == "strtree":
            continue
        differing = int((matrix != reference).sum())
        verdict = "identical" if differing == 0 else f"{differing} pairs DIFFER"
        print(f"  {name:<62} {verdict}")
        if differing:
            failures.append(f"{name}: {differing} (grid, category) counts differ")
    frames_differ = int(
        (np.bincount(incidents["grid_index"], minlength=shape[0]) != reference.sum(axis=1)).sum()
    )
    print(f"  grids whose count differs from the city's own grid_index: {frames_differ}")
    if frames_differ:
        failures.append(f"{frames_differ} grids differ from the city's grid_index")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of the whole run: {peak:,.0f} MB")
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
