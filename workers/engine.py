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
from time import perf_counter
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine, case, delete, func, insert, inspect, or_, select, true, update
from sqlalchemy.orm import Session

from gridwatch.config import Settings
from gridwatch.periods import PeriodKind, parse_period
from gridwatch.storage.db import epoch_seconds, read_frame, session_scope
from gridwatch.storage.models import (
    AggregationRun,
    Area,
    Camera,
    DirtyGrid,
    ImportBatch,
    Incident,
    MetricBlock,
    RunPart,
    RunUnit,
)
from gridwatch.taxonomy import load_taxonomy
from gridwatch.workers import blocks
from gridwatch.workers.aggregate.incidents import (
    ADDITIVE,
    CATEGORY_PREFIX,
    PERIOD_KINDS,
    ancestors_table,
    count_by_period,
)

#: Period label of rows that describe the present state (coverage, forecasts, teams).
CURRENT = "current"

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
    """Group the grids by township (fan-out units); flat grid sets go in chunks.

    An incremental run gets the whole units that hold a changed grid: a unit's counts are
    stored as one part, so the parts of every other unit can be taken over unchanged.
    """
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
    planned = list(units.values())
    if wanted is not None:
        planned = [u for u in planned if wanted.intersection(u.grid_ids)]
    return planned


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
    session: Session, grid_ids: Sequence[int] | None, run: AggregationRun, tz: ZoneInfo
) -> pd.DataFrame:
    """Read the incidents of ``grid_ids`` (all located incidents if ``None``), cheaply.

    Times come as whole epoch seconds and the patrol/solved/notified facts as one bit mask,
    both computed in SQL, so a million rows cost a few plain integers each.
    """
    solved = or_(Incident.status.in_(("solved", "closed")), Incident.solved_at.is_not(None))
    flags = (
        case((Incident.source == "patrol", 1), else_=0)
        + case((solved, 2), else_=0)
        + case((Incident.victim_notified_at.is_not(None), 4), else_=0)
    )
    columns = [
        Incident.grid_id,
        epoch_seconds(Incident.occurred_at),
        Incident.category,
        flags,
        Incident.lon,
        Incident.lat,
    ]
    names = ["grid_id", "occurred_s", "category", "flags", "lon", "lat"]
    frames = [pd.DataFrame({name: pd.Series([], dtype=object) for name in names})]
    # All incidents: no WHERE on grid_id, so SQLite scans the table in order (an index range
    # over "grid_id IS NOT NULL" would fetch row by row); rows without a grid drop below.
    chunks = (
        [true()]
        if grid_ids is None
        else [
            Incident.grid_id.in_(grid_ids[start : start + 900])
            for start in range(0, len(grid_ids), 900)
        ]
    )
    for where in chunks:
        stmt = select(*columns).where(where)
        if run.date_from:
            stmt = stmt.where(Incident.occurred_at >= _local_midnight(run.date_from, tz))
        if run.date_to:
            stmt = stmt.where(
                Incident.occurred_at < _local_midnight(run.date_to, tz, next_day=True)
            )
        frames.append(read_frame(session, stmt, names))
    frame = pd.concat(frames[1:], ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame[frame["grid_id"].notna()].reset_index(drop=True)
    bits = frame["flags"].to_numpy(dtype=np.int64)
    frame["is_patrol"] = (bits & 1) > 0
    frame["is_solved"] = (bits & 2) > 0
    frame["victim_notified"] = (bits & 4) > 0
    frame["lon"] = frame["lon"].astype(float)
    frame["lat"] = frame["lat"].astype(float)
    return frame.drop(columns=["flags"])


def _local_midnight(day: str, tz: ZoneInfo, next_day: bool = False) -> datetime:
    """Return the instant local ``day`` (or the day after) begins in ``tz``."""
    parsed = date.fromisoformat(day)
    if next_day:
        parsed += timedelta(days=1)
    return datetime.combine(parsed, time.min, tzinfo=tz)


def compute_unit(
    engine: Engine, settings: Settings, run_id: int, grid_ids: list[int], label: str | None = None
) -> int:
    """Compute and store the grid counts of one unit as parts of the run; safe to repeat.

    In an incremental run only the unit's changed grids are counted; the other grids' rows
    come from the unit's part in the run it builds on.

    Returns
    -------
    int
        Incident rows read.
    """
    unit = Unit(label or f"grids:{min(grid_ids) if grid_ids else 0}", list(grid_ids))
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in ("done", "failed"):
            return 0  # a late duplicate delivery of an already finished run
        base = _base_parts(session, run, unit)
        grids = unit.grid_ids if base is None else sorted(set(run.area_ids) & set(grid_ids))
        incidents = _load_incidents(session, grids, run, settings.timezone)
        _store_unit(session, settings, run, unit, grids, incidents, label is not None, base)
        return len(incidents)


def compute_units(engine: Engine, settings: Settings, run_id: int, units: list[Unit]) -> int:
    """Compute every unit of a run in this process (the embedded mode's path).

    A full run reads the incidents in one scan: one sequential read of the table is several
    times cheaper than one index lookup per incident, and it gives exactly what
    :func:`compute_unit` gives unit by unit. An incremental run goes unit by unit, reading
    only its changed grids.
    """
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in ("done", "failed"):
            return 0
        if run.scope == "incremental":
            everything = None
        else:
            everything = _load_incidents(session, None, run, settings.timezone)
            unit_of = {grid: i for i, unit in enumerate(units) for grid in unit.grid_ids}
            position = everything["grid_id"].map(unit_of).to_numpy(dtype=float, na_value=-1.0)
            order = np.argsort(position, kind="stable")
            cuts = np.searchsorted(position[order], np.arange(len(units) + 1) - 0.5)
    if everything is None:
        return sum(compute_unit(engine, settings, run_id, u.grid_ids, u.label) for u in units)
    total = 0
    for i, unit in enumerate(units):
        with session_scope(engine) as session:
            run = session.get(AggregationRun, run_id)
            assert run is not None
            rows = order[cuts[i] : cuts[i + 1]]
            incidents = everything.iloc[rows].reset_index(drop=True)
            _store_unit(session, settings, run, unit, unit.grid_ids, incidents, True, None)
            total += len(incidents)
    return total


def _base_parts(
    session: Session, run: AggregationRun, unit: Unit
) -> dict[str, pd.DataFrame] | None:
    """Return the unit's parts in the run an incremental run builds on (``None`` if none)."""
    if run.scope != "incremental" or run.based_on_run_id is None:
        return None
    parts = {
        name: blocks.read_unit_parts(session, run.based_on_run_id, name, [unit.label]).get(
            unit.label
        )
        for name in ("counts", "coverage")
    }
    if any(frame is None for frame in parts.values()):
        return None  # the unit is new: count all of it
    return cast(dict[str, pd.DataFrame], parts)


#: The counts each unit of the newest run stored, kept in this process so that finalising
#: in the same process (the embedded mode) need not decode them again.
_COUNTS_CACHE: dict[tuple[str, int, str], dict[str, pd.DataFrame]] = {}


def _run_key(session: Session, run: AggregationRun) -> tuple[str, int, str]:
    return (str(session.get_bind().engine.url), run.id, run.created_at.isoformat())


def _remember_counts(
    session: Session, run: AggregationRun, unit: str, counts: pd.DataFrame
) -> None:
    if run.mode != "eager":
        return  # a worker's townships are finalised elsewhere: do not hold them in memory
    key = _run_key(session, run)
    if key not in _COUNTS_CACHE:
        _COUNTS_CACHE.clear()
        _COUNTS_CACHE[key] = {}
    _COUNTS_CACHE[key][unit] = counts


def _run_counts(session: Session, run: AggregationRun) -> pd.DataFrame:
    """Return every unit's counts of a run: from this process' memory, else from its parts."""
    units = sorted(blocks.part_units(session, run.id) - {blocks.COUNTY_UNIT})
    cached = _COUNTS_CACHE.get(_run_key(session, run), {})
    missing = [u for u in units if u not in cached]
    frames = {**{u: cached[u] for u in units if u in cached}}
    frames.update(blocks.read_unit_parts(session, run.id, "counts", missing))
    _COUNTS_CACHE.clear()  # the run is being finalised: free the memory
    return blocks.concat_parts([frames[u] for u in units if u in frames])


def _store_unit(
    session: Session,
    settings: Settings,
    run: AggregationRun,
    unit: Unit,
    grids: list[int],
    incidents: pd.DataFrame,
    planned: bool,
    base: dict[str, pd.DataFrame] | None,
) -> None:
    """Count ``grids``' incidents, store the unit's parts and record progress.

    With ``base`` (an incremental run), the unit's other grids keep their rows from it.
    """
    taxonomy = load_taxonomy(settings.categories_file)
    outside, coverage = _unit_coverage(session, run.id, grids, incidents)
    incidents["outside_view"] = outside
    counts = count_by_period(
        incidents, settings.timezone, tuple(run.period_kinds), taxonomy.categories
    )
    # One part for all kinds: encoding cost is per column, not per row.
    merged = pd.concat(
        [frame.assign(period_kind=kind) for kind, frame in counts.items()], ignore_index=True
    )
    merged["period"] = pd.Categorical(merged["period"])
    parts: dict[str, pd.DataFrame] = {}
    if base is not None:
        recounted = base["counts"]["area_id"].isin(grids)
        parts["changed"] = _diff_periods(base["counts"][recounted], merged)
        kept = base["counts"][~recounted]
        merged = blocks.concat_parts([kept, merged])
        for column in merged.columns:
            if column.startswith(CATEGORY_PREFIX) or column in ADDITIVE:
                merged[column] = merged[column].fillna(0).astype(np.int64)
        kept_coverage = base["coverage"][~base["coverage"]["area_id"].isin(grids)]
        coverage = pd.concat([kept_coverage, coverage], ignore_index=True)
    parts.update({"counts": merged, "coverage": coverage})
    blocks.write_parts(session, run.id, unit.label, parts)
    _remember_counts(session, run, unit.label, merged)
    if planned:
        session.execute(
            update(RunUnit)
            .where(RunUnit.run_id == run.id, RunUnit.label == unit.label)
            .values(done_at=datetime.now(UTC))
        )
    # Counted from the unit table, so a redelivered task is not counted twice.
    done = session.scalar(
        select(func.count())
        .select_from(RunUnit)
        .where(RunUnit.run_id == run.id, RunUnit.done_at.is_not(None))
    )
    session.execute(
        update(AggregationRun)
        .where(AggregationRun.id == run.id)
        .values(townships_done=done, rows_read=AggregationRun.rows_read + len(incidents))
    )


#: Per-grid camera figures kept in the "current" block and summed up the tree.
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


@dataclass
class _RunCoverage:
    """Camera coverage of every grid and the indexed views, built once per run and process."""

    table: pd.DataFrame
    views: Any


#: Degrees around an incremental run's grids searched for cameras whose view may reach in
#: (views reach a few hundred metres; 0.025° is over 2 km).
CAMERA_MARGIN_DEG = 0.025
#: Keyed by database, run id and the run's creation time (run ids repeat across databases).
_COVERAGE_CACHE: dict[tuple[str, int, str], _RunCoverage] = {}


def _run_coverage(
    session: Session, run_id: int, grid_ids: Sequence[int] | None = None
) -> _RunCoverage:
    """Return camera coverage for a run, computing it on first use in a process.

    A full run measures every grid and builds every view once (a view near a township border
    would otherwise be built for both townships) and keeps the result for its other
    townships. An incremental run, which touches a few townships, measures just
    ``grid_ids`` with the cameras near them and keeps nothing.
    """
    from gridwatch.workers import countywide
    from gridwatch.workers.aggregate.coverage import (
        ViewIndex,
        camera_counts,
        camera_views,
        grid_coverage,
    )

    run = session.get(AggregationRun, run_id)
    if run is None:
        raise RunError(f"no run {run_id}")
    key = _run_key(session, run)
    cached = _COVERAGE_CACHE.get(key)
    if cached is not None:
        return cached
    local = run.scope == "incremental" and grid_ids is not None
    if local:
        assert grid_ids is not None
        grid_ids = sorted(grid_ids)
    else:
        parents = select(Area.parent_id).where(Area.parent_id.is_not(None))
        grid_ids = sorted(session.scalars(select(Area.id).where(Area.id.not_in(parents))))
    grids = countywide.GridGeometry.load(session, grid_ids)
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
    stmt = select(*columns)
    if local and not grids.frame.empty:
        minx, miny, maxx, maxy = grids.frame.total_bounds
        m = CAMERA_MARGIN_DEG
        stmt = stmt.where(
            Camera.lon.between(minx - m, maxx + m), Camera.lat.between(miny - m, maxy + m)
        )
    cameras = read_frame(session, stmt, [c.key for c in columns])
    views = camera_views(cameras) if len(cameras) else np.array([], dtype=object)
    table = pd.DataFrame(index=pd.Index(np.asarray(grid_ids, dtype=np.int64), name="area_id"))
    for column in COVERAGE_ADDITIVE:
        table[column] = 0.0 if column.endswith("_m2") else 0
    table["blind_spot_wkb"] = pd.Series([None] * len(table), index=table.index, dtype=object)
    if not grids.frame.empty:
        coverage = grid_coverage(grids.frame, views)
        table.loc[coverage.index, "area_m2"] = coverage["area_m2"].round(1)
        table.loc[coverage.index, "covered_m2"] = coverage["covered_m2"].round(1)
        table.loc[coverage.index, "blind_spot_wkb"] = pd.Series(
            list(shapely.to_wkb(coverage["blind_spot"].to_numpy(), output_dimension=2)),
            index=coverage.index,
            dtype=object,
        )
    counts = camera_counts(cameras, grid_ids=grid_ids) if len(cameras) else pd.DataFrame()
    for column in counts.columns:
        if column in table.columns:
            table[column] = counts[column].reindex(table.index).fillna(0).astype(np.int64)
    table["grids_without_working_camera"] = (table["cameras_working"] == 0).astype(np.int64)
    if not local:
        _COVERAGE_CACHE.clear()  # one run at a time per process: keep only the newest
    built = _RunCoverage(table, ViewIndex(views))
    if not local:
        _COVERAGE_CACHE[key] = built
    return built


def _unit_coverage(
    session: Session, run_id: int, grid_ids: list[int], incidents: pd.DataFrame
) -> tuple[np.ndarray, pd.DataFrame]:
    """Camera coverage of a unit's grids and which of its incidents no camera saw.

    Returns
    -------
    outside : numpy.ndarray
        Per incident: seen by no working camera.
    coverage : pandas.DataFrame
        Per grid: ``area_id``, the :data:`COVERAGE_ADDITIVE` figures and ``blind_spot_wkb``
        (the part of the grid no working camera sees).
    """
    run_coverage = _run_coverage(session, run_id, grid_ids)
    outside = (
        run_coverage.views.outside(incidents["lon"].to_numpy(), incidents["lat"].to_numpy())
        if len(incidents)
        else np.zeros(0, dtype=bool)
    )
    frame = run_coverage.table.reindex(np.asarray(grid_ids, dtype=np.int64))
    return outside, frame.rename_axis("area_id").reset_index()


# -- finalising and publishing -------------------------------------------------------------


def _areas_frame(session: Session) -> pd.DataFrame:
    return pd.DataFrame(
        session.execute(
            select(Area.id, Area.code, Area.parent_id, Area.level, Area.population)
        ).all(),
        columns=["id", "code", "parent_id", "level", "population"],
    )


#: Patrol columns that add up across grids (distinct teams do not, so they stay per grid).
PATROL_ADDITIVE = ("patrol_minutes", "patrol_night_minutes", "patrol_visits")
HOTSPOT_COLUMNS = ("gi_star_z", "gi_star_p", "gi_star_q", "hotspot")
#: Columns that describe one grid and do not add up the tree.
PER_GRID_ONLY = ("patrol_teams", *HOTSPOT_COLUMNS)


def _merge(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    keys = ["area_id", "period"]
    if right.empty:
        return left
    if left.empty:
        return right
    return left.merge(right, on=keys, how="outer")


def _period_codes(frames: list[pd.DataFrame]) -> tuple[np.ndarray, list[pd.DataFrame]]:
    """Replace the ``period`` labels of several frames by codes into one sorted label array."""
    categorical = [
        f["period"] if isinstance(f["period"].dtype, pd.CategoricalDtype) else None
        for f in frames
        if not f.empty
    ]
    distinct: set[str] = set()
    for frame, cat in zip([f for f in frames if not f.empty], categorical, strict=True):
        values = cat.cat.categories if cat is not None else frame["period"].unique()
        distinct.update(str(v) for v in values)
    labels = np.array(sorted(distinct), dtype=object)
    coded = []
    for frame in frames:
        if frame.empty:
            coded.append(frame)
            continue
        period = frame["period"]
        if isinstance(period.dtype, pd.CategoricalDtype):
            # map the frame's own categories onto the shared labels, then its codes
            own = np.searchsorted(labels, period.cat.categories.astype(str).to_numpy())
            codes = own[period.cat.codes.to_numpy()]
        else:
            codes = pd.Categorical(period.astype(str), categories=labels).codes
        coded.append(frame.assign(period=np.asarray(codes, dtype=np.int64)))
    return labels, coded


def roll_up_levels(grid_rows: pd.DataFrame, ancestors: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Sum grid rows into each level above the grids.

    Returns
    -------
    dict
        Level → frame with ``area_id``, ``period`` and the summed numeric columns.
    """
    numeric = [
        c
        for c in grid_rows.columns
        if c not in ("area_id", "period", *PER_GRID_ONLY)
        and pd.api.types.is_numeric_dtype(grid_rows[c])
    ]
    upward = ancestors[ancestors["ancestor_id"] != ancestors["area_id"]]
    out = {}
    area_ids = grid_rows["area_id"].to_numpy()
    for level, links in upward.groupby("ancestor_level"):
        mapping = pd.Series(links["ancestor_id"].to_numpy(), index=links["area_id"].to_numpy())
        ancestor = mapping.reindex(area_ids).to_numpy()
        keep = ~pd.isna(ancestor)
        if not keep.any():
            continue
        frame = grid_rows.loc[keep, ["period", *numeric]].assign(
            area_id=ancestor[keep].astype(np.int64)
        )
        summed = frame.groupby(["area_id", "period"], sort=True, observed=True)[numeric].sum()
        out[str(level)] = summed.reset_index()
    return out


def _diff_periods(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Return the (``period_kind``, ``period``) whose grid rows differ between two counts."""
    if old.empty and new.empty:
        return pd.DataFrame({"period_kind": [], "period": []}, dtype=object)
    columns = sorted(set(old.columns) | set(new.columns))
    both = pd.concat(
        [old.reindex(columns=columns), new.reindex(columns=columns)], ignore_index=True
    )
    for key in ("period", "period_kind"):
        both[key] = both[key].astype(str)
    both = both.fillna(0)
    # A row present on one side only (or with other values) is not duplicated.
    differ = both.loc[~both.duplicated(keep=False), ["period_kind", "period"]]
    return differ.drop_duplicates().reset_index(drop=True).astype(object)


def _changed_periods(
    session: Session, run_id: int, units: list[str], kinds: Sequence[str]
) -> dict[str, set[str]] | None:
    """Return, per kind, the periods an incremental run's recounted grids changed.

    ``None`` (rewrite everything) when a unit has no record of what it changed.
    """
    found = blocks.read_unit_parts(session, run_id, "changed", units)
    if set(found) != set(units):
        return None
    changed: dict[str, set[str]] = {kind: set() for kind in kinds}
    for frame in found.values():
        for kind, period in frame[["period_kind", "period"]].itertuples(index=False):
            changed.setdefault(str(kind), set()).add(str(period))
    return changed


def _patrol_changed_since(session: Session, moment: datetime) -> bool:
    """Return whether patrol data (pings, tracks or teams) was imported after ``moment``."""
    return bool(
        session.scalar(
            select(func.count())
            .select_from(ImportBatch)
            .where(
                ImportBatch.kind.in_(("patrols", "teams")),
                ImportBatch.finished_at >= moment,
            )
        )
    )


def finalize_run(engine: Engine, settings: Settings, run_id: int) -> dict[str, Any]:
    """Add the county-wide steps, roll up and publish a run; return its summary.

    Everything is written and the run published in one transaction. An incremental run
    rewrites only the blocks of periods whose counts changed and copies the rest from the
    run it builds on.
    """
    from gridwatch.workers import countywide

    tz = settings.timezone
    today = countywide.local_today(tz)
    now = datetime.now(UTC)
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
        clock = _PhaseClock()
        kinds = tuple(run.period_kinds)
        base = run.based_on_run_id if run.scope == "incremental" else None
        own_units = sorted(blocks.part_units(session, run_id) - {blocks.COUNTY_UNIT})
        base_run = session.get(AggregationRun, base) if base is not None else None
        if base is not None:
            inherited = blocks.part_units(session, base) - set(own_units) - {blocks.COUNTY_UNIT}
            blocks.copy_parts(session, base, run_id, sorted(inherited))
        areas = _areas_frame(session)
        ancestors = ancestors_table(areas[["id", "parent_id", "level"]])
        parents = set(areas["parent_id"].dropna().astype(int))
        grid_ids = [int(i) for i in areas["id"] if int(i) not in parents]
        grids = countywide.GridGeometry.load(session, grid_ids)
        clock.lap("finalize: load areas and grids")

        # Patrol dosage: recomputed unless an incremental run follows no new patrol data.
        fresh_patrol = base_run is None or _patrol_changed_since(
            session, base_run.created_at - timedelta(seconds=1)
        )
        if fresh_patrol:
            patrol, teams, last_visit = countywide.patrol_frames(session, tz, kinds, now)
            blocks.write_parts(
                session,
                run_id,
                blocks.COUNTY_UNIT,
                {**{f"patrol:{k}": f for k, f in patrol.items()}, "last_visit": last_visit},
            )
        else:
            assert base is not None and base_run is not None
            blocks.copy_parts(session, base, run_id, [blocks.COUNTY_UNIT])
            patrol = {kind: blocks.read_parts(session, run_id, f"patrol:{kind}") for kind in kinds}
            last_visit = blocks.read_parts(session, run_id, "last_visit")
            teams = dict(base_run.extras.get("teams", {}))
        changed = (
            None
            if base is None or fresh_patrol
            else _changed_periods(session, run_id, own_units, kinds)
        )
        clock.lap("finalize: patrol dosage")

        written: set[tuple[str, str]] = set()
        classes: dict[str, pd.Series] = {}
        counts_by_kind: dict[str, pd.DataFrame] = {}
        rows_written = 0
        all_counts = _run_counts(session, run)
        by_kind: dict[str, pd.DataFrame] = {}
        if not all_counts.empty:
            kind_of_row = all_counts["period_kind"].astype(str).to_numpy()
            for kind in kinds:
                rows = np.flatnonzero(kind_of_row == kind)
                by_kind[kind] = all_counts.iloc[rows].drop(columns="period_kind")
        clock.lap("finalize: read township parts")
        for kind in kinds:
            counts = by_kind.get(kind, pd.DataFrame(columns=["area_id", "period"]))
            counts_by_kind[kind] = counts
            hot, classes[kind] = countywide.hotspot_frame(
                counts, grids, kind, today, None if changed is None else changed[kind]
            )
            # Periods as integer codes: merging, grouping and sorting strings is slow.
            pieces = [counts, patrol.get(kind, pd.DataFrame()), hot]
            labels, coded = _period_codes(pieces)
            if changed is not None:  # only the changed periods are rewritten
                wanted = np.flatnonzero(np.isin(labels, sorted(changed[kind])))
                coded = [f[f["period"].isin(wanted)] if not f.empty else f for f in coded]
            grid_rows = _merge(coded[0], coded[1])
            if grid_rows.empty:
                continue
            grid_rows = _merge(grid_rows, coded[2])
            numeric = [
                c for c in grid_rows.columns if c not in ("area_id", "period", *PER_GRID_ONLY)
            ]
            grid_rows[numeric] = grid_rows[numeric].fillna(0)
            levels = {"grid": grid_rows, **roll_up_levels(grid_rows, ancestors)}
            for level, frame in levels.items():
                block_rows = list(blocks.block_rows(run_id, level, kind, frame, labels))
                rows_written += blocks.write_blocks(session, block_rows)
                written.update((level, r["period"]) for r in block_rows)
            clock.lap(f"finalize: {kind}: Gi*, roll-up, blocks")

        daily = _daily_counts(session, run, counts_by_kind.get("day"), grids, tz, today)
        forecasts, scorecard = countywide.forecast_rows(
            daily, grids, today, countywide.neighbours_of(grids)
        )
        clock.lap("finalize: forecasts and back-test")
        coverage = blocks.read_parts(session, run_id, "coverage")
        current = _current_frames(areas, ancestors, forecasts, coverage, last_visit, classes)
        for level, frame in current.items():
            rows_written += blocks.write_blocks(
                session, blocks.block_rows(run_id, level, CURRENT, frame.assign(period=CURRENT))
            )
            written.add((level, CURRENT))
        clock.lap("finalize: current state blocks")
        kde = countywide.density_part(session, grids, tz, today)
        if kde is not None:
            blocks.write_parts(session, run_id, blocks.COUNTY_UNIT, {"density": kde})
        clock.lap("finalize: density surface")
        if base is not None:
            blocks.copy_blocks(session, base, run_id, skip=written)
            clock.lap("finalize: copy unchanged blocks")
        run.rows_written = rows_written
        run.scorecard = scorecard
        taxonomy = load_taxonomy(settings.categories_file)
        run.extras = {
            "teams": teams,
            "groups": {g: taxonomy.in_group(g) for g in taxonomy.groups},
            "blocks_rewritten": len(written),
            "timings": {**run.extras.get("timings", {}), **clock.laps},
        }
        run.status = "done"
        run.finished_at = datetime.now(UTC)
        run.published_at = run.finished_at
        summary = run_summary(run)
    prune_old_runs(engine)
    return summary


class _PhaseClock:
    """Seconds spent in each phase of a run (kept in the run's extras, shown by the bench)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = perf_counter()

    def lap(self, name: str) -> None:
        now = perf_counter()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 3)
        self._last = now


def _daily_counts(
    session: Session,
    run: AggregationRun,
    days: pd.DataFrame | None,
    grids: Any,
    tz: ZoneInfo,
    today: date,
) -> pd.DataFrame:
    """Count reported incidents per grid and local day before today, for the forecasts.

    Taken from the run's own day counts when it has them for all dates, else read afresh.
    """
    from gridwatch.workers import countywide

    ids = grids.frame.index.tolist()
    if days is None or run.date_from or run.date_to:
        return countywide.daily_matrix(session, ids, tz, today)
    if days.empty:
        return pd.DataFrame(index=ids)
    # Dense grid × day matrix from codes (a pivot_table over ~1M rows is slow).
    labels = pd.unique(days["period"].astype(str).to_numpy())
    label_day = pd.to_datetime(pd.Series(labels), format="%Y-%m-%d").dt.date.to_numpy()
    day_of = dict(zip(labels, label_day, strict=True))
    day = days["period"].astype(str).map(day_of).to_numpy()
    reported = days["incidents_reported"].to_numpy(dtype=float)
    keep = (day < today) & (reported > 0)
    if not keep.any():
        return pd.DataFrame(index=ids)
    first = min(day[keep])
    span = list(pd.date_range(first, today - timedelta(days=1)).date)
    column = np.array([(d - first).days for d in day[keep]], dtype=np.int64)
    row = pd.Index(ids).get_indexer(days["area_id"].to_numpy(dtype=np.int64)[keep])
    inside = row >= 0
    matrix = np.zeros((len(ids), len(span)))
    np.add.at(matrix, (row[inside], column[inside]), reported[keep][inside])
    return pd.DataFrame(matrix, index=ids, columns=span)


def _current_frames(
    areas: pd.DataFrame,
    ancestors: pd.DataFrame,
    forecasts: pd.DataFrame,
    coverage: pd.DataFrame,
    last_visit: pd.DataFrame,
    classes: dict[str, pd.Series],
) -> dict[str, pd.DataFrame]:
    """Build the ``current`` block of every level: camera figures, forecasts, last visits.

    Forecasts and camera counts are summed up the tree; the last visit to an area is the
    latest visit to any of its grids; emerging hot-spot classes belong to grids only.
    """
    per_grid = forecasts.copy()
    per_grid.index = per_grid.index.astype(np.int64)
    if not coverage.empty:
        cov = coverage.set_index("area_id")[list(COVERAGE_ADDITIVE)]
        per_grid = per_grid.join(cov, how="outer")
    if not last_visit.empty:
        per_grid = per_grid.join(last_visit.set_index("area_id")["last_visit_s"], how="outer")
    per_grid = per_grid.rename_axis("area_id").reset_index()
    joined = per_grid.merge(ancestors, on="area_id")
    summed_columns = [c for c in per_grid.columns if c not in ("area_id", "last_visit_s")]
    out = {}
    for level, frame in joined.groupby("ancestor_level"):
        grouped = frame.groupby("ancestor_id")
        result = grouped[summed_columns].sum(min_count=1)
        if "last_visit_s" in frame:
            result["last_visit_s"] = grouped["last_visit_s"].max()
        result = result.rename_axis("area_id").reset_index()
        if str(level) == "grid":
            for kind, series in classes.items():
                result[f"hotspot_class_{kind}"] = (
                    result["area_id"].map(series).astype(object).where(lambda s: s.notna(), None)
                )
        out[str(level)] = result
    return out


def prune_old_runs(engine: Engine, keep: int = KEEP_PUBLISHED_RUNS) -> None:
    """Delete blocks and parts of published runs older than the newest ``keep`` and of failed runs.

    The newest published run keeps its parts (an incremental run builds on them); older
    published runs keep only their blocks.
    """
    with session_scope(engine) as session:
        published = session.scalars(
            select(AggregationRun.id)
            .where(AggregationRun.status == "done")
            .order_by(AggregationRun.id.desc())
        ).all()
        stale = list(published[keep:])
        failed = list(
            session.scalars(select(AggregationRun.id).where(AggregationRun.status == "failed"))
        )
        doomed = [*stale, *failed]
        for start in range(0, len(doomed), 500):
            chunk = doomed[start : start + 500]
            session.execute(delete(MetricBlock).where(MetricBlock.run_id.in_(chunk)))
        old_parts = [*published[1:], *failed]
        for start in range(0, len(old_parts), 500):
            chunk = old_parts[start : start + 500]
            session.execute(delete(RunPart).where(RunPart.run_id.in_(chunk)))


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
        "timings": dict((run.extras or {}).get("timings", {})),
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
        started = perf_counter()
        compute_units(engine, settings, run_id, units)
        with session_scope(engine) as session:
            run = session.get(AggregationRun, run_id)
            assert run is not None
            run.extras = {
                **run.extras,
                "timings": {"townships (counts, coverage)": round(perf_counter() - started, 3)},
            }
        return finalize_run(engine, settings, run_id)
    except Exception as exc:
        mark_failed(engine, run_id, f"{type(exc).__name__}: {exc}")
        raise


# -- reading published metrics -------------------------------------------------------------


def _column(
    frame: pd.DataFrame | None, name: str, index: pd.Index, fill: float = 0.0
) -> np.ndarray:
    """Return ``frame[name]`` aligned to ``index`` as floats (``fill`` where absent)."""
    if frame is None or name not in frame.columns:
        return np.full(len(index), fill, dtype=float)
    return frame[name].reindex(index).to_numpy(dtype=float, na_value=fill)


def _optional(frame: pd.DataFrame | None, name: str, index: pd.Index) -> list[Any]:
    """Return ``frame[name]`` aligned to ``index`` as Python values, ``None`` where absent."""
    if frame is None or name not in frame.columns:
        return [None] * len(index)
    values = frame[name].reindex(index).astype(object)
    return [None if v is None or (isinstance(v, float) and v != v) else v for v in values]


def _nullable(values: np.ndarray, digits: int = 4) -> list[float | None]:
    return [None if not np.isfinite(v) else round(float(v), digits) for v in values]


def derive_metrics(
    block: pd.DataFrame | None,
    previous: pd.DataFrame | None,
    last_year: pd.DataFrame | None,
    current: pd.DataFrame | None,
    areas: pd.DataFrame,
    kind: str,
    groups: dict[str, list[str]],
    now: datetime,
) -> list[dict[str, Any]]:
    """Turn a period's block into the published metric objects, one per area of ``areas``.

    Ratios, category groups and changes against the previous period and the same period
    last year are derived here, from the additive columns, when a period is read.

    Parameters
    ----------
    block, previous, last_year : pandas.DataFrame or None
        The blocks (indexed by area id) of the period, the one before it and the same period a
        year earlier; ``None`` when the run has no such block.
    current : pandas.DataFrame or None
        The run's ``current`` block of the level (cameras, forecasts, last visits, classes).
    areas : pandas.DataFrame
        ``id`` and ``population`` of the areas to return, in order.
    kind : str
        The period kind (selects the forecast and emerging class).
    groups : dict
        Category group → category codes.
    now : datetime.datetime
        The instant "hours since the last visit" is measured to.
    """
    index = pd.Index(areas["id"].astype(np.int64))
    total = _column(block, "incidents_total", index)
    population = areas["population"].to_numpy(dtype=float, na_value=np.nan)
    prev_total = _column(
        previous, "incidents_total", index, fill=0.0 if previous is not None else np.nan
    )
    year_total = _column(
        last_year, "incidents_total", index, fill=0.0 if last_year is not None else np.nan
    )
    additive = {c: _column(block, c, index) for c in ADDITIVE}
    with np.errstate(divide="ignore", invalid="ignore"):
        per_1000 = np.where(population > 0, 1000.0 * total / population, np.nan)
        night = 100.0 * additive["incidents_night"] / total
        solved = additive["incidents_solved"]
        derived = {
            "incidents_per_1000": per_1000,
            "night_share_pct": night,
            "solved_rate_pct": 100.0 * solved / total,
            "not_notified_pct": 100.0 * additive["solved_not_notified"] / solved,
            "blind_spot_incident_pct": 100.0 * additive["incidents_blind_spot"] / total,
            "change_prev_pct": np.where(
                prev_total > 0, 100.0 * (total - prev_total) / prev_total, np.nan
            ),
            "change_last_year_pct": np.where(
                year_total > 0, 100.0 * (total - year_total) / year_total, np.nan
            ),
        }
    cat_columns = (
        [c for c in block.columns if c.startswith(CATEGORY_PREFIX)] if block is not None else []
    )
    codes = [c[len(CATEGORY_PREFIX) :] for c in cat_columns]
    cats = (
        block[cat_columns].reindex(index).fillna(0).to_numpy(dtype=np.int64)
        if cat_columns and block is not None
        else np.zeros((len(index), 0), dtype=np.int64)
    )
    group_totals = {
        g: cats[:, [i for i, c in enumerate(codes) if c in set(members)]].sum(axis=1)
        for g, members in groups.items()
    }
    patrol = {c: _column(block, c, index) for c in PATROL_ADDITIVE}
    per_grid = {c: _optional(block, c, index) for c in PER_GRID_ONLY}
    hotspot_class = _optional(current, f"hotspot_class_{kind}", index)
    forecast = _optional(current, f"forecast_next_{kind}", index)
    area_m2 = _column(current, "area_m2", index, fill=np.nan)
    covered = _column(current, "covered_m2", index, fill=np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage_pct = np.where(area_m2 > 0, 100.0 * covered / area_m2, np.nan)
    cameras = {
        c: _optional(current, c, index)
        for c in ("cameras_working", "cameras_total", "grids_without_working_camera")
    }
    last_visit = _column(current, "last_visit_s", index, fill=np.nan)
    hours = (now.timestamp() - last_visit) / 3600.0
    columns = {name: _nullable(values) for name, values in derived.items()}
    out = []
    for i in range(len(index)):
        nonzero = np.flatnonzero(cats[i])
        metrics: dict[str, Any] = {c: int(additive[c][i]) for c in ADDITIVE}
        metrics["incidents_by_category"] = {codes[j]: int(cats[i, j]) for j in nonzero}
        metrics["incidents_by_group"] = {g: int(v[i]) for g, v in group_totals.items()}
        for name, values in columns.items():
            metrics[name] = values[i]
        metrics["incidents_prev"] = None if np.isnan(prev_total[i]) else int(prev_total[i])
        for name, dosage in patrol.items():
            metrics[name] = round(float(dosage[i]), 2)
        teams = per_grid["patrol_teams"][i]
        metrics["patrol_teams"] = None if teams is None else int(teams)
        for name in HOTSPOT_COLUMNS:
            value = per_grid[name][i]
            metrics[name] = float(value) if isinstance(value, np.floating) else value
        metrics["hotspot_class"] = hotspot_class[i]
        metrics["forecast_next"] = None if forecast[i] is None else round(float(forecast[i]), 3)
        metrics["camera_coverage_pct"] = (
            None if not np.isfinite(coverage_pct[i]) else round(float(coverage_pct[i]), 3)
        )
        for name, counts in cameras.items():
            metrics[name] = None if counts[i] is None else int(counts[i])
        metrics["hours_since_last_visit"] = (
            None if not np.isfinite(hours[i]) else round(float(hours[i]), 2)
        )
        out.append(metrics)
    return out


def read_metrics(
    engine: Engine, level: str, period: str, area_code: str | None = None
) -> list[dict[str, Any]]:
    """Return the published metrics of every area of ``level`` for ``period``.

    Areas without data in the period get zero counts, so the list is complete. With
    ``area_code``, only that area (or, if it is above ``level``, its descendants at ``level``).
    """
    target = parse_period(period)
    label = target.label
    now = datetime.now(UTC)
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
        block = previous = last_year = current = None
        groups: dict[str, list[str]] = {}
        targets: dict[str, str] = {}
        if run_id is not None:
            block = blocks.read_block(session, run_id, level, label)
            previous = blocks.read_block(session, run_id, level, target.previous().label)
            last_year = blocks.read_block(
                session, run_id, level, target.same_period_last_year().label
            )
            current = blocks.read_block(session, run_id, level, CURRENT)
            run = session.get(AggregationRun, run_id)
            assert run is not None
            groups = dict(run.extras.get("groups", {}))
            targets = dict(run.scorecard.get("targets", {}))
        parent_codes = _parent_codes(session)
    metrics = derive_metrics(block, previous, last_year, current, areas, target.kind, groups, now)
    out = []
    for area_id, code, values in zip(areas["id"], areas["code"], metrics, strict=True):
        out.append(
            {
                "area_code": code,
                "parent_code": parent_codes.get(int(area_id)),
                "level": level,
                "period": label,
                "run_id": run_id,
                "incidents_total": values.pop("incidents_total"),
                **values,
                "forecast_next_period": targets.get(target.kind),
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


def team_activity(engine: Engine) -> dict[str, Any]:
    """Return the patrol teams' activity summary of the newest published run."""
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        run = session.get(AggregationRun, run_id) if run_id is not None else None
        return dict(run.extras.get("teams", {})) if run is not None else {}


def read_layer(engine: Engine, name: str) -> pd.DataFrame:
    """Return a map layer of the newest published run.

    ``blind_spots`` gives ``area_id`` and ``geometry`` (shapely, WGS84) of the part of each
    grid that no working camera sees; ``density`` the kernel-density raster (see
    :func:`gridwatch.workers.countywide.density_part`). Empty before the first run.
    """
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        if run_id is None:
            return pd.DataFrame()
        if name == "blind_spots":
            coverage = blocks.read_parts(session, run_id, "coverage")
            if coverage.empty:
                return pd.DataFrame(columns=["area_id", "geometry"])
            frame = coverage[coverage["blind_spot_wkb"].notna()]
            return pd.DataFrame(
                {
                    "area_id": frame["area_id"].to_numpy(dtype=np.int64),
                    "geometry": shapely.from_wkb(frame["blind_spot_wkb"].to_numpy()),
                }
            )
        if name == "density":
            return blocks.read_parts(session, run_id, "density")
        raise RunError(f"no layer {name!r}")


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
