"""``/metrics`` for Prometheus, and the per-request bookkeeping behind it and behind the logs.

:func:`init_app` makes every request count in the HTTP metrics, carry a request id (the
client's ``X-Request-ID`` or a new one, echoed in the response header) and the signed-in user
into every log record (:mod:`gridwatch.logs`), and write one access-log line. The figures
themselves come from :mod:`gridwatch.observability`.

Who may read ``/metrics`` is set by ``GRIDWATCH_METRICS_TOKEN``: with it, a bearer token; without
it, direct requests from the loopback address only.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Flask, g, request
from werkzeug.wrappers import Response

from gridwatch import logs
from gridwatch.observability import observe_request, render_metrics, scrape_allowed
from gridwatch.web.extensions import state

bp = Blueprint("metrics", __name__)
access_log = logging.getLogger("gridwatch.web.access")

REQUEST_ID_HEADER = "X-Request-ID"


@bp.get("/metrics")
def metrics() -> Response:
    """Return the Prometheus exposition text (403/401 for callers who may not read it)."""
    settings = state().settings
    forwarded = "X-Forwarded-For" in request.headers or "Forwarded" in request.headers
    if not scrape_allowed(
        settings, request.remote_addr, request.headers.get("Authorization"), forwarded
    ):
        if settings.metrics_token:
            return Response(
                "/metrics needs the bearer token set in GRIDWATCH_METRICS_TOKEN\n",
                status=401,
                mimetype="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return Response(
            "/metrics answers only the loopback address; set GRIDWATCH_METRICS_TOKEN to scrape "
            "it from elsewhere\n",
            status=403,
            mimetype="text/plain",
        )
    body, content_type = render_metrics(settings, state().engine)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _start_request() -> None:
    g.request_started = time.perf_counter()
    g.request_id = logs.request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.log_tokens = logs.bind(request_id=g.request_id, user=None)


def _bind_user() -> None:
    user = g.get("user")
    logs.user_var.set(user.username if user is not None else None)


def _finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    seconds = time.perf_counter() - started if started is not None else 0.0
    record_answer(request.endpoint, request.method, request.path, response.status_code, seconds)
    return response


def record_answer(
    endpoint: str | None, method: str, path: str, status: int, seconds: float
) -> None:
    """Count and time one answered request and write its access-log line.

    Parameters
    ----------
    endpoint : str or None
        The route's endpoint name (``None`` when no route matched).
    method, path : str
        The request's method and path.
    status : int
        Status code of the answer.
    seconds : float
        Time taken.
    """
    observe_request(endpoint, method, status, seconds)
    access_log.info("%s %s %s %.1f ms", method, path, status, seconds * 1000)


def _end_request(error: BaseException | None) -> None:
    tokens = g.pop("log_tokens", None)
    if tokens:
        logs.unbind(tokens)


def init_app(app: Flask) -> None:
    """Count, time and tag every request of ``app``; call after the other hooks are registered.

    The start hook is put first so the time covers sign-in loading and CSRF checks, and a
    request refused by them still has an id; the user is bound after ``load_request_user``.

    Parameters
    ----------
    app : flask.Flask
        The web app.
    """
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.before_request(_bind_user)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


__all__ = ["bp", "init_app", "record_answer"]
