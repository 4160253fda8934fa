"""Benchmark the incident importer against the floor any importer has to pay.

Generates ``--rows`` synthetic incidents (default 1,000,000) as a GBK CSV with Chinese headers
and GCJ-02 coordinates, plus a GeoJSON of ~3,000 square grids (WGS84) they fall into; imports
the grids and then the incidents into a fresh database through
:func:`gridwatch.ingest.import_file`, then imports the incidents again (all duplicates).

The BASELINE, measured in the same run on the same backend and file, is ``csv.reader`` over
the GBK file plus a bare ``executemany`` of the raw string rows into an untyped table, in
chunks of the importer's chunk size and one transaction: no validation, no coordinates, no
grid join, no duplicate check. ``import / baseline`` is what GridWatch's checks cost.

Memory: RSS is sampled every 20 ms in a thread (``/proc/self/statm``) and reported per phase
as the peak and its growth over the RSS at the start of the phase; ``ru_maxrss`` (the
process-lifetime peak) is printed at the end. ``--tracemalloc`` adds the Python-heap peak of
the incident import and the source lines holding the most memory after its last chunk (slows
the import down about 2×).

Examples
--------
::

    .venv/bin/python bench/bench_import.py --rows 100000
    .venv/bin/python bench/bench_import.py                    # 1,000,000 rows
    .venv/bin/python bench/bench_import.py --rows 100000 --profile /tmp/import.prof
    .venv/bin/python bench/bench_import.py --rows 100000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import csv
import json
import os
import platform
import pstats
import resource
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from gridwatch.config import Settings, load_settings
from gridwatch.geo.coords import wgs84_to_gcj02
from gridwatch.ingest import ImportOptions, ImportSummary, import_file
from gridwatch.storage import create_db_engine, upgrade_database
from gridwatch.storage.models import Incident
from gridwatch.taxonomy import load_taxonomy

HEADER = ["警情编号", "发案时间", "案件类别", "经度", "纬度", "发案地址", "警情来源", "办理状态"]
SOURCES = ["110报警", "来所报案", "巡逻发现", "其他"]
STATUSES = ["已受理", "已破案", "已结案", "接警"]
ROADS = ["人民路", "解放路", "建设路", "中山路", "新华路", "光明街", "工业园路", "环城北路"]
# Grid layout: a block of GRID_COLS × GRID_ROWS squares of GRID_DEG degrees (~500 m) near
# Changsha, Hunan (WGS84). 60 × 50 = 3,000 grids.
X0, Y0, GRID_DEG, GRID_COLS, GRID_ROWS = 112.80, 28.00, 0.005, 60, 50
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


# ------------------------------------------------------------------------------------------
# Memory sampling and phase timing
# ------------------------------------------------------------------------------------------


def current_rss() -> int | None:
    """Return the resident set size in bytes (Linux ``/proc``), or ``None`` elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return None


def max_rss_bytes() -> int:
    """Return ``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RssSampler:
    """Sample RSS in a daemon thread; :meth:`reset` starts a new peak."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = current_rss() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss = current_rss()
            if rss is not None and rss > self.peak:
                self.peak = rss

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def reset(self) -> int:
        """Start a new phase: return the RSS now and make it the peak."""
        now = current_rss() or 0
        self.peak = now
        return now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Phase:
    """One measured step."""

    name: str
    rows: int = 0
    seconds: float = 0.0
    rss_start: int = 0
    rss_peak: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


class Bench:
    """Runs phases, remembers their figures and prints the table."""

    def __init__(self) -> None:
        self.sampler = RssSampler().start()
        self.phases: list[Phase] = []

    @contextlib.contextmanager
    def phase(self, name: str, rows: int = 0) -> Iterator[Phase]:
        record = Phase(name, rows)
        record.rss_start = self.sampler.reset()
        log(f"{name} …")
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = time.perf_counter() - start
            record.rss_peak = max(self.sampler.peak, current_rss() or 0)
            self.phases.append(record)
            log(f"{name}: {record.seconds:.1f} s")

    def get(self, name: str) -> Phase:
        return next(p for p in self.phases if p.name == name)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f}"


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------


def write_grids(path: Path) -> int:
    """Write GRID_COLS × GRID_ROWS square grids as GeoJSON with Chinese property names."""
    features = []
    n = 0
    for j in range(GRID_ROWS):
        for i in range(GRID_COLS):
            n += 1
            x, y = X0 + i * GRID_DEG, Y0 + j * GRID_DEG
            ring = [
                [round(x, 6), round(y, 6)],
                [round(x + GRID_DEG, 6), round(y, 6)],
                [round(x + GRID_DEG, 6), round(y + GRID_DEG, 6)],
                [round(x, 6), round(y + GRID_DEG, 6)],
                [round(x, 6), round(y, 6)],
            ]
            features.append(
                {
                    "type": "Feature",
                    "properties": {"网格编码": f"4301219{n:05d}", "网格名称": f"第{n}网格"},
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                }
            )
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
        "utf-8",
    )
    return n


def write_incidents(path: Path, rows: int, seed: int, bad_fraction: float) -> dict[str, int]:
    """Write ``rows`` incidents as a GBK CSV; return how many were made bad or put outside.

    About 1 % of the points lie just outside the grid block (kept, flagged ``outside_grids``);
    ``bad_fraction`` of the rows carry an unknown category, an impossible date or no latitude
    (rejected into quarantine).
    """
    rng = np.random.default_rng(seed)
    zh_names = [c.zh for c in load_taxonomy().categories.values()]
    width, height = GRID_COLS * GRID_DEG, GRID_ROWS * GRID_DEG
    counts = {"outside": 0, "bad": 0}
    chunk = 100_000
    start = np.datetime64("2026-01-01T00:00:00")
    span = int((np.datetime64("2026-11-01T00:00:00") - start) / np.timedelta64(1, "s"))
    with open(path, "w", encoding="gbk", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for offset in range(0, rows, chunk):
            n = min(chunk, rows - offset)
            # Keep inside points 10 m off the block's outer edge: the 6-decimal GCJ-02 text
            # round-trips to WGS84 within ~0.1 m, so a point on the edge could flip outside.
            margin = 1e-4
            lon = X0 + rng.uniform(margin, width - margin, n)
            lat = Y0 + rng.uniform(margin, height - margin, n)
            outside = rng.random(n) < 0.01
            lon[outside] = X0 + width + rng.uniform(0.001, 0.05, outside.sum())
            counts["outside"] += int(outside.sum())
            glon, glat = wgs84_to_gcj02(lon, lat)
            when = start + rng.integers(0, span, n).astype("timedelta64[s]")
            when_text = np.char.replace(np.datetime_as_string(when, unit="s"), "T", " ")
            lon_text = np.char.mod("%.6f", glon)
            lat_text = np.char.mod("%.6f", glat)
            category = rng.integers(0, len(zh_names), n)
            source = rng.integers(0, len(SOURCES), n)
            status = rng.integers(0, len(STATUSES), n)
            road = rng.integers(0, len(ROADS), n)
            number = rng.integers(1, 999, n)
            bad = rng.random(n) < bad_fraction
            out = []
            for k in range(n):
                row = [
                    f"J43012126{offset + k:010d}",
                    str(when_text[k]),
                    zh_names[category[k]],
                    str(lon_text[k]),
                    str(lat_text[k]),
                    f"城关镇{ROADS[road[k]]}{number[k]}号",
                    SOURCES[source[k]],
                    STATUSES[status[k]],
                ]
                if bad[k]:
                    kind = (offset + k) % 3
                    if kind == 0:
                        row[2] = "外星人入侵"
                    elif kind == 1:
                        row[1] = "2026-13-45 25:61:00"
                    else:
                        row[4] = ""
                out.append(row)
            counts["bad"] += int(bad.sum())
            counts["outside"] -= int((bad & outside).sum())
            writer.writerows(out)
    return counts


# ------------------------------------------------------------------------------------------
# Baseline: csv.reader + executemany of raw strings
# ------------------------------------------------------------------------------------------


def baseline_parse(path: Path, encoding: str) -> int:
    """Parse the CSV with ``csv.reader`` and nothing else; return the data rows."""
    n = 0
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for _ in reader:
            n += 1
    return n


def baseline_insert(path: Path, encoding: str, engine: Engine, chunk: int) -> int:
    """``csv.reader`` + ``executemany`` of the raw rows into an untyped table, one transaction."""
    columns = ", ".join(f"c{i} TEXT" for i in range(len(HEADER)))
    mark = "?" if engine.dialect.name == "sqlite" else "%s"
    insert = f"INSERT INTO bench_raw VALUES ({', '.join([mark] * len(HEADER))})"
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_raw"))
        conn.execute(text(f"CREATE TABLE bench_raw ({columns})"))
    n = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        with open(path, encoding=encoding, newline="") as fh:
            reader = csv.reader(fh)
            next(reader)
            batch: list[list[str]] = []
            for row in reader:
                batch.append(row)
                if len(batch) >= chunk:
                    cursor.executemany(insert, batch)
                    n += len(batch)
                    batch = []
            if batch:
                cursor.executemany(insert, batch)
                n += len(batch)
        raw.commit()
        cursor.close()
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_raw"))
    return n


# ------------------------------------------------------------------------------------------
# Databases
# ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(url: str | None, workdir: Path, keep: bool) -> Iterator[str]:
    """Yield a fresh database URL: a SQLite file in ``workdir``, or a throwaway PostGIS database.

    For PostgreSQL, ``url`` names the server (any existing database on it); a new database
    ``gw_bench_<hex>`` with PostGIS is created there and dropped afterwards unless ``keep``.
    """
    if not url:
        yield f"sqlite:///{workdir / 'var' / 'bench.db'}"
        return
    server = make_url(url)
    if server.get_backend_name() != "postgresql":
        raise SystemExit("--database-url must be a postgresql:// URL (SQLite is the default)")
    if server.drivername == "postgresql":
        server = server.set(drivername="postgresql+psycopg")
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        target = server.set(database=name)
        eng = create_engine(target, isolation_level="AUTOCOMMIT")
        try:
            with eng.connect() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        finally:
            eng.dispose()
        log(f"created PostgreSQL database {name}")
        yield target.render_as_string(hide_password=False)
    finally:
        if keep:
            log(f"kept PostgreSQL database {name}")
        else:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_bench_settings(workdir: Path, url: str, chunk_size: int | None) -> Settings:
    env = {
        "GRIDWATCH_VAR_DIR": str(workdir / "var"),
        "GRIDWATCH_DATABASE_URL": url,
        "GRIDWATCH_SECRET_KEY": "bench-secret-key-0123456789",
    }
    if chunk_size:
        env["GRIDWATCH_IMPORT_CHUNK_SIZE"] = str(chunk_size)
    return load_settings(env)


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


#: Snapshot of the Python heap after the last chunk of an import (with ``--tracemalloc``).
SNAPSHOTS: list[tracemalloc.Snapshot] = []


def progress_printer(total: int, every: int = 100_000) -> Callable[[int], None]:
    start = time.perf_counter()
    shown = [0]

    def show(read: int) -> None:
        if read == total and tracemalloc.is_tracing() and not SNAPSHOTS:
            SNAPSHOTS.append(tracemalloc.take_snapshot())
        if read - shown[0] >= every or read == total:
            shown[0] = read
            elapsed = time.perf_counter() - start
            log(f"  {read:,} rows read, {elapsed:.0f} s, RSS {mb(current_rss() or 0)} MB")

    return show


def run_import(
    kind: str,
    path: Path,
    settings: Settings,
    engine: Engine,
    options: ImportOptions,
    total: int,
    profile: Path | None = None,
    every: int = 100_000,
) -> ImportSummary:
    show = progress_printer(total, every)
    if profile is None:
        return import_file(kind, path, settings, engine, options, progress=show)
    profiler = cProfile.Profile()
    summary = profiler.runcall(import_file, kind, path, settings, engine, options, show)
    profiler.dump_stats(str(profile))
    return summary


def print_profile(path: Path, top: int) -> None:
    for order in ("tottime", "cumulative"):
        print(f"\n--- cProfile of the incident import, top {top} by {order} ---")
        stats = pstats.Stats(str(path))
        stats.strip_dirs().sort_stats(order).print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="incident rows (1,000,000)")
    parser.add_argument("--seed", type=int, default=20260701)
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=0.001,
        help="share of rows made invalid to exercise quarantine (0.001)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server URL; a throwaway PostGIS database is created there "
        "(default: a SQLite file in the temporary directory)",
    )
    parser.add_argument("--chunk-size", type=int, help="GRIDWATCH_IMPORT_CHUNK_SIZE to use")
    parser.add_argument(
        "--pg-no-prepare",
        action="store_true",
        help="PostgreSQL: turn psycopg's automatic server-side prepared statements off "
        "(connect_args prepare_threshold=None) to compare with the default",
    )
    parser.add_argument("--workdir", type=Path, help="directory for files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files / PG database")
    parser.add_argument("--no-reimport", action="store_true", help="skip the re-import")
    parser.add_argument("--tracemalloc", action="store_true", help="Python-heap peak (slower)")
    parser.add_argument("--profile", type=Path, help="cProfile the incident import to this file")
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument(
        "--progress-every", type=int, default=100_000, help="log progress every N rows"
    )
    args = parser.parse_args(argv)
    # Turn SIGTERM into SystemExit so the temporary directory / PG database are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    bench = Bench()
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = args.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        elif args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gw-bench-")))
        grids_path = workdir / "grids.geojson"
        csv_path = workdir / "incidents_gbk.csv"

        with bench.phase("generate grids + CSV", args.rows) as ph:
            n_grids = write_grids(grids_path)
            made = write_incidents(csv_path, args.rows, args.seed, args.bad_fraction)
            ph.note = f"{n_grids:,} grids, CSV {mb(csv_path.stat().st_size)} MB (GBK)"

        url = stack.enter_context(database(args.database_url, workdir, args.keep))
        settings = make_bench_settings(workdir, url, args.chunk_size)
        engine_args: dict[str, Any] = {}
        if args.pg_no_prepare and url.startswith("postgresql"):
            engine_args["connect_args"] = {"prepare_threshold": None}
        engine = create_db_engine(settings.database_url, **engine_args)
        stack.callback(engine.dispose)
        upgrade_database(engine)

        with bench.phase("baseline: csv.reader only", args.rows) as ph:
            assert baseline_parse(csv_path, "gbk") == args.rows
            ph.note = "parse the GBK CSV, nothing else"
        with bench.phase("baseline: csv.reader + executemany", args.rows) as ph:
            n = baseline_insert(csv_path, "gbk", engine, settings.import_chunk_size)
            assert n == args.rows
            ph.note = (
                f"raw strings into an untyped table, chunks of {settings.import_chunk_size:,}"
            )

        with bench.phase("import grids", n_grids) as ph:
            grids = import_file("grids", grids_path, settings, engine, ImportOptions())
            assert (grids.imported, grids.rejected) == (n_grids, 0), grids.as_dict()
            ph.note = "GeoJSON, WGS84"

        options = ImportOptions(crs="gcj02", encoding="auto")
        if args.tracemalloc:
            tracemalloc.start()
        with bench.phase("import incidents", args.rows) as ph:
            first = run_import(
                "incidents",
                csv_path,
                settings,
                engine,
                options,
                args.rows,
                args.profile,
                args.progress_every,
            )
            ph.note = (
                f"imported {first.imported:,}, rejected {first.rejected:,}, "
                f"duplicates {first.duplicates:,}"
            )
            if args.tracemalloc:
                ph.extra["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        problems = []
        if first.read != args.rows or first.rejected != made["bad"]:
            problems.append(f"first import {first.as_dict()} vs generated {made}")
        if first.imported != args.rows - made["bad"]:
            problems.append(f"imported {first.imported:,}, expected {args.rows - made['bad']:,}")

        with engine.connect() as conn:
            stored = conn.scalar(select(func.count()).select_from(Incident))
            outside = conn.scalar(
                select(func.count()).select_from(Incident).where(Incident.outside_grids)
            )
        if stored != first.imported or outside != made["outside"]:
            problems.append(f"stored {stored:,} / outside {outside:,}, generated {made}")

        if not args.no_reimport:
            with bench.phase("re-import (all duplicates)", args.rows) as ph:
                again = run_import(
                    "incidents",
                    csv_path,
                    settings,
                    engine,
                    options,
                    args.rows,
                    every=args.progress_every,
                )
                ph.note = (
                    f"imported {again.imported:,}, duplicates {again.duplicates:,}, "
                    f"rejected {again.rejected:,}"
                )
            if again.imported != 0 or again.duplicates != first.imported:
                problems.append(f"re-import {again.as_dict()}")

        backend = engine.dialect.name
        report(bench, args, backend, stored, outside, first)
        if args.profile:
            print_profile(args.profile, args.profile_top)
    bench.sampler.stop()
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if problems else 0


def report(
    bench: Bench,
    args: argparse.Namespace,
    backend: str,
    stored: int,
    outside: int,
    first: ImportSummary,
) -> None:
    print(
        f"\nGridWatch import benchmark: {args.rows:,} incident rows, backend {backend}, "
        f"Python {platform.python_version()}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPUs" + (", psycopg auto-prepare OFF" if args.pg_no_prepare else "")
    )
    if args.profile:
        print("NOTE: the incident import ran under cProfile; its time is inflated.")
    head = (
        f"{'phase':<36} {'rows':>11} {'seconds':>9} {'rows/s':>10} {'peak RSS MB':>12} {'Δ MB':>7}"
    )
    print(head)
    print("-" * len(head))
    for p in bench.phases:
        print(
            f"{p.name:<36} {p.rows:>11,} {p.seconds:>9.2f} {p.rate:>10,.0f} "
            f"{mb(p.rss_peak):>12} {mb(p.rss_peak - p.rss_start):>7}  {p.note}"
        )
    base = bench.get("baseline: csv.reader + executemany")
    parse = bench.get("baseline: csv.reader only")
    imp = bench.get("import incidents")
    print()
    print(f"incidents stored {stored:,} ({outside:,} outside every grid), report: {first.report}")
    print(f"import / baseline(csv.reader + executemany) = {imp.seconds / base.seconds:.1f}×")
    print(f"import / baseline(csv.reader only)          = {imp.seconds / parse.seconds:.1f}×")
    print(f"import time per 1,000,000 rows: {imp.seconds / args.rows * 1e6 / 60:.1f} min")
    if "re-import (all duplicates)" in {p.name for p in bench.phases}:
        again = bench.get("re-import (all duplicates)")
        print(f"re-import / import = {again.seconds / imp.seconds:.2f}")
    if "tracemalloc_peak" in imp.extra:
        print(
            f"tracemalloc peak during the incident import: {mb(imp.extra['tracemalloc_peak'])} MB"
        )
    if SNAPSHOTS:
        snapshot = SNAPSHOTS[0].filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
        )
        stats = snapshot.statistics("lineno")
        total = sum(s.size for s in stats)
        print(f"Python heap held after the last chunk of the import: {mb(total)} MB; top lines:")
        for stat in stats[:12]:
            frame = stat.traceback[0]
            where = f"{Path(frame.filename).name}:{frame.lineno}"
            print(f"  {stat.size / 2**20:8.1f} MB {stat.count:>10,} blocks  {where}")
    print(f"ru_maxrss (process lifetime peak): {mb(max_rss_bytes())} MB")


if __name__ == "__main__":
    sys.exit(main())
