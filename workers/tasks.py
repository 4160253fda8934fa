"""Celery tasks: thin, explicitly named adapters over :mod:`gridwatch.workers.engine`.

Arguments are ids; every task is idempotent (a repeat replaces what the first attempt wrote),
so they are acknowledged late and retried on transient database errors.

Queues: an incremental run (a few townships changed by an import) goes to the quick queue, so
the screen is refreshed within seconds even while a worker of the heavy queue is busy with a
full recompute, a camera plan or a patrol route plan. The queue is chosen from the run's scope
when the run is dispatched (:func:`run_queue`) and handed down to every task of the run.
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

#: The same names as ``celery_app.QUICK_QUEUE`` / ``HEAVY_QUEUE`` (that module imports this one).
QUICK_QUEUE = "gridwatch.quick"
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


def queue_for_scope(scope: str) -> str:
    """Return the queue of a run's tasks: quick for an incremental run, heavy otherwise.

    Parameters
    ----------
    scope : str
        The run's scope, ``incremental`` or ``full``.
    """
    return QUICK_QUEUE if scope == "incremental" else HEAVY_QUEUE


def run_queue(engine: Engine, run_id: int) -> str:
    """Return the queue for the tasks of run ``run_id`` (from its recorded scope)."""
    return queue_for_scope(str(runs.get_run(engine, run_id)["scope"]))


def dispatch_run(engine: Engine, run_id: int) -> str:
    """Send a recorded run's orchestrating task to the queue its scope calls for.

    Returns
    -------
    str
        The Celery task id of ``aggregate.run``.
    """
    result = orchestrate_run.apply_async(args=[run_id], queue=run_queue(engine, run_id))
    return str(result.id)


def _refuse(engine: Engine, run_id: int) -> None:
    """Fail a run that another run's lock keeps out, without losing what it was to refresh.

    Creating an incremental run took the changed grids off the list of grids waiting for a
    refresh; they go back on it, so the next refresh (beat, or the next import) covers them.
    """
    from gridwatch.storage.db import session_scope
    from gridwatch.storage.models import AggregationRun

    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        grids = {int(g) for g in run.area_ids} if run and run.scope == "incremental" else set()
    runs.mark_failed(engine, run_id, "another aggregation run is in progress")
    runs.mark_dirty(engine, grids)


@shared_task(name="aggregate.run", soft_time_limit=120, time_limit=150, **RUN_TASK_OPTIONS)
def orchestrate_run(self: Any, run_id: int) -> dict[str, Any]:
    """Plan a run's townships and fan them out as a chord ending in ``aggregate.finalize``.

    The townships, finalising and the error callback go to the queue of the run's scope.
    """
    settings, engine = _context()
    if not _redis_lock(run_id):
        _refuse(engine, run_id)
        return runs.get_run(engine, run_id)
    queue = run_queue(engine, run_id)
    units = runs.plan_units(engine, run_id)
    runs.start_run(engine, run_id, units, self.request.id)
    header = group(
        compute_township.s(run_id, unit.grid_ids, unit.label).set(queue=queue) for unit in units
    )
    callback = finalize_run.si(run_id).set(queue=queue)
    chord(header)(callback.on_error(fail_run.si(run_id).set(queue=queue)))
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
    """Chord error callback: a township failed for good, so the run is failed and unlocked.

    The run is then started again once, as a full run (a broker restart can fail a task that
    had finished its work, when its result could not be stored); a retry that fails too is
    left to beat's next refresh and the nightly run.
    """
    settings, engine = _context()
    runs.mark_failed(engine, run_id, "a township task failed after its retries")
    _release_lock(run_id)
    if runs.get_run(engine, run_id)["trigger"].startswith("retry:"):
        return
    new_id = runs.create_run(engine, runs.restart_request(engine, run_id), mode="worker")
    dispatch_run(engine, new_id)


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
        dispatch_run(engine, new_id)
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
    dispatch_run(engine, run_id)  # incremental when a published run exists: the quick queue
    return runs.get_run(engine, run_id)


@shared_task(name="aggregate.nightly", acks_late=True)
def nightly() -> dict[str, Any]:
    """Beat: the nightly full recompute."""
    settings, engine = _context()
    run_id = runs.create_run(engine, runs.RunRequest(trigger="beat", full=True), mode="worker")
    dispatch_run(engine, run_id)
    return runs.get_run(engine, run_id)


@shared_task(name="report.daily", acks_late=True)
def daily_report() -> dict[str, Any]:
    """Beat, 06:00 local: build yesterday's situation summary from the published run."""
    from gridwatch.workers.situation import build_daily_situation

    settings, engine = _context()
    report = build_daily_situation(engine, settings)
    return {"day": report["day"], "run_id": report["run_id"], "areas": len(report["areas"])}


# -- planning (heavy queue) --------------------------------------------------------------------
# Planning reads the published metrics and solves optimisation problems for up to a few
# minutes; as tasks they run on the heavy queue's workers instead of in a web request. The
# planners are imported when a task runs: they build on this package's published metrics.


@shared_task(name="plan.cameras", acks_late=True, soft_time_limit=900, time_limit=960)
def plan_cameras(
    township_code: str,
    n: int = 30,
    radius_m: float = 50.0,
    days: int = 365,
    time_limit_s: float = 60.0,
) -> dict[str, Any]:
    """Propose new camera sites for a township (``gridwatch plan cameras`` as a task)."""
    from gridwatch.targeting.prevention import camera_plan

    settings, engine = _context()
    return camera_plan(engine, settings, township_code, n, radius_m, days, time_limit_s)


@shared_task(name="plan.routes", acks_late=True, soft_time_limit=900, time_limit=960)
def plan_routes(
    station_code: str,
    day: str,
    shift: str,
    solution_limit: int | None = None,
    time_limit_seconds: float | None = None,
    focus_grids: dict[str, list[int]] | None = None,
    focus_note: str | None = None,
) -> int:
    """Plan and store one shift of a station's patrol routes; return the plan id.

    The prevention plan's patrol-focus grids arrive as plain data: this layer may not compute
    them (the targeting layer builds on the workers' published metrics), so whoever sends the
    task does, with ``gridwatch.targeting.prevention.station_patrol_focus_or_note``, and
    passes its two results (hours as lists: the arguments travel as JSON).

    Parameters
    ----------
    station_code : str
    day : str
        Local day of the shift, ``YYYY-MM-DD``.
    shift : str
        The shift as ``gridwatch routes plan --shift`` takes it (e.g. ``08:00-16:00``).
    solution_limit, time_limit_seconds : optional
        Solver limits (default: the planner's).
    focus_grids : dict, optional
        Patrol-focus grid code → its peak local hours (0–23); ``None`` plans without them.
    focus_note : str, optional
        Why the plan is made without them, stored as the plan's ``plan_focus["note"]``.
    """
    from datetime import date

    from gridwatch.routing.plans import plan_station, store_plan

    settings, engine = _context()
    payload = plan_station(
        engine,
        settings,
        station_code,
        date.fromisoformat(day),
        shift,
        solution_limit=solution_limit,
        time_limit_seconds=time_limit_seconds,
        focus_grids=focus_grids,
    )
    if focus_note:
        payload["plan_focus"]["note"] = focus_note
    return store_plan(engine, payload)
