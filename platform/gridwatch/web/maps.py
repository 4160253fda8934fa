"""The map page, the map documents it embeds, basemap tiles and the vendored map assets.

``/map`` is an ordinary page (filters, layer choice) holding an ``<iframe>`` of
``/map/frame``: the Folium document, whose inline scripts and styles carry a nonce made for
that one response and allowed by that response's own Content Security Policy, so no other
page ever needs ``'unsafe-inline'``. Rendered documents are cached per published run,
jurisdiction and parameters (:mod:`gridwatch.web.mapcache`); so are the camera and
patrol-track layers, which the document fetches from ``/map/layers/…`` only when they are
first switched on. Every script, stylesheet and image comes from this app:
``gridwatch.maps``' ``assets/`` under ``/maps/assets/``, and the basemap
(``GRIDWATCH_TILES``) from an intranet tile server or an MBTiles file under ``/tiles/``.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, abort, g, render_template, request, send_from_directory, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from werkzeug.wrappers import Response

from gridwatch import mbtiles
from gridwatch.areas import AreaNode
from gridwatch.mapdata import (
    cameras_json,
    map_data,
    polygon_data,
    published_run_stamp,
    tracks_json,
    weekly_heat_json,
)
from gridwatch.maps.builder import (
    DEFAULT_LAYERS,
    LAYERS,
    Basemap,
    build_map,
    map_html,
    polygon_collection,
)
from gridwatch.maps.layers import METRICS
from gridwatch.periods import PeriodError, parse_period
from gridwatch.taxonomy import load_taxonomy
from gridwatch.web.access import (
    SCREEN_TOKEN_ARG,
    area_tree,
    current_jurisdiction,
    login_required,
    visible_area_or_404,
)
from gridwatch.web.dashboard import local_today, period_choices
from gridwatch.web.extensions import state
from gridwatch.web.mapcache import map_cache
from gridwatch.web.security import content_security_policy

bp = Blueprint("maps", __name__)

#: How long browsers may keep an asset (they change only with a GridWatch release).
ASSET_MAX_AGE = 24 * 3600
#: Levels a choropleth can show.
MAP_LEVELS = ("grid", "village", "township")

#: Labels of the map (keys of gridwatch.maps.builder.DEFAULT_TEXT), through the catalogue.
MAP_TEXT: dict[str, LazyString] = {
    "layer.heat": _l("Incident heat"),
    "layer.choropleth": _l("Area figures"),
    "layer.patrol": _l("Patrol dosage"),
    "layer.blind_spots": _l("Camera blind spots"),
    "layer.hotspots": _l("Hot spots (Gi*)"),
    "legend.blind_spots": _l("Seen by no working camera"),
    "field.name": _l("Name"),
    "field.code": _l("Code"),
    "field.incidents": _l("Incidents"),
    "field.incidents_per_1000": _l("Per 1,000 residents"),
    "field.forecast_next": _l("Forecast, next period"),
    "field.camera_coverage_pct": _l("Camera coverage %"),
    "field.blind_spot_incident_pct": _l("Incidents in blind spots %"),
    "field.patrol_minutes": _l("Patrol minutes"),
    "field.patrol_night_minutes": _l("Night patrol minutes"),
    "field.patrol_visits": _l("Patrol visits"),
    "field.hours_since_last_visit": _l("Hours since last patrol"),
    "field.gi_star_z": _l("Gi* z-score"),
    "field.hotspot": _l("Hot-spot class"),
    "field.hotspot_class": _l("Trend"),
    "hotspot.hot_99": _l("Hot spot, confidence 99%"),
    "hotspot.hot_95": _l("Hot spot, confidence 95%"),
    "hotspot.hot_90": _l("Hot spot, confidence 90%"),
    "hotspot.cold_90": _l("Cold spot, confidence 90%"),
    "hotspot.cold_95": _l("Cold spot, confidence 95%"),
    "hotspot.cold_99": _l("Cold spot, confidence 99%"),
    "hotspot.not_significant": _l("Not significant"),
    "trend.new": _l("New"),
    "trend.intensifying": _l("Intensifying"),
    "trend.persistent": _l("Persistent"),
    "trend.diminishing": _l("Diminishing"),
    "trend.sporadic": _l("Sporadic"),
    "trend.consecutive": _l("Consecutive"),
    "trend.historical": _l("Historical"),
    "trend.none": _l("No pattern"),
    "layer.heat_weeks": _l("Incident heat by week"),
    "layer.cameras": _l("Cameras"),
    "layer.tracks": _l("Patrol tracks, last 7 days"),
    "camera.online": _l("Working camera"),
    "camera.offline": _l("Offline camera"),
    "camera.broken": _l("Broken camera"),
    "camera_type.checkpoint": _l("Checkpoint camera"),
    "camera_type.hd": _l("HD camera"),
    "camera_type.standard": _l("Standard-definition camera"),
    "camera_type.private": _l("Linked private camera"),
    "field.camera_id": _l("Camera number"),
    "field.camera_type": _l("Camera type"),
    "field.status": _l("Status"),
    "field.resolution": _l("Camera resolution"),
    "field.direction_deg": _l("Camera direction (°)"),
    "field.fov_deg": _l("View angle (°)"),
    "field.range_m": _l("Camera range (m)"),
    "field.team": _l("Patrol team"),
    "field.from": _l("Track start"),
    "field.to": _l("Track end"),
}

_OPENING_TAG = re.compile(r"<(script|style)(?=[\s>])", re.I)


@dataclass(frozen=True)
class MapParams:
    """The map's filters, parsed and checked from the query string."""

    area: AreaNode | None
    level: str
    period: str
    group: str | None
    metric: str
    layers: tuple[str, ...]

    def query(self) -> dict[str, str]:
        """Return the parameters as query-string arguments (defaults left out)."""
        args = {
            "level": self.level,
            "period": self.period,
            "metric": self.metric,
            "layers": ",".join(self.layers),
        }
        if self.area is not None:
            args["area"] = self.area.code
        if self.group is not None:
            args["group"] = self.group
        return args


def assets_dir() -> Path:
    """Return the directory of the vendored map assets."""
    return Path(str(resources.files("gridwatch.maps").joinpath("assets")))


def category_groups() -> dict[str, dict[str, str]]:
    """Return the category groups (code → names) of the configured taxonomy."""
    return load_taxonomy(state().settings.categories_file).groups


def parse_period_arg() -> str:
    """Return the ``period`` argument as a period label (default: this quarter); 400 if bad."""
    raw = request.args.get("period", "").strip()
    if not raw:
        return period_choices(local_today())[2].label
    try:
        return parse_period(raw).label
    except PeriodError:
        abort(400)


def parse_params() -> MapParams:
    """Parse the map filters of this request (400 for bad values, 404 for unseen areas)."""
    code = request.args.get("area", "").strip()
    area = visible_area_or_404(code) if code else None
    level = request.args.get("level", "grid").strip() or "grid"
    if level not in MAP_LEVELS or level not in state().settings.area_levels:
        abort(400)
    group = request.args.get("group", "").strip() or None
    if group is not None and group not in category_groups():
        abort(400)
    metric = request.args.get("metric", "incidents").strip() or "incidents"
    if metric not in METRICS:
        abort(400)
    # ``layers=a,b`` from links, or one ``layers`` per ticked box (plus an empty one) from
    # the filter form.
    raw_layers = request.args.getlist("layers")
    if not raw_layers:
        layers = tuple(name for name in LAYERS if name in DEFAULT_LAYERS)
    else:
        wanted = {name.strip() for raw in raw_layers for name in raw.split(",") if name.strip()}
        if wanted - set(LAYERS):
            abort(400)
        layers = tuple(name for name in LAYERS if name in wanted)
    return MapParams(area, level, parse_period_arg(), group, metric, layers)


def scope_ids(area: AreaNode | None) -> frozenset[int]:
    """Return the areas a map or GeoJSON answer covers: the jurisdiction, within ``area``."""
    visible = current_jurisdiction().area_ids
    if area is None:
        return visible
    return frozenset(area_tree().subtree(area.id)) & visible


def cache_key(kind: str, *params: Any) -> tuple[Any, ...]:
    """Return the cache key of a map answer: run, jurisdiction, then ``params``."""
    return (
        kind,
        *published_run_stamp(state().engine),
        tuple(sorted(current_jurisdiction().root_ids)),
        *params,
    )


def _sees_every_grid() -> bool:
    jurisdiction = current_jurisdiction()
    return all(
        node.id in jurisdiction for node in area_tree().nodes.values() if node.level == "grid"
    )


def basemap() -> Basemap | None:
    """Return the configured basemap, or ``None`` (``GRIDWATCH_TILES=none``)."""
    tiles = state().settings.tiles
    if tiles.kind == "xyz":
        return Basemap(tiles.url_template)
    if tiles.kind == "mbtiles" and tiles.mbtiles_path is not None:
        meta = mbtiles.metadata(tiles.mbtiles_path)
        template = request.script_root + "/tiles/{z}/{x}/{y}.png"
        return Basemap(
            template,
            attribution=meta.get("attribution", ""),
            min_zoom=int(meta.get("minzoom", 0) or 0),
            max_zoom=int(meta.get("maxzoom", 18) or 18),
        )
    return None


def tile_origins() -> list[str]:
    """Return the origin of an XYZ tile server on another host (for the frame's CSP)."""
    tiles = state().settings.tiles
    if tiles.kind != "xyz" or not tiles.url_template.startswith(("http://", "https://")):
        return []
    parts = urlsplit(tiles.url_template)
    return [f"{parts.scheme}://{parts.netloc}"]


def with_nonce(html: str, nonce: str) -> str:
    r"""Add ``nonce`` to every ``<script>`` and ``<style>`` element of a map document.

    User text cannot forge such an element: the builders embed all data as escaped JSON
    (``<`` becomes ``\u003c``), so the only ``<script`` and ``<style`` tags are the builders'.
    """
    return _OPENING_TAG.sub(lambda m: f'<{m.group(1)} nonce="{nonce}"', html)


def _screen_token() -> dict[str, str]:
    """Return the wall screen's token argument when this request was opened with one.

    The screen's map fetches its polygons with the same token; such a document is cached
    under that token only (:func:`frame`), so no other request is ever given it.
    """
    if g.get("auth") == "screen_token":
        return {SCREEN_TOKEN_ARG: request.args[SCREEN_TOKEN_ARG]}
    return {}


def render_map(params: MapParams) -> str:
    """Build and render the map document of ``params`` for the signed-in user (no nonce)."""
    engine = state().engine
    data = map_data(
        engine,
        scope_ids(params.area),
        params.level,
        params.period,
        params.group,
        # The density raster spreads incidents over boundaries: only for who sees them all.
        raster_heat=_sees_every_grid(),
        today=local_today(),
        blind_spots=False,
        weekly=False,
    )
    area_args = {"area": params.area.code} if params.area is not None else {}
    # The choropleth and patrol polygons are the heaviest part of a map (5,000 grids: a few
    # MB): fetched, gzipped and cached, only when one of their layers is switched on.
    polygon_args: dict[str, Any] = {
        key: value for key, value in params.query().items() if key != "layers"
    }
    polygon_args.update(_screen_token())
    grids_url = url_for("maps.polygons_layer", which="grids", **polygon_args)
    data.polygons = {
        "areas": grids_url
        if params.level == "grid"
        else url_for("maps.polygons_layer", which="areas", **polygon_args),
        "grids": grids_url,
    }
    weekly_args: dict[str, Any] = {"period": params.period, **area_args}
    if params.group is not None:
        weekly_args["group"] = params.group
    data.weekly_heat = url_for("maps.weeks_layer", **weekly_args)
    data.blind_spots = url_for("api.geo_blind_spots", **area_args)  # type: ignore[arg-type]
    data.cameras = url_for("maps.cameras_layer", **area_args)  # type: ignore[arg-type]
    data.tracks = url_for(
        "maps.tracks_layer",
        period=params.period,
        **area_args,  # type: ignore[arg-type]
    )
    fmap = build_map(
        data,
        metric=params.metric,
        shown=params.layers,
        basemap=basemap(),
        text={key: str(label) for key, label in MAP_TEXT.items()},
    )
    return map_html(fmap, lambda path: url_for("maps.asset", filename=path))


@bp.get("/maps/assets/<path:filename>")
def asset(filename: str) -> Response:
    """Serve one vendored asset (404 for anything outside the directory)."""
    return send_from_directory(assets_dir(), filename, max_age=ASSET_MAX_AGE)


@bp.get("/map")
@login_required
def page() -> str:
    """Show the main map page: filters and the map document in an ``<iframe>``."""
    params = parse_params()
    tree = area_tree()
    jurisdiction = current_jurisdiction()
    choices = [
        node
        for node in sorted(tree.nodes.values(), key=lambda n: n.code)
        if node.id in jurisdiction and node.level not in ("grid",)
    ]
    periods = [p.label for p in period_choices(local_today())]
    if params.period not in periods:
        periods.append(params.period)
    groups = {code: names for code, names in category_groups().items()}
    locale = str(get_locale() or "zh_CN")
    return render_template(
        "maps/map.html",
        params=params,
        roots=[tree.nodes[i] for i in jurisdiction.root_ids],
        frame_url=url_for("maps.frame", **params.query()),  # type: ignore[arg-type]
        area_choices=choices,
        levels=[lvl for lvl in MAP_LEVELS if lvl in state().settings.area_levels],
        periods=periods,
        groups={
            code: names.get("zh" if locale.startswith("zh") else "en", code)
            for code, names in groups.items()
        },
        metrics=[(key, MAP_TEXT[f"field.{key}"]) for key in METRICS],
        layers=[(name, MAP_TEXT[f"layer.{name}"]) for name in LAYERS],
    )


@bp.get("/map/frame")
@login_required
def frame() -> Response:
    """Return the map document: Folium's HTML, a nonce on its inline code, a CSP to match."""
    params = parse_params()
    locale = str(get_locale() or "")
    # The heat slider's weeks end today in the current period: the day is part of the key.
    key = cache_key(
        "frame",
        locale,
        local_today().isoformat(),
        tuple(sorted(params.query().items())),
        tuple(_screen_token().items()),
    )
    html = map_cache().get_or_build(key, lambda: render_map(params))
    nonce = secrets.token_urlsafe(18)
    response = Response(with_nonce(html, nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = content_security_policy(
        nonce, img_sources=tile_origins()
    )
    return response


def _safe_json(value: Any) -> str:
    """Return compact JSON with ``<``, ``>`` and ``&`` escaped: inert even if sniffed as HTML."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _layer_json(kind: str, params: tuple[Any, ...], build: Any) -> Response:
    """Answer a layer's data as JSON, gzipped for browsers (15,000 cameras: 1.7 → 0.3 MB).

    The cache keeps the compressed bytes; the rare client that takes no gzip gets them
    decompressed.
    """
    body = map_cache().get_or_build(
        cache_key(kind, *params),
        lambda: gzip.compress(_safe_json(build()).encode("utf-8"), compresslevel=6),
    )
    if request.accept_encodings["gzip"] > 0:
        response = Response(body, mimetype="application/json")
        response.headers["Content-Encoding"] = "gzip"
    else:
        response = Response(gzip.decompress(body), mimetype="application/json")
    response.vary.add("Accept-Encoding")
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/map/layers/cameras.json")
@login_required
def cameras_layer() -> Response:
    """Return the camera layer's data: the cameras in the user's grids (within ``area``)."""
    code = request.args.get("area", "").strip()
    ids = scope_ids(visible_area_or_404(code) if code else None)
    engine = state().engine
    return _layer_json("layer.cameras", (code,), lambda: cameras_json(engine, ids))


@bp.get("/map/layers/polygons.json")
@login_required
def polygons_layer() -> Response:
    """Return the choropleth (``which=areas``) or patrol-dosage (``which=grids``) polygons.

    The map's filters (``level``, ``period``, ``group``, ``metric``, ``area``) as for
    ``/map/frame``; only the user's areas, simplified, rounded, with their style classes.
    """
    which = request.args.get("which", "").strip()
    if which not in ("areas", "grids"):
        abort(400)
    params = parse_params()
    ids = scope_ids(params.area)
    engine = state().engine
    return _layer_json(
        "layer.polygons",
        (which, tuple(sorted((k, v) for k, v in params.query().items() if k != "layers"))),
        lambda: polygon_collection(
            polygon_data(engine, ids, params.level, params.period, params.group),
            params.metric,
            which,
        ),
    )


@bp.get("/map/layers/weeks.json")
@login_required
def weeks_layer() -> Response:
    """Return the heat slider's weeks: pre-binned counts of the user's grids (within ``area``)."""
    code = request.args.get("area", "").strip()
    ids = scope_ids(visible_area_or_404(code) if code else None)
    period = parse_period_arg()
    group = request.args.get("group", "").strip() or None
    if group is not None and group not in category_groups():
        abort(400)
    today = local_today()
    engine = state().engine
    return _layer_json(
        "layer.weeks",
        (code, period, group, today.isoformat()),
        lambda: weekly_heat_json(engine, ids, period, today, group),
    )


@bp.get("/map/layers/tracks.json")
@login_required
def tracks_layer() -> Response:
    """Return the patrol tracks of the last days of ``period`` in the user's grids."""
    code = request.args.get("area", "").strip()
    ids = scope_ids(visible_area_or_404(code) if code else None)
    period = parse_period_arg()
    today = local_today()
    engine = state().engine
    tz = state().settings.timezone
    return _layer_json(
        "layer.tracks",
        (code, period, today.isoformat()),
        lambda: tracks_json(engine, ids, period, today, tz),
    )


@bp.get("/tiles/<int:z>/<int:x>/<int:y>.png")
@login_required
def tile(z: int, x: int, y: int) -> Response:
    """One basemap tile from the configured MBTiles file (404 without one, or no tile)."""
    tiles = state().settings.tiles
    if tiles.kind != "mbtiles" or tiles.mbtiles_path is None:
        abort(404)
    data = mbtiles.read_tile(tiles.mbtiles_path, z, x, y)
    if data is None:
        abort(404)
    response = Response(data, mimetype=mbtiles.content_type(data))
    response.headers["Cache-Control"] = f"private, max-age={ASSET_MAX_AGE}"
    return response
