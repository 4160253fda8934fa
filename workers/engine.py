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

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import perf_counter
from typing import Any, cast
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import (
    Engine,
    Select,
    case,
    delete,
    func,
    insert,
    inspect,
    or_,
    select,
    true,
    update,
)
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

log = logging.getLogger(__name__)

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


#: The camera fields coverage reads (a township's cameras and the county's views alike).
CAMERA_COLUMNS = (
    Camera.lon,
    Camera.lat,
    Camera.status,
    Camera.type,
    Camera.direction_deg,
    Camera.fov_deg,
    Camera.range_m,
    Camera.grid_id,
)


def latest_published_run_id(session: Session) -> int | None:
    """Return the id of the newest published run, or ``None``."""
    return session.scalar(published_run_query())


def published_run_query() -> Select[int]:
    """Return the query of the newest published run's id (a scalar subquery elsewhere)."""
    return (
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
        areas = _areas_frame(session)[["id", "parent_id", "level"]]
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
        if run.scope == "incremental" and run.based_on_run_id is not None:
            return _recount_units(session, settings, run, [unit], label is not None)
        incidents = _load_incidents(session, unit.grid_ids, run, settings.timezone)
        _store_unit(session, settings, run, unit, incidents)
        _mark_done(session, run, [unit.label] if label is not None else [], len(incidents))
        return len(incidents)


def compute_units(engine: Engine, settings: Settings, run_id: int, units: list[Unit]) -> int:
    """Compute every unit of a run in this process (the embedded mode's path).

    A full run reads the incidents in one scan: one sequential read of the table is several
    times cheaper than one index lookup per incident, and it gives exactly what
    :func:`compute_unit` gives unit by unit. An incremental run recounts the changed grids
    of all its units at once, in one transaction.
    """
    with session_scope(engine) as session:
        run = session.get(AggregationRun, run_id)
        if run is None:
            raise RunError(f"no run {run_id}")
        if run.status in ("done", "failed"):
            return 0
        if run.scope == "incremental" and run.based_on_run_id is not None:
            return _recount_units(session, settings, run, units, True)
        everything = _load_incidents(session, None, run, settings.timezone)
        unit_of = {grid: i for i, unit in enumerate(units) for grid in unit.grid_ids}
        position = everything["grid_id"].map(unit_of).to_numpy(dtype=float, na_value=-1.0)
        order = np.argsort(position, kind="stable")
        cuts = np.searchsorted(position[order], np.arange(len(units) + 1) - 0.5)
    total = 0
    for i, unit in enumerate(units):
        with session_scope(engine) as session:
            run = session.get(AggregationRun, run_id)
            assert run is not None
            rows = order[cuts[i] : cuts[i + 1]]
            incidents = everything.iloc[rows].reset_index(drop=True)
            _store_unit(session, settings, run, unit, incidents)
            _mark_done(session, run, [unit.label], len(incidents))
            total += len(incidents)
    return total


#: Parts a township task reads from the run an incremental run builds on.
BASE_PART_NAMES = ("counts", "coverage", "counts_delta", "delta_grids")
#: An incremental run stores a township's recounted grids as a delta on top of the
#: township's last merged counts (writing a small delta instead of re-encoding the whole
#: township); once the delta covers this share of the township's grids they are merged.
DELTA_MERGE_SHARE = 0.25


def _int_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Give the count columns of concatenated count frames integer zeros for missing values."""
    for column, dtype in frame.dtypes.items():
        if dtype == np.int64:
            continue  # no gaps (checking is far cheaper than converting every column)
        if str(column).startswith(CATEGORY_PREFIX) or column in ADDITIVE:
            frame[column] = frame[column].fillna(0).astype(np.int64)
    return frame


def unit_counts(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Return a unit's current counts: its merged counts overlaid with its delta, if any."""
    root = parts["counts"]
    if "delta_grids" not in parts or parts["delta_grids"].empty:
        return root
    replaced = parts["delta_grids"]["area_id"].to_numpy(dtype=np.int64)
    frames = [root[~root["area_id"].isin(replaced)].copy()]
    delta = parts.get("counts_delta")
    if delta is not None and not delta.empty:
        frames.append(delta.copy())
    return _int_counts(blocks.concat_parts(frames))


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
    stored = {
        name: blocks.read_unit_parts(session, run.id, name, missing)
        for name in ("counts", "counts_delta", "delta_grids")
    }
    for unit, root in stored["counts"].items():
        frames[unit] = unit_counts(
            {"counts": root, **{n: f[unit] for n, f in stored.items() if unit in f}}
        )
    _COUNTS_CACHE.clear()  # the run is being finalised: free the memory
    return blocks.concat_parts([frames[u] for u in units if u in frames])


def _count_frame(incidents: pd.DataFrame, settings: Settings, run: AggregationRun) -> pd.DataFrame:
    """Count incidents per grid and period of every kind of the run, in one frame."""
    taxonomy = load_taxonomy(settings.categories_file)
    counts = count_by_period(
        incidents, settings.timezone, tuple(run.period_kinds), taxonomy.categories
    )
    # One part for all kinds: encoding cost is per column, not per row.
    merged = pd.concat(
        [frame.assign(period_kind=kind) for kind, frame in counts.items()], ignore_index=True
    )
    merged["period"] = pd.Categorical(merged["period"])
    return merged


def _store_unit(
    session: Session,
    settings: Settings,
    run: AggregationRun,
    unit: Unit,
    incidents: pd.DataFrame,
) -> None:
    """Count all of a unit's incidents and store its parts (a full count)."""
    outside, coverage = _unit_coverage(session, run.id, unit.grid_ids, incidents)
    assert coverage is not None
    incidents["outside_view"] = outside
    merged = _count_frame(incidents, settings, run)
    blocks.write_parts(session, run.id, unit.label, {"counts": merged, "coverage": coverage})
    _remember_counts(session, run, unit.label, merged)


def _mark_done(session: Session, run: AggregationRun, labels: list[str], rows_read: int) -> None:
    """Record that planned units are computed, and the incidents they read.

    Only units not yet marked done are counted, by an increment: a redelivered task adds
    nothing, and two townships finishing at the same moment in two workers both count (a
    count of the done units, taken in each task's own transaction, could see just its own).
    """
    newly = 0
    if labels:
        result = session.execute(
            update(RunUnit)
            .where(RunUnit.run_id == run.id, RunUnit.label.in_(labels), RunUnit.done_at.is_(None))
            .values(done_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )
        newly = int(getattr(result, "rowcount", 0) or 0)
    session.execute(
        update(AggregationRun)
        .where(AggregationRun.id == run.id)
        .values(
            townships_done=AggregationRun.townships_done + newly,
            rows_read=AggregationRun.rows_read + rows_read,
        )
        .execution_options(synchronize_session=False)
    )


def _recount_units(
    session: Session, settings: Settings, run: AggregationRun, units: list[Unit], planned: bool
) -> int:
    """Recount the changed grids of an incremental run's units and store their parts.

    All the units' changed grids are read, located against the cameras and counted at once.
    Per unit, ``recount`` (the recounted grids' rows of every period) and ``recounted``
    (those grids, even ones left with no incidents) are what finalising patches the
    published blocks with, and ``changed`` lists the periods whose rows differ from the base
    run's. The unit's merged counts are copied from the base run inside the database and the
    recount joins its delta, until the delta covers :data:`DELTA_MERGE_SHARE` of the unit's
    grids and is merged. A unit the base run does not have is counted in full.

    Returns
    -------
    int
        Incident rows read.
    """
    from gridwatch.workers import countywide

    assert run.based_on_run_id is not None
    base_id = run.based_on_run_id
    dirty = {int(g) for g in run.area_ids}
    recount_of = {u.label: sorted(dirty.intersection(u.grid_ids)) for u in units}
    wanted = sorted({g for grids in recount_of.values() for g in grids})
    labels = [u.label for u in units]
    base_run = session.get(AggregationRun, base_id)
    # Coverage is measured again only if cameras or grids changed since the base run (such
    # an import asks for a full run, but it may have been deferred while a run was busy).
    cameras_moved = base_run is None or _imported_since(
        session, ("cameras", "grids"), base_run.created_at - timedelta(seconds=1)
    )
    names = [n for n in BASE_PART_NAMES if cameras_moved or n != "coverage"]
    base = blocks.read_named_parts(session, base_id, labels, names, {"counts": wanted})
    present = blocks.part_names(session, base_id, labels)
    read = 0
    patched = []
    for unit in units:
        if {"counts", "coverage"} <= present.get(unit.label, set()):
            patched.append(unit)
            continue
        incidents = _load_incidents(session, unit.grid_ids, run, settings.timezone)
        _store_unit(session, settings, run, unit, incidents)  # new unit: count all of it
        read += len(incidents)
    grids = sorted({g for unit in patched for g in recount_of[unit.label]})
    incidents = _load_incidents(session, grids, run, settings.timezone)
    read += len(incidents)
    outside, coverage = _unit_coverage(session, run.id, grids, incidents, cameras_moved)
    incidents["outside_view"] = outside
    recount = _count_frame(incidents, settings, run)
    since = countywide.density_since(settings.timezone, countywide.local_today(settings.timezone))
    recount_points = _recount_points(incidents, since)
    olds = []
    for unit in patched:
        parts = base[unit.label]
        in_delta = parts["delta_grids"]["area_id"] if "delta_grids" in parts else []
        root = parts["counts"]
        olds.append(root[~root["area_id"].isin(in_delta)].copy())
        delta = parts.get("counts_delta")
        if delta is not None and not delta.empty:
            olds.append(delta[delta["area_id"].isin(recount_of[unit.label])].copy())
    changed = _diff_periods(blocks.concat_parts(olds), recount)
    recount_area = recount["area_id"].to_numpy(dtype=np.int64)
    for unit in patched:
        mine = np.asarray(recount_of[unit.label], dtype=np.int64)
        rows = recount.iloc[np.flatnonzero(np.isin(recount_area, mine))].reset_index(drop=True)
        parts = _delta_parts(session, run, unit, mine, rows, base[unit.label])
        if coverage is not None:  # cameras or grids changed: measured again
            kept = base[unit.label]["coverage"]
            fresh = coverage[coverage["area_id"].isin(mine)]
            parts["coverage"] = pd.concat([kept[~kept["area_id"].isin(mine)], fresh])
            parts["coverage"] = parts["coverage"].reset_index(drop=True)
        else:
            blocks.copy_named_part(session, base_id, run.id, unit.label, "coverage")
        points = recount_points[np.isin(recount_points["area_id"].to_numpy(), mine)]
        parts.update(
            {
                "changed": changed,
                "recount": rows,
                "recounted": pd.DataFrame({"area_id": mine}),
                "recount_points": points.reset_index(drop=True),
            }
        )
        blocks.write_parts(session, run.id, unit.label, parts)
    _mark_done(session, run, [u.label for u in units] if planned else [], read)
    return read


def _delta_parts(
    session: Session,
    run: AggregationRun,
    unit: Unit,
    grids: np.ndarray,
    recount: pd.DataFrame,
    base: dict[str, pd.DataFrame],
) -> dict[str, pd.DataFrame]:
    """Return a unit's new ``counts_delta`` and ``delta_grids`` (or merged ``counts``)."""
    assert run.based_on_run_id is not None
    delta = base.get("counts_delta")
    delta_grids = (
        {int(g) for g in base["delta_grids"]["area_id"]} if "delta_grids" in base else set()
    )
    if delta is None or delta.empty:
        delta = recount.iloc[0:0]  # (its grids may still be set: recounted to no incidents)
    new_delta = _int_counts(
        blocks.concat_parts([delta[~delta["area_id"].isin(grids)].copy(), recount.copy()])
    )
    new_grids = np.asarray(sorted(delta_grids | {int(g) for g in grids}), dtype=np.int64)
    if len(new_grids) <= DELTA_MERGE_SHARE * max(len(unit.grid_ids), 1):
        blocks.copy_named_part(session, run.based_on_run_id, run.id, unit.label, "counts")
        return {"counts_delta": new_delta, "delta_grids": pd.DataFrame({"area_id": new_grids})}
    # The delta has grown: merge it into the unit's counts (read in full this once).
    root = blocks.read_named_parts(session, run.based_on_run_id, [unit.label], ["counts"])
    full = root[unit.label]["counts"]
    kept = full[~full["area_id"].isin(new_grids)].copy()
    return {
        "counts": _int_counts(blocks.concat_parts([kept, new_delta])),
        "counts_delta": new_delta.iloc[0:0],
        "delta_grids": pd.DataFrame({"area_id": np.zeros(0, dtype=np.int64)}),
    }


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
    townships. An incremental run measures just its changed grids (all of them on first use,
    for every township task of the run) with the cameras near them.
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
    if cached is not None and (
        grid_ids is None or not set(grid_ids) - set(cached.table.index.tolist())
    ):
        return cached
    local = run.scope == "incremental" and grid_ids is not None
    if local:
        # every changed grid of the run at once: its townships' tasks share the result (and a
        # township new since the base run, counted in full, adds its grids)
        known = cached.table.index.tolist() if cached is not None else []
        grid_ids = sorted(
            {int(g) for g in run.area_ids} | {int(g) for g in grid_ids or ()} | set(known)
        )
    else:
        parents = select(Area.parent_id).where(Area.parent_id.is_not(None))
        grid_ids = sorted(session.scalars(select(Area.id).where(Area.id.not_in(parents))))
    grids = countywide.GridGeometry.load(session, grid_ids)
    columns = CAMERA_COLUMNS
    stmt = select(*columns)
    if local and not grids.frame.empty:
        minx, miny, maxx, maxy = grids.frame.total_bounds
        m = CAMERA_MARGIN_DEG
        stmt = stmt.where(
            Camera.lon.between(minx - m, maxx + m), Camera.lat.between(miny - m, maxy + m)
        )
    cameras = read_frame(session, stmt, [c.key for c in columns])
    if local and len(cameras) and not grids.frame.empty:
        # only cameras near one of the grids (the grids may lie far apart)
        bounds = shapely.bounds(grids.frame.geometry.to_numpy())
        m = CAMERA_MARGIN_DEG
        boxes = shapely.box(bounds[:, 0] - m, bounds[:, 1] - m, bounds[:, 2] + m, bounds[:, 3] + m)
        points = shapely.points(
            cameras["lon"].to_numpy(dtype=float), cameras["lat"].to_numpy(dtype=float)
        )
        near = shapely.STRtree(boxes).query(points, predicate="intersects")[0]
        cameras = cameras.iloc[np.unique(near)].reset_index(drop=True)
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
    _COVERAGE_CACHE.clear()  # one run at a time per process: keep only the newest
    built = _RunCoverage(table, ViewIndex(views))
    if not local:  # every camera's view: later incremental runs can ask it
        url = str(session.get_bind().engine.url)
        _COUNTY_VIEWS[url] = (_camera_signature(session), built.views)
    _COVERAGE_CACHE[key] = built
    return built


def _camera_signature(session: Session) -> tuple[Any, ...]:
    """Return a one-row fingerprint of the cameras (count, newest id, newest cameras import).

    Cameras are written only by their importer, so the views built for one fingerprint hold
    until the next cameras import finishes.
    """
    camera_import = ImportBatch.kind == "cameras"
    row = session.execute(
        select(
            select(func.count()).select_from(Camera).scalar_subquery(),
            select(func.max(Camera.id)).scalar_subquery(),
            select(func.max(ImportBatch.id)).where(camera_import).scalar_subquery(),
            select(func.max(ImportBatch.finished_at)).where(camera_import).scalar_subquery(),
        )
    ).one()
    return tuple(row)


#: The county's camera views of this process, per database, with their camera fingerprint.
_COUNTY_VIEWS: dict[str, tuple[tuple[Any, ...], Any]] = {}


def _county_views(session: Session) -> Any:
    """Return every working camera's view, indexed, built once per process and camera set.

    An incremental run after incident or patrol imports asks only which of its incidents no
    camera saw; the views do not change between such runs.
    """
    from gridwatch.workers.aggregate.coverage import ViewIndex, camera_views

    url = str(session.get_bind().engine.url)
    signature = _camera_signature(session)
    entry = _COUNTY_VIEWS.get(url)
    if entry is not None and entry[0] == signature:
        return entry[1]
    columns = CAMERA_COLUMNS
    cameras = read_frame(session, select(*columns), [c.key for c in columns])
    views = camera_views(cameras) if len(cameras) else np.array([], dtype=object)
    index = ViewIndex(views)
    _COUNTY_VIEWS[url] = (signature, index)
    return index


def _unit_coverage(
    session: Session,
    run_id: int,
    grid_ids: list[int],
    incidents: pd.DataFrame,
    measure: bool = True,
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """Camera coverage of a unit's grids and which of its incidents no camera saw.

    Returns
    -------
    outside : numpy.ndarray
        Per incident: seen by no working camera.
    coverage : pandas.DataFrame
        Per grid: ``area_id``, the :data:`COVERAGE_ADDITIVE` figures and ``blind_spot_wkb``
        (the part of the grid no working camera sees); ``None`` when not ``measure``d (only
        which incidents no camera saw is wanted: the county's views answer that).
    """
    if not measure:
        views = _county_views(session)
        lon, lat = incidents["lon"].to_numpy(), incidents["lat"].to_numpy()
        return (views.outside(lon, lat) if len(incidents) else np.zeros(0, dtype=bool)), None
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
    names = ["id", "code", "parent_id", "level", "population"]
    frame = read_frame(
        session, select(Area.id, Area.code, Area.parent_id, Area.level, Area.population), names
    )
    for name in ("parent_id", "population"):  # NULL (NaN) makes them floats, as before
        frame[name] = frame[name].astype(float)
    frame["id"] = frame["id"].astype(np.int64)
    return frame


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
        Level → frame with ``area_id``, ``period`` and the summed numeric columns, sorted by
        area and period.
    """
    import scipy.sparse as sp

    numeric = [
        c
        for c in grid_rows.columns
        if c not in ("area_id", "period", *PER_GRID_ONLY)
        and pd.api.types.is_numeric_dtype(grid_rows[c])
    ]
    upward = ancestors[ancestors["ancestor_id"] != ancestors["area_id"]]
    out = {}
    area_ids = grid_rows["area_id"].to_numpy()
    period_codes, period_labels = pd.factorize(grid_rows["period"], sort=True)
    values = grid_rows[numeric].to_numpy(dtype=float)
    integer = [pd.api.types.is_integer_dtype(grid_rows[c]) for c in numeric]
    for level, links in upward.groupby("ancestor_level"):
        mapping = pd.Series(links["ancestor_id"].to_numpy(), index=links["area_id"].to_numpy())
        ancestor = mapping.reindex(area_ids).to_numpy()
        keep = np.flatnonzero(~pd.isna(ancestor))
        if not len(keep):
            continue
        # One sparse product sums every column per (ancestor, period): a groupby per level
        # and period kind costs far more.
        key = ancestor[keep].astype(np.int64) * max(len(period_labels), 1) + period_codes[keep]
        groups, inverse = np.unique(key, return_inverse=True)
        membership = sp.csr_matrix(
            (np.ones(len(keep)), (inverse, np.arange(len(keep)))), shape=(len(groups), len(keep))
        )
        summed = membership @ values[keep]
        columns: dict[str, Any] = {
            "area_id": groups // max(len(period_labels), 1),
            "period": np.asarray(period_labels)[groups % max(len(period_labels), 1)],
        }
        for i, column in enumerate(numeric):
            columns[column] = (
                np.rint(summed[:, i]).astype(np.int64) if integer[i] else summed[:, i]
            )
        out[str(level)] = pd.DataFrame(columns)
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


def _imported_since(session: Session, kinds: Sequence[str], moment: datetime) -> bool:
    """Return whether a file of one of ``kinds`` was imported after ``moment``."""
    return bool(
        session.scalar(
            select(func.count())
            .select_from(ImportBatch)
            .where(ImportBatch.kind.in_(list(kinds)), ImportBatch.finished_at >= moment)
        )
    )


def _patrol_changed_since(session: Session, moment: datetime) -> bool:
    """Return whether patrol data (pings, tracks or teams) was imported after ``moment``."""
    return _imported_since(session, ("patrols", "teams"), moment)


@dataclass
class _Recount:
    """The recount parts of an incremental run's townships, read once for finalising."""

    grids: np.ndarray
    rows: pd.DataFrame
    points: pd.DataFrame

    @classmethod
    def read(cls, session: Session, run_id: int, units: list[str]) -> _Recount:
        names = ("recounted", "recount", "recount_points")
        found = blocks.read_named_parts(session, run_id, units, names)
        joined = {
            name: blocks.concat_parts([f[name] for f in found.values() if name in f])
            for name in names
        }
        recounted = joined["recounted"]
        grids = (
            recounted["area_id"].to_numpy(dtype=np.int64)
            if "area_id" in recounted
            else np.zeros(0, dtype=np.int64)
        )
        return cls(grids, joined["recount"], joined["recount_points"])


#: Grid block columns that are not incident counts.
_NOT_COUNTS = ("area_id", "period", *PATROL_ADDITIVE, *PER_GRID_ONLY)


def _counts_by_kind(all_counts: pd.DataFrame, kinds: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Split the units' counts (all kinds in one frame) by period kind."""
    if all_counts.empty:
        return {}
    kind_of_row = all_counts["period_kind"].astype(str).to_numpy()
    return {
        kind: all_counts.iloc[np.flatnonzero(kind_of_row == kind)].drop(columns="period_kind")
        for kind in kinds
    }


def _series(counts: pd.DataFrame) -> pd.DataFrame:
    """Return the reported incidents per grid and period of one kind, stored for later runs.

    One row per grid and period with any incident (the rows Gi*, the emerging classes and
    the forecasts read); an incremental run patches these instead of reading every count.
    """
    if counts.empty or "incidents_reported" not in counts:
        return pd.DataFrame(
            {
                "area_id": np.zeros(0, dtype=np.int64),
                "period": pd.Categorical([]),
                "incidents_reported": np.zeros(0, dtype=np.int64),
            }
        )
    period = counts["period"]
    period = (
        period.cat.remove_unused_categories()
        if isinstance(period.dtype, pd.CategoricalDtype)
        else pd.Categorical(period.astype(str))
    )
    return pd.DataFrame(
        {
            "area_id": counts["area_id"].to_numpy(dtype=np.int64),
            "period": period,
            "incidents_reported": counts["incidents_reported"].to_numpy(dtype=np.int64),
        }
    )


def _local_date(moment: datetime, tz: ZoneInfo) -> date:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(tz).date()


def _patched_counts(
    session: Session,
    run: AggregationRun,
    base_run: AggregationRun,
    own: _Recount,
    changed: dict[str, set[str]],
    today: date,
    tz: ZoneInfo,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, pd.Series]] | None:
    """Return the changed periods' grid counts of an incremental run, reading few counts.

    The base run's grid blocks of the changed periods keep their rows of the grids not
    recounted, the townships' recounts replace the others; the stored per-period series are
    patched the same way. Emerging classes are taken over when no changed period has ended
    (only ended periods make up their history).

    Returns
    -------
    tuple or None
        Counts per kind (changed periods only), series per kind, and the classes taken over;
        ``None`` when the run cannot be patched (a date range, a base run from another day,
        or one without stored series): then every count is read.
    """
    from gridwatch.workers.countywide import HOTSPOT_KINDS

    kinds = [str(k) for k in run.period_kinds]
    if run.date_from or run.date_to or _local_date(base_run.created_at, tz) != today:
        return None
    memory = _RUN_MEMORY.get(_run_key(session, base_run))
    if memory is not None and set(kinds) <= set(memory.series):
        stored = {kind: {blocks.COUNTY_UNIT: memory.series[kind]} for kind in kinds}
    else:
        stored = {
            kind: blocks.read_unit_parts(
                session, base_run.id, f"series:{kind}", [blocks.COUNTY_UNIT]
            )
            for kind in kinds
        }
    if not all(stored.values()):
        return None
    grids = own.grids
    recount = own.rows
    kind_of_row = recount["period_kind"].astype(str).to_numpy() if len(recount) else None
    current = blocks.read_block(session, base_run.id, "grid", CURRENT)
    counts_by_kind: dict[str, pd.DataFrame] = {}
    series: dict[str, pd.DataFrame] = {}
    known: dict[str, pd.Series] = {}
    for kind in kinds:
        if kind_of_row is None:
            rec = pd.DataFrame(columns=["area_id", "period", "incidents_reported"])
        else:
            rec = recount.iloc[np.flatnonzero(kind_of_row == kind)].drop(columns="period_kind")
        old = stored[kind][blocks.COUNTY_UNIT]
        series[kind] = blocks.concat_parts([old[~old["area_id"].isin(grids)].copy(), _series(rec)])
        wanted = sorted(changed.get(kind, ()))
        pieces = []
        for label in wanted:
            block = blocks.read_block(session, base_run.id, "grid", label)
            if block is None or "incidents_total" not in block:
                continue
            block = block.reset_index()
            keep = (block["incidents_total"].to_numpy() > 0) & ~block["area_id"].isin(grids)
            columns = ["area_id", *(c for c in block.columns if c not in _NOT_COUNTS)]
            pieces.append(block.loc[keep, columns].assign(period=label))
        if len(rec):
            mine = rec[rec["period"].astype(str).isin(wanted)]
            pieces.append(mine.assign(period=mine["period"].astype(str)))
        counts_by_kind[kind] = (
            _int_counts(pd.concat(pieces, ignore_index=True))
            if pieces
            else pd.DataFrame(columns=["area_id", "period"])
        )
        column = f"hotspot_class_{kind}"
        ended = any(parse_period(label).end <= today for label in wanted)
        if kind in HOTSPOT_KINDS and not ended and current is not None and column in current:
            known[kind] = current[column].astype(object)
    return counts_by_kind, series, known


def _adjacency_part(grids: Any) -> pd.DataFrame:
    """Return what later runs need of the grids: ids, areas, extent and contiguity links."""
    adjacency = grids.weights.sparse.tocoo()
    ids = np.asarray(grids.weights.id_order, dtype=np.int64)
    size = max(len(ids), adjacency.nnz)
    pad = np.full(size, -1, dtype=np.int64)
    km2 = grids.area_km2.reindex(ids).to_numpy(dtype=float)
    west, south, east, north = (float(v) for v in grids.extent)
    return pd.DataFrame(
        {
            "area_id": np.concatenate([ids, pad[len(ids) :]]),
            "area_km2": np.concatenate([km2, np.full(size - len(ids), np.nan)]),
            "row": np.concatenate([adjacency.row, pad[adjacency.nnz :]]).astype(np.int64),
            "col": np.concatenate([adjacency.col, pad[adjacency.nnz :]]).astype(np.int64),
            "west": west,
            "south": south,
            "east": east,
            "north": north,
        }
    )


def _base_grids(
    session: Session, base_run: AggregationRun | None, grid_ids: list[int]
) -> Any | None:
    """Return the grids as the base run stored them, when they are still the same grids.

    The polygons themselves are not needed to patch a run (contiguity, areas and the
    extent are), and reading them is a large part of a small run. Grids change only by an
    import, which starts a full run. ``None`` when the base run has no such record.
    """
    import scipy.sparse as sp

    from gridwatch.workers.aggregate.hotspots import GridAdjacency
    from gridwatch.workers.countywide import GridGeometry

    if base_run is None:
        return None
    stored = blocks.read_unit_parts(session, base_run.id, "adjacency", [blocks.COUNTY_UNIT])
    part = stored.get(blocks.COUNTY_UNIT)
    if part is None or "area_km2" not in part:
        return None
    ids = part["area_id"].to_numpy(dtype=np.int64)
    inside = ids >= 0
    ids = ids[inside]
    if not np.array_equal(np.sort(ids), np.asarray(sorted(grid_ids), dtype=np.int64)):
        return None  # grids without a polygon are not in the record: load them to be sure
    row, col = part["row"].to_numpy(), part["col"].to_numpy()
    keep = row >= 0
    matrix = sp.csr_matrix(
        (np.ones(int(keep.sum())), (row[keep], col[keep])), shape=(len(ids), len(ids))
    )
    extent = tuple(float(part[c].iloc[0]) for c in ("west", "south", "east", "north"))
    km2 = part["area_km2"].to_numpy(dtype=float)[inside]
    weights = GridAdjacency([int(i) for i in ids], matrix)
    return GridGeometry.without_polygons(ids, km2, extent, weights)


def _base_coverage(session: Session, base_run: AggregationRun) -> pd.DataFrame:
    """Return the per-grid camera figures of the base run's current grid block."""
    block = blocks.read_block(session, base_run.id, "grid", CURRENT)
    if block is None or not set(COVERAGE_ADDITIVE) <= set(block.columns):
        return blocks.read_parts(session, base_run.id, "coverage")
    return block[list(COVERAGE_ADDITIVE)].rename_axis("area_id").reset_index()


def _typed_points(points: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "area_id": points["area_id"].to_numpy(dtype=np.int64),
            "lon": points["lon"].to_numpy(dtype=float),
            "lat": points["lat"].to_numpy(dtype=float),
        }
    )


def _recount_points(incidents: pd.DataFrame, since: datetime) -> pd.DataFrame:
    """Return the recounted grids' incidents inside the density window (as density points)."""
    inside = (incidents["occurred_s"].to_numpy(dtype=np.int64) >= int(since.timestamp())) & ~(
        incidents["is_patrol"].to_numpy(dtype=bool)
    )
    frame = incidents.loc[inside, ["grid_id", "lon", "lat"]].rename(columns={"grid_id": "area_id"})
    return _typed_points(frame).assign(since=int(since.timestamp()))


def _patched_points(
    session: Session, run: AggregationRun, own: _Recount, today: date, tz: ZoneInfo
) -> pd.DataFrame | None:
    """Return the density surface's points: the base run's, recounted grids' replaced.

    ``None`` (read them all) when the base run kept none or a township counted another window.
    """
    from gridwatch.workers.countywide import density_since

    assert run.based_on_run_id is not None
    since = int(density_since(tz, today).timestamp())
    stored = blocks.read_unit_parts(
        session, run.based_on_run_id, "density_points", [blocks.COUNTY_UNIT]
    )
    recount = own.points
    if blocks.COUNTY_UNIT not in stored or "since" not in recount:
        return None
    if len(recount) and not (recount["since"] == since).all():
        return None
    base = stored[blocks.COUNTY_UNIT]
    kept = base[~base["area_id"].isin(own.grids)]
    return pd.concat([kept, recount.drop(columns="since")], ignore_index=True)


@dataclass
class _RunMemory:
    """What the newest run finalised in this process leaves for the next incremental run."""

    series: dict[str, pd.DataFrame]
    daily: pd.DataFrame


#: Keyed by :func:`_run_key`; one entry (the newest run). An incremental run finalised in the
#: same process as its base (the embedded mode, or the same worker) patches these instead of
#: decoding the stored series and rebuilding the grid × day matrix from a million rows.
_RUN_MEMORY: dict[tuple[str, int, str], _RunMemory] = {}


def _remember_run(
    session: Session, run: AggregationRun, series: dict[str, pd.DataFrame], daily: pd.DataFrame
) -> None:
    _RUN_MEMORY.clear()
    _RUN_MEMORY[_run_key(session, run)] = _RunMemory(series, daily)


def _patched_daily(
    session: Session,
    run: AggregationRun,
    base_run: AggregationRun,
    own: _Recount,
    grids: Any,
    today: date,
) -> pd.DataFrame | None:
    """Return the grid × day matrix of the base run with the recounted grids' rows redone.

    ``None`` (build it from the series) when this process does not hold the base run's
    matrix, or a recounted incident falls before its first day.
    """
    memory = _RUN_MEMORY.get(_run_key(session, base_run))
    if memory is None or run.date_from or run.date_to:
        return None
    daily = memory.daily
    ids = grids.frame.index
    if not daily.index.equals(ids) or not len(daily.columns):
        return None
    if daily.columns[-1] != today - timedelta(days=1):
        return None
    recount = own.rows
    matrix = daily.to_numpy(copy=True)
    rows = ids.get_indexer(own.grids)
    rows = rows[rows >= 0]
    matrix[rows, :] = 0.0
    if len(recount):
        days = recount[recount["period_kind"].astype(str) == "day"]
        label = days["period"].astype(str).to_numpy()
        day = pd.to_datetime(pd.Series(label), format="%Y-%m-%d").dt.date.to_numpy()
        reported = days["incidents_reported"].to_numpy(dtype=float)
        keep = (day < today) & (reported > 0)
        first = daily.columns[0]
        if keep.any() and min(day[keep]) < first:
            return None  # the matrix would need earlier days
        row = ids.get_indexer(days["area_id"].to_numpy(dtype=np.int64)[keep])
        column = np.array([(d - first).days for d in day[keep]], dtype=np.int64)
        inside = row >= 0
        np.add.at(matrix, (row[inside], column[inside]), reported[keep][inside])
    if not matrix[:, 0].any():
        return None  # the first day lost its incidents: the matrix would start later
    return pd.DataFrame(matrix, index=daily.index, columns=daily.columns)


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
            blocks.copy_parts(session, base, run_id, sorted(inherited), names=BASE_PART_NAMES)
        areas = _areas_frame(session)
        ancestors = ancestors_table(areas[["id", "parent_id", "level"]])
        parents = set(areas["parent_id"].dropna().astype(int))
        grid_ids = [int(i) for i in areas["id"] if int(i) not in parents]
        clock.lap("finalize: load areas")

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

        patched = None
        own: _Recount | None = None
        if changed is not None:
            assert base_run is not None
            own = _Recount.read(session, run_id, own_units)
            patched = _patched_counts(session, run, base_run, own, changed, today, tz)
        grids = None if patched is None else _base_grids(session, base_run, grid_ids)
        if grids is None:
            grids = countywide.GridGeometry.load(session, grid_ids)
        if patched is None:
            counts_by_kind = _counts_by_kind(_run_counts(session, run), kinds)
            series = {kind: _series(counts) for kind, counts in counts_by_kind.items()}
            known_classes: dict[str, pd.Series] = {}
        else:
            counts_by_kind, series, known_classes = patched
        clock.lap("finalize: read township parts")
        written: set[tuple[str, str]] = set()
        classes: dict[str, pd.Series] = {}
        rows_written = 0
        for kind in kinds:
            counts = counts_by_kind.get(kind, pd.DataFrame(columns=["area_id", "period"]))
            only = None if changed is None else changed[kind]
            hot, classes[kind] = countywide.hotspot_frame(
                series.get(kind, pd.DataFrame()), grids, kind, today, only, known_classes.get(kind)
            )
            kind_patrol = patrol.get(kind, pd.DataFrame())
            if patched is not None and not kind_patrol.empty:
                kind_patrol = kind_patrol[kind_patrol["period"].astype(str).isin(only or ())]
            # Periods as integer codes: merging, grouping and sorting strings is slow.
            labels, coded = _period_codes([counts, kind_patrol, hot])
            if changed is not None and patched is None:  # only the changed periods are rewritten
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
        blocks.write_parts(
            session,
            run_id,
            blocks.COUNTY_UNIT,
            {f"series:{kind}": frame for kind, frame in series.items()},
        )
        if len(grids.frame) >= 3:
            blocks.write_parts(
                session, run_id, blocks.COUNTY_UNIT, {"adjacency": _adjacency_part(grids)}
            )

        daily = None
        if patched is not None:
            assert base_run is not None and own is not None
            daily = _patched_daily(session, run, base_run, own, grids, today)
        if daily is None:
            daily = _daily_counts(session, run, series.get("day"), grids, tz, today)
        _remember_run(session, run, series, daily)
        forecasts, scorecard = countywide.forecast_rows(
            daily, grids, today, countywide.neighbours_of(grids)
        )
        clock.lap("finalize: forecasts and back-test")
        if patched is None:
            coverage = blocks.read_parts(session, run_id, "coverage")
        else:
            assert base_run is not None
            coverage = _base_coverage(session, base_run)  # incidents do not move cameras
        current = _current_frames(areas, ancestors, forecasts, coverage, last_visit, classes)
        for level, frame in current.items():
            rows_written += blocks.write_blocks(
                session, blocks.block_rows(run_id, level, CURRENT, frame.assign(period=CURRENT))
            )
            written.add((level, CURRENT))
        clock.lap("finalize: current state blocks")
        points = None
        if patched is not None:
            assert own is not None
            points = _patched_points(session, run, own, today, tz)
        if points is None:
            points = countywide.density_points(session, countywide.density_since(tz, today))
        kde = countywide.density_part(grids, points)
        if kde is not None:
            blocks.write_parts(
                session,
                run_id,
                blocks.COUNTY_UNIT,
                {"density": kde, "density_points": _typed_points(points)},
            )
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
            # how an incremental run found its counts: patched into the base run's blocks, or
            # every township's counts read (patrol data or the date changed, or a date range)
            "counts_from": "full" if base is None else "patched" if patched else "all parts",
            "timings": {**run.extras.get("timings", {}), **clock.laps},
        }
        run.status = "done"
        run.finished_at = datetime.now(UTC)
        run.published_at = run.finished_at
        summary = run_summary(run)
    prune_old_runs(engine)
    _after_publish(engine, settings, run_id)
    return summary


#: Called as ``hook(engine, settings, run_id)`` after a run is published. Higher layers
#: register here (the survey results warm themselves up): this layer never imports them.
PUBLISH_HOOKS: list[Callable[[Engine, Settings, int], None]] = []


def on_publish(hook: Callable[[Engine, Settings, int], None]) -> None:
    """Call ``hook(engine, settings, run_id)`` after each run this process publishes."""
    if hook not in PUBLISH_HOOKS:
        PUBLISH_HOOKS.append(hook)


def _after_publish(engine: Engine, settings: Settings, run_id: int) -> None:
    for hook in list(PUBLISH_HOOKS):
        try:
            hook(engine, settings, run_id)
        except Exception:  # the run is published whatever a follower does with it
            log.exception("run %s: publish hook %r failed", run_id, hook)


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

    Taken from the run's own day counts (``area_id``, ``period``, ``incidents_reported``)
    when it has them for all dates, else read afresh.
    """
    from gridwatch.workers import countywide

    ids = grids.frame.index.tolist()
    if days is None or run.date_from or run.date_to:
        return countywide.daily_matrix(session, ids, tz, today)
    if days.empty:
        return pd.DataFrame(index=ids)
    # Dense grid × day matrix (a pivot_table over ~1M rows is slow).
    reported, _, labels = countywide.period_matrix(days, ids)
    label_day = pd.to_datetime(pd.Series(labels, dtype=object), format="%Y-%m-%d").dt.date
    before = (label_day < today).to_numpy()
    with_data = reported[:, before].sum(axis=0) > 0
    if not with_data.any():
        return pd.DataFrame(index=ids)
    first = min(np.asarray(label_day)[before][with_data])
    span = list(pd.date_range(first, today - timedelta(days=1)).date)
    matrix = np.zeros((len(ids), len(span)))
    offsets = np.array([(d - first).days for d in label_day], dtype=np.int64)
    inside = before & (offsets >= 0)
    matrix[:, offsets[inside]] = reported[:, inside]
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


def preload() -> None:
    """Import what runs use but the engine defers (SciPy, hot spots, forecasts, coverage).

    The engine keeps these imports inside functions so that the CLI and the web app start
    fast; a worker process calls this once at start so that its first run (often a small
    incremental refresh) does not pay for them.
    """
    import scipy.sparse  # noqa: F401

    from gridwatch.workers import countywide  # noqa: F401
    from gridwatch.workers.aggregate import coverage, forecast, hotspots, patrol  # noqa: F401


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
    tables = _area_tables(engine)
    areas, parent_codes = tables.areas, tables.parent_codes
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
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


@dataclass
class _AreaTables:
    areas: pd.DataFrame
    parent_codes: dict[int, str]


#: Per database: the areas and their parents' codes, with the tree signature they were read at.
_AREA_TABLES: dict[str, tuple[tuple[Any, ...], _AreaTables]] = {}


def _area_tables(engine: Engine) -> _AreaTables:
    """Return the areas frame and parent codes, read again only when the tree changed.

    Every metrics read needs them; the signature (:func:`gridwatch.areas.tree_signature`)
    is one indexed row, where reading the areas is thousands.
    """
    from gridwatch.areas import tree_signature

    url = engine.url.render_as_string(hide_password=False)
    signature = tree_signature(engine)  # before the tables: a change in between reloads
    entry = _AREA_TABLES.get(url)
    if entry is not None and entry[0] == signature:
        return entry[1]
    with session_scope(engine) as session:
        tables = _AreaTables(_areas_frame(session), _parent_codes(session))
    _AREA_TABLES[url] = (signature, tables)
    return tables


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
