"""The command-centre screen: figures, token access, jurisdiction, staleness, refresh data."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update
from web_support import COUNTY, GRIDS_A, HOSTILE_NAME, TOWNSHIP_A, login

from gridwatch.accounts import issue_token, revoke_tokens
from gridwatch.areas import jurisdiction_of, load_tree
from gridwatch.screen import categories_today, group_trend, staleness, township_ranking
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import DirtyGrid
from gridwatch.workers.engine import mark_dirty


def _engine(app):
    return app.extensions["gridwatch"].engine


def _settings(app):
    return app.extensions["gridwatch"].settings


def test_screen_needs_a_user(client):
    response = client.get("/screen")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    data = client.get("/screen/data")
    assert data.status_code == 401 and data.get_json()["error"]["status"] == 401


def test_county_screen_shows_every_panel(client):
    login(client, "county")
    response = client.get("/screen")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    for panel in ("status", "categories", "trend", "ranking", "cameras", "teams", "forecast"):
        assert f'data-panel="{panel}"' in html
    assert "东城镇" in html and "西山乡" in html
    assert '<svg class="trend"' in html
    # No inline code: the page's only script is the static file.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/js/screen.js" defer>']
    assert "style=" not in html
    # The map rotates through frames of the map document.
    assert html.count("/map/frame?") >= 1 and "data-frames=" in html


def test_township_screen_is_scoped(client):
    login(client, "town_a")
    html = client.get("/screen").get_data(as_text=True)
    assert "东城镇" in html and "西山乡" not in html
    data = client.get("/screen/data").get_json()
    assert [row["code"] for row in data["ranking"]["rows"]] == [TOWNSHIP_A]
    assert all(row["code"].startswith("510000001") for row in data["forecast"])
    assert "西山乡" not in "".join(data["panels"].values())


def test_data_endpoint_returns_panels_for_the_refresh(client):
    login(client, "county")
    response = client.get("/screen/data")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()
    assert set(data["panels"]) == {
        "status",
        "categories",
        "trend",
        "ranking",
        "cameras",
        "teams",
        "forecast",
    }
    assert len(data["trend"]) == 12
    assert data["refresh"]["run_id"] is not None


def test_viewer_token_opens_the_screen_and_nothing_else(app, client):
    token = issue_token(_engine(app), "screen")
    page = client.get(f"/screen?token={token}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # The refresh and the map frames carry the token, since no session was started.
    assert f"/screen/data?token={token}" in html
    assert f"token={token}" in re.search(r"data-frames='([^']*)'", html).group(1)
    with client.session_transaction() as session:
        assert "user_id" not in session
    assert client.get(f"/screen/data?token={token}").status_code == 200
    frame = re.search(r'<iframe class="map-frame active" src="([^"]+)"', html).group(1)
    assert client.get(frame.replace("&amp;", "&")).status_code == 200
    # The token in the query string opens nothing else.
    for path in ("/", f"/areas/{COUNTY}", "/map", "/api/v1/areas", "/admin/users"):
        response = client.get(f"{path}?token={token}")
        assert response.status_code in (302, 401), path
    # Revoked: the screen is closed again.
    revoke_tokens(_engine(app), "screen")
    assert client.get(f"/screen/data?token={token}").status_code == 401


def test_other_roles_tokens_do_not_open_the_screen(app, client):
    token = issue_token(_engine(app), "county")
    assert client.get(f"/screen?token={token}").status_code == 302
    assert client.get(f"/screen/data?token={token}").status_code == 401
    assert client.get("/screen/data?token=gw_not-a-token").status_code == 401


def test_hostile_names_are_escaped(client):
    login(client, "county")
    data = client.get("/screen/data").get_json()
    html = "".join(data["panels"].values()) + client.get("/screen").get_data(as_text=True)
    assert HOSTILE_NAME not in html


def test_categories_today_against_last_week(app):
    engine = _engine(app)
    tree = load_tree(engine)
    county = [tree.by_code[COUNTY]]
    # A2 (theft) on 2026-08-04; nothing on 2026-07-28.
    rows = categories_today(engine, county, date(2026, 8, 4))
    assert rows == [{"category": "theft", "today": 1, "last_week": 0}]
    # A week later the theft is last week's.
    rows = categories_today(engine, county, date(2026, 8, 11))
    assert rows == [{"category": "theft", "today": 0, "last_week": 1}]


def test_trend_counts_two_robberies_one_theft_per_week(app):
    engine = _engine(app)
    tree = load_tree(engine)
    trend = group_trend(engine, [tree.by_code[COUNTY]], date(2026, 9, 30))
    assert len(trend) == 12 and trend[-1]["period"] == "2026-W40"
    assert [t["period"] for t in trend] == sorted(t["period"] for t in trend)
    # W29–W40 holds A2 (theft, 08-04, W32) and A3 (burglary, a theft, 09-05, W36); A1 and
    # B1 (early July) are older, B2 (fraud) is not in the group.
    by_week = {t["period"]: t["count"] for t in trend}
    assert by_week["2026-W32"] == 1 and by_week["2026-W36"] == 1
    assert sum(by_week.values()) == 2
    township = group_trend(engine, [tree.by_code["510000002000"]], date(2026, 9, 30))
    assert sum(t["count"] for t in township) == 0


def test_ranking_is_scoped_and_carries_statuses(app):
    engine = _engine(app)
    tree = load_tree(engine)
    town_a = jurisdiction_of(engine, "township", tree.by_code[TOWNSHIP_A].id, None, tree)
    rows = township_ranking(engine, tree, town_a, "2026Q3", {TOWNSHIP_A: "summons"})
    assert [(r["code"], r["incidents_total"], r["status"]) for r in rows] == [
        (TOWNSHIP_A, 3, "summons")
    ]
    county = jurisdiction_of(engine, "county", tree.by_code[COUNTY].id, None, tree)
    rows = township_ranking(engine, tree, county, "2026Q3")
    assert [(r["rank"], r["incidents_total"]) for r in rows] == [(1, 3), (2, 2)]


def test_staleness(app):
    engine = _engine(app)
    settings = _settings(app)
    finished = datetime.fromisoformat(
        staleness(engine, settings, datetime.now(UTC))["finished_at"].replace("Z", "+00:00")
    )
    assert not staleness(engine, settings, finished + timedelta(hours=1))["stale"]
    late = staleness(engine, settings, finished + timedelta(hours=25))
    assert late["stale"] and late["reason"] == "nightly_missed"
    tree = load_tree(engine)
    mark_dirty(engine, {tree.by_code[GRIDS_A[0]].id})
    now = datetime.now(UTC)
    assert not staleness(engine, settings, now)["stale"]
    waiting = staleness(engine, settings, now + timedelta(minutes=settings.stale_minutes + 1))
    assert waiting["stale"] and waiting["reason"] == "imports_waiting"


def test_stale_warning_is_shown(app, client):
    engine = _engine(app)
    mark_dirty(engine, {load_tree(engine).by_code[GRIDS_A[0]].id})
    login(client, "county")
    html = client.get("/screen").get_data(as_text=True)
    assert 'class="fresh"' in html and 'role="alert"' not in html  # not yet overdue
    overdue = datetime.now(UTC) - timedelta(minutes=_settings(app).stale_minutes + 1)
    with session_scope(engine) as session:
        session.execute(update(DirtyGrid).values(marked_at=overdue))
    html = client.get("/screen").get_data(as_text=True)
    assert 'class="stale" role="alert"' in html and "数据已过期" in html
    assert client.get("/screen/data").get_json()["refresh"]["reason"] == "imports_waiting"
