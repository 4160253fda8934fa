"""Prevention tasks: a plan recommendation (or a hand-made task) assigned, tracked, measured.

A task belongs to one township, may name a police station, and targets a list of grids. Its
status moves ``open → in_progress → done`` (or to ``cancelled``; a cancelled task can be
opened again, a done one is final); every creation and status change is written to the audit
log in the same transaction.

Effect of a done task (difference in differences)
-------------------------------------------------
Incidents in the target grids in the ``weeks`` weeks before the day the task was done are
compared with the ``weeks`` weeks after it, against *comparable grids*: grids of the same
township that the task did not target, that do not border the targets (they could receive
displaced crime) and that no other started or finished task targets, whose pre-period
count is *similar* to the targets' mean per grid (within half of it, or 2 incidents, whichever
is more), the closest first (``comparison_similar`` is false when none is and the closest are
taken). Incidents found by patrols are left out
(a patrol task would otherwise raise its own counts). The estimate is the ratio of ratios
``(T_after/T_before) / (C_after/C_before)`` (0.5 added to each count) with a 95 % interval
from the Poisson variance of the four log counts, and the same contrast in incidents per
target grid. Before ``weeks`` weeks have passed since the task was done the answer is "too
early", with the date it will be ready.

Displacement watch (洼地效应)
-----------------------------
The targets' neighbouring grids (contiguity of the grid polygons,
:func:`gridwatch.workers.aggregate.hotspots.grid_adjacency`) are checked over the same
windows: a neighbour is *rising* when its after-count exceeds its before-count scaled by the
trend of the whole comparison pool (every clean grid of the township: steadier than the few
matched ones) by at least :data:`MIN_RISE` incidents and by more than chance: given the
neighbour's before + after count, the after share is tested against the share the trend
implies (one-sided binomial test at :data:`RISE_P`; the before-count is a noisy baseline too,
so a grid going from 0 to 3 is not alarming on its own).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from gridwatch.accounts import Principal, record_event
from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    TASK_KINDS,
    TASK_STATUSES,
    Area,
    AuditEvent,
    Incident,
    PreventionTask,
    Station,
    User,
    utcnow,
)
from gridwatch.targeting.rules import TargetingError

#: Allowed status changes.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("in_progress", "cancelled"),
    "in_progress": ("done", "open", "cancelled"),
    "done": (),
    "cancelled": ("open",),
}
#: Plan lists a task can be made from, and the kind of task each becomes.
PLAN_LISTS: dict[str, str] = {
    "cameras": "camera",
    "repairs": "repair",
    "patrol_focus": "patrol",
    "publicity": "publicity",
    "follow_up": "follow_up",
}
DEFAULT_WEEKS = 8
#: Comparable grids per target grid (at least MIN_COMPARABLES in all).
COMPARABLES_PER_TARGET = 5
MIN_COMPARABLES = 5
#: A comparable grid's pre-period count is within this share of the targets' mean per grid
#: (or SIMILAR_MIN_GAP incidents, whichever is more).
SIMILAR_SHARE = 0.5
SIMILAR_MIN_GAP = 2.0
#: A neighbour is rising when it gains at least this many incidents over expectation ...
MIN_RISE = 3
#: ... and a rise this large has at most this chance under the comparison pool's trend.
RISE_P = 0.05
TITLE_MAX = 200
AUDIT_TARGET = "prevention_task:{}"


class TaskError(TargetingError):
    """A task request that cannot be carried out (message is one sentence for the user)."""


# -- creating --------------------------------------------------------------------------------


def _grid_level(settings: Settings) -> str:
    return settings.area_levels[-1]


def _township_level(settings: Settings) -> str:
    return settings.area_levels[1] if len(settings.area_levels) > 1 else settings.area_levels[0]


def _due(value: str | date | None) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value.isoformat()
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError as exc:
        raise TaskError(f"the due date must be a day such as 2026-12-31, not {value!r}") from exc


def create_task(
    engine: Engine,
    settings: Settings,
    *,
    township_code: str,
    kind: str,
    title: str,
    detail: str = "",
    grid_codes: Iterable[str] = (),
    station_code: str | None = None,
    assignee: str = "",
    due_date: str | date | None = None,
    source_plan: str = "",
    source_ref: dict[str, Any] | None = None,
    actor: Principal | None = None,
    ip: str = "",
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Create a task (status ``open``) and audit it; return it as :func:`task_dict` does.

    Parameters
    ----------
    township_code : str
        The township the task belongs to; every grid must lie inside it.
    kind : {"camera", "repair", "patrol", "publicity", "follow_up", "other"}
    grid_codes : iterable of str
        Target grids (codes of the lowest level).
    station_code : str, optional
        A police station, which must cover the township.
    assignee : str
        Free text (a team, a grid worker); a user name links the task to that user.
    actor : Principal, optional
        Who creates it (``None``: the command line).

    Raises
    ------
    TaskError
        Unknown kind, township, grid or station, a grid outside the township, an empty
        title or a bad due date.
    """
    tree = tree or load_tree(engine)
    if kind not in TASK_KINDS:
        raise TaskError(f"the task kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
    title = " ".join(title.split())
    if not title:
        raise TaskError("a task needs a title")
    if len(title) > TITLE_MAX:
        raise TaskError(f"the title is longer than {TITLE_MAX} characters")
    township = tree.by_code.get(township_code.strip())
    if township is None or township.level != _township_level(settings):
        raise TaskError(f"no township with code {township_code!r}")
    inside = tree.subtree(township.id)
    grid_ids: list[int] = []
    for code in dict.fromkeys(c.strip() for c in grid_codes if c.strip()):
        node = tree.by_code.get(code)
        if node is None or node.level != _grid_level(settings):
            raise TaskError(f"no grid with code {code!r}")
        if node.id not in inside:
            raise TaskError(f"grid {code} is not in township {township.code} {township.name}")
        grid_ids.append(node.id)
    due = _due(due_date)
    assignee = assignee.strip()[:200]
    now = utcnow()
    with session_scope(engine) as session:
        station_id = None
        if station_code:
            from gridwatch.storage.models import StationTownship

            station = session.scalar(select(Station).where(Station.code == station_code.strip()))
            if station is None:
                raise TaskError(f"no police station with code {station_code!r}")
            covers = session.scalar(
                select(StationTownship.area_id).where(
                    StationTownship.station_id == station.id,
                    StationTownship.area_id == township.id,
                )
            )
            if covers is None:
                raise TaskError(
                    f"police station {station.code} does not cover township {township.code}"
                )
            station_id = station.id
        assignee_user_id = (
            session.scalar(select(User.id).where(User.username == assignee)) if assignee else None
        )
        task = PreventionTask(
            kind=kind,
            title=title,
            detail=detail.strip(),
            township_id=township.id,
            station_id=station_id,
            grid_ids=grid_ids,
            assignee=assignee,
            assignee_user_id=assignee_user_id,
            due_date=due,
            status="open",
            created_by=(actor.username if actor else "cli")[:100],
            created_at=now,
            updated_at=now,
            source_plan=source_plan,
            source_ref=source_ref or {},
        )
        session.add(task)
        session.flush()
        record_event(
            session,
            "task_add",
            actor=actor,
            username=None if actor else "cli",
            target=AUDIT_TARGET.format(task.id),
            ip=ip,
            detail={"kind": kind, "township": township.code, "source": source_plan},
        )
        task_id = task.id
    found = get_task(engine, task_id, tree=tree)
    assert found is not None
    return found


def _item_key(list_name: str, item: dict[str, Any]) -> str:
    if list_name == "cameras":
        return f"{item['lon']:.6f},{item['lat']:.6f}"
    if list_name == "repairs":
        return str(item["camera_id"])
    if list_name == "patrol_focus":
        return str(item["grid_code"])
    if list_name == "publicity":
        return str(item["village_code"])
    return str(item.get("station_code") or "")


def plan_item_key(list_name: str, item: dict[str, Any]) -> str:
    """Return the key that names ``item`` of a plan list (what a "make a task" form posts)."""
    return _item_key(list_name, item)


def task_from_plan_item(
    plan: dict[str, Any], list_name: str, key: str, tree: AreaTree, settings: Settings
) -> dict[str, Any]:
    """Turn one recommendation of a prevention plan into :func:`create_task` arguments.

    Parameters
    ----------
    plan : dict
        A township's plan (:func:`gridwatch.targeting.prevention.prevention_plan`; the
        victim follow-up list may be cut to counts per grid).
    list_name : {"cameras", "repairs", "patrol_focus", "publicity", "follow_up"}
    key : str
        The item's key (:func:`plan_item_key`).

    Raises
    ------
    TaskError
        An unknown list or an item no longer in the plan.
    """
    if list_name not in PLAN_LISTS:
        raise TaskError(f"the plan list must be one of {', '.join(PLAN_LISTS)}, not {list_name!r}")
    items = plan["cameras"]["sites"] if list_name == "cameras" else plan.get(list_name) or []
    item = next((i for i in items if _item_key(list_name, i) == key), None)
    if item is None:
        raise TaskError(f"the plan has no {list_name} item {key!r} any more; reload the plan")
    township = plan["township"]
    station: str | None = None
    if list_name == "cameras":
        grids = [item["grid_code"]]
        title = f"新建摄像头 {key}"
        detail = f"预计覆盖盲区警情 {item['covered_incidents']} 起"
    elif list_name == "repairs":
        grids = [item["grid_code"]] if item.get("grid_code") else []
        title = f"修复摄像头 {item['camera_id']} {item.get('name') or ''}".strip()
        detail = f"修复后可见盲区警情 {item['would_see_incidents']} 起"
    elif list_name == "patrol_focus":
        grids = [item["grid_code"]]
        title = f"重点巡逻 {item['grid_name']}"
        detail = f"近{item['recent_days']}天警情 {item['recent_incidents']} 起" + (
            f"，高发时段 {item['peak_hours']}" if item.get("peak_hours") else ""
        )
    elif list_name == "publicity":
        village = tree.by_code.get(item["village_code"])
        grids = (
            sorted(
                tree.nodes[i].code
                for i in tree.subtree(village.id)
                if tree.nodes[i].level == _grid_level(settings)
            )
            if village
            else []
        )
        title = f"入户宣传 {item['village_name']}"
        detail = "每名干部每次走访不少于10户"
    else:
        station = item.get("station_code")
        cases = item.get("cases") or []
        grids = sorted({c["grid_code"] for c in cases if c.get("grid_code")}) or sorted(
            {g["grid_code"] for g in item.get("by_grid", []) if g.get("grid_code")}
        )
        title = f"破案回访 {item.get('station_name') or ''}".strip()
        count = item.get("case_count", len(cases))
        detail = f"已破案件未回告受害人 {count} 起"
    ref = {k: v for k, v in item.items() if k not in ("cases", "address", "explanation")}
    return {
        "township_code": township,
        "kind": PLAN_LISTS[list_name],
        "title": title,
        "detail": detail,
        "grid_codes": grids,
        "station_code": station,
        "source_plan": list_name,
        "source_ref": {"period": plan.get("period"), "key": key, "item": ref},
    }


# -- reading and changing --------------------------------------------------------------------


def _as_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _to_dict(
    task: PreventionTask, tree: AreaTree, station: tuple[str, str] | None, today: date
) -> dict[str, Any]:
    township = tree.nodes.get(task.township_id)
    grids = [tree.nodes[i] for i in task.grid_ids or [] if i in tree.nodes]
    done_at = _as_utc(task.done_at)
    return {
        "id": task.id,
        "kind": task.kind,
        "title": task.title,
        "detail": task.detail,
        "township_id": task.township_id,
        "township_code": township.code if township else None,
        "township_name": township.name if township else None,
        "station_code": station[0] if station else None,
        "station_name": station[1] if station else None,
        "grid_codes": [g.code for g in grids],
        "grid_names": [g.name for g in grids],
        "assignee": task.assignee,
        "due_date": task.due_date,
        "overdue": bool(
            task.due_date
            and task.status in ("open", "in_progress")
            and task.due_date < today.isoformat()
        ),
        "status": task.status,
        "next_statuses": list(TRANSITIONS.get(task.status, ())),
        "created_by": task.created_by,
        "created_at": _as_utc(task.created_at),
        "updated_at": _as_utc(task.updated_at),
        "done_at": done_at,
        "source_plan": task.source_plan,
        "source_ref": task.source_ref,
    }


def list_tasks(
    engine: Engine,
    township_ids: Iterable[int] | None = None,
    status: str | None = None,
    tree: AreaTree | None = None,
    today: date | None = None,
    kind: str | None = None,
) -> list[dict[str, Any]]:
    """Return the tasks of the given townships (``None``: every task), newest first.

    ``township_ids`` is a jurisdiction's area ids (or any superset of the townships wanted):
    a task is listed only when its township is among them. ``status`` and ``kind`` keep only
    the tasks with that status or kind.
    """
    if status is not None and status not in TASK_STATUSES:
        raise TaskError(f"the status must be one of {', '.join(TASK_STATUSES)}, not {status!r}")
    if kind is not None and kind not in TASK_KINDS:
        raise TaskError(f"the task kind must be one of {', '.join(TASK_KINDS)}, not {kind!r}")
    tree = tree or load_tree(engine)
    today = today or datetime.now(UTC).date()
    query = (
        select(PreventionTask, Station.code, Station.name)
        .outerjoin(Station, PreventionTask.station_id == Station.id)
        .order_by(PreventionTask.id.desc())
    )
    if township_ids is not None:
        ids = sorted(set(township_ids))
        if not ids:
            return []
        query = query.where(PreventionTask.township_id.in_(ids))
    if status is not None:
        query = query.where(PreventionTask.status == status)
    if kind is not None:
        query = query.where(PreventionTask.kind == kind)
    with session_scope(engine) as session:
        return [
            _to_dict(task, tree, (code, name) if code else None, today)
            for task, code, name in session.execute(query).all()
        ]


def get_task(
    engine: Engine,
    task_id: int,
    township_ids: Iterable[int] | None = None,
    tree: AreaTree | None = None,
    today: date | None = None,
) -> dict[str, Any] | None:
    """Return one task, or ``None`` when it does not exist or lies outside ``township_ids``."""
    tree = tree or load_tree(engine)
    today = today or datetime.now(UTC).date()
    with session_scope(engine) as session:
        row = session.execute(
            select(PreventionTask, Station.code, Station.name)
            .outerjoin(Station, PreventionTask.station_id == Station.id)
            .where(PreventionTask.id == task_id)
        ).first()
        if row is None:
            return None
        task, code, name = row
        if township_ids is not None and task.township_id not in set(township_ids):
            return None
        return _to_dict(task, tree, (code, name) if code else None, today)


def change_status(
    engine: Engine,
    task_id: int,
    status: str,
    *,
    note: str = "",
    township_ids: Iterable[int] | None = None,
    actor: Principal | None = None,
    ip: str = "",
    now: datetime | None = None,
) -> None:
    """Move a task to ``status`` when the transition is allowed, and audit the change.

    ``done`` sets ``done_at`` (``now``, default the current instant), from which the effect
    is measured; reopening a cancelled task clears nothing else.

    Raises
    ------
    TaskError
        An unknown task (or one outside ``township_ids``), an unknown status or a transition
        that is not allowed.
    """
    if status not in TASK_STATUSES:
        raise TaskError(f"the status must be one of {', '.join(TASK_STATUSES)}, not {status!r}")
    now = now or utcnow()
    with session_scope(engine) as session:
        task = session.get(PreventionTask, task_id)
        if task is None or (
            township_ids is not None and task.township_id not in set(township_ids)
        ):
            raise TaskError(f"no task with number {task_id}")
        if status not in TRANSITIONS[task.status]:
            allowed = ", ".join(TRANSITIONS[task.status]) or "none (it is final)"
            raise TaskError(
                f"task {task_id} is {task.status} and cannot become {status}; allowed: {allowed}"
            )
        previous = task.status
        task.status = status
        task.updated_at = now
        if status == "done":
            task.done_at = now
        record_event(
            session,
            "task_status",
            actor=actor,
            username=None if actor else "cli",
            target=AUDIT_TARGET.format(task_id),
            ip=ip,
            detail={"from": previous, "to": status, "note": note.strip()[:500]},
        )


def task_history(engine: Engine, task_id: int) -> list[dict[str, Any]]:
    """Return the audit records of a task (creation and status changes), oldest first."""
    with session_scope(engine) as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.target == AUDIT_TARGET.format(task_id))
            .order_by(AuditEvent.at, AuditEvent.id)
        ).all()
        return [
            {
                "at": _as_utc(e.at),
                "username": e.username,
                "action": e.action,
                "from": e.detail.get("from"),
                "to": e.detail.get("to", "open" if e.action == "task_add" else None),
                "note": e.detail.get("note", ""),
            }
            for e in events
        ]


# -- effect and displacement -----------------------------------------------------------------


def _rise_p_value(before: int, after: int, trend: float) -> float:
    """Return P(X >= after) for X ~ Binomial(before + after, trend / (1 + trend)).

    Conditional on a grid's total, its after-count is binomial when both windows are
    Poisson and the after window's rate is ``trend`` times the before window's.
    """
    from scipy.stats import binom

    total = before + after
    if total == 0 or after == 0:
        return 1.0
    return float(binom.sf(after - 1, total, trend / (1.0 + trend)))


def _counts(
    engine: Engine, grid_ids: set[int], start: datetime, middle: datetime, end: datetime
) -> tuple[Counter[int], Counter[int]]:
    before: Counter[int] = Counter()
    after: Counter[int] = Counter()
    if not grid_ids:
        return before, after
    with session_scope(engine) as session:
        rows = session.execute(
            select(Incident.grid_id, Incident.occurred_at).where(
                Incident.grid_id.in_(sorted(grid_ids)),
                Incident.occurred_at >= start,
                Incident.occurred_at < end,
                Incident.source != "patrol",
            )
        ).all()
    for grid_id, occurred in rows:
        moment = _as_utc(occurred)
        if moment is None or grid_id is None:
            continue
        (before if moment < middle else after)[int(grid_id)] += 1
    return before, after


def _neighbours(engine: Engine, settings: Settings, targets: set[int]) -> set[int]:
    """Return the grids bordering the targets (grid polygon contiguity)."""
    import geopandas as gpd
    import shapely

    from gridwatch.workers.aggregate.hotspots import grid_adjacency

    with session_scope(engine) as session:
        rows = session.execute(
            select(Area.id, Area.geom).where(
                Area.level == _grid_level(settings), Area.geom.is_not(None)
            )
        ).all()
    if not rows:
        return set()
    ids = [int(r[0]) for r in rows]
    geoms = [r[1] for r in rows]
    target_geoms = [g for i, g in zip(ids, geoms, strict=True) if i in targets]
    if not target_geoms:
        return set()
    # Only grids near the targets take part (the adjacency of a whole city is not needed).
    reach = shapely.envelope(shapely.union_all(target_geoms)).buffer(0.05)
    near = [k for k, g in enumerate(geoms) if g.intersects(reach)]
    frame = gpd.GeoDataFrame(
        index=[ids[k] for k in near], geometry=[geoms[k] for k in near], crs="EPSG:4326"
    )
    neighbors = grid_adjacency(frame).neighbors
    found: set[int] = set()
    for target in targets:
        found.update(int(n) for n in neighbors.get(target, []))
    return found - targets


def _ratio_interval(t_b: int, t_a: int, c_b: int, c_a: int) -> tuple[float, float, float]:
    ratio = ((t_a + 0.5) / (t_b + 0.5)) / ((c_a + 0.5) / (c_b + 0.5))
    se = math.sqrt(sum(1.0 / (x + 0.5) for x in (t_b, t_a, c_b, c_a)))
    return ratio, ratio * math.exp(-1.96 * se), ratio * math.exp(1.96 * se)


def task_effect(
    engine: Engine,
    settings: Settings,
    task_id: int,
    weeks: int = DEFAULT_WEEKS,
    now: datetime | None = None,
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Measure a done task's effect on its target grids and watch its neighbours.

    Returns
    -------
    dict
        ``task_id, weeks, state`` — ``not_done`` (no figures), ``no_targets``, ``too_early``
        (with ``ready_on`` and ``weeks_elapsed``) or ``measured`` — and, when measured:
        ``before_from, done_at, after_until``, ``target`` and ``comparison`` (``grids`` (codes),
        ``before, after``), ``comparison_includes_neighbours``, ``comparison_similar``,
        ``pool_trend``, ``did_per_grid`` (change per
        target grid minus change per comparison grid), ``did_incidents`` (that times the number
        of targets), ``ratio, ratio_low, ratio_high, effect_pct``, ``verdict``
        (``reduced``, ``increased``, ``no_clear_change``) and ``displacement`` (``rows``:
        ``grid_code, grid_name, township_code, before, after, expected, excess, p_value,
        rising``; ``rising`` count, ``before``, ``after``).

    Raises
    ------
    TaskError
        Unknown task or fewer than one week.
    """
    if weeks < 1:
        raise TaskError("the effect window must be at least 1 week")
    tree = tree or load_tree(engine)
    task = get_task(engine, task_id, tree=tree)
    if task is None:
        raise TaskError(f"no task with number {task_id}")
    out: dict[str, Any] = {"task_id": task_id, "weeks": weeks}
    if task["status"] != "done" or task["done_at"] is None:
        return out | {"state": "not_done"}
    with session_scope(engine) as session:
        grid_ids = list(session.get_one(PreventionTask, task_id).grid_ids or [])
    targets = {int(i) for i in grid_ids if int(i) in tree.nodes}
    if not targets:
        return out | {"state": "no_targets"}
    done_at: datetime = task["done_at"]
    window = timedelta(weeks=weeks)
    now = _as_utc(now) or utcnow()
    if now < done_at + window:
        elapsed = max(0.0, (now - done_at).total_seconds() / timedelta(weeks=1).total_seconds())
        return out | {
            "state": "too_early",
            "done_at": done_at,
            "ready_on": (done_at + window).date().isoformat(),
            "weeks_elapsed": round(elapsed, 1),
        }
    start, end = done_at - window, done_at + window
    neighbours = _neighbours(engine, settings, targets)
    grid_level = _grid_level(settings)
    township_grids = {
        i for i in tree.subtree(task["township_id"]) if tree.nodes[i].level == grid_level
    }
    # Grids other started or finished tasks work on are not a clean comparison.
    with session_scope(engine) as session:
        busy: set[int] = set()
        for other in session.scalars(
            select(PreventionTask.grid_ids).where(
                PreventionTask.id != task_id,
                PreventionTask.status.in_(("in_progress", "done")),
            )
        ):
            busy.update(int(i) for i in other or [])
    pool = township_grids - targets - busy
    clean = pool - neighbours
    includes_neighbours = not clean and bool(pool)
    pool = clean or pool
    before, after = _counts(engine, targets | pool | neighbours, start, done_at, end)
    t_b = sum(before[i] for i in targets)
    t_a = sum(after[i] for i in targets)
    target_mean = t_b / len(targets)
    wanted = max(MIN_COMPARABLES, COMPARABLES_PER_TARGET * len(targets))
    closest = sorted(pool, key=lambda i: (abs(before[i] - target_mean), tree.nodes[i].code))
    gap = max(SIMILAR_MIN_GAP, SIMILAR_SHARE * target_mean)
    similar = [i for i in closest if abs(before[i] - target_mean) <= gap]
    comparison = (similar or closest)[:wanted]
    pool_trend = (sum(after[i] for i in pool) + 0.5) / (sum(before[i] for i in pool) + 0.5)
    c_b = sum(before[i] for i in comparison)
    c_a = sum(after[i] for i in comparison)
    out |= {
        "state": "measured",
        "before_from": start,
        "done_at": done_at,
        "after_until": end,
        "target": {
            "grids": sorted(tree.nodes[i].code for i in targets),
            "before": t_b,
            "after": t_a,
        },
        "comparison": {
            "grids": sorted(tree.nodes[i].code for i in comparison),
            "before": c_b,
            "after": c_a,
        },
        "comparison_includes_neighbours": includes_neighbours,
        "comparison_similar": bool(similar),
        "pool_trend": round(pool_trend, 3) if pool else None,
    }
    if comparison:
        per_target = (t_a - t_b) / len(targets)
        per_comparison = (c_a - c_b) / len(comparison)
        ratio, low, high = _ratio_interval(t_b, t_a, c_b, c_a)
        verdict = "reduced" if high < 1 else "increased" if low > 1 else "no_clear_change"
        out |= {
            "did_per_grid": round(per_target - per_comparison, 2),
            "did_incidents": round((per_target - per_comparison) * len(targets), 1),
            "ratio": round(ratio, 3),
            "ratio_low": round(low, 3),
            "ratio_high": round(high, 3),
            "effect_pct": round((ratio - 1.0) * 100.0, 1),
            "verdict": verdict,
        }
    else:
        out |= {
            "did_per_grid": None,
            "did_incidents": None,
            "ratio": None,
            "ratio_low": None,
            "ratio_high": None,
            "effect_pct": None,
            "verdict": "no_comparison",
        }
    out["displacement"] = displacement_rows(
        tree, neighbours, before, after, pool_trend if pool else 1.0, _township_level(settings)
    )
    return out


def displacement_rows(
    tree: AreaTree,
    neighbours: Iterable[int],
    before: Counter[int],
    after: Counter[int],
    trend: float,
    township_level: str = "township",
) -> dict[str, Any]:
    """Check each neighbouring grid for a rise beyond the comparison pool's trend.

    ``expected`` is the neighbour's before-count times ``trend``; a neighbour is ``rising``
    when ``after - expected >= MIN_RISE`` and :func:`_rise_p_value` is below ``RISE_P``.
    """
    rows: list[dict[str, Any]] = []
    for grid in neighbours:
        node = tree.nodes.get(grid)
        if node is None:
            continue
        b, a = before[grid], after[grid]
        expected = b * trend
        p_value = _rise_p_value(b, a, trend)
        township = next((n for n in tree.ancestors(grid) if n.level == township_level), None)
        rows.append(
            {
                "grid_code": node.code,
                "grid_name": node.name,
                "township_code": township.code if township else None,
                "before": b,
                "after": a,
                "expected": round(expected, 1),
                "excess": round(a - expected, 1),
                "p_value": round(p_value, 4),
                "rising": a - expected >= MIN_RISE and p_value < RISE_P,
            }
        )
    rows.sort(key=lambda r: (-r["excess"], r["grid_code"]))
    return {
        "rows": rows,
        "rising": sum(1 for r in rows if r["rising"]),
        "before": sum(r["before"] for r in rows),
        "after": sum(r["after"] for r in rows),
    }


__all__ = [
    "PLAN_LISTS",
    "TRANSITIONS",
    "TaskError",
    "change_status",
    "create_task",
    "get_task",
    "list_tasks",
    "plan_item_key",
    "task_effect",
    "task_from_plan_item",
    "task_history",
]
