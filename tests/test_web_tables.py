"""Data tables: sign-in, jurisdiction through filters and exports, roles, escaping, exports.

Exports are read back (CSV with the csv module, XLSX with openpyxl) and compared with the
rows in the database, and every export must leave an audit record.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from web_support import GRIDS_A, HOSTILE_NAME, TOWNSHIP_A, TOWNSHIP_B, VILLAGE_A, login

from gridwatch.accounts import recent_events
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Camera, Incident
from gridwatch.tables import EXPORT_ROW_LIMIT, Table, TableError, export_table

HOSTILE = "<script>alert('t')</script>"
FORMULA_NAME = '=HYPERLINK("http://evil.example/x","点这里")'
VICTIM_TEXT = "受害人张三，电话13800000000"
VICTIM_ADDRESS = "东城镇幸福路8号2单元301"

PAGES = ("/tables/metrics", "/tables/incidents", "/tables/cameras")
EXPORTS = tuple(f"{page}.{fmt}" for page in PAGES for fmt in ("csv", "xlsx"))


def _engine(app):
    return app.extensions["gridwatch"].engine


def _import(app, tmp_path: Path, kind: str, text: str) -> None:
    from gridwatch.ingest import import_file

    path = tmp_path / f"{kind}.csv"
    path.write_text(text, "utf-8")
    summary = import_file(kind, path, app.extensions["gridwatch"].settings, _engine(app))
    assert summary.rejected == 0, summary


@pytest.fixture
def hostile_data(app, tmp_path):
    """Cameras and an incident whose text is hostile HTML, a formula or a victim's details."""
    _import(
        app,
        tmp_path,
        "cameras",
        "id,name,lon,lat,status,owner\n"
        f'CA1,"{FORMULA_NAME.replace(chr(34), chr(34) * 2)}",104.005,30.005,离线,+cmd|calc\n'
        f'CA2,"{HOSTILE}",104.015,30.005,在线,@SUM(A1)\n'
        "CB1,西山桥头,104.005,30.015,故障,-2+3\n",
    )
    _import(
        app,
        tmp_path,
        "incidents",
        "id,occurred_at,category,lon,lat,source,status,address,description\n"
        f'=1+2,2026-09-20 10:00,theft,104.005,30.005,call_110,accepted,"{VICTIM_ADDRESS}",'
        f'"{VICTIM_TEXT}"\n',
    )


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/csv"
    raw = response.get_data()
    assert raw.startswith("\ufeff".encode())  # Chinese Excel needs the BOM
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))


def _xlsx(response):
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    sheet = load_workbook(io.BytesIO(response.get_data())).active
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    return [[cell.value for cell in row] for row in sheet.iter_rows()]


# -- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES + EXPORTS)
def test_sign_in_required(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_viewer_reads_figures_but_not_cameras_and_exports_nothing(client):
    login(client, "screen")
    assert client.get("/tables/metrics").status_code == 200
    assert client.get("/tables/cameras").status_code == 403
    for path in EXPORTS:
        assert client.get(path).status_code == 403, path
    html = client.get("/tables/incidents?from=2026-07-01").get_data(as_text=True)
    assert "<td>A1</td>" not in html and "按区域和类别统计" in html  # counts only


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_table_for_the_county(client):
    login(client, "county")
    html = client.get("/tables/metrics?level=township&period=2026Q3").get_data(as_text=True)
    assert "东城镇" in html and "西山乡" in html
    rows = _csv(client.get("/tables/metrics.csv?level=township&period=2026Q3"))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["编码", "名称"] and "警情数" in header
    counts = {r[0]: int(r[header.index("警情数")]) for r in body}
    assert counts == {TOWNSHIP_A: 3, TOWNSHIP_B: 2}
    grids = _csv(client.get(f"/tables/metrics.csv?level=grid&period=2026Q3&area={VILLAGE_A}"))
    assert sorted(r[0] for r in grids[1:]) == sorted(GRIDS_A)


def test_hostile_area_names_are_escaped_in_tables_and_filters(client):
    login(client, "county")
    for path in ("/tables/metrics?level=village&period=2026Q3", "/tables/incidents"):
        html = client.get(path).get_data(as_text=True)
        assert HOSTILE_NAME not in html, path
        assert "东一村&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html, path
    rows = _csv(client.get("/tables/metrics.csv?level=village&period=2026Q3"))
    assert HOSTILE_NAME in [r[1] for r in rows[1:]]  # a file keeps the text as it is


def test_metrics_table_never_shows_another_township(client):
    login(client, "town_a")
    html = client.get("/tables/metrics?level=township&period=2026Q3").get_data(as_text=True)
    assert "东城镇" in html and "西山乡" not in html
    rows = _csv(client.get("/tables/metrics.csv?level=grid&period=2026Q3"))
    assert sorted(r[0] for r in rows[1:]) == sorted(GRIDS_A)
    book = _xlsx(client.get("/tables/metrics.xlsx?level=township&period=2026Q3"))
    assert [r[0] for r in book[1:]] == [TOWNSHIP_A]
    # Asking for the other township by filter: as if it did not exist, page and export.
    for path in ("/tables/metrics", "/tables/metrics.csv", "/tables/metrics.xlsx"):
        assert client.get(f"{path}?period=2026Q3&area={TOWNSHIP_B}").status_code == 404


def test_bad_filters_give_one_sentence(client):
    login(client, "county")
    response = client.get("/tables/metrics?period=2026Q9")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "the period &#39;2026Q9&#39; is not like 2026" in html and "Traceback" not in html
    for query, words in (
        ("from=2026-13-01", "is not a date like"),
        ("category=nonsense", "unknown category"),
        ("from=2026-09-01&to=2026-08-01", "is after the to date"),
    ):
        response = client.get(f"/tables/incidents?{query}")
        assert response.status_code == 400 and words in response.get_data(as_text=True), query
        assert client.get(f"/tables/incidents.csv?{query}").status_code == 400
    assert client.get("/tables/cameras?status=melted").status_code == 400


# -- incidents --------------------------------------------------------------------------------


def _incident_ids_in(app, township_code: str | None = None) -> set[str]:
    from gridwatch.areas import load_tree

    tree = load_tree(_engine(app))
    with session_scope(_engine(app)) as session:
        rows = session.execute(select(Incident.source_id, Incident.grid_id)).all()
    if township_code is None:
        return {source_id for source_id, grid_id in rows if grid_id is not None}
    inside = tree.subtree(tree.by_code[township_code].id)
    return {source_id for source_id, grid_id in rows if grid_id in inside}


def test_county_exports_every_case_and_the_csv_matches_the_database(app, client, hostile_data):
    login(client, "county")
    rows = _csv(client.get("/tables/incidents.csv"))
    header = rows[0]
    assert header[:3] == ["编号", "发生时间", "类别"]
    ids = [r[0] for r in rows[1:]]
    assert {i.lstrip("'") for i in ids} == _incident_ids_in(app)
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert by_id["A1"]["类别"] == "盗窃" and by_id["A1"]["发生时间"] == "2026-07-03 09:00"
    assert by_id["B1"]["乡镇（街道）"] == "西山乡"
    # Formula injection: the id "=1+2" is written as text after an apostrophe.
    assert "'=1+2" in ids and "=1+2" not in ids
    # No victim details in any form of the table.
    text = "\n".join(",".join(r) for r in rows)
    book = _xlsx(client.get("/tables/incidents.xlsx"))
    page = client.get("/tables/incidents").get_data(as_text=True)
    for found in (text, str(book), page):
        assert VICTIM_TEXT not in found and VICTIM_ADDRESS not in found
        assert "13800000000" not in found
    assert {str(r[0]).lstrip("'") for r in book[1:]} == _incident_ids_in(app)
    assert "'=1+2" in [r[0] for r in book[1:]]


def test_station_sees_its_townships_cases_only(app, client):
    login(client, "station")  # PS01 covers 东城镇 only
    rows = _csv(client.get("/tables/incidents.csv"))
    assert {r[0] for r in rows[1:]} == _incident_ids_in(app, TOWNSHIP_A) == {"A1", "A2", "A3"}
    html = client.get("/tables/incidents").get_data(as_text=True)
    assert "<td>B1</td>" not in html and "西山乡" not in html
    assert client.get(f"/tables/incidents?area={TOWNSHIP_B}").status_code == 404
    assert client.get(f"/tables/incidents.xlsx?area={TOWNSHIP_B}").status_code == 404


def test_incident_filters(client):
    login(client, "county")

    def ids(query: str) -> set[str]:
        return {r[0] for r in _csv(client.get(f"/tables/incidents.csv?{query}"))[1:]}

    assert ids("category=theft") == {"A1", "A2"}
    assert ids("from=2026-08-01&to=2026-08-31") == {"A2", "B2"}
    assert ids("to=2026-07-03") == {"A1"}  # the to day is included
    assert ids(f"area={TOWNSHIP_B}") == {"B1", "B2"}
    assert ids("status=solved") == {"A1", "B1"}
    assert ids("status=solved_not_notified") == {"A1", "B1"}
    assert ids("status=reported&category=fraud") == {"B2"}


def test_township_gets_counts_not_cases(app, client):
    login(client, "town_a")
    html = client.get("/tables/incidents").get_data(as_text=True)
    assert "按区域和类别统计" in html
    rows = _csv(client.get("/tables/incidents.csv?by=township"))
    header = rows[0]
    assert header == ["编码", "名称", "类别", "警情数", "破案数", "破而不馈"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [
        (TOWNSHIP_A, "入室盗窃", "1"),
        (TOWNSHIP_A, "盗窃", "2"),
    ]
    grid_rows = _csv(client.get("/tables/incidents.csv"))  # default: per grid
    assert sum(int(r[3]) for r in grid_rows[1:]) == 3
    assert {r[0] for r in grid_rows[1:]} <= set(GRIDS_A)
    book = _xlsx(client.get("/tables/incidents.xlsx?by=village"))
    assert [r[0] for r in book[1:]] == [VILLAGE_A, VILLAGE_A]
    # Counts cannot be grouped above the user's own level (part of a county is not the county).
    assert client.get("/tables/incidents.csv?by=county").status_code == 400
    # No case ids anywhere, and the other township stays out of reach.
    assert all(f"<td>{i}</td>" not in html for i in ("A1", "A2", "A3"))
    assert client.get(f"/tables/incidents.csv?area={TOWNSHIP_B}").status_code == 404


# -- cameras ----------------------------------------------------------------------------------


def test_cameras_table_scoped_escaped_and_safe_to_open(app, client, hostile_data):
    login(client, "town_a")
    html = client.get("/tables/cameras").get_data(as_text=True)
    assert HOSTILE not in html and "&lt;script&gt;alert(&#39;t&#39;)&lt;/script&gt;" in html
    assert "<td>CB1</td>" not in html and "西山桥头" not in html
    assert '<td class="num">104.005000</td>' in html  # coordinates keep their six decimals
    rows = _csv(client.get("/tables/cameras.csv"))
    header = rows[0]
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert set(by_id) == {"CA1", "CA2"}
    with session_scope(_engine(app)) as session:
        stored = dict(session.execute(select(Camera.source_id, Camera.name)).all())
    assert stored["CA1"] == FORMULA_NAME  # stored as imported, escaped only on the way out
    assert by_id["CA1"]["名称"] == "'" + FORMULA_NAME
    assert by_id["CA1"]["建设单位"] == "'+cmd|calc" and by_id["CA2"]["建设单位"] == "'@SUM(A1)"
    assert by_id["CA1"]["状态"] == "离线" and by_id["CA2"]["状态"] == "在线"
    book = _xlsx(client.get("/tables/cameras.xlsx?status=offline"))
    assert [r[0] for r in book[1:]] == ["CA1"]
    assert book[1][1] == "'" + FORMULA_NAME
    assert client.get(f"/tables/cameras.csv?area={TOWNSHIP_B}").status_code == 404

    county = app.test_client()
    login(county, "county")
    ids = {r[0] for r in _csv(county.get("/tables/cameras.csv"))[1:]}
    assert ids == {"CA1", "CA2", "CB1"}
    not_working = _csv(county.get("/tables/cameras.csv?status=not_working"))
    assert {r[0] for r in not_working[1:]} == {"CA1", "CB1"}
    faulty = _csv(county.get("/tables/cameras.csv?status=broken"))
    assert [r[0] for r in faulty[1:]] == ["CB1"]
    assert faulty[1][header.index("建设单位")] == "'-2+3"


# -- audit --------------------------------------------------------------------------------------


def test_every_export_is_audited(app, client):
    login(client, "town_a")
    client.get("/tables/incidents.csv?category=theft")
    client.get("/tables/metrics.xlsx?level=township&period=2026Q3")
    client.get("/tables/metrics")  # looking is not exporting
    events = [e for e in recent_events(_engine(app)) if e["action"] == "export"]
    assert [e["target"] for e in events] == ["tables/metrics.xlsx", "tables/incidents.csv"]
    newest, first = events
    assert {e["username"] for e in events} == {"town_a"}
    assert first["detail"]["filters"] == {"category": "theft", "by": "grid"}
    assert first["detail"]["detail"] is False and first["detail"]["rows"] == 2
    assert newest["detail"]["filters"] == {"level": "township", "period": "2026Q3"}
    assert newest["detail"]["rows"] == 1 and newest["detail"]["format"] == "xlsx"


def test_export_refuses_more_rows_than_the_limit_and_records_nothing(app):
    from gridwatch.accounts import load_principal
    from gridwatch.storage.models import User

    engine = _engine(app)
    with session_scope(engine) as session:
        user_id = session.scalar(select(User.id).where(User.username == "county"))
    actor = load_principal(engine, user_id)
    table = Table("incidents", ("id",), [], EXPORT_ROW_LIMIT + 1)
    with pytest.raises(TableError, match="narrow the filters"):
        export_table(engine, table, "csv", ["编号"], [["x"]] * (EXPORT_ROW_LIMIT + 1), actor)
    assert not [e for e in recent_events(engine) if e["action"] == "export"]
    data = export_table(engine, table, "csv", ["编号"], [["x"]], actor)
    assert data.decode("utf-8-sig").splitlines() == ["编号", "x"]
    assert [e["target"] for e in recent_events(engine) if e["action"] == "export"] == [
        "tables/incidents.csv"
    ]


def test_tables_and_counts_on_sqlite_and_postgresql(loaded_county):
    """The tables' queries and the overview's block sums on both databases (conftest county)."""
    from datetime import date

    from gridwatch.areas import jurisdiction_of, load_tree
    from gridwatch.overview import area_counts, incident_counts
    from gridwatch.tables import IncidentFilters, incidents_table
    from gridwatch.workers.engine import RunRequest, run_eager

    engine, settings = loaded_county
    run_eager(engine, settings, RunRequest(trigger="test", full=True))
    tree = load_tree(engine)
    county = jurisdiction_of(engine, "county", tree.by_code["430000000000"].id, None, tree)
    levels, tz = settings.area_levels, settings.timezone
    cases = incidents_table(engine, tree, county, levels, "county", IncidentFilters(), tz)
    assert [r["id"] for r in cases.rows] == ["I3", "I2", "I1"] and cases.total == 3
    # I1 happened at 2026-06-30 16:30 UTC, which is 2026-07-01 00:30 in Shanghai.
    assert cases.rows[2]["occurred_at"] == "2026-07-01 00:30"
    july = IncidentFilters(date_from=date(2026, 7, 1), date_to=date(2026, 7, 31))
    assert incidents_table(engine, tree, county, levels, "county", july, tz).total == 2
    waiting = IncidentFilters(status="solved_not_notified")
    assert [
        r["id"] for r in incidents_table(engine, tree, county, levels, "county", waiting, tz).rows
    ] == ["I1"]
    counts = incidents_table(
        engine, tree, county, levels, "township", IncidentFilters(by="village"), tz
    )
    assert not counts.detail
    assert {
        (r["category"], r["incidents"], r["solved"], r["solved_not_notified"]) for r in counts.rows
    } == {
        ("theft", 1, 1, 1),
        ("burglary", 1, 0, 0),
        ("snatching", 1, 1, 0),
    }
    quarter = incident_counts(engine, [tree.by_code["430000001000"]], ["2026Q3", "2026Q2"])
    assert quarter["2026Q3"]["incidents_total"] == 3 and quarter["2026Q3"]["published"]
    assert quarter["2026Q3"]["incidents_by_group"]["two_robberies_one_theft"] == 3
    per_area = area_counts(
        engine, [tree.by_code["430000001000"]], ["2026Q3"], ["incidents_solved"]
    )
    assert per_area["2026Q3"]["430000001000"]["incidents_solved"] == 2
