"""The Celery application (``celery -A gridwatch.workers.celery_app worker``).

Broker and result store come from ``GRIDWATCH_REDIS_URL``. Tasks are acknowledged late and
rejected when their worker dies, so a killed worker's task is delivered again; every task is
safe to run twice (see :mod:`gridwatch.workers.engine`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab

from gridwatch import logs, observability
from gridwatch.config import Settings, load_settings

#: Queues: quick refreshes never wait behind a long full recompute.
QUICK_QUEUE = "gridwatch.quick"
HEAVY_QUEUE = "gridwatch.heavy"  # the same name is used by gridwatch.workers.tasks

#: Default queue per task name. A run's tasks are sent with the queue of the run's scope
#: (``tasks.run_queue``: incremental → quick, full → heavy), which overrides these; the
#: heavy default is for a run task sent without one. Planning is always heavy.
TASK_ROUTES: dict[str, dict[str, str]] = {
    "aggregate.run": {"queue": HEAVY_QUEUE},
    "aggregate.township": {"queue": HEAVY_QUEUE},
    "aggregate.finalize": {"queue": HEAVY_QUEUE},
    "aggregate.fail": {"queue": HEAVY_QUEUE},
    "aggregate.nightly": {"queue": HEAVY_QUEUE},
    "aggregate.refresh": {"queue": QUICK_QUEUE},
    "report.daily": {"queue": QUICK_QUEUE},
    "plan.cameras": {"queue": HEAVY_QUEUE},
    "plan.routes": {"queue": HEAVY_QUEUE},
}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Return the beat schedule, keyed by task name (times in the configured zone)."""
    return {
        "aggregate.refresh": {
            "task": "aggregate.refresh",
            "schedule": timedelta(minutes=settings.refresh_minutes),
            "options": {"queue": QUICK_QUEUE},
        },
        "aggregate.nightly": {
            "task": "aggregate.nightly",
            "schedule": crontab(
                hour=int(settings.nightly_at[:2]), minute=int(settings.nightly_at[3:])
            ),
            "options": {"queue": HEAVY_QUEUE},
        },
        "report.daily": {
            "task": "report.daily",
            "schedule": crontab(
                hour=int(settings.report_at[:2]), minute=int(settings.report_at[3:])
            ),
            "options": {"queue": QUICK_QUEUE},
        },
    }


def create_celery_app(settings: Settings | None = None, set_as_current: bool = True) -> Celery:
    """Build the Celery app from settings (Redis broker and result backend)."""
    settings = settings or load_settings()
    broker = settings.redis_url or "memory://"
    app = Celery(
        "gridwatch",
        broker=broker,
        backend=settings.redis_url or "cache+memory://",
        set_as_current=set_as_current,
    )
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUICK_QUEUE,
        task_routes=TASK_ROUTES,
        timezone=settings.timezone.key,
        enable_utc=True,
        result_expires=timedelta(days=1),
        broker_connection_retry_on_startup=True,
        # An unacknowledged task of a killed worker is delivered again after this long.
        broker_transport_options={"visibility_timeout": settings.task_visibility_timeout},
        result_backend_transport_options={"visibility_timeout": settings.task_visibility_timeout},
        beat_schedule=beat_schedule(settings),
        task_always_eager=not settings.redis_url,
        task_eager_propagates=True,
        # Task events (received, started, succeeded, failed …) for Flower and `celery events`.
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    app.conf.gridwatch_settings = settings
    return app


_dispatchers: dict[str, Celery] = {}


def app_for(settings: Settings) -> Celery:
    """Return an app that sends tasks to ``settings.redis_url`` (cached per URL)."""
    if settings.redis_url not in _dispatchers:
        _dispatchers[settings.redis_url] = create_celery_app(settings, set_as_current=False)
    return _dispatchers[settings.redis_url]


@signals.task_prerun.connect
def _task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    observability.task_started(task_id)
    if task_id is not None:
        _log_tokens[task_id] = logs.bind(task_id=task_id)


@signals.task_postrun.connect
def _task_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    observability.task_finished(task_id, _task_name(task), state)
    tokens = _log_tokens.pop(task_id, None) if task_id is not None else None
    if tokens:
        logs.unbind(tokens)


@signals.task_failure.connect
def _task_failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    observability.task_failed(_task_name(sender), exception)


@signals.worker_process_init.connect
def _preload(**_: Any) -> None:
    """Import what runs need once per worker process, not in its first (small) run."""
    from gridwatch.workers.engine import preload

    preload()


@signals.worker_ready.connect
def _preload_solo(**_: Any) -> None:
    # The solo and threads pools start no child processes (no worker_process_init).
    from gridwatch.workers.engine import preload

    preload()


def _task_name(task: Any) -> str:
    return str(getattr(task, "name", None) or "unknown")


def _setup_json_logging(loglevel: Any = None, **_: Any) -> None:
    """Write the worker's and beat's logs as JSON lines (``GRIDWATCH_LOG_FORMAT=json``)."""
    logs.configure_logging("json", level=loglevel or "INFO")


_log_tokens: dict[str, dict[str, Any]] = {}

celery_app = create_celery_app()
app = celery_app
if celery_app.conf.gridwatch_settings.log_format == "json":
    # Connected only for JSON: any receiver stops Celery's own logging set-up, which text keeps.
    signals.setup_logging.connect(_setup_json_logging, weak=False)

# Registers the tasks (shared tasks attach to every app); imported last to avoid a cycle.
from gridwatch.workers import tasks as _tasks  # noqa: E402, F401
