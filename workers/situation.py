"""The daily situation summary (每日治安形势): yesterday against earlier days.

Built at 06:00 local time by beat (``report.daily``) or on demand with ``gridwatch report
daily``; one report per local day, replaced when built again. It reads only the published
run, like every other reader, so it never sees a half-written run.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from gridwatch.config import Settings
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import SituationReport
from gridwatch.workers import engine as runs
from gridwatch.workers.countywide import local_today

#: Emerging hot-spot classes that the report calls out.
RISING_CLASSES = ("new", "intensifying")


def _change(now: int, before: int | None) -> float | None:
    if not before:
        return None
    return round(100.0 * (now - before) / before, 1)


def _day_rows(engine: Engine, level: str, day: date) -> dict[str, dict[str, Any]]:
    return {r["area_code"]: r for r in runs.read_metrics(engine, level, day.isoformat())}


def build_daily_situation(
    engine: Engine, settings: Settings, day: date | None = None
) -> dict[str, Any]:
    """Build (and store) the situation summary of ``day`` (default: yesterday, local time).

    Returns
    -------
    dict
        ``day``, ``run_id``, ``areas`` (county and townships: the day's incidents against the
        day before, the same weekday a week earlier and the same day a year earlier, by
        category group, with solved cases whose victim was not notified), ``rising_hotspots``
        (grids whose weekly class is new or intensifying), ``cameras`` (total, working, not
        working), ``inactive_teams`` and ``generated_at``.
    """
    day = day or local_today(settings.timezone) - timedelta(days=1)
    compare = {
        "day_before": day - timedelta(days=1),
        "week_before": day - timedelta(days=7),
        "year_before": day.replace(year=day.year - 1)
        if not (day.month == 2 and day.day == 29)
        else day - timedelta(days=365),
    }
    areas = []
    run_id = None
    for level in ("county", "township"):
        today_rows = _day_rows(engine, level, day)
        earlier = {name: _day_rows(engine, level, d) for name, d in compare.items()}
        for code, row in today_rows.items():
            run_id = row["run_id"]
            total = int(row["incidents_total"])
            entry: dict[str, Any] = {
                "area_code": code,
                "level": level,
                "incidents": total,
                "by_group": row["incidents_by_group"],
                "solved_not_notified": row["solved_not_notified"],
                "cameras_total": row["cameras_total"],
                "cameras_working": row["cameras_working"],
            }
            for name, rows in earlier.items():
                before = rows.get(code)
                count = int(before["incidents_total"]) if before else None
                entry[name] = count
                entry[f"change_{name}_pct"] = _change(total, count)
            areas.append(entry)
    week = _last_complete_week(day)
    rising = [
        {
            "area_code": r["area_code"],
            "parent_code": r["parent_code"],
            "hotspot_class": r["hotspot_class"],
            "gi_star_z": r["gi_star_z"],
            "incidents": r["incidents_total"],
        }
        for r in runs.read_metrics(engine, "grid", week)
        if r["hotspot_class"] in RISING_CLASSES
    ]
    county = next((a for a in areas if a["level"] == "county"), None)
    teams = runs.team_activity(engine)
    report = {
        "day": day.isoformat(),
        "run_id": run_id,
        "areas": areas,
        "rising_hotspots": sorted(rising, key=lambda r: -(r["gi_star_z"] or 0.0)),
        "hotspot_week": week,
        "cameras": None
        if county is None or county["cameras_total"] is None
        else {
            "total": county["cameras_total"],
            "working": county["cameras_working"],
            "not_working": county["cameras_total"] - (county["cameras_working"] or 0),
        },
        "inactive_teams": [t["code"] for t in teams.get("teams", []) if t.get("inactive")],
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with session_scope(engine) as session:
        session.execute(delete(SituationReport).where(SituationReport.day == report["day"]))
        session.execute(
            insert(SituationReport),
            [{"day": report["day"], "run_id": run_id, "payload": report}],
        )
    return report


def _last_complete_week(day: date) -> str:
    """Return the label of the last ISO week that ended on or before ``day``."""
    from gridwatch.periods import period_of

    week = period_of(day, "week")
    return week.label if week.end <= day + timedelta(days=1) else week.previous().label


def get_daily_situation(engine: Engine, day: date) -> dict[str, Any] | None:
    """Return the stored summary of ``day``, or ``None``."""
    with session_scope(engine) as session:
        payload = session.scalar(
            select(SituationReport.payload).where(SituationReport.day == day.isoformat())
        )
        return dict(payload) if payload is not None else None
