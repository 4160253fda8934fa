"""The health checks: ``/healthz`` (liveness) and ``/readyz`` (database and Redis)."""

from __future__ import annotations

import socket

from conftest import make_settings

from gridwatch.storage import create_db_engine
from gridwatch.web import create_app


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz_answers_without_a_user_and_says_nothing_else(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_readyz_is_ready_on_a_migrated_database_without_redis(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "not_configured"},
    }


def test_readyz_is_not_ready_before_the_schema_is_migrated(tmp_path):
    settings = make_settings(tmp_path)
    app = create_app({"GRIDWATCH_SETTINGS": settings, "TESTING": True})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["database"] == "schema_not_current"
        # liveness does not depend on the database
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        app.extensions["gridwatch"].engine.dispose()


def test_readyz_is_not_ready_when_redis_does_not_answer(web_settings):
    from dataclasses import replace

    url = f"redis://127.0.0.1:{_closed_port()}/0"
    app = create_app({"GRIDWATCH_SETTINGS": replace(web_settings, redis_url=url), "TESTING": True})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        body = response.get_json()
        assert body == {
            "status": "not_ready",
            "checks": {"database": "ok", "redis": "unavailable"},
        }
        # the reason (which names the host and port) stays in the log
        assert url.split(":")[2].split("/")[0] not in response.get_data(as_text=True)
    finally:
        app.extensions["gridwatch"].engine.dispose()


def test_readyz_is_ready_with_a_redis_that_answers(web_settings, redis_url):
    from dataclasses import replace

    app = create_app(
        {"GRIDWATCH_SETTINGS": replace(web_settings, redis_url=redis_url), "TESTING": True}
    )
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 200
        assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    finally:
        app.extensions["gridwatch"].engine.dispose()


def test_readyz_is_not_ready_when_the_database_is_unreachable(tmp_path):
    port = _closed_port()
    settings = make_settings(
        tmp_path, GRIDWATCH_DATABASE_URL=f"postgresql://gridwatch@127.0.0.1:{port}/gridwatch"
    )
    engine = create_db_engine(settings.database_url, connect_args={"connect_timeout": 2})
    app = create_app({"GRIDWATCH_SETTINGS": settings, "GRIDWATCH_ENGINE": engine, "TESTING": True})
    try:
        response = app.test_client().get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["checks"]["database"] == "unavailable"
        assert str(port) not in response.get_data(as_text=True)
        assert app.test_client().get("/healthz").status_code == 200
    finally:
        engine.dispose()
