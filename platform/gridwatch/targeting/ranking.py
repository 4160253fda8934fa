"""Township and county rankings per quarter, with bootstrap rank intervals.

A township's place depends on a few hundred phone interviews, so two townships a point apart
may well swap places in another sample. Each township's respondents are resampled (with their
design weights) many times, every replicate is ranked, and the 2.5–97.5 % range of a
township's places is its rank interval. Where only aggregated results exist, the replicate is
drawn from the binomial distribution of its respondent count. A township in the bottom N whose
rank interval reaches above the bottom N is there "within the noise".

The bootstrap is seeded from ``seed`` and the period, so the same data give the same intervals.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.periods import parse_period
from gridwatch.targeting.indicators import (
    PROPORTIONS,
    indicator_table,
    load_responses,
    rolled_responses,
)
from gridwatch.targeting.ladder import STATUS_ZH, accountability_rules, ladder_report
from gridwatch.taxonomy import load_survey_factors

DEFAULT_REPLICATES = 1000
DEFAULT_SEED = 20260


@dataclass(frozen=True)
class Sample:
    """One area's respondents for the ranked figure: 1/0 answers and design weights."""

    hits: np.ndarray
    weights: np.ndarray

    def estimate(self) -> float:
        """Return the weighted share in %."""
        return float(100.0 * (self.weights * self.hits).sum() / self.weights.sum())


def period_rng(seed: int, period: str) -> np.random.Generator:
    """Return the generator of one period's bootstrap (stable across runs and platforms)."""
    return np.random.default_rng([seed, zlib.crc32(period.encode("utf-8"))])


def replicate_scores(
    scores: Sequence[float],
    samples: Sequence[Sample | None],
    respondents: Sequence[float | None],
    replicates: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw bootstrap replicates of every area's score.

    Parameters
    ----------
    scores : sequence of float
        The scores of record in %, one per area.
    samples : sequence of Sample or None
        Raw respondents per area. The replicate is the score of record shifted by the
        resampled estimate's deviation from the full-sample estimate (the published figure
        stays the centre, the respondents supply the noise).
    respondents : sequence of float or None
        Respondent counts used, where no sample exists, for a binomial replicate; an area with
        neither keeps its score in every replicate.
    replicates : int
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        Shape ``(replicates, len(scores))``.
    """
    out = np.empty((replicates, len(scores)))
    for i, score in enumerate(scores):
        sample = samples[i]
        n = respondents[i]
        if sample is not None and len(sample.hits) > 0:
            m = len(sample.hits)
            index = rng.integers(0, m, size=(replicates, m))
            w = sample.weights[index]
            boot = 100.0 * (w * sample.hits[index]).sum(axis=1) / w.sum(axis=1)
            out[:, i] = score + (boot - sample.estimate())
        elif n is not None and n > 0:
            p = min(max(score / 100.0, 0.0), 1.0)
            out[:, i] = 100.0 * rng.binomial(int(round(n)), p, size=replicates) / round(n)
        else:
            out[:, i] = score
    return out


def rank_intervals(
    scores: Sequence[float], replicates: np.ndarray, bottom_n: int, level: float = 0.95
) -> dict[str, np.ndarray]:
    """Summarise where each area ranks across replicates (1 = highest score).

    Returns
    -------
    dict
        ``rank`` (the point rank), ``rank_best`` and ``rank_worst`` (the interval), and
        ``bottom_probability`` (share of replicates in the bottom ``bottom_n``).
    """
    point = np.asarray(scores, dtype=float)
    n_areas = len(point)
    rank = rankdata(-point, method="min").astype(int)
    ranks = rankdata(-replicates, method="min", axis=1)
    from_bottom = rankdata(replicates, method="min", axis=1)
    alpha = (1.0 - level) / 2.0
    best = np.percentile(ranks, 100 * alpha, axis=0, method="inverted_cdf").astype(int)
    worst = np.percentile(ranks, 100 * (1 - alpha), axis=0, method="inverted_cdf").astype(int)
    bottom_probability = (from_bottom <= bottom_n).mean(axis=0)
    return {
        "rank": rank,
        "rank_best": np.minimum(best, rank) if n_areas else best,
        "rank_worst": np.maximum(worst, rank) if n_areas else worst,
        "bottom_probability": bottom_probability,
    }


def _answer_key(score: str) -> str | None:
    for name, key, _yes, _base in PROPORTIONS:
        if score == f"{name}_pct":
            return key
    return None


def _samples(
    engine: Engine, tree: AreaTree, level: str, period: str, score: str
) -> dict[str, Sample]:
    key = _answer_key(score)
    if key is None:
        return {}
    spec = next(p for p in PROPORTIONS if p[1] == key)
    responses = load_responses(engine, [period])
    if responses.empty:
        return {}
    rolled = rolled_responses(responses, tree, level)
    rolled = rolled[(rolled["outcome"] == "completed") & rolled[key].isin(spec[3])]
    out = {}
    for code, group in rolled.groupby("unit_code", sort=True):
        raw = group["weight"].to_numpy(dtype=float)
        weights = np.where(np.isfinite(raw), raw, 1.0)
        out[str(code)] = Sample(group[key].isin(spec[2]).to_numpy(dtype=float), weights)
    return out


def survey_ranking(
    engine: Engine,
    settings: Settings,
    period: str,
    level: str | None = None,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = DEFAULT_SEED,
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Rank the areas of ``level`` by their score of record in ``period``.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    settings : Settings
    period : str
        The survey wave, e.g. ``2026Q3``.
    level : str, optional
        ``township`` (the ladder's level, the default) or ``county``.
    replicates, seed : int
        Bootstrap size and seed.
    tree : AreaTree, optional

    Returns
    -------
    dict
        ``period, level, score, bottom_n, ranked, replicates, seed, red_line_pct, target_pct``
        and ``rows``: one per area, best first, with ``area_code, area_name, rank,
        security_pct`` (the ranked score), ``ci_low, ci_high, respondents, source,
        rank_best, rank_worst, bottom_probability, in_bottom, bottom_within_noise,
        may_be_bottom, below_red_line, meets_target, status, status_zh, status_history``.
    """
    rules = accountability_rules(settings)
    level = level or rules.level
    label = parse_period(period).label
    tree = tree or load_tree(engine)
    names = {f.code: f.zh for f in load_survey_factors(settings.survey_factors_file).values()}
    rows = indicator_table(engine, level, [label], names, rules.quality, "auto", tree)[label]
    rows = [r for r in rows if r.get(rules.score) is not None]
    stem = rules.score[: -len("_pct")] if rules.score.endswith("_pct") else None
    samples = _samples(engine, tree, level, label, rules.score)
    scores = [float(r[rules.score]) for r in rows]
    reps = replicate_scores(
        scores,
        [samples.get(r["area_code"]) for r in rows],
        [r.get("respondents") for r in rows],
        replicates,
        period_rng(seed, label),
    )
    summary = rank_intervals(scores, reps, rules.bottom_n)
    statuses: dict[str, list[dict[str, Any]]] = {}
    if level == rules.level:
        report = ladder_report(engine, settings, tree)
        statuses = {t["area_code"]: t["history"] for t in report["townships"]}
    n_ranked = len(rows)
    bottom_start = n_ranked - rules.bottom_n + 1
    out_rows = []
    for i, row in enumerate(rows):
        history = [h for h in statuses.get(row["area_code"], []) if _not_after(h["period"], label)]
        status = history[-1]["status"] if history and history[-1]["period"] == label else "none"
        rank = int(summary["rank"][i])
        best, worst = int(summary["rank_best"][i]), int(summary["rank_worst"][i])
        in_bottom = bool(
            history[-1]["in_bottom"]
            if history and history[-1]["period"] == label
            # Ties at the boundary stay in (as on the ladder): count places from the bottom.
            else sum(s < scores[i] for s in scores) + 1 <= rules.bottom_n
        )
        score = scores[i]
        ladder_level = level == rules.level
        if not ladder_level:
            # The bottom-N rule is the ladder's; other levels are ranked without it.
            in_bottom = False
        out_rows.append(
            {
                "area_code": row["area_code"],
                "area_name": row["area_name"],
                "rank": rank,
                rules.score: round(score, 2),
                "ci_low": row.get(f"{stem}_ci_low") if stem else None,
                "ci_high": row.get(f"{stem}_ci_high") if stem else None,
                "respondents": row.get("respondents"),
                "source": row["source"],
                "quality_flags": row["quality"]["flags"],
                "rank_best": best,
                "rank_worst": worst,
                "bottom_probability": (
                    round(float(summary["bottom_probability"][i]), 3) if ladder_level else None
                ),
                "in_bottom": in_bottom,
                "bottom_within_noise": in_bottom and best < bottom_start,
                "may_be_bottom": ladder_level and not in_bottom and worst >= bottom_start,
                "below_red_line": score < rules.red_line_pct,
                "meets_target": score >= rules.target_pct,
                "status": status if ladder_level else None,
                "status_zh": STATUS_ZH[status] if ladder_level else None,
                "status_history": [
                    {"period": h["period"], "status": h["status"]} for h in history
                ],
            }
        )
    out_rows.sort(key=lambda r: (r["rank"], r["area_code"]))
    return {
        "period": label,
        "level": level,
        "score": rules.score,
        "bottom_n": rules.bottom_n,
        "ranked": n_ranked,
        "replicates": replicates,
        "seed": seed,
        "red_line_pct": rules.red_line_pct,
        "target_pct": rules.target_pct,
        "rows": out_rows,
    }


def _not_after(period: str, last: str) -> bool:
    return parse_period(period).start <= parse_period(last).start
