"""Linking dissatisfaction to the ground: factor map, survey-to-metric association, priorities.

Each dissatisfaction factor maps (``gridwatch/data/factor_map.yaml``) to incident categories
and to the levers a township can pull. For every area and quarter the survey figures are put
next to the published grid metrics of that quarter and the one before; Spearman rank
correlations across areas and quarters, with a bootstrap interval that resamples whole areas,
say how far each metric tracks the sense of security. The priority index ranks villages by
their survey shortfall and by those ground signals whose association holds, and explains
itself in a Chinese sentence with the numbers behind it.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr
from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period
from gridwatch.targeting.indicators import indicator_table, survey_periods
from gridwatch.targeting.ladder import accountability_rules
from gridwatch.targeting.rules import AccountabilityRules, RulesError, read_yaml_mapping
from gridwatch.taxonomy import Taxonomy, load_survey_factors, load_taxonomy

LEVERS = ("cameras", "night_patrol", "patrol_dosage", "publicity", "case_follow_up")
PRIORITY_COMPONENTS = (
    "security_shortfall",
    "factor_incidents",
    "factor_trend",
    "blind_spot",
    "not_notified",
)
DEFAULT_REPLICATES = 500
DEFAULT_SEED = 20261

#: Grid metrics compared with the survey, and the sign their correlation with security
#: should have if the domain brief is right (more crime, blind spots → less secure).
LINK_METRICS: dict[str, int] = {
    "incidents_per_1000": -1,
    "two_robberies_one_theft_per_1000": -1,
    "vice_per_1000": -1,
    "blind_spot_incident_pct": -1,
    "camera_coverage_pct": 1,
    "patrol_minutes_per_1000": 1,
    "not_notified_pct": -1,
    "night_share_pct": -1,
    "change_prev_pct": -1,
}
#: Expected sign of each priority component's correlation with security (all "worse" = up).
COMPONENT_SIGN = {
    "factor_incidents": -1,
    "factor_trend": -1,
    "blind_spot": -1,
    "not_notified": -1,
}


@dataclass(frozen=True)
class FactorLink:
    """What one dissatisfaction factor relates to on the ground."""

    code: str
    categories: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    levers: tuple[str, ...] = ()

    def incidents(self, metrics: dict[str, Any], taxonomy: Taxonomy) -> int | None:
        """Return the area's incidents in this factor's categories (``None``: no categories)."""
        if not self.categories and not self.groups:
            return None
        codes = set(self.categories)
        for group in self.groups:
            codes.update(taxonomy.in_group(group))
        by_category = metrics.get("incidents_by_category") or {}
        return int(sum(int(by_category.get(code, 0)) for code in codes))

    def label(self, taxonomy: Taxonomy) -> str:
        """Return the Chinese name of the incidents this factor maps to."""
        names = [taxonomy.groups[g].get("zh", g) for g in self.groups]
        names += [taxonomy.categories[c].zh for c in self.categories]
        return "、".join(names)


@dataclass(frozen=True)
class FactorMap:
    """The configured factor map, lever names and priority weights."""

    factors: dict[str, FactorLink]
    levers: dict[str, str]
    weights: dict[str, float] = field(default_factory=dict)


@lru_cache(maxsize=8)
def load_factor_map(
    path: Path | None = None,
    categories_file: Path | None = None,
    survey_factors_file: Path | None = None,
) -> FactorMap:
    """Load the factor map and check it against the taxonomy and the factor list.

    Raises
    ------
    RulesError
        For an unknown factor, category, group or lever, or a bad weight.
    """
    data, source = read_yaml_mapping(path, "factor_map.yaml")
    taxonomy = load_taxonomy(categories_file)
    known_factors = load_survey_factors(survey_factors_file)
    levers_raw = data.get("levers") or {}
    if not isinstance(levers_raw, dict) or not levers_raw:
        raise RulesError(f"{source}: no 'levers' mapping")
    levers = {
        str(code): str((spec or {}).get("zh", code)) if isinstance(spec, dict) else str(code)
        for code, spec in levers_raw.items()
    }
    raw = data.get("factors") or {}
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: 'factors' must be a mapping")
    factors: dict[str, FactorLink] = {}
    for code, spec in raw.items():
        if str(code) not in known_factors:
            raise RulesError(f"{source}: {code!r} is not a survey factor")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise RulesError(f"{source}: factor {code!r} must be a mapping")
        values = {}
        for key in ("categories", "groups", "levers"):
            items = spec.get(key) or []
            if not isinstance(items, list):
                raise RulesError(f"{source}: {key} of factor {code!r} must be a list")
            values[key] = tuple(str(i) for i in items)
        for category in values["categories"]:
            if category not in taxonomy.categories:
                raise RulesError(f"{source}: factor {code!r} names unknown category {category!r}")
        for group in values["groups"]:
            if group not in taxonomy.groups:
                raise RulesError(f"{source}: factor {code!r} names unknown group {group!r}")
        for lever in values["levers"]:
            if lever not in levers:
                raise RulesError(f"{source}: factor {code!r} names unknown lever {lever!r}")
        factors[str(code)] = FactorLink(str(code), **values)
    for code in known_factors:
        factors.setdefault(code, FactorLink(code))
    weights_raw = data.get("priority") or {}
    if not isinstance(weights_raw, dict):
        raise RulesError(f"{source}: 'priority' must be a mapping of component to weight")
    weights = {}
    for name, value in weights_raw.items():
        if name not in PRIORITY_COMPONENTS:
            raise RulesError(
                f"{source}: unknown priority component {name!r}; "
                f"use {', '.join(PRIORITY_COMPONENTS)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise RulesError(f"{source}: weight of {name} must be a number ≥ 0")
        weights[str(name)] = float(value)
    return FactorMap(factors=factors, levers=levers, weights=weights)


def factor_map_for(settings: Settings) -> FactorMap:
    """Return the factor map configured for ``settings``."""
    return load_factor_map(
        settings.factor_map_file, settings.categories_file, settings.survey_factors_file
    )


# --------------------------------------------------------------------------------------------
# Survey figures next to grid metrics
# --------------------------------------------------------------------------------------------


def _per_1000(count: float | None, population: int | None) -> float | None:
    if count is None or not population:
        return None
    return 1000.0 * float(count) / float(population)


def link_values(metrics: dict[str, Any], population: int | None) -> dict[str, float | None]:
    """Return the metrics compared with the survey (see :data:`LINK_METRICS`) for one area."""
    groups = metrics.get("incidents_by_group") or {}
    return {
        "incidents_per_1000": metrics.get("incidents_per_1000"),
        "two_robberies_one_theft_per_1000": _per_1000(
            groups.get("two_robberies_one_theft"), population
        ),
        "vice_per_1000": _per_1000(groups.get("vice"), population),
        "blind_spot_incident_pct": metrics.get("blind_spot_incident_pct"),
        "camera_coverage_pct": metrics.get("camera_coverage_pct"),
        "patrol_minutes_per_1000": _per_1000(metrics.get("patrol_minutes"), population),
        "not_notified_pct": metrics.get("not_notified_pct"),
        "night_share_pct": metrics.get("night_share_pct"),
        "change_prev_pct": metrics.get("change_prev_pct"),
    }


class MetricReader:
    """Published metrics per (level, period), read once and keyed by area code."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def get(self, level: str, period: str) -> dict[str, dict[str, Any]]:
        """Return area code → metrics (empty when no run has data for the period)."""
        key = (level, period)
        if key not in self._cache:
            from gridwatch.workers.engine import read_metrics

            rows = read_metrics(self.engine, level, period)
            has_data = any(r.get("run_id") is not None for r in rows) and any(
                r.get("incidents_total") for r in rows
            )
            self._cache[key] = {r["area_code"]: r for r in rows} if has_data else {}
        return self._cache[key]


def linked_rows(
    engine: Engine,
    settings: Settings,
    level: str,
    quarters: Sequence[str] | None = None,
    tree: AreaTree | None = None,
    reader: MetricReader | None = None,
) -> list[dict[str, Any]]:
    """Put each area's survey figures next to its metrics of the quarter and the one before.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    settings : Settings
    level : str
        ``village`` or ``township`` (any level with survey figures and metrics).
    quarters : sequence of str, optional
        Survey quarters to link (default: every quarterly wave).
    tree : AreaTree, optional
    reader : MetricReader, optional
        Shared metric cache.

    Returns
    -------
    list of dict
        One row per area and quarter that has both survey figures and metrics: ``area_code,
        area_name, period, respondents, security_pct`` (with ``ci_low``/``ci_high``),
        ``satisfaction_pct, awareness_pct, participation_pct, top_factor, metrics`` (this
        quarter), ``metrics_prev`` (the quarter before; empty when unknown) and the raw
        metric objects under ``_metrics`` / ``_metrics_prev``.
    """
    tree = tree or load_tree(engine)
    reader = reader or MetricReader(engine)
    rules = accountability_rules(settings)
    names = {f.code: f.zh for f in load_survey_factors(settings.survey_factors_file).values()}
    labels = [p for p in (quarters or survey_periods(engine)) if parse_period(p).kind == "quarter"]
    table = indicator_table(engine, level, labels, names, rules.quality, "auto", tree)
    out = []
    for label in labels:
        current = reader.get(level, label)
        if not current:
            continue
        previous = reader.get(level, parse_period(label).previous().label)
        for row in table[label]:
            metrics = current.get(row["area_code"])
            if metrics is None or row.get("security_pct") is None:
                continue
            node = tree.by_code[row["area_code"]]
            prev = previous.get(row["area_code"])
            top = row["factors"][0] if row["factors"] else None
            out.append(
                {
                    "area_code": row["area_code"],
                    "area_name": row["area_name"],
                    "parent_code": metrics.get("parent_code"),
                    "period": label,
                    "source": row["source"],
                    "respondents": row.get("respondents"),
                    "security_pct": row["security_pct"],
                    "ci_low": row.get("security_ci_low"),
                    "ci_high": row.get("security_ci_high"),
                    "satisfaction_pct": row.get("satisfaction_pct"),
                    "awareness_pct": row.get("awareness_pct"),
                    "participation_pct": row.get("participation_pct"),
                    "quality_flags": row["quality"]["flags"],
                    "top_factor": top,
                    "factors": row["factors"],
                    "metrics": _rounded(link_values(metrics, node.population)),
                    "metrics_prev": (
                        _rounded(link_values(prev, node.population)) if prev is not None else {}
                    ),
                    "_metrics": metrics,
                    "_metrics_prev": prev,
                }
            )
    return out


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(float(v), 3) for k, v in values.items()}


# --------------------------------------------------------------------------------------------
# Association
# --------------------------------------------------------------------------------------------


def strength_of(rho: float) -> str:
    """Describe a rank correlation's size (negligible, weak, moderate, strong)."""
    size = abs(rho)
    if size < 0.1:
        return "negligible"
    if size < 0.3:
        return "weak"
    if size < 0.5:
        return "moderate"
    return "strong"


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks, tied values sharing their mean rank.

    ``scipy.stats.rankdata(values)`` (method ``average``) without its per-call overhead, which
    dominated the bootstrap; the ranks are whole or half numbers, so exactly the same.
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values), dtype=float)
    ranks[order] = np.repeat(starts + 1 + (counts - 1) / 2.0, counts)
    return ranks


def spearman_with_ci(
    x: Sequence[float | None],
    y: Sequence[float | None],
    clusters: Sequence[str],
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    expected_sign: int | None = None,
) -> dict[str, Any]:
    """Spearman's rank correlation with a cluster-bootstrap 95 % interval.

    Rows of the same cluster (one area over several quarters) are resampled together, since
    they are not independent observations.

    Returns
    -------
    dict
        ``rho, ci_low, ci_high, n, areas, strength`` and ``holds``: the interval excludes zero
        (on the ``expected_sign`` side when one is given). ``rho`` is ``None`` with fewer than
        five complete pairs or no variation.
    """
    xs = np.array([np.nan if v is None else float(v) for v in x])
    ys = np.array([np.nan if v is None else float(v) for v in y])
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    groups = np.array(list(clusters), dtype=object)[keep]
    empty = {
        "rho": None,
        "ci_low": None,
        "ci_high": None,
        "n": int(keep.sum()),
        "areas": len(set(groups.tolist())),
        "strength": None,
        "holds": False,
    }
    if len(xs) < 5 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return empty
    rho = float(spearmanr(xs, ys).statistic)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(unique))]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(replicates):
        chosen = rng.integers(0, len(unique), len(unique))
        index = np.concatenate([members[k] for k in chosen])
        bx, by = xs[index], ys[index]
        if np.ptp(bx) == 0 or np.ptp(by) == 0:
            continue
        rx, ry = average_ranks(bx), average_ranks(by)
        draws.append(float(np.corrcoef(rx, ry)[0, 1]))
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5])) if draws else (rho, rho)
    if expected_sign is None:
        holds = low > 0 or high < 0
    else:
        holds = (low > 0) if expected_sign > 0 else (high < 0)
    return {
        "rho": round(rho, 3),
        "ci_low": round(low, 3),
        "ci_high": round(high, 3),
        "n": int(len(xs)),
        "areas": len(unique),
        "strength": strength_of(rho),
        "holds": bool(holds),
    }


def associations(
    rows: Sequence[dict[str, Any]],
    survey_field: str = "security_pct",
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """Rank-correlate a survey figure with each link metric, this quarter's and last quarter's.

    Returns
    -------
    list of dict
        One per metric and lag (``lag`` 0: same quarter, 1: the quarter before) with the
        fields of :func:`spearman_with_ci` and the ``expected_sign``.
    """
    out = []
    survey = [r.get(survey_field) for r in rows]
    clusters = [r["area_code"] for r in rows]
    for lag, key in ((0, "metrics"), (1, "metrics_prev")):
        for metric, sign in LINK_METRICS.items():
            values = [r[key].get(metric) if r[key] else None for r in rows]
            result = spearman_with_ci(values, survey, clusters, replicates, seed, sign)
            out.append(
                {
                    "survey": survey_field,
                    "metric": metric,
                    "lag": lag,
                    "expected_sign": sign,
                    **result,
                }
            )
    return out


# --------------------------------------------------------------------------------------------
# Priority index
# --------------------------------------------------------------------------------------------


@dataclass
class PriorityFacts:
    """The numbers one area's explanation is written from (``None``: not known)."""

    area_name: str
    security_pct: float
    half_width: float | None = None
    top_factor: str | None = None
    top_factor_share_pct: float | None = None
    incidents_label: str | None = None
    factor_incidents: int | None = None
    factor_incidents_prev: int | None = None
    concentrated_in: list[str] = field(default_factory=list)
    concentrated_share_pct: float | None = None
    night_share_pct: float | None = None
    blind_spot_pct: float | None = None
    patrol_visits_per_week: float | None = None
    not_notified_pct: float | None = None


def explain_priority(facts: PriorityFacts, red_line_pct: float, target_pct: float) -> str:
    """Write one area's situation as a Chinese sentence with its numbers.

    Example: ``东村:安全感 78.5%(±4.1,低于80%红线);首要不满意因素 两抢一盗(61%);两抢一盗
    警情 27 起,较上季度 +35%,其中 70% 集中在 东村第1网格、东村第2网格;夜间发案占 55%;
    58% 的警情发生在监控盲区;巡逻每周约 2.0 次。``
    """
    notes = [] if facts.half_width is None else [f"±{facts.half_width:.1f}"]
    if facts.security_pct < red_line_pct:
        notes.append(f"低于{red_line_pct:g}%红线")
    elif facts.security_pct < target_pct:
        notes.append(f"未达{target_pct:g}%目标")
    head = f"{facts.area_name}:安全感 {facts.security_pct:.1f}%"
    parts = [head + (f"({','.join(notes)})" if notes else "")]
    if facts.top_factor:
        share = (
            f"({facts.top_factor_share_pct:.0f}%)"
            if facts.top_factor_share_pct is not None
            else ""
        )
        parts.append(f"首要不满意因素 {facts.top_factor}{share}")
    if facts.incidents_label and facts.factor_incidents is not None:
        text = f"{facts.incidents_label}警情 {facts.factor_incidents} 起"
        prev = facts.factor_incidents_prev
        if prev:
            text += f",较上季度 {100.0 * (facts.factor_incidents - prev) / prev:+.0f}%"
        elif prev == 0 and facts.factor_incidents:
            text += ",上季度为 0 起"
        if facts.concentrated_in and facts.concentrated_share_pct is not None:
            text += f",其中 {facts.concentrated_share_pct:.0f}% 集中在 " + "、".join(
                facts.concentrated_in
            )
        parts.append(text)
    if facts.night_share_pct is not None:
        parts.append(f"夜间发案占 {facts.night_share_pct:.0f}%")
    if facts.blind_spot_pct is not None:
        parts.append(f"{facts.blind_spot_pct:.0f}% 的警情发生在监控盲区")
    if facts.patrol_visits_per_week is not None:
        parts.append(f"巡逻每周约 {facts.patrol_visits_per_week:.1f} 次")
    if facts.not_notified_pct:
        parts.append(f"{facts.not_notified_pct:.0f}% 的已破案件未回访")
    return ";".join(parts) + "。"


def _components(
    row: dict[str, Any], fmap: FactorMap, taxonomy: Taxonomy, population: int | None
) -> dict[str, float | None]:
    metrics = row["_metrics"] or {}
    prev = row["_metrics_prev"]
    top = row["top_factor"]
    link = fmap.factors.get(top["code"]) if top else None
    count = link.incidents(metrics, taxonomy) if link else None
    if count is None:
        # A factor about the service itself (见警率低 …): all incidents stand in.
        count = int(metrics.get("incidents_total") or 0)
        prev_count = None if prev is None else int(prev.get("incidents_total") or 0)
    else:
        prev_count = None if prev is None or link is None else link.incidents(prev, taxonomy)
    trend = None if prev_count is None else 100.0 * (count - prev_count) / max(prev_count, 1)
    return {
        "security_shortfall": -float(row["security_pct"]),
        "factor_incidents": _per_1000(count, population),
        "factor_trend": trend,
        "blind_spot": metrics.get("blind_spot_incident_pct"),
        "not_notified": metrics.get("not_notified_pct"),
    }


def _percentiles(values: list[float | None]) -> list[float | None]:
    present = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    out: list[float | None] = [None] * len(values)
    if not present:
        return out
    ranks = rankdata([values[i] for i in present])
    for i, r in zip(present, ranks, strict=True):
        out[i] = float(r) / len(present)
    return out


def _child_level(levels: Sequence[str], level: str) -> str | None:
    if level not in levels:
        return None
    index = list(levels).index(level)
    return levels[index + 1] if index + 1 < len(levels) else None


def priorities(
    engine: Engine,
    settings: Settings,
    quarter: str,
    level: str = "village",
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Rank the areas of ``level`` by a priority index for ``quarter``, with explanations.

    The index (0–100) is a weighted mean of percentile ranks across the quarter's areas: the
    survey shortfall always, and each ground component (incidents in the top factor's
    categories per 1,000, their change on last quarter, blind-spot share, victims not told)
    only while its rank correlation with security across areas and quarters holds.

    Returns
    -------
    dict
        ``period, level, components`` (weight, whether used, its association) and ``rows``
        (``rank, area_code, area_name, parent_code, priority_index, security_pct, ci_low,
        ci_high, below_red_line, top_factor, levers, components, explanation``), highest first.
        Built once per published run, import and survey data and kept where every process
        finds it (:mod:`gridwatch.targeting.survey_results`): the grid priorities, each
        township's plan and route planning's patrol-focus grids all start from it.
    """
    from gridwatch.targeting.survey_results import kept_result

    label = parse_period(quarter).label
    found = kept_result(
        engine,
        settings,
        "linkage.priorities",
        (label, level, replicates, seed),
        lambda: _priorities(engine, settings, label, level, replicates, seed, tree),
    )
    # Every caller gets a copy of its own (the kept value is shared within a process).
    copied: dict[str, Any] = pickle.loads(pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL))
    return copied


def _priorities(
    engine: Engine,
    settings: Settings,
    quarter: str,
    level: str,
    replicates: int,
    seed: int,
    tree: AreaTree | None,
) -> dict[str, Any]:
    rules: AccountabilityRules = accountability_rules(settings)
    fmap = factor_map_for(settings)
    taxonomy = load_taxonomy(settings.categories_file)
    tree = tree or load_tree(engine)
    reader = MetricReader(engine)
    label = parse_period(quarter).label
    rows = linked_rows(engine, settings, level, None, tree, reader)
    population = {r["area_code"]: tree.by_code[r["area_code"]].population for r in rows}
    values = [_components(r, fmap, taxonomy, population[r["area_code"]]) for r in rows]
    clusters = [r["area_code"] for r in rows]
    security = [r["security_pct"] for r in rows]
    components = []
    used: dict[str, bool] = {}
    for name in PRIORITY_COMPONENTS:
        weight = fmap.weights.get(name, 0.0)
        if name == "security_shortfall":
            association = None
            used[name] = weight > 0
        else:
            association = spearman_with_ci(
                [v[name] for v in values],
                security,
                clusters,
                replicates,
                seed,
                COMPONENT_SIGN[name],
            )
            used[name] = weight > 0 and bool(association["holds"])
        components.append(
            {"name": name, "weight": weight, "used": used[name], "association": association}
        )
    chosen = [i for i, r in enumerate(rows) if r["period"] == label]
    percentiles = {
        name: _percentiles([values[i][name] for i in chosen]) for name in PRIORITY_COMPONENTS
    }
    child_level = _child_level(settings.area_levels, level)
    children: dict[str, list[dict[str, Any]]] = {}
    if child_level:
        for child in reader.get(child_level, label).values():
            children.setdefault(str(child.get("parent_code")), []).append(child)
    period = parse_period(label)
    weeks = (period.end - period.start).days / 7.0
    has_patrols = any((rows[i]["_metrics"] or {}).get("patrol_visits") for i in chosen)
    out = []
    for position, i in enumerate(chosen):
        row = rows[i]
        total = weight_sum = 0.0
        for name in PRIORITY_COMPONENTS:
            pct = percentiles[name][position]
            if used[name] and pct is not None:
                total += fmap.weights[name] * pct
                weight_sum += fmap.weights[name]
        index = 100.0 * total / weight_sum if weight_sum else 0.0
        facts = _facts(row, fmap, taxonomy, children, tree, weeks, has_patrols)
        top = row["top_factor"]
        link = fmap.factors.get(top["code"]) if top else None
        out.append(
            {
                "area_code": row["area_code"],
                "area_name": row["area_name"],
                "parent_code": row["parent_code"],
                "priority_index": round(index, 1),
                "security_pct": row["security_pct"],
                "ci_low": row["ci_low"],
                "ci_high": row["ci_high"],
                "below_red_line": row["security_pct"] < rules.red_line_pct,
                "top_factor": top,
                "levers": [
                    {"code": lever, "name": fmap.levers[lever]}
                    for lever in (link.levers if link else ())
                ],
                "components": {k: _round_or_none(v) for k, v in values[i].items()},
                "explanation": explain_priority(facts, rules.red_line_pct, rules.target_pct),
            }
        )
    out.sort(key=lambda r: (-r["priority_index"], r["security_pct"], r["area_code"]))
    for place, entry in enumerate(out, start=1):
        entry["rank"] = place
    return {"period": label, "level": level, "components": components, "rows": out}


def _round_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 2)


def _facts(
    row: dict[str, Any],
    fmap: FactorMap,
    taxonomy: Taxonomy,
    children: dict[str, list[dict[str, Any]]],
    tree: AreaTree,
    weeks: float,
    has_patrols: bool,
) -> PriorityFacts:
    metrics = row["_metrics"] or {}
    prev = row["_metrics_prev"]
    top = row["top_factor"]
    link = fmap.factors.get(top["code"]) if top else None
    half = None
    if row["ci_low"] is not None and row["ci_high"] is not None:
        half = (row["ci_high"] - row["ci_low"]) / 2.0
    facts = PriorityFacts(
        area_name=row["area_name"],
        security_pct=float(row["security_pct"]),
        half_width=half,
        top_factor=top["name"] if top else None,
        top_factor_share_pct=top["share_pct"] if top else None,
    )
    total = int(metrics.get("incidents_total") or 0)
    if link is not None and (link.categories or link.groups):
        facts.incidents_label = link.label(taxonomy)
        facts.factor_incidents = link.incidents(metrics, taxonomy)
        facts.factor_incidents_prev = None if prev is None else link.incidents(prev, taxonomy)
        counts = []
        for child in children.get(row["area_code"], []):
            n = link.incidents(child, taxonomy) or 0
            node = tree.by_code.get(child["area_code"])
            counts.append((n, node.name if node else child["area_code"]))
        counts.sort(key=lambda c: (-c[0], c[1]))
        if facts.factor_incidents and len(counts) > 2 and counts[0][0] > 0:
            top_children = [c for c in counts[:2] if c[0] > 0]
            facts.concentrated_in = [name for _, name in top_children]
            facts.concentrated_share_pct = (
                100.0 * sum(n for n, _ in top_children) / facts.factor_incidents
            )
    if total:
        facts.night_share_pct = metrics.get("night_share_pct")
        facts.blind_spot_pct = metrics.get("blind_spot_incident_pct")
    if has_patrols and weeks > 0:
        facts.patrol_visits_per_week = float(metrics.get("patrol_visits") or 0.0) / weeks
    facts.not_notified_pct = metrics.get("not_notified_pct")
    return facts
