"""Survey pages, exports, briefing and API: who sees which township, and what they are shown.

The web county (tests/web_support.py) gets three quarters of survey results: township A
(东城镇, 78 %) is the bottom township every quarter, township B (西山乡, 92 %) never is. With
``bottom_n: 1`` in the rules, A climbs the ladder (summons, yellow card, listed) and B stays at
"none". A solved case in A whose victim was never told carries an address that no page may
show, and an offline camera in A has a name that Excel would run as a formula.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import pytest
from openpyxl import load_workbook
from web_support import (
    GRIDS_A,
    TOWNSHIP_A,
    TOWNSHIP_B,
    VILLAGE_A,
    VILLAGE_B,
    login,
)

from gridwatch.accounts import recent_events

QUARTERS = ("2026Q1", "2026Q2", "2026Q3")
#: area → (security %, awareness %, participation %, 两抢一盗 share %)
SCORES = {
    TOWNSHIP_A: (78.0, 30.0, 20.0, 60.0),
    TOWNSHIP_B: (92.0, 50.0, 40.0, 30.0),
    VILLAGE_A: (76.0, 25.0, 15.0, 62.0),
    VILLAGE_B: (93.0, 55.0, 45.0, 28.0),
    "510000000000": (85.0, 40.0, 30.0, 45.0),
}
SECRET_ADDRESS = "幸福路88号<b>受害人家</b>"
CASE_ID = "A9"
CAMERA_ID = "CAM-A1"
FORMULA_NAME = '=HYPERLINK("http://evil.example","x")'
#: Text that only township A's data can put on a page.
A_MARKERS = ("东城镇", TOWNSHIP_A, VILLAGE_A, "东一村", GRIDS_A[0], CASE_ID, CAMERA_ID)
B_MARKERS = ("西山乡", TOWNSHIP_B, VILLAGE_B, "西一村")


@pytest.fixture(scope="module")
def survey_settings(tmp_path_factory, web_county_db):
    """The web county plus survey results, a silent solved case and an offline camera."""
    from conftest import make_settings

    from gridwatch.ingest import import_file
    from gridwatch.storage import create_db_engine

    root = tmp_path_factory.mktemp("web_survey")
    var = root / "var"
    var.mkdir()
    for part in web_county_db.parent.glob(web_county_db.name + "*"):
        shutil.copy2(part, var / part.name)
    rules = root / "rules.yaml"
    rules.write_text("ranking: {bottom_n: 1}\n", "utf-8")
    settings = make_settings(root, GRIDWATCH_ACCOUNTABILITY_RULES_FILE=str(rules))
    engine = create_db_engine(settings.database_url)
    try:
        lines = [
            "area_code,period,respondents,security_pct,satisfaction_pct,awareness_pct,"
            "participation_pct,两抢一盗"
        ]
        for quarter in QUARTERS:
            for code, (security, aware, part, theft) in SCORES.items():
                lines.append(f"{code},{quarter},400,{security},80,{aware},{part},{theft}")
        results = root / "results.csv"
        results.write_text("\n".join(lines) + "\n", "utf-8")
        import_file("surveys", results, settings, engine)
        incidents = root / "incidents.csv"
        incidents.write_text(
            "id,occurred_at,category,lon,lat,source,status,solved_at,address\n"
            f"{CASE_ID},2026-09-10 10:00,theft,104.005,30.005,call_110,solved,"
            f'2026-09-12 10:00,"{SECRET_ADDRESS}"\n',
            "utf-8",
        )
        import_file("incidents", incidents, settings, engine)
        cameras = root / "cameras.csv"
        cameras.write_text(
            "id,name,lon,lat,type,status\n"
            f'{CAMERA_ID},"{FORMULA_NAME.replace(chr(34), chr(34) * 2)}",104.0051,30.0051,'
            "高清,离线\n",
            "utf-8",
        )
        import_file("cameras", cameras, settings, engine)
    finally:
        engine.dispose()
    return settings


@pytest.fixture(scope="module")
def app(survey_settings):
    """One app for the module: the survey results are computed once and then cached."""
    from gridwatch.web import create_app

    flask_app = create_app({"GRIDWATCH_SETTINGS": survey_settings, "TESTING": True})
    yield flask_app
    flask_app.extensions["gridwatch"].engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def _as(client, username):
    response = login(client, username)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return client


def _text(response) -> str:
    return response.get_data(as_text=True)


PAGES = (
    "/survey/rankings",
    "/survey/priorities",
    "/survey/plan",
    f"/survey/briefing?township={TOWNSHIP_A}",
)
EXPORTS = ("/survey/rankings.csv", "/survey/rankings.xlsx", "/survey/briefing.xlsx")
API = ("/api/v1/survey/rankings", "/api/v1/priorities", "/api/v1/early-warning")


def test_everything_needs_a_signed_in_user(client):
    for url in PAGES + EXPORTS:
        response = client.get(url)
        assert response.status_code == 302 and "/auth/login" in response.location, url
    for url in API:
        response = client.get(url)
        assert response.status_code == 401 and response.json["error"]["status"] == 401, url


def test_county_ranking_shows_intervals_status_history_and_red_line(client):
    html = _text(_as(client, "county").get("/survey/rankings?period=2026Q3"))
    assert "东城镇" in html and "西山乡" in html
    # B (92 %) first, A (78 %) second of two, A below the red line and listed after 3 quarters
    assert html.index("西山乡") < html.index("东城镇")
    assert '2 <span class="muted">/ 2</span>' in html
    assert "低于红线" in html and "挂牌重点整治" in html
    assert '2026Q1</span> <span class="tag tag-summons">约谈' in html
    assert '2026Q2</span> <span class="tag tag-yellow_card">黄牌警告' in html
    # a 400-respondent interval around 78 % and the county's red-line row
    # (Wilson: 73.68–81.78 %)
    assert "73.7–81.8" in html
    assert "县级红线" in html and "测试县" in html
    api = client.get("/api/v1/survey/rankings?period=2026Q3").json
    rows = {r["area_code"]: r for r in api["rows"]}
    assert rows[TOWNSHIP_A]["status"] == "listed" and rows[TOWNSHIP_B]["status"] == "none"
    assert [h["status"] for h in rows[TOWNSHIP_A]["status_history"]] == [
        "summons",
        "yellow_card",
        "listed",
    ]
    assert rows[TOWNSHIP_A]["rank"] == 2 and api["ranked"] == 2
    assert rows[TOWNSHIP_A]["ci_low"] < 78.0 < rows[TOWNSHIP_A]["ci_high"]
    # an earlier quarter shows the ladder as it stood then
    q1 = client.get("/api/v1/survey/rankings?period=2026Q1").json
    assert {r["area_code"]: r["status"] for r in q1["rows"]}[TOWNSHIP_A] == "summons"


@pytest.mark.parametrize(
    ("user", "own", "other"),
    [("town_b", B_MARKERS, A_MARKERS), ("town_a", A_MARKERS[:4], B_MARKERS)],
)
def test_a_township_never_sees_another_townships_data(client, user, own, other):
    _as(client, user)
    own_code = TOWNSHIP_B if user == "town_b" else TOWNSHIP_A
    other_code = TOWNSHIP_A if user == "town_b" else TOWNSHIP_B
    answers = {}
    for url in (
        "/survey/rankings?period=2026Q3",
        "/survey/priorities?period=2026Q3",
        "/survey/plan?period=2026Q3",
        f"/survey/briefing?township={own_code}&period=2026Q3",
        "/survey/rankings.csv?period=2026Q3",
        "/api/v1/survey/rankings?period=2026Q3",
        "/api/v1/priorities?level=village&period=2026Q3",
        "/api/v1/priorities?level=grid&period=2026Q3",
        "/api/v1/early-warning",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        answers[url] = response.get_data().decode("utf-8-sig")
    for xlsx in (
        "/survey/rankings.xlsx?period=2026Q3",
        f"/survey/briefing.xlsx?township={own_code}",
    ):
        response = client.get(xlsx)
        assert response.status_code == 200, xlsx
        book = load_workbook(io.BytesIO(response.data))
        answers[xlsx] = "\n".join(
            str(cell) for ws in book for row in ws.iter_rows(values_only=True) for cell in row
        )
    for url, body in answers.items():
        for marker in other:
            assert marker not in body, (url, marker)
    # and their own data is there, so the pages were not simply empty
    assert own[0] in answers["/survey/rankings?period=2026Q3"]
    assert own[0] in answers["/survey/rankings.csv?period=2026Q3"]
    ranking = client.get("/api/v1/survey/rankings?period=2026Q3").json
    assert [r["area_code"] for r in ranking["rows"]] == [own_code]
    assert ranking["counties"] == [] and ranking["city"] == []
    warning = client.get("/api/v1/early-warning").json
    assert [r["area_code"] for r in warning["rows"]] == [own_code]
    # another township's plan or briefing is indistinguishable from a missing one
    for url in (
        f"/survey/plan?township={other_code}",
        f"/survey/briefing?township={other_code}",
        f"/survey/briefing.xlsx?township={other_code}",
        "/survey/plan?township=999999999999",
        f"/survey/plan?township={VILLAGE_A if user == 'town_a' else VILLAGE_B}",
    ):
        assert client.get(url).status_code == 404, url


def test_station_sees_only_the_townships_it_covers(client):
    _as(client, "station")
    html = _text(client.get("/survey/rankings?period=2026Q3"))
    assert "东城镇" in html and "西山乡" not in html
    plan = _text(client.get("/survey/plan"))
    assert "东城镇" in plan and "西山乡" not in plan


def test_ranking_exports_are_formula_safe_complete_and_audited(app, client):
    _as(client, "county")
    response = client.get("/survey/rankings.csv?period=2026Q3")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "survey-ranking-2026Q3.csv" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))
    header, *body = rows
    assert header[0] == "排名" and header[2] == "code" and header[3] == "安全感%"
    assert header[8:] == ["状态", "问责记录"]
    by_code = {r[2]: r for r in body}
    assert set(by_code) == {TOWNSHIP_A, TOWNSHIP_B}
    assert by_code[TOWNSHIP_A][8] == "挂牌重点整治"
    assert by_code[TOWNSHIP_A][9] == "2026Q1 约谈; 2026Q2 黄牌警告; 2026Q3 挂牌重点整治"
    assert by_code[TOWNSHIP_B][9] == ""
    book = load_workbook(io.BytesIO(client.get("/survey/rankings.xlsx?period=2026Q3").data))
    sheet = book.active
    values = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert values[0][0] == "排名" and {v[2] for v in values[1:]} == {TOWNSHIP_A, TOWNSHIP_B}
    engine = app.extensions["gridwatch"].engine
    events = [e for e in recent_events(engine) if e["action"] == "export"]
    targets = [e["target"] for e in events]
    assert "survey/rankings.csv" in targets and "survey/rankings.xlsx" in targets
    csv_event = next(e for e in events if e["target"] == "survey/rankings.csv")
    assert csv_event["username"] == "county"
    assert csv_event["detail"] == {
        "format": "csv",
        "report": "survey_ranking",
        "period": "2026Q3",
        "rows": 2,
    }


def test_a_viewer_reads_but_exports_nothing_and_sees_no_camera_list(client):
    _as(client, "screen")
    assert client.get("/survey/rankings").status_code == 200
    for url in EXPORTS:
        assert client.get(url).status_code == 403, url
    plan = _text(client.get(f"/survey/plan?township={TOWNSHIP_A}"))
    assert "优先修复的监控" not in plan and CAMERA_ID not in plan
    assert CASE_ID not in plan and SECRET_ADDRESS not in plan


def test_priorities_explain_in_chinese_and_escape_area_names(client):
    _as(client, "county")
    response = client.get("/survey/priorities?period=2026Q3")
    html = _text(response)
    assert response.status_code == 200
    assert "村(社区)优先整治" in html and "首要不满意因素" in html and "两抢一盗" in html
    assert "安全感 76.0%" in html and "低于80%红线" in html
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;alert(" in html
    grid = client.get("/api/v1/priorities?level=grid&period=2026Q3").json
    assert {r["village_code"] for r in grid["rows"]} == {VILLAGE_A, VILLAGE_B}
    assert all(r["explanation"] for r in grid["rows"])
    villages = client.get("/api/v1/priorities?period=2026Q3").json
    assert villages["level"] == "village"
    # the unsafe village with the theft complaint comes first
    assert villages["rows"][0]["area_code"] == VILLAGE_A


def test_early_warning_says_honestly_when_the_model_is_not_used(client):
    _as(client, "county")
    warning = client.get("/api/v1/early-warning").json
    # two townships are far too few to validate a model against persistence
    assert warning["used"] is False and warning["method"] == "persistence"
    assert warning["target_period"] == "2026Q4" and warning["validation"]["mae"] is None
    rows = {r["area_code"]: r for r in warning["rows"]}
    assert rows[TOWNSHIP_A]["predicted_pct"] == pytest.approx(78.0)
    assert rows[TOWNSHIP_A]["at_risk"] and not rows[TOWNSHIP_B]["predicted_bottom"]
    html = _text(client.get("/survey/priorities"))
    assert "未采用模型" in html and "以往季度太少" in html and "已采用模型" not in html


def test_plan_follows_the_role_rules_for_cases_and_cameras(app):
    client = _as(app.test_client(), "county")
    html = _text(client.get(f"/survey/plan?township={TOWNSHIP_A}&period=2026Q3"))
    assert "新增监控点位" in html and "贪心基准覆盖警情" in html
    assert CASE_ID in html and "东城派出所" in html  # the station that must call the victim
    assert CAMERA_ID in html and "优先修复的监控" in html
    assert "幸福路" not in html  # never an address, for any role
    client = _as(app.test_client(), "station")
    html = _text(client.get("/survey/plan"))
    assert CASE_ID in html and "幸福路" not in html
    client = _as(app.test_client(), "town_a")
    html = _text(client.get("/survey/plan"))
    # a township office gets the count per grid, not the case
    assert CASE_ID not in html and "幸福路" not in html
    assert "东一村第1网格" in html and "1 起" in html


def test_briefing_prints_in_chinese_and_its_workbook_is_formula_safe(client):
    _as(client, "county")
    response = client.get(f"/survey/briefing?township={TOWNSHIP_A}&period=2026Q3")
    html = _text(response)
    assert response.status_code == 200
    assert '<html lang="zh-CN">' in html and "东城镇 季度安全感测评简报" in html
    assert "css/report.css" in html and 'class="report-print"' in html
    assert "挂牌重点整治" in html and "2 / 2" in html and "新增监控点位" in html
    assert "http://" not in html.replace("http://evil.example", "")
    response = client.get(f"/survey/briefing.xlsx?township={TOWNSHIP_A}&period=2026Q3")
    assert response.status_code == 200
    book = load_workbook(io.BytesIO(response.data))
    assert book.sheetnames[0] == "安全感测评排名"
    repairs = book["优先修复的监控"]
    cells = [c for row in repairs.iter_rows(values_only=True) for c in row if c is not None]
    assert CAMERA_ID in cells
    assert "'" + FORMULA_NAME in cells and FORMULA_NAME not in cells
    assert book.active["A1"].value.startswith("东城镇 2026Q3")


def test_bad_periods_and_levels_get_one_sentence(client):
    _as(client, "county")
    response = client.get("/survey/rankings?period=2026Q9")
    assert response.status_code == 400 and "Traceback" not in _text(response)
    assert "2026Q9" in _text(response)
    response = client.get("/survey/rankings?period=2026-07")
    assert response.status_code == 400 and "quarter" in _text(response)
    api = client.get("/api/v1/survey/rankings?period=2026-07")
    assert api.status_code == 400 and "quarter" in api.json["error"]["message"]
    api = client.get("/api/v1/priorities?level=township")
    assert api.status_code == 400 and "village or grid" in api.json["error"]["message"]
    # a quarter without a survey is an empty ranking, not an error
    empty = client.get("/api/v1/survey/rankings?period=2025Q1")
    assert empty.status_code == 200 and empty.json["rows"] == []


def test_survey_pages_change_nothing_without_a_csrf_token(client):
    _as(client, "county")
    html = _text(client.get("/survey/plan"))
    # the pages' own forms are GET forms; the only POST forms are the layout's, with tokens
    assert 'method="get" action="/survey/plan"' in html
    assert html.count('method="post"') == html.count('name="csrf_token"')
    response = client.post("/survey/rankings.csv", data={"period": "2026Q3"})
    assert response.status_code == 400


def test_openapi_lists_the_survey_endpoints(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"/survey/rankings", "/priorities", "/early-warning"} <= set(paths)
    levels = paths["/priorities"]["get"]["parameters"][0]["schema"]["enum"]
    assert levels == ["village", "grid"]


def test_navigation_links_the_survey_pages(client):
    _as(client, "town_a")
    html = _text(client.get("/"))
    assert 'href="/survey/rankings"' in html and "安全感测评" in html


def _frame_data(html: str) -> dict:
    """Return the JSON the plan map's script is called with (its first argument after the map)."""
    import json
    import re

    match = re.search(r"\}\)\(map_\w+, (\{.*?\}), \{", html, re.S)
    assert match, html[-2000:]
    return json.loads(match.group(1))


def test_plan_map_shows_numbered_sites_and_blind_incidents_offline(app):
    client = _as(app.test_client(), "county")
    page = _text(client.get(f"/survey/plan?township={TOWNSHIP_A}&period=2026Q3"))
    assert 'id="plan-map"' in page and "/survey/plan/frame?township=" in page
    assert "地图上的监控规划" in page
    response = client.get(f"/survey/plan/frame?township={TOWNSHIP_A}&period=2026Q3")
    assert response.status_code == 200
    html = _text(response)
    policy = response.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert f'<script nonce="{nonce}"' in html and "unsafe-inline" not in policy.split("style")[0]
    # every script and stylesheet comes from this app
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/"), src
    data = _frame_data(html)
    assert [s["number"] for s in data["sites"]] == list(range(1, len(data["sites"]) + 1))
    assert data["sites"] and data["sites"][0]["covered_incidents"] >= 1
    # the silent case in A is in a blind spot (its camera is offline) and site 1 sees it
    blind = data["blind_incidents"]
    silent = [b for b in blind if (b["lon"], b["lat"]) == (104.005, 30.005)]
    assert silent and all(GRIDS_A[0] in b["grid"] for b in silent)
    assert silent[0]["covered_by"] in [s["number"] for s in data["sites"]]
    # each site's popup count is the blind-spot incidents first seen by it
    for site in data["sites"]:
        seen = sum(b["covered_by"] == site["number"] for b in blind)
        assert seen == site["covered_incidents"], site
    assert all(c["id"] != CAMERA_ID for c in data["cameras"])  # offline: not a working camera
    for label in ("可新增覆盖警情", "建议点位"):  # the popups' labels, translated
        assert json.dumps(label)[1:-1] in html
    assert "幸福路" not in html


def test_plan_map_follows_the_role_rules_and_the_jurisdiction(app):
    client = _as(app.test_client(), "town_a")
    html = _text(client.get(f"/survey/plan/frame?township={TOWNSHIP_A}&period=2026Q3"))
    data = _frame_data(html)
    assert data["sites"] and data["blind_incidents"] == []  # counts only for a township
    assert client.get(f"/survey/plan/frame?township={TOWNSHIP_B}").status_code == 404
    assert client.get("/survey/plan/frame?township=999999999999").status_code == 404
    assert client.get(f"/survey/plan/frame?township={VILLAGE_A}").status_code == 404
    assert client.get("/survey/plan/frame?period=2026Q9").status_code == 404
    client = _as(app.test_client(), "town_b")
    assert client.get(f"/survey/plan/frame?township={TOWNSHIP_A}").status_code == 404
    assert app.test_client().get("/survey/plan/frame").status_code in (302, 401)
