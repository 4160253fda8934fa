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
from gridwatch.periods import Period, PeriodKind, period_of
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import AggregationRun
from gridwatch.workers import blocks
from gridwatch.workers.aggregate.incidents import CATEGORY_PREFIX
from gridwatch.workers.engine import latest_published_run_id, list_runs, read_metrics

#: Period kinds shown as key figures, in display order.
KEY_PERIOD_KINDS: tuple[PeriodKind, ...] = ("day", "week", "quarter")
#: Periods shown in a trend chart (the last one is the current, incomplete period).
TREND_PERIODS = 12
#: Size of a trend chart's SVG view box.
CHART_WIDTH, CHART_HEIGHT = 640, 220
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
    """Return the published metrics row of each of ``nodes`` for ``period``, in their order.

    Several nodes of one level (a station's townships) cost one read of that level.
    """
    if len(nodes) == 1:
        return read_metrics(engine, nodes[0].level, period, nodes[0].code)
    by_code: dict[str, dict[str, Any]] = {}
    for level in dict.fromkeys(node.level for node in nodes):
        wanted = {node.code for node in nodes if node.level == level}
        for row in read_metrics(engine, level, period):
            if row["area_code"] in wanted:
                by_code[row["area_code"]] = row
    return [by_code[node.code] for node in nodes if node.code in by_code]


def key_figures(engine: Engine, nodes: Sequence[AreaNode], today: date) -> list[dict[str, Any]]:
    """Return today's, this week's and this quarter's figures for ``nodes`` together.

    Counts are added up over ``nodes`` and the rates computed from the sums, as
    :func:`combine` does; the change is against the previous period of the same kind.
    """
    periods = [period_of(today, kind) for kind in KEY_PERIOD_KINDS]
    labels = [p.label for p in periods] + [p.previous().label for p in periods]
    counts = incident_counts(engine, nodes, labels)
    out = []
    for kind, period in zip(KEY_PERIOD_KINDS, periods, strict=True):
        now, before = counts[period.label], counts[period.previous().label]
        total = now["incidents_total"]
        prev_total = before["incidents_total"] if before["published"] else None
        out.append(
            {
                "kind": kind,
                "period": period.label,
                **{name: now[name] for name in _SUMMED},
                HEADLINE_GROUP: now["incidents_by_group"].get(HEADLINE_GROUP, 0),
                "incidents_prev": prev_total,
                "change_prev_pct": (
                    None if not prev_total else 100.0 * (total - prev_total) / prev_total
                ),
                "solved_rate_pct": _pct(now["incidents_solved"], total),
                "not_notified_pct": _pct(now["solved_not_notified"], now["incidents_solved"]),
                "night_share_pct": _pct(now["incidents_night"], total),
                "blind_spot_incident_pct": _pct(now["incidents_blind_spot"], total),
            }
        )
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


def recent_periods(today: date, kind: PeriodKind, count: int) -> list[Period]:
    """Return ``count`` periods of ``kind`` up to the one containing ``today``, oldest first."""
    period = period_of(today, kind)
    found = [period]
    for _ in range(count - 1):
        period = period.previous()
        found.append(period)
    return found[::-1]


def incident_counts(
    engine: Engine, nodes: Sequence[AreaNode], periods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Return the incidents of ``nodes`` added up, per period label, from the published run.

    Each value holds the additive counts :func:`read_metrics` publishes, read for many
    periods in one session: ``incidents_total``, ``incidents_solved``,
    ``solved_not_notified``, ``incidents_night``, ``incidents_blind_spot``,
    ``incidents_by_category`` and ``incidents_by_group``, plus ``published`` (whether the
    run has figures for the period at all). ``read_metrics`` rebuilds the area tree on every
    call (about 0.25 s on the demo county), which twenty-odd periods of a trend cannot afford.
    """
    out: dict[str, dict[str, Any]] = {
        label: {
            **dict.fromkeys(_SUMMED, 0),
            "incidents_by_category": {},
            "incidents_by_group": {},
            "published": False,
        }
        for label in periods
    }
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        run = session.get(AggregationRun, run_id) if run_id is not None else None
        if run is None:
            return out
        groups = {g: set(members) for g, members in run.extras.get("groups", {}).items()}
        for level in dict.fromkeys(node.level for node in nodes):
            ids = [node.id for node in nodes if node.level == level]
            for label in periods:
                block = blocks.read_block(session, run.id, level, label)
                if block is None:
                    continue
                rows = block.reindex(ids).fillna(0)
                found = out[label]
                found["published"] = True
                for column in rows.columns:
                    if column in _SUMMED:
                        found[column] += int(rows[column].sum())
                    elif column.startswith(CATEGORY_PREFIX):
                        count = int(rows[column].sum())
                        if count:
                            code = column[len(CATEGORY_PREFIX) :]
                            by_category = found["incidents_by_category"]
                            by_category[code] = by_category.get(code, 0) + count
    for found in out.values():
        found["incidents_by_group"] = {
            g: sum(n for c, n in found["incidents_by_category"].items() if c in members)
            for g, members in groups.items()
        }
    return out


def area_counts(
    engine: Engine, nodes: Sequence[AreaNode], periods: Sequence[str], columns: Sequence[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """Return additive counts (``columns``) per period label and area code, from the run.

    Like :func:`incident_counts`, one session for every period; areas or periods the
    published run has no figures for count zero.
    """
    out = {label: {node.code: dict.fromkeys(columns, 0) for node in nodes} for label in periods}
    with session_scope(engine) as session:
        run_id = latest_published_run_id(session)
        if run_id is None:
            return out
        for level in dict.fromkeys(node.level for node in nodes):
            chosen = [node for node in nodes if node.level == level]
            for label in periods:
                block = blocks.read_block(session, run_id, level, label)
                if block is None:
                    continue
                rows = block.reindex([node.id for node in chosen]).fillna(0)
                for column in columns:
                    if column not in rows:
                        continue
                    for node, value in zip(chosen, rows[column].to_numpy(), strict=True):
                        out[label][node.code][column] = int(value)
    return out


def trend(
    engine: Engine,
    nodes: Sequence[AreaNode],
    today: date,
    kind: PeriodKind = "week",
    count: int = TREND_PERIODS,
) -> list[dict[str, Any]]:
    """Return all incidents and the headline group (两抢一盗) per period, oldest first.

    The figures of ``nodes`` are added up; the last period is the current, incomplete one.
    """
    periods = recent_periods(today, kind, count)
    counts = incident_counts(engine, nodes, [p.label for p in periods])
    return [
        {
            "period": period.label,
            "total": counts[period.label]["incidents_total"],
            HEADLINE_GROUP: counts[period.label]["incidents_by_group"].get(HEADLINE_GROUP, 0),
            "current": period.start <= today < period.end,
        }
        for period in periods
    ]


def nice_ceiling(value: float) -> int:
    """Return the smallest of 1, 2, 5, 10, 20, 50 … that is at least ``value`` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def line_chart(
    points: Sequence[dict[str, Any]],
    series: Sequence[str],
    width: int = CHART_WIDTH,
    height: int = CHART_HEIGHT,
) -> dict[str, Any]:
    """Return the geometry of a line chart of ``series`` (keys of ``points``), for inline SVG.

    Plain numbers only: the template draws the polylines, axis and labels, so the page needs
    no chart script and no inline style.

    Parameters
    ----------
    points : sequence of dict
        One dict per period, oldest first, with ``period`` and a count under each series key.
    series : sequence of str
        Keys of the lines to draw, in drawing order.
    width, height : int
        Size of the SVG view box.

    Returns
    -------
    dict
        ``width``, ``height``, ``left``, ``right``, ``top``, ``bottom`` (plot edges),
        ``ticks`` (``value``, ``y``), ``labels`` (``text``, ``x``, one per period, every other
        one blanked when there are many), and ``lines``: per series its ``key``, the SVG
        ``points`` of the complete periods, ``partial`` (the segment into a point marked
        ``current``, or empty) and the ``dots`` (``x``, ``y``, ``value`` and the point's keys).
    """
    left, right, top, bottom = 40, width - 12, 14, height - 26
    peak = max([int(p.get(key) or 0) for p in points for key in series] + [0])
    ceiling = nice_ceiling(peak)
    step = (right - left) / max(len(points) - 1, 1)

    def y_of(value: float) -> float:
        return round(bottom - (bottom - top) * value / ceiling, 1)

    xs = [round(left + i * step, 1) for i in range(len(points))]
    lines = []
    for key in series:
        dots = [
            {"x": x, "y": y_of(int(p.get(key) or 0)), "value": int(p.get(key) or 0), **p}
            for x, p in zip(xs, points, strict=True)
        ]
        # The current period is still running: its segment is drawn apart (dashed), so a
        # half-counted week does not read as a fall.
        whole = dots[:-1] if dots and dots[-1].get("current") else dots
        partial = dots[-2:] if len(whole) < len(dots) and len(dots) > 1 else []
        lines.append(
            {
                "key": key,
                "points": " ".join(f"{d['x']},{d['y']}" for d in whole),
                "partial": " ".join(f"{d['x']},{d['y']}" for d in partial),
                "dots": dots,
            }
        )
    every = 1 if len(points) <= 13 else 2
    labels = [
        {
            "x": x,
            "text": _short_label(str(p["period"])) if i % every == 0 else "",
        }
        for i, (x, p) in enumerate(zip(xs, points, strict=True))
    ]
    ticks = [{"value": v, "y": y_of(v)} for v in sorted({0, ceiling // 2, ceiling})]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "ticks": ticks,
        "labels": labels,
        "lines": lines,
    }


def _short_label(label: str) -> str:
    """``2026-W47`` → ``W47``, ``2026-11`` → ``11``, ``2026Q3`` → ``Q3``."""
    if "-" in label:
        return label.rsplit("-", 1)[1]
    return label[4:] or label


def last_refresh(engine: Engine) -> dict[str, Any] | None:
    """Return the newest published aggregation run (the data the pages show), or ``None``."""
    for run in list_runs(engine, 50):
        if run["status"] == "done":
            return run
    return None


__all__ = [
    "CHART_HEIGHT",
    "CHART_WIDTH",
    "HEADLINE_GROUP",
    "KEY_PERIOD_KINDS",
    "TREND_PERIODS",
    "area_counts",
    "area_metrics",
    "combine",
    "incident_counts",
    "key_figures",
    "last_refresh",
    "line_chart",
    "next_level",
    "nice_ceiling",
    "ranking",
    "recent_periods",
    "trend",
]
