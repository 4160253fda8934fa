"""Map builders (gridwatch.maps) on plain data: layers, escaping, offline assets, heat raster.

In the style of geopandas' explore tests: assertions on ``folium.Map.to_dict()`` and on the
rendered HTML, no browser.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import folium
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from folium.plugins import Fullscreen, MarkerCluster
from shapely.geometry import box

from gridwatch.maps.builder import LAYERS, Basemap, MapData, build_map, map_html
from gridwatch.maps.cameras import CAMERA_COLOURS, SECTOR_MIN_ZOOM, camera_payload, statuses_of
from gridwatch.maps.heat import DensityRaster, WeeklyCounts, density_image, weekly_heat_payload
from gridwatch.maps.layers import (
    HOTSPOT_COLOURS,
    METRICS,
    class_breaks,
    classify,
    feature_collection,
)
from gridwatch.maps.offline import (
    OWN_CSS,
    OWN_JS,
    VENDORED,
    ExternalAssetError,
    asset_links,
    render_html,
)
from gridwatch.maps.tracks import track_payload

ASSETS = Path(__file__).resolve().parent.parent / "maps" / "assets"
HOSTILE = '<script>alert("x")</script>'
HOSTILE_IMG = "<img src=x onerror=alert(1)>"
URL = re.compile(r"(?i)\b(?:https?:)?//([a-z0-9.-]+(?::\d+)?)")


def grids() -> gpd.GeoDataFrame:
    cells = [box(104 + i * 0.01, 30, 104 + (i + 1) * 0.01, 30.01) for i in range(4)]
    return gpd.GeoDataFrame(
        {
            "code": ["g1", "g2", "g3", "g4"],
            "name": [HOSTILE, HOSTILE_IMG, "第3网格", "第4网格"],
            "incidents": [9, 0, 3, None],
            "incidents_per_1000": [9.0, 0.0, 3.0, None],
            "forecast_next": [2.0, 0.1, 1.0, None],
            "camera_coverage_pct": [10.0, 50.0, 95.0, None],
            "blind_spot_incident_pct": [80.0, None, 0.0, None],
            "patrol_minutes": [0.0, 30.0, 120.0, None],
            "patrol_night_minutes": [0.0, 5.0, 10.0, None],
            "patrol_visits": [0.0, 2.0, 6.0, None],
            "hours_since_last_visit": [400.0, 20.0, 2.0, None],
            "gi_star_z": [3.2, -2.7, 0.3, None],
            "hotspot": ["hot_99", "cold_99", "not_significant", None],
            "hotspot_class": ["new", "none", "none", None],
        },
        geometry=cells,
        crs="EPSG:4326",
    )


def blind_spots() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"code": ["g1"], "name": [HOSTILE], "camera_coverage_pct": [10.0]},
        geometry=[box(104, 30, 104.005, 30.005)],
        crs="EPSG:4326",
    )


def raster() -> DensityRaster:
    values = np.zeros((20, 40))
    values[5:10, 5:15] = 8.0
    values[7, 10] = 20.0
    return DensityRaster(values, 104.0, 30.0, 104.04, 30.01)


def map_data(**overrides) -> MapData:
    frame = grids()
    data = MapData(areas=frame, grids=frame, blind_spots=blind_spots(), density=raster())
    for key, value in overrides.items():
        setattr(data, key, value)
    return data


def children(fmap: folium.Map) -> dict[str, dict]:
    return fmap.to_dict()["children"]


def external_hosts(html: str) -> set[str]:
    return {host for host in URL.findall(html)}


# -- layers --------------------------------------------------------------------------------


def test_every_layer_is_in_the_map_and_the_layer_control():
    fmap = build_map(map_data(), shown=LAYERS)
    kinds = [child["name"] for child in children(fmap).values()]
    assert kinds.count("GeoJsonLayer") == 4  # choropleth, patrol, blind spots, hot spots
    assert kinds.count("ImageOverlay") == 1  # heat from the density raster
    assert kinds.count("Legend") == 4
    assert "LayerControl" in kinds
    html = map_html(fmap)
    control = re.search(r"overlays\s*:\s*\{(.*?)\}", html, re.S)
    assert control is not None
    for name in ("Incident heat", "Grid figures", "Patrol dosage", "Camera blind spots"):
        assert json.dumps(name) in control.group(1)


def test_only_the_chosen_layers_are_switched_on():
    fmap = build_map(map_data(), shown=["hotspots"])
    html = map_html(fmap)
    map_name = fmap.get_name()
    added = set(re.findall(rf"(\w+)\.addTo\({map_name}\)", html))
    names = {c["name"]: key for key, c in children(fmap).items()}
    hotspots = [
        key
        for key, child in fmap._children.items()
        if child._name == "GeoJsonLayer" and child.layer_name.startswith("Hot spots")
    ]
    assert added == set(hotspots)
    assert names["ImageOverlay"] not in added


def test_heat_from_grid_counts_for_a_category_group():
    fmap = build_map(map_data(heat_from_grids=True, density=None), shown=["heat"])
    kinds = [child["name"] for child in children(fmap).values()]
    assert "HeatMap" in kinds and "ImageOverlay" not in kinds
    html = map_html(fmap)
    points = json.loads(re.search(r"L\.heatLayer\(\s*(\[.*?\]\])", html, re.S).group(1))
    # Pre-binned: one weighted point per grid with incidents, weights scaled to 1.
    assert len(points) == 2
    assert max(p[2] for p in points) == 1.0
    assert sorted(p[2] for p in points) == [pytest.approx(3 / 9, abs=1e-3), 1.0]


def test_choropleth_classes_and_legend():
    scale = METRICS["camera_coverage_pct"]
    breaks = class_breaks([10.0, 50.0, 95.0, None], scale)
    assert breaks == [20.0, 40.0, 60.0, 80.0]
    assert [classify(v, breaks) for v in (10.0, 50.0, 95.0, None)] == [0, 2, 4, None]
    fmap = build_map(map_data(), metric="camera_coverage_pct", shown=["choropleth"])
    html = map_html(fmap)
    data = json.loads(re.search(r"var \w+_data = (\{.*?\});\n", html).group(1))
    styles = {f["properties"]["code"]: f["properties"]["_s"] for f in data["features"]}
    # Index 0 is "no data"; classes start at 1 (low coverage is the red end).
    assert styles == {"g1": 1, "g2": 3, "g3": 5, "g4": 0}
    assert '"title":"Camera coverage %"' in html.replace(": ", ":").replace(", ", ",")
    assert "\\u2265 80" in html  # "≥ 80" in the legend


def test_hotspot_layer_holds_only_significant_grids():
    fmap = build_map(map_data(), shown=["hotspots"])
    layer = next(
        child
        for child in fmap._children.values()
        if child._name == "GeoJsonLayer" and child.layer_name.startswith("Hot spots")
    )
    codes = [f["properties"]["code"] for f in layer.data["features"]]
    assert codes == ["g1", "g2"]
    classes = list(HOTSPOT_COLOURS)
    assert [f["properties"]["_s"] for f in layer.data["features"]] == [
        classes.index("hot_99"),
        classes.index("cold_99"),
    ]


def test_patrol_layer_shares_the_grid_geometry():
    fmap = build_map(map_data(), shown=["choropleth", "patrol"])
    html = map_html(fmap)
    # Each grid's ring is embedded once, though two layers draw it.
    # g3 is neither a hot spot nor a blind spot: only the grid layers draw it.
    assert html.count('"code":"g3"') == 1
    assert html.count('"type":"Polygon"') == 4 + 2 + 1  # grids, hot spots, blind spots


def test_blind_spots_from_a_url_are_not_embedded():
    fmap = build_map(map_data(blind_spots="/api/v1/geo/blind-spots"), shown=["blind_spots"])
    html = map_html(fmap)
    assert 'GridWatchMap.lazyGeoJson("/api/v1/geo/blind-spots"' in html
    assert "[104.005,30.005]" not in html


def test_features_are_rounded_and_simplified():
    wiggly = box(104.0000012345, 30.0000098765, 104.0100043, 30.0100021)
    frame = gpd.GeoDataFrame({"code": ["a"]}, geometry=[wiggly], crs="EPSG:4326")
    collection = feature_collection(frame, ["code"])
    ring = collection["features"][0]["geometry"]["coordinates"][0]
    assert all(len(repr(v).split(".")[1]) <= 5 for point in ring for v in point)
    assert collection["features"][0]["properties"] == {"code": "a"}


# -- escaping ------------------------------------------------------------------------------


def test_hostile_names_never_become_markup():
    html = map_html(build_map(map_data(), shown=LAYERS))
    assert HOSTILE not in html and HOSTILE_IMG not in html
    assert "<img" not in html
    assert "\\u003cscript\\u003ealert" in html  # the name is there, as escaped JSON text
    # No text can end the script element early: every <script> is one of the builders'.
    assert html.count("<script") == html.count("</script>")
    assert len(re.findall(r"<script\b", html)) == 4  # leaflet, helpers, L_NO_TOUCH, the map
    # Tooltips are built with textContent, never innerHTML.
    helpers = (ASSETS / "gridwatch" / "gridwatch-map.js").read_text("utf-8")
    assert "innerHTML" not in helpers and "textContent" in helpers


# -- offline -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, shown",
    [
        (map_data(), LAYERS),
        (map_data(), ()),
        (map_data(heat_from_grids=True, density=None), LAYERS),
        (map_data(blind_spots="/api/v1/geo/blind-spots"), ("blind_spots",)),
    ],
)
def test_rendered_maps_reference_no_other_host(data, shown):
    html = map_html(build_map(data, shown=shown))
    assert external_hosts(html) == set()
    links = asset_links(html)
    assert links and all(link.startswith("/maps/assets/") for link in links)
    for link in links:
        assert (ASSETS / link.removeprefix("/maps/assets/")).is_file(), link


def test_a_basemap_is_the_only_other_host():
    basemap = Basemap("http://tiles.intranet:8080/{z}/{x}/{y}.png", "<b>PGIS</b>")
    html = map_html(build_map(map_data(), basemap=basemap))
    assert external_hosts(html) == {"tiles.intranet:8080"}
    assert "<b>PGIS</b>" not in html  # the attribution is text


def test_a_plugin_without_a_vendored_copy_is_refused():
    fmap = build_map(map_data())
    Fullscreen().add_to(fmap)
    with pytest.raises(ExternalAssetError, match="no vendored copy of 'Control.Fullscreen"):
        render_html(fmap)


def test_folium_marker_cluster_uses_the_vendored_copy():
    fmap = build_map(map_data())
    MarkerCluster().add_to(fmap)
    links = asset_links(render_html(fmap))
    assert "/maps/assets/leaflet-markercluster/leaflet.markercluster.js" in links
    assert "/maps/assets/leaflet-markercluster/MarkerCluster.Default.css" in links
    assert all(link.startswith("/maps/assets/") for link in links)


def test_vendored_files_are_present_with_their_licences():
    for path in [*VENDORED.values(), OWN_JS[1], OWN_CSS[1]]:
        assert (ASSETS / path).is_file(), path
    for path in VENDORED.values():
        assert (ASSETS / path).parent.joinpath("LICENSE").is_file(), path
    readme = (ASSETS / "README.md").read_text("utf-8")
    for directory in {Path(p).parts[0] for p in VENDORED.values()}:
        assert f"`{directory}/`" in readme


# -- heat raster ---------------------------------------------------------------------------


def test_density_image_is_transparent_where_nothing_happens():
    image = density_image(raster())
    assert image.dtype == np.uint8 and image.shape == (20, 40, 4)
    assert image[0, 0, 3] == 0 and image[-1, -1, 3] == 0
    hot = np.unravel_index(np.argmax(image[..., 3]), image.shape[:2])
    assert abs(hot[0] - 7) <= 1 and hot[1] == 10
    assert tuple(image[hot][:3]) == (189, 0, 38)  # the top of the ramp


def test_density_rows_are_placed_in_web_mercator():
    # A raster spanning 0–60° N: Mercator stretches the north, so its middle row (29.5°) lies
    # well below the middle of the image.
    values = np.zeros((60, 2))
    values[30] = 1.0  # the row at latitude 29.5°
    image = density_image(DensityRaster(values, 0.0, 0.0, 1.0, 60.0))
    rows = np.flatnonzero(image[:, 0, 3])
    y_top, y_mid = np.log(np.tan(np.pi / 4 + np.radians([60.0, 29.5]) / 2))
    expected = (y_top - y_mid) / y_top * 60
    assert abs(rows.mean() - expected) <= 1.0
    assert rows.mean() - 30 >= 4


def test_count_legends_name_whole_numbers():
    from gridwatch.maps.layers import legend_items

    rows = legend_items([1.0, 2.0, 5.0], ["a", "b", "c", "d"], 0, integer=True)
    assert [text for _, text in rows] == ["0", "1", "2 – 4", "≥ 5"]
    rows = legend_items([20.0, 40.0], ["a", "b", "c"], 0)
    assert [text for _, text in rows] == ["< 20", "20 – 40", "≥ 40"]


# -- cameras, patrol tracks, heat by week --------------------------------------------------


def cameras_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["C1", "C2", "C3", "C4"],
            "name": [HOSTILE, "东一路口", HOSTILE_IMG, "无坐标"],
            "lon": [104.0012345678, 104.015, 104.025, None],
            "lat": [30.0012345678, 30.005, 30.005, 30.0],
            "status": ["online", "broken", "stolen", "offline"],
            "type": ["hd", "checkpoint", None, "standard"],
            "resolution": ["1080P", None, None, None],
            "direction_deg": [90.0, np.nan, 45.0, None],
            "fov_deg": [60.0, np.nan, 90.0, None],
            "range_m": [80.0, np.nan, None, None],
        }
    )


def pings_frame() -> pd.DataFrame:
    """Team T1 walks 100 pings due east, pauses an hour, walks back; T2 stands still."""
    start = pd.Timestamp("2026-09-28 20:00", tz="Asia/Shanghai")
    out = [start + pd.Timedelta(minutes=i) for i in range(100)]
    back = [start + pd.Timedelta(minutes=160 + i) for i in range(100)]
    east = np.linspace(104.0, 104.01, 100)
    return pd.DataFrame(
        {
            "team_code": ["T1"] * 200 + ["T2"] * 3,
            "team_name": [HOSTILE] * 200 + ["西山巡防队"] * 3,
            "ts": out
            + back
            + [start, start + pd.Timedelta(minutes=1), start + pd.Timedelta(2, "m")],
            "lon": [*east, *east[::-1], 104.02, 104.02, 104.02],
            "lat": [30.005] * 200 + [30.015] * 3,
        }
    )


def weekly() -> WeeklyCounts:
    return WeeklyCounts(
        lon=np.array([104.005, 104.015, 104.025]),
        lat=np.array([30.005, 30.005, 30.005]),
        labels=["2026-W38", "2026-W39", "2026-W40"],
        counts=np.array([[2, 0, 0], [0, 0, 0], [8, 4, 0]]),
    )


def full_data(**overrides) -> MapData:
    return map_data(
        cameras=cameras_frame(), tracks=pings_frame(), weekly_heat=weekly(), **overrides
    )


def layer_of(fmap: folium.Map, kind: str):
    return next(child for child in fmap._children.values() if child._name == kind)


def test_camera_track_and_weekly_heat_layers_are_in_the_map_and_the_layer_control():
    fmap = build_map(full_data(), shown=LAYERS)
    kinds = [child["name"] for child in children(fmap).values()]
    for kind in ("CameraLayer", "TrackLayer", "WeeklyHeatLayer"):
        assert kinds.count(kind) == 1, kind
    assert kinds.count("Legend") == 5  # the four polygon layers' and the cameras'
    html = map_html(fmap)
    control = re.search(r"overlays\s*:\s*\{(.*?)\}", html, re.S).group(1)
    for name in ("Cameras", "Patrol tracks", "Incident heat by week"):
        assert json.dumps(name) in control
    for call in ("GridWatchMap.cameras(", "GridWatchMap.tracks(", "GridWatchMap.heatWeeks("):
        assert call in html
    # Without their data the layers are left out, as before.
    kinds = [child["name"] for child in children(build_map(map_data(), shown=LAYERS)).values()]
    assert not {"CameraLayer", "TrackLayer", "WeeklyHeatLayer"} & set(kinds)


def test_new_layers_are_off_unless_chosen():
    fmap = build_map(full_data(), shown=["cameras"])
    added = set(re.findall(rf"(\w+)\.addTo\({fmap.get_name()}\)", map_html(fmap)))
    assert added == {layer_of(fmap, "CameraLayer").get_name()}


def test_camera_payload_is_compact_rounded_and_coloured_by_status():
    payload = camera_payload(cameras_frame())
    assert payload["columns"][:6] == [
        "lat",
        "lon",
        "status",
        "direction_deg",
        "fov_deg",
        "range_m",
    ]
    assert [row[6] for row in payload["rows"]] == ["C1", "C2", "C3"]  # C4 has no position
    first = payload["rows"][0]
    assert first[:6] == [30.00123, 104.00123, 0, 90.0, 60.0, 80.0]
    assert json.dumps(first[:6]) == "[30.00123, 104.00123, 0, 90, 60, 80]"  # no "90.0"
    # An unknown status is drawn as offline, never as working.
    assert statuses_of(payload) == ["online", "broken", "offline"]
    assert payload["rows"][1][3:6] == [None, None, None]  # unknown view: a 50 m circle
    legend = children(build_map(full_data(), shown=["cameras"]))
    items = [c for c in legend.values() if c["name"] == "Legend"]
    assert items  # the cameras' legend names every status colour
    html = map_html(build_map(full_data(), shown=["cameras"]))
    for colour in CAMERA_COLOURS.values():
        assert colour in html


def test_camera_sectors_only_at_high_zoom():
    html = map_html(build_map(full_data(), shown=["cameras"]))
    options = json.loads(re.search(r"\"sectorMinZoom\": (\d+)", html).group(1))
    assert options == SECTOR_MIN_ZOOM >= 15
    helpers = (ASSETS / "gridwatch" / "gridwatch-map.js").read_text("utf-8")
    assert "map.getZoom() < options.sectorMinZoom" in helpers
    assert "disableClusteringAtZoom: options.sectorMinZoom" in helpers


def test_tracks_are_split_at_pauses_and_simplified():
    payload = track_payload(pings_frame())
    assert [team[:2] for team in payload["teams"]] == [["T1", HOSTILE], ["T2", "西山巡防队"]]
    assert payload["teams"][0][2] != payload["teams"][1][2]  # one colour per team
    tracks = payload["tracks"]
    assert [t[0] for t in tracks] == [0, 0, 1]  # T1's hour-long pause splits its patrol
    # 100 pings along a straight street become its two ends.
    assert tracks[0][3] == [30.005, 104.0, 30.005, 104.01]
    assert tracks[1][3] == [30.005, 104.01, 30.005, 104.0]
    assert tracks[2][3] == [30.015, 104.02]  # standing still: one point
    assert tracks[0][1:3] == ["2026-09-28 20:00", "2026-09-28 21:39"]
    total = sum(len(t[3]) // 2 for t in tracks)
    assert total == 5 and len(pings_frame()) == 203


def test_tracks_keep_their_corners():
    # An L-shaped walk keeps its corner; the ping jitter (a few metres) is dropped.
    rng = np.random.default_rng(1)
    lon = np.r_[np.linspace(104.0, 104.01, 50), np.full(50, 104.01)]
    lat = np.r_[np.full(50, 30.0), np.linspace(30.0, 30.01, 50)]
    jitter = rng.normal(0, 0.00002, (2, 100))
    pings = pd.DataFrame(
        {
            "team_code": "T1",
            "team_name": "巡防队",
            "ts": pd.date_range("2026-09-28 20:00", periods=100, freq="min"),
            "lon": lon + jitter[0],
            "lat": lat + jitter[1],
        }
    )
    line = track_payload(pings)["tracks"][0][3]
    points = list(zip(line[0::2], line[1::2], strict=True))
    assert 3 <= len(points) <= 6
    assert any(abs(lat_ - 30.0) < 0.0002 and abs(lon_ - 104.01) < 0.0002 for lat_, lon_ in points)


def test_weekly_heat_is_sparse_and_on_one_scale():
    payload = weekly_heat_payload(weekly())
    # The third cell never had an incident: it is not in the page.
    assert payload["points"] == [[30.005, 104.005], [30.005, 104.015]]
    assert payload["weeks"] == [
        ["2026-W38", [0], [0.25]],
        ["2026-W39", [], []],
        ["2026-W40", [0, 1], [1.0, 0.5]],
    ]
    html = map_html(build_map(full_data(), shown=["heat_weeks"]))
    assert "/maps/assets/leaflet-heat/leaflet-heat.js" in asset_links(html)
    helpers = (ASSETS / "gridwatch" / "gridwatch-map.js").read_text("utf-8")
    assert "slider.type = 'range'" in helpers


def test_hostile_camera_and_team_names_never_become_markup():
    html = map_html(build_map(full_data(), shown=LAYERS))
    assert HOSTILE not in html and HOSTILE_IMG not in html and "<img" not in html
    cameras = re.search(r"GridWatchMap\.cameras\(\w+,\s*(\{.*?\}), \{", html, re.S).group(1)
    assert "\\u003cscript\\u003ealert" in cameras and "\\u003cimg" in cameras
    tracks = re.search(r"GridWatchMap\.tracks\(\w+,\s*(\{.*?\}), \{", html, re.S).group(1)
    assert json.loads(tracks)["teams"][0][1] == HOSTILE
    assert html.count("<script") == html.count("</script>")
    helpers = (ASSETS / "gridwatch" / "gridwatch-map.js").read_text("utf-8")
    assert "innerHTML" not in helpers and "bindPopup(function" in helpers


def test_cameras_and_tracks_from_urls_are_not_embedded():
    data = map_data(cameras="/map/layers/cameras.json", tracks="/map/layers/tracks.json")
    html = map_html(build_map(data, shown=["cameras", "tracks"]))
    assert "GridWatchMap.cameras(" in html and '"/map/layers/cameras.json"' in html
    assert '"/map/layers/tracks.json"' in html
    assert "东一路口" not in html and "\\u4e1c\\u4e00\\u8def\\u53e3" not in html
    assert external_hosts(html) == set()


def test_maps_with_every_new_layer_load_only_vendored_files():
    html = map_html(build_map(full_data(), shown=LAYERS))
    assert external_hosts(html) == set()
    links = asset_links(html)
    for link in links:
        assert link.startswith("/maps/assets/"), link
        assert (ASSETS / link.removeprefix("/maps/assets/")).is_file(), link
    for path in ("leaflet.markercluster.js", "MarkerCluster.css", "MarkerCluster.Default.css"):
        assert f"/maps/assets/leaflet-markercluster/{path}" in links
    # The vendored plugin itself fetches nothing either.
    for path in (ASSETS / "leaflet-markercluster").iterdir():
        if path.suffix in (".js", ".css"):
            assert external_hosts(path.read_text("utf-8")) == set(), path


def test_heat_slider_weeks_end_with_the_last_complete_week():
    from datetime import date

    from gridwatch.mapdata import last_weeks

    # Monday 23 November 2026, inside 2026Q4: the week just begun is left out.
    weeks = last_weeks("2026Q4", date(2026, 11, 23))
    assert [w.label for w in weeks] == [f"2026-W{n}" for n in range(40, 48)]
    # A past quarter ends with the week of its last day (Wednesday 30 September).
    assert last_weeks("2026Q3", date(2026, 11, 23))[-1].label == "2026-W40"


# -- lighter choropleths ---------------------------------------------------------------------


def test_counts_piled_on_zero_and_one_still_use_every_colour():
    """Most grids have 0 or 1 incident in a week, a few many: not just "0" and "≥ 1"."""
    scale = METRICS["incidents"]
    counts = [0] * 1384 + [1] * 1146 + [2] * 453 + [3] * 120 + [4] * 23 + [5, 5, 12, 20, 30]
    breaks = class_breaks(counts, scale)
    assert breaks == [1.0, 2.0, 3.0, 4.0]
    assert len(breaks) == len(scale.colours) - 1
    assert [classify(v, breaks) for v in (0, 1, 2, 3, 4, 30)] == [0, 1, 2, 3, 4, 4]
    # A long tail is cut by its own quantiles, in increasing order, never below its floor.
    tail = class_breaks([0] * 50 + [1] * 30 + [2] * 10 + list(range(3, 13)), scale)
    assert tail == sorted(set(tail)) and tail[:2] == [1.0, 2.0] and len(tail) == 4
    # Nothing left to tell apart above the last break: fewer classes, not invented ones.
    assert class_breaks([0] * 90 + [1] * 10, scale) == [1.0]


def test_few_distinct_values_get_a_class_each():
    """Counts 2, 1, 1, 1: quantiles would all fall on 1 and colour every grid alike."""
    scale = METRICS["incidents"]
    breaks = class_breaks([2, 1, 1, 1], scale)
    assert breaks == [2.0]
    assert [classify(v, breaks) for v in (2, 1, 1, 1)] == [1, 0, 0, 0]
    from gridwatch.maps.layers import legend_items

    rows = legend_items(breaks, scale.colours, scale.digits, scale.integer)
    assert [text for _, text in rows] == ["≤ 1", "≥ 2"]
    assert class_breaks([0.5, 2.5, 7.0], METRICS["incidents_per_1000"]) == [2.5, 7.0]
    assert class_breaks([4, 4, 4], scale) == []  # one value: one class, nothing to tell apart
    # Many distinct values still get quantile classes, one per colour at most.
    many = class_breaks(list(range(100)), scale)
    assert len(many) == len(scale.colours) - 1


def wiggly_neighbours() -> gpd.GeoDataFrame:
    """Two cells sharing a boundary of 200 small zig-zags (about 1 m each)."""
    xs = np.linspace(104.0, 104.01, 201)
    zig = 30.005 + np.where(np.arange(201) % 2, 0.00001, -0.00001)
    edge = list(zip(xs, zig, strict=True))
    south = shapely.Polygon([(104.0, 30.0), (104.01, 30.0), *edge[::-1]])
    north = shapely.Polygon([*edge, (104.01, 30.01), (104.0, 30.01)])
    return gpd.GeoDataFrame(
        {"code": ["s", "n"], "v": [1, 2]}, geometry=[south, north], crs="EPSG:4326"
    )


def test_coverage_simplification_keeps_neighbours_touching():
    frame = wiggly_neighbours()
    collection = feature_collection(frame, ["code"], tolerance=0.0001, coverage=True)
    shapes = [shapely.geometry.shape(f["geometry"]) for f in collection["features"]]
    vertices = sum(len(shapely.get_coordinates(s)) for s in shapes)
    assert vertices < 40  # the zig-zag is gone
    # No gap and no overlap: the two simplified cells still tile the original square.
    union = shapely.union_all(shapes)
    assert union.area == pytest.approx(0.0001, rel=1e-6)
    assert shapes[0].intersection(shapes[1]).area == pytest.approx(0, abs=1e-12)
    # They share the simplified boundary, vertex for vertex.
    shared = shapes[0].boundary.intersection(shapes[1].boundary)
    assert shared.length == pytest.approx(0.01, rel=1e-3)


def test_polygons_from_urls_are_not_embedded_and_their_answer_matches():
    from gridwatch.maps.builder import polygon_collection

    url = "/map/layers/polygons.json?which=grids"
    fmap = build_map(
        map_data(polygons={"areas": url, "grids": url}), shown=["choropleth", "patrol"]
    )
    html = map_html(fmap)
    assert html.count(f"GridWatchMap.lazyGeoJson({json.dumps(url)}") == 2
    assert '"code":"g3"' not in html  # neither a hot spot nor a blind spot: only fetched
    # The legend is still computed from the figures, and the fetched classes match it.
    answer = polygon_collection(map_data(), "incidents", "grids")
    by_code = {f["properties"]["code"]: f["properties"] for f in answer["features"]}
    embedded = map_html(build_map(map_data(), shown=["choropleth", "patrol"]))
    data = json.loads(re.search(r"var \w+_data = (\{.*?\});\n", embedded).group(1))
    for feature in data["features"]:
        code = feature["properties"]["code"]
        assert by_code[code]["_s"] == feature["properties"]["_s"]
        assert by_code[code]["_p"] == feature["properties"]["_p"]
    assert by_code["g1"]["name"] == HOSTILE  # escaped when served, drawn with textContent
    with pytest.raises(ValueError):
        polygon_collection(map_data(), "incidents", "cameras")


def test_delta_encoding_round_trips_and_is_smaller():
    import copy

    from gridwatch.maps.layers import DELTA_KEY, delta_decode, delta_encode

    frame = wiggly_neighbours()
    frame.loc[1, "geometry"] = shapely.MultiPolygon(
        [frame.geometry[1], box(105, 31, 105.01, 31.01)]
    )
    plain = feature_collection(frame, ["code"], tolerance=0.0)  # keep the 200 zig-zags
    packed = delta_encode(copy.deepcopy(plain))
    assert packed[DELTA_KEY] == 5
    first_ring = packed["features"][0]["geometry"]["coordinates"][0]
    assert all(isinstance(v, int) for v in first_ring)
    assert first_ring[:2] == [10400000, 3000000]  # the first point whole, then differences
    assert max(abs(v) for v in first_ring[2:]) <= 1000
    assert len(json.dumps(packed)) < len(json.dumps(plain)) / 2.5
    unpacked = delta_decode(packed)
    assert DELTA_KEY not in unpacked
    for mine, theirs in zip(unpacked["features"], plain["features"], strict=True):
        a = np.asarray(shapely.get_coordinates(shapely.geometry.shape(mine["geometry"])))
        b = np.asarray(shapely.get_coordinates(shapely.geometry.shape(theirs["geometry"])))
        np.testing.assert_allclose(a, b, atol=1e-9)
