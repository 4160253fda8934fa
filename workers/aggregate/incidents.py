"""Incident counts per grid and period, and the area tree they roll up along.

Counts are kept "wide": one row per (area, period) with additive columns (totals, night,
solved, …, and one ``cat:<code>`` column per category), so rolling up to villages, townships
and the county is a plain group-by sum, and ratios are derived only at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from gridwatch.periods import PeriodKind, period_of

PERIOD_KINDS: tuple[PeriodKind, ...] = ("year", "quarter", "month", "week", "day")
#: Columns that add up across areas (everything else is derived from them).
ADDITIVE = (
    "incidents_total",
    "incidents_reported",
    "incidents_patrol",
    "incidents_night",
    "incidents_solved",
    "solved_not_notified",
    "incidents_blind_spot",
)
CATEGORY_PREFIX = "cat:"
NIGHT_START_HOUR = 20
NIGHT_END_HOUR = 6


@lru_cache(maxsize=65_536)
def _label(day_number: int, kind: PeriodKind) -> str:
    """Return the label of the period of ``kind`` holding day ``day_number`` (days since 1970)."""
    return period_of(EPOCH_DAY + timedelta(days=day_number), kind).label


EPOCH_DAY = date(1970, 1, 1)


def count_by_period(
    incidents: pd.DataFrame,
    tz: ZoneInfo,
    kinds: Sequence[PeriodKind] = PERIOD_KINDS,
    categories: Iterable[str] = (),
) -> dict[str, pd.DataFrame]:
    """Count incidents per grid and period, one frame per period kind (vectorised).

    Computed with integer keys and :func:`numpy.bincount` (no group-by per kind).

    Parameters
    ----------
    incidents : pandas.DataFrame
        Columns ``grid_id`` (rows without a grid are ignored), ``category``, optionally
        ``outside_view`` (bool: seen by no working camera), and either ``occurred_at`` (UTC),
        ``source``, ``status``, ``solved_at``, ``victim_notified_at``, or, as the engine reads
        them, ``occurred_s`` (epoch seconds) and booleans ``is_patrol``, ``is_solved`` (status
        solved or closed, or a solved time) and ``victim_notified``.
    tz : zoneinfo.ZoneInfo
        Zone in which periods and night hours are cut.
    kinds : sequence of str
        Period kinds to count.
    categories : iterable of str
        Category codes that always get a column (others appear when present).

    Returns
    -------
    dict
        Period kind → frame with ``area_id``, ``period`` (categorical), the :data:`ADDITIVE`
        columns and one ``cat:<code>`` column per category (int64), sorted by area and period.
    """
    frame = incidents[incidents["grid_id"].notna()]
    wanted = list(dict.fromkeys(categories))
    category_codes, category_values = pd.factorize(frame["category"].to_numpy(dtype=object))
    present = sorted({str(v) for v in category_values} - set(wanted))
    cat_names = wanted + present
    columns = ["area_id", "period", *ADDITIVE, *(f"{CATEGORY_PREFIX}{c}" for c in cat_names)]
    if frame.empty:
        return {kind: pd.DataFrame(columns=columns) for kind in kinds}
    if "occurred_s" in frame:
        occurred = pd.to_datetime(frame["occurred_s"].to_numpy(dtype=np.int64), unit="s", utc=True)
    else:
        occurred = pd.to_datetime(frame["occurred_at"], utc=True)
    local = pd.DatetimeIndex(occurred).tz_convert(tz)
    hours = local.hour.to_numpy()
    if "is_patrol" in frame:
        patrol = frame["is_patrol"].to_numpy(dtype=bool)
        solved = frame["is_solved"].to_numpy(dtype=bool)
        notified = frame["victim_notified"].to_numpy(dtype=bool)
    else:
        patrol = (frame["source"] == "patrol").to_numpy(dtype=bool)
        solved = (
            frame["status"].isin(("solved", "closed")).to_numpy()
            | frame["solved_at"].notna().to_numpy()
        )
        notified = frame["victim_notified_at"].notna().to_numpy()
    flags = {
        "incidents_reported": ~patrol,
        "incidents_patrol": patrol,
        "incidents_night": (hours >= NIGHT_START_HOUR) | (hours < NIGHT_END_HOUR),
        "incidents_solved": solved,
        "solved_not_notified": solved & ~notified,
        "incidents_blind_spot": (
            frame["outside_view"].to_numpy().astype(bool)
            if "outside_view" in frame
            else np.zeros(len(frame), dtype=bool)
        ),
    }
    position = {name: i for i, name in enumerate(cat_names)}
    value_position = np.array([position[str(v)] for v in category_values], dtype=np.int64)
    cat_code = value_position[category_codes] if len(category_values) else category_codes
    grid_code, grid_values = pd.factorize(frame["grid_id"].astype("int64"), sort=True)
    days = local.tz_localize(None).values.astype("datetime64[D]")
    unique_days, day_code = np.unique(days, return_inverse=True)
    out: dict[str, pd.DataFrame] = {}
    n_cats = len(cat_names)
    for kind in kinds:
        day_labels = [_label(int(d), kind) for d in unique_days.astype(np.int64)]
        labels, label_of_day = np.unique(np.array(day_labels, dtype=object), return_inverse=True)
        key = grid_code.astype(np.int64) * len(labels) + label_of_day[day_code]
        keys, row = np.unique(key, return_inverse=True)
        n = len(keys)
        data: dict[str, np.ndarray] = {
            "area_id": np.asarray(grid_values)[keys // len(labels)].astype(np.int64),
            "period": pd.Categorical.from_codes(keys % len(labels), categories=labels),
            "incidents_total": np.bincount(row, minlength=n).astype(np.int64),
        }
        for name, flag in flags.items():
            data[name] = np.bincount(row[flag], minlength=n).astype(np.int64)
        cats = np.bincount(row * n_cats + cat_code, minlength=n * n_cats).reshape(n, n_cats)
        for i, name in enumerate(cat_names):
            data[f"{CATEGORY_PREFIX}{name}"] = cats[:, i].astype(np.int64)
        out[kind] = pd.DataFrame(data, columns=columns)
    return out


def ancestors_table(areas: pd.DataFrame) -> pd.DataFrame:
    """Map every area to itself and each of its ancestors.

    Parameters
    ----------
    areas : pandas.DataFrame
        Columns ``id``, ``parent_id``, ``level``.

    Returns
    -------
    pandas.DataFrame
        Columns ``area_id`` (the descendant), ``ancestor_id``, ``ancestor_level``.
    """
    key = (
        len(areas),
        int(pd.util.hash_pandas_object(areas[["id", "parent_id", "level"]], index=False).sum()),
    )
    cached = _ANCESTORS.get(key)
    if cached is not None:
        return cached.copy()
    table = _ancestors(areas)
    _ANCESTORS.clear()
    _ANCESTORS[key] = table
    return table.copy()


#: The last area tree's table, keyed by the tree's content (engines ask for it several times
#: a run, and it changes only when areas are imported).
_ANCESTORS: dict[tuple[int, int], pd.DataFrame] = {}


def _ancestors(areas: pd.DataFrame) -> pd.DataFrame:
    parent: dict[int, int | None] = {
        int(a): (None if p is None or p != p else int(p))
        for a, p in zip(areas["id"], areas["parent_id"], strict=True)
    }
    level = {int(a): str(v) for a, v in zip(areas["id"], areas["level"], strict=True)}
    rows = []
    for area_id in parent:
        current: int | None = area_id
        seen: set[int] = set()
        while current is not None and current not in seen:
            seen.add(current)
            rows.append((area_id, current, level[current]))
            current = parent.get(current)
    return pd.DataFrame(rows, columns=["area_id", "ancestor_id", "ancestor_level"])
