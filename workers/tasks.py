"""Celery tasks: thin, explicitly named adapters over :mod:`gridwatch.workers.engine`.

Arguments are ids; every task is idempotent (a repeat replaces what the first attempt wrote),
so they are acknowledged late and retried on transient database errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from celery import chord, current_app, group, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from gridwatch.config import Settings, load_settings
from gridwatch.storage.db import create_db_engine
from gridwatch.workers import engine as runs

HEAVY_QUEUE = "gridwatch.heavy"

TRANSIENT = (OperationalError, DBAPIError, ConnectionError)
#: Options shared by the run's tasks: each is idempotent, so it is acknowledged only after it
#: finished, delivered again if its worker dies, and retried with backoff on transient errors.
RUN_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "max_retries": 5,
}
LOCK_NAME = "gridwatch:lock:aggregate"
LOCK_TTL_S = 3600


@lru_cache(maxsize=1)
def _context() -> tuple[Settings, Engine]:
    settings = current_app.conf.get("gridwatch_settings") or load_settings()
    return settings, create_db_engine(settings.database_url)


@contextmanager
def _redis_client() -> Iterator[Any]:
    """Yield a Redis client for the configured URL, or ``None`` without Redis."""
    settings, _ = _context()
    if not settings.redis_url:
        yield None
        return
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        client.close()


def _redis_lock(run_id: int) -> bool:
    """Take the run lock (SET NX EX); ``False`` when another run holds it."""
    with _redis_client() as client:
        if client is None:
            return True
        holder = client.get(LOCK_NAME)
        if holder is not None and holder in (str(run_id), str(run_id).encode()):
            return True  # a redelivered orchestrator of the same run
        return bool(client.set(LOCK_NAME, str(run_id), nx=True, ex=LOCK_TTL_S))


def _release_lock(run_id: int) -> None:
    """Release the run lock if ``run_id`` holds it (someone else's lock stays)."""
    with _redis_client() as client:
        if client is not None and client.get(LOCK_NAME) == str(run_id).encode():
            client.delete(LOCK_NAME)


@shared_task(name="aggregate.run", soft_time_limit=120, time_limit=150, **RUN_TASK_OPTIONS)
def orchestrate_run(self: Any, run_id: int) -> dict[str, Any]:
    """Plan a run's townships and fan them out as a chord ending in ``aggregate.finalize``."""
    settings, engine = _context()
    if not _redis_lock(run_id):
        runs.mark_failed(engine, run_id, "another aggregation run is in progress")
        return runs.get_run(engine, run_id)
    units = runs.plan_units(engine, run_id)
    runs.start_run(engine, run_id, units, self.request.id)
    header = group(compute_township.s(run_id, unit.grid_ids, unit.label) for unit in units)
    callback = finalize_run.si(run_id).set(queue=HEAVY_QUEUE)
    chord(header)(callback.on_error(fail_run.si(run_id).set(queue=HEAVY_QUEUE)))
    return runs.get_run(engine, run_id)


@shared_task(name="aggregate.township", soft_time_limit=300, time_limit=360, **RUN_TASK_OPTIONS)
def compute_township(self: Any, run_id: int, grid_ids: list[int], label: str) -> int:
    """Compute one township's grid rows for a run."""
    settings, engine = _context()
    try:
        return runs.compute_unit(engine, settings, run_id, grid_ids, label)
    except SoftTimeLimitExceeded:
        runs.mark_failed(
            engine, run_id, f"a township task ran out of time ({len(grid_ids)} grids)"
        )
        raise


@shared_task(name="aggregate.finalize", soft_time_limit=600, time_limit=700, **RUN_TASK_OPTIONS)
def finalize_run(self: Any, run_id: int) -> dict[str, Any]:
    """Roll up and publish a run, then release the run lock."""
    settings, engine = _context()
    try:
        summary = runs.finalize_run(engine, settings, run_id)
    except runs.RunNotReady as exc:
        # A duplicate delivery fired the chord early: wait for the missing townships.
        raise self.retry(exc=exc, countdown=2, max_retries=300) from exc
    except SoftTimeLimitExceeded:
        runs.mark_failed(engine, run_id, "finalising ran out of time")
        _release_lock(run_id)
        raise
    _release_lock(run_id)
    return summary


@shared_task(name="aggregate.fail", acks_late=True)
def fail_run(run_id: int) -> None:
    """Chord error callback: a township failed for good, so the run is failed and unlocked."""
    settings, engine = _context()
    runs.mark_failed(engine, run_id, "a township task failed after its retries")
    _release_lock(run_id)


def recover_stale_runs() -> list[int]:
    """Fail runs whose tasks were lost (no progress for a while) and start them again.

    Redis keeps nothing on disk here, so a Redis restart loses queued tasks and the chord's
    state; such a run would otherwise stay "running" for ever and hold the run lock.
    """
    from datetime import timedelta

    settings, engine = _context()
    restarted = []
    for run_id in runs.stale_runs(engine, timedelta(seconds=settings.run_stale_seconds)):
        runs.mark_failed(engine, run_id, "no progress: its tasks were lost; started again")
        _release_lock(run_id)
        new_id = runs.create_run(engine, runs.restart_request(engine, run_id), mode="worker")
        orchestrate_run.apply_async(args=[new_id])
        restarted.append(new_id)
    return restarted


@shared_task(name="aggregate.refresh", acks_late=True)
def refresh() -> dict[str, Any] | None:
    """Beat: recover lost runs, then start an incremental run for grids changed by imports."""
    settings, engine = _context()
    if recover_stale_runs():
        return None  # the replacement run covers every grid
    if runs.count_dirty(engine) == 0:
        return None
    run_id = runs.create_run(engine, runs.RunRequest(trigger="beat"), mode="worker")
    orchestrate_run.apply_async(args=[run_id])
    return runs.get_run(engine, run_id)


@shared_task(name="aggregate.nightly", acks_late=True)
def nightly() -> dict[str, Any]:
    """Beat: the nightly full recompute."""
    settings, engine = _context()
    run_id = runs.create_run(engine, runs.RunRequest(trigger="beat", full=True), mode="worker")
    orchestrate_run.apply_async(args=[run_id])
    return runs.get_run(engine, run_id)


@shared_task(name="report.daily", acks_late=True)
def daily_report() -> dict[str, Any]:
    """Beat, 06:00 local: build yesterday's situation summary from the published run."""
    from gridwatch.workers.situation import build_daily_situation

    settings, engine = _context()
    report = build_daily_situation(engine, settings)
    return {"day": report["day"], "run_id": report["run_id"], "areas": len(report["areas"])}
