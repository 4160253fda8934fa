"""Incident category taxonomy and survey dissatisfaction factors, loaded from YAML.

Both lists are configuration: the shipped defaults live in :mod:`gridwatch.data` and a
locality replaces them with ``GRIDWATCH_CATEGORIES_FILE`` / ``GRIDWATCH_SURVEY_FACTORS_FILE``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class TaxonomyError(ValueError):
    """A taxonomy or factor file is malformed."""


def _norm(value: str) -> str:
    return unicodedata.normalize("NFKC", str(value)).strip().casefold().replace(" ", "_")


@dataclass(frozen=True)
class Category:
    """One incident category (``code``, names and the groups it belongs to)."""

    code: str
    zh: str
    en: str
    groups: tuple[str, ...] = ()


@dataclass
class Taxonomy:
    """The category list with its groups and a lookup from any accepted spelling to a code."""

    categories: dict[str, Category]
    groups: dict[str, dict[str, str]]
    _lookup: dict[str, str] = field(default_factory=dict, repr=False)

    def resolve(self, value: object) -> str | None:
        """Return the category code for a code, Chinese/English name or alias, else ``None``."""
        if value is None:
            return None
        return self._lookup.get(_norm(str(value)))

    def in_group(self, group: str) -> list[str]:
        """Return the codes of the categories in ``group``."""
        if group not in self.groups:
            raise KeyError(f"unknown category group {group!r}")
        return [c.code for c in self.categories.values() if group in c.groups]


@dataclass(frozen=True)
class SurveyFactor:
    """One dissatisfaction factor of the survey questionnaire."""

    code: str
    zh: str
    en: str


def read_yaml_mapping(
    path: Path | None, default_name: str, error: type[ValueError] = ValueError
) -> tuple[dict[str, Any], str]:
    """Read a YAML mapping from ``path`` or the shipped ``gridwatch.data`` file.

    Parameters
    ----------
    path : pathlib.Path or None
        The file; ``None`` for the shipped default.
    default_name : str
        Name of the shipped file in ``gridwatch.data``.
    error : type
        Exception raised (with a one-sentence message naming the file) when the file cannot
        be read, is not UTF-8, is not YAML or is not a mapping.

    Returns
    -------
    tuple
        The mapping and a name for messages.
    """
    if path is None:
        text = resources.files("gridwatch.data").joinpath(default_name).read_text("utf-8")
        source = default_name
    else:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except UnicodeDecodeError as exc:
            # Files saved from Chinese Windows editors are often GBK.
            raise error(f"{source}: not UTF-8 text; save it as UTF-8") from exc
        except OSError as exc:
            raise error(f"{source}: cannot be read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping at the top level")
    return data, source


def _read_yaml(path: Path | None, default_name: str) -> dict[str, Any]:
    data, source = read_yaml_mapping(path, default_name, TaxonomyError)
    data["_source"] = source
    return data


@lru_cache(maxsize=8)
def load_taxonomy(path: Path | None = None) -> Taxonomy:
    """Load the category taxonomy (the shipped default when ``path`` is ``None``)."""
    data = _read_yaml(path, "categories.yaml")
    source = data["_source"]
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise TaxonomyError(f"{source}: 'groups' must be a mapping of code to names")
    raw = data.get("categories")
    if not isinstance(raw, dict) or not raw:
        raise TaxonomyError(f"{source}: no 'categories' mapping")
    categories: dict[str, Category] = {}
    lookup: dict[str, str] = {}
    for code, spec in raw.items():
        spec = spec or {}
        if not isinstance(spec, dict):
            raise TaxonomyError(f"{source}: category {code!r} must be a mapping (zh, en, …)")
        for key in ("groups", "aliases"):
            # A bare string would be iterated character by character.
            if not isinstance(spec.get(key) or [], list):
                raise TaxonomyError(f"{source}: {key} of category {code!r} must be a list")
        cat_groups = tuple(spec.get("groups") or ())
        unknown = [g for g in cat_groups if g not in groups]
        if unknown:
            raise TaxonomyError(f"{source}: category {code!r} names unknown groups {unknown}")
        cat = Category(str(code), str(spec.get("zh", code)), str(spec.get("en", code)), cat_groups)
        categories[cat.code] = cat
        for spelling in [cat.code, cat.zh, cat.en, *(spec.get("aliases") or [])]:
            key = _norm(str(spelling))
            if key in lookup and lookup[key] != cat.code:
                raise TaxonomyError(
                    f"{source}: {spelling!r} names both {lookup[key]!r} and {cat.code!r}"
                )
            lookup[key] = cat.code
    return Taxonomy(categories=categories, groups=dict(groups), _lookup=lookup)


@lru_cache(maxsize=8)
def load_survey_factors(path: Path | None = None) -> dict[str, SurveyFactor]:
    """Load the survey dissatisfaction factors, in questionnaire order."""
    data = _read_yaml(path, "survey_factors.yaml")
    raw = data.get("factors")
    if not isinstance(raw, dict) or not raw:
        raise TaxonomyError(f"{data['_source']}: no 'factors' mapping")
    bad = [code for code, spec in raw.items() if not isinstance(spec, dict)]
    if bad:
        raise TaxonomyError(f"{data['_source']}: factors {bad} must be mappings (zh, en)")
    return {
        str(code): SurveyFactor(str(code), str(s.get("zh", code)), str(s.get("en", code)))
        for code, s in raw.items()
    }
