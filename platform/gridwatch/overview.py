"""Figures for the overview and area pages: key figures, rankings and the last refresh.

Everything comes from the published metrics (:func:`gridwatch.workers.engine.read_metrics`);
this module only picks, combines and orders them for one jurisdiction. A station covering
several townships gets their counts added up and its rates computed from those sums, the same
way the aggregation computes them for a single area.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Engine

from gridwatch.areas import AreaNode, AreaTree, Jurisdiction
from gridwatch.periods import PeriodKind, period_of
from gridwatch.workers.engine import list_runs, read_metrics

#: Period kinds shown as key figures, in display order.
KEY_PERIOD_KINDS: tuple[PeriodKind, ...] = ("day", "week", "quarter")
#: Incident group whose count is a headline figure (两抢一盗).
HEADLINE_GROUP = "two_robberies_one_theft"
_SUMMED = (
    "incidents_total",
    "incidents_solved",
    "solved_not_notified",
    "incidents_night",
    "incidents_blind_spot",
)


def _pct(numerator: float, denominator: float) -> float | None:
    return None if not denominator else 100.0 * numerator / denominator


def combine(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up the counts of several areas' metric rows and recompute their rates.

    One row is returned as it is (its rates are the published ones).
    """
    if len(rows) == 1:
        row = rows[0]
        return {**row, HEADLINE_GROUP: row.get("incidents_by_group", {}).get(HEADLINE_GROUP, 0)}
    sums = {name: sum(int(r.get(name) or 0) for r in rows) for name in _SUMMED}
    previous = [r.get("incidents_prev") for r in rows]
    prev_total = None if any(p is None for p in previous) else sum(int(p or 0) for p in previous)
    total = sums["incidents_total"]
    return {
        **sums,
        HEADLINE_GROUP: sum(
            int(r.get("incidents_by_group", {}).get(HEADLINE_GROUP, 0)) for r in rows
        ),
        "incidents_prev": prev_total,
        "change_prev_pct": (None if not prev_total else 100.0 * (total - prev_total) / prev_total),
        "solved_rate_pct": _pct(sums["incidents_solved"], total),
        "not_notified_pct": _pct(sums["solved_not_notified"], sums["incidents_solved"]),
        "night_share_pct": _pct(sums["incidents_night"], total),
        "blind_spot_incident_pct": _pct(sums["incidents_blind_spot"], total),
    }


def area_metrics(engine: Engine, nodes: Sequence[AreaNode], period: str) -> list[dict[str, Any]]:
    """Return the published metrics row of each of ``nodes`` for ``period``."""
    rows = []
    for node in nodes:
        rows.extend(read_metrics(engine, node.level, period, node.code))
    return rows


def key_figures(engine: Engine, nodes: Sequence[AreaNode], today: date) -> list[dict[str, Any]]:
    """Return today's, this week's and this quarter's figures for ``nodes`` together."""
    out = []
    for kind in KEY_PERIOD_KINDS:
        label = period_of(today, kind).label
        rows = area_metrics(engine, nodes, label)
        figures = combine(rows) if rows else {}
        out.append({"kind": kind, "period": label, **figures})
    return out


def next_level(levels: Sequence[str], level: str) -> str | None:
    """Return the level below ``level`` in the configured ladder (``None`` at the bottom)."""
    if level not in levels:
        return None
    index = list(levels).index(level)
    return levels[index + 1] if index + 1 < len(levels) else None


def ranking(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    levels: Sequence[str],
    period: str,
    parent: AreaNode | None = None,
    rank_roots: bool = False,
) -> dict[str, Any]:
    """Rank areas by incidents in ``period``, most first.

    With ``parent``, its children are ranked. Without, the user's root areas are ranked when
    ``rank_roots`` is set or there are several (a police station's townships), else the
    children of the single root. Only areas inside ``jurisdiction`` are listed.
    """
    if parent is None and not rank_roots:
        roots = [tree.nodes[i] for i in jurisdiction.root_ids]
        if len(roots) == 1:
            parent = roots[0]
    if parent is not None:
        level = next_level(levels, parent.level)
        if level is None:
            return {"level": None, "period": period, "rows": []}
        rows = read_metrics(engine, level, period, parent.code)
    else:
        roots = [tree.nodes[i] for i in jurisdiction.root_ids]
        level = roots[0].level if roots else None
        rows = area_metrics(engine, roots, period)
    ranked = []
    for row in rows:
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in jurisdiction:
            continue
        ranked.append(
            {
                "code": node.code,
                "name": node.name,
                "level": node.level,
                "population": node.population,
                "incidents_total": row.get("incidents_total", 0),
                HEADLINE_GROUP: row.get("incidents_by_group", {}).get(HEADLINE_GROUP, 0),
                "incidents_per_1000": row.get("incidents_per_1000"),
                "change_prev_pct": row.get("change_prev_pct"),
                "solved_rate_pct": row.get("solved_rate_pct"),
                "not_notified_pct": row.get("not_notified_pct"),
                "camera_coverage_pct": row.get("camera_coverage_pct"),
                "has_children": bool(tree.children.get(node.id)),
            }
        )
    ranked.sort(key=lambda r: (-int(r["incidents_total"] or 0), r["code"]))
    for place, row in enumerate(ranked, start=1):
        row["rank"] = place
    return {"level": level, "period": period, "rows": ranked}


def last_refresh(engine: Engine) -> dict[str, Any] | None:
    """Return the newest published aggregation run (the data the pages show), or ``None``."""
    for run in list_runs(engine, 50):
        if run["status"] == "done":
            return run
    return None


__all__ = [
    "HEADLINE_GROUP",
    "KEY_PERIOD_KINDS",
    "area_metrics",
    "combine",
    "key_figures",
    "last_refresh",
    "next_level",
    "ranking",
]
