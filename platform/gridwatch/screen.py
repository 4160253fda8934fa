"""Figures for the command-centre screen (指挥中心大屏) of one jurisdiction.

Everything comes from the published run, like the overview (:mod:`gridwatch.overview`): the
day's incidents by category against the same weekday a week earlier, the two-robberies-one-
theft trend over recent weeks, the township ranking (with the survey accountability status
when a survey wave exists), cameras not working, inactive patrol teams, the grids with the
highest forecast for the week ahead, and whether the published data is stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from gridwatch.areas import AreaNode, AreaTree, Jurisdiction
from gridwatch.config import Settings
from gridwatch.overview import HEADLINE_GROUP, area_metrics, last_refresh
from gridwatch.periods import period_of
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import AggregationRun, DirtyGrid, PatrolTeam
from gridwatch.workers.engine import read_metrics, team_activity

#: Weeks shown in the two-robberies-one-theft trend.
TREND_WEEKS = 12
#: Grids listed with the highest forecast for the week ahead.
FORECAST_TOP = 8
#: The nightly full recompute runs once a day: a published run older than this (plus the
#: staleness window) means it was missed even when no import is waiting.
NIGHTLY_INTERVAL = timedelta(hours=24)


def _parse_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def staleness(engine: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    """Return the last published run and whether its data is older than expected.

    The data is stale when nothing was ever published, when an import has been waiting
    (its grids marked, or its run queued or running) longer than ``settings.stale_minutes``
    for the refresh run that should follow within
    ``settings.refresh_minutes``, or when the published run is older than a day plus that
    window (the nightly recompute did not happen).

    Returns
    -------
    dict
        ``run_id, finished_at`` (ISO UTC or ``None``), ``stale`` (bool), ``reason``
        (``no_run``, ``imports_waiting``, ``nightly_missed`` or ``None``) and ``age_minutes``.
    """
    run = last_refresh(engine)
    window = timedelta(minutes=settings.stale_minutes)
    finished = _parse_utc(run["finished_at"]) if run else None
    with session_scope(engine) as session:
        # Changed grids wait on the list until a run is created for them; from then on the
        # run itself waits (queued or running) until a worker publishes it.
        marks = [
            session.scalar(select(func.min(DirtyGrid.marked_at))),
            session.scalar(
                select(func.min(AggregationRun.created_at)).where(
                    AggregationRun.status.in_(("queued", "running"))
                )
            ),
        ]
    waiting = [m if m.tzinfo is not None else m.replace(tzinfo=UTC) for m in marks if m]
    oldest_waiting = min(waiting) if waiting else None
    reason = None
    if finished is None:
        reason = "no_run"
    elif oldest_waiting is not None and now - oldest_waiting > window:
        reason = "imports_waiting"
    elif now - finished > NIGHTLY_INTERVAL + window:
        reason = "nightly_missed"
    return {
        "run_id": run["run_id"] if run else None,
        "finished_at": run["finished_at"] if run else None,
        "stale": reason is not None,
        "reason": reason,
        "age_minutes": None if finished is None else int((now - finished).total_seconds() // 60),
    }


def _sum_by_key(rows: Sequence[dict[str, Any]], field: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        for key, count in (row.get(field) or {}).items():
            out[key] = out.get(key, 0) + int(count or 0)
    return out


def categories_today(
    engine: Engine, roots: Sequence[AreaNode], today: date
) -> list[dict[str, Any]]:
    """Return today's incidents per category against the same weekday a week earlier.

    Categories with incidents on either day are listed, most today first.
    """
    now_rows = area_metrics(engine, roots, today.isoformat())
    then_rows = area_metrics(engine, roots, (today - timedelta(days=7)).isoformat())
    now = _sum_by_key(now_rows, "incidents_by_category")
    then = _sum_by_key(then_rows, "incidents_by_category")
    rows: list[dict[str, Any]] = [
        {"category": code, "today": now.get(code, 0), "last_week": then.get(code, 0)}
        for code in set(now) | set(then)
        if now.get(code, 0) or then.get(code, 0)
    ]
    rows.sort(key=lambda r: (-r["today"], -r["last_week"], r["category"]))
    return rows


def group_trend(
    engine: Engine,
    roots: Sequence[AreaNode],
    today: date,
    group: str = HEADLINE_GROUP,
    weeks: int = TREND_WEEKS,
) -> list[dict[str, Any]]:
    """Return the incidents of ``group`` (and in all) per ISO week, oldest first.

    The last entry is the current, incomplete week.
    """
    week = period_of(today, "week")
    labels = [week.label]
    for _ in range(weeks - 1):
        week = week.previous()
        labels.append(week.label)
    out = []
    for label in reversed(labels):
        rows = area_metrics(engine, roots, label)
        out.append(
            {
                "period": label,
                "count": sum(int((r.get("incidents_by_group") or {}).get(group, 0)) for r in rows),
                "total": sum(int(r.get("incidents_total") or 0) for r in rows),
            }
        )
    return out


def township_ranking(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    period: str,
    statuses: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rank the visible townships by incidents in ``period``, most first.

    ``statuses`` maps township codes to their survey accountability status (see
    :data:`gridwatch.targeting.ladder.STATUSES`); townships without one get ``None``.
    """
    statuses = statuses or {}
    out = []
    for row in read_metrics(engine, "township", period):
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in jurisdiction:
            continue
        out.append(
            {
                "code": node.code,
                "name": node.name,
                "incidents_total": int(row.get("incidents_total") or 0),
                HEADLINE_GROUP: int((row.get("incidents_by_group") or {}).get(HEADLINE_GROUP, 0)),
                "change_prev_pct": row.get("change_prev_pct"),
                "status": statuses.get(node.code),
            }
        )
    out.sort(key=lambda r: (-r["incidents_total"], r["code"]))
    for place, row in enumerate(out, start=1):
        row["rank"] = place
    return out


def accountability_statuses(engine: Engine, settings: Settings, tree: AreaTree) -> dict[str, Any]:
    """Return the newest survey wave and each township's accountability status in it.

    ``{"period": None, "statuses": {}}`` when no survey was imported. The bootstrap is kept
    small: only the ladder's status is shown, not the rank intervals.
    """
    from gridwatch.targeting.indicators import survey_periods
    from gridwatch.targeting.ranking import survey_ranking

    waves = survey_periods(engine)
    if not waves:
        return {"period": None, "statuses": {}}
    result = survey_ranking(
        engine, settings, waves[-1], level="township", replicates=50, tree=tree
    )
    return {
        "period": waves[-1],
        "statuses": {row["area_code"]: row["status"] for row in result["rows"]},
    }


def cameras_not_working(
    engine: Engine, tree: AreaTree, jurisdiction: Jurisdiction, today: date
) -> dict[str, Any]:
    """Return the visible townships' cameras that are not working (offline or broken)."""
    rows: list[dict[str, Any]] = []
    for row in read_metrics(engine, "township", today.isoformat()):
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in jurisdiction or row.get("cameras_total") is None:
            continue
        total = int(row["cameras_total"] or 0)
        broken = total - int(row.get("cameras_working") or 0)
        rows.append({"code": node.code, "name": node.name, "total": total, "not_working": broken})
    rows.sort(key=lambda r: (-r["not_working"], r["code"]))
    return {
        "total": sum(r["total"] for r in rows),
        "not_working": sum(r["not_working"] for r in rows),
        "townships": [r for r in rows if r["not_working"]],
    }


def inactive_teams(
    engine: Engine, tree: AreaTree, jurisdiction: Jurisdiction, station_id: int | None
) -> dict[str, Any]:
    """Return the visible patrol teams and those with no patrol in the inactivity window.

    A team is visible when its home area is in the jurisdiction, when it belongs to the
    user's own police station, or — with neither recorded — to users who see the whole
    tree's top.
    """
    activity = {t["code"]: t for t in team_activity(engine).get("teams", [])}
    sees_top = any(tree.nodes[i].parent_id is None for i in jurisdiction.root_ids)
    with session_scope(engine) as session:
        teams = session.execute(
            select(
                PatrolTeam.code,
                PatrolTeam.name,
                PatrolTeam.kind,
                PatrolTeam.home_area_id,
                PatrolTeam.station_id,
            ).order_by(PatrolTeam.code)
        ).all()
    visible = []
    for code, name, kind, home_area_id, team_station in teams:
        if home_area_id is not None:
            seen = home_area_id in jurisdiction
        elif team_station is not None and station_id is not None:
            seen = team_station == station_id
        else:
            seen = sees_top
        if seen:
            found = activity.get(code, {})
            home = tree.nodes.get(home_area_id) if home_area_id is not None else None
            visible.append(
                {
                    "code": code,
                    "name": name,
                    "kind": kind,
                    "area": home.name if home is not None else None,
                    "last_patrol_at": found.get("last_patrol_at"),
                    "inactive": bool(found.get("inactive", code not in activity)),
                }
            )
    return {
        "total": len(visible),
        "inactive": [t for t in visible if t["inactive"]],
    }


def top_forecast_grids(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    today: date,
    limit: int = FORECAST_TOP,
) -> list[dict[str, Any]]:
    """Return the visible grids with the most incidents expected in the next seven days.

    The runs forecast weeks, months and quarters; the screen shows the week ahead.
    """
    rows = []
    for row in read_metrics(engine, "grid", period_of(today, "week").label):
        node = tree.by_code.get(row["area_code"])
        expected = row.get("forecast_next")
        if node is None or node.id not in jurisdiction or not expected:
            continue
        parent = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
        rows.append(
            {
                "code": node.code,
                "name": node.name,
                "parent": parent.name if parent is not None else None,
                "expected": round(float(expected), 2),
                "hotspot_class": row.get("hotspot_class"),
            }
        )
    rows.sort(key=lambda r: (-r["expected"], r["code"]))
    return rows[:limit]


def screen_figures(
    engine: Engine,
    settings: Settings,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    today: date,
    now: datetime,
    station_id: int | None = None,
    statuses: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return everything the screen shows for ``jurisdiction``, as plain JSON-able data.

    ``statuses`` is the result of :func:`accountability_statuses` (computed by the caller,
    which may keep it between refreshes).
    """
    roots = [tree.nodes[i] for i in jurisdiction.root_ids]
    quarter = period_of(today, "quarter").label
    statuses = statuses or {"period": None, "statuses": {}}
    return {
        "today": today.isoformat(),
        "generated_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "refresh": staleness(engine, settings, now),
        "categories": categories_today(engine, roots, today),
        "trend": group_trend(engine, roots, today),
        "ranking": {
            "period": quarter,
            "survey_period": statuses["period"],
            "rows": township_ranking(engine, tree, jurisdiction, quarter, statuses["statuses"]),
        },
        "cameras": cameras_not_working(engine, tree, jurisdiction, today),
        "teams": inactive_teams(engine, tree, jurisdiction, station_id),
        "forecast": top_forecast_grids(engine, tree, jurisdiction, today),
    }


__all__ = [
    "accountability_statuses",
    "cameras_not_working",
    "categories_today",
    "group_trend",
    "inactive_teams",
    "screen_figures",
    "staleness",
    "top_forecast_grids",
    "township_ranking",
]
