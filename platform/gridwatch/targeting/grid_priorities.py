"""Priority index per grid: where inside a village the survey's complaint is on the ground.

The survey is answered per village, so a grid inherits its village's security shortfall and
top dissatisfaction factor; what is the grid's own is where that factor's incidents, their
rise, the blind-spot incidents and the victims not told actually are. Components and weights
are the village index's (:func:`gridwatch.targeting.linkage.priorities`), and a component
counts only where its association with security holds at village level. At grid level the
ground components are *counts* (incidents of the top factor, their change on last quarter in
incidents, incidents no camera saw, solved cases whose victim was not told): a grid is where a
team goes, and two incidents in a grid of 40 residents are not a rate of 50 per 1,000.
"""

from __future__ import annotations

from typing import Any

from scipy.stats import rankdata
from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period
from gridwatch.targeting.ladder import accountability_rules
from gridwatch.targeting.linkage import (
    DEFAULT_REPLICATES,
    DEFAULT_SEED,
    PRIORITY_COMPONENTS,
    MetricReader,
    factor_map_for,
    priorities,
)
from gridwatch.taxonomy import load_taxonomy


def _percentiles(values: list[float]) -> list[float]:
    if not values:
        return []
    ranks = rankdata(values)
    return [float(r) / len(values) for r in ranks]


def _descends_from(tree: AreaTree, code: str, ancestor: str | None) -> bool:
    if ancestor is None:
        return True
    node = tree.by_code.get(code)
    while node is not None:
        if node.code == ancestor:
            return True
        node = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
    return False


def explain_grid(facts: dict[str, Any], red_line_pct: float) -> str:
    """Write one grid's situation as a Chinese sentence with its numbers.

    Example: ``东村第1网格(东村,村安全感 78.5%,低于80%红线,首要不满意因素 两抢一盗):两抢一盗警情
    12 起,上季度 5 起;夜间发案占 60%;7 起发生在监控盲区;巡逻每周约 0.5 次;2 起已破案件未回访。``
    """
    head = [facts["village_name"], f"村安全感 {facts['security_pct']:.1f}%"]
    if facts["security_pct"] < red_line_pct:
        head.append(f"低于{red_line_pct:g}%红线")
    if facts.get("top_factor"):
        head.append(f"首要不满意因素 {facts['top_factor']}")
    parts = []
    text = f"{facts['incidents_label']}警情 {facts['factor_incidents']} 起"
    if facts.get("factor_incidents_prev") is not None:
        text += f",上季度 {facts['factor_incidents_prev']} 起"
    parts.append(text)
    if facts.get("night_share_pct") is not None:
        parts.append(f"夜间发案占 {facts['night_share_pct']:.0f}%")
    if facts.get("blind_spot_incidents"):
        parts.append(f"{facts['blind_spot_incidents']} 起发生在监控盲区")
    if facts.get("patrol_visits_per_week") is not None:
        parts.append(f"巡逻每周约 {facts['patrol_visits_per_week']:.1f} 次")
    if facts.get("not_notified"):
        parts.append(f"{facts['not_notified']} 起已破案件未回访")
    return f"{facts['grid_name']}({','.join(head)}):" + ";".join(parts) + "。"


def grid_priorities(
    engine: Engine,
    settings: Settings,
    quarter: str,
    area_code: str | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    tree: AreaTree | None = None,
    village_result: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rank the grids of surveyed villages by a priority index for ``quarter``.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    settings : Settings
    quarter : str
        Survey wave, e.g. ``2026Q3``.
    area_code : str, optional
        Only grids inside this area (a township or village); percentiles are still taken
        over the whole county, so an index means the same everywhere.
    replicates, seed : int
        For the village-level associations that decide which components count.
    tree : AreaTree, optional
    village_result : dict, optional
        A :func:`~gridwatch.targeting.linkage.priorities` result for the same quarter
        (computed when not given).

    Returns
    -------
    dict
        ``period, level`` (``grid``), ``components`` (the village index's, with ``used``) and
        ``rows``: ``rank, area_code, area_name, village_code, village_name, township_code,
        priority_index, village_priority_index, security_pct, top_factor, levers, counts,
        explanation``, highest first.
    """
    rules = accountability_rules(settings)
    fmap = factor_map_for(settings)
    taxonomy = load_taxonomy(settings.categories_file)
    tree = tree or load_tree(engine)
    label = parse_period(quarter).label
    villages = village_result or priorities(
        engine, settings, label, "village", replicates, seed, tree
    )
    used = {c["name"]: bool(c["used"]) for c in villages["components"]}
    by_village = {r["area_code"]: r for r in villages["rows"]}
    reader = MetricReader(engine)
    current = reader.get("grid", label)
    previous = reader.get("grid", parse_period(label).previous().label)
    period = parse_period(label)
    weeks = (period.end - period.start).days / 7.0
    has_patrols = any(m.get("patrol_visits") for m in current.values())
    entries = []
    for code, metrics in sorted(current.items()):
        village = by_village.get(str(metrics.get("parent_code")))
        if village is None:
            continue
        top = village["top_factor"]
        link = fmap.factors.get(top["code"]) if top else None
        prev = previous.get(code)
        if link is not None and (link.categories or link.groups):
            label_zh = link.label(taxonomy)
            count = link.incidents(metrics, taxonomy) or 0
            prev_count = None if prev is None else link.incidents(prev, taxonomy) or 0
        else:
            # A factor about the service itself (见警率低 …): all incidents stand in.
            label_zh = "全部"
            count = int(metrics.get("incidents_total") or 0)
            prev_count = None if prev is None else int(prev.get("incidents_total") or 0)
        counts = {
            "security_shortfall": -float(village["security_pct"]),
            "factor_incidents": float(count),
            "factor_trend": float(count - prev_count) if prev_count is not None else 0.0,
            "blind_spot": float(metrics.get("incidents_blind_spot") or 0),
            "not_notified": float(metrics.get("solved_not_notified") or 0),
        }
        node = tree.by_code.get(code)
        incidents_total = int(metrics.get("incidents_total") or 0)
        facts = {
            "grid_name": node.name if node else code,
            "village_name": village["area_name"],
            "security_pct": float(village["security_pct"]),
            "top_factor": top["name"] if top else None,
            "incidents_label": label_zh,
            "factor_incidents": count,
            "factor_incidents_prev": prev_count,
            "night_share_pct": metrics.get("night_share_pct") if incidents_total else None,
            "blind_spot_incidents": int(metrics.get("incidents_blind_spot") or 0),
            "patrol_visits_per_week": (
                float(metrics.get("patrol_visits") or 0.0) / weeks
                if has_patrols and weeks > 0
                else None
            ),
            "not_notified": int(metrics.get("solved_not_notified") or 0),
        }
        entries.append((code, village, counts, facts))
    percentiles = {
        name: _percentiles([e[2][name] for e in entries]) for name in PRIORITY_COMPONENTS
    }
    out = []
    for position, (code, village, _counts, facts) in enumerate(entries):
        if not _descends_from(tree, code, area_code):
            continue
        total = 0.0
        weight_sum: float = 0.0
        for name in PRIORITY_COMPONENTS:
            weight = fmap.weights.get(name, 0.0)
            if used.get(name) and weight > 0:
                total += weight * percentiles[name][position]
                weight_sum += weight
        township = tree.by_code.get(str(village.get("parent_code")))
        out.append(
            {
                "area_code": code,
                "area_name": facts["grid_name"],
                "village_code": village["area_code"],
                "village_name": village["area_name"],
                "township_code": township.code if township else village.get("parent_code"),
                "priority_index": round(100.0 * total / weight_sum, 1) if weight_sum else 0.0,
                "village_priority_index": village["priority_index"],
                "security_pct": village["security_pct"],
                "below_red_line": village["security_pct"] < rules.red_line_pct,
                "top_factor": village["top_factor"],
                "levers": village["levers"],
                "counts": {
                    "factor_incidents": facts["factor_incidents"],
                    "factor_incidents_prev": facts["factor_incidents_prev"],
                    "blind_spot_incidents": facts["blind_spot_incidents"],
                    "not_notified": facts["not_notified"],
                    "night_share_pct": facts["night_share_pct"],
                    "patrol_visits_per_week": (
                        None
                        if facts["patrol_visits_per_week"] is None
                        else round(facts["patrol_visits_per_week"], 2)
                    ),
                },
                "explanation": explain_grid(facts, rules.red_line_pct),
            }
        )
    out.sort(key=lambda r: (-r["priority_index"], r["security_pct"], r["area_code"]))
    for place, entry in enumerate(out, start=1):
        entry["rank"] = place
    return {
        "period": label,
        "level": "grid",
        "area_code": area_code,
        "components": villages["components"],
        "rows": out,
    }
