"""The area pages' own maps and the JSON API's data endpoints.

On the two-township county of tests/web_support.py: every endpoint answers with the caller's
areas only (another township's area answers 404, a role that may not answers 403), matches
the CLI or the domain function it adapts, and conforms to the schema its OpenAPI document
publishes.
"""

from __future__ import annotations

import gzip
import io
import json
import re

import pytest
from openapi_schema_validator import OAS30Validator, validate
from web_support import (
    COUNTY,
    GRIDS_A,
    GRIDS_B,
    INCIDENTS_A,
    INCIDENTS_B,
    TOWNSHIP_A,
    TOWNSHIP_B,
    VILLAGE_A,
    VILLAGE_B,
    login,
)

from gridwatch.accounts import issue_token

PERIOD = "2026Q3"
#: A month with 90 days of history before it and the whole month over.
FORECAST_PERIOD = "2026-10"


def engine_of(app):
    return app.extensions["gridwatch"].engine


def settings_of(app):
    return app.extensions["gridwatch"].settings


def bearer(app, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(engine_of(app), user)}"}


def conforms(client, path: str, body) -> None:
    """Assert that ``body`` matches the 200 schema the OpenAPI document gives for ``path``."""
    document = client.get("/api/v1/openapi.json").get_json()
    ok = document["paths"][path]["get"]["responses"]["200"]
    schema = ok["content"]["application/json"]["schema"]
    validate(body, {**schema, "components": document["components"]}, cls=OAS30Validator)


def codes(rows, key: str = "grid_code") -> set[str]:
    return {row[key] for row in rows}


def import_rows(app, kind: str, name: str, text: str) -> None:
    from gridwatch.ingest import import_file

    path = settings_of(app).var_dir / name
    path.write_text(text, "utf-8")
    summary = import_file(kind, path, settings_of(app), engine_of(app))
    assert summary.rejected == 0, summary


# -- the area pages' maps --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "own", "other"),
    [
        (TOWNSHIP_B, GRIDS_B, GRIDS_A),
        (VILLAGE_A, GRIDS_A, GRIDS_B),
        (GRIDS_A[1], GRIDS_A[1:], (GRIDS_A[0], *GRIDS_B)),
    ],
)
def test_area_page_map_shows_that_areas_grids_heat_cameras_and_hot_spots(client, code, own, other):
    login(client, "county")
    page = client.get(f"/areas/{code}").get_data(as_text=True)
    src = re.search(r'<iframe class="map-frame map-frame-small"[^>]*src="([^"]+)"', page, re.S)
    assert src, "no map on the area page"
    url = src.group(1).replace("&amp;", "&")
    assert url.startswith("/map/frame?") and f"area={code}" in url and "level=grid" in url
    assert "layers=heat,choropleth,hotspots,cameras" in url
    response = client.get(url)
    assert response.status_code == 200
    assert "'nonce-" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    # The grid polygons are fetched when the choropleth draws: as the browser would.
    urls = sorted(
        {
            json.loads(u)
            for u in re.findall(
                r'GridWatchMap\.lazyGeoJson\(("/map/layers/polygons\.json\?[^"]+")', html
            )
        }
    )
    assert urls and all(f"area={code}" in u for u in urls)
    fetched = []
    for polygons_url in urls:
        answer = client.get(polygons_url)
        assert answer.status_code == 200, polygons_url
        body = answer.get_data()
        if answer.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        fetched.append(body.decode())
    shown = html + "".join(fetched)
    for grid in own:
        assert f'"code":"{grid}"' in shown
    for grid in other:
        assert grid not in shown
    # The cameras switched on are fetched for this area only.
    assert f"/map/layers/cameras.json?area={code}" in html
    # "Open the map" keeps the same focus and layers.
    link = re.search(r'href="(/map\?[^"]+)"', page).group(1).replace("&amp;", "&")
    assert f"area={code}" in link and "layers=heat,choropleth,hotspots,cameras" in link


def test_area_page_of_another_township_is_404_and_so_is_its_map(client):
    login(client, "town_a")
    assert client.get(f"/areas/{TOWNSHIP_B}").status_code == 404
    assert client.get("/map/frame", query_string={"area": VILLAGE_B}).status_code == 404


# -- the OpenAPI document --------------------------------------------------------------------


def test_openapi_document_describes_the_data_endpoints(client):
    from openapi_spec_validator import validate as validate_spec

    document = client.get("/api/v1/openapi.json").get_json()
    validate_spec(document)
    paths = ("/hotspots", "/forecasts", "/incidents", "/cameras", "/patrols", "/imports")
    for path in paths:
        operation = document["paths"][path]["get"]
        assert {"200", "401", "404"} <= set(operation["responses"]), path
    assert "403" in document["paths"]["/cameras"]["get"]["responses"]
    category = next(
        p for p in document["paths"]["/incidents"]["get"]["parameters"] if p["name"] == "category"
    )
    assert "theft" in category["schema"]["enum"]
    # The older paths are still there.
    assert {"/areas", "/metrics", "/runs", "/geo/hotspots"} <= set(document["paths"])


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/hotspots?period={PERIOD}",
        f"/api/v1/forecasts?period={FORECAST_PERIOD}",
        "/api/v1/incidents",
        "/api/v1/cameras",
        f"/api/v1/patrols?period={PERIOD}",
        "/api/v1/imports",
    ],
)
def test_data_endpoints_need_a_sign_in(client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert response.get_json()["error"]["status"] == 401


# -- hot spots -------------------------------------------------------------------------------


def test_hotspots_are_the_published_grid_results_of_the_callers_grids(client, app):
    from gridwatch.workers.engine import read_metrics

    published = {r["area_code"]: r for r in read_metrics(engine_of(app), "grid", PERIOD)}
    login(client, "county")
    rows = client.get(f"/api/v1/hotspots?period={PERIOD}").get_json()
    assert [r["grid_code"] for r in rows] == sorted((*GRIDS_A, *GRIDS_B))
    for row in rows:
        source = published[row["grid_code"]]
        for key in ("hotspot", "gi_star_z", "gi_star_q", "hotspot_class", "incidents_total"):
            assert row[key] == source[key], key
    assert sum(r["incidents_total"] for r in rows) == INCIDENTS_A + INCIDENTS_B
    conforms(client, "/hotspots", rows)

    headers = bearer(app, "town_a")
    own = client.get(f"/api/v1/hotspots?period={PERIOD}", headers=headers).get_json()
    assert codes(own) == set(GRIDS_A)
    one = client.get(f"/api/v1/hotspots?period={PERIOD}&area={GRIDS_A[0]}", headers=headers)
    assert codes(one.get_json()) == {GRIDS_A[0]}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"period={PERIOD}&area={TOWNSHIP_B}", 404),
        (f"period={PERIOD}&area={GRIDS_B[0]}", 404),
        (f"period={PERIOD}&area=999", 404),
        ("", 400),
        ("period=2026Q5", 400),
    ],
)
def test_hotspots_refuse_other_areas_and_bad_periods(client, app, query, status):
    response = client.get(f"/api/v1/hotspots?{query}", headers=bearer(app, "town_a"))
    assert response.status_code == status
    assert response.get_json()["error"]["status"] == status


# -- forecasts -------------------------------------------------------------------------------


def test_forecasts_are_the_cli_forecast_cut_to_the_callers_areas(client, app, runner):
    cli = runner.invoke(["forecast", "--level", "grid", "--period", FORECAST_PERIOD, "--json"])
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.output)
    login(client, "county")
    whole = client.get(f"/api/v1/forecasts?level=grid&period={FORECAST_PERIOD}").get_json()
    assert whole == expected
    assert whole["scorecard"] and {r["area_code"] for r in whole["forecast"]} == {
        *GRIDS_A,
        *GRIDS_B,
    }
    conforms(client, "/forecasts", whole)

    headers = bearer(app, "town_a")
    own = client.get(f"/api/v1/forecasts?period={FORECAST_PERIOD}", headers=headers).get_json()
    assert own["forecast"] == [r for r in expected["forecast"] if r["area_code"] in GRIDS_A]
    assert own["scorecard"] == expected["scorecard"]
    township = client.get(
        f"/api/v1/forecasts?level=township&period={FORECAST_PERIOD}", headers=headers
    ).get_json()
    assert [r["area_code"] for r in township["forecast"]] == [TOWNSHIP_A]
    county = client.get(
        f"/api/v1/forecasts?level=county&period={FORECAST_PERIOD}", headers=headers
    ).get_json()
    assert county["forecast"] == []  # the county's total is not a township's to see


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"period={FORECAST_PERIOD}&area={TOWNSHIP_B}", 404),
        (f"period={FORECAST_PERIOD}&level=planet", 400),
        ("level=grid", 400),
        ("period=2026-07", 400),  # fewer than 28 days of history before July
    ],
)
def test_forecasts_refuse_other_areas_and_bad_parameters(client, app, query, status):
    response = client.get(f"/api/v1/forecasts?{query}", headers=bearer(app, "town_a"))
    assert response.status_code == status
    assert response.get_json()["error"]["message"]


# -- incidents -------------------------------------------------------------------------------

PRIVATE_TEXT = "受害人王某某 13800001111"


def _add_private_incident(app) -> None:
    import_rows(
        app,
        "incidents",
        "private.csv",
        "id,occurred_at,category,lon,lat,address,description,status\n"
        f"A9,2026-09-20 08:00,theft,104.015,30.005,幸福路88号3单元,{PRIVATE_TEXT},solved\n",
    )


def test_incidents_give_cases_without_victim_details_to_roles_that_may_see_cases(client, app):
    _add_private_incident(app)
    login(client, "county")
    first = client.get("/api/v1/incidents?per_page=2").get_json()
    assert first["detail"] is True
    assert (first["total"], first["pages"], len(first["items"])) == (6, 3, 2)
    seen = []
    for page in (1, 2, 3):
        body = client.get(f"/api/v1/incidents?per_page=2&page={page}").get_json()
        conforms(client, "/incidents", body)
        seen += [item["id"] for item in body["items"]]
    assert sorted(seen) == ["A1", "A2", "A3", "A9", "B1", "B2"]
    text = client.get("/api/v1/incidents").get_data(as_text=True)
    assert PRIVATE_TEXT not in text and "幸福路" not in text
    assert "104.015" not in text and "description" not in text and "address" not in text

    station = client.get("/api/v1/incidents", headers=bearer(app, "station")).get_json()
    assert station["detail"] is True
    assert sorted(i["id"] for i in station["items"]) == ["A1", "A2", "A3", "A9"]
    assert {i["grid_code"] for i in station["items"]} <= set(GRIDS_A)


def test_incidents_filter_by_area_dates_and_category(client):
    login(client, "county")

    def ids(query: str) -> list[str]:
        return sorted(
            i["id"] for i in client.get(f"/api/v1/incidents?{query}").get_json()["items"]
        )

    assert ids("category=theft") == ["A1", "A2"]
    assert ids(f"area={TOWNSHIP_B}") == ["B1", "B2"]
    assert ids("from=2026-07-04&to=2026-08-04") == ["A2", "B1"]
    assert ids(f"area={GRIDS_A[0]}&category=burglary") == ["A3"]


def test_incidents_are_counts_per_grid_and_category_for_township_users(client, app):
    _add_private_incident(app)
    headers = bearer(app, "town_a")
    body = client.get("/api/v1/incidents", headers=headers).get_json()
    conforms(client, "/incidents", body)
    assert body["detail"] is False and body["filters"]["by"] == "grid"
    counts = {(r["area_code"], r["category"]): r["incidents"] for r in body["items"]}
    assert counts == {
        (GRIDS_A[0], "theft"): 1,
        (GRIDS_A[0], "burglary"): 1,
        (GRIDS_A[1], "theft"): 2,
    }
    assert all("id" not in r and "occurred_at" not in r for r in body["items"])
    text = client.get("/api/v1/incidents", headers=headers).get_data(as_text=True)
    assert PRIVATE_TEXT not in text and "B1" not in text
    paged = client.get("/api/v1/incidents?per_page=2&page=2", headers=headers).get_json()
    assert paged["total"] == 3 and paged["pages"] == 2 and len(paged["items"]) == 1
    village = client.get("/api/v1/incidents?by=village", headers=headers).get_json()
    assert [(r["area_code"], r["incidents"]) for r in village["items"]] == [
        (VILLAGE_A, 1),
        (VILLAGE_A, 3),
    ]
    # A township user may not count their county (it is more than their share).
    assert client.get("/api/v1/incidents?by=county", headers=headers).status_code == 400


@pytest.mark.parametrize(
    ("query", "status"),
    [
        (f"area={TOWNSHIP_B}", 404),
        (f"area={GRIDS_B[1]}", 404),
        ("category=piracy", 400),
        ("from=2026-13-01", 400),
        ("from=2026-09-01&to=2026-08-01", 400),
        ("per_page=0", 400),
        ("per_page=5000", 400),
        ("page=abc", 400),
    ],
)
def test_incidents_refuse_other_areas_and_bad_filters(client, app, query, status):
    response = client.get(f"/api/v1/incidents?{query}", headers=bearer(app, "town_a"))
    assert response.status_code == status
    assert response.get_json()["error"]["message"]


# -- cameras ---------------------------------------------------------------------------------


def _add_cameras(app) -> None:
    import_rows(
        app,
        "cameras",
        "cameras.csv",
        "id,name,lon,lat,type,status\n"
        "CA1,东城路口,104.005,30.005,checkpoint,online\n"
        "CA2,东城小学,104.015,30.005,hd,offline\n"
        "CB1,西山市场,104.005,30.015,standard,broken\n",
    )


def test_cameras_of_the_callers_grids_with_filters(client, app):
    _add_cameras(app)
    login(client, "county")
    body = client.get("/api/v1/cameras").get_json()
    conforms(client, "/cameras", body)
    assert [c["id"] for c in body["items"]] == ["CA1", "CA2", "CB1"]
    assert body["items"][0]["grid_code"] == GRIDS_A[0]
    assert body["items"][0]["lon"] == 104.005
    broken = client.get("/api/v1/cameras?status=not_working").get_json()
    assert [c["id"] for c in broken["items"]] == ["CA2", "CB1"]
    paged = client.get("/api/v1/cameras?per_page=2&page=2").get_json()
    assert (paged["total"], paged["pages"], [c["id"] for c in paged["items"]]) == (3, 2, ["CB1"])

    headers = bearer(app, "town_a")
    own = client.get("/api/v1/cameras", headers=headers).get_json()
    assert [c["id"] for c in own["items"]] == ["CA1", "CA2"]
    assert client.get(f"/api/v1/cameras?area={TOWNSHIP_B}", headers=headers).status_code == 404
    assert client.get("/api/v1/cameras?status=melted", headers=headers).status_code == 400
    # The wall screen's viewer reads no camera list.
    assert client.get("/api/v1/cameras", headers=bearer(app, "screen")).status_code == 403


# -- patrols ---------------------------------------------------------------------------------


def test_patrols_give_team_activity_and_grid_dosage_of_the_callers_areas(client, app):
    from gridwatch.workers.engine import RunRequest, run_eager

    import_rows(
        app,
        "teams",
        "teams.csv",
        "code,name,kind,home_area_code,members\n"
        f"TA,东一村巡防队,village,{VILLAGE_A},6\n"
        f"TB,西山乡巡防队,township,{TOWNSHIP_B},8\n",
    )
    # Team TA walks 40 minutes in the first grid of A two days ago; TB never patrols.
    pings = "\n".join(
        f"TA,2026-11-20 09:{minute:02d},104.005,30.005" for minute in range(0, 42, 2)
    )
    import_rows(app, "patrols", "pings.csv", "team_code,ts,lon,lat\n" + pings + "\n")
    run_eager(engine_of(app), settings_of(app), RunRequest(trigger="test", full=True))

    login(client, "county")
    body = client.get("/api/v1/patrols?period=2026-11").get_json()
    conforms(client, "/patrols", body)
    teams = {t["code"]: t for t in body["teams"]}
    assert set(teams) == {"TA", "TB"} and body["teams_total"] == 2
    assert teams["TA"]["inactive"] is False and teams["TA"]["active_days"] == 1
    assert teams["TA"]["home_code"] == VILLAGE_A
    assert teams["TB"]["inactive"] is True and teams["TB"]["last_patrol_at"] is None
    assert body["teams_inactive"] == 1
    dosage = {g["grid_code"]: g["patrol_minutes"] for g in body["grids"]}
    assert set(dosage) == {*GRIDS_A, *GRIDS_B}
    assert dosage[GRIDS_A[0]] == pytest.approx(40, abs=2)
    assert all(dosage[g] == 0 for g in (GRIDS_A[1], *GRIDS_B))

    headers = bearer(app, "town_b")
    own = client.get("/api/v1/patrols?period=2026-11", headers=headers).get_json()
    assert [t["code"] for t in own["teams"]] == ["TB"]
    assert codes(own["grids"]) == set(GRIDS_B)
    assert (
        client.get(f"/api/v1/patrols?period=2026-11&area={VILLAGE_A}", headers=headers).status_code
        == 404
    )
    assert client.get("/api/v1/patrols", headers=headers).status_code == 400


# -- imports ---------------------------------------------------------------------------------


def test_imports_history_is_every_batch_for_the_county_and_own_uploads_for_a_township(client, app):
    county = client.get("/api/v1/imports", headers=bearer(app, "county")).get_json()
    conforms(client, "/imports", county)
    assert [b["kind"] for b in county] == ["incidents", "stations", "grids"]
    assert county[0]["imported"] == INCIDENTS_A + INCIDENTS_B
    assert county[0]["started_at"].endswith("Z") and county[0]["report"] is None
    town_a, town_b = bearer(app, "town_a"), bearer(app, "town_b")
    assert client.get("/api/v1/imports", headers=town_a).get_json() == []

    upload = io.BytesIO(
        b"id,occurred_at,category,lon,lat\nA20,2026-10-01 08:00,theft,104.005,30.005\n"
        b"A21,2026-10-01 09:00,piracy,104.005,30.005\n"
    )
    response = client.post(
        "/api/v1/imports/incidents",
        data={"file": (upload, "东城十月.csv")},
        headers=town_a,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    own = client.get("/api/v1/imports", headers=town_a).get_json()
    assert len(own) == 1
    assert own[0]["file_name"] == "东城十月.csv" and own[0]["uploaded_by"] == "town_a"
    assert (own[0]["imported"], own[0]["rejected"]) == (1, 1)
    assert own[0]["report"] == f"/imports/{own[0]['id']}/rejected.csv"
    # Another township does not see it; the county does, newest first.
    assert client.get("/api/v1/imports", headers=town_b).get_json() == []
    assert (
        client.get("/api/v1/imports?limit=1", headers=bearer(app, "county")).get_json()[0]["id"]
        == own[0]["id"]
    )
    assert client.get("/api/v1/imports", headers=bearer(app, "screen")).status_code == 403
    assert client.get("/api/v1/imports?limit=0", headers=town_a).status_code == 400


def test_county_token_sees_a_township_through_area_but_a_station_not_the_other(client, app):
    headers = bearer(app, "station")
    for path in (
        f"/api/v1/hotspots?period={PERIOD}&area={TOWNSHIP_B}",
        f"/api/v1/incidents?area={VILLAGE_B}",
        f"/api/v1/cameras?area={TOWNSHIP_B}",
        f"/api/v1/patrols?period={PERIOD}&area={TOWNSHIP_B}",
        f"/api/v1/forecasts?period={FORECAST_PERIOD}&area={GRIDS_B[0]}",
    ):
        assert client.get(path, headers=headers).status_code == 404, path
    county = bearer(app, "county")
    hot = client.get(f"/api/v1/hotspots?period={PERIOD}&area={TOWNSHIP_B}", headers=county)
    assert codes(hot.get_json()) == set(GRIDS_B)
    whole = client.get(f"/api/v1/hotspots?period={PERIOD}&area={COUNTY}", headers=county)
    assert len(whole.get_json()) == 4
