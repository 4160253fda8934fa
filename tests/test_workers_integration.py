"""Integration: a real Redis, real ``gridwatch worker`` processes and a real PostGIS database.

The same run computed by the workers and in-process must publish identical metrics; two runs
started together must not run at the same time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from gridwatch.storage import create_db_engine, upgrade_database
from gridwatch.workers.engine import RunRequest, get_run, read_metrics, run_eager

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REDIS_TEST_DB = 13


@pytest.fixture
def worker_settings(postgres_url, redis_url, tmp_path):
    from conftest import make_settings

    url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return make_settings(tmp_path, GRIDWATCH_DATABASE_URL=postgres_url, GRIDWATCH_REDIS_URL=url)


def _env(settings) -> dict[str, str]:
    return {
        **os.environ,
        "GRIDWATCH_DATABASE_URL": settings.database_url,
        "GRIDWATCH_REDIS_URL": settings.redis_url,
        "GRIDWATCH_VAR_DIR": str(settings.var_dir),
        "GRIDWATCH_SECRET_KEY": settings.secret_key,
        "GRIDWATCH_TASK_VISIBILITY_TIMEOUT": str(settings.task_visibility_timeout),
        "GRIDWATCH_RUN_STALE_SECONDS": str(settings.run_stale_seconds),
    }


def start_worker(settings, log_path: Path, concurrency: int = 2) -> subprocess.Popen:
    """Start ``gridwatch worker`` in its own process group; return once it answers."""
    from gridwatch.workers.celery_app import app_for

    log = open(log_path, "a")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridwatch.cli", "worker", "-c", str(concurrency)],
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    app = app_for(settings)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited: {log_path.read_text()[-2000:]}")
        if app.control.ping(timeout=0.5):
            return proc
    pytest.fail("worker did not answer within 60 s")


def stop_worker(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a worker's whole process group."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.fixture
def worker(worker_settings, tmp_path):
    """Start ``gridwatch worker`` in its own process group and wait until it answers."""
    from gridwatch.workers.celery_app import app_for

    app = app_for(worker_settings)
    if app.control.ping(timeout=1.0):
        # A worker left over from an interrupted run would steal this test's tasks.
        app.control.shutdown()
        time.sleep(2)
    log = open(tmp_path / "worker.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridwatch.cli", "worker", "-c", "2", "--loglevel", "INFO"],
        env=_env(worker_settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited: {(tmp_path / 'worker.log').read_text()[-2000:]}")
        if app.control.ping(timeout=0.5):
            break
    else:
        pytest.fail("worker did not answer within 60 s")
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def _load(settings, tmp_path: Path):
    """Import the small test county (same data as the loaded_county fixture)."""
    import geopandas as gpd
    from shapely.geometry import box

    from gridwatch.ingest import import_file

    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    rows = [("430000000000", "county", None), ("430000001000", "township", "430000000000")]
    frame = gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": ["县", "镇"],
            "level": [r[1] for r in rows],
            "parent_code": [r[2] for r in rows],
            "population": [4000, 4000],
        },
        geometry=[box(113.0, 28.0, 113.04, 28.04)] * 2,
        crs="EPSG:4326",
    )
    cells = []
    for i in range(4):
        for j in range(4):
            cells.append(
                {
                    "code": f"430000001000{i:01d}{j:02d}",
                    "name": f"网格{i}{j}",
                    "level": "grid",
                    "parent_code": "430000001000",
                    "population": 250,
                    "geometry": box(
                        113 + 0.01 * i, 28 + 0.01 * j, 113.01 + 0.01 * i, 28.01 + 0.01 * j
                    ),
                }
            )
    frame = gpd.GeoDataFrame(
        [*frame.to_dict("records"), *cells], geometry="geometry", crs="EPSG:4326"
    )
    path = tmp_path / "areas.geojson"
    frame.to_file(path, driver="GeoJSON")
    import_file("grids", path, settings, engine)
    lines = ["id,occurred_at,category,lon,lat,source"]
    for n in range(300):
        lines.append(
            f"W{n},2026-{1 + n % 10:02d}-{1 + n % 27:02d} {n % 24:02d}:10,"
            f"{['theft', 'burglary', 'fraud', 'gambling'][n % 4]},"
            f"{113.0005 + (n * 0.00137) % 0.039:.6f},{28.0005 + (n * 0.00291) % 0.039:.6f},"
            f"{['call_110', 'patrol', 'walk_in'][n % 3]}"
        )
    incidents = tmp_path / "incidents.csv"
    incidents.write_text("\n".join(lines) + "\n", "utf-8")
    import_file("incidents", incidents, settings, engine)
    return engine


#: Fields that differ between two runs of the same data: which run, and "hours since" now.
RUN_DEPENDENT = {"run_id", "hours_since_last_visit"}


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in RUN_DEPENDENT} for r in rows]


def test_worker_run_publishes_the_same_metrics_as_in_process(worker, worker_settings, tmp_path):
    from gridwatch.workers.service import start_aggregation

    engine = _load(worker_settings, tmp_path)
    summary = start_aggregation(worker_settings, engine, RunRequest(), wait=True, timeout_s=120)
    assert summary["status"] == "done", summary
    assert summary["mode"] == "worker"
    assert summary["townships_done"] == summary["townships_total"] == 1
    published = {
        (level, period): read_metrics(engine, level, period)
        for level in ("grid", "township", "county")
        for period in ("2026", "2026Q1", "2026-03", "2026-W10", "2026-03-04")
    }
    assert sum(r["incidents_total"] for r in published[("county", "2026")]) == 300
    eager = run_eager(engine, replace(worker_settings, redis_url=""), RunRequest(full=True))
    assert eager["run_id"] != summary["run_id"]
    for key, rows in published.items():
        assert _strip(rows) == _strip(read_metrics(engine, *key)), key
    # the lock was released when the run finished
    client = redis.Redis.from_url(worker_settings.redis_url)
    assert client.get("gridwatch:lock:aggregate") is None


def test_two_runs_started_together_do_not_run_at_once(worker, worker_settings, tmp_path):
    from gridwatch.workers.celery_app import app_for
    from gridwatch.workers.engine import create_run

    engine = _load(worker_settings, tmp_path)
    ids = [create_run(engine, RunRequest(full=True), mode="worker") for _ in range(2)]
    for run_id in ids:
        app_for(worker_settings).send_task("aggregate.run", args=[run_id])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = [get_run(engine, i) for i in ids]
        if all(r["status"] in ("done", "failed") for r in runs):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"runs did not finish: {runs}")
    done = [r for r in runs if r["status"] == "done"]
    failed = [r for r in runs if r["status"] == "failed"]
    assert done, runs
    if len(done) == 2:  # both ran: then strictly one after the other
        first, second = sorted(done, key=lambda r: r["started_at"])
        assert first["finished_at"] <= second["started_at"], runs
    else:
        assert "another aggregation run is in progress" in failed[0]["errors"][0]


def test_a_held_lock_refuses_a_run(worker, worker_settings, tmp_path):
    from gridwatch.workers.service import start_aggregation

    engine = _load(worker_settings, tmp_path)
    client = redis.Redis.from_url(worker_settings.redis_url)
    client.set("gridwatch:lock:aggregate", "999999", ex=60)
    summary = start_aggregation(worker_settings, engine, RunRequest(), wait=True, timeout_s=60)
    assert summary["status"] == "failed"
    assert "another aggregation run is in progress" in summary["errors"][0]
    assert client.get("gridwatch:lock:aggregate") == b"999999"  # someone else's lock stays
    client.delete("gridwatch:lock:aggregate")


def test_a_worker_killed_mid_run_loses_nothing(worker_settings, tmp_path):
    """SIGKILL the whole worker in the middle of a run; a new worker completes it, and the
    published metrics equal an in-process run's."""
    from gridwatch.demo.build import build_demo
    from gridwatch.workers.celery_app import app_for
    from gridwatch.workers.engine import create_run

    settings = replace(worker_settings, task_visibility_timeout=5)
    engine = create_db_engine(settings.database_url)
    build_demo(settings, engine, tmp_path / "demo", seed=11, scale="small")
    log = tmp_path / "worker.log"
    first = start_worker(settings, log, concurrency=1)
    run_id = create_run(engine, RunRequest(trigger="test"), mode="worker")
    app_for(settings).send_task("aggregate.run", args=[run_id])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run = get_run(engine, run_id)
        if run["townships_done"] >= 5:
            break
        time.sleep(0.05)
    else:
        stop_worker(first, signal.SIGKILL)
        pytest.fail(f"run did not start: {run}; {log.read_text()[-2000:]}")
    stop_worker(first, signal.SIGKILL)
    killed_at = get_run(engine, run_id)
    assert killed_at["status"] == "running"
    assert killed_at["townships_done"] < killed_at["townships_total"]
    second = start_worker(settings, log, concurrency=2)
    try:
        # kombu restores a dead worker's unacknowledged task on a periodic sweep (~90 s here)
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            run = get_run(engine, run_id)
            if run["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
    finally:
        stop_worker(second)
    assert run["status"] == "done", (run, log.read_text()[-3000:])
    assert run["townships_done"] == run["townships_total"] == 70
    keys = [(lvl, p) for lvl in ("grid", "township", "county") for p in ("2026Q3", "2026-10")]
    published = {key: read_metrics(engine, *key) for key in keys}
    run_eager(engine, replace(settings, redis_url=""), RunRequest(full=True))
    for key in keys:
        assert _strip(published[key]) == _strip(read_metrics(engine, *key)), key


def test_redis_restarted_mid_run_the_run_is_failed_and_retried(
    postgres_url, private_redis_server, tmp_path
):
    """A private Redis is killed and restarted mid-run (it keeps nothing on disk, like ours):
    the lost run is marked failed and run again, and the published metrics survive."""
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.workers.celery_app import app_for
    from gridwatch.workers.engine import create_run, list_runs

    server = private_redis_server("--appendonly", "no")
    settings = make_settings(
        tmp_path,
        GRIDWATCH_DATABASE_URL=postgres_url,
        GRIDWATCH_REDIS_URL=server.url,
        GRIDWATCH_RUN_STALE_SECONDS="5",
    )
    engine = create_db_engine(settings.database_url)
    worker = None
    try:
        build_demo(settings, engine, tmp_path / "demo", seed=5, scale="small")
        published = run_eager(engine, replace(settings, redis_url=""), RunRequest())
        before = read_metrics(engine, "county", "2026Q3")
        log = tmp_path / "worker.log"
        worker = start_worker(settings, log, concurrency=1)
        lost = create_run(engine, RunRequest(full=True), mode="worker")
        app_for(settings).send_task("aggregate.run", args=[lost])
        deadline = time.monotonic() + 120
        while get_run(engine, lost)["townships_done"] < 3:
            assert time.monotonic() < deadline, get_run(engine, lost)
            time.sleep(0.05)
        server.kill()  # SIGKILL: what only Redis held is gone
        server.start()  # same port, empty
        # what was published stays readable, unchanged, while the run is in trouble (the
        # hours since the last patrol visit are measured to the time of reading)
        during = read_metrics(engine, "county", "2026Q3")
        assert _strip(during) == _strip(before)
        assert during[0]["run_id"] == before[0]["run_id"]
        assert during[0]["hours_since_last_visit"] == pytest.approx(
            before[0]["hours_since_last_visit"], abs=0.2
        )
        assert get_run(engine, lost)["status"] == "running"
        time.sleep(6)  # longer than GRIDWATCH_RUN_STALE_SECONDS
        deadline = time.monotonic() + 240
        retry = None
        while time.monotonic() < deadline:
            app_for(settings).send_task("aggregate.refresh")  # what beat sends every few minutes
            time.sleep(3)
            retry = next((r for r in list_runs(engine) if r["trigger"] == f"retry:{lost}"), None)
            if retry and retry["status"] in ("done", "failed"):
                break
        assert get_run(engine, lost)["status"] == "failed"
        assert retry is not None and retry["status"] == "done", (retry, log.read_text()[-3000:])
        assert retry["run_id"] > published["run_id"]
        after = read_metrics(engine, "county", "2026Q3")
        assert after[0]["run_id"] == retry["run_id"]
        assert _strip(after) == _strip(before)  # same data, same published figures
    finally:
        if worker is not None:
            stop_worker(worker)
