"""Full-city aggregation benchmark: every metric for every period, and the incremental path.

On the synthetic city of ``bench/city.py`` (5,000 irregular grids of ~100 vertices, 1,000,000
incidents over two years, 15,000 cameras, 50,000 patrol hours of pings) this prints, in one
run:

1. **Incident counting** per grid and category: GridWatch's raster locator + ``bincount``
   beside plain ``geopandas.sjoin(predicate="within")`` and PostGIS (plain JOIN and the
   LATERAL-per-grid form), with the ratios; all must give identical counts.
2. **Camera coverage + blind-spot incidents** (every grid's covered share and blind-spot
   polygon, and which of the 1M incidents no camera sees) and **patrol dosage** (every period
   kind), timed as the engine runs them.
3. **Full recompute** of every metric for every period kind (``run_eager`` with
   ``full=True``: township units, Gi*, emerging classes, forecasts with back-test, roll-ups,
   metric blocks, publish), in a fresh process, with its peak memory; then again in the same
   process (warm, as in a long-lived worker).
4. **Incremental update** for 1,000 new incidents: import of the CSV plus the refresh it
   triggers until the metrics are published, and a check that they show the new incidents.

Targets (issue 3): counting <= 0.3 s per million, coverage <= 2 s, patrol <= 2 s, full
recompute < 20 s with peak memory < 4 GB, incremental < 2 s end to end.

Usage::

    .venv/bin/python bench/bench_aggregate.py            # full size (builds the city once)
    .venv/bin/python bench/bench_aggregate.py --grids 500 --incidents 100000 --cameras 1500 \\
        --patrol-hours 5000 --no-postgis                 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from city import add_city_arguments, cached_city  # noqa: E402

TARGETS = {
    "count_per_million": 0.3,
    "coverage": 2.0,
    "patrol": 2.0,
    "full": 20.0,
    "full_rss_gb": 4.0,
    "incremental": 2.0,
}

CHILD = r"""
import json, resource, sys, time
from gridwatch.config import load_settings
from gridwatch.storage import create_db_engine
from gridwatch.workers.engine import RunRequest, run_eager
settings = load_settings()
engine = create_db_engine(settings.database_url)
out = []
for attempt in range(int(sys.argv[1])):
    start = time.perf_counter()
    summary = run_eager(engine, settings, RunRequest(trigger="bench", full=True))
    out.append({"seconds": time.perf_counter() - start, "summary": summary})
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
print(json.dumps({"runs": out, "peak_rss_gb": rss}))
"""


def log(message: str) -> None:
    print(message, flush=True)


def row(name: str, seconds: float, note: str = "") -> str:
    return f"  {name:<58} {seconds:9.3f} s  {note}".rstrip()


def environment(settings_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GRIDWATCH_DATABASE_URL": settings_url,
            "GRIDWATCH_REDIS_URL": "",
            "GRIDWATCH_TIMEZONE": "Asia/Shanghai",
        }
    )
    return env


def count_section(engine: Any, postgis_url: str | None) -> dict[str, float]:
    """Time incident counting per grid × category: ours, geopandas, PostGIS."""
    import bench_count
    import geopandas as gpd
    import pandas as pd
    from sqlalchemy import select

    from gridwatch.geo.locate import RasterLocator
    from gridwatch.storage.db import session_scope
    from gridwatch.storage.models import Area, Incident

    with session_scope(engine) as session:
        parents = select(Area.parent_id).where(Area.parent_id.is_not(None))
        grids = session.execute(
            select(Area.code, Area.geom).where(Area.id.not_in(parents)).order_by(Area.code)
        ).all()
        incidents = session.execute(select(Incident.lon, Incident.lat, Incident.category)).all()
    codes = [g.code for g in grids]
    geoms = np.empty(len(grids), dtype=object)
    geoms[:] = [g.geom for g in grids]
    lon = np.array([r[0] for r in incidents], dtype=float)
    lat = np.array([r[1] for r in incidents], dtype=float)
    category_values = pd.Categorical([r[2] for r in incidents])
    categories = [str(c) for c in category_values.categories]
    category = category_values.codes.astype(np.int64)
    shape = (len(codes), len(categories))
    million = len(lon) / 1e6
    log(
        f"\n1. Incident counting per grid and category "
        f"({len(lon):,} incidents, {len(codes):,} grids)"
    )
    figures: dict[str, float] = {}

    start = time.perf_counter()
    locator = RasterLocator(np.arange(len(codes), dtype=np.int64), codes, bench_count.fresh(geoms))
    figures["ours_build"] = time.perf_counter() - start
    best = float("inf")
    ours = None
    for _ in range(3):
        start = time.perf_counter()
        ours = bench_count.count_ours(locator, lon, lat, category, shape)
        best = min(best, time.perf_counter() - start)
    figures["ours"] = best
    log(row("GridWatch raster locator: build (once per set of grids)", figures["ours_build"]))
    log(
        row(
            "GridWatch raster locator + bincount (best of 3)",
            best,
            f"= {best / million:.3f} s per million",
        )
    )

    points = gpd.GeoDataFrame(
        {"category": category_values}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326"
    )
    frame = gpd.GeoDataFrame(geometry=bench_count.fresh(geoms), crs="EPSG:4326")
    start = time.perf_counter()
    counts = bench_count.count_geopandas(points, frame)
    figures["geopandas"] = time.perf_counter() - start
    geo = bench_count.geopandas_matrix(counts, categories, shape)
    log(
        row(
            "BASELINE geopandas.sjoin(predicate='within') + groupby",
            figures["geopandas"],
            f"{figures['geopandas'] / best:.1f}x ours",
        )
    )
    assert ours is not None and np.array_equal(ours, geo), "geopandas counts differ from ours"

    if postgis_url:
        database = bench_count.PostGIS(postgis_url)
        try:
            database.create()
            database.load(
                bench_count.fresh(geoms), lon, lat, category_values.astype(str).to_numpy()
            )
            for name in ("PostGIS plain JOIN", "PostGIS LATERAL per grid"):
                _description, query = bench_count.PG_QUERIES[name]
                start = time.perf_counter()
                matrix = database.count(query, categories, shape)
                seconds = time.perf_counter() - start
                figures[name] = seconds
                log(row(f"BASELINE {name}", seconds, f"{seconds / best:.1f}x ours"))
                assert np.array_equal(matrix, ours), f"{name} counts differ from ours"
        finally:
            database.drop()
    log("  identical counts: yes")
    figures["per_million"] = best / million
    return figures


def components_section(engine: Any, settings: Any) -> dict[str, float]:
    """Time coverage + blind-spot flags and patrol dosage as the engine runs them."""
    from datetime import UTC, datetime

    import pandas as pd
    from sqlalchemy import func, select

    from gridwatch.storage.db import epoch_seconds, read_frame, session_scope
    from gridwatch.storage.models import Incident, PatrolPing
    from gridwatch.workers import countywide
    from gridwatch.workers import engine as runs
    from gridwatch.workers.aggregate.incidents import PERIOD_KINDS

    log("\n2. Camera coverage and patrol dosage (as the engine runs them)")
    figures: dict[str, float] = {}
    run_id = runs.create_run(engine, runs.RunRequest(trigger="bench", full=True), mode="eager")
    with session_scope(engine) as session:
        xy = pd.DataFrame(session.execute(select(Incident.lon, Incident.lat)).all())
        start = time.perf_counter()
        coverage = runs._run_coverage(session, run_id)
        outside = coverage.views.outside(xy.iloc[:, 0].to_numpy(), xy.iloc[:, 1].to_numpy())
        figures["coverage"] = time.perf_counter() - start
        log(
            row(
                "coverage of every grid + views + blind-spot flags of all incidents",
                figures["coverage"],
                f"{int(outside.sum()):,} of {len(outside):,} incidents unseen",
            )
        )
        start = time.perf_counter()
        dosage, teams, _ = countywide.patrol_frames(
            session, settings.timezone, PERIOD_KINDS, datetime.now(UTC)
        )
        figures["patrol"] = time.perf_counter() - start
        # the same read of the pings on its own, to tell storage from computation
        start = time.perf_counter()
        pings = read_frame(
            session,
            select(
                PatrolPing.team_id,
                epoch_seconds(PatrolPing.ts),
                func.coalesce(PatrolPing.grid_id, -1),
            ),
            ["team_id", "ts", "grid_id"],
        )
        figures["patrol_read"] = time.perf_counter() - start
        rows = sum(len(f) for f in dosage.values())
        log(
            row(
                "patrol dosage, every period kind, and team activity",
                figures["patrol"],
                f"{rows:,} grid × period rows, {teams['inactive']} of {teams['total']} "
                "teams inactive",
            )
        )
        log(
            row(
                f"  of which reading {len(pings):,} pings from the database",
                figures["patrol_read"],
            )
        )
        log(row("  dosage computation alone", figures["patrol"] - figures["patrol_read"]))
    runs.mark_failed(engine, run_id, "bench: components only")
    return figures


def full_section(url: str, repeats: int) -> dict[str, Any]:
    log(f"\n3. Full recompute of every metric for every period (fresh process, {repeats} runs)")
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(repeats)],
        env=environment(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"full run failed:\n{result.stderr[-4000:]}")
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for i, run in enumerate(data["runs"]):
        summary = run["summary"]
        label = "first run (cold process: imports, caches)" if i == 0 else "again, warm process"
        timings = summary.get("timings") or {}
        log(
            row(
                label,
                run["seconds"],
                f"{summary['rows_read']:,} incidents read, {summary['rows_written']:,} blocks",
            )
        )
        if timings and i == len(data["runs"]) - 1:
            for name, seconds in timings.items():
                log(f"      {name:<40} {seconds:7.2f} s")
    log(f"  peak memory of the process: {data['peak_rss_gb']:.2f} GB")
    return data


def incremental_section(
    engine: Any, settings: Any, tmp: Path, count: int, prefix: str = "BENCH", label: str = ""
) -> float:
    """Import ``count`` new incidents and refresh; return the end-to-end seconds."""
    from sqlalchemy import select

    from gridwatch.ingest import import_file
    from gridwatch.storage.db import session_scope
    from gridwatch.storage.models import Area
    from gridwatch.workers.countywide import local_today
    from gridwatch.workers.engine import read_metrics
    from gridwatch.workers.service import refresh_after_import

    log(f"\n4. Incremental update: {count:,} new incidents imported and refreshed ({label})")
    rng = np.random.default_rng(sum(map(ord, prefix)))  # other grids for another prefix
    with session_scope(engine) as session:
        parents = select(Area.parent_id).where(Area.parent_id.is_not(None))
        grids = session.execute(select(Area.geom).where(Area.id.not_in(parents))).scalars().all()
    import shapely

    # 20 grids (a busy morning in a few townships), points well inside them
    chosen = rng.choice(len(grids), size=20, replace=False)
    centres = shapely.point_on_surface(np.array([grids[i] for i in chosen], dtype=object))
    yesterday = local_today(settings.timezone) - timedelta(days=1)
    lines = ["id,occurred_at,category,lon,lat"]
    for n in range(count):
        centre = centres[n % len(centres)]
        lines.append(
            f"{prefix}-{yesterday:%Y%m%d}-{n},{yesterday} {rng.integers(0, 24):02d}:"
            f"{rng.integers(0, 60):02d},theft,{centre.x:.7f},{centre.y:.7f}"
        )
    path = tmp / "new_incidents.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    before = read_metrics(engine, "county", yesterday.isoformat())[0]["incidents_total"]
    start = time.perf_counter()
    summary = import_file("incidents", path, settings, engine)
    imported = time.perf_counter() - start
    refresh = refresh_after_import(settings, engine, summary.affected_grid_ids)
    seconds = time.perf_counter() - start
    after = read_metrics(engine, "county", yesterday.isoformat())[0]["incidents_total"]
    log(row("import (CSV → incidents, grid join, quarantine check)", imported))
    log(
        row(
            "refresh until published (incremental run)",
            seconds - imported,
            f"{refresh.get('townships_done')} townships, scope {refresh.get('scope')}",
        )
    )
    log(row("end to end", seconds, f"county {yesterday}: {before:,} → {after:,} incidents"))
    for name, lap in (refresh.get("timings") or {}).items():
        log(f"      {name:<40} {lap:7.3f} s")
    assert after - before == summary.imported == count, "the new incidents are not all shown"
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_city_arguments(parser)
    parser.add_argument(
        "--postgis",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="PostgreSQL server for the PostGIS baseline",
    )
    parser.add_argument("--no-postgis", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="full runs in the child process")
    parser.add_argument("--new-incidents", type=int, default=1000)
    args = parser.parse_args(argv)

    from gridwatch.config import load_settings
    from gridwatch.storage import create_db_engine

    log(
        f"GridWatch aggregation benchmark — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    start = time.perf_counter()
    cached = cached_city(args, progress=lambda m: log(f"  {m}"))
    log(f"city: {cached} ({time.perf_counter() - start:.1f} s to build or reuse)")

    with tempfile.TemporaryDirectory(prefix="gw-bench-") as scratch:
        tmp = Path(scratch)
        database = tmp / "city.db"
        shutil.copyfile(cached, database)  # the incremental step adds incidents
        url = f"sqlite:///{database}"
        os.environ.update(environment(url))
        os.environ["GRIDWATCH_VAR_DIR"] = str(tmp / "var")
        settings = load_settings()
        engine = create_db_engine(url)
        from gridwatch.storage import upgrade_database

        upgrade_database(engine)
        counting = count_section(engine, None if args.no_postgis else args.postgis)
        components = components_section(engine, settings)
        full = full_section(url, args.repeats)
        # The first refresh in a process also pays for imports (SciPy, the hot-spot and
        # forecast modules) and first-use caches; a running worker has paid them already.
        cold_incremental = incremental_section(
            engine, settings, tmp, args.new_incidents, prefix="FIRST", label="first in process"
        )
        incremental = incremental_section(
            engine, settings, tmp, args.new_incidents, label="warm process, as a running worker"
        )

    warm = min(r["seconds"] for r in full["runs"])
    cold = full["runs"][0]["seconds"]
    log("\nSummary against the targets")
    checks = [
        (
            "incident counting, s per million",
            counting["per_million"],
            TARGETS["count_per_million"],
        ),
        ("camera coverage + blind-spot incidents, s", components["coverage"], TARGETS["coverage"]),
        (
            "patrol dosage (computation), s",
            components["patrol"] - components["patrol_read"],
            TARGETS["patrol"],
        ),
        ("patrol dosage incl. reading the pings, s", components["patrol"], TARGETS["patrol"]),
        ("full recompute, s (best run)", warm, TARGETS["full"]),
        ("full recompute, s (cold process)", cold, TARGETS["full"]),
        ("full recompute peak memory, GB", full["peak_rss_gb"], TARGETS["full_rss_gb"]),
        ("1,000 new incidents end to end, s (warm process)", incremental, TARGETS["incremental"]),
        ("1,000 new incidents end to end, s (first in process)", cold_incremental, None),
    ]
    for label, value, target in checks:
        if target is None:
            log(f"  {label:<52} {value:8.3f}   (no target)")
            continue
        verdict = "ok" if value <= target else "MISSED"
        log(f"  {label:<52} {value:8.3f}   target {target:g}   {verdict}")
    ratios = [
        f"geopandas {counting['geopandas'] / counting['ours']:.1f}x",
        *(
            f"{k} {counting[k] / counting['ours']:.1f}x"
            for k in ("PostGIS plain JOIN", "PostGIS LATERAL per grid")
            if k in counting
        ),
    ]
    log("  counting, baseline / ours: " + ", ".join(ratios))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
