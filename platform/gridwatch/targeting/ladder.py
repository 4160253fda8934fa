"""The township accountability ladder and the county titles, from the survey's scores.

Per quarter the bottom N townships are summoned (约谈); N quarters in a row bring a yellow card
(黄牌警告), then listing for key remediation (挂牌重点整治); being listed again within two years,
or an annual score below 80 two years running while in the bottom N, is a one-vote veto
(一票否决) that fails the year. Counties below the red line lose the safe-county title
(平安县). Every threshold comes from :class:`~gridwatch.targeting.rules.AccountabilityRules`.

:func:`evaluate_ladder` is a pure function of the quarterly scores, so each rung can be tested on
hand-made histories; :func:`ladder_report` feeds it the scores of record from the database.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import Period, parse_period, periods_between
from gridwatch.targeting.indicators import indicator_table, survey_periods
from gridwatch.targeting.rules import AccountabilityRules, load_accountability_rules
from gridwatch.taxonomy import load_survey_factors

#: Rungs from the lowest; a quarter's status is the highest rung that applies.
STATUSES = ("none", "summons", "yellow_card", "listed", "veto")
STATUS_ZH = {
    "none": "无",
    "summons": "约谈",
    "yellow_card": "黄牌警告",
    "listed": "挂牌重点整治",
    "veto": "一票否决",
}

Scores = Mapping[str, Mapping[str, float]]


@dataclass
class LadderEntry:
    """One township's standing in one quarter.

    Attributes
    ----------
    period : str
    score : float or None
        The score of record (``None``: not surveyed that quarter).
    place_from_bottom : int or None
        1 for the lowest score; tied townships share the lower place.
    ranked : int
        Townships ranked that quarter.
    in_bottom : bool
    streak : int
        Quarters in a row (this one included) in the bottom N.
    status : str
        One of :data:`STATUSES`.
    events : list of str
        What this quarter triggered: ``summons``, ``yellow_card``, ``listed`` (a new listing),
        ``veto_listed_again``, ``veto_annual``.
    """

    period: str
    score: float | None
    place_from_bottom: int | None
    ranked: int
    in_bottom: bool
    streak: int
    status: str = "none"
    events: list[str] = field(default_factory=list)


def places_from_bottom(scores: Mapping[str, float]) -> dict[str, int]:
    """Return each area's place counted from the lowest score (1 = lowest; ties share).

    A tie at the boundary keeps everyone tied inside the bottom N: nobody escapes the ladder
    by drawing level with a township that is in it.
    """
    values = sorted(scores.values())
    return {code: 1 + bisect_left(values, score) for code, score in scores.items()}


def _quarter_index(period: Period) -> int:
    return period.start.year * 4 + (period.start.month - 1) // 3


def annual_scores(
    quarterly: Scores, rules: AccountabilityRules, annual: Scores | None = None
) -> dict[str, dict[str, tuple[float, int]]]:
    """Return year → area → (annual score, quarters it rests on).

    An imported annual result (period ``2026``) is taken as it is (quarters 4); otherwise the
    mean of the year's quarterly scores once ``min_quarters_for_annual`` of them are in.
    """
    by_year: dict[str, dict[str, list[float]]] = {}
    for label, scores in quarterly.items():
        year = label[:4]
        for code, score in scores.items():
            by_year.setdefault(year, {}).setdefault(code, []).append(float(score))
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for year, areas in by_year.items():
        for code, values in areas.items():
            if len(values) >= rules.min_quarters_for_annual:
                out.setdefault(year, {})[code] = (sum(values) / len(values), len(values))
    for label, scores in (annual or {}).items():
        year = parse_period(label).label
        for code, score in scores.items():
            out.setdefault(year, {})[code] = (float(score), 4)
    return out


def evaluate_ladder(
    quarterly: Scores, rules: AccountabilityRules, annual: Scores | None = None
) -> dict[str, list[LadderEntry]]:
    """Apply the ladder to quarterly scores.

    Parameters
    ----------
    quarterly : mapping
        Quarter label (``2026Q3``) → area code → score.
    rules : AccountabilityRules
    annual : mapping, optional
        Year label (``2026``) → area code → an imported annual score.

    Returns
    -------
    dict
        Area code → one :class:`LadderEntry` per quarter with a survey wave, oldest first.
    """
    waves = sorted((parse_period(label) for label in quarterly), key=lambda p: p.start)
    if not waves:
        return {}
    codes = sorted({code for scores in quarterly.values() for code in scores})
    wave_labels = {p.label for p in waves}
    calendar = periods_between(waves[0], waves[-1]) if rules.gap_breaks_streak else waves
    streak = dict.fromkeys(codes, 0)
    listings: dict[str, list[int]] = {code: [] for code in codes}
    history: dict[str, list[LadderEntry]] = {code: [] for code in codes}
    veto_from: dict[str, list[int]] = {code: [] for code in codes}  # entry positions
    for period in calendar:
        if period.label not in wave_labels:
            streak = dict.fromkeys(codes, 0)  # no survey that quarter: runs are broken
            continue
        scores = {c: float(s) for c, s in quarterly[period.label].items() if s is not None}
        places = places_from_bottom(scores)
        for code in codes:
            place = places.get(code)
            in_bottom = place is not None and place <= rules.bottom_n
            streak[code] = streak[code] + 1 if in_bottom else 0
            entry = LadderEntry(
                period=period.label,
                score=scores.get(code),
                place_from_bottom=place,
                ranked=len(scores),
                in_bottom=in_bottom,
                streak=streak[code],
            )
            run = streak[code]
            if run >= rules.listed_after:
                entry.status = "listed"
            elif run >= rules.yellow_card_after:
                entry.status = "yellow_card"
            elif run >= rules.summons_after:
                entry.status = "summons"
            if in_bottom:
                entry.events.append("summons")
            if run == rules.yellow_card_after and rules.yellow_card_after < rules.listed_after:
                entry.events.append("yellow_card")
            if run == rules.listed_after:
                entry.events.append("listed")
                index = _quarter_index(period)
                listings[code].append(index)
                recent = [i for i in listings[code] if index - i < rules.veto_within_quarters]
                if len(recent) >= rules.veto_listings:
                    entry.events.append("veto_listed_again")
                    veto_from[code].append(len(history[code]))
            history[code].append(entry)
    _annual_vetoes(quarterly, rules, annual, history, veto_from)
    for code, starts in veto_from.items():
        entries = history[code]
        for start in starts:
            year = entries[start].period[:4]
            for entry in entries[start:]:
                if entry.period[:4] != year:
                    break
                entry.status = "veto"
    return history


def _annual_vetoes(
    quarterly: Scores,
    rules: AccountabilityRules,
    annual: Scores | None,
    history: dict[str, list[LadderEntry]],
    veto_from: dict[str, list[int]],
) -> None:
    """Mark the annual veto on the last surveyed quarter of the year it fires in."""
    yearly = annual_scores(quarterly, rules, annual)
    low: dict[str, set[str]] = {}
    for year, areas in yearly.items():
        scores = {code: value for code, (value, _) in areas.items()}
        places = places_from_bottom(scores)
        low[year] = {
            code
            for code, value in scores.items()
            if value < rules.veto_annual_below
            and (not rules.veto_annual_in_bottom or places[code] <= rules.bottom_n)
        }
    for year in sorted(low):
        years = [str(int(year) - k) for k in range(rules.veto_annual_years)]
        for code in sorted(low[year]):
            if not all(code in low.get(y, set()) for y in years):
                continue
            entries = history.get(code, [])
            positions = [i for i, e in enumerate(entries) if e.period[:4] == year]
            if positions:
                entries[positions[-1]].events.append("veto_annual")
                veto_from[code].append(positions[-1])


def county_titles(
    quarterly: Scores, rules: AccountabilityRules, annual: Scores | None = None
) -> dict[str, Any]:
    """Judge counties against the red line, the target and the safe-county title.

    Returns
    -------
    dict
        ``counties``: code → ``{"quarters": [...], "years": [...]}``; ``city``: per year the
        share of safe counties among those with an annual score and whether a city may apply
        for the safe-city title.
    """
    counties: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for label in sorted(quarterly, key=lambda p: parse_period(p).start):
        for code, score in sorted(quarterly[label].items()):
            counties.setdefault(code, {"quarters": [], "years": []})["quarters"].append(
                {
                    "period": label,
                    "score": round(float(score), 2),
                    "below_red_line": score < rules.red_line_pct,
                    "meets_target": score >= rules.target_pct,
                }
            )
    # Provisional years (fewer quarters) are shown but not judged.
    relaxed = replace(rules, min_quarters_for_annual=1)
    complete = annual_scores(quarterly, rules, annual)
    provisional = annual_scores(quarterly, relaxed, annual)
    city: list[dict[str, Any]] = []
    for year in sorted(provisional):
        judged = 0
        safe = 0
        for code, (score, quarters) in sorted(provisional[year].items()):
            is_complete = code in complete.get(year, {})
            title = score >= rules.safe_title_min_pct if is_complete else None
            counties.setdefault(code, {"quarters": [], "years": []})["years"].append(
                {
                    "year": year,
                    "annual_score": round(score, 2),
                    "quarters": quarters,
                    "complete": is_complete,
                    "safe_county": title,
                }
            )
            if title is not None:
                judged += 1
                safe += int(title)
        if judged:
            share = 100.0 * safe / judged
            city.append(
                {
                    "year": year,
                    "counties_judged": judged,
                    "safe_counties": safe,
                    "safe_share_pct": round(share, 2),
                    "may_apply_safe_city": share >= rules.safe_city_min_share_pct,
                }
            )
    return {"counties": counties, "city": city}


def scores_of_record(
    engine: Engine,
    settings: Settings,
    level: str,
    score: str,
    tree: AreaTree | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Return the quarterly and annual scores of record of every area of ``level``.

    The aggregated result where one exists, else the estimate from raw responses.
    """
    rules = accountability_rules(settings)
    names = {f.code: f.zh for f in load_survey_factors(settings.survey_factors_file).values()}
    periods = survey_periods(engine)
    table = indicator_table(engine, level, periods, names, rules.quality, "auto", tree)
    quarterly: dict[str, dict[str, float]] = {}
    annual: dict[str, dict[str, float]] = {}
    for label, rows in table.items():
        kind = parse_period(label).kind
        target = quarterly if kind == "quarter" else annual if kind == "year" else None
        if target is None:
            continue
        values = {r["area_code"]: r.get(score) for r in rows}
        target[label] = {code: float(v) for code, v in values.items() if v is not None}
    return quarterly, annual


def accountability_rules(settings: Settings) -> AccountabilityRules:
    """Return the rules configured for ``settings`` (the shipped defaults when unset)."""
    return load_accountability_rules(settings.accountability_rules_file)


def ladder_report(
    engine: Engine, settings: Settings, tree: AreaTree | None = None
) -> dict[str, Any]:
    """Return every township's ladder history and the counties' titles.

    Returns
    -------
    dict
        ``rules`` (the thresholds applied), ``townships`` (``area_code``, ``area_name``,
        ``status`` of the latest quarter, ``history``) and ``counties`` / ``city`` from
        :func:`county_titles`.
    """
    rules = accountability_rules(settings)
    tree = tree or load_tree(engine)
    quarterly, annual = scores_of_record(engine, settings, rules.level, rules.score, tree)
    history = evaluate_ladder(quarterly, rules, annual)
    townships = []
    for code, entries in sorted(history.items()):
        node = tree.by_code.get(code)
        townships.append(
            {
                "area_code": code,
                "area_name": node.name if node else code,
                "status": entries[-1].status if entries else "none",
                "history": [asdict(e) for e in entries],
            }
        )
    c_quarterly, c_annual = scores_of_record(
        engine, settings, rules.county_level, rules.score, tree
    )
    titles = county_titles(c_quarterly, rules, c_annual)
    counties = [
        {"area_code": code, "area_name": tree.by_code[code].name, **value}
        for code, value in sorted(titles["counties"].items())
        if code in tree.by_code
    ]
    return {
        "rules": {
            "level": rules.level,
            "score": rules.score,
            "bottom_n": rules.bottom_n,
            "summons_after": rules.summons_after,
            "yellow_card_after": rules.yellow_card_after,
            "listed_after": rules.listed_after,
            "veto_listings": rules.veto_listings,
            "veto_within_quarters": rules.veto_within_quarters,
            "veto_annual_below": rules.veto_annual_below,
            "veto_annual_years": rules.veto_annual_years,
            "red_line_pct": rules.red_line_pct,
            "target_pct": rules.target_pct,
        },
        "quarters": sorted(quarterly, key=lambda p: parse_period(p).start),
        "townships": townships,
        "counties": counties,
        "city": titles["city"],
    }
