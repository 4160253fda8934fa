"""The accountability rules (ladder, red line, target, survey quality) loaded from YAML.

The shipped defaults (``gridwatch/data/accountability_rules.yaml``) follow the city rule in the
domain brief; a locality replaces them with ``GRIDWATCH_ACCOUNTABILITY_RULES_FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from gridwatch import taxonomy


class RulesError(ValueError):
    """A rules or factor-map file is malformed."""


class TargetingError(ValueError):
    """A targeting request that cannot be answered (unknown area, incomplete data, bad option)."""


@dataclass(frozen=True)
class QualityRules:
    """When an area's survey fieldwork is too weak to trust (see DOMAIN.md, 说普通话/挂断).

    Attributes
    ----------
    min_respondents : int
        Completed interviews below which the area is flagged.
    max_nonresponse_pct : float
        Refusals plus hang-ups, in % of all contacts, above which it is flagged.
    max_unknown_pct : float
        "Don't know" (说不清) answers to the security question, in %, above which it is flagged.
    random_pattern_p : float
        Answers whose mix cannot be told from guessing at this significance level are flagged.
    min_for_pattern_test : int
        Completed interviews needed before answer patterns are judged at all.
    """

    min_respondents: int = 30
    max_nonresponse_pct: float = 30.0
    max_unknown_pct: float = 15.0
    random_pattern_p: float = 0.05
    min_for_pattern_test: int = 20


@dataclass(frozen=True)
class AccountabilityRules:
    """The township accountability ladder and the county thresholds.

    Attributes
    ----------
    level, score, bottom_n
        Areas the ladder applies to, the survey figure that ranks them, and N of "bottom N".
    summons_after, yellow_card_after, listed_after : int
        Quarters in a row in the bottom N that lead to 约谈, 黄牌警告 and 挂牌重点整治.
    gap_breaks_streak : bool
        Whether a calendar quarter without any survey wave breaks a run of quarters.
    veto_listings, veto_within_quarters : int
        Listed this many times within this many quarters → 一票否决.
    veto_annual_below, veto_annual_years, veto_annual_in_bottom
        Annual score below the first for the second number of years running (while in the
        bottom N of the annual ranking when the third is set) → 一票否决.
    min_quarters_for_annual : int
        Quarters needed before a year's mean of quarterly scores counts as its annual score.
    red_line_pct, target_pct : float
        The 80 % red line and the 90 % target.
    county_level, safe_title_min_pct, safe_city_min_share_pct
        Level of counties, the annual score a safe county (平安县) needs, and the share of safe
        counties a city needs to apply for the safe-city title.
    quality : QualityRules
    """

    level: str = "township"
    score: str = "security_pct"
    bottom_n: int = 5
    summons_after: int = 1
    yellow_card_after: int = 2
    listed_after: int = 3
    gap_breaks_streak: bool = True
    veto_listings: int = 2
    veto_within_quarters: int = 8
    veto_annual_below: float = 80.0
    veto_annual_years: int = 2
    veto_annual_in_bottom: bool = True
    min_quarters_for_annual: int = 4
    red_line_pct: float = 80.0
    target_pct: float = 90.0
    county_level: str = "county"
    safe_title_min_pct: float = 80.0
    safe_city_min_share_pct: float = 75.0
    quality: QualityRules = QualityRules()


def read_yaml_mapping(path: Path | None, default_name: str) -> tuple[dict[str, Any], str]:
    """Read a YAML mapping from ``path`` or the shipped ``gridwatch.data`` file.

    Returns
    -------
    tuple
        The mapping and a name for messages; problems raise :class:`RulesError`.
    """
    return taxonomy.read_yaml_mapping(path, default_name, RulesError)


def _section(data: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, dict):
        raise RulesError(f"{source}: '{name}' must be a mapping")
    return value


def _number(
    section: dict[str, Any], key: str, default: float, source: str, integer: bool = False
) -> Any:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RulesError(f"{source}: {key} must be a number, not {value!r}")
    if integer and value != int(value):
        raise RulesError(f"{source}: {key} must be a whole number, not {value!r}")
    if value < 0:
        raise RulesError(f"{source}: {key} cannot be negative")
    return int(value) if integer else float(value)


def _flag(section: dict[str, Any], key: str, default: bool, source: str) -> bool:
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise RulesError(f"{source}: {key} must be true or false, not {value!r}")
    return value


@lru_cache(maxsize=8)
def load_accountability_rules(path: Path | None = None) -> AccountabilityRules:
    """Load the accountability rules (the shipped defaults when ``path`` is ``None``).

    Raises
    ------
    RulesError
        When the file is unreadable or a value has the wrong type or order.
    """
    data, source = read_yaml_mapping(path, "accountability_rules.yaml")
    d = AccountabilityRules()
    ranking = _section(data, "ranking", source)
    ladder = _section(data, "ladder", source)
    veto = _section(ladder, "veto", source)
    thresholds = _section(data, "thresholds", source)
    county = _section(data, "county", source)
    quality = _section(data, "survey_quality", source)
    q = QualityRules()
    rules = AccountabilityRules(
        level=str(ranking.get("level", d.level)),
        score=str(ranking.get("score", d.score)),
        bottom_n=_number(ranking, "bottom_n", d.bottom_n, source, integer=True),
        summons_after=_number(ladder, "summons_after", d.summons_after, source, True),
        yellow_card_after=_number(ladder, "yellow_card_after", d.yellow_card_after, source, True),
        listed_after=_number(ladder, "listed_after", d.listed_after, source, True),
        gap_breaks_streak=_flag(ladder, "gap_breaks_streak", d.gap_breaks_streak, source),
        veto_listings=_number(veto, "listings", d.veto_listings, source, True),
        veto_within_quarters=_number(
            veto, "within_quarters", d.veto_within_quarters, source, True
        ),
        veto_annual_below=_number(veto, "annual_below", d.veto_annual_below, source),
        veto_annual_years=_number(veto, "annual_years", d.veto_annual_years, source, True),
        veto_annual_in_bottom=_flag(veto, "annual_in_bottom", d.veto_annual_in_bottom, source),
        min_quarters_for_annual=_number(
            veto, "min_quarters_for_annual", d.min_quarters_for_annual, source, True
        ),
        red_line_pct=_number(thresholds, "red_line_pct", d.red_line_pct, source),
        target_pct=_number(thresholds, "target_pct", d.target_pct, source),
        county_level=str(county.get("level", d.county_level)),
        safe_title_min_pct=_number(county, "safe_title_min_pct", d.safe_title_min_pct, source),
        safe_city_min_share_pct=_number(
            county, "safe_city_min_share_pct", d.safe_city_min_share_pct, source
        ),
        quality=QualityRules(
            min_respondents=_number(quality, "min_respondents", q.min_respondents, source, True),
            max_nonresponse_pct=_number(
                quality, "max_nonresponse_pct", q.max_nonresponse_pct, source
            ),
            max_unknown_pct=_number(quality, "max_unknown_pct", q.max_unknown_pct, source),
            random_pattern_p=_number(quality, "random_pattern_p", q.random_pattern_p, source),
            min_for_pattern_test=_number(
                quality, "min_for_pattern_test", q.min_for_pattern_test, source, True
            ),
        ),
    )
    if not 0 < rules.summons_after <= rules.yellow_card_after <= rules.listed_after:
        raise RulesError(
            f"{source}: the ladder needs 0 < summons_after <= yellow_card_after <= listed_after"
        )
    if rules.bottom_n < 1:
        raise RulesError(f"{source}: bottom_n must be at least 1")
    if rules.red_line_pct > rules.target_pct:
        raise RulesError(f"{source}: red_line_pct cannot be above target_pct")
    return rules
