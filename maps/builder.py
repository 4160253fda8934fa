"""Assemble GridWatch's main map from plain data: base map, layers, legends, layer control.

:func:`build_map` knows no request and no database: the web app (or a script) reads the
published run, filters it to the user's jurisdiction and passes GeoDataFrames and arrays in.
Every label arrives through ``text`` so the caller can translate it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
from markupsafe import Markup

from gridwatch.maps.cameras import CAMERA_COLOURS, camera_layer, camera_payload
from gridwatch.maps.heat import (
    DensityRaster,
    WeeklyCounts,
    WeeklyHeatLayer,
    density_layer,
    heat_points_layer,
)
from gridwatch.maps.layers import (
    METRICS,
    Legend,
    ReadyFlag,
    ScaleBar,
    blind_spot_layer,
    choropleth_collection,
    choropleth_layer,
    hotspot_layer,
)
from gridwatch.maps.offline import AssetUrl, default_asset_url, render_html
from gridwatch.maps.tracks import track_layer, track_payload

#: The overlays of the main map, in drawing order (later ones on top).
LAYERS = (
    "heat",
    "heat_weeks",
    "choropleth",
    "patrol",
    "tracks",
    "blind_spots",
    "hotspots",
    "cameras",
)
DEFAULT_LAYERS = frozenset({"choropleth", "hotspots"})
#: The closest zoom of a map without a basemap (about 0.3 m per pixel).
MAX_ZOOM = 19

#: English defaults of every label; the web app passes the translated ones.
DEFAULT_TEXT: dict[str, str] = {
    "layer.heat": "Incident heat",
    "layer.choropleth": "Grid figures",
    "layer.patrol": "Patrol dosage",
    "layer.blind_spots": "Camera blind spots",
    "layer.hotspots": "Hot spots (Gi*)",
    "layer.heat_weeks": "Incident heat by week",
    "layer.cameras": "Cameras",
    "layer.tracks": "Patrol tracks",
    "camera.online": "Working",
    "camera.offline": "Offline",
    "camera.broken": "Broken",
    "camera_type.checkpoint": "Checkpoint",
    "camera_type.hd": "HD",
    "camera_type.standard": "Standard definition",
    "camera_type.private": "Linked private camera",
    "field.camera_id": "Camera number",
    "field.camera_type": "Type",
    "field.status": "Status",
    "field.resolution": "Resolution",
    "field.direction_deg": "Direction (°)",
    "field.fov_deg": "View angle (°)",
    "field.range_m": "Range (m)",
    "field.team": "Team",
    "field.from": "From",
    "field.to": "To",
    "legend.blind_spots": "Seen by no working camera",
    "field.name": "Name",
    "field.code": "Code",
    "field.incidents": "Incidents",
    "field.incidents_per_1000": "Per 1,000 residents",
    "field.forecast_next": "Forecast, next period",
    "field.camera_coverage_pct": "Camera coverage %",
    "field.blind_spot_incident_pct": "Incidents in blind spots %",
    "field.patrol_minutes": "Patrol minutes",
    "field.patrol_night_minutes": "Night patrol minutes",
    "field.patrol_visits": "Patrol visits",
    "field.hours_since_last_visit": "Hours since last patrol",
    "field.gi_star_z": "Gi* z-score",
    "field.hotspot": "Hot-spot class",
    "field.hotspot_class": "Trend",
    "hotspot.hot_99": "Hot spot, confidence 99%",
    "hotspot.hot_95": "Hot spot, confidence 95%",
    "hotspot.hot_90": "Hot spot, confidence 90%",
    "hotspot.cold_90": "Cold spot, confidence 90%",
    "hotspot.cold_95": "Cold spot, confidence 95%",
    "hotspot.cold_99": "Cold spot, confidence 99%",
    "hotspot.not_significant": "Not significant",
    "trend.new": "New",
    "trend.intensifying": "Intensifying",
    "trend.persistent": "Persistent",
    "trend.diminishing": "Diminishing",
    "trend.sporadic": "Sporadic",
    "trend.consecutive": "Consecutive",
    "trend.historical": "Historical",
    "trend.none": "No pattern",
}


@dataclass(frozen=True)
class Basemap:
    """A tile layer under the data: an XYZ URL template (``{z}/{x}/{y}``) and attribution."""

    url_template: str
    attribution: str = ""
    min_zoom: int = 0
    max_zoom: int = 18


@dataclass
class MapData:
    """Everything the main map shows, already filtered to what the user may see.

    Attributes
    ----------
    areas : geopandas.GeoDataFrame
        Areas of the choropleth's level: ``code``, ``name``, ``geometry`` (WGS84) and metric
        columns (``incidents`` — of the chosen category group —, ``incidents_per_1000``, …).
    grids : geopandas.GeoDataFrame
        Grids with ``code``, ``name``, ``geometry``, ``hotspot``, ``gi_star_z``,
        ``hotspot_class``, ``patrol_minutes``, ``patrol_night_minutes``, ``patrol_visits``,
        ``hours_since_last_visit`` and ``incidents``.
    blind_spots : geopandas.GeoDataFrame or str
        ``code``, ``name``, ``camera_coverage_pct`` and the uncovered part as ``geometry``;
        or the URL of the same as GeoJSON, fetched when the layer is first switched on.
    density : DensityRaster, optional
        The kernel-density raster, masked to the visible grids (all categories).
    heat_from_grids : bool
        Draw the heat layer from ``grids.incidents`` at the grids' centres instead of the
        raster (a category group is chosen, and the raster covers every category).
    weekly_heat : WeeklyCounts or str, optional
        The last weeks' counts per grid, for the heat layer with a time slider; or the URL
        of their payload, fetched when the layer is first switched on.
    cameras : pandas.DataFrame or str, optional
        Cameras (see :func:`gridwatch.maps.cameras.camera_payload`), or the URL of the same
        as a camera payload, fetched when the layer is first switched on.
    tracks : pandas.DataFrame or str, optional
        Patrol pings (see :func:`gridwatch.maps.tracks.track_payload`), or the URL of the
        track payload, fetched when the layer is first switched on.
    polygons : mapping, optional
        ``{"areas": URL, "grids": URL}``: the choropleth and patrol-dosage layers embed no
        polygons but fetch them when first switched on, from URLs answering
        :func:`polygon_collection` of ``"areas"`` and ``"grids"`` (one URL for both when
        the choropleth shows grids). ``areas`` and ``grids`` then only set the legends'
        classes and the map's bounds. Without it the polygons are embedded.

    A layer whose data is ``None`` is left out of the map.
    """

    areas: gpd.GeoDataFrame
    grids: gpd.GeoDataFrame
    blind_spots: gpd.GeoDataFrame | str
    density: DensityRaster | None = None
    heat_from_grids: bool = False
    bounds: tuple[float, float, float, float] | None = field(default=None)
    weekly_heat: WeeklyCounts | str | None = None
    cameras: pd.DataFrame | str | None = None
    tracks: pd.DataFrame | str | None = None
    polygons: Mapping[str, str] | None = None


def empty_frame(columns: Iterable[str] = ("code", "name")) -> gpd.GeoDataFrame:
    """Return an empty GeoDataFrame in WGS84 with ``columns``."""
    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")


def _label(text: Mapping[str, str], key: str) -> str:
    return text.get(key) or DEFAULT_TEXT.get(key, key)


def _fields(text: Mapping[str, str], *keys: str) -> list[list[Any]]:
    return [["name", _label(text, "field.name")], ["code", _label(text, "field.code")]] + [
        [k, _label(text, f"field.{k}")] for k in keys
    ]


def _bounds(data: MapData) -> tuple[float, float, float, float] | None:
    if data.bounds is not None:
        return data.bounds
    for frame in (data.areas, data.grids):
        if len(frame) and not frame.geometry.is_empty.all():
            minx, miny, maxx, maxy = (float(v) for v in frame.total_bounds)
            if np.isfinite([minx, miny, maxx, maxy]).all():
                return minx, miny, maxx, maxy
    return None


def base_map(
    basemap: Basemap | None, bounds: tuple[float, float, float, float] | None
) -> folium.Map:
    """Return an empty map: no tiles (the grid polygons are the map) or ``basemap``'s tiles."""
    centre = (
        [(bounds[1] + bounds[3]) / 2, (bounds[0] + bounds[2]) / 2] if bounds else [30.0, 110.0]
    )
    fmap = folium.Map(
        location=centre,
        zoom_start=11 if bounds else 4,
        tiles=None,
        prefer_canvas=True,
        attribution_control=basemap is not None and bool(basemap.attribution),
        # Leaflet.markercluster needs the map's own maxZoom (without tiles there is none);
        # the cameras' view sectors show from zoom 16.
        maxZoom=max(basemap.max_zoom, MAX_ZOOM - 1) if basemap is not None else MAX_ZOOM,
    )
    if basemap is not None:
        folium.TileLayer(
            tiles=basemap.url_template,
            # Leaflet writes the attribution as HTML (MBTiles metadata holds links): keep the
            # text only.
            attr=escape(Markup(basemap.attribution).striptags() or " "),
            name="basemap",
            min_zoom=basemap.min_zoom,
            max_zoom=basemap.max_zoom,
            control=False,
        ).add_to(fmap)
    ScaleBar().add_to(fmap)
    if bounds:
        fmap.fit_bounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]])
    return fmap


def _camera_fields(text: Mapping[str, str]) -> list[list[Any]]:
    statuses = {s: _label(text, f"camera.{s}") for s in CAMERA_COLOURS}
    types = {
        key.split(".", 1)[1]: _label(text, key)
        for key in DEFAULT_TEXT
        if key.startswith("camera_type.")
    }
    return [
        ["name", _label(text, "field.name")],
        ["id", _label(text, "field.camera_id")],
        ["status", _label(text, "field.status"), statuses],
        ["type", _label(text, "field.camera_type"), types],
        ["resolution", _label(text, "field.resolution")],
        ["direction_deg", _label(text, "field.direction_deg")],
        ["fov_deg", _label(text, "field.fov_deg")],
        ["range_m", _label(text, "field.range_m")],
    ]


#: Tooltip properties of the patrol-dosage layer (besides name and code).
PATROL_FIELDS = (
    "patrol_minutes",
    "patrol_night_minutes",
    "patrol_visits",
    "hours_since_last_visit",
)


def _choropleth_keys(areas: gpd.GeoDataFrame, metric: str) -> list[str]:
    extra = [k for k in ("incidents", "incidents_per_1000") if k != metric]
    return [metric, *[k for k in extra if k in areas.columns]]


def polygon_collection(data: MapData, metric: str, which: str) -> dict[str, Any]:
    """Return the features the choropleth (``"areas"``) or patrol (``"grids"``) layer draws.

    What a map built with ``data.polygons`` fetches: simplified as a coverage, rounded, with
    the tooltip's properties and the style index of the layer (``_s`` choropleth, ``_p``
    patrol; both when the choropleth shows the grids, so one answer serves both layers).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    if which not in ("areas", "grids"):
        raise ValueError(f"unknown polygon set {which!r}; areas or grids")
    styled: dict[str, tuple[str, list[str]]] = {}
    if which == "areas" or data.areas is data.grids:
        styled["_s"] = (metric, ["name", "code", *_choropleth_keys(data.areas, metric)])
    if which == "grids":
        styled["_p"] = ("patrol_minutes", ["name", "code", *PATROL_FIELDS])
    frame = data.areas if which == "areas" else data.grids
    return choropleth_collection(frame, styled)


def _add(fmap: folium.Map, layer: folium.map.Layer, legend: Legend | None = None) -> None:
    layer.add_to(fmap)
    if legend is not None:
        legend.add_to(fmap)


def build_map(
    data: MapData,
    metric: str = "incidents",
    shown: Iterable[str] = DEFAULT_LAYERS,
    basemap: Basemap | None = None,
    text: Mapping[str, str] | None = None,
) -> folium.Map:
    """Build the main map: every layer of :data:`LAYERS` that ``data`` has data for.

    Heat (density raster or grid counts), heat by week with a time slider, choropleth of
    ``metric``, patrol dosage, patrol tracks, camera blind spots, Gi* hot spots and cameras.

    Parameters
    ----------
    data : MapData
    metric : str
        Column of ``data.areas`` for the choropleth (one of :data:`METRICS`).
    shown : iterable of str
        Layers (of :data:`LAYERS`) switched on when the map opens; the others are listed in
        the layer control, off.
    basemap : Basemap, optional
        Tiles under the data; none by default.
    text : mapping, optional
        Translated labels (keys of :data:`DEFAULT_TEXT`).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
    text = text or {}
    on = set(shown)
    fmap = base_map(basemap, _bounds(data))

    heat_name = _label(text, "layer.heat")
    if data.heat_from_grids:
        centres = data.grids.geometry.representative_point() if len(data.grids) else []
        _add(
            fmap,
            heat_points_layer(
                [p.x for p in centres],
                [p.y for p in centres],
                data.grids["incidents"].fillna(0).tolist() if len(data.grids) else [],
                heat_name,
                "heat" in on,
            ),
        )
    elif data.density is not None:
        _add(fmap, density_layer(data.density, heat_name, "heat" in on))
    if data.weekly_heat is not None:
        _add(
            fmap,
            WeeklyHeatLayer(
                data.weekly_heat, _label(text, "layer.heat_weeks"), "heat_weeks" in on
            ),
        )

    metric_label = _label(text, f"field.{metric}")
    urls = data.polygons or {}
    choropleth, legend = choropleth_layer(
        data.areas,
        metric,
        _label(text, "layer.choropleth"),
        metric_label,
        _fields(text, *_choropleth_keys(data.areas, metric)),
        show="choropleth" in on,
        url=urls.get("areas"),
    )
    _add(fmap, choropleth, legend)
    _add(
        fmap,
        *choropleth_layer(
            data.grids,
            "patrol_minutes",
            _label(text, "layer.patrol"),
            _label(text, "field.patrol_minutes"),
            _fields(text, *PATROL_FIELDS),
            show="patrol" in on,
            # Grid choropleth and patrol dosage draw the same polygons: embed them once.
            share=choropleth if data.areas is data.grids else None,
            style_key="_p",
            url=urls.get("grids"),
        ),
    )
    if data.tracks is not None:
        tracks = data.tracks if isinstance(data.tracks, str) else track_payload(data.tracks)
        labels = {key: _label(text, f"field.{key}") for key in ("team", "code", "from", "to")}
        _add(fmap, track_layer(tracks, _label(text, "layer.tracks"), labels, "tracks" in on))
    blind_fields = _fields(text)
    if not isinstance(data.blind_spots, str) and "camera_coverage_pct" in data.blind_spots:
        blind_fields = _fields(text, "camera_coverage_pct")
    _add(
        fmap,
        *blind_spot_layer(
            data.blind_spots,
            _label(text, "layer.blind_spots"),
            _label(text, "legend.blind_spots"),
            blind_fields,
            show="blind_spots" in on,
        ),
    )
    hotspot_names = {
        key.split(".", 1)[1]: _label(text, key)
        for key in DEFAULT_TEXT
        if key.startswith("hotspot.")
    }
    trend_names = {
        key.split(".", 1)[1]: _label(text, key) for key in DEFAULT_TEXT if key.startswith("trend.")
    }
    hot_fields = _fields(text, "gi_star_z", "incidents")
    hot_fields += [
        ["hotspot", _label(text, "field.hotspot"), hotspot_names],
        ["hotspot_class", _label(text, "field.hotspot_class"), trend_names],
    ]
    _add(
        fmap,
        *hotspot_layer(
            data.grids,
            _label(text, "layer.hotspots"),
            _label(text, "layer.hotspots"),
            hotspot_names,
            hot_fields,
            show="hotspots" in on,
        ),
    )
    if data.cameras is not None:
        cameras = data.cameras if isinstance(data.cameras, str) else camera_payload(data.cameras)
        status_names = {s: _label(text, f"camera.{s}") for s in CAMERA_COLOURS}
        _add(
            fmap,
            *camera_layer(
                cameras,
                _label(text, "layer.cameras"),
                _camera_fields(text),
                status_names,
                show="cameras" in on,
            ),
        )
    folium.LayerControl(collapsed=False).add_to(fmap)
    ReadyFlag().add_to(fmap)
    return fmap


def map_html(fmap: folium.Map, asset_url: AssetUrl = default_asset_url) -> str:
    """Render ``fmap`` as an HTML document that loads only the app's own files."""
    return render_html(fmap, asset_url)


__all__ = [
    "DEFAULT_LAYERS",
    "DEFAULT_TEXT",
    "LAYERS",
    "PATROL_FIELDS",
    "Basemap",
    "MapData",
    "base_map",
    "build_map",
    "empty_frame",
    "map_html",
    "polygon_collection",
]
