"""Alerts for the overview page: what in the user's jurisdiction needs attention now.

Five kinds, all read from the newest published run (never from half-written data):

``rising_categories``
    Incident categories whose count in the last complete weeks rose against the weeks before
    ("whatever crime rises, strike it"): at least :attr:`AlertRules.rising_min_count`
    incidents now and a rise of at least :attr:`AlertRules.rising_min_pct` percent (a category
    absent before counts as rising once it reaches the minimum).
``hotspots``
    Grids whose emerging hot-spot class for weeks is ``new`` or ``intensifying``.
``cameras``
    Cameras offline or broken, per township (:func:`gridwatch.screen.cameras_not_working`).
``teams``
    Patrol teams with no patrol in the inactivity window (:func:`gridwatch.screen.inactive_teams`).
``not_notified``
    Solved cases whose victim was not told the result (破而不馈), per township, over the
    current and previous quarter.

Everything is filtered to the jurisdiction: a township user never sees another township's
grid, team or count here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine

from gridwatch.areas import AreaNode, AreaTree, Jurisdiction
from gridwatch.overview import area_counts, incident_counts
from gridwatch.periods import Period, period_of
from gridwatch.screen import cameras_not_working, inactive_teams
from gridwatch.workers.engine import read_metrics

#: Level at which per-area alerts (cameras, victims not told) are listed when it exists.
ALERT_LEVEL = "township"


@dataclass(frozen=True)
class AlertRules:
    """Thresholds of the alerts (defaults suit a county; tests and sites may pass others).

    Attributes
    ----------
    rising_weeks : int
        Complete weeks compared with the same number of weeks just before them.
    rising_min_count : int
        Least incidents of a category in those weeks for it to be called rising.
    rising_min_pct : float
        Least rise, in percent of the earlier weeks' count.
    hotspot_classes : tuple of str
        Emerging hot-spot classes (weekly) that are alerts.
    hotspot_limit : int
        Most hot-spot grids listed.
    not_notified_quarters : int
        Quarters (the current one and those before it) over which unnotified solved cases
        are counted.
    """

    rising_weeks: int = 4
    rising_min_count: int = 3
    rising_min_pct: float = 50.0
    hotspot_classes: tuple[str, ...] = ("new", "intensifying")
    hotspot_limit: int = 10
    not_notified_quarters: int = 2


DEFAULT_RULES = AlertRules()


def last_complete_week(today: date) -> Period:
    """Return the last ISO week that ended before ``today`` (today's week is incomplete)."""
    return period_of(today - timedelta(days=7), "week")


def _weeks_back(last: Period, count: int) -> list[Period]:
    weeks = [last]
    for _ in range(count - 1):
        weeks.append(weeks[-1].previous())
    return weeks[::-1]


def _category_counts(
    engine: Engine, roots: Sequence[AreaNode], weeks: Sequence[Period]
) -> dict[str, int]:
    counts: dict[str, int] = {}
    for found in incident_counts(engine, roots, [w.label for w in weeks]).values():
        for code, count in found["incidents_by_category"].items():
            counts[code] = counts.get(code, 0) + int(count)
    return counts


def rising_categories(
    engine: Engine, roots: Sequence[AreaNode], today: date, rules: AlertRules = DEFAULT_RULES
) -> dict[str, Any]:
    """Return the categories that rose in the last complete weeks against the weeks before.

    Returns
    -------
    dict
        ``recent`` and ``earlier`` (first and last week labels of each window) and ``rows``:
        ``category``, ``recent``, ``earlier``, ``change_pct`` (``None`` when the category had
        no incidents before), steepest rise first.
    """
    recent_weeks = _weeks_back(last_complete_week(today), rules.rising_weeks)
    earlier_weeks = _weeks_back(recent_weeks[0].previous(), rules.rising_weeks)
    recent = _category_counts(engine, roots, recent_weeks)
    earlier = _category_counts(engine, roots, earlier_weeks)
    rows: list[dict[str, Any]] = []
    for code, now in recent.items():
        before = earlier.get(code, 0)
        if now < rules.rising_min_count or now <= before:
            continue
        change = None if before == 0 else 100.0 * (now - before) / before
        if change is not None and change < rules.rising_min_pct:
            continue
        rows.append({"category": code, "recent": now, "earlier": before, "change_pct": change})
    rows.sort(key=lambda r: (-(r["recent"] - r["earlier"]), r["category"]))
    return {
        "recent": (recent_weeks[0].label, recent_weeks[-1].label),
        "earlier": (earlier_weeks[0].label, earlier_weeks[-1].label),
        "rows": rows,
    }


def rising_hotspots(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    levels: Sequence[str],
    today: date,
    rules: AlertRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """Return the visible grids that are new or intensifying weekly hot spots.

    Returns
    -------
    dict
        ``week`` (the last complete week, whose incidents and Gi* z are shown) and ``rows``:
        ``code``, ``name``, ``parent`` (name), ``hotspot_class``, ``gi_star_z``,
        ``incidents``, strongest first.
    """
    week = last_complete_week(today).label
    grid_level = levels[-1]
    rows = []
    for row in read_metrics(engine, grid_level, week):
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in jurisdiction:
            continue
        if row.get("hotspot_class") not in rules.hotspot_classes:
            continue
        parent = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
        rows.append(
            {
                "code": node.code,
                "name": node.name,
                "parent": parent.name if parent is not None else None,
                "hotspot_class": row["hotspot_class"],
                "gi_star_z": row.get("gi_star_z"),
                "incidents": int(row.get("incidents_total") or 0),
            }
        )
    rows.sort(key=lambda r: (-(r["gi_star_z"] or 0.0), r["code"]))
    return {"week": week, "rows": rows[: rules.hotspot_limit], "total": len(rows)}


def alert_areas(
    tree: AreaTree, jurisdiction: Jurisdiction, levels: Sequence[str]
) -> list[AreaNode]:
    """Return the areas per-area alerts are listed for: the visible townships.

    A user whose roots are at or below that level (a township user) gets the roots. Without
    a ``township`` level the second level from the top is used.
    """
    level = ALERT_LEVEL if ALERT_LEVEL in levels else levels[min(1, len(levels) - 1)]
    depth = list(levels).index(level)
    out: list[AreaNode] = []
    for root_id in jurisdiction.root_ids:
        root = tree.nodes[root_id]
        if root.level in levels and list(levels).index(root.level) >= depth:
            out.append(root)
            continue
        stack = [root_id]
        while stack:
            node = tree.nodes[stack.pop()]
            if node.level == level:
                out.append(node)
            else:
                stack.extend(tree.children.get(node.id, []))
    return sorted({n.id: n for n in out}.values(), key=lambda n: n.code)


def not_notified(
    engine: Engine,
    areas: Sequence[AreaNode],
    today: date,
    rules: AlertRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """Return solved cases whose victim was not told, per area, over recent quarters.

    Returns
    -------
    dict
        ``periods`` (quarter labels, oldest first), ``total`` and ``rows``: ``code``,
        ``name``, ``count`` (solved, not notified) and ``solved``, most first; areas with
        none are left out.
    """
    quarter = period_of(today, "quarter")
    quarters = [quarter]
    for _ in range(rules.not_notified_quarters - 1):
        quarters.append(quarters[-1].previous())
    counts = {node.code: [0, 0] for node in areas}
    columns = ("solved_not_notified", "incidents_solved")
    found = area_counts(engine, areas, [p.label for p in quarters], columns)
    for by_area in found.values():
        for code, values in by_area.items():
            counts[code][0] += values["solved_not_notified"]
            counts[code][1] += values["incidents_solved"]
    rows: list[dict[str, Any]] = [
        {
            "code": node.code,
            "name": node.name,
            "count": counts[node.code][0],
            "solved": counts[node.code][1],
        }
        for node in areas
        if counts[node.code][0]
    ]
    rows.sort(key=lambda r: (-r["count"], r["code"]))
    return {
        "periods": [p.label for p in reversed(quarters)],
        "total": sum(r["count"] for r in rows),
        "rows": rows,
    }


def overview_alerts(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    levels: Sequence[str],
    today: date,
    station_id: int | None = None,
    rules: AlertRules = DEFAULT_RULES,
) -> dict[str, Any]:
    """Return every alert for ``jurisdiction`` as plain data (see the module docstring).

    ``count`` is the number of alert lines; zero means nothing needs attention.
    """
    roots = [tree.nodes[i] for i in jurisdiction.root_ids]
    if not roots:
        return {"count": 0}
    cameras = cameras_not_working(engine, tree, jurisdiction, today)
    teams = inactive_teams(engine, tree, jurisdiction, station_id)
    found: dict[str, Any] = {
        "rising_categories": rising_categories(engine, roots, today, rules),
        "hotspots": rising_hotspots(engine, tree, jurisdiction, levels, today, rules),
        "cameras": cameras,
        "teams": teams,
        "not_notified": not_notified(
            engine, alert_areas(tree, jurisdiction, levels), today, rules
        ),
    }
    found["count"] = (
        len(found["rising_categories"]["rows"])
        + len(found["hotspots"]["rows"])
        + len(cameras["townships"])
        + len(teams["inactive"])
        + len(found["not_notified"]["rows"])
    )
    return found


__all__ = [
    "DEFAULT_RULES",
    "AlertRules",
    "alert_areas",
    "last_complete_week",
    "not_notified",
    "overview_alerts",
    "rising_categories",
    "rising_hotspots",
]
