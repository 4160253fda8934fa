"""The JSON API under ``/api/v1``: thin adapters over the domain functions.

Every answer is filtered to the caller's jurisdiction; an area outside it answers 404 exactly
like an unknown one. Callers sign in with ``Authorization: Bearer TOKEN`` (see ``gridwatch
users token``) or the session cookie of a signed-in browser.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from flask import Blueprint, abort, jsonify, request, url_for
from werkzeug.wrappers import Response

from gridwatch.areas import area_records
from gridwatch.mapdata import blind_spots_geojson, hotspots_geojson, metrics_geojson
from gridwatch.periods import PeriodError, parse_period
from gridwatch.uploads import IMPORT_ROLES
from gridwatch.web.access import (
    area_tree,
    current_jurisdiction,
    login_required,
    roles_required,
    visible_area_or_404,
)
from gridwatch.web.extensions import state
from gridwatch.web.mapcache import map_cache
from gridwatch.web.maps import cache_key, scope_ids
from gridwatch.web.openapi import openapi_document
from gridwatch.workers.engine import RunError, list_runs, read_metrics

PREFIX = "/api/v1"
MAX_RUNS = 200

bp = Blueprint("api", __name__, url_prefix=PREFIX)


def error_response(status: int, message: str = "") -> Response:
    """Return the API's error object ``{"error": {"status", "message"}}``."""
    response = jsonify(error={"status": status, "message": message or _REASONS.get(status, "")})
    response.status_code = status
    return response


_REASONS = {
    400: "bad request",
    401: "authentication required",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "the file is too large",
    500: "internal error",
}


def _bad_request(message: str) -> None:
    abort(error_response(400, message))


def _level_arg(required: bool) -> str | None:
    level = request.args.get("level", "").strip() or None
    levels = state().settings.area_levels
    if level is None and required:
        _bad_request("the query parameter 'level' is required")
    if level is not None and level not in levels:
        _bad_request(f"level must be one of {', '.join(levels)}")
    return level


@bp.get("/openapi.json")
def openapi() -> Response:
    """Return the OpenAPI 3 description of this API."""
    from gridwatch.ingest import IMPORTERS
    from gridwatch.taxonomy import load_taxonomy
    from gridwatch.web.api_data import extend_openapi

    settings = state().settings
    document = openapi_document(settings.area_levels, list(IMPORTERS))
    categories = list(load_taxonomy(settings.categories_file).categories)
    return jsonify(extend_openapi(document, settings.area_levels, categories))


@bp.get("/areas")
@login_required
def areas() -> Response:
    """Return the areas the caller may see, optionally of one ``level``."""
    level = _level_arg(required=False)
    records = area_records(state().engine, current_jurisdiction().area_ids, level)
    return jsonify(records)


@bp.get("/areas/<code>")
@login_required
def area(code: str) -> Response:
    """Return one area (404 when it does not exist or lies outside the jurisdiction)."""
    visible_area_or_404(code)
    (record,) = area_records(state().engine, code=code)
    return jsonify(record)


@bp.get("/metrics")
@login_required
def metrics() -> Response:
    """Return published metrics by ``level`` and ``period`` (as ``gridwatch metrics --json``)."""
    level = _level_arg(required=True)
    assert level is not None
    period = request.args.get("period", "").strip()
    if not period:
        _bad_request("the query parameter 'period' is required")
    code = request.args.get("area", "").strip() or None
    engine = state().engine
    jurisdiction = current_jurisdiction()
    tree = area_tree()
    if code is not None:
        scopes: list[str | None] = [visible_area_or_404(code).code]
    else:
        scopes = [tree.nodes[i].code for i in jurisdiction.root_ids]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        for scope in scopes:
            for row in read_metrics(engine, level, period, scope):
                node = tree.by_code.get(row["area_code"])
                if node is not None and node.id in jurisdiction and node.code not in seen:
                    seen.add(node.code)
                    rows.append(row)
    except PeriodError as exc:
        _bad_request(str(exc))
    except RunError:
        abort(404)
    rows.sort(key=lambda r: str(r["area_code"]))
    return jsonify(rows)


@bp.get("/runs")
@login_required
def runs() -> Response:
    """Return aggregation runs, newest first (``limit``, default 20)."""
    try:
        limit = int(request.args.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_RUNS:
        _bad_request(f"limit must be a whole number from 1 to {MAX_RUNS}")
    return jsonify(list_runs(state().engine, limit))


# -- map layers as GeoJSON ------------------------------------------------------------------


def _period_arg() -> str:
    period = request.args.get("period", "").strip()
    if not period:
        _bad_request("the query parameter 'period' is required")
    try:
        return parse_period(period).label
    except PeriodError as exc:
        _bad_request(str(exc))
        raise


def _scope() -> tuple[str | None, frozenset[int]]:
    code = request.args.get("area", "").strip() or None
    area = visible_area_or_404(code) if code is not None else None
    return code, scope_ids(area)


def _geojson(kind: str, params: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> Response:
    body = map_cache().get_or_build(
        cache_key(kind, *params),
        lambda: json.dumps(build(), ensure_ascii=False, separators=(",", ":")),
    )
    return Response(body, mimetype="application/geo+json")


@bp.get("/geo/metrics")
@login_required
def geo_metrics() -> Response:
    """Return the published metrics of ``level`` and ``period`` as GeoJSON polygons."""
    level = _level_arg(required=True)
    assert level is not None
    period = _period_arg()
    code, ids = _scope()
    engine = state().engine
    return _geojson(
        "geo.metrics", (level, period, code), lambda: metrics_geojson(engine, ids, level, period)
    )


@bp.get("/geo/hotspots")
@login_required
def geo_hotspots() -> Response:
    """Return the grids that are significant Gi* hot or cold spots in ``period``."""
    period = _period_arg()
    code, ids = _scope()
    engine = state().engine
    return _geojson("geo.hotspots", (period, code), lambda: hotspots_geojson(engine, ids, period))


@bp.get("/geo/blind-spots")
@login_required
def geo_blind_spots() -> Response:
    """Return the part of each grid that no working camera sees (newest published run)."""
    code, ids = _scope()
    engine = state().engine
    return _geojson("geo.blind_spots", (code,), lambda: blind_spots_geojson(engine, ids))


# -- patrol routes ---------------------------------------------------------------------------


@bp.get("/routes")
@login_required
def patrol_routes() -> Response:
    """Return the newest stored patrol plan of ``station`` for ``date`` (and ``shift``).

    The answer is the ``gridwatch routes plan --json`` object plus ``plan_id``. A station
    outside the caller's jurisdiction answers 404 like an unknown one.
    """
    from datetime import date

    from gridwatch.routing.plans import latest_plan
    from gridwatch.web.routes import visible_stations

    code = request.args.get("station", "").strip()
    raw_day = request.args.get("date", "").strip()
    shift = request.args.get("shift", "").strip() or None
    if not code:
        _bad_request("the query parameter 'station' is required")
    try:
        day = date.fromisoformat(raw_day)
    except ValueError:
        _bad_request("the query parameter 'date' must be a date such as 2026-11-22")
        raise
    station = next((s for s in visible_stations() if s["code"] == code), None)
    if station is None:
        abort(error_response(404, f"no police station {code!r}"))
    assert station is not None
    payload = latest_plan(state().engine, station["id"], day, shift)
    if payload is None:
        abort(error_response(404, f"no stored plan of station {code} on {day.isoformat()}"))
    return jsonify(payload)


# -- survey ----------------------------------------------------------------------------------


def _survey_answer(build: Callable[[], Any]) -> Response:
    """Answer a survey view's result, or 400 with the sentence why it cannot be built."""
    from gridwatch.web.survey import SurveyRequestError

    try:
        return jsonify(build())
    except SurveyRequestError as exc:
        return error_response(400, str(exc))


@bp.get("/survey/rankings")
@login_required
def survey_rankings() -> Response:
    """Return the township ranking of ``period`` (default: newest wave), visible rows only."""
    from gridwatch.web.survey import chosen_quarter, scoped_rankings

    return _survey_answer(lambda: scoped_rankings(chosen_quarter(request.args.get("period"))))


@bp.get("/priorities")
@login_required
def survey_priorities() -> Response:
    """Return the village or grid priority index of ``period``, visible areas only."""
    from gridwatch.web.survey import chosen_quarter, scoped_priorities

    level = request.args.get("level", "").strip() or "village"
    return _survey_answer(
        lambda: scoped_priorities(chosen_quarter(request.args.get("period")), level)
    )


@bp.get("/early-warning")
@login_required
def survey_early_warning() -> Response:
    """Return next quarter's predicted township scores with their validation."""
    from gridwatch.web.survey import scoped_early_warning

    return _survey_answer(scoped_early_warning)


# -- prevention tasks ------------------------------------------------------------------------


def _iso_times(value: Any) -> Any:
    """Return ``value`` with every date and time as ISO 8601 (jsonify would write RFC 822)."""
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _iso_times(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_iso_times(item) for item in value]
    return value


@bp.get("/tasks")
@login_required
def tasks() -> Response:
    """Return the jurisdiction's prevention tasks, newest first (``status``, ``kind`` filter)."""
    from gridwatch.web.survey import scoped_tasks

    return _survey_answer(
        lambda: _iso_times(
            scoped_tasks(
                request.args.get("status", "").strip() or None,
                request.args.get("kind", "").strip() or None,
            )
        )
    )


@bp.get("/tasks/<int:task_id>")
@login_required
def task(task_id: int) -> Response:
    """Return one visible task with its history, effect and displacement watch."""
    from gridwatch.web.survey import scoped_task

    return _survey_answer(lambda: _iso_times(scoped_task(task_id)))


# -- imports ---------------------------------------------------------------------------------


@bp.post("/imports/<kind>")
@roles_required(*IMPORT_ROLES)
def import_upload(kind: str) -> Response:
    """Import the file in the multipart field ``file``; return the import summary.

    The summary is ``ImportSummary.as_dict()`` with ``file`` set to the uploaded file's name,
    ``report`` to the URL of the rejected-rows CSV (or ``null``) and ``refresh`` to the
    aggregation started for the grids that changed (or ``null``).
    """
    from gridwatch.ingest import IMPORTERS, ImportFileError
    from gridwatch.uploads import display_name
    from gridwatch.web.imports import run_upload

    if kind not in IMPORTERS:
        abort(404)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        _bad_request("the multipart field 'file' is required")
    assert upload is not None
    try:
        summary, refresh = run_upload(kind, upload)
    except ImportFileError as exc:
        _bad_request(str(exc))
        raise
    data = summary.as_dict()
    data["file"] = display_name(upload.filename or "")
    data["report"] = (
        url_for("imports.rejected_csv", batch_id=summary.batch_id) if summary.report else None
    )
    data["refresh"] = refresh
    return jsonify(data)
