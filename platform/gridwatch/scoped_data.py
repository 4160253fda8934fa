"""Hot spots, forecasts and patrol activity of the newest published run, cut to a jurisdiction.

The JSON API's data endpoints read through these functions (the web layer only parses the
request and serialises). Each takes the user's :class:`gridwatch.areas.Jurisdiction` and
returns plain data about the visible areas only; an area code outside it raises
:class:`gridwatch.tables.AreaNotVisible`, exactly as for an unknown one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Engine, select

from gridwatch.areas import AreaTree, Jurisdiction
from gridwatch.periods import parse_period
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import PatrolTeam, Station
from gridwatch.tables import visible_area
from gridwatch.workers.engine import read_metrics, team_activity

#: The level of the grids (the map's and the aggregation's smallest cell).
GRID_LEVEL = "grid"
#: Fields of a grid's Gi* hot-spot object.
HOTSPOT_FIELDS = (
    "hotspot",
    "gi_star_z",
    "gi_star_p",
    "gi_star_q",
    "hotspot_class",
    "incidents_total",
    "incidents_reported",
)
#: Fields of a grid's patrol-dosage object.
DOSAGE_FIELDS = (
    "patrol_minutes",
    "patrol_night_minutes",
    "patrol_visits",
    "patrol_teams",
    "hours_since_last_visit",
)


def _inside(tree: AreaTree, jurisdiction: Jurisdiction, area_code: str) -> frozenset[int]:
    """Return the visible areas, within ``area_code`` when it is given."""
    if not area_code:
        return jurisdiction.area_ids
    node = visible_area(tree, jurisdiction, area_code)
    return frozenset(tree.subtree(node.id)) & jurisdiction.area_ids


def _grid_rows(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    period: str,
    area_code: str,
    fields: Iterable[str],
) -> list[dict[str, Any]]:
    inside = _inside(tree, jurisdiction, area_code)
    wanted = tuple(fields)
    rows = []
    for row in read_metrics(engine, GRID_LEVEL, period):
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in inside:
            continue
        rows.append(
            {
                "grid_code": node.code,
                "grid_name": node.name,
                "parent_code": row.get("parent_code"),
                "period": row["period"],
                "run_id": row["run_id"],
                **{key: row.get(key) for key in wanted},
            }
        )
    return rows


def grid_hotspots(
    engine: Engine, tree: AreaTree, jurisdiction: Jurisdiction, period: str, area_code: str = ""
) -> list[dict[str, Any]]:
    """Return every visible grid's Gi* result and emerging-hot-spot class for ``period``.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    tree : AreaTree
    jurisdiction : Jurisdiction
        The areas the caller may see.
    period : str
        A period label such as ``2026Q3``.
    area_code : str, optional
        Only the grids under this (visible) area.

    Returns
    -------
    list of dict
        ``grid_code, grid_name, parent_code, period, run_id`` and :data:`HOTSPOT_FIELDS`
        (``hotspot`` is ``hot_99`` … ``cold_99`` or ``not_significant``; ``gi_star_q`` is
        Benjamini–Hochberg controlled), by grid code.

    Raises
    ------
    gridwatch.tables.AreaNotVisible
        When ``area_code`` is unknown or outside ``jurisdiction``.
    gridwatch.periods.PeriodError
        When ``period`` cannot be read.
    """
    return _grid_rows(engine, tree, jurisdiction, period, area_code, HOTSPOT_FIELDS)


def visible_forecast(
    result: Mapping[str, Any], tree: AreaTree, jurisdiction: Jurisdiction, area_code: str = ""
) -> dict[str, Any]:
    """Cut a county-wide forecast (``forecast_period``'s object) to the visible areas.

    The back-test ``scorecard`` is county-wide figures (no area in it) and is kept whole.

    Raises
    ------
    gridwatch.tables.AreaNotVisible
        When ``area_code`` is unknown or outside ``jurisdiction``.
    """
    inside = _inside(tree, jurisdiction, area_code)
    rows = [
        row
        for row in result["forecast"]
        if (node := tree.by_code.get(row["area_code"])) is not None and node.id in inside
    ]
    return {**result, "forecast": rows}


def _team_is_visible(
    home_area_id: int | None,
    team_station_id: int | None,
    jurisdiction: Jurisdiction,
    station_id: int | None,
    sees_top: bool,
) -> bool:
    # The command screen's rule (gridwatch.screen.inactive_teams): a team belongs where its
    # home area is; without one, to its police station's users; without either, to whoever
    # sees the top of the tree.
    if home_area_id is not None:
        return home_area_id in jurisdiction
    if team_station_id is not None and station_id is not None:
        return team_station_id == station_id
    return sees_top


def patrol_summary(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    station_id: int | None,
    period: str,
    area_code: str = "",
) -> dict[str, Any]:
    """Return the visible patrol teams' activity and the visible grids' patrol dosage.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    tree : AreaTree
    jurisdiction : Jurisdiction
    station_id : int, optional
        The caller's police station (``station`` users), which owns teams without a home area.
    period : str
        Period of the per-grid dosage, e.g. ``2026Q3``.
    area_code : str, optional
        Only the grids (and teams based) under this visible area.

    Returns
    -------
    dict
        ``period``; ``teams``: per team ``code, name, kind, station_code, home_code,
        home_name, active_days`` (last 90 days), ``patrol_minutes_30d``, ``last_patrol_at``
        (UTC) and ``inactive`` (no patrol in 14 days, or never), as of the newest run;
        ``teams_total``, ``teams_inactive``; ``grids``: per grid ``grid_code, grid_name,
        parent_code, period, run_id`` and :data:`DOSAGE_FIELDS`.

    Raises
    ------
    gridwatch.tables.AreaNotVisible
        When ``area_code`` is unknown or outside ``jurisdiction``.
    gridwatch.periods.PeriodError
        When ``period`` cannot be read.
    """
    inside = _inside(tree, jurisdiction, area_code)
    grids = _grid_rows(engine, tree, jurisdiction, period, area_code, DOSAGE_FIELDS)
    activity = {t["code"]: t for t in team_activity(engine).get("teams", [])}
    sees_top = any(tree.nodes[i].parent_id is None for i in jurisdiction.root_ids)
    with session_scope(engine) as session:
        found = session.execute(
            select(
                PatrolTeam.code,
                PatrolTeam.name,
                PatrolTeam.kind,
                PatrolTeam.home_area_id,
                PatrolTeam.station_id,
                Station.code,
            )
            .outerjoin(Station, Station.id == PatrolTeam.station_id)
            .order_by(PatrolTeam.code)
        ).all()
    teams = []
    for code, name, kind, home_id, team_station, station_code in found:
        if not _team_is_visible(home_id, team_station, jurisdiction, station_id, sees_top):
            continue
        if area_code and (home_id is None or home_id not in inside):
            continue
        home = tree.nodes.get(home_id) if home_id is not None else None
        stats = activity.get(code, {})
        teams.append(
            {
                "code": code,
                "name": name,
                "kind": kind,
                "station_code": station_code,
                "home_code": home.code if home is not None else None,
                "home_name": home.name if home is not None else None,
                "active_days": int(stats.get("active_days", 0)),
                "patrol_minutes_30d": float(stats.get("patrol_minutes_30d", 0.0)),
                "last_patrol_at": stats.get("last_patrol_at"),
                "inactive": bool(stats.get("inactive", True)),
            }
        )
    return {
        "period": parse_period(period).label,
        "teams_total": len(teams),
        "teams_inactive": sum(1 for t in teams if t["inactive"]),
        "teams": teams,
        "grids": grids,
    }


__all__ = [
    "DOSAGE_FIELDS",
    "GRID_LEVEL",
    "HOTSPOT_FIELDS",
    "grid_hotspots",
    "patrol_summary",
    "visible_forecast",
]
