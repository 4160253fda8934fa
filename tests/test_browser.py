"""What a person sees, in headless Chromium: sign-in, the overview, the map and the screen.

The web county of ``tests/web_support.py`` is served by the real app on a free loopback port
(a werkzeug server in a thread) and driven with Playwright through the system's
``/usr/bin/chromium`` (``.ci/run`` installs it; ``playwright install`` is never needed). Every
request of every page and frame goes through a route that records it and refuses anything not
addressed to 127.0.0.1, so the intranet promise — no page loads anything from another host —
is checked on what the browser actually asked for. Screenshots land in ``test-artifacts/``.

The assertions are about behaviour, not pixels: the Leaflet map exists, its layers painted
something, Chinese text is drawn with real glyphs (two different characters give two different
images; missing fonts give identical boxes) and the pages' font stack names the CJK system
fonts. Without Chromium or Playwright the tests are skipped, and fail under ``CI=true``.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import make_settings, service_unavailable
from web_support import PASSWORD

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
#: The system fonts every page must name for Chinese text (no web fonts on an intranet).
CJK_FONTS = ("Microsoft YaHei", "PingFang SC", "Noto Sans CJK SC", "WenQuanYi")
#: The incidents of the web county fall in this quarter.
PERIOD = "2026Q3"
TIMEOUT_MS = 30_000

#: Draws each character on a canvas in the element's own font; returns the font stack and
#: one PNG data URL per character. A missing glyph is drawn as the same box every time.
GLYPHS_JS = """
([selector, chars]) => {
  const element = document.querySelector(selector);
  const font = getComputedStyle(element).fontFamily;
  const canvas = document.createElement("canvas");
  canvas.width = 64;
  canvas.height = 64;
  const ctx = canvas.getContext("2d");
  const images = chars.map((ch) => {
    ctx.clearRect(0, 0, 64, 64);
    ctx.fillStyle = "#000";
    ctx.font = "48px " + font;
    ctx.fillText(ch, 4, 52);
    return canvas.toDataURL();
  });
  return {font, images};
}
"""

#: Counts what the Leaflet map painted: vector paths, and canvases holding visible pixels
#: (GridWatch's maps prefer the canvas renderer; the heat layer is a canvas or an image).
PAINTED_JS = """
() => {
  const panes = document.querySelectorAll(".leaflet-map-pane .leaflet-overlay-pane");
  let paths = 0, paintedCanvases = 0, images = 0;
  for (const pane of panes) {
    paths += pane.querySelectorAll("path").length;
    images += pane.querySelectorAll("img.leaflet-image-layer").length;
    for (const canvas of pane.querySelectorAll("canvas")) {
      if (!canvas.width || !canvas.height) continue;
      const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < data.length; i += 4) {
        if (data[i] !== 0) { paintedCanvases += 1; break; }
      }
    }
  }
  return {
    maps: document.querySelectorAll(".leaflet-container").length,
    paths, paintedCanvases, images,
    overlays: document.querySelectorAll(".leaflet-control-layers-overlays input").length,
  };
}
"""


def is_loopback(url: str) -> bool:
    """Return whether a request stays on this machine (or never touches the network)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname == "127.0.0.1"


@dataclass
class BrowserSession:
    """A signed-in browser context on the served app, and every request it made."""

    base_url: str
    context: Any
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_reports: list[str] = field(default_factory=list)

    def open(self, path: str, width: int = 1600, height: int = 1000) -> Any:
        """Open ``path`` in a new page of the signed-in context; return the page."""
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        page.on("console", self._console)
        response = page.goto(self.base_url + path, wait_until="load")
        assert response is not None and response.ok, f"{path}: HTTP {response and response.status}"
        return page

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.csp_reports.append(message.text)

    def start_counting(self) -> None:
        """Forget the requests, errors and CSP reports seen so far."""
        self.requests.clear()
        self.page_errors.clear()
        self.csp_reports.clear()

    def assert_clean(self, *expected_paths: str) -> None:
        """Assert no request left 127.0.0.1, and the page neither threw nor broke its CSP."""
        assert self.requests, "no request was recorded: the route guard is not working"
        outside = [url for url in self.requests if not is_loopback(url)]
        assert outside == [], f"requests left 127.0.0.1: {outside}"
        for path in expected_paths:
            assert any(urlsplit(u).path.startswith(path) for u in self.requests), path
        assert self.page_errors == [], self.page_errors
        assert self.csp_reports == [], self.csp_reports


def _launch_chromium() -> tuple[Any, Any]:
    """Start Playwright and the system Chromium (skip, or fail under CI, when missing)."""
    if not CHROMIUM.exists():
        service_unavailable("Chromium", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        service_unavailable("Playwright", f"{exc} (pip install -e '.[dev]')")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
    except Exception as exc:
        playwright.stop()
        service_unavailable("Chromium", f"it does not start: {str(exc).splitlines()[0]}")
    return playwright, browser


@pytest.fixture(scope="module")
def served_app(web_county_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve a copy of the web county on a free loopback port; yield its base URL."""
    from werkzeug.serving import make_server

    from gridwatch.web import create_app

    root = tmp_path_factory.mktemp("browser")
    var_dir = root / "var"
    var_dir.mkdir()
    for part in web_county_db.parent.glob(web_county_db.name + "*"):
        shutil.copy2(part, var_dir / part.name)
    # Plain HTTP on loopback: the session cookie cannot be Secure here.
    settings = make_settings(root, GRIDWATCH_SECURE_COOKIES="false")
    app = create_app({"GRIDWATCH_SETTINGS": settings})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="browser-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        app.extensions["gridwatch"].engine.dispose()


@pytest.fixture(scope="module")
def browser_session(served_app: str) -> Iterator[BrowserSession]:
    """A Chromium context signed in as the county user through the real sign-in form."""
    playwright, browser = _launch_chromium()
    context = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
    context.set_default_timeout(TIMEOUT_MS)
    session = BrowserSession(served_app, context)

    def guard(route: Any) -> None:
        url = route.request.url
        session.requests.append(url)
        if is_loopback(url):
            route.continue_()
        else:  # recorded above, so the test fails; never let it reach the network
            route.abort()

    context.route("**/*", guard)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = session.open("/auth/login")
        page.fill("#username", "county")
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click(".login-card button[type=submit]")
        signed_in = urlsplit(page.url).path == "/"
        if not signed_in:
            page.screenshot(path=str(ARTIFACTS / "sign-in-failed.png"))
        page.close()
        assert signed_in, f"signing in through the form led to {page.url}"
        yield session
    finally:
        context.close()
        browser.close()
        playwright.stop()


def _assert_real_glyphs(target: Any, selector: str) -> None:
    """Assert the element's font stack names the CJK fonts and draws Chinese, not boxes."""
    chars = ["网", "格", "警", "情"]
    found = target.evaluate(GLYPHS_JS, [selector, chars])
    for font in CJK_FONTS:
        assert font in found["font"], f"{font!r} missing from the font stack {found['font']}"
    assert len(set(found["images"])) == len(chars), "Chinese characters are drawn as boxes"


def _map_frame(page: Any, selector: str) -> Any:
    """Return the frame of the map ``<iframe>`` matched by ``selector``, once Leaflet drew."""
    handle = page.wait_for_selector(selector, state="attached")
    frame = handle.content_frame()
    assert frame is not None, f"{selector} holds no document"
    frame.wait_for_selector(".leaflet-container")
    # Layers are added as the document's scripts run: wait until something is painted.
    # (A function, not an expression string: the frame's CSP forbids eval.)
    frame.wait_for_function(
        f"() => {{ const p = ({PAINTED_JS})(); "
        "return p.paths + p.paintedCanvases + p.images > 0; }",
        polling="raf",
    )
    return frame


def test_sign_in_through_the_form_opens_the_overview(browser_session: BrowserSession) -> None:
    browser_session.start_counting()
    page = browser_session.open("/")
    assert urlsplit(page.url).path == "/", f"not signed in: landed on {page.url}"
    assert page.locator("nav.mainnav a").count() >= 3
    heading = page.locator("main h1").inner_text()
    assert "测试县" in heading  # the county user's own area, in Chinese
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    _assert_real_glyphs(page, "body")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    page.close()
    browser_session.assert_clean("/static/css/app.css")


def test_map_draws_its_layers_from_local_assets(browser_session: BrowserSession) -> None:
    browser_session.start_counting()
    page = browser_session.open(f"/map?period={PERIOD}&level=grid")
    frame = _map_frame(page, "iframe.map-frame")
    painted = frame.evaluate(f"({PAINTED_JS})()")
    assert painted["maps"] == 1
    assert painted["paths"] + painted["paintedCanvases"] + painted["images"] > 0, painted
    assert painted["overlays"] >= 2, f"the layer control lists too few layers: {painted}"
    _assert_real_glyphs(frame, "body")
    page.wait_for_timeout(300)  # let the tiles of the canvas renderer settle for the picture
    page.screenshot(path=str(ARTIFACTS / "map.png"))
    page.close()
    browser_session.assert_clean("/map/frame", "/maps/assets/")


def test_command_screen_shows_its_map_and_panels(browser_session: BrowserSession) -> None:
    browser_session.start_counting()
    page = browser_session.open("/screen", width=1920, height=1080)
    frame = _map_frame(page, ".map-stack iframe.map-frame.active")
    painted = frame.evaluate(f"({PAINTED_JS})()")
    assert painted["paths"] + painted["paintedCanvases"] + painted["images"] > 0, painted
    panels = page.locator("[data-panel]")
    assert panels.count() >= 5
    assert "测试县" in page.locator(".wall-head h1").inner_text()
    _assert_real_glyphs(page, "body")
    # The clock is kept by screen.js: it must tick (the page's scripts ran under its CSP).
    first = page.locator("#clock").inner_text()
    page.wait_for_function(
        "(first) => document.getElementById('clock').textContent !== first",
        arg=first,
        polling="raf",
    )
    page.screenshot(path=str(ARTIFACTS / "screen.png"))
    page.close()
    browser_session.assert_clean("/static/js/screen.js", "/map/frame")


#: The bounds [west, south, east, north] of the first GeoJSON layer holding ``count`` shapes.
GEOJSON_BOUNDS_JS = """
(count) => {
  for (const key of Object.keys(window)) {
    const layer = key.startsWith("geo_json_layer_") ? window[key] : null;
    if (layer && layer.getLayers && layer.getLayers().length === count) {
      const b = layer.getBounds();
      return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()];
    }
  }
  return null;
}
"""


def test_map_fetches_unpacks_and_draws_the_choropleth(browser_session: BrowserSession) -> None:
    """The grid polygons come from /map/layers/polygons.json, delta-encoded, when switched on."""
    browser_session.start_counting()
    page = browser_session.open(f"/map?period={PERIOD}&level=grid&layers=choropleth")
    frame = _map_frame(page, "iframe.map-frame")
    handle = frame.wait_for_function(GEOJSON_BOUNDS_JS, arg=4, polling="raf")
    west, south, east, north = handle.json_value()
    # The web county's four 0.01° grids: decoded back to degrees, not left as integers.
    assert (west, south, east, north) == pytest.approx((104.0, 30.0, 104.02, 30.02), abs=1e-4)
    page.close()
    browser_session.assert_clean("/map/frame", "/map/layers/polygons.json")


def test_weekly_heat_slider_loads_its_weeks_when_switched_on(
    browser_session: BrowserSession,
) -> None:
    browser_session.start_counting()
    page = browser_session.open(f"/map?period={PERIOD}&level=grid&layers=heat_weeks")
    handle = page.wait_for_selector("iframe.map-frame", state="attached")
    frame = handle.content_frame()
    assert frame is not None
    frame.wait_for_selector(".gw-slider .gw-slider-label")
    # Opens on the newest of the eight weeks that end the quarter.
    assert frame.locator(".gw-slider-label").inner_text().startswith("2026-W40")
    page.close()
    browser_session.assert_clean("/map/frame", "/map/layers/weeks.json")
