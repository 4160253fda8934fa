"""Kept API answers (gridwatch.web.answers): the same answer as the app, never anyone else's."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update
from web_support import GRIDS_A, PASSWORD, TOWNSHIP_A, TOWNSHIP_B, login

from gridwatch import observability
from gridwatch.accounts import create_user, issue_token, revoke_tokens, set_active
from gridwatch.storage import session_scope
from gridwatch.storage.models import ApiToken, utcnow
from gridwatch.web import create_app
from gridwatch.web.answers import Answer, AnswerCache, AnswerStore

METRICS = "/api/v1/metrics?level=township&period=2026Q3"
GEO = "/api/v1/geo/metrics?level=grid&period=2026Q3"


def engine_of(app):
    return app.extensions["gridwatch"].engine


def store_of(app) -> AnswerStore:
    middleware = app.wsgi_app
    assert isinstance(middleware, AnswerCache)
    return middleware.store


def bearer(token: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **more}


@pytest.fixture
def uncached(web_settings):
    """The same app on the same database with the answer cache turned off."""
    flask_app = create_app(
        {"GRIDWATCH_SETTINGS": replace(web_settings, api_cache_mb=0), "TESTING": True}
    )
    assert not isinstance(flask_app.wsgi_app, AnswerCache)
    yield flask_app
    engine_of(flask_app).dispose()


def test_a_kept_answer_is_the_apps_answer_with_its_headers(app, client, uncached):
    token = issue_token(engine_of(app), "admin")
    store = store_of(app)
    first = client.get(METRICS, headers=bearer(token))
    assert first.status_code == 200 and store.hits == 0 and len(store) == 1
    second = client.get(METRICS, headers=bearer(token, **{"X-Request-ID": "wall-42"}))
    assert second.status_code == 200 and store.hits == 1
    assert second.get_data() == first.get_data()
    direct = uncached.test_client().get(METRICS, headers=bearer(token))
    assert direct.get_data() == second.get_data()
    rows = json.loads(second.get_data())
    assert {row["area_code"] for row in rows} == {TOWNSHIP_A, TOWNSHIP_B}
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Content-Type"):
        assert second.headers[name] == first.headers[name], name
    assert second.headers["Cache-Control"] == "no-store"
    assert second.headers["X-Request-ID"] == "wall-42"
    assert first.headers["X-Request-ID"] != "wall-42"
    assert "Set-Cookie" not in second.headers
    assert "Content-Encoding" not in second.headers
    # A client that takes gzip gets the same answer compressed.
    packed = client.get(METRICS, headers=bearer(token, **{"Accept-Encoding": "gzip, br"}))
    assert packed.headers["Content-Encoding"] == "gzip"
    assert int(packed.headers["Content-Length"]) == len(packed.get_data())
    assert gzip.decompress(packed.get_data()) == first.get_data()
    refused = client.get(METRICS, headers=bearer(token, **{"Accept-Encoding": "gzip;q=0"}))
    assert "Content-Encoding" not in refused.headers
    assert refused.get_data() == first.get_data()
    assert store.hits == 3
    # The GeoJSON layer too, and its parameters are part of the question.
    geo = client.get(GEO, headers=bearer(token))
    assert geo.status_code == 200 and geo.mimetype == "application/geo+json"
    again = client.get(GEO.replace("2026Q3", "2026-08"), headers=bearer(token))
    assert again.status_code == 200 and again.get_data() != geo.get_data()
    assert store.hits == 3 and len(store) == 3


def test_users_share_answers_only_with_the_same_jurisdiction(app, client):
    engine = engine_of(app)
    town_a, town_b = issue_token(engine, "town_a"), issue_token(engine, "town_b")
    create_user(engine, "town_a2", "township", PASSWORD, TOWNSHIP_A)
    town_a2 = issue_token(engine, "town_a2")
    store = store_of(app)
    seen_a = client.get(METRICS, headers=bearer(town_a)).get_json()
    seen_b = client.get(METRICS, headers=bearer(town_b)).get_json()
    assert [row["area_code"] for row in seen_a] == [TOWNSHIP_A]
    assert [row["area_code"] for row in seen_b] == [TOWNSHIP_B]
    assert store.hits == 0 and len(store) == 2
    # Another user of township A (whose token's use is recorded, so the cache may answer)
    # asks the same question: the answer kept for the first user is given.
    with session_scope(engine) as session:
        session.execute(update(ApiToken).values(last_used_at=utcnow()))
    assert client.get(METRICS, headers=bearer(town_a2)).get_json() == seen_a
    assert store.hits == 1 and len(store) == 2
    # Another township's grid stays a 404, however often it is asked.
    other = f"/api/v1/geo/metrics?level=grid&period=2026Q3&area={TOWNSHIP_B}"
    for _ in range(2):
        assert client.get(other, headers=bearer(town_a)).status_code == 404
    assert len(store) == 2


def test_a_revoked_token_or_disabled_user_is_refused_at_once(app, client):
    engine = engine_of(app)
    token = issue_token(engine, "county")
    for _ in range(2):
        assert client.get(METRICS, headers=bearer(token)).status_code == 200
    assert store_of(app).hits == 1
    set_active(engine, "county", False)
    assert client.get(METRICS, headers=bearer(token)).status_code == 401
    set_active(engine, "county", True)
    assert client.get(METRICS, headers=bearer(token)).status_code == 200
    assert revoke_tokens(engine, "county") == 1
    refused = client.get(METRICS, headers=bearer(token))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["status"] == 401


def test_a_new_run_is_seen_at_once(app, client, web_settings, tmp_path):
    from gridwatch.ingest import import_file
    from gridwatch.workers.engine import RunRequest, run_eager

    engine = engine_of(app)
    token = issue_token(engine, "admin")
    question = f"/api/v1/metrics?level=grid&period=2026Q3&area={GRIDS_A[0]}"
    before = client.get(question, headers=bearer(token)).get_json()
    assert client.get(question, headers=bearer(token)).get_json() == before
    assert store_of(app).hits == 1
    extra = tmp_path / "more.csv"
    extra.write_text(
        "id,occurred_at,category,lon,lat,source,status\n"
        "A9,2026-08-20 09:00,theft,104.005,30.005,call_110,reported\n",
        "utf-8",
    )
    import_file("incidents", extra, web_settings, engine)
    run_eager(engine, web_settings, RunRequest(trigger="test", full=True))
    after = client.get(question, headers=bearer(token)).get_json()
    assert after != before
    assert after[0]["incidents_total"] == before[0]["incidents_total"] + 1
    assert store_of(app).hits == 1  # a new run: every kept answer was forgotten
    assert client.get(question, headers=bearer(token)).get_json() == after
    assert store_of(app).hits == 2


def test_station_users_sessions_and_errors_are_left_to_the_app(app, client):
    engine = engine_of(app)
    store = store_of(app)
    station = issue_token(engine, "station")
    for _ in range(2):
        rows = client.get(METRICS, headers=bearer(station)).get_json()
        assert [row["area_code"] for row in rows] == [TOWNSHIP_A]
    assert len(store) == 0 and store.hits == 0
    login(client, "admin")
    for _ in range(2):
        assert client.get(METRICS).status_code == 200
    assert len(store) == 0
    admin = issue_token(engine, "admin")
    fresh = app.test_client()
    for _ in range(2):
        bad = fresh.get("/api/v1/metrics?level=township&period=2026Q9", headers=bearer(admin))
        assert bad.status_code == 400
    assert len(store) == 0


def test_a_tokens_use_is_still_recorded(app, client):
    engine = engine_of(app)
    token = issue_token(engine, "town_a")
    for _ in range(2):
        assert client.get(METRICS, headers=bearer(token)).status_code == 200
    long_ago = utcnow() - timedelta(hours=3)
    with session_scope(engine) as session:
        session.execute(update(ApiToken).values(last_used_at=long_ago))
    hits = store_of(app).hits
    assert client.get(METRICS, headers=bearer(token)).status_code == 200
    assert store_of(app).hits == hits  # went through the app, which recorded the use
    with session_scope(engine) as session:
        used = session.query(ApiToken).one().last_used_at
    assert used is not None and used > long_ago + timedelta(hours=2)
    assert client.get(METRICS, headers=bearer(token)).status_code == 200
    assert store_of(app).hits == hits + 1


def test_kept_answers_count_in_the_request_metrics(app, client):
    token = issue_token(engine_of(app), "admin")
    labels = {"endpoint": "api.metrics", "method": "GET", "status": "200"}

    def answered() -> float:
        registry = observability._PROCESS_REGISTRY
        return registry.get_sample_value("gridwatch_http_requests_total", labels) or 0.0

    start = answered()
    for _ in range(3):
        assert client.get(METRICS, headers=bearer(token)).status_code == 200
    assert store_of(app).hits == 2
    assert answered() == start + 3


def test_the_store_is_bounded_and_forgets_an_old_generation():
    store = AnswerStore(max_bytes=400)

    def answer(size: int) -> Answer:
        return Answer("200 OK", (("Content-Type", "application/json"),), b"x" * size, b"")

    store.enter(("run", 1))
    assert store.get(("a",)) is None
    store.put(("run", 1), ("a",), answer(90))
    store.put(("run", 1), ("b",), answer(90))
    store.put(("run", 1), ("huge",), answer(101))  # over a quarter of the bound: not kept
    assert len(store) == 2 and store.size == 180
    assert store.get(("a",)) is not None  # a is now the most recent
    for name in ("c", "d", "e"):
        store.put(("run", 1), (name,), answer(90))
    assert store.size <= 400
    assert store.get(("b",)) is None  # the least recently used went first
    assert store.get(("a",)) is not None
    # A new generation forgets the old one's answers, and refuses answers built for it.
    store.enter(("run", 2))
    assert store.get(("a",)) is None
    assert len(store) == 0 and store.size == 0
    store.put(("run", 1), ("a",), answer(10))
    assert len(store) == 0
    store.put(("run", 2), ("a",), answer(10))
    assert store.get(("a",)) is not None


def test_the_freshness_query_reads_what_sqlalchemy_reads(engine):
    from gridwatch.accounts import principal_for_token, token_digest, token_holder_query
    from gridwatch.areas import tree_signature_columns
    from gridwatch.web.answers import OneRowQuery
    from gridwatch.workers.engine import published_run_query

    create_user(engine, "reader", "admin", PASSWORD)
    fresh, used = issue_token(engine, "reader"), issue_token(engine, "reader")
    assert principal_for_token(engine, used) is not None  # records the use: a datetime
    statement = token_holder_query(
        published_run_query().scalar_subquery(), *tree_signature_columns()
    )
    query = OneRowQuery(engine, statement)
    for token in (fresh, used, "gw_unknown"):
        with engine.connect() as connection:
            expected = connection.execute(statement, {"digest": token_digest(token)}).first()
        got = query.first(digest=token_digest(token))
        assert got == (tuple(expected) if expected is not None else None), token
    row = query.first(digest=token_digest(used))
    assert row is not None and row[2] is True and row[1].tzinfo is not None
    assert query.first(digest=token_digest(fresh))[1] is None
