"""Faults and queues with real processes on loopback.

Already covered in ``test_workers_integration.py`` and not repeated here: a worker SIGKILLed
mid-run (a new worker completes the run, metrics equal an in-process run's) and a Redis
without persistence restarted mid-run (the run is failed and retried, published metrics
survive). This module adds:

- queues: an incremental refresh completes on the quick queue's worker while the only worker
  of the heavy queue is busy planning patrol routes;
- PostgreSQL stopped for 30 s in the middle of an import, on a private cluster started for the
  test (never the shared server): nothing committed is lost, the import fails with one
  sentence and commits nothing of its file, the web app serves the last published run and
  says the data is stale, and a worker started afterwards publishes what was committed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from conftest import free_port, service_unavailable
from sqlalchemy import func, select

from gridwatch.storage import create_db_engine
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import ImportBatch, Incident
from gridwatch.workers.engine import (
    RunRequest,
    create_run,
    get_run,
    list_runs,
    read_metrics,
    run_eager,
)

REDIS_TEST_DB = 12
BOTH_QUEUES = "gridwatch.quick,gridwatch.heavy"


# -- helpers ------------------------------------------------------------------------------------


def _env(settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env.update(
        {
            "GRIDWATCH_DATABASE_URL": settings.database_url,
            "GRIDWATCH_REDIS_URL": settings.redis_url,
            "GRIDWATCH_VAR_DIR": str(settings.var_dir),
            "GRIDWATCH_SECRET_KEY": settings.secret_key,
            "GRIDWATCH_STALE_MINUTES": str(settings.stale_minutes),
            "GRIDWATCH_IMPORT_CHUNK_SIZE": str(settings.import_chunk_size),
        }
    )
    env.update(extra)
    return env


def _start_worker(settings, name: str, queues: str, log_path: Path) -> subprocess.Popen:
    """Start a Celery worker ``NAME@host`` on ``QUEUES``, one process; return once it answers."""
    from gridwatch.workers.celery_app import app_for

    node = f"{name}@{socket.gethostname()}"
    log = open(log_path, "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "--app", "gridwatch.workers.celery_app", "worker"]
        + ["--concurrency", "1", "--queues", queues, "--hostname", node, "--loglevel", "INFO"],
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = app_for(settings)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker {name} exited: {log_path.read_text()[-2000:]}")
        if app.control.ping(destination=[node], timeout=0.5):
            return proc
    _stop(proc)
    pytest.fail(f"worker {name} did not answer within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process group: SIGTERM, then SIGKILL after 20 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def _wait_run(engine, run_id: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_run(engine, run_id)
        if run["status"] in ("done", "failed"):
            return run
        time.sleep(0.2)
    return get_run(engine, run_id)


def _incident_count(engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Incident)) or 0)


# -- queues: unit level ----------------------------------------------------------------------


def test_a_run_goes_to_the_queue_of_its_scope(settings, tmp_path):
    """Full runs (and every planning task) are heavy; an incremental run is quick."""
    from web_support import _frame

    from gridwatch.areas import load_tree
    from gridwatch.ingest import import_file
    from gridwatch.workers.celery_app import HEAVY_QUEUE, QUICK_QUEUE, create_celery_app
    from gridwatch.workers.engine import mark_dirty
    from gridwatch.workers.tasks import run_queue

    engine = create_db_engine(settings.database_url)
    grids = tmp_path / "areas.geojson"
    _frame().to_file(grids, driver="GeoJSON")
    summary = import_file("grids", grids, settings, engine)
    assert summary.imported == 9
    first = create_run(engine, RunRequest(), mode="worker")  # nothing published: full
    assert run_queue(engine, first) == HEAVY_QUEUE
    run_eager(engine, settings, RunRequest(full=True))
    mark_dirty(engine, {load_tree(engine).by_code["510000001001001"].id})  # as an import does
    incremental = create_run(engine, RunRequest(trigger="import"), mode="worker")
    assert get_run(engine, incremental)["scope"] == "incremental"
    assert run_queue(engine, incremental) == QUICK_QUEUE
    full = create_run(engine, RunRequest(full=True), mode="worker")
    assert run_queue(engine, full) == HEAVY_QUEUE
    app = create_celery_app(settings, set_as_current=False)
    for name, queue in [
        ("plan.cameras", HEAVY_QUEUE),
        ("plan.routes", HEAVY_QUEUE),
        ("aggregate.nightly", HEAVY_QUEUE),
        ("aggregate.township", HEAVY_QUEUE),
        ("aggregate.refresh", QUICK_QUEUE),
    ]:
        assert app.amqp.router.route({}, name)["queue"].name == queue, name


# -- queues: real workers ----------------------------------------------------------------------


@pytest.fixture
def worker_settings(postgres_url, redis_url, tmp_path):
    from conftest import make_settings

    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return make_settings(tmp_path, GRIDWATCH_DATABASE_URL=postgres_url, GRIDWATCH_REDIS_URL=url)


@pytest.mark.postgres
@pytest.mark.slow
def test_incremental_refresh_completes_while_the_heavy_worker_plans_routes(
    worker_settings, tmp_path
):
    from celery.result import AsyncResult

    from gridwatch.demo.build import build_demo
    from gridwatch.ingest import import_file
    from gridwatch.storage.models import Station
    from gridwatch.workers.celery_app import app_for
    from gridwatch.workers.service import refresh_after_import

    settings = worker_settings
    engine = create_db_engine(settings.database_url)
    build_demo(settings, engine, tmp_path / "demo", seed=3, scale="small")
    published = run_eager(engine, replace(settings, redis_url=""), RunRequest(full=True))
    before = read_metrics(engine, "county", "2026")[0]["incidents_total"]
    with session_scope(engine) as session:
        station = session.scalar(select(Station.code).order_by(Station.code).limit(1))
        lon, lat = session.execute(
            select(Incident.lon, Incident.lat).where(Incident.grid_id.is_not(None)).limit(1)
        ).one()
    app = app_for(settings)
    heavy = _start_worker(settings, "heavy", "gridwatch.heavy", tmp_path / "heavy.log")
    quick = _start_worker(settings, "quick", "gridwatch.quick", tmp_path / "quick.log")
    try:
        # Route planning that searches until its 40 s time limit (no solution limit).
        plan = app.send_task(
            "plan.routes", args=[station, "2026-11-20", "08:00-16:00", 10**9, 40.0]
        )
        node = f"heavy@{socket.gethostname()}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            active = app.control.inspect(destination=[node], timeout=1.0).active() or {}
            if any(t["id"] == plan.id for t in active.get(node, [])):
                break
        else:
            pytest.fail(f"the heavy worker did not start planning: {plan.state}")
        incidents = tmp_path / "new.csv"
        incidents.write_text(
            "id,occurred_at,category,lon,lat,source\n"
            + "".join(
                f"Q{n},2026-10-0{1 + n} 10:00,theft,{lon},{lat},call_110\n" for n in range(5)
            ),
            "utf-8",
        )
        started = time.monotonic()
        summary = import_file("incidents", incidents, settings, engine)
        assert summary.imported == 5
        refresh = refresh_after_import(settings, engine, summary.affected_grid_ids)
        assert refresh["scope"] == "incremental" and refresh["mode"] == "worker", refresh
        run = _wait_run(engine, refresh["run_id"], timeout=60)
        took = time.monotonic() - started
        assert run["status"] == "done", (run, (tmp_path / "quick.log").read_text()[-3000:])
        # published while the route planning still occupied the only heavy worker
        assert not AsyncResult(plan.id, app=app).ready(), took
        assert took < 30, took
        after = read_metrics(engine, "county", "2026")[0]
        assert after["run_id"] == run["run_id"] != published["run_id"]
        assert after["incidents_total"] == before + 5
        plan_id = plan.get(timeout=120)  # the heavy work finished too, and was stored
        assert isinstance(plan_id, int) and plan_id > 0
    finally:
        _stop(quick)
        _stop(heavy)


# -- PostgreSQL stopped mid-import -----------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (initdb in a temporary directory, free port).

    It runs as the ``postgres`` user (PostgreSQL refuses root) and is the only server these
    tests stop: the machine's shared server on port 5432 is never touched.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="gw-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "server.log"
        shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        self._as_postgres(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        )

    def _as_postgres(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            prefix + command, capture_output=True, text=True, check=True, timeout=120
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w"]
            + ["-o", options, "start"]
        )

    def stop(self) -> None:
        self._as_postgres(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        )

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop()
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return found[-1].parent


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    server.start()
    engine = create_db_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        from sqlalchemy import text

        with engine.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
    finally:
        engine.dispose()
    yield server
    server.destroy()


@pytest.fixture
def private_redis(private_redis_server):
    """URL of a private redis-server without persistence, stopped after the test."""
    return private_redis_server().url


def _incidents_csv(path: Path, rows: int, prefix: str) -> None:
    """Incidents spread over the web test county (two townships, four grids)."""
    lines = ["id,occurred_at,category,lon,lat,source"]
    for n in range(rows):
        lines.append(
            f"{prefix}{n},2026-{7 + n % 3:02d}-{1 + n % 28:02d} {n % 24:02d}:15,"
            f"{['theft', 'burglary', 'fraud', 'robbery'][n % 4]},"
            f"{104.0005 + (n * 0.00137) % 0.019:.6f},{30.0005 + (n * 0.00291) % 0.019:.6f},"
            "call_110"
        )
    path.write_text("\n".join(lines) + "\n", "utf-8")


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_stopped_for_30_s_mid_import(private_postgres, private_redis, tmp_path):
    from conftest import make_settings
    from web_support import COUNTY, build_web_county, login

    from gridwatch.web import create_app

    settings = make_settings(
        tmp_path,
        GRIDWATCH_DATABASE_URL=private_postgres.url,
        GRIDWATCH_REDIS_URL=private_redis,
        GRIDWATCH_IMPORT_CHUNK_SIZE="2000",
    )
    # the county, published by an in-process run (the web tests' county and users)
    build_web_county(tmp_path, replace(settings, redis_url=""))
    engine = create_db_engine(settings.database_url)
    published = read_metrics(engine, "county", "2026Q3")
    assert published[0]["incidents_total"] == 5
    app = create_app({"GRIDWATCH_SETTINGS": settings, "TESTING": True})
    client = app.test_client()
    assert login(client, "county").status_code == 302

    # A: a small import, committed; its refresh is queued for the workers (none is up yet)
    small = tmp_path / "small.csv"
    _incidents_csv(small, 40, "S")
    env = _env(settings)
    done = subprocess.run(
        [sys.executable, "-m", "gridwatch.cli", "import", "incidents", str(small), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    refresh_id = json.loads(done.stdout)["refresh"]["run_id"]
    committed = _incident_count(engine)
    assert committed == 45

    # B: a large import, with PostgreSQL stopped for 30 s while it runs
    large = tmp_path / "large.csv"
    _incidents_csv(large, 60000, "L")
    stderr_path = tmp_path / "large.err"
    with open(stderr_path, "w") as stderr:
        importing = subprocess.Popen(
            [sys.executable, "-m", "gridwatch.cli", "import", "incidents", str(large)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while "rows read" not in stderr_path.read_text():
                assert importing.poll() is None, stderr_path.read_text()
                assert time.monotonic() < deadline, "the import never got going"
                time.sleep(0.05)
            private_postgres.stop()
            stopped_at = time.monotonic()
            assert importing.poll() is None, "the import ended before the database stopped"
            # while the database is down the app is alive and says it is not ready
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            time.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
            private_postgres.start()
            out, _ = importing.communicate(timeout=300)
        finally:
            if importing.poll() is None:
                os.killpg(importing.pid, signal.SIGKILL)
                importing.wait()
    error = stderr_path.read_text()
    assert importing.returncode == 2, (importing.returncode, out, error)
    # One sentence, last; psycopg may log one line of its own before it ("error ignored
    # terminating <psycopg.Pipeline [BAD]>: the connection is lost"), never a traceback.
    lines = [line for line in error.splitlines() if line.strip() and "rows read" not in line]
    assert lines[-1].startswith("gridwatch: the database stopped answering"), error
    assert "nothing of the unfinished work was committed" in lines[-1]
    assert len(lines) <= 2 and "Traceback" not in error, error
    # nothing of B, all of A: no partial batch
    assert _incident_count(engine) == committed
    with session_scope(engine) as session:
        batches = {b.file_name: b.status for b in session.scalars(select(ImportBatch))}
    assert batches.get("small.csv") == "done"
    assert batches.get("large.csv") in (None, "failed")

    # the app serves the last published run; A's refresh waits, queued, for a worker
    api = client.get(f"/api/v1/metrics?level=county&period=2026Q3&area={COUNTY}")
    assert api.status_code == 200
    served = api.get_json()
    assert [(r["run_id"], r["incidents_total"]) for r in served] == [(published[0]["run_id"], 5)]
    assert 'class="stale" role="alert"' not in client.get("/screen").get_data(as_text=True)
    assert get_run(engine, refresh_id)["status"] == "queued"
    # (that the screen does not call this stale yet is test_a_refresh_queued_with_no_worker…)

    # a worker started now runs the queued refresh: what was committed is published
    worker = _start_worker(settings, "faults", BOTH_QUEUES, tmp_path / "w.log")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = read_metrics(engine, "county", "2026Q3")
            if rows[0]["run_id"] != published[0]["run_id"]:
                break
            time.sleep(0.5)
        assert rows[0]["incidents_total"] == 45, (rows, (tmp_path / "w.log").read_text()[-3000:])
        screen = client.get("/screen").get_data(as_text=True)
        assert 'class="stale" role="alert"' not in screen
        # and B imported again after the outage goes through in full
        again = subprocess.run(
            [sys.executable, "-m", "gridwatch.cli", "import", "incidents", str(large), "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        assert _incident_count(engine) == committed + 60000
    finally:
        _stop(worker)
        app.extensions["gridwatch"].engine.dispose()
        engine.dispose()


def test_a_refresh_queued_with_no_worker_makes_the_screen_stale(private_redis, tmp_path):
    from datetime import UTC, datetime, timedelta

    from conftest import make_settings
    from sqlalchemy import update
    from web_support import GRIDS_A, build_web_county

    from gridwatch.areas import load_tree
    from gridwatch.screen import staleness
    from gridwatch.storage.models import AggregationRun
    from gridwatch.workers.service import refresh_after_import

    settings = make_settings(tmp_path, GRIDWATCH_REDIS_URL=private_redis)
    build_web_county(tmp_path, replace(settings, redis_url=""))
    engine = create_db_engine(settings.database_url)
    grid = load_tree(engine).by_code[GRIDS_A[0]].id
    queued = refresh_after_import(settings, engine, {grid})  # no worker consumes it
    assert queued["status"] == "queued"
    overdue = datetime.now(UTC) - timedelta(minutes=settings.stale_minutes + 1)
    with session_scope(engine) as session:
        session.execute(
            update(AggregationRun)
            .where(AggregationRun.id == queued["run_id"])
            .values(created_at=overdue)
        )
    assert staleness(engine, settings, datetime.now(UTC))["stale"]


# -- Redis with its append-only file, restarted mid-run -----------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_redis_with_append_only_file_restarted_mid_run_completes_or_retries(
    postgres_url, private_redis_server, tmp_path
):
    """As deployed (``appendonly yes``), a Redis restarted mid-run keeps the queued tasks and
    the chord's state: the run completes, or (when a task running at that moment could not
    store its result) it is marked failed and started again once, and that run completes;
    either way with the metrics of an in-process run (the Redis without persistence of
    ``test_workers_integration`` loses the tasks instead)."""
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.workers.service import start_aggregation

    server = private_redis_server("--appendonly", "yes", "--appendfsync", "everysec")
    settings = make_settings(
        tmp_path,
        GRIDWATCH_DATABASE_URL=postgres_url,
        GRIDWATCH_REDIS_URL=server.url,
    )
    engine = create_db_engine(settings.database_url)
    worker = None
    try:
        build_demo(settings, engine, tmp_path / "demo", seed=9, scale="small")
        worker = _start_worker(settings, "aof", BOTH_QUEUES, tmp_path / "w.log")
        summary = start_aggregation(settings, engine, RunRequest(full=True))
        run_id = summary["run_id"]
        deadline = time.monotonic() + 120
        while get_run(engine, run_id)["townships_done"] < 3:
            assert time.monotonic() < deadline, get_run(engine, run_id)
            time.sleep(0.05)
        server.stop()  # a restart: SIGTERM, Redis writes its append-only file and exits
        assert get_run(engine, run_id)["status"] == "running"
        server.start()  # same port, same data directory
        run = _wait_run(engine, run_id, timeout=300)
        if run["status"] == "failed":  # retried once, as a full run
            deadline = time.monotonic() + 60
            retries: list[dict] = []
            while not retries:
                assert time.monotonic() < deadline, "the failed run was not started again"
                retries = [r for r in list_runs(engine) if r["trigger"] == f"retry:{run_id}"]
                time.sleep(0.1)
            run = _wait_run(engine, retries[0]["run_id"], timeout=300)
        assert run["status"] == "done", (run, (tmp_path / "w.log").read_text()[-3000:])
        assert run["townships_done"] == run["townships_total"]
        keys = [(lvl, p) for lvl in ("township", "county") for p in ("2026Q3", "2026-10")]
        published = {key: read_metrics(engine, *key) for key in keys}
        run_eager(engine, replace(settings, redis_url=""), RunRequest(full=True))
        drop = {"run_id", "hours_since_last_visit"}
        for key in keys:
            fresh = read_metrics(engine, *key)
            assert [{k: v for k, v in r.items() if k not in drop} for r in published[key]] == [
                {k: v for k, v in r.items() if k not in drop} for r in fresh
            ], key
    finally:
        if worker is not None:
            _stop(worker)


@pytest.mark.slow
def test_an_incremental_run_refused_by_the_lock_keeps_its_grids_waiting(redis_url, tmp_path):
    """A refresh that finds another run holding the lock fails, and its changed grids go back
    on the waiting list, so the next refresh covers them (they were not silently dropped)."""
    from conftest import make_settings
    from web_support import GRIDS_A, build_web_county

    from gridwatch.areas import load_tree
    from gridwatch.workers.engine import count_dirty
    from gridwatch.workers.service import refresh_after_import
    from gridwatch.workers.tasks import LOCK_NAME

    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        service_unavailable("Redis", str(exc))
    client.flushdb()
    settings = make_settings(tmp_path, GRIDWATCH_REDIS_URL=url)
    build_web_county(tmp_path, replace(settings, redis_url=""))
    engine = create_db_engine(settings.database_url)
    grid = load_tree(engine).by_code[GRIDS_A[0]].id
    worker = _start_worker(settings, "lock", "gridwatch.quick", tmp_path / "w.log")
    try:
        client.set(LOCK_NAME, "999999", ex=120)  # a long run of someone else
        queued = refresh_after_import(settings, engine, {grid})
        assert queued["scope"] == "incremental"
        assert count_dirty(engine) == 0  # taken by the queued run
        run = _wait_run(engine, queued["run_id"], timeout=60)
        assert run["status"] == "failed", (run, (tmp_path / "w.log").read_text()[-2000:])
        assert "another aggregation run is in progress" in run["errors"][0]
        assert count_dirty(engine) == 1  # waiting again for the next refresh
        client.delete(LOCK_NAME)
        retried = refresh_after_import(settings, engine, set())
        assert retried["scope"] == "incremental"
        assert _wait_run(engine, retried["run_id"], timeout=60)["status"] == "done"
        assert count_dirty(engine) == 0
    finally:
        _stop(worker)
        client.delete(LOCK_NAME)
        client.close()
