"""Folium layers of GridWatch maps, built from plain GeoDataFrames.

Every polygon layer is a :class:`GeoJsonLayer`: the features carry only a few rounded
properties and a style index ``_s``; ``gridwatch-map.js`` styles them and builds the tooltips
with ``textContent``, so an area name such as ``<script>…`` shows as text and can never become
markup. The data are embedded through Jinja's ``tojson``, which escapes ``<``, ``>``, ``&`` and
``'``, so no text can close the surrounding ``<script>`` element either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import shapely
from branca.element import MacroElement
from folium.template import Template
from jinja2.utils import htmlsafe_json_dumps

#: Decimal places of map coordinates (about 1 m): plenty on screen, and a third of the bytes.
COORD_DIGITS = 5
#: Simplification tolerance of map polygons, in degrees (about 5 m).
SIMPLIFY_DEG = 0.00005
#: Tolerance of ``shapely.coverage_simplify`` (Visvalingam–Whyatt) for areas that tile the
#: map: at the same value it keeps about three times the vertices Douglas–Peucker keeps;
#: this one keeps about as many as :data:`SIMPLIFY_DEG` (5,000 grids: 124,000 vertices).
COVERAGE_SIMPLIFY_DEG = 0.0002
#: Marks a FeatureCollection whose coordinates :func:`delta_encode` packed.
DELTA_KEY = "gw_delta"

NO_DATA = "#d9d9d9"
#: Colour ramps, light to dark (ColorBrewer).
YELLOW_RED = ("#ffffb2", "#fecc5c", "#fd8d3c", "#f03b20", "#bd0026")
BLUES = ("#eff3ff", "#bdd7e7", "#6baed6", "#3182bd", "#08519c")
RED_GREEN = ("#d7191c", "#fdae61", "#ffffbf", "#a6d96a", "#1a9641")
BLUE_RED = ("#2c7bb6", "#74add1", "#abd9e9", "#f7f7f7", "#fdc68a", "#f4815d", "#d7191c")

#: Gi* hot-spot classes from hot to cold, with their colours.
HOTSPOT_COLOURS: dict[str, str] = {
    "hot_99": "#d7191c",
    "hot_95": "#f4815d",
    "hot_90": "#fdc68a",
    "cold_90": "#abd9e9",
    "cold_95": "#74add1",
    "cold_99": "#2c7bb6",
}
BLIND_SPOT_COLOUR = "#252525"


@dataclass(frozen=True)
class MetricScale:
    """How a metric is coloured: a ramp, and fixed class breaks or quantiles of the data."""

    colours: Sequence[str]
    breaks: Sequence[float] | None = None
    digits: int = 1
    integer: bool = False


#: Metrics a choropleth may show.
METRICS: dict[str, MetricScale] = {
    "incidents": MetricScale(YELLOW_RED, digits=0, integer=True),
    "incidents_per_1000": MetricScale(YELLOW_RED),
    "forecast_next": MetricScale(YELLOW_RED),
    "camera_coverage_pct": MetricScale(RED_GREEN, (20.0, 40.0, 60.0, 80.0), digits=0),
    "blind_spot_incident_pct": MetricScale(YELLOW_RED, (20.0, 40.0, 60.0, 80.0), digits=0),
    "patrol_minutes": MetricScale(BLUES, digits=0),
    "hours_since_last_visit": MetricScale(YELLOW_RED, (24.0, 72.0, 168.0, 336.0), digits=0),
    "gi_star_z": MetricScale(BLUE_RED, (-2.58, -1.96, -1.65, 1.65, 1.96, 2.58), digits=2),
}


def class_breaks(values: Sequence[float | None], scale: MetricScale) -> list[float]:
    """Return the upper-exclusive class breaks of ``values`` (at most ``len(colours) - 1``)."""
    if scale.breaks is not None:
        return list(scale.breaks)
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return []
    k = len(scale.colours)
    distinct = np.unique(np.round(data, scale.digits))
    if distinct.size <= k:
        # Few distinct values (a small county, counts of 1 and 2): quantiles would fall on
        # the commonest value and leave one class; give each value its own class instead.
        return [float(c) for c in distinct[1:]]
    cuts = np.unique(np.round(np.quantile(data, np.linspace(0, 1, k + 1)[1:-1]), scale.digits))
    breaks = [float(c) for c in cuts if c > data.min()]
    # Counts of a short period pile up on 0 and 1: their quantiles coincide and leave two
    # classes ("0", "≥ 1") while a few grids have 5 or 20. Cut the tail above the last break
    # by its own quantiles until every colour is used or no value is left to tell apart.
    while len(breaks) < k - 1:
        floor = breaks[-1] if breaks else float(data.min())
        tail = data[data > floor]
        if tail.size == 0:
            break
        room = k - 1 - len(breaks)
        more = np.round(np.quantile(tail, np.linspace(0, 1, room + 2)[1:-1]), scale.digits)
        added = sorted({float(c) for c in more if c > floor})
        if not added:
            lowest = float(np.round(tail.min(), scale.digits))
            if lowest <= floor:
                break
            added = [lowest]
        breaks.extend(added[:room])
    return breaks


def classify(value: float | None, breaks: Sequence[float]) -> int | None:
    """Return the class of ``value`` (0 … ``len(breaks)``), ``None`` without a value."""
    if value is None or not math.isfinite(value):
        return None
    return int(np.searchsorted(np.asarray(breaks, dtype=float), value, side="right"))


def _number(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def legend_items(
    breaks: Sequence[float], colours: Sequence[str], digits: int, integer: bool = False
) -> list[list[str]]:
    """Return ``[colour, "a – b"]`` legend rows for classes cut at ``breaks``.

    With ``integer`` (counts) a class ``[a, b)`` is written ``a – b-1``, or ``a`` alone.
    """
    ramp = ramp_for(len(breaks) + 1, colours)
    if not breaks:
        return [[ramp[0], "—"]]
    if integer and all(float(b).is_integer() for b in breaks):
        cuts = [int(b) for b in breaks]
        rows = [[ramp[0], f"≤ {cuts[0] - 1}" if cuts[0] > 1 else "0"]]
        for i in range(1, len(cuts)):
            first, last = cuts[i - 1], cuts[i] - 1
            rows.append([ramp[i], f"{first}" if first == last else f"{first} – {last}"])
        rows.append([ramp[-1], f"≥ {cuts[-1]}"])
        return rows
    items = [[ramp[0], "< " + _number(breaks[0], digits)]]
    for i in range(1, len(breaks)):
        low, high = _number(breaks[i - 1], digits), _number(breaks[i], digits)
        items.append([ramp[i], f"{low} – {high}"])
    items.append([ramp[-1], "≥ " + _number(breaks[-1], digits)])
    return items


def ramp_for(classes: int, colours: Sequence[str]) -> list[str]:
    """Pick ``classes`` colours spread over the ramp ``colours``."""
    if classes >= len(colours):
        return list(colours)
    picks = np.round(np.linspace(0, len(colours) - 1, classes)).astype(int)
    return [colours[i] for i in picks]


def _round_coords(coords: np.ndarray) -> np.ndarray:
    return np.round(coords, COORD_DIGITS)


def display_geometry(
    geometries: gpd.GeoSeries, tolerance: float = SIMPLIFY_DEG, coverage: bool = False
) -> np.ndarray:
    """Simplify and round geometries for a map (WGS84 in, WGS84 out).

    With ``coverage`` (areas that tile the map without overlaps, such as the grids of one
    level) the shared boundaries are simplified once for both neighbours
    (``shapely.coverage_simplify``), so no gap or sliver opens between them; geometries that
    turn out not to be a valid coverage are simplified one by one.
    """
    values = np.asarray(geometries.values, dtype=object)
    if coverage and len(values):
        present = ~(shapely.is_missing(values) | shapely.is_empty(values))
        parts = values[present]
        if len(parts) and bool(shapely.coverage_is_valid(parts)):
            values = values.copy()
            values[present] = shapely.coverage_simplify(parts, tolerance)
            return shapely.transform(values, _round_coords)
    values = shapely.simplify(values, tolerance)
    return shapely.transform(values, _round_coords)


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 3)
    return value


def feature_collection(
    frame: gpd.GeoDataFrame,
    properties: Sequence[str],
    style_index: Sequence[int | None] | None = None,
    tolerance: float = SIMPLIFY_DEG,
    coverage: bool = False,
) -> dict[str, Any]:
    """Return ``frame`` as a GeoJSON FeatureCollection of rounded, simplified features.

    Only the ``properties`` columns are kept; ``style_index`` adds ``_s`` to each feature.
    Empty geometries are left out. ``coverage``: see :func:`display_geometry`.
    """
    geometries = display_geometry(frame.geometry, tolerance, coverage)
    records = frame[list(properties)].to_dict("records") if len(frame) else []
    features = []
    for i, (geometry, record) in enumerate(zip(geometries, records, strict=True)):
        if geometry is None or shapely.is_empty(geometry):
            continue
        props = {key: _json_value(value) for key, value in record.items()}
        if style_index is not None:
            props["_s"] = style_index[i]
        features.append(
            {
                "type": "Feature",
                "geometry": shapely.geometry.mapping(geometry),
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


class GeoJsonLayer(folium.map.Layer):
    """A GeoJSON overlay styled by a per-feature style index, with a text-only tooltip.

    The features come from one of three places: ``data`` embedded in the page; the embedded
    data of another layer (``data_from``: two layers over the same grids carry the geometry
    once); or ``url``, fetched from the app the first time the layer is switched on, so a
    heavy layer that is off costs the page nothing.

    Parameters
    ----------
    data : dict or None
        A FeatureCollection (see :func:`feature_collection`).
    styles : list of dict
        Leaflet path styles; a feature's ``style_key`` property picks one (``styles[0]``
        without it).
    fields : list
        Tooltip rows ``[property, label]`` or ``[property, label, {value: text}]``.
    name : str
        Name in the layer control.
    show : bool
        Whether the layer is on when the map opens.
    style_key : str
        The feature property holding the style index.
    data_from : GeoJsonLayer, optional
        Draw this layer's features.
    url : str, optional
        Same-origin URL answering a FeatureCollection.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        {%- if this.url %}
        var {{ this.get_name() }} = GridWatchMap.lazyGeoJson({{ this.url|tojson }}, {
        {%- else %}
        {%- if this.data is not none %}
        var {{ this.get_name() }}_data = {{ this.data_json }};
        {%- endif %}
        var {{ this.get_name() }} = L.geoJson({{ this.source.get_name() }}_data, {
        {%- endif %}
            style: GridWatchMap.style({{ this.styles|tojson }}, {{ this.style_key|tojson }}),
            onEachFeature: GridWatchMap.info({{ this.fields|tojson }})
        });
        {% endmacro %}
        """
    )

    def __init__(
        self,
        data: dict[str, Any] | None,
        styles: list[dict[str, Any]],
        fields: list[list[Any]],
        name: str,
        show: bool = True,
        style_key: str = "_s",
        data_from: GeoJsonLayer | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        if sum(x is not None for x in (data, data_from, url)) != 1:
            raise ValueError("give exactly one of data, data_from and url")
        self._name = "GeoJsonLayer"
        self.data = data
        self.source = data_from or self
        self.url = url
        self.styles = styles
        self.fields = fields
        self.style_key = style_key
        self.data_json = ""

    def render(self, **kwargs: Any) -> Any:
        """Serialise the features (late: a sharing layer may have added properties)."""
        if self.data is not None:
            self.data_json = script_json(self.data)
        return super().render(**kwargs)


def script_json(value: Any) -> str:
    """Return compact JSON safe inside ``<script>`` (``<``, ``>``, ``&`` and ``'`` escaped)."""
    return str(htmlsafe_json_dumps(value, separators=(",", ":")))


class Legend(MacroElement):
    """A legend for ``layer``, shown while the layer is on (see ``gridwatch-map.js``)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GridWatchMap.legend({{ this._parent.get_name() }}, {{ this.layer.get_name() }},
            {{ this.spec|tojson }});
        {% endmacro %}
        """
    )

    def __init__(self, layer: folium.map.Layer, title: str, items: list[list[str]]) -> None:
        super().__init__()
        self._name = "Legend"
        self.layer = layer
        self.spec = {"title": title, "items": items}


class ScaleBar(MacroElement):
    """A metric scale bar (Folium's ``control_scale`` adds miles and feet too)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        L.control.scale({imperial: false}).addTo({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self) -> None:
        super().__init__()
        self._name = "ScaleBar"


class ReadyFlag(MacroElement):
    """Sets ``data-map-ready`` on the document's body once Leaflet has drawn the map."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        GridWatchMap.ready({{ this._parent.get_name() }});
        {% endmacro %}
        """
    )

    def __init__(self) -> None:
        super().__init__()
        self._name = "ReadyFlag"


def fill_styles(colours: Sequence[str], opacity: float = 0.7) -> list[dict[str, Any]]:
    """Return polygon styles: index 0 for "no data", then one per colour."""
    outline = {"color": "#555555", "weight": 0.6, "opacity": 0.8}
    styles = [{**outline, "fillColor": NO_DATA, "fillOpacity": 0.35}]
    styles += [{**outline, "fillColor": c, "fillOpacity": opacity} for c in colours]
    return styles


def _style_index(classes: Sequence[int | None]) -> list[int]:
    return [0 if c is None else c + 1 for c in classes]


def choropleth_layer(
    frame: gpd.GeoDataFrame,
    column: str,
    name: str,
    legend_title: str,
    fields: list[list[Any]],
    scale: MetricScale | None = None,
    show: bool = True,
    share: GeoJsonLayer | None = None,
    style_key: str = "_s",
    url: str | None = None,
) -> tuple[GeoJsonLayer, Legend]:
    """Colour the areas of ``frame`` by ``column`` in classes (quantiles or fixed breaks).

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        The areas (WGS84) with ``code``, ``column`` and the tooltip's properties.
    column : str
        The metric; its :data:`METRICS` scale is used unless ``scale`` is given.
    name, legend_title : str
        Names in the layer control and on the legend.
    fields : list
        Tooltip rows (see :class:`GeoJsonLayer`); their properties are kept in the data.
    share : GeoJsonLayer, optional
        A layer with embedded data over the same areas (matched by ``code``): this layer adds
        its properties and style index (``style_key``) to those features and draws them, so
        the geometry is in the page once.
    url : str, optional
        Embed nothing: the layer fetches its features from this same-origin URL when it is
        first switched on; the URL answers :func:`choropleth_collection` of the same
        arguments (several layers may share one URL: it is fetched once).
    """
    scale = scale or METRICS.get(column, MetricScale(YELLOW_RED))
    breaks, ramp, index = choropleth_classes(frame, column, scale)
    keep = list(dict.fromkeys([f[0] for f in fields] + [column]))
    styles = fill_styles(ramp)
    if url is not None:
        layer = GeoJsonLayer(None, styles, fields, name, show, style_key=style_key, url=url)
    elif share is not None and share.data is not None:
        extra = frame[keep].assign(**{style_key: index}).set_index(frame["code"])
        by_code = {str(code): row for code, row in extra.to_dict("index").items()}
        for feature in share.data["features"]:
            row = by_code.get(str(feature["properties"].get("code")), {})
            feature["properties"].update({k: _json_value(v) for k, v in row.items()})
        layer = GeoJsonLayer(
            None, styles, fields, name, show, style_key=style_key, data_from=share
        )
    else:
        data = feature_collection(frame, keep, index, coverage=True)
        layer = GeoJsonLayer(data, styles, fields, name, show, style_key=style_key)
    items = legend_items(breaks, ramp, scale.digits, scale.integer)
    return layer, Legend(layer, legend_title, items)


def choropleth_classes(
    frame: gpd.GeoDataFrame, column: str, scale: MetricScale | None = None
) -> tuple[list[float], list[str], list[int]]:
    """Return the class breaks, colours and per-row style index of ``frame[column]``."""
    scale = scale or METRICS.get(column, MetricScale(YELLOW_RED))
    values = [_json_value(v) for v in frame[column]] if len(frame) else []
    breaks = class_breaks(values, scale)
    ramp = ramp_for(len(breaks) + 1, scale.colours)
    return breaks, ramp, _style_index([classify(v, breaks) for v in values])


def choropleth_collection(
    frame: gpd.GeoDataFrame, styled: Mapping[str, tuple[str, Sequence[str]]]
) -> dict[str, Any]:
    """Return the features of ``frame`` for one or more choropleths drawing the same areas.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        The areas (WGS84), one level: a coverage, simplified without gaps between them.
    styled : mapping
        ``{style_key: (column, properties)}``: each choropleth's style index under its key
        (the classes :func:`choropleth_layer` gives the same frame and column) and the
        properties its tooltip shows.

    Returns
    -------
    dict
        A FeatureCollection with delta-encoded coordinates (:func:`delta_encode`).
    """
    keep: list[str] = ["code"]
    for column, properties in styled.values():
        keep += [*properties, column]
    keep = list(dict.fromkeys(keep))
    collection = feature_collection(frame, keep, tolerance=COVERAGE_SIMPLIFY_DEG, coverage=True)
    # feature_collection leaves out empty geometries: match the indexes by code.
    indexes = {
        key: dict(
            zip(frame["code"].astype(str), choropleth_classes(frame, column)[2], strict=True)
        )
        for key, (column, _) in styled.items()
    }
    for feature in collection["features"]:
        code = str(feature["properties"].get("code"))
        for key, by_code in indexes.items():
            feature["properties"][key] = by_code.get(code, 0)
    return delta_encode(collection)


def _delta_ring(ring: Sequence[Sequence[float]], scale: float) -> list[int]:
    flat: list[int] = []
    previous_x = previous_y = 0
    for x, y in ring:
        ix, iy = round(x * scale), round(y * scale)
        flat += [ix - previous_x, iy - previous_y]
        previous_x, previous_y = ix, iy
    return flat


def delta_encode(collection: dict[str, Any], digits: int = COORD_DIGITS) -> dict[str, Any]:
    """Pack the polygon coordinates of a FeatureCollection as integer deltas (in place).

    Each ring becomes a flat list of integers: its first point in units of ``10**-digits``
    degrees, then each point's difference from the one before (TopoJSON's quantised delta
    encoding, without shared arcs): ``[104.12345, 30.1]`` then ``[104.12346, 30.10001]`` is
    ``[10412345, 3010000, 1, 1]``, a third of the bytes. The collection gets
    ``{DELTA_KEY: digits}``; ``gridwatch-map.js`` unpacks it before drawing. Only
    ``Polygon`` and ``MultiPolygon`` geometries are packed.
    """
    scale = 10.0**digits
    for feature in collection["features"]:
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            geometry["coordinates"] = [_delta_ring(r, scale) for r in geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            geometry["coordinates"] = [
                [_delta_ring(r, scale) for r in polygon] for polygon in geometry["coordinates"]
            ]
    collection[DELTA_KEY] = digits
    return collection


def delta_decode(collection: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`delta_encode` (in place); what the map's script does in the browser."""
    digits = collection.pop(DELTA_KEY, None)
    if digits is None:
        return collection
    scale = 10.0**digits

    def ring(flat: Sequence[int]) -> list[list[float]]:
        x = y = 0
        points = []
        for i in range(0, len(flat) - 1, 2):
            x, y = x + flat[i], y + flat[i + 1]
            points.append([x / scale, y / scale])
        return points

    for feature in collection["features"]:
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            geometry["coordinates"] = [ring(r) for r in geometry["coordinates"]]
        elif geometry.get("type") == "MultiPolygon":
            geometry["coordinates"] = [[ring(r) for r in p] for p in geometry["coordinates"]]
    return collection


def hotspot_layer(
    grids: gpd.GeoDataFrame,
    name: str,
    legend_title: str,
    class_names: Mapping[str, str],
    fields: list[list[Any]],
    show: bool = True,
) -> tuple[GeoJsonLayer, Legend]:
    """Grids that are significant Gi* hot or cold spots, coloured by confidence.

    ``grids`` needs a ``hotspot`` column (``hot_99`` … ``cold_99`` or anything else for not
    significant); ``class_names`` gives each class's display name.
    """
    classes = list(HOTSPOT_COLOURS)
    significant = grids[grids["hotspot"].isin(classes)] if len(grids) else grids
    index = [classes.index(c) for c in significant["hotspot"]] if len(significant) else []
    # A dark outline: hot spots read as clusters over a choropleth of the same reds.
    styles = [
        {"color": "#111111", "weight": 2.5, "opacity": 0.9, "fillColor": c, "fillOpacity": 0.6}
        for c in HOTSPOT_COLOURS.values()
    ]
    keep = list(dict.fromkeys([f[0] for f in fields] + ["hotspot"]))
    layer = GeoJsonLayer(feature_collection(significant, keep, index), styles, fields, name, show)
    items = [[colour, class_names.get(c, c)] for c, colour in HOTSPOT_COLOURS.items()]
    return layer, Legend(layer, legend_title, items)


def blind_spot_layer(
    blind_spots: gpd.GeoDataFrame | str,
    name: str,
    legend_text: str,
    fields: list[list[Any]],
    show: bool = True,
) -> tuple[GeoJsonLayer, Legend]:
    """Return the layer of the part of each grid that no working camera sees.

    ``blind_spots`` is a GeoDataFrame with the tooltip's properties, or the URL of the same
    as GeoJSON (loaded when the layer is first switched on: blind spots have many vertices).
    """
    style = {"stroke": False, "fillColor": BLIND_SPOT_COLOUR, "fillOpacity": 0.45}
    if isinstance(blind_spots, str):
        layer = GeoJsonLayer(None, [style], fields, name, show, url=blind_spots)
    else:
        keep = [f[0] for f in fields]
        data = feature_collection(blind_spots, keep, tolerance=SIMPLIFY_DEG * 2)
        layer = GeoJsonLayer(data, [style], fields, name, show)
    return layer, Legend(layer, name, [[BLIND_SPOT_COLOUR, legend_text]])


__all__ = [
    "BLIND_SPOT_COLOUR",
    "COVERAGE_SIMPLIFY_DEG",
    "DELTA_KEY",
    "HOTSPOT_COLOURS",
    "METRICS",
    "NO_DATA",
    "GeoJsonLayer",
    "Legend",
    "MetricScale",
    "ReadyFlag",
    "ScaleBar",
    "blind_spot_layer",
    "choropleth_classes",
    "choropleth_collection",
    "choropleth_layer",
    "class_breaks",
    "classify",
    "delta_decode",
    "delta_encode",
    "display_geometry",
    "feature_collection",
    "fill_styles",
    "hotspot_layer",
    "legend_items",
    "script_json",
    "ramp_for",
]
