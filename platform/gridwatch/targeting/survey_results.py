"""County-wide survey results, kept where every process can read them and warmed on publish.

The survey pages show county-wide results (the ranking and the ladder, the village and grid
priority index, the early warning, each township's prevention plan) that are the same for
every reader and take seconds to build. They are kept under a key holding the published run,
the last import and the survey tables' signature
(:func:`gridwatch.targeting.indicators.survey_signature`), so a new run, an import or a
changed survey table makes every older entry unreachable; they are never invalidated by hand.

With ``GRIDWATCH_REDIS_URL`` the entries live in Redis (pickled and signed with the secret
key, for a day), shared by every web process and worker, and each process keeps the ones it
used; without Redis each process keeps its own. After a run is published (a hook of
:mod:`gridwatch.workers.engine`, which knows nothing of this layer) and after a survey import,
a worker runs
:func:`warm_survey_results` (``survey.warm``), so the first reader does not wait for them.
Workers register the task by importing this module (``gridwatch worker`` does; the deploy
entrypoint passes ``--include``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from celery import shared_task
from sqlalchemy import Engine, func, select

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period
from gridwatch.sharedcache import SharedCache
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import ImportBatch
from gridwatch.targeting.indicators import survey_periods, survey_signature
from gridwatch.targeting.rules import RulesError, TargetingError
from gridwatch.workers import engine as runs

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Bootstrap replicates of the ranking's rank intervals (the CLI's default).
RANKING_REPLICATES = 1000
#: Bootstrap replicates behind the priority index's associations (the domain default).
PRIORITY_REPLICATES = 500
#: New cameras proposed per township (the rule in the domain brief) and solver seconds.
PLAN_CAMERAS = 30
PLAN_TIME_LIMIT_S = 10.0
#: Entries each process keeps (a county's results are a few hundred kB each).
LOCAL_ENTRIES = 128
#: A warm-up not started within this many seconds is dropped (a newer run has its own).
WARM_EXPIRES_S = 1800
#: Import kinds that change the survey data.
SURVEY_IMPORT_KINDS = ("surveys", "survey-responses")


def data_version(engine: Engine) -> tuple[Any, ...]:
    """Return what the survey results depend on: the published run, last import, survey data."""
    with session_scope(engine) as session:
        run_id = runs.latest_published_run_id(session)
        last_batch = session.scalar(select(func.max(ImportBatch.id)))
    return run_id, last_batch, survey_signature(engine)


def settings_fingerprint(settings: Settings) -> tuple[Any, ...]:
    """Return the settings the results depend on, with each configured file's size and time."""
    stamps: list[Any] = []
    for path in (
        settings.categories_file,
        settings.survey_factors_file,
        settings.accountability_rules_file,
        settings.factor_map_file,
        settings.route_roads_file,
    ):
        if path is None:
            stamps.append(None)
            continue
        try:
            stat = path.stat()
        except OSError:
            stamps.append((str(path), None))
            continue
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return (*stamps, settings.area_levels, settings.timezone.key)


def result_key(
    engine: Engine,
    settings: Settings,
    kind: str,
    params: tuple[Any, ...],
    version: tuple[Any, ...] | None = None,
) -> tuple[Any, ...]:
    """Return the key of a result: kind, database, :func:`data_version`, settings, params."""
    database = engine.url.render_as_string(hide_password=True)
    version = version or data_version(engine)
    return ("survey", kind, database, *version, settings_fingerprint(settings), *params)


class SurveyResultStore(SharedCache):
    """The survey results of this process, and of every process when Redis is configured.

    Values go to Redis pickled and signed (:class:`gridwatch.sharedcache.SharedCache`): one
    that does not bear this installation's signature is never unpickled.

    Parameters
    ----------
    redis_url : str
        Empty keeps values in this process only.
    local_entries : int
        Values kept in this process.
    secret : str
        Key of the signatures (``GRIDWATCH_SECRET_KEY``, the same in every process).
    """

    def __init__(
        self, redis_url: str = "", local_entries: int = LOCAL_ENTRIES, secret: str = ""
    ) -> None:
        super().__init__("survey", redis_url, secret, local_entries)

    def clear_local(self) -> None:
        """Forget the values kept in this process (Redis keeps its own)."""
        self.clear()


_stores: dict[str, SurveyResultStore] = {}
_stores_lock = threading.Lock()


def result_store(settings: Settings) -> SurveyResultStore:
    """Return this process's store for ``settings`` (one per Redis URL)."""
    with _stores_lock:
        store = _stores.get(settings.redis_url)
        if store is None:
            store = _stores[settings.redis_url] = SurveyResultStore(
                settings.redis_url, secret=settings.secret_key
            )
        return store


# -- the results ---------------------------------------------------------------------------


def build_survey_result(
    engine: Engine,
    settings: Settings,
    kind: str,
    params: tuple[Any, ...],
    tree: AreaTree,
) -> Any:
    """Build one county-wide survey result (what the survey pages show, before scoping).

    Parameters
    ----------
    kind : str
        ``quarters`` (the quarterly waves, oldest first), ``ranking`` (params: quarter),
        ``ladder``, ``priorities.village`` / ``priorities.grid`` (params: quarter),
        ``early_warning``, ``priorities.focus`` (params: quarter; the village index with the
        replicates of route planning's patrol-focus grids) or ``plan`` (params: township
        code, quarter or ``None``).

    Raises
    ------
    TargetingError, RulesError, PeriodError
        As the domain functions raise them (nothing is kept then).
    """
    if kind == "quarters":
        return [w for w in survey_periods(engine) if parse_period(w).kind == "quarter"]
    if kind == "ranking":
        from gridwatch.targeting.ranking import survey_ranking

        (quarter,) = params
        return survey_ranking(engine, settings, quarter, "township", RANKING_REPLICATES, tree=tree)
    if kind == "ladder":
        from gridwatch.targeting.ladder import ladder_report

        return ladder_report(engine, settings, tree)
    if kind == "priorities.village":
        from gridwatch.targeting.linkage import priorities

        (quarter,) = params
        return priorities(engine, settings, quarter, "village", PRIORITY_REPLICATES, tree=tree)
    if kind == "priorities.grid":
        from gridwatch.targeting.grid_priorities import grid_priorities

        (quarter,) = params
        villages = survey_result(engine, settings, "priorities.village", (quarter,), tree)
        return grid_priorities(
            engine,
            settings,
            quarter,
            None,
            PRIORITY_REPLICATES,
            tree=tree,
            village_result=villages,
        )
    if kind == "early_warning":
        from gridwatch.targeting.early_warning import early_warning

        return early_warning(engine, settings, lead=1, tree=tree)
    if kind == "priorities.focus":
        from gridwatch.targeting.linkage import priorities
        from gridwatch.targeting.prevention import PATROL_FOCUS_REPLICATES

        (quarter,) = params
        return priorities(engine, settings, quarter, "village", PATROL_FOCUS_REPLICATES, tree=tree)
    if kind == "plan":
        from gridwatch.targeting.prevention import prevention_plan

        township_code, quarter = params
        return prevention_plan(
            engine,
            settings,
            township_code,
            quarter,
            PLAN_CAMERAS,
            time_limit_s=PLAN_TIME_LIMIT_S,
            replicates=PRIORITY_REPLICATES,
        )
    raise ValueError(f"no survey result {kind!r}")


def kept_result(
    engine: Engine,
    settings: Settings,
    kind: str,
    params: tuple[Any, ...],
    build: Callable[[], T],
    version: tuple[Any, ...] | None = None,
) -> T:
    """Return the value kept under ``kind`` and ``params`` for this data, building it once.

    For intermediate results several survey results share (the village priority index under
    the grid priorities, the plans and the patrol-focus grids of route planning).
    """
    key = result_key(engine, settings, kind, params, version)
    return result_store(settings).get_or_build(key, build)


def survey_result(
    engine: Engine,
    settings: Settings,
    kind: str,
    params: tuple[Any, ...] = (),
    tree: AreaTree | None = None,
    version: tuple[Any, ...] | None = None,
) -> Any:
    """Return a county-wide survey result from the store, building it on a miss.

    ``version`` is :func:`data_version` when the caller has it already.
    """
    return kept_result(
        engine,
        settings,
        kind,
        params,
        lambda: build_survey_result(engine, settings, kind, params, tree or load_tree(engine)),
        version,
    )


def warm_survey_results(engine: Engine, settings: Settings, plans: bool = False) -> dict[str, Any]:
    """Build the survey pages' default results for the newest quarter, unless kept already.

    The county-wide results, the village priority index route planning ranks its patrol-focus
    grids by, and with ``plans`` every township's prevention plan (off by default: once the
    rest is kept a plan takes about a second, every township's a minute of a heavy worker
    after each publish). A result the data cannot give (no survey yet …) is skipped.

    Returns
    -------
    dict
        ``version`` (:func:`data_version`), ``quarter``, ``built`` and ``skipped``: the kinds
        (``plan:<township>`` for plans) built or found, and those the data could not give.
    """
    from gridwatch.periods import PeriodError

    tree = load_tree(engine)
    version = data_version(engine)
    summary: dict[str, Any] = {"version": version, "quarter": None, "built": [], "skipped": []}
    if version[0] is None:
        return summary  # nothing published: the pages show no results yet
    quarters = survey_result(engine, settings, "quarters", (), tree, version)
    if not quarters:
        summary["built"].append("quarters")
        return summary
    quarter = quarters[-1]
    summary["quarter"] = quarter
    jobs: list[tuple[str, str, tuple[Any, ...]]] = [
        ("quarters", "quarters", ()),
        ("ranking", "ranking", (quarter,)),
        ("ladder", "ladder", ()),
        ("priorities.village", "priorities.village", (quarter,)),
        ("priorities.grid", "priorities.grid", (quarter,)),
        ("early_warning", "early_warning", ()),
        ("priorities.focus", "priorities.focus", (quarter,)),
    ]
    if plans:
        townships = sorted(n.code for n in tree.nodes.values() if n.level == "township")
        jobs.extend((f"plan:{code}", "plan", (code, quarter)) for code in townships)
    for name, kind, params in jobs:
        try:
            survey_result(engine, settings, kind, params, tree, version)
        except (PeriodError, RulesError, TargetingError) as exc:
            summary["skipped"].append(name)
            log.info("survey results: %s not built: %s", name, exc)
            continue
        summary["built"].append(name)
    return summary


# -- warming after a publish ---------------------------------------------------------------


@lru_cache(maxsize=1)
def _task_context() -> tuple[Settings, Engine]:
    from celery import current_app

    from gridwatch.config import load_settings
    from gridwatch.storage.db import create_db_engine

    settings = current_app.conf.get("gridwatch_settings") or load_settings()
    return settings, create_db_engine(settings.database_url)


@shared_task(name="survey.warm", acks_late=True, soft_time_limit=900, time_limit=960)
def warm_task(run_id: int, database: str | None = None) -> dict[str, Any] | None:
    """Build the survey results of run ``run_id`` of ``database`` (the URL, no password).

    Skipped once a newer run is published (its own warm-up follows) or when this worker
    serves another database. Safe to run twice: the second finds every result kept.
    """
    settings, engine = _task_context()
    if database is not None and database != engine.url.render_as_string(hide_password=True):
        return None
    with session_scope(engine) as session:
        if runs.latest_published_run_id(session) != run_id:
            return None
    summary = warm_survey_results(engine, settings)
    return {k: summary[k] for k in ("quarter", "built", "skipped")}


def warm_after_publish(engine: Engine, settings: Settings, run_id: int) -> None:
    """Send ``survey.warm`` for a published run (a publish hook; with Redis only).

    Without Redis the results live in each web process, which a worker or the command line
    cannot fill: the first request builds them there.
    """
    if not settings.redis_url:
        return
    from gridwatch.workers.celery_app import HEAVY_QUEUE, app_for

    database = engine.url.render_as_string(hide_password=True)
    app_for(settings).send_task(
        "survey.warm", args=[run_id, database], queue=HEAVY_QUEUE, expires=WARM_EXPIRES_S
    )


def warm_after_import(engine: Engine, settings: Settings, kind: str, imported: int) -> None:
    """Send ``survey.warm`` after an import that added survey rows (no run follows one).

    The import already made the kept results unreachable; this builds the new ones before
    the first reader asks (with Redis only, as :func:`warm_after_publish`).
    """
    if kind not in SURVEY_IMPORT_KINDS or imported <= 0 or not settings.redis_url:
        return
    with session_scope(engine) as session:
        run_id = runs.latest_published_run_id(session)
    if run_id is not None:
        warm_after_publish(engine, settings, run_id)


runs.on_publish(warm_after_publish)


__all__ = [
    "PLAN_CAMERAS",
    "PLAN_TIME_LIMIT_S",
    "PRIORITY_REPLICATES",
    "RANKING_REPLICATES",
    "SurveyResultStore",
    "build_survey_result",
    "data_version",
    "kept_result",
    "result_key",
    "result_store",
    "settings_fingerprint",
    "survey_result",
    "warm_after_import",
    "warm_after_publish",
    "warm_survey_results",
    "warm_task",
]
