"""A small two-township county with users of every role, for the web tests.

County 510000000000 (测试县) → townships 东城镇 (A) and 西山乡 (B) → one village each → two
0.01° grids each. Police station PS01 covers township A only. Incidents fall in 2026Q3 in both
townships, so each user's figures tell whose data they were given.
"""

from __future__ import annotations

import re
from pathlib import Path

import geopandas as gpd
from shapely.geometry import box

from gridwatch.accounts import create_user
from gridwatch.config import Settings
from gridwatch.storage import create_db_engine, upgrade_database

COUNTY = "510000000000"
TOWNSHIP_A = "510000001000"
TOWNSHIP_B = "510000002000"
VILLAGE_A = "510000001001"
VILLAGE_B = "510000002001"
GRIDS_A = ("510000001001001", "510000001001002")
GRIDS_B = ("510000002001001", "510000002001002")
STATION = "PS01"
HOSTILE_NAME = '东一村<script>alert("x")</script>'
PASSWORD = "correct horse 42"

#: user name → (role, area or station code)
USERS = {
    "admin": ("admin", None),
    "county": ("county", COUNTY),
    "station": ("station", STATION),
    "town_a": ("township", TOWNSHIP_A),
    "town_b": ("township", TOWNSHIP_B),
    "screen": ("viewer", COUNTY),
}

#: Incidents of 2026Q3 per township: A has 3 (two of them thefts), B has 2.
INCIDENTS_A = 3
INCIDENTS_B = 2

X0, Y0, D = 104.0, 30.0, 0.01


def _frame() -> gpd.GeoDataFrame:
    a = box(X0, Y0, X0 + 2 * D, Y0 + D)
    b = box(X0, Y0 + D, X0 + 2 * D, Y0 + 2 * D)
    rows = [
        (COUNTY, "测试县", "county", None, 4000, box(X0, Y0, X0 + 2 * D, Y0 + 2 * D)),
        (TOWNSHIP_A, "东城镇", "township", COUNTY, 2000, a),
        (TOWNSHIP_B, "西山乡", "township", COUNTY, 2000, b),
        (VILLAGE_A, HOSTILE_NAME, "village", TOWNSHIP_A, 2000, a),
        (VILLAGE_B, "西一村", "village", TOWNSHIP_B, 2000, b),
    ]
    for n, code in enumerate(GRIDS_A):
        cell = box(X0 + n * D, Y0, X0 + (n + 1) * D, Y0 + D)
        rows.append((code, f"东一村第{n + 1}网格", "grid", VILLAGE_A, 1000, cell))
    for n, code in enumerate(GRIDS_B):
        cell = box(X0 + n * D, Y0 + D, X0 + (n + 1) * D, Y0 + 2 * D)
        rows.append((code, f"西一村第{n + 1}网格", "grid", VILLAGE_B, 1000, cell))
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "parent_code": [r[3] for r in rows],
            "population": [r[4] for r in rows],
        },
        geometry=[r[5] for r in rows],
        crs="EPSG:4326",
    )


def build_web_county(directory: Path, settings: Settings) -> None:
    """Import the county, its station and incidents, aggregate, and create the users."""
    from gridwatch.ingest import import_file
    from gridwatch.workers.engine import RunRequest, run_eager

    engine = create_db_engine(settings.database_url)
    try:
        upgrade_database(engine)
        grids = directory / "areas.geojson"
        _frame().to_file(grids, driver="GeoJSON")
        import_file("grids", grids, settings, engine)
        stations = directory / "stations.csv"
        stations.write_text(
            f"code,name,lon,lat,township_codes\n{STATION},东城派出所,104.005,30.005,{TOWNSHIP_A}\n",
            "utf-8",
        )
        import_file("stations", stations, settings, engine)
        incidents = directory / "incidents.csv"
        incidents.write_text(
            "id,occurred_at,category,lon,lat,source,status\n"
            "A1,2026-07-03 09:00,theft,104.005,30.005,call_110,solved\n"
            "A2,2026-08-04 22:00,theft,104.015,30.005,call_110,accepted\n"
            "A3,2026-09-05 10:00,burglary,104.005,30.005,walk_in,reported\n"
            "B1,2026-07-06 11:00,robbery,104.005,30.015,call_110,solved\n"
            "B2,2026-08-07 12:00,fraud,104.015,30.015,call_110,reported\n",
            "utf-8",
        )
        import_file("incidents", incidents, settings, engine)
        run_eager(engine, settings, RunRequest(trigger="test", full=True))
        for name, (role, code) in USERS.items():
            create_user(engine, name, role, PASSWORD, code)
    finally:
        engine.dispose()


_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(html: str) -> str:
    """Return the first CSRF token in a page."""
    match = _CSRF.search(html)
    assert match, "no csrf_token in the page"
    return match.group(1)


def login(client, username: str, password: str = PASSWORD, **extra):
    """Sign in through the real form (GET for the token, then POST); return the response."""
    page = client.get("/auth/login")
    data = {
        "username": username,
        "password": password,
        "csrf_token": csrf_token(page.get_data(as_text=True)),
    }
    data.update(extra)
    return client.post("/auth/login", data=data)
