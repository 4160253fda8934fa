"""The daily situation report (每日治安形势分析): yesterday against earlier days, and alerts.

Built at 06:00 local time by beat (``report.daily``) or on demand with ``gridwatch report
daily``; one report per local day, replaced when built again. The figures and hot spots come
from the published run only, like every other reader, so a half-written run is never seen.
Three parts describe the present state instead and are read from storage when the report is
built: camera status, victim notification of solved cases and patrol-team activity (the
team summary of the published run).

The report is built once for the whole county and stored; :func:`situation_for` cuts the
part a county, police station or township may see out of it, for pages and exports.

Definitions
-----------
Hot spot week
    A grid is a *hot spot* in an ISO week when its Gi* for that week is significantly
    positive at a false discovery rate of 5 % (the run's ``hot_99`` / ``hot_95`` classes, the
    same threshold as the emerging-hot-spot classes).
Remediated grid (整治降温)
    Judged on complete weeks up to the last one that ended on or before the report day
    (the last of ``hotspot_weeks``): a grid that was a hot spot in at least
    :data:`REMEDIATED_MIN_HOT_WEEKS` of the :data:`REMEDIATION_LOOKBACK_WEEKS` weeks before
    the last :data:`COOLED_WEEKS` weeks, and in none of those last weeks; or a grid whose
    weekly emerging class is ``historical`` (hot in at least 90 % of the weeks, not in the
    last one). Either way a hot spot that went quiet, which is what a crackdown produces.
Rising grid
    Incidents in the :data:`RISE_WINDOW_DAYS` days ending on the report day are at least
    :data:`RISE_MIN_INCIDENTS` and at least :data:`RISE_FACTOR` times the weekly mean of the
    :data:`RISE_BASELINE_DAYS` days before that window (and above it).
Displacement warning (洼地效应)
    A rising grid that touches a remediated grid (the contiguity neighbours Gi* uses) and is
    not remediated itself: crime pushed out of the remediated grid may have moved next door.
Camera gone offline
    Not working (status other than ``online``) now, and working, or unknown, at the newest
    earlier report. ``None`` when there is no earlier report to compare with.
Solved, victim not told (破而不馈)
    Solved or closed cases without a victim-notification time, solved by the end of the day;
    ``solved_on_day`` of them were solved on the report day.
Township at risk (accountability ladder)
    In the newest survey quarter: any status above ``none``, in the bottom N, or within
    :data:`LADDER_RISK_MARGIN` places of it; ``next_status`` is the rung another quarter in
    the bottom N would bring.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, or_, select

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period, period_of
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    AggregationRun,
    Camera,
    Incident,
    PatrolTeam,
    SituationReport,
    Station,
    StationTownship,
)
from gridwatch.taxonomy import load_taxonomy
from gridwatch.workers import blocks
from gridwatch.workers import engine as runs
from gridwatch.workers.countywide import GridGeometry, local_today

#: Version of the stored payload (1: figures only; 2: alerts, stations, names).
REPORT_VERSION = 2
#: Emerging hot-spot classes that the report calls out.
RISING_CLASSES = ("new", "intensifying")
#: Weekly Gi* classes that count as a hot spot (FDR-adjusted q <= 0.05).
HOT_WEEK_CLASSES = ("hot_99", "hot_95")
#: Weeks before the cooled weeks in which a remediated grid was a hot spot.
REMEDIATION_LOOKBACK_WEEKS = 8
#: Hot-spot weeks within the lookback that make a grid "previously hot".
REMEDIATED_MIN_HOT_WEEKS = 2
#: Most recent complete weeks in which a remediated grid is no hot spot any more.
COOLED_WEEKS = 2
#: Days ending on the report day whose incidents decide whether a grid is rising.
RISE_WINDOW_DAYS = 7
#: Days before the window whose weekly mean is the baseline.
RISE_BASELINE_DAYS = 28
#: Fewest incidents in the window for a grid to count as rising.
RISE_MIN_INCIDENTS = 3
#: Window count over the weekly baseline mean for a grid to count as rising.
RISE_FACTOR = 1.5
#: Places above the bottom N of the survey ranking that still count as at risk.
LADDER_RISK_MARGIN = 2
#: Longest-waiting unnotified cases listed per township (all are counted).
CASES_PER_TOWNSHIP = 20
#: Comparison days, in display order.
COMPARISONS = ("day_before", "week_before", "year_before")
_SOLVED_STATUSES = ("solved", "closed")


def _change(now: int, before: int | None) -> float | None:
    if not before:
        return None
    return round(100.0 * (now - before) / before, 1)


def compare_days(day: date) -> dict[str, date]:
    """Return the day before, the same weekday a week earlier and the same day a year earlier.

    29 February is compared with 28 February of the year before.
    """
    year_before = (
        date(day.year - 1, 2, 28)
        if (day.month, day.day) == (2, 29)
        else day.replace(year=day.year - 1)
    )
    return {
        "day_before": day - timedelta(days=1),
        "week_before": day - timedelta(days=7),
        "year_before": year_before,
    }


def _day_rows(engine: Engine, level: str, day: date) -> dict[str, dict[str, Any]]:
    return {r["area_code"]: r for r in runs.read_metrics(engine, level, day.isoformat())}


def _township_of(tree: AreaTree) -> dict[int, str | None]:
    """Map every area id to the code of its township (itself for a township; else None)."""
    out: dict[int, str | None] = {}
    for node in tree.nodes.values():
        if node.level == "township":
            out[node.id] = node.code
            continue
        found = None
        for above in tree.ancestors(node.id):
            if above.level == "township":
                found = above.code
        out[node.id] = found
    return out


def _area_entry(
    code: str,
    level: str,
    tree: AreaTree,
    row: Mapping[str, Any],
    earlier: Mapping[str, Mapping[str, Any] | None],
) -> dict[str, Any]:
    node = tree.by_code.get(code)
    parent = tree.nodes.get(node.parent_id) if node and node.parent_id is not None else None
    total = int(row["incidents_total"])
    entry: dict[str, Any] = {
        "area_code": code,
        "name": node.name if node else code,
        "level": level,
        "parent_code": parent.code if parent else None,
        "incidents": total,
        "by_group": {g: int(n) for g, n in (row.get("incidents_by_group") or {}).items()},
        "solved_not_notified": int(row.get("solved_not_notified") or 0),
        "cameras_total": row.get("cameras_total"),
        "cameras_working": row.get("cameras_working"),
    }
    for name in COMPARISONS:
        before = earlier.get(name)
        count = int(before["incidents_total"]) if before else None
        entry[name] = count
        entry[f"change_{name}_pct"] = _change(total, count)
        entry[f"by_group_{name}"] = (
            {g: int(n) for g, n in (before.get("incidents_by_group") or {}).items()}
            if before
            else None
        )
    return entry


def combine_entries(
    entries: Sequence[Mapping[str, Any]], code: str, level: str, name: str
) -> dict[str, Any]:
    """Add up several areas' report entries into one (a station's townships).

    Counts are summed and changes recomputed from the sums; a comparison missing for any of
    the areas is missing for the sum.
    """

    def add(dicts: Iterable[Mapping[str, int] | None]) -> dict[str, int] | None:
        out: dict[str, int] = {}
        for d in dicts:
            if d is None:
                return None
            for key, value in d.items():
                out[key] = out.get(key, 0) + int(value)
        return out

    def total(key: str) -> int | None:
        values = [e.get(key) for e in entries]
        return None if any(v is None for v in values) else sum(int(v or 0) for v in values)

    incidents = sum(int(e["incidents"]) for e in entries)
    combined: dict[str, Any] = {
        "area_code": code,
        "name": name,
        "level": level,
        "parent_code": None,
        "incidents": incidents,
        "by_group": add(e["by_group"] for e in entries) or {},
        "solved_not_notified": sum(int(e.get("solved_not_notified") or 0) for e in entries),
        "cameras_total": total("cameras_total"),
        "cameras_working": total("cameras_working"),
        "not_notified_open": total("not_notified_open"),
        "not_notified_on_day": total("not_notified_on_day"),
        "townships": [e["area_code"] for e in entries],
    }
    for comparison in COMPARISONS:
        count = total(comparison)
        combined[comparison] = count
        combined[f"change_{comparison}_pct"] = _change(incidents, count)
        combined[f"by_group_{comparison}"] = add(e.get(f"by_group_{comparison}") for e in entries)
    return combined


def _stations(engine: Engine, tree: AreaTree) -> list[dict[str, Any]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Station.code, Station.name, StationTownship.area_id)
            .outerjoin(StationTownship, StationTownship.station_id == Station.id)
            .order_by(Station.code)
        ).all()
    stations: dict[str, dict[str, Any]] = {}
    for code, name, area_id in rows:
        station = stations.setdefault(code, {"code": code, "name": name, "townships": []})
        if area_id in tree.nodes:
            station["townships"].append(tree.nodes[area_id].code)
    return list(stations.values())


def last_complete_week(day: date) -> str:
    """Return the label of the last ISO week that ended on or before ``day``."""
    week = period_of(day, "week")
    return week.label if week.end <= day + timedelta(days=1) else week.previous().label


def _grid_series(
    engine: Engine, labels: Sequence[str], column: str, grid_ids: Sequence[int]
) -> pd.DataFrame:
    """Return ``column`` of the published grid blocks of ``labels`` (grids x labels).

    A period without a block (nothing happened, or outside the run) is all missing.
    """
    frame = pd.DataFrame(index=pd.Index(list(grid_ids), dtype=np.int64))
    with session_scope(engine) as session:
        run_id = runs.latest_published_run_id(session)
        for label in labels:
            block = (
                blocks.read_block(session, run_id, "grid", label) if run_id is not None else None
            )
            if block is None or column not in block.columns:
                frame[label] = pd.Series(np.nan, index=frame.index, dtype=object)
            else:
                frame[label] = block[column].reindex(frame.index)
    return frame


def remediated_grids(
    hotspots: pd.DataFrame, classes: Mapping[int, Any], cooled_weeks: int = COOLED_WEEKS
) -> dict[int, dict[str, Any]]:
    """Return the remediated grids (see the module docstring) and why.

    Parameters
    ----------
    hotspots : pandas.DataFrame
        Weekly Gi* class (``hot_99`` …) per grid (index) and week (columns, oldest first, the
        last ``cooled_weeks`` columns being the most recent complete weeks).
    classes : mapping
        Grid id → weekly emerging class.
    cooled_weeks : int
        How many of the last columns are the cooled weeks.

    Returns
    -------
    dict
        Grid id → ``{"hot_weeks": n, "last_hot_week": label or None, "reason":
        "cooled" | "historical"}``.
    """
    hot = hotspots.isin(HOT_WEEK_CLASSES).to_numpy(dtype=bool)
    weeks = list(hotspots.columns)
    history = hot[:, : max(len(weeks) - cooled_weeks, 0)]
    recent = hot[:, max(len(weeks) - cooled_weeks, 0) :]
    found: dict[int, dict[str, Any]] = {}
    for i, grid in enumerate(hotspots.index):
        cooled = history[i].sum() >= REMEDIATED_MIN_HOT_WEEKS and not recent[i].any()
        historical = classes.get(int(grid)) == "historical"
        if not (cooled or historical):
            continue
        hot_at = np.flatnonzero(hot[i])
        found[int(grid)] = {
            "hot_weeks": int(hot[i].sum()),
            "last_hot_week": weeks[hot_at[-1]] if len(hot_at) else None,
            "reason": "cooled" if cooled else "historical",
        }
    return found


def rising_grids(daily: pd.DataFrame) -> dict[int, dict[str, Any]]:
    """Return the rising grids (see the module docstring) of a grid x day count matrix.

    ``daily`` holds :data:`RISE_BASELINE_DAYS` baseline days followed by
    :data:`RISE_WINDOW_DAYS` window days (oldest first); missing counts are zero.
    """
    counts = daily.fillna(0).to_numpy(dtype=float)
    window = counts[:, -RISE_WINDOW_DAYS:].sum(axis=1)
    baseline = counts[:, :-RISE_WINDOW_DAYS].sum(axis=1) * RISE_WINDOW_DAYS / RISE_BASELINE_DAYS
    rising = (
        (window >= RISE_MIN_INCIDENTS) & (window >= RISE_FACTOR * baseline) & (window > baseline)
    )
    return {
        int(daily.index[i]): {
            "incidents_window": int(window[i]),
            "baseline_weekly": round(float(baseline[i]), 2),
        }
        for i in np.flatnonzero(rising)
    }


def class_week(engine: Engine, settings: Settings) -> str | None:
    """Return the week the published run's emerging hot-spot classes describe.

    The run classifies the weeks that had ended when it was published, so its classes belong
    to the last week complete on that local day (``None`` before the first run).
    """
    with session_scope(engine) as session:
        run_id = runs.latest_published_run_id(session)
        run = session.get(AggregationRun, run_id) if run_id is not None else None
        moment = _aware(run.finished_at or run.created_at) if run is not None else None
    if moment is None:
        return None
    return period_of(moment.astimezone(settings.timezone).date(), "week").previous().label


def _hotspot_alerts(
    engine: Engine,
    tree: AreaTree,
    township_of: Mapping[int, str | None],
    day: date,
    classes_of: str | None,
) -> dict[str, Any]:
    """Rising hot spots, remediated grids and displacement warnings.

    The rising hot spots are the published run's (week ``classes_of``); remediation and
    displacement are judged on the weeks and days up to ``day``.
    """
    parents = {n.parent_id for n in tree.nodes.values() if n.parent_id is not None}
    grid_ids = sorted(i for i in tree.nodes if i not in parents)
    week = last_complete_week(day)
    current = (
        {r["area_code"]: r for r in runs.read_metrics(engine, "grid", classes_of)}
        if classes_of is not None
        else {}
    )

    def grid_info(grid_id: int) -> dict[str, Any]:
        node = tree.nodes[grid_id]
        parent = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
        return {
            "area_code": node.code,
            "name": node.name,
            "parent_name": parent.name if parent else None,
            "township_code": township_of.get(grid_id),
        }

    rising_hotspots = []
    for grid_id in grid_ids:
        row = current.get(tree.nodes[grid_id].code)
        if row is None or row["hotspot_class"] not in RISING_CLASSES:
            continue
        rising_hotspots.append(
            {
                **grid_info(grid_id),
                "parent_code": row["parent_code"],
                "hotspot_class": row["hotspot_class"],
                "gi_star_z": row["gi_star_z"],
                "incidents": row["incidents_total"],
            }
        )
    rising_hotspots.sort(key=lambda r: (-(r["gi_star_z"] or 0.0), r["area_code"]))

    last = parse_period(week)
    labels = [last.label]
    for _ in range(REMEDIATION_LOOKBACK_WEEKS + COOLED_WEEKS - 1):
        last = last.previous()
        labels.append(last.label)
    labels.reverse()
    hotspots = _grid_series(engine, labels, "hotspot", grid_ids)
    # The run's classes describe its own last week: they say "historical" of this report's
    # week only when the two are the same week.
    classes = {
        tree.by_code[code].id: row["hotspot_class"]
        for code, row in current.items()
        if code in tree.by_code and classes_of == week
    }
    remediated = remediated_grids(hotspots, classes)
    first = day - timedelta(days=RISE_BASELINE_DAYS + RISE_WINDOW_DAYS - 1)
    days = [
        (first + timedelta(days=k)).isoformat()
        for k in range(RISE_BASELINE_DAYS + RISE_WINDOW_DAYS)
    ]
    rising = rising_grids(_grid_series(engine, days, "incidents_total", grid_ids))

    displacement = []
    if remediated and rising:
        with session_scope(engine) as session:
            geometry = GridGeometry.load(session, grid_ids)
        neighbours = geometry.weights.neighbors if len(geometry.frame) > 1 else {}
        for grid_id, rise in sorted(rising.items(), key=lambda kv: tree.nodes[kv[0]].code):
            if grid_id in remediated:
                continue
            near = sorted(
                tree.nodes[n].code for n in neighbours.get(grid_id, []) if int(n) in remediated
            )
            if near:
                displacement.append(
                    {
                        **grid_info(grid_id),
                        **rise,
                        "remediated_neighbours": near,
                        "hotspot_class": classes.get(grid_id),
                    }
                )
    displacement.sort(key=lambda r: (-r["incidents_window"], r["area_code"]))
    return {
        "rising_hotspots": rising_hotspots,
        "remediated": [
            {**grid_info(grid_id), **why}
            for grid_id, why in sorted(remediated.items(), key=lambda kv: tree.nodes[kv[0]].code)
        ],
        "displacement": displacement,
        "hotspot_week": classes_of,
        "hotspot_weeks": labels,
    }


def _cameras(
    engine: Engine,
    tree: AreaTree,
    township_of: Mapping[int, str | None],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Camera status now, per township, and the cameras gone offline since ``previous``."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(Camera.source_id, Camera.name, Camera.status, Camera.grid_id).order_by(
                Camera.source_id
            )
        ).all()
    earlier = None
    if previous is not None and "not_working_ids" in (previous.get("cameras") or {}):
        earlier = set(previous["cameras"]["not_working_ids"])
    by_township: dict[str, dict[str, int]] = {}
    not_working: list[str] = []
    gone: list[dict[str, Any]] = []
    for source_id, name, status, grid_id in rows:
        township = township_of.get(grid_id) if grid_id is not None else None
        counts = by_township.setdefault(township or "", {"total": 0, "not_working": 0})
        counts["total"] += 1
        if status == "online":
            continue
        counts["not_working"] += 1
        not_working.append(source_id)
        if earlier is not None and source_id not in earlier:
            grid = tree.nodes.get(grid_id) if grid_id is not None else None
            gone.append(
                {
                    "code": source_id,
                    "name": name,
                    "status": status,
                    "grid_code": grid.code if grid else None,
                    "grid_name": grid.name if grid else None,
                    "township_code": township,
                }
            )
    return {
        "total": len(rows),
        "working": len(rows) - len(not_working),
        "not_working": len(not_working),
        "by_township": by_township,
        "not_working_ids": not_working,
        "gone_offline": gone if earlier is not None else None,
        "compared_with": previous.get("day") if earlier is not None and previous else None,
    }


def _inactive_teams(
    engine: Engine, tree: AreaTree, township_of: Mapping[int, str | None]
) -> list[dict[str, Any]]:
    """Patrol teams with no patrol in the inactivity window (or never), with their area."""
    activity = {t["code"]: t for t in runs.team_activity(engine).get("teams", [])}
    with session_scope(engine) as session:
        teams = session.execute(
            select(
                PatrolTeam.code,
                PatrolTeam.name,
                PatrolTeam.kind,
                PatrolTeam.home_area_id,
                Station.code,
            )
            .outerjoin(Station, Station.id == PatrolTeam.station_id)
            .order_by(PatrolTeam.code)
        ).all()
    out = []
    for code, name, kind, home_id, station_code in teams:
        found = activity.get(code, {})
        if not bool(found.get("inactive", code not in activity)):
            continue
        home = tree.nodes.get(home_id) if home_id is not None else None
        out.append(
            {
                "code": code,
                "name": name,
                "kind": kind,
                "home_code": home.code if home else None,
                "home_name": home.name if home else None,
                "township_code": township_of.get(home_id) if home_id is not None else None,
                "station_code": station_code,
                "last_patrol_at": found.get("last_patrol_at"),
            }
        )
    return out


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _not_notified(
    engine: Engine,
    settings: Settings,
    tree: AreaTree,
    township_of: Mapping[int, str | None],
    day: date,
) -> dict[str, Any]:
    """Solved cases without victim notification by the end of ``day``, per township."""
    tz = settings.timezone
    start = datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                Incident.source_id,
                Incident.category,
                Incident.occurred_at,
                Incident.solved_at,
                Incident.grid_id,
            ).where(
                Incident.victim_notified_at.is_(None),
                Incident.grid_id.is_not(None),
                or_(Incident.status.in_(_SOLVED_STATUSES), Incident.solved_at.is_not(None)),
            )
        ).all()
    per_township: dict[str, dict[str, Any]] = {}
    for source_id, category, occurred_at, solved_at, grid_id in rows:
        solved = _aware(solved_at) or _aware(occurred_at)
        if solved is None or solved >= end or grid_id is None:
            continue
        township = township_of.get(grid_id) or ""
        entry = per_township.setdefault(township, {"open": 0, "solved_on_day": 0, "cases": []})
        entry["open"] += 1
        entry["solved_on_day"] += int(solved >= start)
        grid = tree.nodes.get(grid_id)
        entry["cases"].append(
            {
                "source_id": source_id,
                "category": category,
                "solved_on": solved.astimezone(tz).date().isoformat(),
                "days_waiting": (day - solved.astimezone(tz).date()).days,
                "grid_code": grid.code if grid else None,
                "grid_name": grid.name if grid else None,
                "township_code": township or None,
            }
        )
    for entry in per_township.values():
        entry["cases"].sort(key=lambda c: (-c["days_waiting"], c["source_id"]))
        entry["cases"] = entry["cases"][:CASES_PER_TOWNSHIP]
    return per_township


def _status_after(streak: int, rules: Mapping[str, Any]) -> str:
    if streak >= rules["listed_after"]:
        return "listed"
    if streak >= rules["yellow_card_after"]:
        return "yellow_card"
    if streak >= rules["summons_after"]:
        return "summons"
    return "none"


def _ladder(engine: Engine, settings: Settings, tree: AreaTree) -> dict[str, Any]:
    """Townships at risk in the accountability ladder of the newest survey quarter."""
    # The one place workers read targeting: the ladder is a pure function of the survey
    # tables (it imports nothing from workers), and the report must be built by beat.
    from gridwatch.targeting.ladder import ladder_report

    report = ladder_report(engine, settings, tree)
    rules = report["rules"]
    quarter = report["quarters"][-1] if report["quarters"] else None
    at_risk = []
    for township in report["townships"]:
        entries = [e for e in township["history"] if e["period"] == quarter]
        if not entries:
            continue
        last = entries[-1]
        place = last["place_from_bottom"]
        near = place is not None and place <= rules["bottom_n"] + LADDER_RISK_MARGIN
        if township["status"] == "none" and not last["in_bottom"] and not near:
            continue
        following = (
            "veto"
            if township["status"] == "veto"
            else _status_after(int(last["streak"]) + 1, rules)
        )
        at_risk.append(
            {
                "area_code": township["area_code"],
                "name": township["area_name"],
                "status": township["status"],
                "score": last["score"],
                "place_from_bottom": place,
                "ranked": last["ranked"],
                "in_bottom": last["in_bottom"],
                "streak": last["streak"],
                "events": list(last["events"]),
                "next_status": following,
            }
        )
    at_risk.sort(key=lambda t: (t["place_from_bottom"] or 10**6, t["area_code"]))
    return {"quarter": quarter, "bottom_n": rules["bottom_n"], "townships": at_risk}


def build_daily_situation(
    engine: Engine, settings: Settings, day: date | None = None
) -> dict[str, Any]:
    """Build (and store) the situation report of ``day`` (default: yesterday, local time).

    Returns
    -------
    dict
        ``day``, ``run_id``, ``version``, ``compare`` (the comparison days), ``groups``
        (category groups with their names), ``areas`` (the county, each township and each
        police station: the day's incidents against the day before, the same weekday a week
        earlier and the same day a year earlier, in all and by category group), ``stations``,
        ``rising_hotspots`` (grids whose weekly class is new or intensifying in the published
        run, which classifies its own last complete week, ``hotspot_week``), ``hotspot_weeks``
        (the weeks remediation is judged on, up to the report day), ``remediated`` and
        ``displacement`` (grids, see the module docstring), ``cameras`` (total, working, not
        working, per township, gone offline),
        ``inactive_teams``, ``not_notified`` (township code → open, solved on the day and the
        longest-waiting cases), ``ladder`` (townships at risk) and ``generated_at``.
    """
    day = day or local_today(settings.timezone) - timedelta(days=1)
    compare = compare_days(day)
    tree = load_tree(engine)
    township_of = _township_of(tree)
    areas: list[dict[str, Any]] = []
    run_id = None
    for level in ("county", "township"):
        today_rows = _day_rows(engine, level, day)
        earlier = {name: _day_rows(engine, level, d) for name, d in compare.items()}
        for code, row in today_rows.items():
            run_id = row["run_id"]
            before = {name: rows.get(code) for name, rows in earlier.items()}
            areas.append(_area_entry(code, level, tree, row, before))
    cases = _not_notified(engine, settings, tree, township_of, day)
    for entry in areas:
        found = (
            [cases.get(entry["area_code"], {})] if entry["level"] == "township" else cases.values()
        )
        entry["not_notified_open"] = sum(int(c.get("open", 0)) for c in found)
        entry["not_notified_on_day"] = sum(int(c.get("solved_on_day", 0)) for c in found)
    stations = _stations(engine, tree)
    townships = {a["area_code"]: a for a in areas if a["level"] == "township"}
    for station in stations:
        members = [townships[c] for c in station["townships"] if c in townships]
        if members:
            areas.append(combine_entries(members, station["code"], "station", station["name"]))
    alerts = _hotspot_alerts(engine, tree, township_of, day, class_week(engine, settings))
    with session_scope(engine) as session:
        previous_payload = session.scalar(
            select(SituationReport.payload)
            .where(SituationReport.day < day.isoformat())
            .order_by(SituationReport.day.desc())
            .limit(1)
        )
    taxonomy = load_taxonomy(settings.categories_file)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "day": day.isoformat(),
        "run_id": run_id,
        "compare": {name: d.isoformat() for name, d in compare.items()},
        "groups": [{"code": code, **names} for code, names in taxonomy.groups.items()],
        "areas": areas,
        "stations": stations,
        **alerts,
        "cameras": _cameras(engine, tree, township_of, previous_payload),
        "inactive_teams": _inactive_teams(engine, tree, township_of),
        "not_notified": cases,
        "ladder": _ladder(engine, settings, tree),
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    with session_scope(engine) as session:
        session.execute(delete(SituationReport).where(SituationReport.day == report["day"]))
        session.execute(
            insert(SituationReport),
            [{"day": report["day"], "run_id": run_id, "payload": report}],
        )
    return report


def get_daily_situation(engine: Engine, day: date) -> dict[str, Any] | None:
    """Return the stored report of ``day``, or ``None``."""
    with session_scope(engine) as session:
        payload = session.scalar(
            select(SituationReport.payload).where(SituationReport.day == day.isoformat())
        )
        return dict(payload) if payload is not None else None


def report_days(engine: Engine, limit: int = 31) -> list[str]:
    """Return the days (ISO) of the newest stored reports, newest first."""
    with session_scope(engine) as session:
        return list(
            session.scalars(
                select(SituationReport.day).order_by(SituationReport.day.desc()).limit(limit)
            )
        )


def situation_for(
    report: Mapping[str, Any],
    heads: Sequence[str],
    townships: Collection[str],
    station: str | None = None,
    sees_all: bool = False,
) -> dict[str, Any]:
    """Return the part of a stored report one jurisdiction may see.

    Parameters
    ----------
    report : mapping
        A report from :func:`build_daily_situation` / :func:`get_daily_situation`.
    heads : sequence of str
        Codes of the rows that head the report: the county, the police station or the
        township itself.
    townships : collection of str
        Codes of the townships the reader may see; every per-township row, grid, camera,
        team and case outside them is left out.
    station : str, optional
        The reader's police-station code (its teams without a home area are theirs).
    sees_all : bool
        The reader sees the top of the tree: cameras, teams and cases with no township are
        shown too.

    Returns
    -------
    dict
        The report's keys, filtered, plus ``heads`` (the head rows), ``townships`` (the
        township rows) and ``group_rows`` (per category group: the heads' counts on the day
        and the comparison days). Camera counts are recomputed from the visible townships.
    """
    visible = set(townships)

    def seen(code: str | None) -> bool:
        return code in visible if code else sees_all

    areas = list(report.get("areas", []))
    head_rows = [a for code in heads for a in areas if a["area_code"] == code]
    township_rows = sorted(
        (
            a
            for a in areas
            if a["level"] == "township" and a["area_code"] in visible and a not in head_rows
        ),
        key=lambda a: (-int(a["incidents"]), a["area_code"]),
    )
    if not head_rows and township_rows:
        head_rows = [combine_entries(township_rows, "", "jurisdiction", "")]
    group_rows = []
    for group in report.get("groups", []):
        row: dict[str, Any] = {"code": group["code"], "zh": group["zh"], "en": group["en"]}
        row["day"] = sum(int(h["by_group"].get(group["code"], 0)) for h in head_rows)
        for name in COMPARISONS:
            values = [h.get(f"by_group_{name}") for h in head_rows]
            row[name] = (
                None
                if any(v is None for v in values)
                else sum(int(v.get(group["code"], 0)) for v in values if v is not None)
            )
            row[f"change_{name}_pct"] = _change(row["day"], row[name])
        group_rows.append(row)
    cameras = dict(report.get("cameras") or {})
    per_township = {
        code: counts
        for code, counts in (cameras.get("by_township") or {}).items()
        if seen(code or None)
    }
    gone = cameras.get("gone_offline")
    cameras_view = {
        "total": sum(c["total"] for c in per_township.values()),
        "not_working": sum(c["not_working"] for c in per_township.values()),
        "by_township": per_township,
        "gone_offline": None
        if gone is None
        else [c for c in gone if seen(c.get("township_code"))],
        "compared_with": cameras.get("compared_with"),
    }
    cameras_view["working"] = cameras_view["total"] - cameras_view["not_working"]
    teams = [
        t
        for t in report.get("inactive_teams", [])
        if isinstance(t, Mapping)
        and (
            t.get("township_code") in visible
            or (t.get("township_code") is None and station and t.get("station_code") == station)
            or (t.get("township_code") is None and sees_all)
        )
    ]
    not_notified = {
        code: entry
        for code, entry in (report.get("not_notified") or {}).items()
        if seen(code or None)
    }
    ladder = dict(report.get("ladder") or {})
    ladder["townships"] = [t for t in ladder.get("townships", []) if t["area_code"] in visible]

    def grids(key: str) -> list[dict[str, Any]]:
        return [g for g in report.get(key, []) if g.get("township_code") in visible]

    return {
        "version": report.get("version", 1),
        "day": report["day"],
        "run_id": report.get("run_id"),
        "generated_at": report.get("generated_at"),
        "compare": report.get("compare")
        or {
            name: d.isoformat()
            for name, d in compare_days(date.fromisoformat(report["day"])).items()
        },
        "hotspot_week": report.get("hotspot_week"),
        "heads": head_rows,
        "townships": township_rows,
        "group_rows": group_rows,
        "rising_hotspots": grids("rising_hotspots"),
        "remediated": grids("remediated"),
        "displacement": grids("displacement"),
        "cameras": cameras_view,
        "inactive_teams": teams,
        "not_notified": {
            "open": sum(int(e["open"]) for e in not_notified.values()),
            "solved_on_day": sum(int(e["solved_on_day"]) for e in not_notified.values()),
            "cases": sorted(
                (c for e in not_notified.values() for c in e["cases"]),
                key=lambda c: (-c["days_waiting"], c["source_id"]),
            ),
        },
        "ladder": ladder,
    }
