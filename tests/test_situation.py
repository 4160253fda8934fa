"""The daily situation report: figures against an independent count, displacement warnings,
alerts, township scoping of the page and the XLSX export, and the printable version."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from io import BytesIO
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import yaml
from openpyxl import load_workbook
from shapely.geometry import box
from sqlalchemy import select, update
from web_support import TOWNSHIP_A, TOWNSHIP_B, csrf_token, login

from gridwatch.ingest import import_file
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import AuditEvent, Camera
from gridwatch.workers.engine import RunRequest, run_eager
from gridwatch.workers.situation import (
    RISE_BASELINE_DAYS,
    RISE_WINDOW_DAYS,
    build_daily_situation,
    get_daily_situation,
    remediated_grids,
    rising_grids,
    situation_for,
)

CATEGORIES = Path(__file__).resolve().parent.parent / "platform/gridwatch/data/categories.yaml"

# An 8 x 8 block of 0.01-degree grids; each pair of columns is one township (T1 … T4) with one
# village. Rows and columns count from the south-west corner.
N, X0, Y0, D = 8, 110.0, 25.0, 0.01
COUNTY = "520000000000"
REPORT_DAY = date(2026, 6, 14)  # a Sunday: its ISO week 2026-W24 is complete
HISTORY_WEEKS = [date(2026, 4, 6) + timedelta(weeks=k) for k in range(8)]  # W15 … W22 Mondays
COOLED_WEEKS = [date(2026, 6, 1), date(2026, 6, 8)]  # W23, W24
CLUSTER = [(1, 1), (1, 2), (2, 1), (2, 2)]  # the hot spot that is remediated
NEXT_DOOR = (2, 3)  # touches (1, 2) and (2, 2); rises in the report week
FAR_AWAY = (6, 6)  # rises too, but touches no remediated grid


def township_code(col: int) -> str:
    return f"52000000{col // 2 + 1}000"


def grid_code(row: int, col: int) -> str:
    return f"{township_code(col)[:9]}001{row * N + col + 1:03d}"


def grid_frame() -> gpd.GeoDataFrame:
    rows = [(COUNTY, "黔南测试县", "county", None, box(X0, Y0, X0 + N * D, Y0 + N * D))]
    for t in range(N // 2):
        code = township_code(2 * t)
        shape = box(X0 + 2 * t * D, Y0, X0 + (2 * t + 2) * D, Y0 + N * D)
        rows.append((code, f"第{t + 1}镇", "township", COUNTY, shape))
        rows.append((code[:9] + "001", f"第{t + 1}村", "village", code, shape))
    for r in range(N):
        for c in range(N):
            cell = box(X0 + c * D, Y0 + r * D, X0 + (c + 1) * D, Y0 + (r + 1) * D)
            parent = township_code(c)[:9] + "001"
            rows.append((grid_code(r, c), f"网格{r}-{c}", "grid", parent, cell))
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "parent_code": [r[3] for r in rows],
            "population": [1000] * len(rows),
        },
        geometry=[r[4] for r in rows],
        crs="EPSG:4326",
    )


def constructed_incidents(remediated: bool) -> list[tuple[str, int, int, str, str]]:
    """(id, row, col, local time, category): background, a hot spot, two rising grids.

    Every grid has one fraud each Wednesday of ten weeks. The cluster has twelve thefts a
    week in the eight history weeks (and, unless ``remediated``, in the cooled weeks too).
    ``NEXT_DOOR`` and ``FAR_AWAY`` get four robberies from 11 to 14 June. A few more fall on
    the report day and its comparison days.
    """
    out = []
    mondays = HISTORY_WEEKS + COOLED_WEEKS
    for week, monday in enumerate(mondays):
        wednesday = monday + timedelta(days=2)
        for r in range(N):
            for c in range(N):
                out.append((f"B{week}-{r}-{c}", r, c, f"{wednesday} 10:00", "fraud"))
        hot = monday in HISTORY_WEEKS or not remediated
        for r, c in CLUSTER if hot else []:
            tuesday = monday + timedelta(days=1)
            for k in range(12):
                out.append((f"H{week}-{r}-{c}-{k}", r, c, f"{tuesday} {8 + k}:00", "theft"))
    for k, day in enumerate(range(11, 15)):
        for r, c in (NEXT_DOOR, FAR_AWAY):
            out.append((f"R{k}-{r}-{c}", r, c, f"2026-06-{day} 15:00", "robbery"))
    out += [
        ("X1", 0, 0, "2026-06-14 09:00", "theft"),
        ("X2", 0, 7, "2026-06-14 23:30", "burglary"),
        ("X3", 5, 4, "2026-06-13 01:00", "fraud"),
        ("X4", 7, 1, "2026-06-07 12:00", "theft"),
        ("X5", 7, 2, "2026-06-07 12:30", "snatching"),
        ("X6", 3, 5, "2025-06-14 18:00", "robbery"),
        ("X7", 3, 6, "2025-06-14 19:00", "drugs"),
    ]
    return out


def write_incidents(path: Path, incidents) -> None:
    lines = ["id,occurred_at,category,lon,lat,source,status,solved_at,victim_notified_at"]
    for source_id, r, c, when, category in incidents:
        lon, lat = X0 + (c + 0.5) * D, Y0 + (r + 0.5) * D
        lines.append(f"{source_id},{when},{category},{lon:.5f},{lat:.5f},call_110,reported,,")
    path.write_text("\n".join(lines) + "\n", "utf-8")


def load_county(engine, settings, tmp_path: Path, remediated: bool = True):
    frame = grid_frame()
    frame.to_file(tmp_path / "county.geojson", driver="GeoJSON")
    import_file("grids", tmp_path / "county.geojson", settings, engine)
    incidents = constructed_incidents(remediated)
    write_incidents(tmp_path / "incidents.csv", incidents)
    summary = import_file("incidents", tmp_path / "incidents.csv", settings, engine)
    assert summary.rejected == 0
    return incidents


@pytest.fixture
def county(engine, db_settings, tmp_path):
    incidents = load_county(engine, db_settings, tmp_path)
    run_eager(engine, db_settings, RunRequest(full=True))
    return engine, db_settings, incidents


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


def independent_figures(incidents) -> dict[tuple[str, str], Counter]:
    """(township code or county, local day) → Counter of 'total' and each category group."""
    groups = {
        code: entry.get("groups", [])
        for code, entry in yaml.safe_load(CATEGORIES.read_text("utf-8"))["categories"].items()
    }
    out: dict[tuple[str, str], Counter] = {}
    for _, _r, c, when, category in incidents:
        day = when[:10]  # the times are local already
        for area in (township_code(c), COUNTY):
            counter = out.setdefault((area, day), Counter())
            counter["total"] += 1
            for group in groups[category]:
                counter[group] += 1
    return out


def test_figures_equal_counts_computed_from_the_incidents(county):
    engine, settings, incidents = county
    report = build_daily_situation(engine, settings, REPORT_DAY)
    expected = independent_figures(incidents)
    days = {
        "day": "2026-06-14",
        "day_before": "2026-06-13",
        "week_before": "2026-06-07",
        "year_before": "2025-06-14",
    }
    assert report["compare"] == {k: v for k, v in days.items() if k != "day"}
    rows = {a["area_code"]: a for a in report["areas"] if a["level"] in ("county", "township")}
    assert set(rows) == {COUNTY} | {township_code(2 * t) for t in range(4)}
    checked = 0
    for code, row in rows.items():
        for name, day in days.items():
            want = expected.get((code, day), Counter())
            got_total = row["incidents"] if name == "day" else row[name]
            got_groups = row["by_group"] if name == "day" else row[f"by_group_{name}"]
            assert got_total == want["total"], (code, name)
            for group, count in got_groups.items():
                assert count == want[group], (code, name, group)
            checked += want["total"]
    assert checked > 20  # the comparison days are not empty
    county_row = rows[COUNTY]
    # 14 June: X1, X2 and the two rising robberies; 13 June: X3 and the two robberies
    assert (county_row["incidents"], county_row["day_before"]) == (4, 3)
    assert county_row["change_day_before_pct"] == pytest.approx(100 * (4 - 3) / 3, abs=0.05)
    assert county_row["by_group"]["two_robberies_one_theft"] == 4  # theft, burglary, 2 robberies
    assert get_daily_situation(engine, REPORT_DAY) == report


def test_station_rows_add_up_their_townships(county, tmp_path):
    engine, settings, _ = county
    stations = tmp_path / "stations.csv"
    t1, t2 = township_code(0), township_code(2)
    stations.write_text(
        f'code,name,lon,lat,township_codes\nPS9,城西派出所,110.01,25.01,"{t1},{t2}"\n', "utf-8"
    )
    import_file("stations", stations, settings, engine)
    report = build_daily_situation(engine, settings, REPORT_DAY)
    rows = {a["area_code"]: a for a in report["areas"]}
    station = rows["PS9"]
    assert station["level"] == "station" and station["townships"] == [t1, t2]
    for key in ("incidents", "day_before", "week_before", "year_before"):
        assert station[key] == rows[t1][key] + rows[t2][key], key
    assert station["week_before"] == 2  # X4 and X5, both in T1
    assert station["not_notified_open"] == 0
    view = situation_for(report, ["PS9"], {t1, t2}, station="PS9")
    assert [h["area_code"] for h in view["heads"]] == ["PS9"]
    assert {t["area_code"] for t in view["townships"]} == {t1, t2}


# ------------------------------------------------------------------------------------------
# Displacement
# ------------------------------------------------------------------------------------------


def test_displacement_fires_next_to_a_remediated_hot_spot(county):
    engine, settings, _ = county
    report = build_daily_situation(engine, settings, REPORT_DAY)
    assert report["hotspot_weeks"][-1] == "2026-W24" and len(report["hotspot_weeks"]) == 10
    remediated = {g["area_code"]: g for g in report["remediated"]}
    for r, c in CLUSTER:
        assert remediated[grid_code(r, c)]["reason"] == "cooled"
        assert remediated[grid_code(r, c)]["last_hot_week"] == "2026-W22"
    assert grid_code(*NEXT_DOOR) not in remediated and grid_code(*FAR_AWAY) not in remediated
    warnings = {d["area_code"]: d for d in report["displacement"]}
    assert list(warnings) == [grid_code(*NEXT_DOOR)]
    warning = warnings[grid_code(*NEXT_DOOR)]
    # background Wednesday + four robberies in 8-14 June; one a week before
    assert (warning["incidents_window"], warning["baseline_weekly"]) == (5, 1.0)
    assert set(warning["remediated_neighbours"]) == {grid_code(1, 2), grid_code(2, 2)}
    assert warning["township_code"] == township_code(NEXT_DOOR[1])
    # The far grid rose just as much: it is left out only because no remediated grid is near.
    assert warning["incidents_window"] == 5
    # Township scoping: T4 (where FAR_AWAY is) sees none, T2 sees its own warning.
    t2, t4 = township_code(2), township_code(6)
    assert situation_for(report, [t4], {t4})["displacement"] == []
    assert [d["area_code"] for d in situation_for(report, [t2], {t2})["displacement"]] == [
        grid_code(*NEXT_DOOR)
    ]


def test_no_displacement_while_the_hot_spot_stays_hot(engine, db_settings, tmp_path):
    load_county(engine, db_settings, tmp_path, remediated=False)
    run_eager(engine, db_settings, RunRequest(full=True))
    report = build_daily_situation(engine, db_settings, REPORT_DAY)
    assert not any(
        g["area_code"] in {grid_code(r, c) for r, c in CLUSTER} for g in report["remediated"]
    )
    assert report["displacement"] == []


def test_remediated_and_rising_rules_on_constructed_series():
    weeks = [f"2026-W{w:02d}" for w in range(15, 25)]
    hot = pd.DataFrame("not_significant", index=[1, 2, 3, 4, 5], columns=weeks, dtype=object)
    hot.loc[1, weeks[3:5]] = "hot_99"  # two hot weeks, quiet in the last two: remediated
    hot.loc[2, weeks[3]] = "hot_95"  # one hot week only: not enough
    hot.loc[3, weeks[2:9]] = "hot_95"  # still hot in week 9 of 10: not cooled
    hot.loc[4, weeks[0:3]] = "hot_90"  # hot at 90 % confidence only: not counted
    found = remediated_grids(hot, {5: "historical"})
    assert found == {
        1: {"hot_weeks": 2, "last_hot_week": "2026-W19", "reason": "cooled"},
        5: {"hot_weeks": 0, "last_hot_week": None, "reason": "historical"},
    }
    days = RISE_BASELINE_DAYS + RISE_WINDOW_DAYS
    daily = pd.DataFrame(np.zeros((4, days)), index=[10, 11, 12, 13])
    daily.iloc[0, -3:] = 1  # 3 in the window, nothing before: rising
    daily.iloc[1, -2:] = 1  # 2 in the window: too few
    daily.iloc[2, :RISE_BASELINE_DAYS:7] = 3  # weekly mean 3 before
    daily.iloc[2, -4:] = 1  # 4 now < 1.5 x 3: not rising
    daily.iloc[3, :RISE_BASELINE_DAYS:7] = 2  # weekly mean 2 before
    daily.iloc[3, -3:] = 1  # exactly 1.5 x 2 = 3: rising
    assert rising_grids(daily) == {
        10: {"incidents_window": 3, "baseline_weekly": 0.0},
        13: {"incidents_window": 3, "baseline_weekly": 2.0},
    }


# ------------------------------------------------------------------------------------------
# Cameras, cases, teams, ladder
# ------------------------------------------------------------------------------------------


def test_alerts_cameras_cases_teams_and_ladder(engine, db_url, tmp_path):
    from conftest import make_settings

    rules = tmp_path / "rules.yaml"
    rules.write_text("ranking: {bottom_n: 1}\n", "utf-8")
    settings = make_settings(
        tmp_path,
        GRIDWATCH_DATABASE_URL=db_url,
        GRIDWATCH_ACCOUNTABILITY_RULES_FILE=str(rules),
    )
    load_county(engine, settings, tmp_path)
    t1, t2, t3, t4 = (township_code(2 * t) for t in range(4))
    (tmp_path / "cams.csv").write_text(
        "id,lon,lat,type,status\n"
        "C1,110.005,25.005,hd,online\nC2,110.075,25.075,hd,online\nC3,110.015,25.005,hd,broken\n",
        "utf-8",
    )
    import_file("cameras", tmp_path / "cams.csv", settings, engine)
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "id,occurred_at,category,lon,lat,source,status,solved_at,victim_notified_at\n"
        "S1,2026-06-01 10:00,theft,110.005,25.005,call_110,solved,2026-06-14 09:00,\n"
        "S2,2026-05-01 10:00,theft,110.005,25.005,call_110,solved,2026-05-04 09:00,\n"
        "S3,2026-05-01 11:00,theft,110.075,25.005,call_110,solved,2026-05-02 09:00,"
        "2026-05-03 09:00\n"
        "S4,2026-06-10 11:00,theft,110.075,25.005,call_110,solved,2026-06-15 09:00,\n",
        "utf-8",
    )
    import_file("incidents", cases, settings, engine)
    (tmp_path / "teams.csv").write_text(
        f"code,name,kind,home_area_code\nP1,一号巡防队,township,{t1}\nP2,四号巡防队,township,{t4}\n",
        "utf-8",
    )
    import_file("teams", tmp_path / "teams.csv", settings, engine)
    (tmp_path / "survey.csv").write_text(
        "area_code,period,respondents,security_pct\n"
        f"{t1},2026Q1,500,80.0\n{t2},2026Q1,500,85.0\n{t3},2026Q1,500,90.0\n{t4},2026Q1,500,95.0\n"
        f"{t1},2026Q2,500,81.0\n{t2},2026Q2,500,84.0\n{t3},2026Q2,500,91.0\n{t4},2026Q2,500,96.0\n",
        "utf-8",
    )
    import_file("surveys", tmp_path / "survey.csv", settings, engine)
    run_eager(engine, settings, RunRequest(full=True))

    first = build_daily_situation(engine, settings, REPORT_DAY - timedelta(days=1))
    assert first["cameras"]["gone_offline"] is None  # nothing earlier to compare with
    assert first["cameras"]["not_working"] == 1
    with session_scope(engine) as session:
        session.execute(update(Camera).where(Camera.source_id == "C2").values(status="offline"))
    report = build_daily_situation(engine, settings, REPORT_DAY)
    cameras = report["cameras"]
    assert (cameras["total"], cameras["not_working"]) == (3, 2)
    assert [c["code"] for c in cameras["gone_offline"]] == ["C2"]  # C3 was broken already
    assert cameras["gone_offline"][0]["township_code"] == t4
    assert cameras["compared_with"] == "2026-06-13"

    # S1 (solved on the day) and S2 wait in T1; S3 was told; S4 was solved after the day.
    cases_t1 = report["not_notified"][t1]
    assert (cases_t1["open"], cases_t1["solved_on_day"]) == (2, 1)
    assert [c["source_id"] for c in cases_t1["cases"]] == ["S2", "S1"]  # longest wait first
    assert cases_t1["cases"][0]["days_waiting"] == 41
    assert t4 not in report["not_notified"]
    rows = {a["area_code"]: a for a in report["areas"]}
    assert (rows[t1]["not_notified_open"], rows[t1]["not_notified_on_day"]) == (2, 1)
    assert (rows[COUNTY]["not_notified_open"], rows[t4]["not_notified_open"]) == (2, 0)

    assert {t["code"] for t in report["inactive_teams"]} == {"P1", "P2"}  # no pings at all

    ladder = report["ladder"]
    assert ladder["quarter"] == "2026Q2" and ladder["bottom_n"] == 1
    risk = {t["area_code"]: t for t in ladder["townships"]}
    assert list(risk) == [t1, t2, t3]  # bottom 1 plus two places: T4 is safe
    assert (risk[t1]["status"], risk[t1]["streak"], risk[t1]["next_status"]) == (
        "yellow_card",
        2,
        "listed",
    )
    assert (risk[t2]["status"], risk[t2]["next_status"]) == ("none", "summons")

    view = situation_for(report, [t4], {t4})
    assert [c["code"] for c in view["cameras"]["gone_offline"]] == ["C2"]
    assert (view["cameras"]["total"], view["cameras"]["not_working"]) == (1, 1)
    assert view["not_notified"]["open"] == 0 and view["ladder"]["townships"] == []
    assert [t["code"] for t in view["inactive_teams"]] == ["P2"]
    view_t1 = situation_for(report, [t1], {t1})
    assert view_t1["cameras"]["gone_offline"] == [] and view_t1["cameras"]["not_working"] == 1
    assert [c["source_id"] for c in view_t1["not_notified"]["cases"]] == ["S2", "S1"]


# ------------------------------------------------------------------------------------------
# Web: page, scoping, export, print
# ------------------------------------------------------------------------------------------

WEB_DAY = "2026-08-04"  # A2 (theft) in 东城镇; nothing in 西山乡


def _build_web_report(app) -> None:
    state = app.extensions["gridwatch"]
    build_daily_situation(state.engine, state.settings, date.fromisoformat(WEB_DAY))


def test_page_offers_to_build_a_missing_report_and_builds_it(client):
    login(client, "county")
    page = client.get(f"/reports/daily?day={WEB_DAY}").get_data(as_text=True)
    assert "还没有这一天的报告" in page
    assert client.post("/reports/daily", data={"day": WEB_DAY}).status_code == 400  # no CSRF
    response = client.post("/reports/daily", data={"day": WEB_DAY, "csrf_token": csrf_token(page)})
    assert response.status_code == 302
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "每日治安形势分析" in html and "东城镇" in html and "西山乡" in html
    assert client.get("/reports/daily?day=2026-13-01").status_code == 400
    assert client.get("/reports/daily?day=2999-01-01").status_code == 400


def test_township_user_sees_only_their_township(app, client):
    _build_web_report(app)
    login(client, "town_b")
    html = client.get(f"/reports/daily?day={WEB_DAY}").get_data(as_text=True)
    assert "西山乡" in html and "东城镇" not in html
    assert client.get(f"/reports/daily?day={WEB_DAY}&area={TOWNSHIP_A}").status_code == 404
    assert client.get(f"/reports/daily.xlsx?day={WEB_DAY}&area={TOWNSHIP_A}").status_code == 404
    client.post("/auth/logout", data={"csrf_token": csrf_token(html)})
    login(client, "county")
    html = client.get(f"/reports/daily?day={WEB_DAY}&area={TOWNSHIP_A}").get_data(as_text=True)
    body = html[html.index("</form>", html.index("report-filters")) :]  # past the area picker
    assert "东城镇" in body and "西山乡" not in body
    assert f'<option value="{TOWNSHIP_B}" >西山乡</option>' in html  # the other one to pick


def _cells(workbook) -> list[list[object]]:
    return [list(row) for ws in workbook.worksheets for row in ws.iter_rows(values_only=True)]


def test_xlsx_export_is_scoped_audited_and_formula_safe(app, client, tmp_path):
    state = app.extensions["gridwatch"]
    teams = tmp_path / "teams.csv"
    teams.write_text(
        "code,name,kind,home_area_code\n"
        f'TA,"=HYPERLINK(""http://x"",""队"")",township,{TOWNSHIP_A}\n'
        f"TB,西山巡防队,township,{TOWNSHIP_B}\n",
        "utf-8",
    )
    import_file("teams", teams, state.settings, state.engine)
    _build_web_report(app)
    login(client, "town_a")
    response = client.get(f"/reports/daily.xlsx?day={WEB_DAY}")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    assert "attachment" in response.headers["Content-Disposition"]
    book = load_workbook(BytesIO(response.data))
    assert book.sheetnames[:3] == ["警情对比", "按类别分组", "各乡镇分类"]
    summary = book["警情对比"]
    assert summary["A2"].value == "辖区" and summary["C2"].value == "警情数"
    assert [summary["A3"].value, summary["C3"].value, summary["D3"].value] == ["东城镇", 1, 0]
    cells = [str(v) for row in _cells(book) for v in row if v is not None]
    assert not any("西山" in v for v in cells)  # nothing of the other township
    teams_sheet = book["未开展巡逻的队伍"]
    names = [row[1] for row in teams_sheet.iter_rows(min_row=3, values_only=True)]
    assert names == ['\'=HYPERLINK("http://x","队")']  # text, never a formula
    assert all(c.data_type != "f" for ws in book.worksheets for row in ws.iter_rows() for c in row)
    with session_scope(state.engine) as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "export").order_by(AuditEvent.id.desc())
        ).first()
    assert event is not None and event.username == "town_a"
    assert event.detail["day"] == WEB_DAY and event.detail["scope"] == [TOWNSHIP_A]


def test_printable_version_is_a4_chinese_and_scoped(app, client):
    _build_web_report(app)
    login(client, "town_a")
    response = client.get(f"/reports/daily/print?day={WEB_DAY}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<html lang="zh-CN">' in html and "每日治安形势分析" in html
    assert "/static/css/report.css" in html and " style=" not in html and "<script" not in html
    for heading in ("警情对比", "新出现和加剧的热点", "洼地效应预警", "破而不馈"):
        assert heading in html, heading
    assert "西山乡" not in html
    css = client.get("/static/css/report.css").get_data(as_text=True)
    assert "size: A4" in css and "@media print" in css
    assert client.get("/reports/daily/print?day=2026-08-01").status_code == 404  # no report


def test_report_pages_load_nothing_from_elsewhere_and_no_inline_code(app, client):
    import re

    _build_web_report(app)
    login(client, "admin")
    paths = [f"/reports/daily?day={WEB_DAY}", f"/reports/daily/print?day={WEB_DAY}"]
    paths.append("/reports/daily?day=2026-08-01")  # no report: the build form
    for path in paths:
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), path
        assert "<script>" not in html and " style=" not in html, path
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert src.startswith(("/", "#")), (path, src)
    nav = client.get("/").get_data(as_text=True)
    assert 'href="/reports/daily"' in nav and "每日形势" in nav


def test_cli_builds_the_report_and_summarises_the_alerts(runner):
    result = runner.invoke(["report", "daily", "--day", WEB_DAY])
    assert result.exit_code == 0, result.output
    assert f"daily situation {WEB_DAY}" in result.output
    assert "displacement warnings: 0" in result.output
    # A1 and B1 are solved, with no solved time (so counted from when they happened) and no
    # notification
    assert "solved, victim not told: 2" in result.output
