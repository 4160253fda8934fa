"""The JSON API: bearer tokens, the OpenAPI document and the shape of its answers."""

from __future__ import annotations

import json

import pytest
from web_support import COUNTY, GRIDS_A, TOWNSHIP_A, TOWNSHIP_B, login

from gridwatch.accounts import issue_token, revoke_tokens, set_active
from gridwatch.storage import session_scope
from gridwatch.storage.models import ApiToken


def engine_of(app):
    return app.extensions["gridwatch"].engine


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_needs_authentication(client):
    for path in ("/api/v1/areas", f"/api/v1/areas/{COUNTY}", "/api/v1/runs"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.get_json()["error"]["status"] == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/api/v1/areas", headers=bearer("gw_not-a-token")).status_code == 401
    assert client.get("/api/v1/areas", headers=bearer("nonsense")).status_code == 401


def test_token_from_the_cli_is_accepted_and_revocable(client, runner, app):
    result = runner.invoke(["users", "token", "town_a", "--label", "tests"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("gw_") and len(token) > 40
    response = client.get("/api/v1/areas", headers=bearer(token))
    assert response.status_code == 200
    assert {a["code"] for a in response.get_json()} >= {TOWNSHIP_A}
    assert TOWNSHIP_B not in {a["code"] for a in response.get_json()}
    # Only the hash is stored.
    with session_scope(engine_of(app)) as session:
        stored = session.query(ApiToken).one()
        assert stored.token_sha256 != token and token not in stored.token_sha256
        assert len(stored.token_sha256) == 64
        assert stored.last_used_at is not None
    revoked = runner.invoke(["users", "token", "town_a", "--revoke"])
    assert revoked.exit_code == 0 and "revoked 1 token" in revoked.output
    assert client.get("/api/v1/areas", headers=bearer(token)).status_code == 401


def test_token_of_a_disabled_user_stops_working(client, app):
    token = issue_token(engine_of(app), "county")
    assert client.get("/api/v1/runs", headers=bearer(token)).status_code == 200
    set_active(engine_of(app), "county", False)
    assert client.get("/api/v1/runs", headers=bearer(token)).status_code == 401
    set_active(engine_of(app), "county", True)
    assert client.get("/api/v1/runs", headers=bearer(token)).status_code == 200
    assert revoke_tokens(engine_of(app), "county") == 1
    assert client.get("/api/v1/runs", headers=bearer(token)).status_code == 401


def test_token_is_not_a_page_login(client, app):
    token = issue_token(engine_of(app), "county")
    assert client.get("/", headers=bearer(token)).status_code == 302


def test_session_auth_works_for_the_api(client):
    login(client, "county")
    assert client.get("/api/v1/runs").status_code == 200


def test_openapi_document_is_valid_and_lists_the_paths(client):
    from openapi_spec_validator import validate

    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = json.loads(response.get_data(as_text=True))
    validate(document)
    assert {"/areas", "/areas/{code}", "/metrics", "/runs"} <= set(document["paths"])
    assert document["servers"] == [{"url": "/api/v1"}]
    level = next(
        p for p in document["paths"]["/metrics"]["get"]["parameters"] if p["name"] == "level"
    )
    assert level["schema"]["enum"] == ["county", "township", "village", "grid"]


def test_area_objects(client):
    login(client, "county")
    area = client.get(f"/api/v1/areas/{GRIDS_A[1]}").get_json()
    assert area == {
        "code": GRIDS_A[1],
        "name": "东一村第2网格",
        "level": "grid",
        "parent_code": "510000001001",
        "population": 1000,
        "bbox": [104.01, 30.0, 104.02, 30.01],
        "centroid": {"lon": 104.015, "lat": 30.005},
    }
    townships = client.get("/api/v1/areas?level=township").get_json()
    assert [a["code"] for a in townships] == [TOWNSHIP_A, TOWNSHIP_B]
    assert client.get("/api/v1/areas?level=planet").status_code == 400


def test_metrics_match_the_cli(client, runner):
    login(client, "county")
    api = client.get("/api/v1/metrics?level=grid&period=2026Q3").get_json()
    cli = runner.invoke(["metrics", "--level", "grid", "--period", "2026Q3", "--json"])
    assert cli.exit_code == 0, cli.output
    assert api == json.loads(cli.output)
    one = client.get(f"/api/v1/metrics?level=township&period=2026Q3&area={TOWNSHIP_A}")
    cli_one = runner.invoke(
        ["metrics", "--level", "township", "--period", "2026Q3", "--area", TOWNSHIP_A, "--json"]
    )
    assert one.get_json() == json.loads(cli_one.output)


@pytest.mark.parametrize(
    "query",
    [
        "period=2026Q3",
        "level=township",
        "level=township&period=2026Q5",
        "level=planet&period=2026Q3",
    ],
)
def test_metrics_bad_parameters_answer_400(client, query):
    login(client, "county")
    response = client.get(f"/api/v1/metrics?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["message"]


def test_runs(client):
    login(client, "county")
    runs = client.get("/api/v1/runs").get_json()
    assert runs and runs[0]["status"] == "done"
    assert client.get("/api/v1/runs?limit=0").status_code == 400
    assert client.get("/api/v1/runs?limit=abc").status_code == 400


def test_unknown_api_path_answers_json_404(client):
    login(client, "county")
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.get_json()["error"]["status"] == 404


def test_area_records_on_each_backend(loaded_county):
    from gridwatch.areas import area_records, jurisdiction_of, load_tree

    engine, _settings = loaded_county
    tree = load_tree(engine)
    township = tree.by_code["430000001000"]
    scope = jurisdiction_of(engine, "township", township.id, None, tree)
    records = area_records(engine, scope.area_ids)
    assert [r["code"] for r in records] == [
        "430000001000",
        "430000001001",
        "430000001001001",
        "430000001001002",
        "430000001001003",
        "430000001001004",
    ]
    grid = next(r for r in records if r["code"] == "430000001001004")
    assert grid["bbox"] == [113.01, 28.01, 113.02, 28.02]
    assert grid["centroid"] == {"lon": 113.015, "lat": 28.015}
    assert grid["parent_code"] == "430000001001" and grid["population"] == 1000
