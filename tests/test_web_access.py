"""Roles and jurisdiction: every user sees their own areas and nothing of the others."""

from __future__ import annotations

import pytest
from web_support import (
    COUNTY,
    GRIDS_A,
    GRIDS_B,
    INCIDENTS_A,
    INCIDENTS_B,
    TOWNSHIP_A,
    TOWNSHIP_B,
    USERS,
    VILLAGE_A,
    VILLAGE_B,
    login,
)

from gridwatch.areas import jurisdiction_of, load_tree
from gridwatch.storage import session_scope
from gridwatch.storage.models import User

ALL_CODES = {COUNTY, TOWNSHIP_A, TOWNSHIP_B, VILLAGE_A, VILLAGE_B, *GRIDS_A, *GRIDS_B}
A_CODES = {TOWNSHIP_A, VILLAGE_A, *GRIDS_A}
B_CODES = {TOWNSHIP_B, VILLAGE_B, *GRIDS_B}

#: What each test user may see.
EXPECTED = {
    "admin": ALL_CODES,
    "county": ALL_CODES,
    "screen": ALL_CODES,
    "station": A_CODES,
    "town_a": A_CODES,
    "town_b": B_CODES,
}


def visible_codes(app, username: str) -> set[str]:
    engine = app.extensions["gridwatch"].engine
    from sqlalchemy import select

    with session_scope(engine) as session:
        user = session.scalar(select(User).where(User.username == username))
        role, area_id, station_id = user.role, user.area_id, user.station_id
    tree = load_tree(engine)
    scope = jurisdiction_of(engine, role, area_id, station_id, tree)
    return {tree.nodes[i].code for i in scope.area_ids}


@pytest.mark.parametrize("username", sorted(USERS))
def test_jurisdiction_helper(app, username):
    assert visible_codes(app, username) == EXPECTED[username]


def test_station_jurisdiction_comes_from_its_townships(app):
    engine = app.extensions["gridwatch"].engine
    tree = load_tree(engine)
    from sqlalchemy import select

    from gridwatch.storage.models import Station

    with session_scope(engine) as session:
        station_id = session.scalar(select(Station.id))
    scope = jurisdiction_of(engine, "station", None, station_id, tree)
    assert [tree.nodes[i].code for i in scope.root_ids] == [TOWNSHIP_A]
    # A station user whose station is gone sees nothing (never everything).
    assert jurisdiction_of(engine, "station", None, None, tree).area_ids == frozenset()
    assert jurisdiction_of(engine, "township", None, None, tree).area_ids == frozenset()


@pytest.mark.parametrize("username", sorted(USERS))
def test_area_pages_answer_404_outside_the_jurisdiction(client, username):
    login(client, username)
    for code in sorted(ALL_CODES):
        response = client.get(f"/areas/{code}")
        if code in EXPECTED[username]:
            assert response.status_code == 200, code
        else:
            assert response.status_code == 404, code
            assert "西山乡" not in response.get_data(as_text=True) or username != "town_a"
    assert client.get("/areas/no-such-code").status_code == 404


@pytest.mark.parametrize("username", sorted(USERS))
def test_api_areas_are_scoped(client, username):
    login(client, username)
    listed = {a["code"] for a in client.get("/api/v1/areas").get_json()}
    assert listed == EXPECTED[username]
    for code in sorted(ALL_CODES):
        response = client.get(f"/api/v1/areas/{code}")
        assert response.status_code == (200 if code in EXPECTED[username] else 404), code
        if response.status_code == 404:
            assert response.get_json() == {"error": {"status": 404, "message": "not found"}}


@pytest.mark.parametrize("username", sorted(USERS))
def test_api_metrics_are_scoped(client, username):
    login(client, username)
    rows = client.get("/api/v1/metrics?level=township&period=2026Q3").get_json()
    codes = {r["area_code"] for r in rows}
    assert codes == EXPECTED[username] & {TOWNSHIP_A, TOWNSHIP_B}
    totals = {r["area_code"]: r["incidents_total"] for r in rows}
    assert totals.get(TOWNSHIP_A, INCIDENTS_A) == INCIDENTS_A
    assert totals.get(TOWNSHIP_B, INCIDENTS_B) == INCIDENTS_B
    grids = client.get("/api/v1/metrics?level=grid&period=2026Q3").get_json()
    assert {r["area_code"] for r in grids} == EXPECTED[username] & {*GRIDS_A, *GRIDS_B}
    for code in (TOWNSHIP_B, GRIDS_B[0], COUNTY):
        response = client.get(f"/api/v1/metrics?level=grid&period=2026Q3&area={code}")
        assert response.status_code == (200 if code in EXPECTED[username] else 404)


def test_township_user_cannot_read_the_county_total(client):
    login(client, "town_a")
    rows = client.get("/api/v1/metrics?level=county&period=2026Q3").get_json()
    assert rows == []
    assert client.get(f"/api/v1/areas/{COUNTY}").status_code == 404
    assert client.get(f"/areas/{COUNTY}").status_code == 404


def overview_as(app, username: str) -> str:
    client = app.test_client()
    login(client, username)
    return client.get("/").get_data(as_text=True)


def test_overview_shows_only_the_users_townships(app):
    page = overview_as(app, "town_a")
    assert "东城镇" in page and "西山乡" not in page
    assert f"/areas/{VILLAGE_A}" in page and f"/areas/{VILLAGE_B}" not in page
    page = overview_as(app, "station")
    assert "东城派出所" in page
    assert "东城镇" in page and "西山乡" not in page
    page = overview_as(app, "county")
    assert "东城镇" in page and "西山乡" in page


@pytest.mark.parametrize("username", ["county", "station", "town_a", "screen"])
def test_only_admins_manage_users(client, username):
    login(client, username)
    assert client.get("/admin/users").status_code == 403
    assert client.get("/admin/audit").status_code == 403


def test_admin_creates_and_disables_users(client, app):
    from web_support import csrf_token

    login(client, "admin")
    page = client.get("/admin/users")
    assert page.status_code == 200
    token = csrf_token(page.get_data(as_text=True))
    created = client.post(
        "/admin/users",
        data={
            "username": "town_b2",
            "role": "township",
            "area_code": TOWNSHIP_B,
            "password": "a long password",
            "csrf_token": token,
        },
    )
    assert created.status_code == 302
    missing_csrf = client.post(
        "/admin/users",
        data={"username": "x", "role": "admin", "password": "a long password"},
    )
    assert missing_csrf.status_code == 400
    bad_area = client.post(
        "/admin/users",
        data={
            "username": "town_x",
            "role": "township",
            "area_code": "999",
            "password": "a long password",
            "csrf_token": token,
        },
    )
    assert bad_area.status_code == 400
    disabled = client.post(
        "/admin/users/town_b2/active", data={"active": "0", "csrf_token": token}
    )
    assert disabled.status_code == 302
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "town_b2" in audit
    assert "创建用户" in audit and "修改用户" in audit
    users = {u.username: u.active for u in _users(app)}
    assert users["town_b2"] is False and "town_x" not in users


def _users(app):
    from sqlalchemy import select

    with session_scope(app.extensions["gridwatch"].engine) as session:
        return session.scalars(select(User)).all()


def test_hostile_user_names_are_escaped(client, app):
    from gridwatch.accounts import create_user

    create_user(
        app.extensions["gridwatch"].engine, "<b>evil</b>", "viewer", "long password", COUNTY
    )
    login(client, "admin")
    for path in ("/admin/users", "/admin/audit"):
        html = client.get(path).get_data(as_text=True)
        assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html


# -- the per-process tree cache ---------------------------------------------------------------


def _import_grids(app, tmp_path, name: str, rows) -> None:
    import geopandas as gpd
    from shapely.geometry import box

    from gridwatch.ingest import import_file

    frame = gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": ["grid"] * len(rows),
            "parent_code": [r[2] for r in rows],
            "population": [100] * len(rows),
        },
        geometry=[box(*r[3]) for r in rows],
        crs="EPSG:4326",
    )
    path = tmp_path / name
    frame.to_file(path, driver="GeoJSON")
    state = app.extensions["gridwatch"]
    summary = import_file("grids", path, state.settings, state.engine)
    assert summary.rejected == 0


def test_tree_is_cached_per_process_and_reloaded_after_a_grids_import(app, client, tmp_path):
    from gridwatch.web.access import TREE_CACHE_KEY

    login(client, "town_a")
    new_code = VILLAGE_A + "009"
    assert client.get(f"/api/v1/areas/{new_code}").status_code == 404
    cache = app.extensions[TREE_CACHE_KEY]
    loads = cache.loads
    for _ in range(3):
        assert client.get(f"/api/v1/areas/{GRIDS_A[0]}").status_code == 200
    assert cache.loads == loads  # no import: no reload

    # A new grid in township A: seen at once, by the next request.
    cell = (104.0, 29.99, 104.01, 30.0)
    _import_grids(app, tmp_path, "new.geojson", [(new_code, "新网格", VILLAGE_A, cell)])
    assert client.get(f"/api/v1/areas/{new_code}").status_code == 200
    assert cache.loads == loads + 1

    # A new grid in township B: in the tree at once, outside town_a's jurisdiction.
    other = VILLAGE_B + "009"
    cell_b = (104.0, 30.02, 104.01, 30.03)
    _import_grids(app, tmp_path, "other.geojson", [(other, "西新网格", VILLAGE_B, cell_b)])
    codes = {a["code"] for a in client.get("/api/v1/areas?level=grid").get_json()}
    assert codes == {*GRIDS_A, new_code}
    assert client.get(f"/api/v1/areas/{other}").status_code == 404
    assert cache.loads == loads + 2


def test_tree_signature_changes_with_every_grids_import(app, tmp_path):
    from gridwatch.areas import tree_signature

    engine = app.extensions["gridwatch"].engine
    before = tree_signature(engine)
    assert tree_signature(engine) == before
    cell = (104.02, 30.0, 104.03, 30.01)
    _import_grids(app, tmp_path, "a.geojson", [(VILLAGE_A + "008", "甲", VILLAGE_A, cell)])
    after = tree_signature(engine)
    assert after != before
    # The same file again adds nothing, yet its finished batch changes the signature.
    _import_grids(app, tmp_path, "a.geojson", [(VILLAGE_A + "008", "甲", VILLAGE_A, cell)])
    assert tree_signature(engine) != after
