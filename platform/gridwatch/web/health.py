"""Health checks for load balancers, Docker and systemd: ``/healthz`` and ``/readyz``.

``/healthz`` (liveness) answers 200 as long as the process serves requests; it touches
nothing else, so a database outage never gets a healthy web process restarted. ``/readyz``
(readiness) answers 200 only when the database answers and its schema is at the revision this
version ships, and Redis answers ``PING`` when one is configured; otherwise 503, so a proxy
or an orchestrator sends no traffic to an instance that could only fail.

Neither needs a signed-in user and neither tells anything about the data: the answer names
each check and whether it passed. Why a check failed goes to the log, never to the client,
because the reason can contain host names.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import Engine, inspect, text
from werkzeug.wrappers import Response

from gridwatch.storage.db import head_revision
from gridwatch.web.extensions import state

bp = Blueprint("health", __name__)

#: Seconds a readiness probe waits for Redis before calling it unavailable.
REDIS_TIMEOUT_S = 2.0
#: ``app.extensions`` keys of the objects the readiness check keeps between requests.
HEAD_KEY = "gridwatch.health.head_revision"
REDIS_KEY = "gridwatch.health.redis"


def _answer(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz() -> Response:
    """Answer 200 while the process serves requests (liveness)."""
    return _answer({"status": "ok"}, 200)


def database_ready(engine: Engine, expected_revision: str | None) -> bool:
    """Return whether the database answers and its schema is at ``expected_revision``.

    Raises
    ------
    sqlalchemy.exc.SQLAlchemyError
        When the database cannot be reached.
    """
    # Read alembic_version directly: alembic's own reader logs two lines per call, which
    # would fill the log with a probe every few seconds.
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return revision == expected_revision


def _expected_revision(engine: Engine) -> str | None:
    # Reading the migration scripts costs a few milliseconds: once per process is enough.
    if HEAD_KEY not in current_app.extensions:
        current_app.extensions[HEAD_KEY] = head_revision(engine)
    revision: str | None = current_app.extensions[HEAD_KEY]
    return revision


def _redis_client(url: str) -> Any:
    # One client (and so one connection pool) per process, not one per probe.
    client = current_app.extensions.get(REDIS_KEY)
    if client is None:
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        current_app.extensions[REDIS_KEY] = client
    return client


@bp.get("/readyz")
def readyz() -> Response:
    """Answer 200 when the database (schema at head) and Redis answer, else 503 (readiness)."""
    settings, engine = state().settings, state().engine
    checks: dict[str, str] = {}
    try:
        ready = database_ready(engine, _expected_revision(engine))
        checks["database"] = "ok" if ready else "schema_not_current"
    except Exception as exc:  # any failure means "not ready"; the reason goes to the log only
        current_app.logger.warning("readiness: database check failed: %s", exc)
        checks["database"] = "unavailable"
    if settings.redis_url:
        try:
            _redis_client(settings.redis_url).ping()
            checks["redis"] = "ok"
        except Exception as exc:  # as above
            current_app.logger.warning("readiness: Redis check failed: %s", exc)
            checks["redis"] = "unavailable"
    else:
        checks["redis"] = "not_configured"
    ready = all(value in ("ok", "not_configured") for value in checks.values())
    return _answer(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


__all__ = ["bp", "database_ready"]
