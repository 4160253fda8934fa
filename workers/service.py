"""Start aggregation runs the right way for the configured mode.

Without Redis (the embedded default) a run executes in this process, guarded by a file lock;
with Redis it is queued for the Celery workers, guarded by a Redis lock. Both paths call the
same functions in :mod:`gridwatch.workers.engine`.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

from gridwatch.config import Settings
from gridwatch.storage.db import session_scope
from gridwatch.workers.engine import (
    RunError,
    RunRequest,
    create_run,
    get_run,
    latest_published_run_id,
    mark_dirty,
    run_eager,
)


@contextmanager
def file_lock(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock on ``var/aggregate.lock`` or fail at once."""
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    path = settings.var_dir / "aggregate.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RunError("another aggregation run is in progress; try again later") from exc
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_aggregation(
    settings: Settings,
    engine: Engine,
    request: RunRequest,
    wait: bool = False,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Run (eager) or queue (Redis) an aggregation run and return its summary."""
    if not settings.redis_url:
        with file_lock(settings):
            return run_eager(engine, settings, request)
    from gridwatch.workers.celery_app import app_for
    from gridwatch.workers.tasks import run_queue

    run_id = create_run(engine, request, mode="worker")
    # Incremental runs go to the quick queue, full runs to the heavy one.
    queue = run_queue(engine, run_id)
    result = app_for(settings).send_task("aggregate.run", args=[run_id], queue=queue)
    if not wait:
        summary = get_run(engine, run_id)
        summary["task_id"] = result.id
        return summary
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        summary = get_run(engine, run_id)
        if summary["status"] in ("done", "failed"):
            return summary
        time.sleep(0.2)
    raise RunError(f"run {run_id} did not finish within {timeout_s:.0f} s (still running?)")


#: Import kinds whose changes reach beyond the grids they touch (a camera's view crosses
#: township borders, new boundaries move everything): they refresh everything.
FULL_REFRESH_KINDS = frozenset({"cameras", "grids"})


def refresh_after_import(
    settings: Settings, engine: Engine, grid_ids: set[int], kind: str = "incidents"
) -> dict[str, Any]:
    """Mark changed grids and, once a run has been published, refresh them.

    Incidents and patrols refresh just the townships of the changed grids; cameras and
    grids start a full run.
    """
    mark_dirty(engine, grid_ids)
    with session_scope(engine) as session:
        published = latest_published_run_id(session)
    if published is None:
        return {"status": "skipped", "reason": "no published run yet; run `gridwatch aggregate`"}
    try:
        request = RunRequest(trigger="import", full=kind in FULL_REFRESH_KINDS)
        return start_aggregation(settings, engine, request)
    except RunError as exc:
        # Another run is busy: the grids stay marked and the next run picks them up.
        return {"status": "deferred", "reason": str(exc)}
