"""Scale-out benchmark: one full run on 1, 2 and 4 Celery worker processes.

The synthetic city of ``bench/city.py`` (default ``--grids 1000 --incidents 200000``) is
loaded into a fresh PostGIS database on the PostgreSQL server of ``--pg-url`` (dropped
afterwards), with a Redis server of its own on a free loopback port — the shared-Redis,
shared-PostGIS layout of several worker machines, on one machine. For each worker count N,
N worker processes (``celery worker --concurrency 1``, both queues, as ``gridwatch worker``
starts them) are started, and ``--repeats`` full runs are sent one after the other, each
timed from dispatch until it is published; the best is kept (the first run in a fresh worker
also pays for imports and first-use caches). The workers are stopped before the next N.

Printed: the seconds per run for each N, the speed-up against one worker, and the same run
in-process (``run_eager``, no Celery) as the baseline. A run fans out one task per township
(about grids / 100 of them) and finalises in one task, so the speed-up is bounded by the
cores (2 on our machines) and by the serial finalising step.

Usage::

    .venv/bin/python bench/bench_scaleout.py                       # 1000 grids, 200,000 incidents
    .venv/bin/python bench/bench_scaleout.py --grids 300 --incidents 50000 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from city import add_city_arguments, city_frames, city_sizes, load_city  # noqa: E402
from support import free_port, log  # noqa: E402

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SECRET_KEY = "bench-scaleout-secret-key-0123456789"


class Services:
    """A fresh PostGIS database and a private Redis server; :meth:`close` removes both."""

    def __init__(self, pg_url: str, root: Path) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self.admin_url = make_url(pg_url)
        self.name = f"gw_bench_scaleout_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        finally:
            admin.dispose()
        self.database_url = self.admin_url.set(database=self.name).render_as_string(
            hide_password=False
        )
        engine = create_engine(self.database_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        finally:
            engine.dispose()
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed")
        self.redis_port = free_port()
        (root / "redis").mkdir()
        self.redis = subprocess.Popen(
            [server, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", ""]
            + ["--appendonly", "no", "--dir", str(root / "redis")],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not answer")

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def close(self) -> None:
        from sqlalchemy import create_engine, text

        self.redis.terminate()
        self.redis.wait(timeout=30)
        admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        finally:
            admin.dispose()


def start_workers(env: dict[str, str], count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` single-process workers on both queues; return once all answer."""
    from gridwatch.workers.celery_app import app_for

    host = socket.gethostname()
    names = [f"bench{count}w{n}@{host}" for n in range(1, count + 1)]
    procs = []
    for name in names:
        log_file = open(logs / f"{name.split('@')[0]}.log", "ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "celery", "--app", "gridwatch.workers.celery_app"]
                + ["worker", "--concurrency", "1", "--hostname", name, "--loglevel", "WARNING"]
                + ["--queues", "gridwatch.quick,gridwatch.heavy"],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    app = app_for(_settings(env))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        replies = app.control.ping(destination=names, timeout=1.0) or []
        if len({name for reply in replies for name in reply}) == count:
            return procs
        if any(p.poll() is not None for p in procs):
            break
    stop_workers(procs)
    raise RuntimeError(f"the {count} workers did not all answer (logs in {logs})")


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _settings(env: dict[str, str]) -> Any:
    from gridwatch.config import load_settings

    return load_settings({k: v for k, v in env.items() if k.startswith("GRIDWATCH_")})


def timed_run(env: dict[str, str], timeout: float = 900.0) -> dict[str, Any]:
    """Send one full run to the workers; return its summary with ``seconds`` to publish."""
    from gridwatch.storage import create_db_engine
    from gridwatch.workers.engine import RunRequest, get_run
    from gridwatch.workers.service import start_aggregation

    settings = _settings(env)
    engine = create_db_engine(settings.database_url)
    try:
        start = time.perf_counter()
        summary = start_aggregation(
            settings, engine, RunRequest(trigger="bench", full=True), wait=True, timeout_s=timeout
        )
        seconds = time.perf_counter() - start
        summary = get_run(engine, summary["run_id"])
    finally:
        engine.dispose()
    if summary["status"] != "done":
        raise RuntimeError(f"run {summary['run_id']} {summary['status']}: {summary['errors']}")
    summary["seconds"] = seconds
    # The finalising task publishes, then releases the run lock: wait for it, or the next
    # run would be refused as overlapping.
    import redis

    from gridwatch.workers.tasks import LOCK_NAME

    client = redis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + 30
        while client.get(LOCK_NAME) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_city_arguments(
        parser, grids=1000, incidents=200_000, cameras=3_000, patrol_hours=10_000, cache=False
    )
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GRIDWATCH_TEST_PG_URL") or DEFAULT_PG_URL,
        help="admin URL of the PostgreSQL server (a database is created and dropped)",
    )
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.workers.split(",") if c.strip()]

    from gridwatch.storage import create_db_engine
    from gridwatch.workers.engine import RunRequest, run_eager

    log(
        f"GridWatch scale-out benchmark ({os.cpu_count()} CPUs): {args.grids} grids, "
        f"{args.incidents:,} incidents, {args.cameras:,} cameras, {args.patrol_hours:,} "
        "patrol hours; PostGIS + Redis on loopback"
    )
    log(f"  load average at the start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="gw-bench-scaleout-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        services = Services(args.pg_url, root)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
            env.update(
                {
                    "GRIDWATCH_DATABASE_URL": services.database_url,
                    "GRIDWATCH_REDIS_URL": services.redis_url,
                    "GRIDWATCH_VAR_DIR": str(root / "var"),
                    "GRIDWATCH_SECRET_KEY": SECRET_KEY,
                }
            )
            city = city_frames(args.seed, **city_sizes(args))
            engine = create_db_engine(services.database_url)
            try:
                load_city(engine, city)
                log(f"  city built and loaded in {time.perf_counter() - started:.1f} s")
                baseline: float | None = None
                settings = _settings({**env, "GRIDWATCH_REDIS_URL": ""})
                best_eager = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    run_eager(engine, settings, RunRequest(trigger="bench", full=True))
                    best_eager = min(best_eager, time.perf_counter() - t0)
                log(f"  in-process (run_eager, no Celery): {best_eager:6.1f} s")
            finally:
                engine.dispose()
            logs = root / "logs"
            logs.mkdir()
            for count in counts:
                procs = start_workers(env, count, logs)
                try:
                    runs = [timed_run(env) for _ in range(args.repeats)]
                finally:
                    stop_workers(procs)
                best = min(runs, key=lambda r: r["seconds"])
                each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
                baseline = baseline or best["seconds"]
                phases = sorted(best["timings"].items(), key=lambda kv: -kv[1])[:4]
                log(
                    f"  {count} worker process{'es' if count > 1 else '':<2}: "
                    f"{best['seconds']:6.1f} s per full run "
                    f"(runs: {each} s; "
                    f"{best['townships_total']} townships)  "
                    f"speed-up {baseline / best['seconds']:.2f}×"
                )
                serial = sum(v for k, v in best["timings"].items() if k.startswith("finalize"))
                log(
                    f"      finalising (one task, serial) {serial:.1f} s; longest phases: "
                    + ", ".join(f"{k} {v:.1f} s" for k, v in phases)
                )
        finally:
            services.close()
    log(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
