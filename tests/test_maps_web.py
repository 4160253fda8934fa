"""The map page, map documents, map GeoJSON and basemap tiles in the web app.

On the two-township county of tests/web_support.py: a township user's map and GeoJSON hold
their own grids only, the map document's inline code runs under a per-response nonce, nothing
is loaded from another host, and MBTiles tiles are served with the TMS row flip.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from branca.utilities import write_png
from web_support import (
    GRIDS_A,
    GRIDS_B,
    HOSTILE_NAME,
    TOWNSHIP_A,
    TOWNSHIP_B,
    VILLAGE_A,
    VILLAGE_B,
    login,
)

from gridwatch.web import create_app
from gridwatch.web.mapcache import RenderCache, map_cache

ALL_LAYERS = "heat,choropleth,patrol,blind_spots,hotspots"
PERIOD = "2026Q3"
GEO_PATHS = (
    f"/api/v1/geo/metrics?level=grid&period={PERIOD}",
    f"/api/v1/geo/hotspots?period={PERIOD}",
    "/api/v1/geo/blind-spots",
)
URL = re.compile(r"(?i)\b(?:https?:)?//([a-z0-9.-]+(?::\d+)?)")


def frame(client, **args):
    query = {"period": PERIOD, "layers": ALL_LAYERS, **args}
    return client.get("/map/frame", query_string=query)


def directives(response) -> dict[str, str]:
    csp = response.headers["Content-Security-Policy"]
    return dict(d.strip().split(" ", 1) for d in csp.split(";"))


def codes_in(geojson: dict) -> set[str]:
    return {
        f["properties"].get("code") or f["properties"]["area_code"] for f in geojson["features"]
    }


def app_with(web_settings, **overrides):
    """The app on the test's database copy with extra ``GRIDWATCH_*`` settings."""
    from conftest import make_settings

    settings = make_settings(web_settings.var_dir.parent, **overrides)
    return create_app({"GRIDWATCH_SETTINGS": settings, "TESTING": True})


# -- access --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/map", "/map/frame", "/tiles/1/0/0.png"])
def test_map_pages_need_a_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


@pytest.mark.parametrize("path", GEO_PATHS)
def test_map_geojson_needs_a_sign_in(client, path):
    assert client.get(path).status_code == 401


def test_map_page_embeds_the_map_document(client):
    login(client, "county")
    response = client.get("/map", query_string={"period": PERIOD, "area": TOWNSHIP_A})
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    src = re.search(r'<iframe class="map-frame" src="([^"]+)"', page).group(1)
    assert src.startswith("/map/frame?") and f"area={TOWNSHIP_A}" in src
    assert "<h1>地图" in page and "图层" in page  # Chinese by default
    # The page itself keeps the strict policy: no nonce, no inline script.
    assert directives(response)["script-src"] == "'self'"
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert client.get(src.replace("&amp;", "&")).status_code == 200


def test_area_page_embeds_its_own_map(client):
    login(client, "town_a")
    page = client.get(f"/areas/{VILLAGE_A}").get_data(as_text=True)
    src = re.search(r'<iframe class="map-frame map-frame-small"[^>]*src="([^"]+)"', page, re.S)
    assert src and f"area={VILLAGE_A}" in src.group(1)
    html = client.get(src.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert all(f'"code":"{code}"' in html for code in GRIDS_A)


# -- the map document: nonce CSP, no other host, escaping ------------------------------------


def test_map_document_runs_under_a_per_response_nonce(client):
    login(client, "county")
    first, second = frame(client), frame(client)
    assert first.status_code == 200 and first.mimetype == "text/html"
    policy = directives(first)
    nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_-]{16,})'", policy["script-src"]).group(1)
    assert policy["style-src"] == f"'self' 'nonce-{nonce}'"
    assert policy["default-src"] == "'self'" and policy["frame-ancestors"] == "'self'"
    assert "unsafe-inline" not in first.headers["Content-Security-Policy"]
    html = first.get_data(as_text=True)
    tags = re.findall(r"<(?:script|style)\b[^>]*>", html)
    assert len(tags) >= 5
    assert all(f'nonce="{nonce}"' in tag for tag in tags), tags
    # A fresh nonce each time, also when the document comes from the cache.
    assert directives(second)["script-src"] != policy["script-src"]
    assert f'nonce="{nonce}"' not in second.get_data(as_text=True)


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"layers": ""},
        {"group": "two_robberies_one_theft", "metric": "incidents_per_1000"},
        {"level": "village", "metric": "camera_coverage_pct"},
        {"level": "township", "area": TOWNSHIP_B},
    ],
)
def test_map_documents_load_nothing_from_another_host(client, args):
    login(client, "county")
    response = frame(client, **args)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert URL.findall(html) == []
    links = re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=\"([^\"]+)\"", html)
    assert links and all(link.startswith("/maps/assets/") for link in links)
    for link in links:
        assert client.get(link).status_code == 200, link


def test_hostile_area_names_stay_text_in_the_map(client):
    login(client, "county")
    html = frame(client, level="village").get_data(as_text=True)
    assert HOSTILE_NAME not in html and "<script>alert" not in html
    assert "\\u003cscript\\u003ealert" in html
    assert html.count("<script") == html.count("</script>")


# -- jurisdiction ----------------------------------------------------------------------------


def test_township_map_holds_only_its_own_grids(client):
    login(client, "town_a")
    html = frame(client).get_data(as_text=True)
    for code in GRIDS_A:
        assert f'"code":"{code}"' in html
    for code in (*GRIDS_B, TOWNSHIP_B, VILLAGE_B):
        assert code not in html
    assert "西一村" not in html and "西山乡" not in html
    # The county-wide density raster is not theirs: their heat comes from their own grids.
    assert "L.imageOverlay" not in html and "L.heatLayer" in html
    village = frame(client, level="village").get_data(as_text=True)
    assert VILLAGE_A in village and VILLAGE_B not in village


def test_county_map_draws_the_density_raster(client):
    login(client, "county")
    html = frame(client).get_data(as_text=True)
    assert "L.imageOverlay" in html and "data:image/png;base64," in html
    for code in (*GRIDS_A, *GRIDS_B):
        assert f'"code":"{code}"' in html


@pytest.mark.parametrize("path", ["/map", "/map/frame", *GEO_PATHS])
def test_other_townships_areas_answer_404(client, path):
    login(client, "town_a")
    joiner = "&" if "?" in path else "?"
    assert client.get(f"{path}{joiner}area={TOWNSHIP_B}").status_code == 404
    assert client.get(f"{path}{joiner}area={GRIDS_B[0]}").status_code == 404
    assert client.get(f"{path}{joiner}area=no-such-area").status_code == 404
    assert client.get(f"{path}{joiner}area={GRIDS_A[0]}").status_code == 200


@pytest.mark.parametrize(
    "username, expected", [("town_a", set(GRIDS_A)), ("county", {*GRIDS_A, *GRIDS_B})]
)
def test_map_geojson_is_scoped(client, username, expected):
    login(client, username)
    response = client.get(GEO_PATHS[0])
    assert response.status_code == 200 and response.mimetype == "application/geo+json"
    metrics = json.loads(response.get_data(as_text=True))
    assert codes_in(metrics) == expected
    blind = json.loads(client.get(GEO_PATHS[2]).get_data(as_text=True))
    assert codes_in(blind) <= expected and codes_in(blind)
    hot = json.loads(client.get(GEO_PATHS[1]).get_data(as_text=True))
    assert codes_in(hot) <= expected


def test_metrics_geojson_carries_the_metric_objects(client):
    login(client, "county")
    metrics = json.loads(client.get(GEO_PATHS[0]).get_data(as_text=True))
    listed = client.get(f"/api/v1/metrics?level=grid&period={PERIOD}").get_json()
    by_code = {row["area_code"]: row for row in listed}
    assert len(metrics["features"]) == len(listed) == 4
    for feature in metrics["features"]:
        props = feature["properties"]
        assert {**props} == {**by_code[props["area_code"]], "name": props["name"]}
        assert feature["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert sum(f["properties"]["incidents_total"] for f in metrics["features"]) == 5


@pytest.mark.parametrize(
    "args",
    [
        {"level": "county"},
        {"metric": "secret"},
        {"group": "nope"},
        {"layers": "x"},
        {"period": "2026Q9"},
    ],
)
def test_bad_map_parameters_answer_400(client, args):
    login(client, "county")
    assert frame(client, **args).status_code == 400


def test_openapi_lists_the_map_layers(client):
    from openapi_spec_validator import validate

    document = client.get("/api/v1/openapi.json").get_json()
    validate(document)
    assert {"/geo/metrics", "/geo/hotspots", "/geo/blind-spots"} <= set(document["paths"])


# -- cache -----------------------------------------------------------------------------------


def test_render_cache_is_a_bounded_lru():
    cache = RenderCache(max_entries=2)
    built = []

    def build(value):
        built.append(value)
        return value

    assert cache.get_or_build("a", lambda: build(1)) == 1
    assert cache.get_or_build("b", lambda: build(2)) == 2
    assert cache.get_or_build("a", lambda: build(3)) == 1  # hit, and now the newest
    cache.get_or_build("c", lambda: build(4))  # evicts b
    assert cache.get_or_build("b", lambda: build(5)) == 5
    assert built == [1, 2, 4, 5] and len(cache) == 2


def test_map_cache_is_shared_per_jurisdiction_and_invalidated_by_a_new_run(app, web_settings):
    from gridwatch.workers.engine import RunRequest, run_eager

    client = app.test_client()
    login(client, "town_a")
    with app.app_context():
        cache = map_cache()
    strip = lambda r: re.sub(r'nonce="[^"]+"', "", r.get_data(as_text=True))  # noqa: E731
    first = strip(frame(client))
    misses = cache.misses
    assert strip(frame(client)) == first and cache.misses == misses  # served from the cache
    # The other township gets its own entry, never town_a's document.
    other = app.test_client()
    login(other, "town_b")
    assert GRIDS_A[0] not in strip(frame(other)) and cache.misses == misses + 1
    # A new published run makes a new key.
    engine = app.extensions["gridwatch"].engine
    run_eager(engine, web_settings, RunRequest(trigger="test", full=True))
    again = strip(frame(client))
    assert cache.misses == misses + 2
    assert again != first  # element ids differ: it was rendered anew


# -- basemap tiles -------------------------------------------------------------------------


def tile_png(rgb: tuple[int, int, int]) -> bytes:
    image = np.zeros((4, 4, 4), dtype=np.uint8)
    image[..., :3] = rgb
    image[..., 3] = 255
    return write_png(image)


def make_mbtiles(path: Path) -> dict[tuple[int, int, int], bytes]:
    """A tiny MBTiles file: zoom 1, column 0, both TMS rows, in two colours."""
    tiles = {(1, 0, 0): tile_png((255, 0, 0)), (1, 0, 1): tile_png((0, 0, 255))}
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, "
            "tile_data BLOB)"
        )
        db.executemany(
            "INSERT INTO metadata VALUES (?, ?)",
            [
                ("name", "test"),
                ("format", "png"),
                ("minzoom", "1"),
                ("maxzoom", "1"),
                ("attribution", "<a href='http://evil'>x</a>"),
            ],
        )
        db.executemany(
            "INSERT INTO tiles VALUES (?, ?, ?, ?)",
            [(z, x, row, data) for (z, x, row), data in tiles.items()],
        )
    return tiles


def test_mbtiles_tiles_are_served_with_the_tms_flip(web_settings, tmp_path):
    path = tmp_path / "basemap.mbtiles"
    tiles = make_mbtiles(path)
    app = app_with(web_settings, GRIDWATCH_TILES=str(path))
    client = app.test_client()
    login(client, "town_a")
    north = client.get("/tiles/1/0/0.png")  # XYZ y=0 is the northern row: TMS row 1
    assert north.status_code == 200 and north.mimetype == "image/png"
    assert north.data == tiles[(1, 0, 1)]
    assert client.get("/tiles/1/0/1.png").data == tiles[(1, 0, 0)]
    assert "max-age" in north.headers["Cache-Control"]
    for missing in ("/tiles/1/1/0.png", "/tiles/2/0/0.png", "/tiles/1/5/0.png"):
        assert client.get(missing).status_code == 404
    html = frame(client).get_data(as_text=True)
    assert '"/tiles/{z}/{x}/{y}.png"' in html
    assert "http://evil" not in html and URL.findall(html) == []
    app.extensions["gridwatch"].engine.dispose()


def test_no_tiles_without_an_mbtiles_setting(client):
    login(client, "county")
    assert client.get("/tiles/1/0/0.png").status_code == 404
    assert "L.tileLayer" not in frame(client).get_data(as_text=True)


def test_an_intranet_tile_server_is_allowed_for_images_only(web_settings):
    template = "http://pgis.intranet:8080/tiles/{z}/{x}/{y}.png"
    app = app_with(web_settings, GRIDWATCH_TILES=template)
    client = app.test_client()
    login(client, "county")
    response = frame(client)
    policy = directives(response)
    assert policy["img-src"] == "'self' data: blob: http://pgis.intranet:8080"
    assert "pgis.intranet" not in policy["script-src"] + policy["connect-src"]
    html = response.get_data(as_text=True)
    assert set(URL.findall(html)) == {"pgis.intranet:8080"}
    app.extensions["gridwatch"].engine.dispose()
