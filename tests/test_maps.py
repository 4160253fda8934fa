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
import pytest
from folium.plugins import MarkerCluster
from shapely.geometry import box

from gridwatch.maps.builder import LAYERS, Basemap, MapData, build_map, map_html
from gridwatch.maps.heat import DensityRaster, density_image
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
    MarkerCluster().add_to(fmap)
    with pytest.raises(ExternalAssetError, match="markerclusterjs"):
        render_html(fmap)


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
