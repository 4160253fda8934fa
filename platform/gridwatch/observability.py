"""Prometheus metrics: what the web app and the workers count, and what a scrape reads.

Two kinds of figures end up on ``/metrics``:

* **Counted in the processes** (prometheus_client counters and histograms): HTTP requests by
  endpoint, method and status and their latency (:func:`observe_request`, called by the web
  app), Celery tasks by name and final state, their duration and their failures
  (:func:`task_started`, :func:`task_finished`, :func:`task_failed`, called from Celery's
  signals in :mod:`gridwatch.workers.celery_app`), and import files refused when opened
  (:func:`import_file_refused`, called by the importers: such a file leaves no batch).
* **Read at scrape time** from the database and Redis (:class:`StateCollector`): the age of the
  last published aggregation run, runs by status, import rows and files rejected, the depth of
  the Celery queues and whether the database and Redis answered.

Several processes
-----------------
gunicorn workers and Celery's pool processes each count in their own memory. When
``PROMETHEUS_MULTIPROC_DIR`` names a directory (empty it before the processes start, and give
every web and worker process of the machine the same one), each process writes its counts to
files there and :func:`render_metrics` adds them up, so one scrape of ``/metrics`` covers every
process of the machine. Workers on other machines are seen through the queue depth and run age,
or through Flower's own ``/metrics`` (task events are on, see ``celery_app``).

This module knows no Flask and no Celery; :mod:`gridwatch.web.metrics` is its web face.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from gridwatch.config import Settings
from gridwatch.storage.models import AggregationRun, ImportBatch

log = logging.getLogger(__name__)

#: The Celery queues whose depth is reported; the same names as ``celery_app.QUICK_QUEUE`` and
#: ``HEAVY_QUEUE`` (the core cannot import the workers; a test keeps the two in step).
CELERY_QUEUES = ("gridwatch.quick", "gridwatch.heavy")
# kombu's Redis transport keeps a message sent with a priority in "<queue>\x06\x16<step>".
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The screens' target is p99 under 200 ms, so the buckets are fine below half a second.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TASK_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_MAX_TASKS_IN_FLIGHT = 10_000

_PROCESS_REGISTRY = CollectorRegistry(auto_describe=True)
"""The counters of this process (used when there is no multiprocess directory)."""
ProcessCollector(registry=_PROCESS_REGISTRY)

HTTP_REQUESTS = Counter(
    "gridwatch_http_requests",
    "HTTP requests answered, by endpoint, method and status code.",
    ["endpoint", "method", "status"],
    registry=_PROCESS_REGISTRY,
)
HTTP_LATENCY = Histogram(
    "gridwatch_http_request_duration_seconds",
    "Time from the start of a request to its response, by endpoint and method.",
    ["endpoint", "method"],
    buckets=_HTTP_BUCKETS,
    registry=_PROCESS_REGISTRY,
)
TASKS = Counter(
    "gridwatch_celery_tasks",
    "Celery tasks that finished, by task name and final state (SUCCESS, FAILURE, RETRY …).",
    ["task", "state"],
    registry=_PROCESS_REGISTRY,
)
TASK_DURATION = Histogram(
    "gridwatch_celery_task_duration_seconds",
    "Run time of Celery tasks, by task name.",
    ["task"],
    buckets=_TASK_BUCKETS,
    registry=_PROCESS_REGISTRY,
)
TASK_FAILURES = Counter(
    "gridwatch_celery_task_failures",
    "Celery tasks that raised, by task name and exception class.",
    ["task", "exception"],
    registry=_PROCESS_REGISTRY,
)

IMPORT_FILES_REFUSED = Counter(
    "gridwatch_import_files_refused",
    "Import files refused when opened, before any row was read (no batch recorded), by "
    "kind and reason: mapping, unreadable (missing, unsupported type, bad encoding, empty, "
    "damaged), format (a type this kind is not imported from) or columns (required ones "
    "missing).",
    ["kind", "reason"],
    registry=_PROCESS_REGISTRY,
)

_task_started_at: dict[str, float] = {}


def observe_request(endpoint: str | None, method: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request and its latency.

    Parameters
    ----------
    endpoint : str or None
        The route's endpoint name (``maps.grid``), ``None`` when no route matched (404): it
        is counted as ``none``, so unknown URLs cannot blow up the number of series.
    method : str
        HTTP method; anything unusual is counted as ``other``.
    status : int
        Status code of the response.
    seconds : float
        Time taken.
    """
    label = endpoint or "none"
    method = method.upper() if method.upper() in _HTTP_METHODS else "other"
    HTTP_REQUESTS.labels(label, method, str(status)).inc()
    HTTP_LATENCY.labels(label, method).observe(max(seconds, 0.0))


def task_started(task_id: str | None) -> None:
    """Note that a task began (Celery ``task_prerun``), to time it.

    Parameters
    ----------
    task_id : str or None
        The task's id.
    """
    if task_id is None:
        return
    if len(_task_started_at) >= _MAX_TASKS_IN_FLIGHT:
        # Tasks whose postrun never came (their process was killed): forget them.
        _task_started_at.clear()
    _task_started_at[task_id] = time.monotonic()


def task_finished(task_id: str | None, task_name: str, state: str | None) -> None:
    """Count a finished task by its final state and record its duration (``task_postrun``).

    Parameters
    ----------
    task_id : str or None
        The task's id (its start time was noted by :func:`task_started`).
    task_name : str
        The task's registered name (``aggregate.township``).
    state : str or None
        Celery's final state: ``SUCCESS``, ``FAILURE``, ``RETRY`` …; ``None`` (an eager task
        whose exception propagated) counts as ``FAILURE``.
    """
    # No state: the exception went straight up to the caller (an eager task in the web app),
    # which Celery sends no task_failure for.
    TASKS.labels(task_name, state or "FAILURE").inc()
    started = _task_started_at.pop(task_id, None) if task_id is not None else None
    if started is not None:
        TASK_DURATION.labels(task_name).observe(time.monotonic() - started)


def task_failed(task_name: str, exception: BaseException | None) -> None:
    """Count a task that raised (Celery ``task_failure``).

    Parameters
    ----------
    task_name : str
        The task's registered name.
    exception : BaseException or None
        What it raised; its class name is a label.
    """
    TASK_FAILURES.labels(task_name, type(exception).__name__ if exception else "unknown").inc()


def import_file_refused(kind: str, reason: str) -> None:
    """Count an import file refused when opened, before any row was read.

    Files refused later (an unknown coordinate system, a row the reader cannot get past) are
    recorded as failed batches and counted at scrape time (``gridwatch_import_rejected_files``);
    these leave no trace in the database, so the process that tried to open them counts them.

    Parameters
    ----------
    kind : str
        The importer's kind (``incidents``).
    reason : str
        The stage that refused the file: ``mapping``, ``unreadable``, ``format`` or
        ``columns``.
    """
    IMPORT_FILES_REFUSED.labels(kind, reason).inc()


def process_exited(pid: int, settings: Settings | None = None) -> None:
    """Tell the multiprocess store that a worker process is gone (gunicorn ``child_exit``).

    Parameters
    ----------
    pid : int
        The process id of the worker that exited.
    settings : Settings, optional
        Settings naming the multiprocess directory; the environment is used otherwise.
    """
    directory = _multiprocess_dir(settings)
    if directory is not None:
        mark_process_dead(pid, str(directory))


def is_loopback(address: str | None) -> bool:
    """Return whether ``address`` is a loopback address (``127.0.0.0/8``, ``::1``).

    Parameters
    ----------
    address : str or None
        The client address of a request.

    Returns
    -------
    bool
        ``False`` for anything that is not an IP address.
    """
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def scrape_allowed(
    settings: Settings,
    remote_addr: str | None,
    authorization: str | None,
    forwarded: bool = False,
) -> bool:
    """Decide whether a request may read ``/metrics``.

    With ``GRIDWATCH_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>`` is accepted,
    from any address. Without it, only a direct request from the loopback address is: one that
    came through a reverse proxy (``forwarded``) is refused, since behind nginx on the same
    machine every request would look local.

    Parameters
    ----------
    settings : Settings
        The settings (``metrics_token``).
    remote_addr : str or None
        The client address as the web app sees it.
    authorization : str or None
        The ``Authorization`` header.
    forwarded : bool
        Whether the request carries ``X-Forwarded-For`` / ``Forwarded``.

    Returns
    -------
    bool
    """
    if settings.metrics_token:
        scheme, _, given = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), settings.metrics_token.encode()
        )
    return not forwarded and is_loopback(remote_addr)


class StateCollector:
    """Figures read from the database and Redis at each scrape.

    Parameters
    ----------
    settings : Settings
        Settings (the Redis URL; without one there is no queue to measure).
    engine : sqlalchemy.Engine
        The GridWatch database.
    now : callable, optional
        Returns the current UTC time (tests pass a fixed clock).
    """

    def __init__(
        self, settings: Settings, engine: Engine, now: Callable[[], datetime] | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.now = now or (lambda: datetime.now(UTC))

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by prometheus_client on each scrape)."""
        up = GaugeMetricFamily(
            "gridwatch_dependency_up",
            "1 when the dependency answered during this scrape, 0 when it did not.",
            labels=["dependency"],
        )
        try:
            families = list(self._database_families())
        except SQLAlchemyError as exc:
            log.warning("metrics: the database did not answer: %s", _first_line(exc))
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield from families
        if self.settings.redis_url:
            try:
                families = list(self._queue_families())
            except Exception as exc:  # any client error: Redis is down or refusing us
                log.warning("metrics: Redis did not answer: %s", _first_line(exc))
                up.add_metric(["redis"], 0)
            else:
                up.add_metric(["redis"], 1)
                yield from families
        yield up

    def _database_families(self) -> Iterator[Metric]:
        with self.engine.connect() as conn:
            last = conn.execute(
                select(AggregationRun.published_at, AggregationRun.finished_at)
                .where(AggregationRun.status == "done")
                .order_by(AggregationRun.id.desc())
                .limit(1)
            ).first()
            run_counts = conn.execute(
                select(AggregationRun.status, func.count()).group_by(AggregationRun.status)
            ).all()
            batches = conn.execute(
                select(
                    ImportBatch.kind,
                    ImportBatch.status,
                    func.count(),
                    func.coalesce(func.sum(ImportBatch.rows_imported), 0),
                    func.coalesce(func.sum(ImportBatch.rows_duplicate), 0),
                    func.coalesce(func.sum(ImportBatch.rows_rejected), 0),
                ).group_by(ImportBatch.kind, ImportBatch.status)
            ).all()

        published = None
        if last is not None:
            published = last[0] or last[1]
        timestamp = GaugeMetricFamily(
            "gridwatch_last_successful_run_timestamp_seconds",
            "Unix time at which the newest successful aggregation run was published "
            "(absent before the first run).",
        )
        age = GaugeMetricFamily(
            "gridwatch_last_successful_run_age_seconds",
            "Seconds since the newest successful aggregation run was published "
            "(absent before the first run).",
        )
        if published is not None:
            timestamp.add_metric([], published.timestamp())
            age.add_metric([], max((self.now() - published).total_seconds(), 0.0))
        yield timestamp
        yield age

        runs = GaugeMetricFamily(
            "gridwatch_aggregation_runs", "Aggregation runs by status.", labels=["status"]
        )
        for status, count in sorted(run_counts):
            runs.add_metric([status], count)
        yield runs

        files = CounterMetricFamily(
            "gridwatch_import_files",
            "Import batches (one per imported file) by kind and status; status failed is a "
            "file refused as a whole.",
            labels=["kind", "status"],
        )
        rows = CounterMetricFamily(
            "gridwatch_import_rows",
            "Imported rows by kind and outcome (imported, duplicate, rejected).",
            labels=["kind", "outcome"],
        )
        rejected_rows = CounterMetricFamily(
            "gridwatch_import_rejected_rows",
            "Rows the importers rejected into quarantine, by kind.",
            labels=["kind"],
        )
        rejected_files = CounterMetricFamily(
            "gridwatch_import_rejected_files",
            "Files the importers refused as a whole after opening them (a failed batch, "
            "nothing committed), by kind; files refused when opened are counted in "
            "gridwatch_import_files_refused.",
            labels=["kind"],
        )
        per_kind: dict[str, dict[str, int]] = {}
        for kind, status, count, imported, duplicate, rejected in sorted(batches):
            files.add_metric([kind, status], count)
            totals = per_kind.setdefault(
                kind, {"imported": 0, "duplicate": 0, "rejected": 0, "failed_files": 0}
            )
            totals["imported"] += int(imported)
            totals["duplicate"] += int(duplicate)
            totals["rejected"] += int(rejected)
            if status == "failed":
                totals["failed_files"] += int(count)
        for kind, totals in per_kind.items():
            for outcome in ("imported", "duplicate", "rejected"):
                rows.add_metric([kind, outcome], totals[outcome])
            rejected_rows.add_metric([kind], totals["rejected"])
            rejected_files.add_metric([kind], totals["failed_files"])
        yield from (files, rows, rejected_rows, rejected_files)

    def _queue_families(self) -> Iterator[Metric]:
        import redis

        client = redis.Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0
        )
        try:
            depths = queue_depths(client, CELERY_QUEUES)
            unacked = int(client.hlen("unacked"))
        finally:
            client.close()
        depth = GaugeMetricFamily(
            "gridwatch_celery_queue_depth",
            "Tasks waiting in each Celery queue (Redis list length).",
            labels=["queue"],
        )
        for queue, length in depths.items():
            depth.add_metric([queue], length)
        yield depth
        yield GaugeMetricFamily(
            "gridwatch_celery_unacked_tasks",
            "Tasks a worker has taken but not yet acknowledged (running, or lost with a "
            "worker and waiting for the visibility timeout).",
            value=unacked,
        )


def queue_depths(client: Any, queues: Iterable[str] = CELERY_QUEUES) -> dict[str, int]:
    """Return the number of waiting messages per Celery queue on a Redis broker.

    Parameters
    ----------
    client : redis.Redis
        A client of the broker.
    queues : iterable of str
        Queue names.

    Returns
    -------
    dict
        Queue name to length, priority sub-queues included.
    """
    return {
        queue: sum(int(client.llen(queue + suffix)) for suffix in _PRIORITY_SUFFIXES)
        for queue in queues
    }


def render_metrics(
    settings: Settings, engine: Engine, environ: Mapping[str, str] | None = None
) -> tuple[bytes, str]:
    """Return the body and content type of a ``/metrics`` scrape.

    Parameters
    ----------
    settings : Settings
        Settings (Redis URL, multiprocess directory).
    engine : sqlalchemy.Engine
        The GridWatch database.
    environ : mapping, optional
        Where to look for ``PROMETHEUS_MULTIPROC_DIR`` when the settings do not name it;
        :data:`os.environ` by default.

    Returns
    -------
    tuple of (bytes, str)
        The exposition text and its content type.
    """
    registry = CollectorRegistry(auto_describe=False)
    directory = _multiprocess_dir(settings, environ)
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))
    else:
        registry.register(_ProcessMetrics())
    registry.register(StateCollector(settings, engine))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _ProcessMetrics:
    """The counters of the current process, added to a scrape's registry."""

    def collect(self) -> Iterable[Metric]:
        return _PROCESS_REGISTRY.collect()


def _multiprocess_dir(
    settings: Settings | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    if settings is not None and settings.metrics_multiproc_dir is not None:
        return settings.metrics_multiproc_dir
    env = os.environ if environ is None else environ
    raw = env.get("PROMETHEUS_MULTIPROC_DIR") or env.get("prometheus_multiproc_dir")
    return Path(raw) if raw else None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = [
    "CELERY_QUEUES",
    "StateCollector",
    "import_file_refused",
    "is_loopback",
    "observe_request",
    "process_exited",
    "queue_depths",
    "render_metrics",
    "scrape_allowed",
    "task_failed",
    "task_finished",
    "task_started",
]
