"""Patrol routes in the web app and the API, and the route map builder.

On the two-township county of tests/web_support.py, whose station PS01 covers township A: two
teams are imported for PS01, a station user plans a shift through the form, and each role
sees the plan only when PS01 plans for its jurisdiction.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

import gpxpy
import pytest
from markupsafe import escape
from web_support import STATION, TOWNSHIP_A, csrf_token, login

from gridwatch.maps.offline import asset_links
from gridwatch.maps.routes import TEAM_COLOURS, hour_spans, route_features, route_map_html
from gridwatch.routing.plans import load_plan

DAY = "2026-09-10"
HOSTILE_TEAM = "T<b>2</b>"


@pytest.fixture
def teams(app, web_settings, tmp_path):
    """Two teams of PS01 (a police car and a township e-bike team), imported for real."""
    from gridwatch.ingest import import_file

    path = tmp_path / "teams.csv"
    path.write_text(
        "code,name,kind,station_code,home_area_code,members\n"
        f"T1,东城一组,police,{STATION},,4\n"
        f'"{HOSTILE_TEAM}",东城巡防队,township,{STATION},{TOWNSHIP_A},6\n',
        "utf-8",
    )
    summary = import_file("teams", path, web_settings, app.extensions["gridwatch"].engine)
    assert summary.imported == 2, summary
    return ["T1", HOSTILE_TEAM]


def plan_through_form(client, shift: str = "20:00-02:00", **extra: str):
    page = client.get("/routes/")
    assert page.status_code == 200
    return client.post(
        "/routes/",
        data={
            "station": STATION,
            "day": DAY,
            "shift": shift,
            "csrf_token": csrf_token(page.get_data(as_text=True)),
            **extra,
        },
    )


def planned(client, **extra: str) -> int:
    response = plan_through_form(client, **extra)
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.search(r"/routes/(\d+)$", response.headers["Location"])
    assert match
    return int(match.group(1))


def test_station_user_plans_and_views_a_shift(client, teams, app):
    login(client, "station")
    # the form is CSRF-protected
    refused = client.post("/routes/", data={"station": STATION, "day": DAY, "shift": "8-9"})
    assert refused.status_code == 400
    plan_id = planned(client)
    payload = load_plan(app.extensions["gridwatch"].engine, plan_id)
    assert payload["station_code"] == STATION and payload["day"] == DAY
    assert sum(len(t["stops"]) for t in payload["teams"]) > 0
    page = client.get(f"/routes/{plan_id}").get_data(as_text=True)
    assert "巡逻方案" in page and f"/routes/{plan_id}/frame" in page
    assert "T&lt;b&gt;2&lt;/b&gt;" in page and HOSTILE_TEAM not in page
    listing = client.get("/routes/").get_data(as_text=True)
    assert f'href="/routes/{plan_id}"' in listing


@pytest.mark.parametrize("shift", ["20:00-20:00x", "25:00-02:00", "06:00-06:00"])
def test_bad_shift_gives_one_sentence(client, teams, shift):
    login(client, "station")
    response = plan_through_form(client, shift=shift)
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "班次请写成 20:00-02:00 的格式" in body and "--shift" not in body


def test_route_frame_is_offline_numbered_and_escaped(client, teams, app):
    login(client, "station")
    plan_id = planned(client)
    response = client.get(f"/routes/{plan_id}/frame")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    csp = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce and f'<script nonce="{nonce.group(1)}"' in html
    assert "unsafe-inline" not in csp
    links = asset_links(html)
    assert links and all(link.startswith("/maps/assets/") for link in links)
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", html)
    assert HOSTILE_TEAM not in html
    payload = load_plan(app.extensions["gridwatch"].engine, plan_id)
    drawn = [t["team_code"] for t in payload["teams"] if t["stops"]]
    assert drawn
    for code in drawn:  # every drawn team's code is in the data, escaped for <script>
        assert json.dumps(code).replace("<", "\\u003c").replace(">", "\\u003e") in html
    assert '"number":1' in html


def test_sheet_is_chinese_and_printable(client, teams):
    login(client, "station")
    plan_id = planned(client)
    client.post(
        "/lang",
        data={"lang": "en", "csrf_token": csrf_token(client.get("/routes/").get_data(True))},
    )
    sheet = client.get(f"/routes/{plan_id}/sheet")
    assert sheet.status_code == 200
    html = sheet.get_data(as_text=True)
    assert "巡逻路线单" in html and "带队人(签字)" in html
    assert html.count('<section class="sheet">') == 2  # one page per team
    assert "css/route-sheet.css" in html and "<style" not in html and "onclick" not in html
    css = client.get("/static/css/route-sheet.css").get_data(as_text=True)
    assert "@media print" in css and "break-after: page" in css


def test_gpx_per_team(client, teams, app):
    login(client, "station")
    plan_id = planned(client)
    payload = load_plan(app.extensions["gridwatch"].engine, plan_id)
    team = next(t for t in payload["teams"] if t["stops"])
    response = client.get(f"/routes/{plan_id}/gpx/{team['team_code']}")
    assert response.status_code == 200
    assert response.mimetype == "application/gpx+xml"
    assert "attachment" in response.headers["Content-Disposition"]
    gpx = gpxpy.parse(response.get_data(as_text=True))
    assert len(gpx.waypoints) == len(team["stops"])
    assert gpx.waypoints[0].time == datetime.fromisoformat(team["stops"][0]["arrive"])
    assert len(gpx.routes[0].points) == len(team["stops"]) + 2  # base, stops, base
    assert client.get(f"/routes/{plan_id}/gpx/NOBODY").status_code == 404


def test_jurisdiction_scopes_plans(client, teams):
    login(client, "station")
    plan_id = planned(client)
    client.post("/auth/logout", data={"csrf_token": csrf_token(client.get("/").get_data(True))})
    # township A is covered by PS01: sees the plan; township B does not (404, as unknown)
    login(client, "town_a")
    assert client.get(f"/routes/{plan_id}").status_code == 200
    client.post("/auth/logout", data={"csrf_token": csrf_token(client.get("/").get_data(True))})
    login(client, "town_b")
    for path in ("", "/frame", "/sheet", f"/gpx/{teams[0]}"):
        assert client.get(f"/routes/{plan_id}{path}").status_code == 404, path
    assert f"/routes/{plan_id}" not in client.get("/routes/").get_data(as_text=True)
    # and cannot plan for PS01 (not one of its choices)
    assert plan_through_form(client).status_code == 400
    assert client.get(f"/api/v1/routes?station={STATION}&date={DAY}").status_code == 404


def test_viewer_may_look_but_not_plan(client, teams):
    login(client, "screen")
    page = client.get("/routes/").get_data(as_text=True)
    assert 'id="plan-form"' not in page
    token = csrf_token(client.get("/").get_data(as_text=True))
    response = client.post(
        "/routes/", data={"station": STATION, "day": DAY, "shift": "20:00-02:00",
                          "csrf_token": token}
    )  # fmt: skip
    assert response.status_code == 403


def test_api_returns_the_newest_plan(client, teams):
    login(client, "station")
    first = planned(client)
    second = planned(client)
    answer = client.get(f"/api/v1/routes?station={STATION}&date={DAY}")
    assert answer.status_code == 200
    payload = answer.get_json()
    assert payload["plan_id"] == second != first
    assert {"teams", "risk_covered", "greedy"} <= set(payload)
    assert payload["risk_covered"] >= payload["greedy"]["risk_covered"] - 1e-6
    assert (
        client.get(f"/api/v1/routes?station={STATION}&date={DAY}&shift=08:00-12:00").status_code
        == 404
    )
    assert client.get(f"/api/v1/routes?station={STATION}&date=2026-09-11").status_code == 404
    bad = client.get(f"/api/v1/routes?station={STATION}&date=tomorrow")
    assert bad.status_code == 400 and "2026-11-22" in bad.get_json()["error"]["message"]
    assert client.get(f"/api/v1/routes?date={DAY}").status_code == 400
    document = json.loads(client.get("/api/v1/openapi.json").get_data(as_text=True))
    assert "/routes" in document["paths"]


# --- the map builder on its own --------------------------------------------------------------


def sample_payload() -> dict:
    def stop(n: int, lon: float, lat: float) -> dict:
        return {
            "lon": lon,
            "lat": lat,
            "grid_code": f"G{n}",
            "arrive": f"2026-11-22T2{n}:00:00+08:00",
            "depart": f"2026-11-22T2{n}:14:00+08:00",
            "dwell_min": 14.0,
            "risk": 0.5 * n,
        }

    base = {"lon": 113.0, "lat": 28.0}
    return {
        "teams": [
            {
                "team_id": 1,
                "team_code": "<script>alert(1)</script>",
                "base": base,
                "leave_base": "2026-11-22T20:50:00+08:00",
                "return_base": "2026-11-23T00:30:00+08:00",
                "stops": [stop(1, 113.01, 28.0), stop(2, 113.01, 28.01)],
            },
            {"team_id": 2, "team_code": "IDLE", "base": base, "stops": []},
            {
                "team_id": 3,
                "team_code": "T3",
                "base": base,
                "stops": [stop(3, 112.99, 28.0)],
            },
        ]
    }


def test_route_features_number_stops_and_close_the_loop():
    teams = route_features(sample_payload())
    assert [t["code"] for t in teams] == ["<script>alert(1)</script>", "T3"]  # idle left out
    first = teams[0]
    assert [s["number"] for s in first["stops"]] == [1, 2]
    assert first["path"] == [[28.0, 113.0], [28.0, 113.01], [28.01, 113.01], [28.0, 113.0]]
    assert first["stops"][1]["arrive"] == "22:00" and first["leave"] == "20:50"
    assert first["colour"] == TEAM_COLOURS[0] and teams[1]["colour"] == TEAM_COLOURS[2]
    road = [(113.0, 28.0), (113.005, 28.0), (113.01, 28.0), (113.0, 28.0)]
    assert route_features(sample_payload(), {0: road})[0]["path"][1] == [28.0, 113.005]
    # a plan made on roads carries its own path; grid names show beside the codes
    payload = sample_payload()
    payload["teams"][2]["path"] = [[113.0, 28.0], [112.995, 28.0], [112.99, 28.0], [113.0, 28.0]]
    payload["teams"][2]["stops"][0]["grid_name"] = "东一村第1网格"
    drawn = route_features(payload)[1]
    assert drawn["path"][1] == [28.0, 112.995]
    assert drawn["stops"][0]["grid"] == "东一村第1网格（G3）"


def test_route_map_document_is_offline_and_escaped():
    html = route_map_html(sample_payload(), text={"team": "队伍"})
    assert "<script>alert(1)" not in html
    assert "\\u003cscript\\u003ealert(1)" in html
    assert all(link.startswith("/maps/assets/") for link in asset_links(html))
    assert "队伍" in html or json.dumps("队伍")[1:-1] in html  # the label, maybe \\u-escaped
    assert "textContent" in html and "innerHTML" not in html


def test_plan_page_shows_adherence_after_the_shift(client, teams, app, web_settings, tmp_path):
    from datetime import timedelta

    from gridwatch.ingest import import_file

    login(client, "station")
    plan_id = planned(client)
    payload = load_plan(app.extensions["gridwatch"].engine, plan_id)
    team = next(t for t in payload["teams"] if t["stops"])
    stop = team["stops"][0]
    arrive = datetime.fromisoformat(stop["arrive"])
    minutes = int(stop["dwell_min"])
    lines = ["team_code,ts,lon,lat"] + [
        f'"{team["team_code"]}",{(arrive + timedelta(minutes=m)).isoformat()},'
        f"{stop['lon']},{stop['lat']}"
        for m in range(minutes + 1)
    ]
    path = tmp_path / "pings.csv"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    summary = import_file("patrols", path, web_settings, app.extensions["gridwatch"].engine)
    assert summary.imported == minutes + 1, summary
    page = client.get(f"/routes/{plan_id}").get_data(as_text=True)
    assert 'id="adherence"' in page and "执行情况" in page
    section = page[page.index('id="adherence"') :]
    row = section[section.index(f"<td>{escape(team['team_code'])}</td>") :]
    assert f"1 / {len(team['stops'])}" in row[: row.index("</tr>")]
    others = [t for t in payload["teams"] if t["team_code"] != team["team_code"]]
    assert section.count("无定位:本班次未出勤") == len(others)


def test_plan_focus_checkbox(client, teams, app):
    """On by default; without survey data the plan is made without it and the page says so."""
    login(client, "station")
    form = client.get("/routes/").get_data(as_text=True)
    checkbox = re.search(r'<input[^>]*name="plan_focus"[^>]*>', form)
    assert checkbox and "checked" in checkbox.group(0)
    assert "加权防控方案中的巡逻重点网格" in form
    page = client.get("/routes/")
    response = client.post(
        "/routes/",
        data={
            "station": STATION,
            "day": DAY,
            "shift": "20:00-02:00",
            "plan_focus": "y",
            "csrf_token": csrf_token(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    plan_id = int(response.headers["Location"].rsplit("/", 1)[1])
    payload = load_plan(app.extensions["gridwatch"].engine, plan_id)
    assert payload["plan_focus"]["used"] is False
    assert "no quarterly survey wave" in payload["plan_focus"]["note"]
    assert sum(len(t["stops"]) for t in payload["teams"]) > 0  # planned all the same
    shown = client.get(f"/routes/{plan_id}").get_data(as_text=True)
    assert "未计入防控方案的巡逻重点网格：防控方案无法计算" in shown
    # unchecked: planned without it, and no note
    unchecked = load_plan(app.extensions["gridwatch"].engine, planned(client))
    assert unchecked["plan_focus"] == {"used": False, "weight": 0.0, "grids": []}
    assert "未计入防控方案的巡逻重点网格。" in client.get(
        f"/routes/{unchecked['plan_id']}"
    ).get_data(as_text=True)


# --- the prevention plan's patrol-focus grids on the map and the sheet ----------------------


def focus_payload() -> dict:
    """The sample plan with G2 (peak 23–02 h) and G3 (no peak hours) as focus stops."""
    payload = sample_payload()
    first, _, third = payload["teams"]
    first["stops"][0]["focus"] = False
    first["stops"][1]["focus"] = True
    third["stops"][0]["focus"] = True
    payload["plan_focus"] = {
        "used": True,
        "weight": 0.15,
        "grids": [
            {"grid_code": "G2", "peak_hours": [0, 1, 23]},
            {"grid_code": "G3", "peak_hours": []},
            {"grid_code": "G9", "peak_hours": [20, 21, 22]},  # a candidate no team visits
        ],
    }
    return payload


def drawn_teams(html: str) -> list[dict]:
    """Return the teams' drawing data as the route map's script receives it."""
    match = re.search(r"\}\)\(map_\w+, (\[.*?\]), \{", html, re.S)
    assert match, "the route layers' call is in the document"
    return json.loads(match.group(1))


def test_hour_spans():
    assert hour_spans([20, 21, 22]) == "20–23"
    assert hour_spans([0, 1, 23]) == "23–02"  # across midnight
    assert hour_spans([7, 1, 2]) == "01–03、07–08"
    assert hour_spans([]) == ""
    assert hour_spans(range(24)) == "00–24"


def test_route_features_mark_exactly_the_focus_stops():
    teams = route_features(
        focus_payload(), focus_label="防控重点网格", focus_template="防控重点网格 %(hours)s时"
    )
    marks = {(t["code"], s["number"]): s["focus"] for t in teams for s in t["stops"]}
    assert marks == {
        ("<script>alert(1)</script>", 1): None,
        ("<script>alert(1)</script>", 2): "防控重点网格 23–02时",
        ("T3", 1): "防控重点网格",  # a focus grid without recent incidents: no hours
    }
    # a plan made without the focus grids (or stored before them) marks nothing
    assert all(s["focus"] is None for t in route_features(sample_payload()) for s in t["stops"])


def test_route_map_rings_focus_stops_with_a_legend_and_an_escaped_tooltip():
    text = {"focus_hours": "<b>重点</b> %(hours)s时", "focus_legend": "图例<i>"}
    html = route_map_html(focus_payload(), text=text)
    lines = [s["focus"] for t in drawn_teams(html) for s in t["stops"]]
    assert lines == [None, "<b>重点</b> 23–02时", "Patrol-focus grid"]
    assert "<b>重点" not in html and "图例<i>" not in html  # escaped in the script's JSON
    assert "gw-stop-focus" in html and "bindTooltip(line(stop.focus)" in html
    assert "gw-legend-ring" in html and "text.focus_legend" in html
    assert "innerHTML" not in html
    # without focus stops the same script draws no ring, tooltip or legend
    plain = drawn_teams(route_map_html(sample_payload()))
    assert all(s["focus"] is None for t in plain for s in t["stops"])


def test_focus_stops_are_marked_on_the_map_and_the_sheet(client, teams, app, monkeypatch):
    """The form's focus grids reach the plan; the frame and the sheet mark exactly its stops."""
    from gridwatch.web import routes as web_routes

    login(client, "station")
    engine = app.extensions["gridwatch"].engine
    before = load_plan(engine, planned(client))
    visited = sorted({s["grid_code"] for t in before["teams"] for s in t["stops"]})
    assert len(visited) >= 2
    calls = []

    def fake_focus(engine, settings, station_code):
        calls.append(station_code)
        return {visited[0]: (20, 21, 22), visited[-1]: ()}, None

    monkeypatch.setattr(web_routes, "station_patrol_focus_or_note", fake_focus)
    plan_id = planned(client, plan_focus="y")
    assert calls == [STATION]
    payload = load_plan(engine, plan_id)
    assert payload["plan_focus"]["used"] is True
    lines = {visited[0]: "防控重点网格 20–23时", visited[-1]: "防控重点网格"}
    expected = {
        (t["team_code"], n): lines.get(s["grid_code"])
        for t in payload["teams"]
        for n, s in enumerate(t["stops"], start=1)
    }
    assert any(expected.values()), "a focus grid is still visited"
    assert {key: line is not None for key, line in expected.items()} == {
        (t["team_code"], n): s["focus"]
        for t in payload["teams"]
        for n, s in enumerate(t["stops"], start=1)
    }

    frame = client.get(f"/routes/{plan_id}/frame").get_data(as_text=True)
    drawn = {(t["code"], s["number"]): s["focus"] for t in drawn_teams(frame) for s in t["stops"]}
    assert drawn == expected
    legend = "防控方案确定的防控重点网格"
    assert legend in frame or json.dumps(legend) in frame

    sheet = client.get(f"/routes/{plan_id}/sheet").get_data(as_text=True)
    assert "<th>防控重点</th>" in sheet
    marks = {}
    sections = sheet.split('<section class="sheet">')[1:]
    for team, section in zip(payload["teams"], sections, strict=True):
        for flag, number, cells in re.findall(
            r"<tr( class=\"focus\")?>\s*<td>(\d+)</td>(.*?)</tr>", section, re.S
        ):
            mark = re.search(r'<td class="focus-mark">(.*?)</td>', cells, re.S)
            assert mark is not None and bool(flag) == (mark.group(1) != "")
            marks[(team["team_code"], int(number))] = mark.group(1)
    want = {"防控重点网格 20–23时": "★ 20–23时", "防控重点网格": "★", None: ""}
    assert marks == {key: want[line] for key, line in expected.items()}
    assert sheet.count("★ 防控方案确定的防控重点网格") == sum(
        1 for t in payload["teams"] if any(s["focus"] for s in t["stops"])
    )
