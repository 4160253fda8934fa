"""The patrol-track layer: recent tracks per team, simplified on the server, one colour a team.

Raw GPS pings never reach the page. :func:`track_payload` cuts each team's pings into tracks
where the team paused (a gap longer than :data:`GAP_MINUTES`), simplifies every track
(Douglas–Peucker, :data:`SIMPLIFY_M`) and rounds it to 5 decimals; a straight stretch of a
hundred pings becomes two points. ``gridwatch-map.js`` draws them as lines with a text-only
tooltip naming the team.
"""

from __future__ import annotations

from typing import Any

import folium
import numpy as np
import pandas as pd
import shapely
from folium.template import Template

from gridwatch.maps.layers import COORD_DIGITS, script_json

#: A pause longer than this (minutes) between two pings of a team starts a new track.
GAP_MINUTES = 20
#: Simplification tolerance of the tracks, in metres (about a street's width).
SIMPLIFY_M = 15.0
#: Metres per degree of latitude.
METRES_PER_DEGREE = 111_320.0
#: How a track's first and last times are shown.
TIME_FORMAT = "%Y-%m-%d %H:%M"
#: Team colours (ColorBrewer Set1 and Dark2), reused in turn when there are more teams.
TEAM_COLOURS = (
    "#e41a1c",
    "#377eb8",
    "#4daf4a",
    "#984ea3",
    "#ff7f00",
    "#a65628",
    "#f781bf",
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
)


def _split(times: np.ndarray, gap: np.timedelta64) -> list[slice]:
    breaks = np.flatnonzero(np.diff(times) > gap) + 1
    edges = [0, *breaks.tolist(), len(times)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _simplified(lon: np.ndarray, lat: np.ndarray, tolerance_m: float) -> list[float]:
    """Return a track as flat ``[lat, lon, lat, lon, …]``, simplified and rounded."""
    if len(lon) == 1:
        points = np.column_stack([lat, lon])
    else:
        # Simplify in a local equirectangular frame, so the tolerance is metres both ways.
        scale = np.cos(np.radians(float(np.mean(lat))))
        line = shapely.linestrings(np.column_stack([lon * scale, lat]))
        coords = shapely.get_coordinates(
            shapely.simplify(line, tolerance_m / METRES_PER_DEGREE, preserve_topology=False)
        )
        points = np.column_stack([coords[:, 1], coords[:, 0] / scale])
    rounded = np.round(points, COORD_DIGITS)
    # Rounding can leave consecutive duplicates (a team standing still).
    keep = np.ones(len(rounded), dtype=bool)
    keep[1:] = np.any(np.diff(rounded, axis=0) != 0, axis=1)
    return [float(v) for v in rounded[keep].ravel()]


def track_payload(
    pings: pd.DataFrame,
    gap_minutes: float = GAP_MINUTES,
    tolerance_m: float = SIMPLIFY_M,
) -> dict[str, Any]:
    """Return the pings as simplified tracks per team, the compact form the layer draws.

    Parameters
    ----------
    pings : pandas.DataFrame
        ``team_code``, ``team_name``, ``ts`` (datetime), ``lon``, ``lat`` (WGS84), any order.
    gap_minutes : float
        A longer pause between two pings of a team starts a new track.
    tolerance_m : float
        Douglas–Peucker tolerance in metres.

    Returns
    -------
    dict
        ``{"teams": [[code, name, colour], ...], "tracks": [[team index, start, end,
        [lat, lon, lat, lon, ...]], ...]}`` with ``start``/``end`` as text
        (:data:`TIME_FORMAT`, in the zone of ``ts``); teams sorted by code, each with its own
        colour (reused after :data:`TEAM_COLOURS`).
    """
    teams: list[list[str]] = []
    tracks: list[list[Any]] = []
    if pings.empty:
        return {"teams": teams, "tracks": tracks}
    stamps = pd.to_datetime(pings["ts"])
    # Gaps are measured on UTC instants; the times shown stay in the pings' own zone.
    instants = stamps.dt.tz_convert("UTC").dt.tz_localize(None) if stamps.dt.tz else stamps
    frame = pings.assign(ts=stamps, _instant=instants).sort_values(["team_code", "_instant"])
    gap = np.timedelta64(int(gap_minutes * 60), "s")
    for index, (code, team) in enumerate(frame.groupby("team_code", sort=True)):
        name = team["team_name"].iloc[0]
        teams.append(
            [str(code), str(name if name is not None else code), TEAM_COLOURS[index % 12]]
        )
        times = team["_instant"].to_numpy(dtype="datetime64[ns]")
        shown = team["ts"].dt.strftime(TIME_FORMAT).to_numpy()
        lon = team["lon"].to_numpy(dtype=float)
        lat = team["lat"].to_numpy(dtype=float)
        for part in _split(times, gap):
            tracks.append(
                [
                    index,
                    str(shown[part][0]),
                    str(shown[part][-1]),
                    _simplified(lon[part], lat[part], tolerance_m),
                ]
            )
    return {"teams": teams, "tracks": tracks}


class TrackLayer(folium.map.Layer):
    """Patrol tracks as lines, coloured per team, with a text-only tooltip.

    Parameters
    ----------
    data : dict or str
        A :func:`track_payload`, or the same-origin URL answering one (fetched when the
        layer is first switched on).
    labels : dict
        Tooltip labels ``team``, ``code``, ``from``, ``to`` and the legend's ``title``.
    name : str
        Name in the layer control.
    show : bool
        Whether the layer is on when the map opens.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GridWatchMap.tracks({{ this._parent.get_name() }},
            {{ this.source }}, {{ this.labels|tojson }});
        {% endmacro %}
        """
    )

    def __init__(
        self, data: dict[str, Any] | str, labels: dict[str, str], name: str, show: bool = True
    ) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "TrackLayer"
        self.data = data
        self.labels = labels
        self.source = ""

    def render(self, **kwargs: Any) -> Any:
        """Serialise the tracks (or their URL) as JSON safe inside ``<script>``."""
        self.source = script_json(self.data)
        return super().render(**kwargs)


def track_layer(
    data: dict[str, Any] | str,
    name: str,
    labels: dict[str, str],
    show: bool = True,
) -> TrackLayer:
    """Return the track layer; its legend (the teams' colours) is built in the page.

    ``labels`` holds the tooltip labels ``team``, ``code``, ``from``, ``to``; ``name`` is
    also the legend's title.
    """
    return TrackLayer(data, {**labels, "title": name}, name, show)


__all__ = [
    "GAP_MINUTES",
    "SIMPLIFY_M",
    "TEAM_COLOURS",
    "TrackLayer",
    "track_layer",
    "track_payload",
]
