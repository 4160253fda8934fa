"""The aggregation engine: plain functions that tasks and the CLI call.

A run goes through three steps, each safe to repeat:

1. :func:`create_run` records the run (``queued``) and what it covers;
2. :func:`compute_unit` computes the grid rows of one township (the unit of fan-out) and
   replaces whatever that township had in this run before (so a retried task is harmless);
3. :func:`finalize_run` rolls grids up the area tree, derives ratios and changes, and
   publishes the run in one transaction by setting ``status = 'done'``.

Readers (:func:`read_metrics`) only ever look at the newest run whose status is ``done``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from sqlalchemy import Engine, Table, delete, func, insert, inspect, select, update
from sqlalchemy.orm import Session

from gridwatch.config import Settings
from gridwatch.periods import PeriodError, PeriodKind, parse_period
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    AggregationRun,
    Area,
    AreaMetric,
    Camera,
    DirtyGrid,
    Incident,
    RunUnit,
)
from gridwatch.taxonomy import load_taxonomy
from gridwatch.workers.aggregate.incidents import (
    ADDITIVE,
    CATEGORY_PREFIX,
    PERIOD_KINDS,
    ancestors_table,
    incident_counts,
    roll_up,
)

#: Period label of rows that describe the present state (coverage, forecasts, teams).
CURRENT = "current"

#: Core table for bulk inserts (the ORM's bulk path is several times slower here).
METRICS_TABLE = cast(Table, AreaMetric.__table__)

#: How many published runs keep their metrics (older ones are pruned after a publish).
KEEP_PUBLISHED_RUNS = 3


class RunError(RuntimeError):
    """A run cannot be started or completed (message is for the user)."""


class RunNotReady(RunError):
    """Finalising was asked for before every planned township was computed (retry later)."""


@dataclass(frozen=True)
class RunRequest:
    """What a run should compute."""

    trigger: str = "cli"
    full: bool = False
    period_kinds: tuple[PeriodKind, ...] = PERIOD_KINDS
    date_from: date | None = None
    date_to: date | None = None


@dataclass
class Unit:
    """One unit of fan-out: the grids of one township (or a chunk of a flat grid set)."""

    label: str
    grid_ids: list[int] = field(default_factory=list)


# -- runs ----------------------------------------------------------------------------------


def latest_published_run_id(session: Session) -> int | None:
    """Return the id of the newest published run, or ``None``."""
    return session.scalar(
        select(AggregationRun.id)
        .where(AggregationRun.status == "done")
        .order_by(AggregationRun.published_at.desc(), AggregationRun.id.desc())
        .limit(1)
    )


def create_run(engine: Engine, request: RunRequest, mode: str) -> int:
    """Record a new run and decide its scope (full, or incremental over changed grids).

    A run is incremental when a published run exists, ``full`` was not asked for, and some
    grids were marked changed by imports; it then covers those grids only and takes every
    other grid's rows from the published run.
    """
    with session_scope(engine) as session:
        base = latest_published_run_id(session)
        dirty = sorted(session.scalars(select(DirtyGrid.area_id)))
        incremental = base is not None and not request.full and bool(dirty)
        if incremental:
            base_run = session.get(AggregationRun, base)
            assert base_run is not None
            if list(base_run.period_kinds) != list(request.period_kinds) or (
                base_run.date_from,
                base_run.date_to,
            ) != (_iso(request.date_from), _iso(request.date_to)):
                incremental = False  # a different shape of run cannot reuse the old rows
        run = AggregationRun(
            trigger=request.trigger,
            scope="incremental" if incremental else "full",
            mode=mode,
            status="queued",
            period_kinds=list(request.period_kinds),
            date_from=_iso(request.date_from),
            date_to=_iso(request.date_to),
            area_ids=dirty if incremental else [],
            based_on_run_id=base if incremental else None,
        )
        session.add(run)
        session.flush()
        if dirty:
            # Drained now: grids marked after this point belong to the next run.
            session.execute(delete(DirtyGrid).where(DirtyGrid.area_id.in_(dirty)))
        return run.id


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def plan_units(engine: Engine, run_id: int, chunk: int = 500) -> list[Unit]:
    """Group the run's grids by township (fan-out units); flat grid sets go in chunks."""
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        areas = pd.DataFrame(
            session.execute(select(Area.id, Area.parent_id, Area.level)).all(),
            columns=["id", "parent_id", "level"],
        )
        wanted = set(run.area_ids) if run.scope == "incremental" else None
    if areas.empty:
        return []
    parents = set(areas["parent_id"].dropna().astype(int))
    leaves = [int(i) for i in areas["id"] if int(i) not in parents]
    if wanted is not None:
        leaves = [g for g in leaves if g in wanted]
    ancestors = ancestors_table(areas)
    townships = ancestors[ancestors["ancestor_level"] == "township"]
    township_of = dict(zip(townships["area_id"], townships["ancestor_id"], strict=True))
    units: dict[str, Unit] = {}
    loose: list[int] = []
    for grid in sorted(leaves):
        township = township_of.get(grid)
        if township is None:
            loose.append(grid)
            continue
        key = f"township:{int(township)}"
        units.setdefault(key, Unit(key)).grid_ids.append(grid)
    for start in range(0, len(loose), chunk):
        key = f"grids:{start // chunk}"
        units[key] = Unit(key, loose[start : start + chunk])
    return list(units.values())


def start_run(engine: Engine, run_id: int, units: list[Unit], task_id: str | None) -> None:
    """Mark a run as running and record its planned units (kept if already recorded)."""
    with session_scope(engine) as session:
        known = set(session.scalars(select(RunUnit.label).where(RunUnit.run_id == run_id)))
        new = [
            {"run_id": run_id, "label": u.label, "grid_count": len(u.grid_ids)}
            for u in units
            if u.label not in known
        ]
        if new:
            session.execute(insert(RunUnit), new)
        townships_total = len(known | {u.label for u in units})
        session.execute(
            update(AggregationRun)
            .where(AggregationRun.id == run_id)
            .values(
                status="running",
                started_at=datetime.now(UTC),
                townships_total=townships_total,
                task_id=task_id,
            )
        )


def mark_failed(engine: Engine, run_id: int, error: str) -> None:
    """Record that a run failed (its rows stay unpublished and are pruned later)."""
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None or run.status == "done":
            return
        run.status = "failed"
        run.finished_at = datetime.now(UTC)
        run.errors = [*run.errors, error[:2000]]


# -- computing one unit ------------------------------------------------------------------


def _load_incidents(
    session: Session, grid_ids: Sequence[int], run: AggregationRun, tz: ZoneInfo
) -> pd.DataFrame:
    columns = [
        Incident.grid_id,
        Incident.occurred_at,
        Incident.category,
        Incident.source,
        Incident.status,
        Incident.solved_at,
        Incident.victim_notified_at,
        Incident.lon,
        Incident.lat,
    ]
    rows: list[Any] = []
    for start in range(0, len(grid_ids), 900):
        stmt = select(*columns).where(Incident.grid_id.in_(grid_ids[start : start + 900]))
        if run.date_from:
            stmt = stmt.where(Incident.occurred_at >= _local_midnight(run.date_from, tz))
        if run.date_to:
            stmt = stmt.where(
                Incident.occurred_at < _local_midnight(run.date_to, tz, next_day=True)
            )
        rows.extend(session.execute(stmt).all())
    return pd.DataFrame(rows, columns=[c.key for c in columns])


def _local_midnight(day: str, tz: ZoneInfo, next_day: bool = False) -> datetime:
    """Return the instant local ``day`` (or the day after) begins in ``tz``."""
    parsed = date.fromisoformat(day)
    if next_day:
        parsed += timedelta(days=1)
    return datetime.combine(parsed, time.min, tzinfo=tz)


def compute_unit(
    engine: Engine, settings: Settings, run_id: int, grid_ids: list[int], label: str | None = None
) -> int:
    """Compute and store the grid rows of one unit; safe to repeat.

    Returns
    -------
    int
        Incident rows read.
    """
    taxonomy = load_taxonomy(settings.categories_file)
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in ("done", "failed"):
            return 0  # a late duplicate delivery of an already finished run
        incidents = _load_incidents(session, grid_ids, run, settings.timezone)
        outside, coverage_rows = _unit_coverage(session, run_id, grid_ids, incidents)
        incidents["outside_view"] = outside
        counts = incident_counts(
            incidents, settings.timezone, tuple(run.period_kinds), taxonomy.categories
        )
        rows = _raw_rows(run_id, counts) + coverage_rows
        session.execute(
            delete(AreaMetric).where(AreaMetric.run_id == run_id, AreaMetric.area_id.in_(grid_ids))
        )
        if rows:
            session.execute(insert(METRICS_TABLE), rows)
        if label is not None:
            session.execute(
                update(RunUnit)
                .where(RunUnit.run_id == run_id, RunUnit.label == label)
                .values(done_at=datetime.now(UTC))
            )
        # Counted from the unit table, so a redelivered task is not counted twice.
        done = session.scalar(
            select(func.count())
            .select_from(RunUnit)
            .where(RunUnit.run_id == run_id, RunUnit.done_at.is_not(None))
        )
        session.execute(
            update(AggregationRun)
            .where(AggregationRun.id == run_id)
            .values(
                townships_done=done,
                rows_read=AggregationRun.rows_read + len(incidents),
            )
        )
        return len(incidents)


#: Per-grid camera figures kept on the grid's "current" row and summed up the tree.
COVERAGE_ADDITIVE = (
    "area_m2",
    "covered_m2",
    "cameras_total",
    "cameras_working",
    "cameras_offline",
    "cameras_broken",
    "cameras_checkpoint",
    "cameras_hd",
    "cameras_standard",
    "cameras_private",
    "grids_without_working_camera",
)
#: Degrees around a unit's grids searched for cameras whose view may reach into them.
CAMERA_MARGIN_DEG = 0.025


def _unit_coverage(
    session: Session, run_id: int, grid_ids: list[int], incidents: pd.DataFrame
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Camera coverage of a unit's grids and which of its incidents no camera saw."""
    from gridwatch.workers import countywide
    from gridwatch.workers.aggregate.coverage import (
        camera_counts,
        camera_views,
        grid_coverage,
        points_outside_views,
    )

    grids = countywide.GridGeometry.load(session, grid_ids)
    if grids.frame.empty:
        return np.ones(len(incidents), dtype=bool), []
    minx, miny, maxx, maxy = grids.frame.total_bounds
    m = CAMERA_MARGIN_DEG
    columns = [
        Camera.lon,
        Camera.lat,
        Camera.status,
        Camera.type,
        Camera.direction_deg,
        Camera.fov_deg,
        Camera.range_m,
        Camera.grid_id,
    ]
    cameras = pd.DataFrame(
        session.execute(
            select(*columns).where(
                Camera.lon.between(minx - m, maxx + m), Camera.lat.between(miny - m, maxy + m)
            )
        ).all(),
        columns=[c.key for c in columns],
    )
    views = camera_views(cameras) if len(cameras) else np.array([], dtype=object)
    coverage = grid_coverage(grids.frame, views)
    in_unit = cameras[cameras["grid_id"].isin(grid_ids)] if len(cameras) else cameras
    counts = camera_counts(in_unit, grid_ids=grid_ids)
    outside = (
        points_outside_views(incidents["lon"].to_numpy(), incidents["lat"].to_numpy(), views)
        if len(incidents)
        else np.zeros(0, dtype=bool)
    )
    rows = []
    for grid_id in grid_ids:
        metrics: dict[str, Any] = {}
        if grid_id in coverage.index:
            metrics["area_m2"] = round(float(coverage.at[grid_id, "area_m2"]), 1)
            metrics["covered_m2"] = round(float(coverage.at[grid_id, "covered_m2"]), 1)
        if grid_id in counts.index:
            metrics.update({c: int(counts.at[grid_id, c]) for c in counts.columns})
        metrics["grids_without_working_camera"] = int(metrics.get("cameras_working", 0) == 0)
        rows.append(
            {
                "run_id": run_id,
                "area_id": grid_id,
                "level": "grid",
                "period_kind": CURRENT,
                "period": CURRENT,
                "incidents_total": 0,
                "metrics": metrics,
            }
        )
    return outside, rows


def _raw_rows(run_id: int, counts: pd.DataFrame) -> list[dict[str, Any]]:
    if counts.empty:
        return []
    value_columns = [c for c in counts.columns if c not in ("area_id", "period_kind", "period")]
    values = counts[value_columns].to_numpy()
    out = []
    for i, (area_id, kind, period) in enumerate(
        counts[["area_id", "period_kind", "period"]].itertuples(index=False)
    ):
        metrics = {c: int(v) for c, v in zip(value_columns, values[i], strict=True) if v}
        out.append(
            {
                "run_id": run_id,
                "area_id": int(area_id),
                "level": "grid",
                "period_kind": kind,
                "period": period,
                "incidents_total": int(metrics.get("incidents_total", 0)),
                "metrics": metrics,
            }
        )
    return out


# -- finalising and publishing -------------------------------------------------------------


def _areas_frame(session: Session) -> pd.DataFrame:
    return pd.DataFrame(
        session.execute(
            select(Area.id, Area.code, Area.parent_id, Area.level, Area.population)
        ).all(),
        columns=["id", "code", "parent_id", "level", "population"],
    )


def _grid_rows(session: Session, run_id: int) -> pd.DataFrame:
    rows = session.execute(
        select(
            AreaMetric.area_id, AreaMetric.period_kind, AreaMetric.period, AreaMetric.metrics
        ).where(
            AreaMetric.run_id == run_id,
            AreaMetric.level == "grid",
            AreaMetric.period != CURRENT,
        )
    ).all()
    if not rows:
        return pd.DataFrame(columns=["area_id", "period_kind", "period", *ADDITIVE])
    frame = pd.DataFrame([r.metrics for r in rows]).fillna(0)
    frame.insert(0, "area_id", [r.area_id for r in rows])
    frame.insert(1, "period_kind", [r.period_kind for r in rows])
    frame.insert(2, "period", [r.period for r in rows])
    for column in ADDITIVE:
        if column not in frame:
            frame[column] = 0
    return frame


def _shifted_labels(labels: pd.Series) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """Map each distinct period label to its previous period and the same period last year."""
    previous: dict[str, str | None] = {}
    last_year: dict[str, str | None] = {}
    for label in labels.unique():
        try:
            period = parse_period(label)
        except PeriodError:
            previous[label] = last_year[label] = None
            continue
        previous[label] = period.previous().label
        last_year[label] = period.same_period_last_year().label
    return previous, last_year


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), 4) for v in values]


def derive_metrics(
    rows: pd.DataFrame, areas: pd.DataFrame, groups: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Turn additive rows into the published metric objects (ratios, groups, changes).

    Parameters
    ----------
    rows : pandas.DataFrame
        ``area_id, period_kind, period`` and additive columns, for every level.
    areas : pandas.DataFrame
        ``id, code, level, population``.
    groups : dict
        Category group → category codes (from the taxonomy).
    """
    if rows.empty:
        return []
    rows = rows.reset_index(drop=True)
    area_ids = rows["area_id"].astype("int64").to_numpy()
    level_of = dict(zip(areas["id"], areas["level"], strict=True))
    population_of = dict(zip(areas["id"], areas["population"], strict=True))
    population = np.array(
        [population_of.get(a) if population_of.get(a) is not None else np.nan for a in area_ids],
        dtype=float,
    )
    total = rows["incidents_total"].to_numpy(dtype=float)
    previous_label, last_year_label = _shifted_labels(rows["period"])
    key_total = pd.Series(
        total, index=pd.MultiIndex.from_arrays([area_ids, rows["period_kind"], rows["period"]])
    )

    def lookup(shifted: dict[str, str | None]) -> np.ndarray:
        labels = rows["period"].map(shifted)
        index = pd.MultiIndex.from_arrays([area_ids, rows["period_kind"], labels])
        return key_total.reindex(index).to_numpy(dtype=float)

    previous = lookup(previous_label)
    last_year = lookup(last_year_label)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_1000 = np.where(population > 0, 1000.0 * total / population, np.nan)
        night = 100.0 * rows["incidents_night"].to_numpy(dtype=float) / total
        solved = rows["incidents_solved"].to_numpy(dtype=float)
        solved_rate = 100.0 * solved / total
        not_notified = 100.0 * rows["solved_not_notified"].to_numpy(dtype=float) / solved
        blind = 100.0 * rows["incidents_blind_spot"].to_numpy(dtype=float) / total
        change_prev = np.where(previous > 0, 100.0 * (total - previous) / previous, np.nan)
        change_year = np.where(last_year > 0, 100.0 * (total - last_year) / last_year, np.nan)
    cat_columns = [c for c in rows.columns if c.startswith(CATEGORY_PREFIX)]
    cat_codes = [c[len(CATEGORY_PREFIX) :] for c in cat_columns]
    cats = rows[cat_columns].to_numpy(dtype=np.int64)
    group_index = {
        g: [i for i, code in enumerate(cat_codes) if code in set(codes)]
        for g, codes in groups.items()
    }
    group_totals = {g: cats[:, idx].sum(axis=1) for g, idx in group_index.items()}
    additive = {c: rows[c].to_numpy(dtype=np.int64) for c in ADDITIVE}
    columns = {
        "incidents_per_1000": _nullable(per_1000),
        "night_share_pct": _nullable(night),
        "solved_rate_pct": _nullable(solved_rate),
        "not_notified_pct": _nullable(not_notified),
        "blind_spot_incident_pct": _nullable(blind),
        "change_prev_pct": _nullable(change_prev),
        "change_last_year_pct": _nullable(change_year),
    }
    kinds = rows["period_kind"].to_numpy()
    labels = rows["period"].to_numpy()
    passthrough: dict[str, list[Any]] = {}
    for name in PATROL_ADDITIVE:
        values = rows[name].to_numpy(dtype=float) if name in rows else np.zeros(len(rows))
        passthrough[name] = [round(float(v), 2) for v in values]
    if "patrol_teams" in rows:
        passthrough["patrol_teams"] = [
            None if v != v else int(v) for v in rows["patrol_teams"].to_numpy(dtype=float)
        ]
    for name in HOTSPOT_COLUMNS:
        if name in rows:
            passthrough[name] = [
                None if isinstance(v, float) and v != v else v for v in rows[name].tolist()
            ]
    out = []
    for i in range(len(rows)):
        nonzero = np.flatnonzero(cats[i])
        metrics: dict[str, Any] = {c: int(additive[c][i]) for c in ADDITIVE}
        metrics["incidents_by_category"] = {cat_codes[j]: int(cats[i, j]) for j in nonzero}
        metrics["incidents_by_group"] = {g: int(v[i]) for g, v in group_totals.items()}
        for name, derived in columns.items():
            metrics[name] = derived[i]
        metrics["incidents_prev"] = None if np.isnan(previous[i]) else int(previous[i])
        for name in passthrough:
            value = passthrough[name][i]
            metrics[name] = None if value is None or value != value else value
        out.append(
            {
                "area_id": int(area_ids[i]),
                "level": str(level_of.get(int(area_ids[i]), "")),
                "period_kind": kinds[i],
                "period": labels[i],
                "incidents_total": int(total[i]),
                "metrics": metrics,
            }
        )
    return out


#: Patrol columns that add up across grids (distinct teams do not, so they stay per grid).
PATROL_ADDITIVE = ("patrol_minutes", "patrol_night_minutes", "patrol_visits")
HOTSPOT_COLUMNS = ("gi_star_z", "gi_star_p", "gi_star_q", "hotspot", "hotspot_class")


def _merge_rows(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    keys = ["area_id", "period_kind", "period"]
    if right.empty:
        return left
    if left.empty:
        return right
    return left.merge(right, on=keys, how="outer")


def finalize_run(engine: Engine, settings: Settings, run_id: int) -> dict[str, Any]:
    """Add the county-wide steps, roll up, derive and publish a run; return its summary.

    Everything is written and the run published in one transaction.
    """
    from gridwatch.workers import countywide

    taxonomy = load_taxonomy(settings.categories_file)
    groups = {g: taxonomy.in_group(g) for g in taxonomy.groups}
    tz = settings.timezone
    today = countywide.local_today(tz)
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in ("done", "failed"):
            return run_summary(run)  # published already, or given up: never publish it now
        pending = session.scalar(
            select(func.count())
            .select_from(RunUnit)
            .where(RunUnit.run_id == run_id, RunUnit.done_at.is_(None))
        )
        if pending:
            raise RunNotReady(f"run {run_id}: {pending} townships are not computed yet")
        if run.scope == "incremental" and run.based_on_run_id is not None:
            _copy_unchanged_grids(session, run)
        kinds = tuple(run.period_kinds)
        areas = _areas_frame(session)
        ancestors = ancestors_table(areas[["id", "parent_id", "level"]])
        parents = set(areas["parent_id"].dropna().astype(int))
        grid_ids = [int(i) for i in areas["id"] if int(i) not in parents]
        grids = countywide.GridGeometry.load(session, grid_ids)

        grid_rows = _grid_rows(session, run_id)
        patrol, teams, since = countywide.patrol_rows(session, tz, kinds, datetime.now(UTC))
        grid_rows = _merge_rows(grid_rows, patrol)
        hotspots = countywide.hotspot_rows(grid_rows.fillna(0), grids, kinds, today)
        grid_rows = _merge_rows(grid_rows, hotspots)
        numeric = [
            c
            for c in grid_rows.columns
            if c not in ("area_id", "period_kind", "period", *HOTSPOT_COLUMNS, "patrol_teams")
        ]
        grid_rows[numeric] = grid_rows[numeric].fillna(0)
        # Gi* and distinct teams are per grid: they do not add up the tree.
        per_grid_only = ["patrol_teams", *HOTSPOT_COLUMNS]
        upper = roll_up(grid_rows.drop(columns=per_grid_only, errors="ignore"), ancestors)
        every = pd.concat([grid_rows, upper], ignore_index=True)
        for column in numeric:
            every[column] = every[column].fillna(0)
        final = derive_metrics(every, areas, groups)

        daily = countywide.daily_matrix(session, grids.frame.index.tolist(), tz, today)
        forecasts, scorecard = countywide.forecast_rows(
            daily, grids, today, countywide.neighbours_of(grids)
        )
        coverage = _grid_current(session, run_id)
        final.extend(
            _current_rows(
                areas, ancestors, forecasts, coverage, since, teams, scorecard["targets"]
            )
        )

        session.execute(delete(AreaMetric).where(AreaMetric.run_id == run_id))
        for start in range(0, len(final), 5000):
            session.execute(
                insert(METRICS_TABLE),
                [{**r, "run_id": run_id} for r in final[start : start + 5000]],
            )
        now = datetime.now(UTC)
        run.rows_written = len(final)
        run.scorecard = scorecard
        run.status = "done"
        run.finished_at = now
        run.published_at = now
        summary = run_summary(run)
    prune_old_runs(engine)
    return summary


def _grid_current(session: Session, run_id: int) -> pd.DataFrame:
    """Return the camera figures the township tasks stored on each grid's current row."""
    rows = session.execute(
        select(AreaMetric.area_id, AreaMetric.metrics).where(
            AreaMetric.run_id == run_id,
            AreaMetric.level == "grid",
            AreaMetric.period == CURRENT,
        )
    ).all()
    frame = pd.DataFrame([{**r.metrics, "area_id": r.area_id} for r in rows])
    if frame.empty:
        return pd.DataFrame(columns=["area_id", *COVERAGE_ADDITIVE]).set_index("area_id")
    for column in COVERAGE_ADDITIVE:
        if column not in frame:
            frame[column] = 0
    return frame.set_index("area_id")[list(COVERAGE_ADDITIVE)].fillna(0)


def _current_rows(
    areas: pd.DataFrame,
    ancestors: pd.DataFrame,
    forecasts: pd.DataFrame,
    coverage: pd.DataFrame,
    since: pd.Series,
    teams: dict[str, Any],
    targets: dict[str, str],
) -> list[dict[str, Any]]:
    """Build the rows with no period: forecasts, camera figures and team activity.

    Forecasts and camera counts are summed up the tree, coverage is area-weighted, and the
    team activity goes on the top areas.
    """
    level_of = dict(zip(areas["id"], areas["level"], strict=True))
    rows: dict[int, dict[str, Any]] = {}
    per_grid = forecasts.join(coverage, how="outer") if not coverage.empty else forecasts
    if not per_grid.empty:
        joined = (
            per_grid.rename_axis("area_id")
            .reset_index()
            .merge(ancestors[["area_id", "ancestor_id"]], on="area_id")
        )
        summed = joined.drop(columns=["area_id"]).groupby("ancestor_id").sum()
        for area_id, values in summed.iterrows():
            rows[int(cast(int, area_id))] = {
                str(k): round(float(v), 3) for k, v in values.items() if pd.notna(v)
            }
    for metrics in rows.values():
        for name in COVERAGE_ADDITIVE:
            if name.startswith(("cameras_", "grids_")) and name in metrics:
                metrics[name] = int(metrics[name])
        area, covered = metrics.get("area_m2"), metrics.get("covered_m2")
        metrics["camera_coverage_pct"] = (
            round(100.0 * covered / area, 3) if area and covered is not None else None
        )
    if len(since):
        # hours since any team was last in the area: the most recent visit to any of its grids
        visits = (
            since.rename("hours")
            .rename_axis("area_id")
            .reset_index()
            .merge(ancestors[["area_id", "ancestor_id"]], on="area_id")
            .groupby("ancestor_id")["hours"]
            .min()
        )
        for area_id, hours in visits.items():
            rows.setdefault(int(cast(int, area_id)), {})["hours_since_last_visit"] = round(
                float(hours), 2
            )
    top = [int(a) for a, p in zip(areas["id"], areas["parent_id"], strict=True) if pd.isna(p)]
    for area_id in top:
        rows.setdefault(area_id, {})["patrol_teams_activity"] = teams
    return [
        {
            "area_id": area_id,
            "level": str(level_of[area_id]),
            "period_kind": CURRENT,
            "period": CURRENT,
            "incidents_total": 0,
            "metrics": {**metrics, "forecast_targets": targets},
        }
        for area_id, metrics in rows.items()
    ]


def _copy_unchanged_grids(session: Session, run: AggregationRun) -> None:
    changed = set(run.area_ids)
    source = session.execute(
        select(
            AreaMetric.area_id,
            AreaMetric.level,
            AreaMetric.period_kind,
            AreaMetric.period,
            AreaMetric.incidents_total,
            AreaMetric.metrics,
        ).where(
            AreaMetric.run_id == run.based_on_run_id,
            AreaMetric.level == "grid",
            AreaMetric.period != CURRENT,
        )
    ).all()
    rows = []
    for r in session.execute(
        select(AreaMetric.area_id, AreaMetric.metrics).where(
            AreaMetric.run_id == run.based_on_run_id,
            AreaMetric.level == "grid",
            AreaMetric.period == CURRENT,
        )
    ):
        if r.area_id in changed:
            continue
        kept = {k: v for k, v in r.metrics.items() if k in COVERAGE_ADDITIVE}
        rows.append(
            {
                "run_id": run.id,
                "area_id": r.area_id,
                "level": "grid",
                "period_kind": CURRENT,
                "period": CURRENT,
                "incidents_total": 0,
                "metrics": kept,
            }
        )
    for r in source:
        if r.area_id in changed:
            continue
        # Published grid rows carry derived fields; keep only the additive inputs.
        raw = {k: v for k, v in r.metrics.items() if k in ADDITIVE}
        raw.update(
            {f"{CATEGORY_PREFIX}{c}": n for c, n in r.metrics["incidents_by_category"].items()}
        )
        rows.append(
            {
                "run_id": run.id,
                "area_id": r.area_id,
                "level": "grid",
                "period_kind": r.period_kind,
                "period": r.period,
                "incidents_total": r.incidents_total,
                "metrics": raw,
            }
        )
    for start in range(0, len(rows), 5000):
        session.execute(insert(METRICS_TABLE), rows[start : start + 5000])


def prune_old_runs(engine: Engine, keep: int = KEEP_PUBLISHED_RUNS) -> None:
    """Delete metrics of published runs older than the newest ``keep`` and of failed runs."""
    with session_scope(engine) as session:
        published = session.scalars(
            select(AggregationRun.id)
            .where(AggregationRun.status == "done")
            .order_by(AggregationRun.id.desc())
        ).all()
        stale = published[keep:]
        failed = session.scalars(
            select(AggregationRun.id).where(AggregationRun.status == "failed")
        ).all()
        doomed = [*stale, *failed]
        for start in range(0, len(doomed), 500):
            session.execute(
                delete(AreaMetric).where(AreaMetric.run_id.in_(doomed[start : start + 500]))
            )


def run_summary(run: AggregationRun) -> dict[str, Any]:
    """Return the JSON-able summary of a run."""
    return {
        "run_id": run.id,
        "status": run.status,
        "mode": run.mode,
        "trigger": run.trigger,
        "scope": run.scope,
        "period_kinds": list(run.period_kinds),
        "townships_total": run.townships_total,
        "townships_done": run.townships_done,
        "rows_read": run.rows_read,
        "rows_written": run.rows_written,
        "created_at": _iso_utc(run.created_at),
        "started_at": _iso_utc(run.started_at),
        "finished_at": _iso_utc(run.finished_at),
        "errors": list(run.errors),
    }


def _iso_utc(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def get_run(engine: Engine, run_id: int) -> dict[str, Any]:
    """Return one run's summary."""
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        return run_summary(run)


def list_runs(engine: Engine, limit: int = 20) -> list[dict[str, Any]]:
    """Return the newest runs first."""
    with session_scope(engine) as session:
        runs = session.scalars(
            select(AggregationRun).order_by(AggregationRun.id.desc()).limit(limit)
        ).all()
        return [run_summary(r) for r in runs]


def run_eager(engine: Engine, settings: Settings, request: RunRequest) -> dict[str, Any]:
    """Run every step in this process (the embedded mode without Redis)."""
    run_id = create_run(engine, request, mode="eager")
    try:
        units = plan_units(engine, run_id)
        start_run(engine, run_id, units, None)
        for unit in units:
            compute_unit(engine, settings, run_id, unit.grid_ids, unit.label)
        return finalize_run(engine, settings, run_id)
    except Exception as exc:
        mark_failed(engine, run_id, f"{type(exc).__name__}: {exc}")
        raise


# -- reading published metrics -------------------------------------------------------------


def read_metrics(
    engine: Engine, level: str, period: str, area_code: str | None = None
) -> list[dict[str, Any]]:
    """Return the published metrics of every area of ``level`` for ``period``.

    Areas without any row in the period get zero counts, so the list is complete. With
    ``area_code``, only that area (or, if it is above ``level``, its descendants at ``level``).
    """
    label = parse_period(period).label
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        areas = _areas_frame(session)
        if area_code is not None:
            match = areas[areas["code"] == area_code]
            if match.empty:
                raise RunError(f"no area with code {area_code!r}")
            ancestors = ancestors_table(areas[["id", "parent_id", "level"]])
            inside = set(
                ancestors[ancestors["ancestor_id"] == int(match["id"].iloc[0])]["area_id"]
            )
            areas = areas[areas["id"].isin(inside)]
        areas = areas[areas["level"] == level].sort_values("code")
        stored: dict[int, dict[str, Any]] = {}
        current: dict[int, dict[str, Any]] = {}
        if run_id is not None:
            for area_id, metrics in session.execute(
                select(AreaMetric.area_id, AreaMetric.metrics).where(
                    AreaMetric.run_id == run_id,
                    AreaMetric.level == level,
                    AreaMetric.period == CURRENT,
                )
            ):
                current[area_id] = metrics
            for area_id, metrics in session.execute(
                select(AreaMetric.area_id, AreaMetric.metrics).where(
                    AreaMetric.run_id == run_id,
                    AreaMetric.level == level,
                    AreaMetric.period == label,
                )
            ):
                stored[area_id] = metrics
        codes = dict(zip(areas["id"], areas["code"], strict=True))
        parent_codes = _parent_codes(session)
    kind = parse_period(label).kind
    out = []
    for area_id, code in codes.items():
        metrics = stored.get(int(area_id)) or _empty_metrics()
        now = current.get(int(area_id), {})
        targets = now.get("forecast_targets", {})
        metrics = {
            **metrics,
            "forecast_next": now.get(f"forecast_next_{kind}"),
            "forecast_next_period": targets.get(kind),
            "camera_coverage_pct": now.get("camera_coverage_pct"),
            "cameras_working": now.get("cameras_working"),
            "cameras_total": now.get("cameras_total"),
            "grids_without_working_camera": now.get("grids_without_working_camera"),
            "hours_since_last_visit": now.get("hours_since_last_visit"),
        }
        out.append(
            {
                "area_code": code,
                "parent_code": parent_codes.get(int(area_id)),
                "level": level,
                "period": label,
                "run_id": run_id,
                "incidents_total": metrics.get("incidents_total", 0),
                **{k: v for k, v in metrics.items() if k != "incidents_total"},
            }
        )
    return out


def _parent_codes(session: Session) -> dict[int, str]:
    parent = Area.__table__.alias("parent")
    return {
        area_id: code
        for area_id, code in session.execute(
            select(Area.id, parent.c.code).join(parent, Area.parent_id == parent.c.id)
        )
    }


def _empty_metrics() -> dict[str, Any]:
    return {
        **{c: 0 for c in ADDITIVE},
        "incidents_by_category": {},
        "incidents_by_group": {},
        "incidents_per_1000": None,
        "night_share_pct": None,
        "solved_rate_pct": None,
        "not_notified_pct": None,
        "blind_spot_incident_pct": None,
        "change_prev_pct": None,
        "change_last_year_pct": None,
        "incidents_prev": None,
        **{name: 0.0 for name in PATROL_ADDITIVE},
        **{name: None for name in HOTSPOT_COLUMNS},
    }


def mark_dirty(engine: Engine, grid_ids: set[int]) -> None:
    """Record grids whose data changed, for the next incremental run."""
    if not grid_ids:
        return
    with session_scope(engine) as session:
        known = set(session.scalars(select(DirtyGrid.area_id)))
        now = datetime.now(UTC)
        new = [{"area_id": g, "marked_at": now} for g in sorted(grid_ids - known)]
        if new:
            session.execute(insert(DirtyGrid), new)


def count_dirty(engine: Engine) -> int:
    """Return how many grids wait for an incremental run."""
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DirtyGrid)) or 0)


__all__ = [
    "RunError",
    "RunRequest",
    "Unit",
    "compute_unit",
    "count_dirty",
    "create_run",
    "finalize_run",
    "get_run",
    "list_runs",
    "mark_dirty",
    "mark_failed",
    "plan_units",
    "read_metrics",
    "run_eager",
    "start_run",
]


def forecast_period(engine: Engine, settings: Settings, level: str, period: str) -> dict[str, Any]:
    """Forecast every area of ``level`` for ``period`` from data before the period starts.

    Any past period can be forecast and set against what happened (``actual``, reported
    incidents, once the period is over). The back-test scorecard of the newest published run
    comes with it.
    """
    from gridwatch.workers import countywide
    from gridwatch.workers.aggregate.forecast import forecast_counts

    target = parse_period(period)
    if target.kind not in ("day", "week", "month", "quarter", "year"):
        raise RunError(f"cannot forecast {period!r}")
    tz = settings.timezone
    today = countywide.local_today(tz)
    with session_scope(engine) as session:
        areas = _areas_frame(session)
        parents = set(areas["parent_id"].dropna().astype(int))
        grid_ids = [int(i) for i in areas["id"] if int(i) not in parents]
        grids = countywide.GridGeometry.load(session, grid_ids)
        past = target.end <= today
        # One read: history before the period and, once it is over, the period itself. For a
        # future period history stops today: days not yet lived are not zero-incident days.
        counts = countywide.daily_matrix(
            session,
            grids.frame.index.tolist(),
            tz,
            target.end if past else min(target.start, today),
        )
        daily = counts[[d for d in counts.columns if d < target.start]]
        actual_daily = counts if past else None
        run_id = latest_published_run_id(session)
        run = session.get(AggregationRun, run_id) if run_id else None
        scorecard = dict(run.scorecard) if run else {}
    if daily.shape[1] < 28:
        raise RunError(f"not enough history before {target.label} to forecast (need 28 days)")
    expected = forecast_counts(
        daily,
        target.start,
        (target.end - target.start).days,
        neighbours=countywide.neighbours_of(grids),
    )
    ancestors = ancestors_table(areas[["id", "parent_id", "level"]])
    frame = pd.DataFrame({"area_id": expected.index.astype("int64"), "expected": expected.values})
    if actual_daily is not None:
        days = [d for d in actual_daily.columns if target.start <= d < target.end]
        actual = actual_daily[days].sum(axis=1) if days else pd.Series(0.0, index=frame.index)
        frame["actual"] = frame["area_id"].map(actual).fillna(0.0)
    joined = frame.merge(ancestors[["area_id", "ancestor_id", "ancestor_level"]], on="area_id")
    joined = joined[joined["ancestor_level"] == level]
    totals = joined.drop(columns=["area_id", "ancestor_level"]).groupby("ancestor_id").sum()
    codes = dict(zip(areas["id"], areas["code"], strict=True))
    rows = []
    for area_id, values in totals.sort_index().iterrows():
        row: dict[str, Any] = {
            "area_code": codes[int(cast(int, area_id))],
            "expected": round(float(values["expected"]), 3),
        }
        if "actual" in values:
            row["actual"] = int(values["actual"])
        rows.append(row)
    rows.sort(key=lambda r: r["area_code"])
    return {
        "period": target.label,
        "level": level,
        "history_days": int(daily.shape[1]),
        "forecast": rows,
        "scorecard": scorecard,
    }


def metrics_by_code(engine: Engine, period: str) -> dict[str, dict[str, Any]]:
    """Return the published metrics of every area for ``period``, keyed by area code.

    Empty when no run has been published yet (or the schema has no runs table yet).
    """
    if not inspect(engine).has_table("aggregation_runs"):
        return {}
    with session_scope(engine) as session:
        if latest_published_run_id(session) is None:
            return {}
        levels = sorted(set(session.scalars(select(Area.level).distinct())))
    return {
        row["area_code"]: row for level in levels for row in read_metrics(engine, level, period)
    }


def stale_runs(engine: Engine, no_progress_for: timedelta) -> list[int]:
    """Return unfinished runs that made no progress for ``no_progress_for``.

    Progress is the latest of the run's creation, start and any township finishing.
    """
    cutoff = datetime.now(UTC) - no_progress_for
    with session_scope(engine) as session:
        runs = session.scalars(
            select(AggregationRun).where(AggregationRun.status.in_(("queued", "running")))
        ).all()
        stale = []
        for run in runs:
            last_unit = session.scalar(
                select(func.max(RunUnit.done_at)).where(RunUnit.run_id == run.id)
            )
            moments = [m for m in (run.created_at, run.started_at, last_unit) if m is not None]
            if max(moments) < cutoff:
                stale.append(run.id)
        return stale


def restart_request(engine: Engine, run_id: int) -> RunRequest:
    """Return a request for a fresh full run with the same shape as ``run_id``."""
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        return RunRequest(
            trigger=f"retry:{run_id}",
            full=True,
            period_kinds=tuple(run.period_kinds),
            date_from=date.fromisoformat(run.date_from) if run.date_from else None,
            date_to=date.fromisoformat(run.date_to) if run.date_to else None,
        )
