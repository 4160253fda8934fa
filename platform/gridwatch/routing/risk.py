"""Risk per candidate stop and local hour, from the published metrics and recent incidents.

Score
-----
For each grid ``g`` in a station's reach (its townships' grids, plus neighbouring stations'
grids within the border distance, for joint defence):

``F``
    forecast incidents for the next week (published run), divided by the largest in reach;
``R``
    reported incidents (110 calls and walk-ins, not patrol findings) in the 90 days before the
    plan date, divided by the largest in reach;
``H``
    1 when the grid is a Gi* hot spot (``hot_*``) in the last complete month or has an
    active emerging class (new, intensifying, persistent, consecutive), else 0;
``B``
    incidents no working camera saw (blind spots) in the last complete month, divided by
    the largest in reach.

``P``
    1 when the township prevention plan names the grid a patrol-focus grid, else 0 (only when
    the caller passes the plan's focus grids; routing never computes the plan itself).

``base = (w_F F + w_R R + w_H H + w_B B + w_P P) / (w_F + w_R + w_H + w_B + w_P)`` with
configurable weights (``GRIDWATCH_ROUTE_RISK_WEIGHTS``; ``w_P`` is the ``focus`` weight, and
without focus grids the term is left out of the score altogether). The hour profile of a grid
is the share of its recent incidents at each local hour, shrunk towards the whole reach's
profile with 5 pseudo-incidents (and that profile towards uniform with one per hour), so a grid
whose incidents happen at night weighs more on a night shift. Risk per minute of presence at
hour ``h`` is ``base × 24 × profile_g(h)`` for the first four terms; the focus term's hour shape
is half the grid's profile and half its peak hours from the plan (``24 / k`` at each of its
``k`` peak hours), so a focus grid weighs most at the hours the plan names, and the term's
mean over the day is still ``w_P P``. Candidates are the grids with the highest mean risk over
the shift's hours. A candidate's stop is its grid's representative point (shapely
``point_on_surface``, always inside the grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

FloatArray = npt.NDArray[np.float64]

#: Emerging hot-spot classes that count as "hot" for planning.
ACTIVE_CLASSES: Final = frozenset({"new", "intensifying", "persistent", "consecutive"})
#: Pseudo-incidents with which a grid's hour profile is shrunk towards the reach's profile.
PROFILE_PRIOR: Final = 5.0
WEIGHT_NAMES: Final = ("forecast", "recent", "hotspot", "blind_spot")
#: Weight of the prevention plan's patrol-focus grids (``focus`` in the weights setting).
FOCUS_WEIGHT_NAME: Final = "focus"
DEFAULT_WEIGHTS: Final = {
    "forecast": 0.4,
    "recent": 0.3,
    "hotspot": 0.2,
    "blind_spot": 0.1,
    "focus": 0.15,
}


@dataclass(frozen=True)
class GridRisk:
    """One grid's risk inputs and result."""

    grid_code: str
    lon: float
    lat: float
    base: float
    risk_by_hour: tuple[float, ...]
    shift_risk: float


def hour_profiles(hours: pd.DataFrame, grid_codes: list[str]) -> FloatArray:
    """Return a ``len(grid_codes) × 24`` matrix of shrunk hour-of-day profiles (rows sum to 1).

    Parameters
    ----------
    hours : pandas.DataFrame
        Columns ``grid_code`` and ``hour`` (local hour 0–23), one row per incident.
    grid_codes : list of str
        Row order.
    """
    counts = np.zeros((len(grid_codes), 24), dtype=np.float64)
    if not hours.empty:
        position = {code: i for i, code in enumerate(grid_codes)}
        rows = hours["grid_code"].map(position)
        known = rows.notna().to_numpy()
        np.add.at(
            counts,
            (
                rows[known].to_numpy(dtype=np.int64),
                hours["hour"].to_numpy(dtype=np.int64)[known],
            ),
            1.0,
        )
    overall = (counts.sum(axis=0) + 1.0) / (counts.sum() + 24.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.asarray((counts + PROFILE_PRIOR * overall) / (totals + PROFILE_PRIOR))


def shift_hours(start_hour: float, minutes: int) -> list[int]:
    """Return the local hours (0–23) a shift touches, in order."""
    first = int(start_hour)
    last = int(start_hour + (minutes - 1) / 60)
    return [h % 24 for h in range(first, last + 1)]


def score_grids(
    frame: pd.DataFrame,
    hours: pd.DataFrame,
    weights: dict[str, float],
    shift_start_hour: float,
    shift_minutes: int,
    focus: Mapping[str, Sequence[int]] | None = None,
) -> list[GridRisk]:
    """Score grids for a shift, highest mean shift risk first (ties by grid code).

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per grid: ``grid_code``, ``lon``, ``lat`` (representative point), ``forecast``,
        ``recent``, ``hotspot`` (bool) and ``blind_spot`` (counts; missing values count 0).
    hours : pandas.DataFrame
        Recent incidents' ``grid_code`` and local ``hour``, for the hour profiles.
    weights : dict
        Weights of ``forecast``, ``recent``, ``hotspot``, ``blind_spot`` and ``focus``
        (non-negative, not all zero).
    shift_start_hour : float
        Local hour of the shift start.
    shift_minutes : int
        Shift length.
    focus : mapping, optional
        The prevention plan's patrol-focus grids: grid code → its peak local hours (0–23; may
        be empty). ``None`` leaves the focus term out (as does a ``focus`` weight of 0).
    """
    if frame.empty:
        return []
    focus_weight = max(0.0, float(weights.get(FOCUS_WEIGHT_NAME, 0.0))) if focus else 0.0
    total_weight = sum(max(0.0, float(weights.get(n, 0.0))) for n in WEIGHT_NAMES)
    total_weight += focus_weight
    if total_weight <= 0:
        raise ValueError("risk weights must not all be zero")
    codes = frame["grid_code"].astype(str).tolist()

    def scaled(name: str) -> FloatArray:
        values = pd.to_numeric(frame[name], errors="coerce").fillna(0.0).to_numpy(dtype=float)
        values = np.clip(values, 0.0, None)
        top = values.max() if values.size else 0.0
        return values / top if top > 0 else np.zeros_like(values)

    components = {
        "forecast": scaled("forecast"),
        "recent": scaled("recent"),
        "hotspot": frame["hotspot"].fillna(False).to_numpy(dtype=bool).astype(np.float64),
        "blind_spot": scaled("blind_spot"),
    }
    base = sum(max(0.0, float(weights.get(n, 0.0))) * components[n] for n in WEIGHT_NAMES)
    base = np.asarray(base, dtype=np.float64) / total_weight
    profiles = hour_profiles(hours, codes)
    risk = base[:, None] * 24.0 * profiles
    if focus and focus_weight > 0:
        term, shape = focus_shapes(codes, focus, profiles)
        share = focus_weight * term / total_weight
        base = base + share
        risk = risk + share[:, None] * shape
    on_shift = shift_hours(shift_start_hour, shift_minutes)
    shift_risk = risk[:, on_shift].mean(axis=1)
    order = sorted(range(len(codes)), key=lambda i: (-shift_risk[i], codes[i]))
    lon = frame["lon"].to_numpy(dtype=float)
    lat = frame["lat"].to_numpy(dtype=float)
    return [
        GridRisk(
            codes[i],
            float(lon[i]),
            float(lat[i]),
            float(base[i]),
            tuple(float(round(v, 6)) for v in risk[i]),
            float(shift_risk[i]),
        )
        for i in order
    ]


def focus_shapes(
    codes: list[str], focus: Mapping[str, Sequence[int]], profiles: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Return the focus term ``P`` per grid and its hour shape (rows with mean 1 over 24 h).

    A focus grid's shape is half ``24 × profile`` and half ``24 / k`` at each of its ``k``
    peak hours (all of it the profile when the plan gives no peak hours).
    """
    term = np.array([1.0 if code in focus else 0.0 for code in codes], dtype=np.float64)
    shape = 24.0 * profiles
    for i, code in enumerate(codes):
        peaks = sorted({int(h) % 24 for h in focus.get(code, ())})
        if peaks:
            peak_shape = np.zeros(24, dtype=np.float64)
            peak_shape[peaks] = 24.0 / len(peaks)
            shape[i] = 0.5 * shape[i] + 0.5 * peak_shape
    return term, np.asarray(shape)


def is_hot(hotspot: object, hotspot_class: object) -> bool:
    """Return whether a grid's published Gi* result or emerging class makes it a hot spot."""
    return (isinstance(hotspot, str) and hotspot.startswith("hot")) or (
        isinstance(hotspot_class, str) and hotspot_class in ACTIVE_CLASSES
    )
