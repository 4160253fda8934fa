"""Survey indicators with their uncertainty, from raw responses or aggregated results.

From raw responses: single-item security % (安全 + 基本安全 among those who answered; "说不清"
is left out of the base and reported as a quality figure), satisfaction %, awareness and
participation %, and each dissatisfaction factor's share of all factor mentions, each with a
95 % Wilson interval. Design weights, when the file has them, weight the estimates and the
interval uses Kish's effective sample size. From aggregated results: the figures as given,
with Wilson intervals when the number of respondents is known.

The *score of record* of an area and wave is its aggregated result when one was imported (the
third party's published figure), else the estimate from raw responses.
"""

from __future__ import annotations

import json
import math
import pickle
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats
from sqlalchemy import Engine, String, func, select, type_coerce

from gridwatch.areas import AreaTree, load_tree
from gridwatch.periods import parse_period
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import SurveyResponse, SurveyResult, SurveyWave
from gridwatch.targeting.rules import QualityRules

#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054

SECURITY_YES = ("safe", "basically_safe")
SECURITY_NO = ("not_very_safe", "unsafe")
SATISFACTION_YES = ("satisfied", "basically_satisfied")
SATISFACTION_NO = ("dissatisfied",)
NONRESPONSE = ("refused", "hung_up")

#: The four proportions, as (output name, answer key, "yes" answers, answers in the base).
PROPORTIONS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("security", "security", SECURITY_YES, SECURITY_YES + SECURITY_NO),
    ("satisfaction", "satisfaction", SATISFACTION_YES, SATISFACTION_YES + SATISFACTION_NO),
    ("awareness", "aware", ("yes",), ("yes", "no")),
    ("participation", "participated", ("yes",), ("yes", "no")),
)
SOURCES = ("auto", "results", "responses")


@dataclass(frozen=True)
class Estimate:
    """A percentage with its 95 % interval.

    Attributes
    ----------
    pct : float or None
        The estimate in % (``None`` when nobody answered).
    ci_low, ci_high : float or None
        Wilson interval in %, ``None`` when the sample size is unknown.
    n : float
        The (effective) sample size the interval rests on; 0 when unknown.
    """

    pct: float | None
    ci_low: float | None
    ci_high: float | None
    n: float

    @property
    def half_width(self) -> float | None:
        """Half the interval's width in percentage points (the "±")."""
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2.0


def wilson_interval(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion.

    Parameters
    ----------
    p : float
        Observed proportion in [0, 1].
    n : float
        Sample size; may be fractional (Kish's effective n of a weighted sample).
    z : float
        Normal quantile (1.96 for 95 %).

    Returns
    -------
    tuple of float
        ``(low, high)`` in [0, 1]; ``(0, 1)`` when ``n`` is not positive.
    """
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = z * math.sqrt(max(p * (1.0 - p), 0.0) / n + z2 / (4.0 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def kish_effective_n(weights: np.ndarray) -> float:
    """Return Kish's effective sample size ``(Σw)² / Σw²`` (``len`` for equal weights)."""
    w = np.asarray(weights, dtype=float)
    total = float((w * w).sum())
    return float(w.sum()) ** 2 / total if total > 0 else 0.0


def proportion(hits: np.ndarray, weights: np.ndarray | None = None) -> Estimate:
    """Estimate a (weighted) proportion in % with its Wilson interval.

    Parameters
    ----------
    hits : numpy.ndarray of bool
        One value per respondent in the base.
    weights : numpy.ndarray, optional
        Design weights; the interval then uses Kish's effective sample size.
    """
    y = np.asarray(hits, dtype=float)
    if len(y) == 0:
        return Estimate(None, None, None, 0.0)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    p = float((w * y).sum() / w.sum())
    n = kish_effective_n(w)
    low, high = wilson_interval(p, n)
    return Estimate(100.0 * p, 100.0 * low, 100.0 * high, n)


def given_percentage(pct: float | None, n: int | float | None) -> Estimate:
    """Return an aggregated result's percentage with a Wilson interval when ``n`` is known."""
    if pct is None or (isinstance(pct, float) and math.isnan(pct)):
        return Estimate(None, None, None, 0.0)
    if n is None or n <= 0:
        return Estimate(float(pct), None, None, 0.0)
    low, high = wilson_interval(min(max(float(pct) / 100.0, 0.0), 1.0), float(n))
    return Estimate(float(pct), 100.0 * low, 100.0 * high, float(n))


# --------------------------------------------------------------------------------------------
# Reading the survey tables
# --------------------------------------------------------------------------------------------


def _period_filter(periods: Iterable[str] | None) -> list[str] | None:
    return None if periods is None else sorted({parse_period(p).label for p in periods})


def load_responses(engine: Engine, periods: Iterable[str] | None = None) -> pd.DataFrame:
    """Return raw responses as a frame, one row per contact.

    Columns: ``period, area_id, outcome, security, satisfaction, aware, participated,
    factors`` (a list of codes) and ``weight`` (NaN when the file had none). The frame is
    kept per process until the survey tables change (:func:`survey_signature`); each call
    gets its own copy.
    """
    wanted = _period_filter(periods)
    # The same query as always (the bootstrap resamples respondents in the order it returns).
    key = ("responses", _database_key(engine), survey_signature(engine), _tuple(wanted))
    frame = _memo_get(key)
    if frame is None:
        frame = _read_responses(engine, wanted)
        _memo_put(key, frame)
    assert isinstance(frame, pd.DataFrame)
    return frame.copy()


def _read_responses(engine: Engine, wanted: list[str] | None) -> pd.DataFrame:
    # The JSON columns are read as text and decoded here: SQLAlchemy's per-row JSON
    # processing was most of the cost (2 s of the demo county's 47,000 responses).
    stmt = select(
        SurveyWave.period,
        SurveyResponse.area_id,
        SurveyResponse.outcome,
        type_coerce(SurveyResponse.answers, String),
        type_coerce(SurveyResponse.factors, String),
        SurveyResponse.weight,
    ).join(SurveyWave, SurveyWave.id == SurveyResponse.wave_id)
    if wanted is not None:
        stmt = stmt.where(SurveyWave.period.in_(wanted))
    with engine.connect() as connection:
        rows = connection.execute(stmt).all()
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] or [[]] * 6
    periods, area_ids, outcomes, answers_raw, factors_raw, weights = columns
    answers = [a or {} for a in _decoded_json(answers_raw)]
    frame = pd.DataFrame(
        {
            "period": periods,
            "area_id": np.array(area_ids, dtype=np.int64),
            "outcome": outcomes,
            "factors": [list(f or []) for f in _decoded_json(factors_raw)],
            "weight": np.array([np.nan if w is None else w for w in weights], dtype=float),
        }
    )
    for _name, key, _yes, _base in PROPORTIONS:
        frame[key] = [a.get(key) for a in answers]
    return frame


def _decoded_json(values: list[Any]) -> list[Any]:
    """Decode a JSON column read as text (PostgreSQL's driver may have decoded it already).

    A wave holds few distinct answer sets and factor lists, so each distinct text is decoded
    once (rows with the same text share the decoded value: callers copy before changing).
    """
    texts = {raw for raw in values if isinstance(raw, str | bytes)}
    decoded = {raw: json.loads(raw) for raw in texts}
    return [decoded[raw] if isinstance(raw, str | bytes) else raw for raw in values]


def load_results(engine: Engine, periods: Iterable[str] | None = None) -> pd.DataFrame:
    """Return aggregated results, one row per area and wave (``factor_shares`` as dicts)."""
    wanted = _period_filter(periods)
    stmt = select(
        SurveyWave.period,
        SurveyResult.area_id,
        SurveyResult.respondents,
        SurveyResult.security_pct,
        SurveyResult.satisfaction_pct,
        SurveyResult.composite_score,
        SurveyResult.awareness_pct,
        SurveyResult.participation_pct,
        SurveyResult.factor_shares,
    ).join(SurveyWave, SurveyWave.id == SurveyResult.wave_id)
    if wanted is not None:
        stmt = stmt.where(SurveyWave.period.in_(wanted))
    with session_scope(engine) as session:
        rows = [r._asdict() for r in session.execute(stmt)]
    columns = [
        "period",
        "area_id",
        "respondents",
        "security_pct",
        "satisfaction_pct",
        "composite_score",
        "awareness_pct",
        "participation_pct",
        "factor_shares",
    ]
    return pd.DataFrame(rows, columns=columns)


def survey_signature(engine: Engine) -> tuple[int | None, ...]:
    """Return a fingerprint of the survey tables that any import or deletion changes.

    The row count, the highest id and the highest import batch of waves, results and
    responses (rows are only ever added by imports, never updated in place).
    """
    parts: list[int | None] = []
    with session_scope(engine) as session:
        wave = session.execute(select(func.count(), func.max(SurveyWave.id))).one()
        parts.extend(wave)
        for model in (SurveyResult, SurveyResponse):
            row = session.execute(
                select(func.count(), func.max(model.id), func.max(model.batch_id))
            ).one()
            parts.extend(row)
    return tuple(None if value is None else int(value) for value in parts)


#: Derived survey values kept per process (the responses frame, pickled indicator rows).
_MEMO: OrderedDict[Hashable, Any] = OrderedDict()
_MEMO_LOCK = threading.Lock()
#: Entries kept: a few levels × waves of one or two databases (a frame is ~20 MB).
MEMO_ENTRIES = 96
_MAX_FRAMES = 4


def _memo_get(key: Hashable) -> Any:
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    return None


def _memo_put(key: Hashable, value: Any) -> None:
    with _MEMO_LOCK:
        _MEMO[key] = value
        _MEMO.move_to_end(key)
        frames = [k for k, v in _MEMO.items() if isinstance(v, pd.DataFrame)]
        for old in frames[:-_MAX_FRAMES]:
            del _MEMO[old]
        while len(_MEMO) > MEMO_ENTRIES:
            _MEMO.popitem(last=False)


def clear_memo() -> None:
    """Forget the survey values kept by this process."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _database_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _tuple(values: Sequence[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def tree_fingerprint(tree: AreaTree) -> int:
    """Return a hash of the tree's areas (kept with the tree, which never changes)."""
    found = tree.derived.get("indicator_tree_fingerprint")
    if found is None:
        found = hash(
            tuple(
                sorted((n.id, n.code, n.name, n.level, n.parent_id) for n in tree.nodes.values())
            )
        )
        tree.derived["indicator_tree_fingerprint"] = found
    return int(found)


def survey_periods(engine: Engine) -> list[str]:
    """Return every survey wave's period label, oldest first."""
    with session_scope(engine) as session:
        labels = list(session.scalars(select(SurveyWave.period)))
    return sorted(labels, key=lambda label: parse_period(label))


def unit_at_level(tree: AreaTree, area_ids: Iterable[int], level: str) -> dict[int, int]:
    """Map each area to itself (at ``level``) or to its ancestor at ``level``.

    Areas above ``level`` (or outside a tree that has that level) are left out.
    """
    out: dict[int, int] = {}
    for area_id in set(area_ids):
        node = tree.nodes.get(area_id)
        if node is None:
            continue
        if node.level == level:
            out[area_id] = area_id
            continue
        for ancestor in tree.ancestors(area_id):
            if ancestor.level == level:
                out[area_id] = ancestor.id
                break
    return out


def rolled_responses(responses: pd.DataFrame, tree: AreaTree, level: str) -> pd.DataFrame:
    """Return ``responses`` with ``unit_id`` / ``unit_code``, their area at ``level``."""
    mapping = unit_at_level(tree, responses["area_id"].unique().tolist(), level)
    frame = responses[responses["area_id"].isin(list(mapping))].copy()
    frame["unit_id"] = frame["area_id"].map(mapping).astype(np.int64)
    frame["unit_code"] = [tree.nodes[int(i)].code for i in frame["unit_id"]]
    return frame


# --------------------------------------------------------------------------------------------
# One area's figures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Contacts:
    """One area's raw contacts as plain arrays (cheap to slice per area and wave).

    Attributes
    ----------
    outcome : numpy.ndarray of str
    answers : dict of str to numpy.ndarray
        Answer key (``security``, ``satisfaction``, ``aware``, ``participated``) → answers,
        ``None`` where not given.
    factors : list of list of str
    weight : numpy.ndarray of float
        NaN where the file had no weight.
    """

    outcome: np.ndarray
    answers: dict[str, np.ndarray]
    factors: list[list[str]]
    weight: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Contacts:
        """Build from rows of :func:`load_responses`."""
        return cls(
            outcome=frame["outcome"].to_numpy(dtype=object),
            answers={key: frame[key].to_numpy(dtype=object) for _, key, _, _ in PROPORTIONS},
            factors=list(frame["factors"]),
            weight=frame["weight"].to_numpy(dtype=float),
        )

    def take(self, index: np.ndarray) -> Contacts:
        """Return the contacts at positions ``index``."""
        return Contacts(
            outcome=self.outcome[index],
            answers={key: values[index] for key, values in self.answers.items()},
            factors=[self.factors[i] for i in index],
            weight=self.weight[index],
        )

    def completed(self) -> Contacts:
        """Return the completed interviews only."""
        return self.take(np.flatnonzero(self.outcome == "completed"))

    def weights(self) -> tuple[np.ndarray, bool]:
        """Return design weights (1 where missing) and whether any were given."""
        weighted = bool(np.isfinite(self.weight).any())
        # A respondent without a weight in a weighted file counts as an average one.
        return np.where(np.isfinite(self.weight), self.weight, 1.0), weighted


def _estimate_fields(name: str, estimate: Estimate) -> dict[str, Any]:
    return {
        f"{name}_pct": _round(estimate.pct),
        f"{name}_ci_low": _round(estimate.ci_low),
        f"{name}_ci_high": _round(estimate.ci_high),
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


def factor_estimates(
    factors: Sequence[Sequence[str]], names: dict[str, str], weights: np.ndarray
) -> list[dict[str, Any]]:
    """Each factor's share of all (weighted) factor mentions, largest first, with intervals.

    Respondents, not mentions, are the independent units (one names up to three factors),
    so the interval uses the effective number of respondents who named any factor.
    """
    counts = np.array([len(f) for f in factors], dtype=float)
    named = counts > 0
    total = float((weights * counts).sum())
    if total <= 0:
        return []
    n_units = kish_effective_n(weights[named])
    mentions: dict[str, float] = {}
    for w, chosen in zip(weights, factors, strict=True):
        for code in chosen:
            mentions[code] = mentions.get(code, 0.0) + float(w)
    out = []
    for code, weight in sorted(mentions.items(), key=lambda kv: (-kv[1], kv[0])):
        share = weight / total
        low, high = wilson_interval(share, n_units)
        out.append(
            {
                "code": code,
                "name": names.get(code, code),
                "share_pct": _round(100.0 * share),
                "ci_low": _round(100.0 * low),
                "ci_high": _round(100.0 * high),
            }
        )
    return out


def uniform_chisquare_p(observed: Sequence[int]) -> float:
    """Return the p-value of Pearson's χ² test of ``observed`` counts against equal shares.

    The arithmetic of ``scipy.stats.chisquare(observed).pvalue`` (the same result) without
    its per-call overhead, which counted when every village of every wave is judged.
    """
    counts = np.asarray(observed, dtype=float)
    expected = counts.mean(keepdims=True)
    statistic = ((counts - expected) ** 2 / expected).sum()
    return float(special.chdtrc(len(counts) - 1.0, statistic))


def quality_flags(contacts: Contacts, rules: QualityRules) -> dict[str, Any]:
    """Judge one area's fieldwork from its raw contacts.

    Flags: ``few_respondents``; ``high_nonresponse`` (refusals and hang-ups, the dialect and
    "scam call" problem); ``many_unknown``; ``random_pattern`` when the security answers are
    spread as if guessed (χ² against a uniform mix) or the people who feel unsafe name
    dissatisfaction factors no more often than those who feel safe (one-sided Fisher test).
    """
    n_contacts = len(contacts.outcome)
    completed = contacts.completed()
    n_completed = len(completed.outcome)
    nonresponse = int(np.isin(contacts.outcome, NONRESPONSE).sum())
    security = completed.answers["security"]
    in_base = np.isin(security, SECURITY_YES + SECURITY_NO)
    unknown = n_completed - int(in_base.sum())
    flags: list[str] = []
    figures: dict[str, Any] = {
        "contacts": n_contacts,
        "completed": n_completed,
        "nonresponse_pct": _round(100.0 * nonresponse / n_contacts) if n_contacts else None,
        "unknown_pct": _round(100.0 * unknown / n_completed) if n_completed else None,
        "uniform_p": None,
        "consistency_p": None,
    }
    if n_completed < rules.min_respondents:
        flags.append("few_respondents")
    if n_contacts and 100.0 * nonresponse / n_contacts > rules.max_nonresponse_pct:
        flags.append("high_nonresponse")
    if n_completed and 100.0 * unknown / n_completed > rules.max_unknown_pct:
        flags.append("many_unknown")
    answered = security[in_base]
    if len(answered) >= rules.min_for_pattern_test:
        observed = [int((answered == a).sum()) for a in SECURITY_YES + SECURITY_NO]
        uniform_p = uniform_chisquare_p(observed)
        figures["uniform_p"] = round(uniform_p, 4)
        random_looking = uniform_p > rules.random_pattern_p
        unsafe = np.isin(answered, SECURITY_NO)
        names_any = np.array(
            [len(f) > 0 for f, keep in zip(completed.factors, in_base, strict=True) if keep]
        )
        if unsafe.sum() >= 5 and (~unsafe).sum() >= 5:
            table = [
                [int((unsafe & names_any).sum()), int((unsafe & ~names_any).sum())],
                [int((~unsafe & names_any).sum()), int((~unsafe & ~names_any).sum())],
            ]
            consistency_p = float(stats.fisher_exact(table, alternative="greater").pvalue)
            figures["consistency_p"] = round(consistency_p, 4)
            random_looking = random_looking or consistency_p > rules.random_pattern_p
        if random_looking:
            flags.append("random_pattern")
    figures["flags"] = flags
    return figures


def from_responses(
    contacts: Contacts | pd.DataFrame, names: dict[str, str], rules: QualityRules
) -> dict[str, Any]:
    """Return one area's indicators estimated from its raw contacts."""
    if isinstance(contacts, pd.DataFrame):
        contacts = Contacts.from_frame(contacts)
    completed = contacts.completed()
    weights, weighted = completed.weights()
    row: dict[str, Any] = {
        "source": "responses",
        "respondents": len(completed.outcome),
        "weighted": weighted,
        "effective_n": _round(kish_effective_n(weights), 1),
    }
    for name, key, yes, base in PROPORTIONS:
        answers = completed.answers[key]
        in_base = np.isin(answers, base)
        hits = np.isin(answers[in_base], yes)
        row.update(_estimate_fields(name, proportion(hits, weights[in_base])))
    row["composite_score"] = None
    row["factors"] = factor_estimates(completed.factors, names, weights)
    row["quality"] = quality_flags(contacts, rules)
    return row


def from_result(
    result: dict[str, Any], names: dict[str, str], rules: QualityRules
) -> dict[str, Any]:
    """Return one area's indicators from its aggregated result row."""
    n = result.get("respondents")
    n = None if n is None or (isinstance(n, float) and math.isnan(n)) else int(n)
    row: dict[str, Any] = {
        "source": "results",
        "respondents": n,
        "weighted": False,
        "effective_n": None if n is None else float(n),
    }
    for name, *_ in PROPORTIONS:
        row.update(_estimate_fields(name, given_percentage(_num(result.get(f"{name}_pct")), n)))
    row["composite_score"] = _round(_num(result.get("composite_score")))
    security = _num(result.get("security_pct"))
    # Only the dissatisfied name factors: their number is about n × (1 − security).
    dissatisfied = None if n is None or security is None else n * (100.0 - security) / 100.0
    factors = []
    shares = result.get("factor_shares") or {}
    for code, share in sorted(shares.items(), key=lambda kv: (-float(kv[1]), kv[0])):
        share_pct, ci_low, ci_high = _given_share(float(share), dissatisfied)
        factors.append(
            {
                "code": code,
                "name": names.get(code, code),
                "share_pct": share_pct,
                "ci_low": ci_low,
                "ci_high": ci_high,
            }
        )
    row["factors"] = factors
    flags = ["few_respondents"] if n is not None and n < rules.min_respondents else []
    row["quality"] = {"contacts": None, "completed": n, "flags": flags}
    return row


def _given_share(pct: float, n: float | None) -> tuple[float | None, float | None, float | None]:
    """Return :func:`given_percentage`'s figures rounded as the rows show them.

    The same arithmetic without an :class:`Estimate` per factor: a county's results name
    about 100,000 factor shares, and building them was most of the time.
    """
    if math.isnan(pct):
        return None, None, None
    if n is None or n <= 0:
        return _round(pct), None, None
    low, high = wilson_interval(min(max(pct / 100.0, 0.0), 1.0), float(n))
    return _round(pct), _round(100.0 * low), _round(100.0 * high)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------------------------
# Every area of a level
# --------------------------------------------------------------------------------------------


def indicator_table(
    engine: Engine,
    level: str,
    periods: Sequence[str],
    factor_names: dict[str, str],
    rules: QualityRules,
    source: str = "auto",
    tree: AreaTree | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Return the indicators of every area of ``level`` with survey data, per period.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    level : str
        Area level; raw responses of areas below it are pooled into their ancestor.
    periods : sequence of str
        Wave labels, e.g. ``["2026Q2", "2026Q3"]``.
    factor_names : dict
        Factor code → display name.
    rules : QualityRules
    source : {"auto", "results", "responses"}
        ``auto`` takes the aggregated result where one exists (the score of record) and raw
        responses otherwise. Quality flags come from raw responses whenever there are any.
    tree : AreaTree, optional
        The administrative tree (read when not given).

    Returns
    -------
    dict
        Period label → list of rows sorted by area code.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    tree = tree or load_tree(engine)
    labels = [parse_period(p).label for p in periods]
    # Each wave's rows depend on that wave's data alone, so they are kept per wave: the
    # ladder (every wave), the ranking (one) and the priorities (the quarters) share them.
    base = (
        "indicators",
        _database_key(engine),
        survey_signature(engine),
        tree_fingerprint(tree),
        level,
        source,
        tuple(sorted(factor_names.items())),
        rules,
    )
    stored = {label: _memo_get((*base, label)) for label in dict.fromkeys(labels)}
    missing = [label for label, value in stored.items() if value is None]
    if missing:
        built = _indicator_rows(engine, level, missing, factor_names, rules, source, tree)
        for label, rows in built.items():
            stored[label] = pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)
            _memo_put((*base, label), stored[label])
    # Every caller gets rows of its own (unpickled), never the kept ones.
    return {label: pickle.loads(stored[label]) for label in labels}


def _indicator_rows(
    engine: Engine,
    level: str,
    labels: list[str],
    factor_names: dict[str, str],
    rules: QualityRules,
    source: str,
    tree: AreaTree,
) -> dict[str, list[dict[str, Any]]]:
    results = load_results(engine, labels) if source != "responses" else None
    responses = load_responses(engine, labels)
    by_period: dict[str, dict[int, dict[str, Any]]] = {label: {} for label in labels}
    quality: dict[tuple[str, int], dict[str, Any]] = {}
    if not responses.empty:
        rolled = rolled_responses(responses, tree, level)
        contacts = Contacts.from_frame(rolled)
        groups = rolled.groupby(["period", "unit_id"], sort=True).indices
        for (period, unit_id), index in groups.items():
            row = from_responses(contacts.take(index), factor_names, rules)
            quality[(str(period), int(unit_id))] = row["quality"]
            if source != "results":
                by_period[str(period)][int(unit_id)] = row
    if results is not None and not results.empty:
        for result in results.to_dict("records"):
            node = tree.nodes.get(int(result["area_id"]))
            if node is None or node.level != level:
                continue
            row = from_result(result, factor_names, rules)
            key = (str(result["period"]), node.id)
            if key in quality:
                fieldwork = dict(quality[key])
                fieldwork["flags"] = sorted(set(fieldwork["flags"]) | set(row["quality"]["flags"]))
                row["quality"] = fieldwork
            by_period[str(result["period"])][node.id] = row
    out: dict[str, list[dict[str, Any]]] = {}
    for label in labels:
        rows = []
        for area_id, row in by_period[label].items():
            node = tree.nodes[area_id]
            rows.append(
                {
                    "area_code": node.code,
                    "area_name": node.name,
                    "level": node.level,
                    "period": label,
                    **row,
                }
            )
        out[label] = sorted(rows, key=lambda r: r["area_code"])
    return out
