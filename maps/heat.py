"""Incident heat layers that stay small however many incidents there are.

Three forms, all aggregated on the server: the run's kernel-density raster drawn as one PNG
image overlay (a few tens of kB for a county); for one category group, weighted points
pre-binned per grid for Leaflet.heat; and the last weeks' per-grid counts with a time slider
(:class:`WeeklyHeatLayer`: the cells are listed once, each week holds only the cells with
incidents). Raw incidents never reach the page.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import folium
import numpy as np
from folium.elements import JSCSSMixin
from folium.plugins import HeatMap
from folium.template import Template

from gridwatch.maps.layers import COORD_DIGITS, script_json

#: Colour stops of the heat ramp (value 0 → 1), RGB.
HEAT_STOPS = np.array(
    [[255, 255, 178], [254, 204, 92], [253, 141, 60], [240, 59, 32], [189, 0, 38]], dtype=float
)
#: Cells below this share of the top value stay transparent.
HEAT_FLOOR = 0.04
#: Leaflet.heat's gradient, matching :data:`HEAT_STOPS`.
HEAT_GRADIENT = {0.2: "#ffffb2", 0.4: "#fecc5c", 0.6: "#fd8d3c", 0.8: "#f03b20", 1.0: "#bd0026"}


@dataclass(frozen=True)
class DensityRaster:
    """A kernel-density raster: ``values`` rows run north to south, columns west to east.

    Attributes
    ----------
    values : numpy.ndarray
        2-D float array (incidents per km²); ``nan`` or 0 where nothing is shown.
    west, south, east, north : float
        Outer edges of the raster in WGS84 degrees.
    """

    values: np.ndarray
    west: float
    south: float
    east: float
    north: float

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the longitudes of the columns' and latitudes of the rows' centres."""
        rows, cols = self.values.shape
        dx = (self.east - self.west) / cols
        dy = (self.north - self.south) / rows
        lon = self.west + dx * (np.arange(cols) + 0.5)
        lat = self.north - dy * (np.arange(rows) + 0.5)
        return lon, lat


def _mercator_y(lat: np.ndarray) -> np.ndarray:
    return np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))


def _to_web_mercator_rows(image: np.ndarray, south: float, north: float) -> np.ndarray:
    # Leaflet stretches an image overlay linearly in Web Mercator, while the raster's rows are
    # evenly spaced in latitude: resample the rows (nearest) so each lands at its latitude.
    rows = image.shape[0]
    y = np.linspace(_mercator_y(np.array(north)), _mercator_y(np.array(south)), rows)
    lat = np.degrees(2 * np.arctan(np.exp(y)) - np.pi / 2)
    source = np.clip(((north - lat) / (north - south) * rows).astype(int), 0, rows - 1)
    return image[source]


def density_image(raster: DensityRaster, opacity: float = 0.8) -> np.ndarray:
    """Colour the raster as an RGBA ``uint8`` image (transparent where the density is low)."""
    values = np.nan_to_num(np.asarray(raster.values, dtype=float), nan=0.0)
    positive = values[values > 0]
    top = float(np.quantile(positive, 0.995)) if positive.size else 0.0
    scaled = np.clip(values / top, 0.0, 1.0) if top > 0 else np.zeros_like(values)
    position = scaled * (len(HEAT_STOPS) - 1)
    low = np.floor(position).astype(int).clip(0, len(HEAT_STOPS) - 2)
    frac = (position - low)[..., None]
    rgb = HEAT_STOPS[low] * (1 - frac) + HEAT_STOPS[low + 1] * frac
    alpha = np.where(scaled < HEAT_FLOOR, 0.0, (0.35 + 0.65 * scaled) * opacity * 255)
    image = np.dstack([rgb, alpha[..., None]]).round().astype(np.uint8)
    return _to_web_mercator_rows(image, raster.south, raster.north)


def density_layer(raster: DensityRaster, name: str, show: bool = True) -> folium.map.Layer:
    """Return the density raster as an image overlay (a PNG ``data:`` URL)."""
    return folium.raster_layers.ImageOverlay(
        image=density_image(raster),
        bounds=[[raster.south, raster.west], [raster.north, raster.east]],
        pixelated=False,
        name=name,
        show=show,
        interactive=False,
    )


def heat_points_layer(
    lon: Sequence[float],
    lat: Sequence[float],
    weight: Sequence[float],
    name: str,
    show: bool = True,
) -> folium.map.Layer:
    """Return weighted, pre-binned points (e.g. one per grid) as a Leaflet.heat layer.

    Weights are scaled to 0–1; points of weight 0 are left out.
    """
    w = np.asarray(weight, dtype=float)
    top = float(w.max()) if w.size else 0.0
    data = [
        [round(float(y), COORD_DIGITS), round(float(x), COORD_DIGITS), round(v / top, 3)]
        for x, y, v in zip(lon, lat, w, strict=True)
        if top > 0 and math.isfinite(v) and v > 0
    ]
    return HeatMap(
        data,
        name=name,
        show=show,
        radius=22,
        blur=18,
        min_opacity=0.25,
        gradient=HEAT_GRADIENT,
    )


@dataclass(frozen=True)
class WeeklyCounts:
    """Incident counts per cell (e.g. per grid) in consecutive weeks, oldest first.

    Attributes
    ----------
    lon, lat : numpy.ndarray
        The cells' points (WGS84), one per column of ``counts``.
    labels : list of str
        One label per week (row of ``counts``), shown by the slider.
    counts : numpy.ndarray
        ``(weeks, cells)`` incident counts.
    """

    lon: np.ndarray
    lat: np.ndarray
    labels: list[str]
    counts: np.ndarray


def weekly_heat_payload(weekly: WeeklyCounts) -> dict[str, Any]:
    """Return the weeks in the compact form the slider layer draws.

    ``{"points": [[lat, lon], ...], "weeks": [[label, [cell, ...], [weight, ...]], ...]}``:
    only cells with an incident in some week are listed, each week names only its cells with
    incidents, and weights are scaled by the largest count of all weeks, so the weeks compare.
    """
    counts = np.nan_to_num(np.asarray(weekly.counts, dtype=float), nan=0.0).clip(min=0)
    counts = counts.reshape(len(weekly.labels), len(weekly.lon))
    used = np.flatnonzero(counts.sum(axis=0) > 0)
    top = float(counts.max()) if counts.size else 0.0
    points = [
        [round(float(weekly.lat[i]), COORD_DIGITS), round(float(weekly.lon[i]), COORD_DIGITS)]
        for i in used
    ]
    weeks = []
    for label, row in zip(weekly.labels, counts[:, used], strict=True):
        cells = np.flatnonzero(row > 0)
        weights = [round(float(v) / top, 3) for v in row[cells]]
        weeks.append([label, cells.tolist(), weights])
    return {"points": points, "weeks": weeks}


class WeeklyHeatLayer(JSCSSMixin, folium.map.Layer):
    """A Leaflet.heat layer with a slider (and a play button) stepping through weeks.

    The slider is GridWatch's own control (``gridwatch-map.js``), shown while the layer is
    on; it opens on the newest week.

    Parameters
    ----------
    weekly : WeeklyCounts or str
        The counts, or the same-origin URL answering their :func:`weekly_heat_payload`
        (fetched when the layer is first switched on).
    name : str
        Name in the layer control and title of the slider.
    show : bool
        Whether the layer is on when the map opens.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GridWatchMap.heatWeeks({{ this._parent.get_name() }},
            {{ this.data_json }}, {{ this.options|tojson }});
        {% endmacro %}
        """
    )
    default_js = [("leaflet-heat.js", "leaflet-heat.js")]

    def __init__(self, weekly: WeeklyCounts | str, name: str, show: bool = True) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "WeeklyHeatLayer"
        self.data = weekly if isinstance(weekly, str) else weekly_heat_payload(weekly)
        self.options = {
            "title": name,
            "radius": 22,
            "blur": 18,
            "minOpacity": 0.25,
            "gradient": {str(k): v for k, v in HEAT_GRADIENT.items()},
        }
        self.data_json = ""

    def render(self, **kwargs: Any) -> Any:
        """Serialise the weeks as JSON safe inside ``<script>``."""
        self.data_json = script_json(self.data)
        return super().render(**kwargs)


__all__ = [
    "HEAT_FLOOR",
    "DensityRaster",
    "WeeklyCounts",
    "WeeklyHeatLayer",
    "weekly_heat_payload",
    "density_image",
    "density_layer",
    "heat_points_layer",
]
