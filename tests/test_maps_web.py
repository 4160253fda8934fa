"""The map page, map documents, map GeoJSON and basemap tiles in the web app.

On the two-township county of tests/web_support.py: a township user's map and GeoJSON hold
their own grids only, the map document's inline code runs under a per-response nonce, nothing
is loaded from another host, and MBTiles tiles are served with the TMS row flip.
"""

from __future__ import annotations

import gzip
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
    STATION,
    TOWNSHIP_A,
    TOWNSHIP_B,
    VILLAGE_A,
    VILLAGE_B,
    login,
)

from gridwatch.web import create_app
from gridwatch.web.mapcache import RenderCache, map_cache

ALL_LAYERS = "heat,heat_weeks,choropleth,patrol,tracks,blind_spots,hotspots,cameras"
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


def polygon_urls(html: str) -> list[str]:
    """The URLs the document's choropleth and patrol layers fetch their polygons from."""
    found = re.findall(r'GridWatchMap\.lazyGeoJson\(("/map/layers/polygons\.json\?[^"]+")', html)
    return sorted({json.loads(url) for url in found})


def fetched_polygons(client, html: str) -> str:
    """The bodies of every polygon URL of a map document, as the browser would fetch them."""
    bodies = []
    for url in polygon_urls(html):
        response = client.get(url)
        assert response.status_code == 200, url
        bodies.append(response.get_data(as_text=True))
    return "\n".join(bodies)


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
    polygons = fetched_polygons(client, html)
    assert all(f'"code":"{code}"' in polygons for code in GRIDS_A)
    assert not any(code in polygons for code in GRIDS_B)


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
    assert html.count("<script") == html.count("</script>")
    polygons = fetched_polygons(client, html)
    assert HOSTILE_NAME not in polygons and "<script>alert" not in polygons
    assert "\\u003cscript\\u003ealert" in polygons


# -- jurisdiction ----------------------------------------------------------------------------


def test_township_map_holds_only_its_own_grids(client):
    login(client, "town_a")
    html = frame(client).get_data(as_text=True)
    polygons = fetched_polygons(client, html)
    for code in GRIDS_A:
        assert f'"code":"{code}"' in polygons
    for code in (*GRIDS_B, TOWNSHIP_B, VILLAGE_B):
        assert code not in html and code not in polygons
    assert "西一村" not in html + polygons and "西山乡" not in html + polygons
    # The county-wide density raster is not theirs: their heat comes from their own grids.
    assert "L.imageOverlay" not in html and "L.heatLayer" in html
    village = fetched_polygons(client, frame(client, level="village").get_data(as_text=True))
    assert VILLAGE_A in village and VILLAGE_B not in village


def test_county_map_draws_the_density_raster(client):
    login(client, "county")
    html = frame(client).get_data(as_text=True)
    assert "L.imageOverlay" in html and "data:image/png;base64," in html
    polygons = fetched_polygons(client, html)
    for code in (*GRIDS_A, *GRIDS_B):
        assert f'"code":"{code}"' in polygons


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


# -- cameras, patrol tracks, heat by week --------------------------------------------------

HOSTILE_TEAM = "<img src=x onerror=alert(1)>巡防队"
HOSTILE_CAMERA = '<script>alert("cam")</script>路口'


@pytest.fixture
def field_data(app, web_settings, tmp_path):
    """Cameras, teams and patrol pings in both townships of the web county.

    Township A: cameras CA1 (working, hostile name) and CA2 (broken), team TA (hostile name)
    walking 60 pings along a street on 2026-09-29 evening. Township B: camera CB1 and team TB.
    """
    from gridwatch.ingest import import_file

    engine = app.extensions["gridwatch"].engine
    cameras = tmp_path / "cameras.csv"
    cameras.write_text(
        "id,name,lon,lat,type,status,direction_deg,fov_deg,range_m\n"
        f'CA1,"{HOSTILE_CAMERA.replace(chr(34), chr(34) * 2)}",104.004,30.004,高清,在线,90,60,80\n'
        "CA2,东一村卡口,104.012,30.006,卡口,故障,,,\n"
        "CB1,西一村路口,104.006,30.016,标清,离线,180,90,50\n",
        "utf-8",
    )
    teams = tmp_path / "teams.csv"
    teams.write_text(
        "code,name,kind,station_code,home_area_code,members\n"
        f"TA,{HOSTILE_TEAM},township,{STATION},{TOWNSHIP_A},6\n"
        f"TB,西山乡巡防队,township,,{TOWNSHIP_B},5\n",
        "utf-8",
    )
    rows = ["team_code,ts,lon,lat"]
    for minute in range(60):  # TA: due east along y = 30.005, one ping a minute
        rows.append(f"TA,2026-09-29 20:{minute:02d},{104.001 + minute * 0.0003:.5f},30.005")
    for minute in range(10):
        rows.append(f"TB,2026-09-29 21:{minute:02d},104.005,{30.012 + minute * 0.0005:.5f}")
    # An old patrol, outside the last 7 days of the quarter: not on the map.
    rows.append("TA,2026-08-01 10:00,104.002,30.002")
    pings = tmp_path / "pings.csv"
    pings.write_text("\n".join(rows) + "\n", "utf-8")
    for kind, path in (("cameras", cameras), ("teams", teams), ("patrols", pings)):
        summary = import_file(kind, path, web_settings, engine)
        assert summary.rejected == 0, (kind, summary)


def layer_json(client, name, **args):
    response = client.get(f"/map/layers/{name}.json", query_string=args)
    assert response.status_code == 200, response.status_code
    assert response.mimetype == "application/json"
    return response.get_json()


def script_arg(html: str, call: str) -> object:
    match = re.search(rf"GridWatchMap\.{call}\(\w+,\s*(.*?), \{{", html, re.S)
    assert match, call
    return json.loads(match.group(1))


def test_map_document_has_the_camera_track_and_weekly_heat_layers(client, field_data):
    login(client, "county")
    html = frame(client).get_data(as_text=True)
    control = re.search(r"overlays\s*:\s*\{(.*?)\}", html, re.S).group(1)
    names = control.encode().decode("unicode_escape")
    for name in ("视频点位", "巡逻轨迹(近7天)", "逐周警情热力"):
        assert f'"{name}"' in names
    # Cameras and tracks are fetched when switched on, scoped like the map itself.
    assert script_arg(html, "cameras") == "/map/layers/cameras.json"
    assert script_arg(html, "tracks") == f"/map/layers/tracks.json?period={PERIOD}"
    local = frame(client, area=TOWNSHIP_A).get_data(as_text=True)
    assert script_arg(local, "cameras") == f"/map/layers/cameras.json?area={TOWNSHIP_A}"
    # The legend's labels are Chinese.
    assert "\\u6545\\u969c" in html  # 故障


def test_layer_data_is_gzipped_for_browsers(client, field_data):
    import gzip

    login(client, "county")
    plain = client.get("/map/layers/cameras.json")
    assert "Content-Encoding" not in plain.headers
    zipped = client.get("/map/layers/cameras.json", headers={"Accept-Encoding": "gzip, br"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped.headers["Vary"]
    assert json.loads(gzip.decompress(zipped.data)) == plain.get_json()


def test_layer_data_needs_a_sign_in(client, field_data):
    for name in ("cameras", "tracks"):
        response = client.get(f"/map/layers/{name}.json")
        assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_cameras_are_scoped_to_the_jurisdiction(client, field_data):
    login(client, "county")
    county = layer_json(client, "cameras")
    assert sorted(row[6] for row in county["rows"]) == ["CA1", "CA2", "CB1"]
    by_id = {row[6]: row for row in county["rows"]}
    assert county["statuses"][by_id["CA2"][2]] == "broken"
    assert county["statuses"][by_id["CB1"][2]] == "offline"
    assert by_id["CA1"][7] == HOSTILE_CAMERA  # data as written: the page shows it as text
    town = app_client = client.application.test_client()
    login(app_client, "town_a")
    assert sorted(row[6] for row in layer_json(town, "cameras")["rows"]) == ["CA1", "CA2"]
    assert client.get(f"/map/layers/cameras.json?area={TOWNSHIP_B}").status_code == 200
    assert town.get(f"/map/layers/cameras.json?area={TOWNSHIP_B}").status_code == 404
    station = client.application.test_client()
    login(station, "station")  # PS01 covers township A only
    assert "CB1" not in {row[6] for row in layer_json(station, "cameras")["rows"]}


def test_patrol_tracks_are_scoped_recent_and_simplified(client, field_data):
    login(client, "town_a")
    tracks = layer_json(client, "tracks", period=PERIOD)
    assert [team[:2] for team in tracks["teams"]] == [["TA", HOSTILE_TEAM]]
    (track,) = tracks["tracks"]
    # 60 pings along a straight street: its two ends; the August ping is not recent.
    assert track[1:3] == ["2026-09-29 20:00", "2026-09-29 20:59"]
    assert track[3] == [30.005, 104.001, 30.005, 104.0187]
    assert "西山乡巡防队" not in json.dumps(tracks, ensure_ascii=False)
    other = client.get(f"/map/layers/tracks.json?period={PERIOD}&area={TOWNSHIP_B}")
    assert other.status_code == 404
    county = client.application.test_client()
    login(county, "county")
    teams = layer_json(county, "tracks", period=PERIOD)["teams"]
    assert [team[0] for team in teams] == ["TA", "TB"]
    assert layer_json(county, "tracks", period="2026Q2")["tracks"] == []
    assert client.get("/map/layers/tracks.json?period=2026Q9").status_code == 400


def test_weekly_heat_holds_pre_binned_counts_of_the_users_grids(client, field_data):
    login(client, "town_a")
    html = frame(client, layers="heat_weeks").get_data(as_text=True)
    # Fetched when the layer is switched on, not embedded in the document.
    url = script_arg(html, "heatWeeks")
    assert url == f"/map/layers/weeks.json?period={PERIOD}"
    heat = layer_json(client, "weeks", period=PERIOD)
    labels = [week[0] for week in heat["weeks"]]
    # The eight weeks up to the end of 2026Q3 (Wednesday 30 September: week 40).
    assert len(labels) == 8 and labels[-1].startswith("2026-W40 (09-28")
    assert labels[0].startswith("2026-W33")
    # Only incident A3 (5 September, week 36) falls in them: one grid, one week, weight 1.
    ((lat, lon),) = heat["points"]
    assert 30.0 < lat < 30.01 and 104.0 < lon < 104.01  # inside grid A1
    assert [week[1:] for week in heat["weeks"]] == [[[], []]] * 3 + [[[0], [1.0]]] + [[[], []]] * 4
    assert "GridWatchMap.heatWeeks(" in html and '"weeks":' not in html
    # Township B's grids are never part of it.
    town_b = client.application.test_client()
    login(town_b, "town_b")
    heat_b = layer_json(town_b, "weeks", period=PERIOD)
    assert heat_b["points"] == [] and all(week[1] == [] for week in heat_b["weeks"])
    assert town_b.get(f"/map/layers/weeks.json?area={TOWNSHIP_A}").status_code == 404
    assert town_b.get("/map/layers/weeks.json?group=nonsense").status_code == 400


def test_hostile_camera_and_team_names_stay_text(client, field_data):
    login(client, "county")
    html = frame(client).get_data(as_text=True)
    assert HOSTILE_CAMERA not in html and HOSTILE_TEAM not in html and "<img" not in html
    for name in ("cameras", "tracks"):
        response = client.get(f"/map/layers/{name}.json", query_string={"period": PERIOD})
        # JSON, never HTML: a browser does not sniff it into a document.
        assert response.mimetype == "application/json"
        assert response.headers.get("X-Content-Type-Options") == "nosniff"


# -- choropleth polygons fetched on demand ---------------------------------------------------


def legend_texts(html: str) -> list[list[str]]:
    """The rows of every legend of a map document."""
    specs = re.findall(r"GridWatchMap\.legend\(\w+, \w+,\s*(\{.*?\})\);", html, re.S)
    return [[item[1] for item in json.loads(spec)["items"]] for spec in specs]


def test_heat_map_embeds_no_choropleth_polygons(client):
    login(client, "county")
    html = frame(client, layers="heat").get_data(as_text=True)
    # The grids are in the document only as the weekly heat's points, never as polygons.
    assert '"type":"Polygon"' not in html and '"type":"MultiPolygon"' not in html
    urls = polygon_urls(html)
    # At grid level the choropleth and the patrol dosage draw one answer, fetched once.
    assert len(urls) == 1 and "which=grids" in urls[0]
    response = client.get(urls[0], headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    collection = json.loads(gzip.decompress(response.get_data()))
    assert {f["properties"]["code"] for f in collection["features"]} == {*GRIDS_A, *GRIDS_B}
    # Both layers' classes and tooltips ride on the same features.
    properties = collection["features"][0]["properties"]
    assert {"_s", "_p", "name", "incidents", "patrol_minutes"} <= set(properties)
    village = polygon_urls(frame(client, layers="heat", level="village").get_data(as_text=True))
    assert len(village) == 2 and any("which=areas" in url for url in village)


def test_polygon_layer_is_scoped_and_checked(client):
    assert client.get("/map/layers/polygons.json?which=grids").status_code in (302, 401)
    login(client, "town_a")
    body = client.get(f"/map/layers/polygons.json?which=grids&period={PERIOD}").get_json()
    assert codes_in(body) == set(GRIDS_A)
    villages = client.get(
        f"/map/layers/polygons.json?which=areas&level=village&period={PERIOD}"
    ).get_json()
    assert codes_in(villages) == {VILLAGE_A}
    other = f"/map/layers/polygons.json?which=grids&period={PERIOD}&area={TOWNSHIP_B}"
    assert client.get(other).status_code == 404
    assert client.get("/map/layers/polygons.json?which=cameras").status_code == 400
    assert client.get("/map/layers/polygons.json?which=grids&metric=x").status_code == 400


def test_polygon_layer_escapes_hostile_names(client):
    login(client, "county")
    response = client.get(f"/map/layers/polygons.json?which=areas&level=village&period={PERIOD}")
    text = response.get_data(as_text=True)
    assert "<script>" not in text and "\\u003cscript\\u003e" in text
    names = {f["properties"]["name"] for f in response.get_json()["features"]}
    assert HOSTILE_NAME in names


def test_grid_choropleth_tells_apart_few_distinct_counts(client):
    """2026Q3: grids hold 2, 1, 1 and 1 incidents; the 2 must not look like the 1s."""
    login(client, "county")
    html = frame(client, layers="choropleth").get_data(as_text=True)
    collection = json.loads(fetched_polygons(client, html))
    counts = {
        f["properties"]["code"]: f["properties"]["incidents"] for f in collection["features"]
    }
    styles = {f["properties"]["code"]: f["properties"]["_s"] for f in collection["features"]}
    assert sorted(counts.values()) == [1, 1, 1, 2]
    busiest = max(counts, key=counts.__getitem__)
    assert len({styles[code] for code in counts if code != busiest}) == 1
    assert styles[busiest] > max(styles[code] for code in counts if code != busiest)
    choropleth_legend = legend_texts(html)[0]
    assert choropleth_legend == ["≤ 1", "≥ 2"]


def test_screen_map_fetches_its_polygons_with_its_token(app, client):
    from gridwatch.accounts import issue_token

    token = issue_token(app.extensions["gridwatch"].engine, "screen")
    query = {"period": PERIOD, "layers": "choropleth", "token": token}
    html = client.get("/map/frame", query_string=query).get_data(as_text=True)
    urls = polygon_urls(html)
    assert urls and all(f"token={token}" in url for url in urls)
    assert codes_in(client.get(urls[0]).get_json()) == {*GRIDS_A, *GRIDS_B}
    # A signed-in user with the same view never gets the token-bearing cached document.
    login(client, "county")
    mine = client.get("/map/frame", query_string={**query, "token": ""})
    assert token not in mine.get_data(as_text=True)


def test_map_page_weight_is_bounded(client):
    """The county's heat-map page with every asset, as a browser would fetch it."""
    login(client, "county")
    page = client.get("/map", query_string={"period": PERIOD, "layers": "heat"})
    html = page.get_data(as_text=True)
    src = re.search(r'<iframe class="map-frame" src="([^"]+)"', html).group(1)
    document = client.get(src.replace("&amp;", "&")).get_data(as_text=True)
    assets = set(re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=\"(/[^\"]+)\"", html))
    assets |= set(re.findall(r"<(?:script|link)\b[^>]*?(?:src|href)=\"(/[^\"]+)\"", document))
    sizes = {url: len(client.get(url).get_data()) for url in assets}
    total = len(html.encode()) + len(document.encode()) + sum(sizes.values())
    # Leaflet and the plugins are most of it; the four grids add a few kB at most.
    assert len(document.encode()) < 30_000, len(document.encode())
    assert total < 400_000, (total, sizes)
