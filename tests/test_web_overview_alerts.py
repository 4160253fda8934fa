"""The overview's trend charts and alerts: figures against the database, scoping, escaping.

Alerts are checked on data built for them (imported through the real importers into the
test's own copy of the web county, then aggregated by a real run) and shown to stay quiet
on data that should not raise them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from web_support import COUNTY, TOWNSHIP_A, TOWNSHIP_B, login

from gridwatch.alerts import (
    AlertRules,
    last_complete_week,
    not_notified,
    overview_alerts,
    rising_categories,
)
from gridwatch.areas import jurisdiction_of, load_tree
from gridwatch.overview import (
    HEADLINE_GROUP,
    area_metrics,
    combine,
    key_figures,
    line_chart,
    nice_ceiling,
    trend,
)
from gridwatch.periods import period_of
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Incident
from gridwatch.taxonomy import load_taxonomy

HOSTILE_TEAM = '<script>alert("team")</script>巡防队'


def _engine(app):
    return app.extensions["gridwatch"].engine


def _settings(app):
    return app.extensions["gridwatch"].settings


def _import(app, tmp_path: Path, kind: str, text: str) -> None:
    from gridwatch.ingest import import_file

    path = tmp_path / f"{kind}-{len(list(tmp_path.iterdir()))}.csv"
    path.write_text(text, "utf-8")
    summary = import_file(kind, path, _settings(app), _engine(app))
    assert summary.rejected == 0, summary


def _aggregate(app) -> None:
    from gridwatch.workers.engine import RunRequest, run_eager

    run_eager(_engine(app), _settings(app), RunRequest(trigger="test", full=True))


def _scope(app, role: str, code: str | None):
    engine = _engine(app)
    tree = load_tree(engine)
    area_id = tree.by_code[code].id if code else None
    return tree, jurisdiction_of(engine, role, area_id, None, tree)


def _roots(tree, jurisdiction):
    return [tree.nodes[i] for i in jurisdiction.root_ids]


# -- trend charts -----------------------------------------------------------------------------


def test_overview_needs_sign_in(client):
    response = client.get("/")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_overview_draws_two_trend_charts_as_inline_svg(client):
    login(client, "county")
    html = client.get("/").get_data(as_text=True)
    assert html.count('<svg class="line-chart"') == 2
    assert html.count('<polyline class="series series-1"') == 2
    assert html.count('<polyline class="series series-2"') == 2
    for label in ("每周警情", "每月警情", "全部警情", "两抢一盗", "预警"):
        assert label in html, label
    # No chart script and no inline style: the CSP allows neither.
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/js/app.js" defer>']
    assert " style=" not in html


def _weekly_counts_from_the_database(engine, township_code: str, tz) -> dict[str, list[str]]:
    """Category codes of a township's incidents per ISO week label, read straight from rows."""
    tree = load_tree(engine)
    inside = tree.subtree(tree.by_code[township_code].id)
    with session_scope(engine) as session:
        rows = session.execute(
            select(Incident.occurred_at, Incident.category, Incident.grid_id).where(
                Incident.source != "patrol"
            )
        ).all()
    weeks: dict[str, list[str]] = {}
    for occurred, category, grid_id in rows:
        if grid_id in inside:
            local = occurred.replace(tzinfo=occurred.tzinfo or UTC).astimezone(tz).date()
            weeks.setdefault(period_of(local, "week").label, []).append(category)
    return weeks


def test_weekly_trend_matches_the_incident_rows(app):
    engine, settings = _engine(app), _settings(app)
    tree, jurisdiction = _scope(app, "township", TOWNSHIP_A)
    today = date(2026, 9, 10)
    points = trend(engine, _roots(tree, jurisdiction), today, "week", 12)
    assert [p["period"] for p in points][-1] == "2026-W37" and len(points) == 12
    assert [p["current"] for p in points] == [False] * 11 + [True]
    expected = _weekly_counts_from_the_database(engine, TOWNSHIP_A, settings.timezone)
    group = set(load_taxonomy().in_group(HEADLINE_GROUP))
    for point in points:
        categories = expected.get(point["period"], [])
        assert point["total"] == len(categories), point
        assert point[HEADLINE_GROUP] == sum(c in group for c in categories), point
    # Township A's three incidents all fall in these weeks; B's never count for A.
    assert sum(p["total"] for p in points) == 3
    county_tree, county = _scope(app, "county", COUNTY)
    both = trend(engine, _roots(county_tree, county), today, "week", 12)
    assert sum(p["total"] for p in both) == 5


@pytest.mark.parametrize("today", [date(2026, 7, 3), date(2026, 8, 5), date(2026, 10, 1)])
def test_key_figures_equal_the_published_metrics(app, today):
    """Key figures are summed from the run's blocks; they must equal read_metrics' figures."""
    engine = _engine(app)
    tree, _county = _scope(app, "county", COUNTY)
    for nodes in (
        [tree.by_code[COUNTY]],
        [tree.by_code[TOWNSHIP_A]],
        [tree.by_code[TOWNSHIP_A], tree.by_code[TOWNSHIP_B]],
    ):
        for figures in key_figures(engine, nodes, today):
            published = combine(area_metrics(engine, nodes, figures["period"]))
            for name in (
                "incidents_total",
                HEADLINE_GROUP,
                "incidents_prev",
                "change_prev_pct",
                "solved_rate_pct",
                "not_notified_pct",
                "night_share_pct",
            ):
                assert figures[name] == pytest.approx(published[name], abs=1e-3), (
                    nodes,
                    figures["period"],
                    name,
                )


def test_line_chart_geometry():
    chart = line_chart(
        [{"period": "2026-W01", "a": 0}, {"period": "2026-W02", "a": 7}, {"period": "2026-W03"}],
        ["a"],
        width=300,
        height=120,
    )
    assert nice_ceiling(7) == 10 and nice_ceiling(0) == 1 and nice_ceiling(21) == 50
    dots = chart["lines"][0]["dots"]
    assert [d["value"] for d in dots] == [0, 7, 0]
    assert dots[0]["y"] == chart["bottom"] and dots[2]["y"] == chart["bottom"]
    assert chart["top"] < dots[1]["y"] < chart["bottom"]
    assert dots[0]["x"] == chart["left"] and dots[-1]["x"] == chart["right"]
    assert [t["value"] for t in chart["ticks"]] == [0, 5, 10]
    assert [label["text"] for label in chart["labels"]] == ["W01", "W02", "W03"]
    assert chart["lines"][0]["points"].count(",") == 3
    # A running period is drawn apart: the full line stops before it, a dashed segment joins.
    running = line_chart(
        [{"period": "2026-11", "a": 9}, {"period": "2026-12", "a": 2, "current": True}], ["a"]
    )["lines"][0]
    assert running["points"].count(",") == 1 and running["partial"].count(",") == 2
    assert running["partial"].startswith(running["points"])
    empty = line_chart([], ["a"])
    assert empty["lines"][0]["dots"] == [] and [t["value"] for t in empty["ticks"]] == [0, 1]


# -- alerts -----------------------------------------------------------------------------------


def test_no_alerts_where_nothing_happened(app):
    engine = _engine(app)
    tree, county = _scope(app, "county", COUNTY)
    # Spring 2026: before every incident of the web county, with no cameras and no teams.
    found = overview_alerts(engine, tree, county, _settings(app).area_levels, date(2026, 3, 1))
    assert found["count"] == 0
    assert found["rising_categories"]["rows"] == [] and found["hotspots"]["rows"] == []
    assert found["not_notified"]["rows"] == []
    assert found["cameras"]["townships"] == [] and found["teams"]["inactive"] == []


def test_solved_cases_without_notification_per_township(app):
    engine = _engine(app)
    levels = _settings(app).area_levels
    tree, county = _scope(app, "county", COUNTY)
    from gridwatch.alerts import alert_areas

    # A1 (东城镇) and B1 (西山乡) were solved in 2026Q3 and nobody told the victim.
    found = not_notified(engine, alert_areas(tree, county, levels), date(2026, 10, 15))
    assert found["periods"] == ["2026Q3", "2026Q4"]
    assert [(r["name"], r["count"], r["solved"]) for r in found["rows"]] == [
        ("东城镇", 1, 1),
        ("西山乡", 1, 1),
    ]
    tree, town_a = _scope(app, "township", TOWNSHIP_A)
    assert alert_areas(tree, town_a, levels) == [tree.by_code[TOWNSHIP_A]]
    only_a = not_notified(engine, alert_areas(tree, town_a, levels), date(2026, 10, 15))
    assert [r["code"] for r in only_a["rows"]] == [TOWNSHIP_A]
    # Two quarters later the cases are out of the window.
    later = not_notified(engine, alert_areas(tree, county, levels), date(2027, 6, 1))
    assert later["rows"] == [] and later["total"] == 0


def _rows(lines: list[str]) -> str:
    return "id,occurred_at,category,lon,lat,source,status\n" + "\n".join(lines) + "\n"


def test_rising_categories_fire_on_a_rise_and_only_for_its_township(app, tmp_path):
    today = date(2026, 10, 20)  # last complete week 2026-W42; windows W39–W42 and W35–W38
    assert last_complete_week(today).label == "2026-W42"
    a, b = "104.005,30.005", "104.005,30.015"  # a point in each township
    lines = [f"F{i},2026-10-0{i + 1} 10:00,fraud,{a},call_110,reported" for i in range(4)]
    # Snatching: three now and three before in A — no rise, no alert.
    lines += [f"S{i},2026-10-0{i + 1} 12:00,snatching,{a},call_110,reported" for i in range(3)]
    lines += [f"T{i},2026-09-0{i + 1} 12:00,snatching,{a},call_110,reported" for i in range(3)]
    # Thefts in B: three now, none before.
    lines += [f"H{i},2026-10-1{i} 08:00,theft,{b},call_110,reported" for i in range(3)]
    # Gambling in B: two now — under the minimum of three.
    lines += [f"G{i},2026-10-1{i} 23:00,gambling,{b},patrol,reported" for i in range(2)]
    _import(app, tmp_path, "incidents", _rows(lines))
    _aggregate(app)
    engine = _engine(app)

    tree, county = _scope(app, "county", COUNTY)
    found = rising_categories(engine, _roots(tree, county), today)
    assert found["recent"] == ("2026-W39", "2026-W42")
    assert found["earlier"] == ("2026-W35", "2026-W38")
    assert {r["category"]: (r["recent"], r["earlier"]) for r in found["rows"]} == {
        "fraud": (4, 0),
        "theft": (3, 0),
    }
    tree, town_a = _scope(app, "township", TOWNSHIP_A)
    assert [
        r["category"] for r in rising_categories(engine, _roots(tree, town_a), today)["rows"]
    ] == ["fraud"]
    tree, town_b = _scope(app, "township", TOWNSHIP_B)
    assert [
        r["category"] for r in rising_categories(engine, _roots(tree, town_b), today)["rows"]
    ] == ["theft"]
    # A rise of 50 % is the default bar; a stricter rule keeps 3-against-0 out.
    strict = rising_categories(engine, _roots(tree, town_b), today, AlertRules(rising_min_count=4))
    assert strict["rows"] == []


def test_camera_and_team_alerts_are_scoped_and_escaped(app, client, tmp_path):
    now = datetime.now(UTC)
    _import(
        app,
        tmp_path,
        "cameras",
        "id,name,lon,lat,status\n"
        "CA1,东城路口,104.005,30.005,离线\n"
        "CA2,东城市场,104.015,30.005,在线\n"
        "CB1,西山桥头,104.005,30.015,在线\n",
    )
    _import(
        app,
        tmp_path,
        "teams",
        "code,name,kind,home_area_code,members\n"
        f'TA,"{HOSTILE_TEAM.replace(chr(34), chr(34) * 2)}",township,{TOWNSHIP_A},6\n'
        f"TB,西山巡防队,township,{TOWNSHIP_B},5\n",
    )
    pings = "team_code,ts,lon,lat\n" + "".join(
        f"TB,{(now - timedelta(hours=30 - i)).strftime('%Y-%m-%dT%H:%M:%SZ')},104.005,30.015\n"
        for i in range(3)
    )
    _import(app, tmp_path, "patrols", pings)
    _aggregate(app)
    engine, levels = _engine(app), _settings(app).area_levels
    today = datetime.now(_settings(app).timezone).date()

    tree, county = _scope(app, "county", COUNTY)
    found = overview_alerts(engine, tree, county, levels, today)
    assert [(t["name"], t["not_working"], t["total"]) for t in found["cameras"]["townships"]] == [
        ("东城镇", 1, 2)
    ]
    assert [t["code"] for t in found["teams"]["inactive"]] == ["TA"]
    tree, town_b = _scope(app, "township", TOWNSHIP_B)
    quiet = overview_alerts(engine, tree, town_b, levels, today)
    assert quiet["cameras"]["townships"] == [] and quiet["teams"]["inactive"] == []

    login(client, "town_a")
    html = client.get("/").get_data(as_text=True)
    assert "alert-cameras" in html and "alert-teams" in html
    assert (
        HOSTILE_TEAM not in html and "&lt;script&gt;alert(&#34;team&#34;)&lt;/script&gt;" in html
    )
    other = app.test_client()
    login(other, "town_b")
    html_b = other.get("/").get_data(as_text=True)
    assert "alert-cameras" not in html_b and "alert-teams" not in html_b
    assert "alert(&#34;team&#34;)" not in html_b and "东城镇" not in html_b


def test_overview_lists_a_recent_unnotified_case_for_its_township_only(app, client, tmp_path):
    tz = _settings(app).timezone
    when = (datetime.now(tz) - timedelta(days=3)).strftime("%Y-%m-%d %H:%M")
    _import(
        app,
        tmp_path,
        "incidents",
        "id,occurred_at,category,lon,lat,source,status,solved_at\n"
        f"N1,{when},theft,104.005,30.005,call_110,solved,{when}\n",
    )
    _aggregate(app)
    login(client, "town_a")
    html = client.get("/").get_data(as_text=True)
    victims = re.findall(r'<li class="alert alert-victims">(.*?)</li>', html, re.S)
    assert len(victims) == 1 and "东城镇" in victims[0]
    other = app.test_client()
    login(other, "town_b")
    html_b = other.get("/").get_data(as_text=True)
    assert all("东城镇" not in v for v in re.findall(r"alert-victims\">(.*?)</li>", html_b, re.S))


def test_hot_spot_alert_only_for_new_or_intensifying_grids(settings, tmp_path):
    """A 6 × 6 county: a cluster appears in the last complete week in one corner only."""
    import geopandas as gpd
    from shapely.geometry import box

    from gridwatch.alerts import rising_hotspots
    from gridwatch.ingest import import_file
    from gridwatch.storage import create_db_engine, upgrade_database
    from gridwatch.workers.engine import RunRequest, run_eager

    engine = create_db_engine(settings.database_url)
    try:
        upgrade_database(engine)
        x0, y0, d, n = 110.0, 25.0, 0.01, 6
        rows = [("450000000000", "热点县", "county", None, box(x0, y0, x0 + n * d, y0 + n * d))]
        half = n // 2
        for t, (tx, name) in enumerate(((0, "左镇"), (half, "右镇"))):
            code = f"45000000{t + 1}000"
            rows.append(
                (
                    code,
                    name,
                    "township",
                    "450000000000",
                    box(x0 + tx * d, y0, x0 + (tx + half) * d, y0 + n * d),
                )
            )
            village = f"45000000{t + 1}001"
            rows.append(
                (
                    village,
                    name + "村",
                    "village",
                    code,
                    box(x0 + tx * d, y0, x0 + (tx + half) * d, y0 + n * d),
                )
            )
            for i in range(half):
                for j in range(n):
                    cell = box(
                        x0 + (tx + i) * d, y0 + j * d, x0 + (tx + i + 1) * d, y0 + (j + 1) * d
                    )
                    rows.append(
                        (f"{village}{i}{j:02d}", f"{name}网格{i}{j}", "grid", village, cell)
                    )
        frame = gpd.GeoDataFrame(
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
        grids = tmp_path / "hot.geojson"
        frame.to_file(grids, driver="GeoJSON")
        import_file("grids", grids, settings, engine)
        today = datetime.now(settings.timezone).date()
        last = last_complete_week(today)
        lines = []
        # Background: one incident in every grid in each of the six weeks before the last.
        week = last
        for back in range(1, 7):
            week = week.previous()
            for i in range(n):
                for j in range(n):
                    lon, lat = x0 + (i + 0.5) * d, y0 + (j + 0.5) * d
                    lines.append(
                        f"W{back}-{i}{j},{week.start} 10:00,theft,{lon},{lat},call_110,reported"
                    )
        # The last complete week: background again, plus 15 more in each of the four grids of
        # the bottom-left corner of the left township.
        for i in range(n):
            for j in range(n):
                lon, lat = x0 + (i + 0.5) * d, y0 + (j + 0.5) * d
                extra = 16 if i < 2 and j < 2 else 1
                for k in range(extra):
                    lines.append(
                        f"L-{i}{j}-{k},{last.start} 1{k % 10}:00,theft,{lon},{lat},"
                        "call_110,reported"
                    )
        incidents = tmp_path / "hot.csv"
        incidents.write_text(_rows(lines), "utf-8")
        import_file("incidents", incidents, settings, engine)
        run_eager(engine, settings, RunRequest(trigger="test", full=True))

        levels = settings.area_levels
        tree = load_tree(engine)
        county = jurisdiction_of(engine, "county", tree.by_code["450000000000"].id, None, tree)
        found = rising_hotspots(engine, tree, county, levels, today)
        assert found["week"] == last.label
        corner = {f"450000001001{i}{j:02d}" for i in range(2) for j in range(2)}
        assert found["rows"], "the corner cluster should be a new hot spot"
        assert {r["code"] for r in found["rows"]} <= corner | {
            f"450000001001{i}{j:02d}" for i in range(3) for j in range(3)
        }
        assert all(r["hotspot_class"] in ("new", "intensifying") for r in found["rows"])
        assert all(r["parent"] == "左镇村" for r in found["rows"])
        # The other township sees none of them; a rule asking for persistent spots finds none.
        right = jurisdiction_of(engine, "township", tree.by_code["450000002000"].id, None, tree)
        assert rising_hotspots(engine, tree, right, levels, today)["rows"] == []
        persistent = AlertRules(hotspot_classes=("persistent",))
        assert rising_hotspots(engine, tree, county, levels, today, persistent)["rows"] == []
    finally:
        engine.dispose()
