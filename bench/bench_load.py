"""Load benchmark: a steady request rate on the API and the map pages against gunicorn.

On the synthetic city of ``bench/city.py`` (by default the 500-grid, 100,000-incident city;
aggregated once and kept as ``var/bench/load-<city>.db``) this starts the README's production
command, ``gunicorn -w N 'gridwatch.web:create_app()'``, on loopback and sends ``--rate``
requests per second for ``--duration`` seconds. The client is *open loop*: request ``i`` is
due at ``start + i / rate`` whether or not earlier answers are in, and its latency is counted
from that moment, so a server that falls behind shows it in the percentiles instead of
quietly slowing the client down (no coordinated omission). Each request opens its own
connection (gunicorn's sync workers close it after the answer).

The mix, with a bearer token of an admin (who sees the whole county), after every gunicorn
worker has answered each kind once (their caches are per process):

- ``/api/v1/metrics`` (township level, the last complete quarter: cached metrics) 40 %
- ``/api/v1/geo/metrics`` (the map's township GeoJSON) 20 %
- ``/api/v1/geo/hotspots`` (Gi* hot spots of the quarter) 10 %
- ``/map`` (the map page) 15 % and ``/map/frame`` (its map document, the rendered map) 15 %

It prints, per kind and overall, p50 / p90 / p99 / max latency, errors (connection errors and
any status other than 200) and the achieved rate. Target (issue 7): no errors and p99 under
200 ms at 200 requests/s for 60 s.

Usage::

    .venv/bin/python bench/bench_load.py --duration 10          # a quick look
    .venv/bin/python bench/bench_load.py                        # 200 req/s for 60 s
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from city import add_city_arguments, cached_city  # noqa: E402
from support import Gunicorn, aggregated_city, last_quarter, log, server_env  # noqa: E402

SECRET_KEY = "bench-load-secret-key-0123456789"
PASSWORD = "bench password 12345"
#: (kind, share of requests); the paths are filled in with the quarter.
MIX = [("metrics", 8), ("geo_metrics", 4), ("hotspots", 2), ("map", 3), ("map_frame", 3)]


def _bench_user(engine: Any) -> dict[str, Any]:
    """Create the benchmark's admin and return its API token (kept in the marker)."""
    from gridwatch.accounts import create_user, issue_token

    create_user(engine, "bench", "admin", PASSWORD, None)
    return {"token": issue_token(engine, "bench", label="bench_load")}


async def _one(port: int, request: bytes) -> tuple[int, int]:
    """Send one request on a fresh connection; return (status, body bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        data = await reader.read()  # "Connection: close": the answer ends at EOF
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), len(body)


async def _run(
    port: int, requests: list[tuple[str, bytes]], rate: float, seconds: float
) -> dict[str, Any]:
    """Send ``rate`` requests per second, cycling through ``requests``, open loop."""
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, list[str]] = defaultdict(list)
    total = int(rate * seconds)
    start = time.perf_counter()

    async def fire(i: int) -> None:
        kind, request = requests[i % len(requests)]
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            status, _ = await asyncio.wait_for(_one(port, request), timeout=30)
        except (TimeoutError, OSError, ValueError, IndexError) as exc:
            errors[kind].append(type(exc).__name__)
            return
        latencies[kind].append(time.perf_counter() - due)
        if status != 200:
            errors[kind].append(f"HTTP {status}")

    await asyncio.gather(*(fire(i) for i in range(total)))
    elapsed = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed, "total": total}


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan")}

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": ordered[-1] * 1e3}


def sign_in(port: int) -> str:
    """Sign in through the form (as a browser does); return the ``Cookie`` header value."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    with opener.open(f"{base}/auth/login", timeout=30) as response:
        page = response.read().decode()
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    if match is None:
        raise RuntimeError("no CSRF token on the sign-in page")
    form = {"username": "bench", "password": PASSWORD, "csrf_token": match.group(1)}
    data = urllib.parse.urlencode(form).encode()
    with opener.open(f"{base}/auth/login", data=data, timeout=30) as response:
        response.read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def build_requests(port: int, token: str, cookie: str, period: str) -> list[tuple[str, bytes]]:
    """Return the request mix as raw HTTP/1.1 requests, interleaved by share.

    The API is called with the bearer token, the pages with the signed-in session's cookie.
    """
    paths = {
        "metrics": f"/api/v1/metrics?level=township&period={period}",
        "geo_metrics": f"/api/v1/geo/metrics?level=township&period={period}",
        "hotspots": f"/api/v1/geo/hotspots?period={period}",
        "map": f"/map?period={period}",
        "map_frame": f"/map/frame?period={period}",
    }
    out: list[tuple[str, bytes]] = []
    weights = dict(MIX)
    for step in range(max(weights.values())):
        for kind, share in MIX:
            if step < share:
                auth = (
                    f"Cookie: {cookie}"
                    if kind.startswith("map")
                    else f"Authorization: Bearer {token}"
                )
                lines = [
                    f"GET {paths[kind]} HTTP/1.1",
                    f"Host: 127.0.0.1:{port}",
                    auth,
                    "Connection: close",
                ]
                out.append((kind, ("\r\n".join(lines) + "\r\n\r\n").encode()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn -w")
    add_city_arguments(parser, grids=500, incidents=100_000, cameras=1_500, patrol_hours=5_000)
    args = parser.parse_args(argv)

    city = cached_city(args, progress=lambda m: log(f"  {m}"))
    log(f"GridWatch load benchmark ({os.cpu_count()} CPUs), city {city.name}")
    database, marker = aggregated_city(city, "load", SECRET_KEY, after=_bench_user)
    token = marker["token"]
    period = last_quarter(city)
    with tempfile.TemporaryDirectory(prefix="gw-bench-load-") as scratch:
        # gunicorn works on a copy: the SQLite file stays unchanged for the next run
        served = Path(scratch) / "served.db"
        shutil.copyfile(database, served)
        server = Gunicorn(
            server_env(served, Path(scratch), SECRET_KEY),
            args.web_workers,
            Path(scratch) / "gunicorn.log",
        )
        try:
            requests = build_requests(server.port, token, sign_in(server.port), period)
            # every worker answers every kind once before the clock starts
            warm = asyncio.run(_run(server.port, requests, 20.0, 4 * args.web_workers))
            failed = {k: v for k, v in warm["errors"].items() if v}
            if failed:
                log(f"  warm-up errors: {failed}; server log: {server.log_file}")
                log(server.tail(60))
                return 1
            log(
                f"  {args.rate:.0f} requests/s for {args.duration:.0f} s, open loop, "
                f"gunicorn -w {args.web_workers}, period {period}"
            )
            load_start = os.getloadavg()[0]
            result = asyncio.run(_run(server.port, requests, args.rate, args.duration))
        finally:
            server.stop()
    everything: list[float] = []
    errors_total = 0
    for kind, _ in MIX:
        values = result["latencies"].get(kind, [])
        everything += values
        errs = result["errors"].get(kind, [])
        errors_total += len(errs)
        p = _percentiles(values)
        log(
            f"  {kind:<12} n {len(values):>6,}  p50 {p['p50_ms']:7.1f} ms  "
            f"p90 {p['p90_ms']:7.1f} ms  p99 {p['p99_ms']:7.1f} ms  "
            f"max {p.get('max_ms', float('nan')):7.1f} ms  errors {len(errs)}"
            + (f" {sorted(set(errs))}" if errs else "")
        )
    overall = _percentiles(everything)
    achieved = len(everything) / result["elapsed"]
    log(
        f"  {'all':<12} n {len(everything):>6,}  p50 {overall['p50_ms']:7.1f} ms  "
        f"p90 {overall['p90_ms']:7.1f} ms  p99 {overall['p99_ms']:7.1f} ms  "
        f"max {overall.get('max_ms', float('nan')):7.1f} ms  errors {errors_total}"
    )
    log(f"  achieved {achieved:.1f} requests/s answered (asked {args.rate:.0f})")
    log(f"  load average at the start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}")
    met = errors_total == 0 and overall["p99_ms"] < 200
    log(f"  target (no errors, p99 < 200 ms): {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
