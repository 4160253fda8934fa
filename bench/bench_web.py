"""Web benchmark: weight and draw time of the heat-map page, and API latency under load.

On the synthetic city of ``bench/city.py`` (5,000 grids, 1,000,000 incidents; the cached
database ``bench_aggregate.py`` uses, aggregated once more here and kept as
``var/bench/web-<city>.db``) this prints, in one run:

1. **The heat-map page** for an admin (who sees the whole county, so the heat layer is the
   run's density raster): the map document's size and render time on a cache miss and a hit,
   the page weight in the browser (``/map`` + its map frame + every script, stylesheet and
   image, as Chromium received them) and the draw time in headless Chromium at 1920×1080 —
   from the start of the navigation until Leaflet has painted the layer (two animation
   frames after the first painted pixel), median of ``--repeats`` loads. The same for the map
   with its default layers and with every layer switched on, and the size and time of the
   polygons their choropleth fetches when switched on. The server runs 4 threads: a sync
   worker would wait on Chromium's idle preconnected connection until its 30 s timeout.
   **Baseline**, measured in the same run: Folium's plain ``HeatMap`` of every incident point
   (the naive page; the issue measured 40 MB and 1.8 s), with the same vendored assets.
2. **API latency** at ``--connections`` concurrent connections on loopback (closed loop: each
   sends its next request when the answer is in; gunicorn's sync workers close the connection
   after each answer, so every request pays a connect) against
   ``gunicorn -w --workers`` (the README's production command): p50 / p90 / p99 of
   ``/api/v1/metrics`` (township level, a quarter) and ``/api/v1/geo/metrics`` (the map's
   GeoJSON) with a bearer token and ``Accept-Encoding: gzip`` (as browsers and HTTP libraries
   send it), after every worker has answered them once, and the p50 of one connection alone
   (what a request costs when nobody queues before it). Both are served from the answer
   cache (``gridwatch.web.answers``). Baselines, in the same run: a static file of the same
   server (no authentication, no database; the floor of gunicorn, Flask and this client),
   and ``/api/v1/metrics`` from a server with the answer cache off
   (``GRIDWATCH_API_CACHE_MB=0``).

Targets (issue 4): heat-map page < 1.5 MB and drawn in < 1 s; API p99 < 100 ms for cached
metrics.

Usage::

    .venv/bin/python bench/bench_web.py                       # full city (~2 min the first time)
    .venv/bin/python bench/bench_web.py --grids 500 --incidents 100000 --cameras 1500 \\
        --patrol-hours 5000                                   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from city import add_city_arguments, cached_city  # noqa: E402
from support import Gunicorn, aggregated_city, last_quarter, log, server_env  # noqa: E402

TARGETS = {"page_mb": 1.5, "draw_s": 1.0, "api_p99_ms": 100.0}
CHROMIUM = "/usr/bin/chromium"
#: The C load generator (``apt-get install wrk``); without it the asyncio client below.
WRK = "wrk"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET_KEY = "bench-web-secret-key-0123456789"
USER, PASSWORD = "bench", "bench password 42"

#: True once Leaflet painted something: a vector path, a canvas with a visible pixel, or a
#: loaded image overlay (the density raster).
PAINTED_JS = """
() => {
  const pane = document.querySelector(".leaflet-map-pane .leaflet-overlay-pane");
  if (!pane) return false;
  if (pane.querySelector("path")) return true;
  for (const img of pane.querySelectorAll("img.leaflet-image-layer")) {
    if (img.complete && img.naturalWidth > 0) return true;
  }
  for (const canvas of pane.querySelectorAll("canvas")) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
  }
  return false;
}
"""
#: Milliseconds since this document's navigation started, two animation frames from now.
AFTER_PAINT_JS = """
() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(
  () => resolve(performance.now()))))
"""


# -- 1. the heat-map page -------------------------------------------------------------------------


def naive_heatmap_html(database: Path) -> tuple[str, int]:
    """Return Folium's plain ``HeatMap`` of every incident (the baseline page) and its points."""
    import folium
    import numpy as np
    from folium.plugins import HeatMap

    from gridwatch.maps.builder import map_html
    from gridwatch.storage.models import Incident

    # Plain sqlite3: a million ORM rows would take longer than the page itself.
    with closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(f"SELECT lat, lon FROM {Incident.__tablename__}").fetchall()
    points = np.array(rows, dtype=float)
    centre = points.mean(axis=0).tolist()
    fmap = folium.Map(location=centre, zoom_start=11, tiles=None)
    heat = HeatMap([centre], radius=8)
    # Folium checks every point in Python (about a minute for a million): set them directly.
    heat.data = points.round(5).tolist()
    heat.add_to(fmap)
    return map_html(fmap), len(points)


def _sign_in(context: Any, base_url: str) -> None:
    # Land on a cheap page: the overview is timed on its own.
    page = context.new_page()
    page.goto(base_url + "/auth/login?next=/api/v1/runs%3Flimit%3D1")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    with page.expect_navigation():
        page.click(".login-card button[type=submit]")
    if urlsplit(page.url).path != "/api/v1/runs":
        raise RuntimeError(f"signing in failed: {page.url}")
    page.close()


def _fetch_twice(context: Any, url: str, strict: bool = True) -> tuple[float, float, bytes]:
    """GET ``url`` twice (a cache miss, then a hit); return both times and the body.

    A failed answer raises, or with ``strict=False`` gives an empty body.
    """
    timings = []
    body = b""
    for _ in range(2):
        start = time.perf_counter()
        response = context.request.get(url, timeout=300_000)
        body = response.body() if response.ok else b""
        timings.append(time.perf_counter() - start)
        if not response.ok:
            if strict:
                raise RuntimeError(f"{url}: HTTP {response.status}")
            log(f"  {url}: HTTP {response.status}")
    return timings[0], timings[1], body


def _polygons(context: Any, base_url: str, document: str) -> list[dict[str, Any]]:
    """Fetch the choropleth / patrol polygons a map document loads when switched on."""
    found = re.findall(
        r'GridWatchMap\.lazyGeoJson\(("/map/layers/polygons\.json\?[^"]+")', document
    )
    results = []
    for url in sorted({json.loads(u) for u in found}):
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            response = context.request.get(
                base_url + url, headers={"Accept-Encoding": "gzip"}, timeout=300_000
            )
            body = response.body()
            timings.append(time.perf_counter() - start)
        result = {
            "url": url,
            "gzip_bytes": int(response.headers.get("content-length", 0)),
            "json_bytes": len(body),
            "features": len(json.loads(body)["features"]),
            "miss_s": timings[0],
            "hit_s": timings[1],
        }
        results.append(result)
        log(
            f"    fetched on switch-on: {url.split('?')[0]}?which=…: "
            f"{result['features']:,} polygons, {result['json_bytes'] / 1e6:.2f} MB JSON, "
            f"{result['gzip_bytes'] / 1e6:.2f} MB gzipped "
            f"(built {result['miss_s']:.2f} s, cached {result['hit_s'] * 1000:.0f} ms)"
        )
    return results


def _draw(
    browser: Any, context_state: Any, url: str, frame_selector: str | None
) -> dict[str, Any]:
    """Open ``url`` in a fresh context; return bytes received and the draw time."""
    context = browser.new_context(
        storage_state=context_state, viewport={"width": 1920, "height": 1080}
    )
    try:
        page = context.new_page()
        finished: list[Any] = []
        failed: list[Any] = []
        page.on("requestfinished", lambda request: finished.append(request))
        page.on("requestfailed", lambda request: failed.append(request))
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=120_000)
        if frame_selector is None:
            frame = page.main_frame
        else:
            handle = page.wait_for_selector(frame_selector, timeout=120_000)
            frame = handle.content_frame()
        frame.wait_for_function(PAINTED_JS, timeout=120_000, polling="raf")
        in_frame_ms = frame.evaluate(AFTER_PAINT_JS)
        wall = time.perf_counter() - start
        page.wait_for_load_state("load")
        local = ("http://127.0.0.1", "data:")
        outside = [r.url for r in finished + failed if not r.url.startswith(local)]
        return {
            "bytes": sum(r.sizes()["responseBodySize"] for r in finished),
            "requests": len(finished),
            "outside": outside,
            "draw_s": wall,
            "frame_draw_s": in_frame_ms / 1000,
        }
    finally:
        context.close()


def page_section(server: Gunicorn, database: Path, period: str, repeats: int) -> dict[str, Any]:
    """Measure the heat-map page (and the all-layers map) against the naive Folium heat map."""
    from playwright.sync_api import sync_playwright

    from gridwatch.maps.builder import LAYERS

    variants = {
        "heat map (heat layer)": {"layers": "heat", "period": period},
        "map, default layers": {"period": period},
        "map, every layer on": {"layers": ",".join(LAYERS), "period": period},
    }
    results: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            _sign_in(context, server.base_url)
            state = context.storage_state()
            log("\n1. Heat-map page, 1920×1080, headless Chromium (gunicorn: 1 worker, 4 threads)")
            miss, hit, body = _fetch_twice(context, server.base_url + "/", strict=False)
            results["overview"] = {"miss_s": miss, "hit_s": hit, "document_bytes": len(body)}
            log(
                f"  {'overview page (admin)':<26} document {len(body) / 1e6:6.2f} MB "
                f"(server {miss:.2f} s first, {hit:.2f} s second)"
            )
            for name, query in variants.items():
                frame_url = f"{server.base_url}/map/frame?{urlencode(query)}"
                miss, hit, body = _fetch_twice(context, frame_url)
                draws = [
                    _draw(
                        browser,
                        state,
                        f"{server.base_url}/map?{urlencode(query)}",
                        "iframe.map-frame",
                    )
                    for _ in range(repeats)
                ]
                draw = statistics.median(d["draw_s"] for d in draws)
                outside = sorted({u for d in draws for u in d["outside"]})
                results[name] = {
                    "document_bytes": len(body),
                    "miss_s": miss,
                    "hit_s": hit,
                    "page_bytes": draws[0]["bytes"],
                    "requests": draws[0]["requests"],
                    "draw_s": draw,
                    "frame_draw_s": statistics.median(d["frame_draw_s"] for d in draws),
                    "outside": outside,
                }
                r = results[name]
                r["polygons"] = _polygons(context, server.base_url, body.decode("utf-8"))
                log(
                    f"  {name:<26} document {r['document_bytes'] / 1e6:6.2f} MB "
                    f"(render {r['miss_s']:.2f} s miss, {r['hit_s'] * 1000:.0f} ms hit); "
                    f"page {r['page_bytes'] / 1e6:.2f} MB in {r['requests']} requests; "
                    f"drawn in {r['draw_s']:.2f} s (frame {r['frame_draw_s']:.2f} s), "
                    f"median of {repeats}; outside requests: {len(outside)}"
                )
            start = time.perf_counter()
            naive, points = naive_heatmap_html(database)
            built = time.perf_counter() - start
            naive_url = f"{server.base_url}/__naive_heatmap__.html"
            context.close()

            def serve_naive(route: Any) -> None:
                route.fulfill(status=200, content_type="text/html", body=naive)

            draws = [_draw_naive(browser, naive_url, serve_naive) for _ in range(repeats)]
            results["naive"] = {
                "document_bytes": len(naive.encode()),
                "points": points,
                "build_s": built,
                "draw_s": statistics.median(d["draw_s"] for d in draws),
            }
            r = results["naive"]
            log(
                f"  {'baseline: Folium HeatMap':<26} document {r['document_bytes'] / 1e6:6.2f} MB "
                f"({points:,} points, built in {built:.1f} s); "
                f"drawn in {r['draw_s']:.2f} s, median of {repeats}"
            )
        finally:
            browser.close()
    return results


def _draw_naive(browser: Any, url: str, handler: Any) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    try:
        context.route(url, handler)
        page = context.new_page()
        start = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=120_000)
        page.wait_for_function(PAINTED_JS, timeout=120_000, polling="raf")
        page.evaluate(AFTER_PAINT_JS)
        return {"draw_s": time.perf_counter() - start}
    finally:
        context.close()


# -- 2. API latency -------------------------------------------------------------------------------


async def _connection(
    port: int,
    request: bytes,
    stop_at: float,
    latencies: list[float],
    errors: list[str],
    sizes: list[int],
) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"connection" and value.strip().lower() == b"close":
                    close = True
            await reader.readexactly(length)
            sizes.append(length)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors.append(type(exc).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors.append(f"HTTP {status}")
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _load(port: int, request: bytes, connections: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    stop_at = time.perf_counter() + seconds
    start = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(port, request, stop_at, latencies, errors, sizes)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {
        "requests": len(ordered),
        "rps": len(ordered) / elapsed,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] * 1000,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "body_bytes": statistics.median(sizes) if sizes else 0,
    }


_WRK_PERCENTILE = re.compile(r"^\s+(50|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_MAX = re.compile(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", re.MULTILINE)
_WRK_TOTAL = re.compile(r"(\d+) requests in ([\d.]+)s, ([\d.]+)(B|KB|MB|GB) read")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_UNIT_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def _wrk(
    port: int, path: str, headers: list[str], connections: int, seconds: float
) -> dict[str, Any]:
    """Run ``wrk`` (closed loop, like :func:`_load`) and read its figures."""
    command = [
        WRK,
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        *(arg for header in headers for arg in ("-H", header)),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = {p: float(v) * _UNIT_MS[u] for p, v, u in _WRK_PERCENTILE.findall(out)}
    total = _WRK_TOTAL.search(out)
    peak = _WRK_MAX.search(out)
    if total is None or peak is None or len(found) < 3:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    requests = int(total.group(1))
    non_2xx = _WRK_NON_2XX.search(out)
    socket_errors = _WRK_SOCKET.search(out)
    kinds = []
    if non_2xx:
        kinds.append(f"{non_2xx.group(1)} not 2xx/3xx")
    if socket_errors:
        kinds.append("socket errors " + "/".join(socket_errors.groups()))
    return {
        "requests": requests,
        "rps": requests / float(total.group(2)),
        "p50_ms": found["50"],
        "p90_ms": found["90"],
        "p99_ms": found["99"],
        "max_ms": float(peak.group(1)) * _UNIT_MS[peak.group(2)],
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in socket_errors.groups()) if socket_errors else 0),
        "error_kinds": kinds,
        "body_bytes": float(total.group(3)) * _UNIT_BYTES[total.group(4)] / max(requests, 1),
    }


def api_section(
    server: Gunicorn,
    token: str,
    endpoints: dict[str, tuple[str, bool]],
    connections: int,
    seconds: float,
    workers: int,
    client: str,
) -> dict[str, Any]:
    """Measure each endpoint's latency at ``connections`` concurrent connections.

    ``endpoints`` maps a name to a path and whether it needs the bearer token. Requests
    take gzip, as browsers and HTTP libraries do. ``client`` is ``wrk`` or ``python`` (the
    asyncio client of this file, which takes more of the CPUs the server needs).
    """
    results: dict[str, Any] = {}
    for name, (path, auth) in endpoints.items():
        headers = ["Accept-Encoding: gzip, deflate"]
        if auth:
            headers.append(f"Authorization: Bearer {token}")
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *headers]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        # Every worker answers once before the clock starts (their caches are per process).
        asyncio.run(_load(server.port, request, workers * 2, 1.0))
        # One connection first: the time a request costs when nobody queues before it.
        if client == "wrk":
            single = _wrk(server.port, path, headers, 1, min(seconds, 2.0))
            result = _wrk(server.port, path, headers, connections, seconds)
        else:
            single = asyncio.run(_load(server.port, request, 1, min(seconds, 2.0)))
            result = asyncio.run(_load(server.port, request, connections, seconds))
        result["single_p50_ms"] = single["p50_ms"]
        results[name] = result
        log(
            f"  {name:<44} p50 {result['p50_ms']:7.1f} ms  p90 {result['p90_ms']:7.1f} ms  "
            f"p99 {result['p99_ms']:7.1f} ms  max {result['max_ms']:7.1f} ms  "
            f"{result['rps']:6.0f} req/s  ({result['requests']:,} requests of "
            f"{result['body_bytes'] / 1000:.1f} kB, {result['errors']} errors "
            f"{result['error_kinds'] or ''}); one connection alone: p50 {single['p50_ms']:.1f} ms"
        )
    return results


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_city_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="browser loads per page")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0, help="load per endpoint")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers for the API")
    parser.add_argument("--no-browser", action="store_true", help="skip the page section")
    parser.add_argument("--no-api", action="store_true", help="skip the API section")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator of the API section (auto: wrk when installed)",
    )
    args = parser.parse_args(argv)

    from gridwatch.accounts import create_user, issue_token
    from gridwatch.storage import create_db_engine

    log(
        f"GridWatch web benchmark — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)"
    )
    city = cached_city(args, progress=lambda m: log(f"  {m}"))
    aggregated, _ = aggregated_city(city, "web", SECRET_KEY)
    period = last_quarter(city)
    log(
        f"city: {args.grids:,} grids, {args.incidents:,} incidents, {args.cameras:,} cameras "
        f"({aggregated.name}); figures of {period}"
    )

    with tempfile.TemporaryDirectory(prefix="gw-bench-web-") as scratch:
        tmp = Path(scratch)
        database = tmp / "web.db"
        shutil.copyfile(aggregated, database)
        engine = create_db_engine(f"sqlite:///{database}")
        try:
            create_user(engine, USER, "admin", PASSWORD)
            token = issue_token(engine, USER, "bench")
        finally:
            engine.dispose()
        env = server_env(database, tmp / "var", SECRET_KEY)
        pages: dict[str, Any] = {}
        api: dict[str, Any] = {}
        if not args.no_browser:
            server = Gunicorn(env, workers=1, log_file=tmp / "gunicorn-pages.log", threads=4)
            try:
                pages = page_section(server, database, period, args.repeats)
            except Exception:
                server.stop()
                log(server.tail())
                raise
            server.stop()
        if not args.no_api:
            metrics = f"/api/v1/metrics?level=township&period={period}"
            client = args.client
            if client == "auto":
                client = "wrk" if shutil.which(WRK) else "python"
            log(
                f"\n2. API latency, {args.connections} concurrent connections (closed loop, "
                f"client: {client}), gunicorn -w {args.workers}, {args.seconds:.0f} s each"
            )
            for cache_mb, endpoints in (
                (
                    "64",
                    {
                        "baseline: static file": ("/static/img/favicon.svg", False),
                        "/api/v1/metrics (township)": (metrics, True),
                        "/api/v1/geo/metrics (township)": (
                            f"/api/v1/geo/metrics?level=township&period={period}",
                            True,
                        ),
                    },
                ),
                ("0", {"baseline: /api/v1/metrics, answer cache off": (metrics, True)}),
            ):
                server = Gunicorn(
                    {**env, "GRIDWATCH_API_CACHE_MB": cache_mb},
                    workers=args.workers,
                    log_file=tmp / "gunicorn-api.log",
                )
                try:
                    api |= api_section(
                        server,
                        token,
                        endpoints,
                        args.connections,
                        args.seconds,
                        args.workers,
                        client,
                    )
                except Exception:
                    server.stop()
                    log(server.tail())
                    raise
                server.stop()

    log(f"\nSummary against the targets (load average now {os.getloadavg()[0]:.1f})")
    checks: list[tuple[str, float, float]] = []
    if pages:
        heat = pages["heat map (heat layer)"]
        checks += [
            ("heat-map page weight, MB", heat["page_bytes"] / 1e6, TARGETS["page_mb"]),
            ("heat-map page drawn, s", heat["draw_s"], TARGETS["draw_s"]),
        ]
        if heat["outside"]:
            log(f"  requests left 127.0.0.1: {heat['outside']}")
    if api:
        for name, result in api.items():
            if name.startswith("/api/v1/"):
                checks.append((f"{name} p99, ms", result["p99_ms"], TARGETS["api_p99_ms"]))
    for label, value, target in checks:
        verdict = "ok" if value <= target else "MISSED"
        log(f"  {label:<44} {value:9.2f}   target ≤ {target:g}   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
