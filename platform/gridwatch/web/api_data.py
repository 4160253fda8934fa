"""The JSON API's data endpoints: hot spots, forecasts, incidents, cameras, patrols, imports.

Registered on the ``api`` blueprint (``/api/v1``), with the same token or session sign-in and
the same jurisdiction rule: an area outside it answers 404 like an unknown one. The views
parse the query string and serialise; the data comes from :mod:`gridwatch.scoped_data`,
:mod:`gridwatch.tables` (whose role rules decide who sees single incidents) and
:mod:`gridwatch.uploads`. :func:`extend_openapi` adds these paths to the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import abort, jsonify, request, url_for
from werkzeug.wrappers import Response

from gridwatch.periods import PeriodError, parse_period
from gridwatch.scoped_data import grid_hotspots, patrol_summary, visible_forecast
from gridwatch.tables import (
    CAMERA_ROLES,
    CAMERA_STATUSES,
    CAMERA_TYPES,
    INCIDENT_STATUSES,
    NOT_NOTIFIED,
    NOT_WORKING,
    AreaNotVisible,
    Table,
    TableError,
    cameras_table,
    incidents_table,
    parse_camera_filters,
    parse_incident_filters,
    summary_levels,
)
from gridwatch.taxonomy import load_taxonomy
from gridwatch.uploads import IMPORT_ROLES, visible_batches
from gridwatch.web.access import (
    area_tree,
    current_jurisdiction,
    current_user,
    login_required,
    roles_required,
)
from gridwatch.web.api import bp, error_response
from gridwatch.web.dashboard import local_today
from gridwatch.web.extensions import state
from gridwatch.web.mapcache import map_cache
from gridwatch.workers.engine import RunError, forecast_period

#: Rows per page of the paginated lists, by default and at most.
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 1000
#: Import batches listed at most.
MAX_IMPORTS = 500


def _bad_request(message: str) -> None:
    abort(error_response(400, message))


def _not_found(message: str) -> None:
    abort(error_response(404, message))


def _whole_number(name: str, default: int, highest: int) -> int:
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= highest:
        _bad_request(f"{name} must be a whole number from 1 to {highest}")
    return int(raw)


def _period() -> str:
    raw = request.args.get("period", "").strip()
    if not raw:
        _bad_request("the query parameter 'period' is required")
    try:
        return parse_period(raw).label
    except PeriodError as exc:
        _bad_request(str(exc))
        raise


def _area() -> str:
    return request.args.get("area", "").strip()


def _paged(table: Table, page: int, per_page: int, sliced: bool) -> dict[str, Any]:
    """Return the paginated answer of ``table`` (``sliced``: its rows are every row)."""
    rows = table.rows[(page - 1) * per_page : page * per_page] if sliced else table.rows
    return {
        "detail": table.detail,
        "filters": table.filters,
        "total": table.total,
        "page": page,
        "per_page": per_page,
        "pages": max(1, -(-table.total // per_page)),
        "items": rows,
    }


@bp.get("/hotspots")
@login_required
def hotspots() -> Response:
    """Return every visible grid's Gi* hot-spot result and emerging class for ``period``."""
    period = _period()
    try:
        rows = grid_hotspots(state().engine, area_tree(), current_jurisdiction(), period, _area())
    except AreaNotVisible:
        abort(404)
    return jsonify(rows)


@bp.get("/forecasts")
@login_required
def forecasts() -> Response:
    """Return the forecast of ``level`` for ``period`` (as ``gridwatch forecast --json``).

    The county-wide forecast is computed once per published run, day and parameters, and
    cut to the caller's areas.
    """
    from gridwatch.mapdata import published_run_id

    levels = state().settings.area_levels
    level = request.args.get("level", "").strip() or levels[-1]
    if level not in levels:
        _bad_request(f"level must be one of {', '.join(levels)}")
    period = _period()
    engine, settings = state().engine, state().settings
    today = local_today().isoformat()
    key = ("api.forecasts", published_run_id(engine), today, level, period)
    try:
        result = map_cache().get_or_build(
            key, lambda: forecast_period(engine, settings, level, period)
        )
        return jsonify(visible_forecast(result, area_tree(), current_jurisdiction(), _area()))
    except AreaNotVisible:
        abort(404)
    except (RunError, PeriodError) as exc:
        _bad_request(str(exc))
        raise


@bp.get("/incidents")
@login_required
def incidents() -> Response:
    """Return incidents of the jurisdiction: single cases or counts per grid, by role.

    Roles of :data:`gridwatch.tables.INCIDENT_DETAIL_ROLES` get one item per case (no
    victim details, address, coordinates or case text); the others get counts per area of
    level ``by`` (default: grid) and category.
    """
    user = current_user()
    assert user is not None
    settings, tree, jurisdiction = state().settings, area_tree(), current_jurisdiction()
    page = _whole_number("page", 1, 10**9)
    per_page = _whole_number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    categories = load_taxonomy(settings.categories_file).categories
    try:
        filters = parse_incident_filters(
            request.args, categories, summary_levels(tree, jurisdiction, settings.area_levels)
        )
        table = incidents_table(
            state().engine,
            tree,
            jurisdiction,
            settings.area_levels,
            user.role,
            filters,
            settings.timezone,
            page=page,
            limit=per_page,
        )
    except AreaNotVisible:
        abort(404)
    except TableError as exc:
        _bad_request(str(exc))
        raise
    return jsonify(_paged(table, page, per_page, sliced=not table.detail))


@bp.get("/cameras")
@roles_required(*CAMERA_ROLES)
def cameras() -> Response:
    """Return the cameras of the visible grids, filtered by ``area``, ``status`` and ``type``."""
    page = _whole_number("page", 1, 10**9)
    per_page = _whole_number("per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)
    try:
        table = cameras_table(
            state().engine,
            area_tree(),
            current_jurisdiction(),
            parse_camera_filters(request.args),
            state().settings.timezone,
            page=page,
            limit=per_page,
        )
    except AreaNotVisible:
        abort(404)
    except TableError as exc:
        _bad_request(str(exc))
        raise
    return jsonify(_paged(table, page, per_page, sliced=False))


@bp.get("/patrols")
@login_required
def patrols() -> Response:
    """Return the visible teams' activity and the visible grids' patrol dosage in ``period``."""
    user = current_user()
    assert user is not None
    period = _period()
    try:
        summary = patrol_summary(
            state().engine, area_tree(), current_jurisdiction(), user.station_id, period, _area()
        )
    except AreaNotVisible:
        abort(404)
    return jsonify(summary)


def _utc_text(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored in UTC; SQLite drops the offset
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@bp.get("/imports")
@roles_required(*IMPORT_ROLES)
def imports() -> Response:
    """Return the import batches the caller may see, newest first (``limit``, default 100).

    Admin and county users see every batch; station and township users their own uploads.
    """
    user = current_user()
    assert user is not None
    limit = _whole_number("limit", DEFAULT_PER_PAGE, MAX_IMPORTS)
    rows = []
    for batch in visible_batches(state().engine, user, limit):
        has_report = batch.pop("has_report")
        rows.append(
            {
                **batch,
                "started_at": _utc_text(batch["started_at"]),
                "finished_at": _utc_text(batch["finished_at"]),
                "report": url_for("imports.rejected_csv", batch_id=batch["id"])
                if has_report
                else None,
            }
        )
    return jsonify(rows)


# -- OpenAPI -----------------------------------------------------------------------------------


def _query(
    name: str,
    description: str,
    required: bool = False,
    enum: Sequence[str] | None = None,
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    found: dict[str, Any] = dict(schema or {"type": "string"})
    if enum is not None:
        found["enum"] = list(enum)
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": found,
    }


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_PERIOD_TEXT = "2026, 2026Q3, 2026-07, 2026-W27 or 2026-07-04."
_AREA_TEXT = "Only this area's part of the jurisdiction."
_PAGING = [
    _query("page", "Page number.", schema={"type": "integer", "minimum": 1, "default": 1}),
    _query(
        "per_page",
        "Items per page.",
        schema={
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PER_PAGE,
            "default": DEFAULT_PER_PAGE,
        },
    ),
]
_NUMBER = {"type": "number", "nullable": True}
_TEXT = {"type": "string", "nullable": True}


def _schemas() -> dict[str, Any]:
    grid_base = {
        "grid_code": {"type": "string"},
        "grid_name": {"type": "string"},
        "parent_code": _TEXT,
        "period": {"type": "string"},
        "run_id": {"type": "integer", "nullable": True},
    }
    return {
        "GridHotspot": {
            "type": "object",
            "required": ["grid_code", "period", "hotspot", "gi_star_z", "hotspot_class"],
            "properties": {
                **grid_base,
                "hotspot": {
                    "type": "string",
                    "nullable": True,
                    "description": "hot_99, hot_95, hot_90, not_significant, cold_90 …",
                },
                "gi_star_z": _NUMBER,
                "gi_star_p": _NUMBER,
                "gi_star_q": {
                    "type": "number",
                    "nullable": True,
                    "description": "Benjamini-Hochberg q-value.",
                },
                "hotspot_class": {
                    "type": "string",
                    "nullable": True,
                    "description": "Emerging class: new, intensifying, persistent, "
                    "diminishing, sporadic, consecutive, historical or none.",
                },
                "incidents_total": {"type": "integer"},
                "incidents_reported": {"type": "integer", "nullable": True},
            },
        },
        "Forecast": {
            "type": "object",
            "required": ["period", "level", "history_days", "forecast", "scorecard"],
            "properties": {
                "period": {"type": "string"},
                "level": {"type": "string"},
                "history_days": {"type": "integer"},
                "forecast": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["area_code", "expected"],
                        "properties": {
                            "area_code": {"type": "string"},
                            "expected": {"type": "number"},
                            "actual": {
                                "type": "integer",
                                "description": "Reported incidents, once the period is over.",
                            },
                        },
                    },
                },
                "scorecard": {
                    "type": "object",
                    "description": "Back-test of the newest published run (county-wide).",
                    "additionalProperties": True,
                },
            },
        },
        "IncidentPage": {
            "type": "object",
            "required": ["detail", "total", "page", "per_page", "pages", "items"],
            "properties": {
                "detail": {
                    "type": "boolean",
                    "description": "true: one item per case; false: counts per area and category.",
                },
                "filters": {"type": "object", "additionalProperties": {"type": "string"}},
                "total": {"type": "integer"},
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "pages": {"type": "integer"},
                "items": {
                    "type": "array",
                    "items": {
                        "oneOf": [_ref("IncidentCase"), _ref("IncidentCount")],
                    },
                },
            },
        },
        "IncidentCase": {
            "type": "object",
            "required": ["id", "occurred_at", "category", "status", "grid_code"],
            "additionalProperties": False,
            "description": "Times are local (GRIDWATCH_TIMEZONE), YYYY-MM-DD HH:MM.",
            "properties": {
                "id": {"type": "string"},
                "occurred_at": {"type": "string"},
                "category": {"type": "string"},
                "source": _TEXT,
                "status": {"type": "string"},
                "solved_at": _TEXT,
                "victim_notified_at": _TEXT,
                "grid_code": {"type": "string"},
                "grid_name": {"type": "string"},
                "township": {"type": "string"},
            },
        },
        "IncidentCount": {
            "type": "object",
            "required": ["area_code", "category", "incidents"],
            "additionalProperties": False,
            "properties": {
                "area_code": {"type": "string"},
                "area_name": {"type": "string"},
                "category": {"type": "string"},
                "incidents": {"type": "integer"},
                "solved": {"type": "integer"},
                "solved_not_notified": {"type": "integer"},
            },
        },
        "CameraPage": {
            "type": "object",
            "required": ["total", "page", "per_page", "pages", "items"],
            "properties": {
                "detail": {"type": "boolean"},
                "filters": {"type": "object", "additionalProperties": {"type": "string"}},
                "total": {"type": "integer"},
                "page": {"type": "integer"},
                "per_page": {"type": "integer"},
                "pages": {"type": "integer"},
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "status", "grid_code", "lon", "lat"],
                        "properties": {
                            "id": {"type": "string"},
                            "name": _TEXT,
                            "type": _TEXT,
                            "status": {"type": "string"},
                            "resolution": _TEXT,
                            "installed_at": _TEXT,
                            "owner": _TEXT,
                            "grid_code": {"type": "string"},
                            "grid_name": {"type": "string"},
                            "township": {"type": "string"},
                            "lon": {"type": "number"},
                            "lat": {"type": "number"},
                        },
                    },
                },
            },
        },
        "PatrolSummary": {
            "type": "object",
            "required": ["period", "teams_total", "teams_inactive", "teams", "grids"],
            "properties": {
                "period": {"type": "string"},
                "teams_total": {"type": "integer"},
                "teams_inactive": {"type": "integer"},
                "teams": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["code", "kind", "active_days", "inactive"],
                        "properties": {
                            "code": {"type": "string"},
                            "name": _TEXT,
                            "kind": {"type": "string"},
                            "station_code": _TEXT,
                            "home_code": _TEXT,
                            "home_name": _TEXT,
                            "active_days": {"type": "integer"},
                            "patrol_minutes_30d": {"type": "number"},
                            "last_patrol_at": {
                                "type": "string",
                                "nullable": True,
                                "format": "date-time",
                            },
                            "inactive": {"type": "boolean"},
                        },
                    },
                },
                "grids": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["grid_code", "period", "patrol_minutes"],
                        "properties": {
                            **grid_base,
                            "patrol_minutes": _NUMBER,
                            "patrol_night_minutes": _NUMBER,
                            "patrol_visits": _NUMBER,
                            "patrol_teams": _NUMBER,
                            "hours_since_last_visit": _NUMBER,
                        },
                    },
                },
            },
        },
        "ImportBatch": {
            "type": "object",
            "required": ["id", "kind", "status", "read", "imported", "duplicates", "rejected"],
            "properties": {
                "id": {"type": "integer"},
                "kind": {"type": "string"},
                "file_name": _TEXT,
                "uploaded_by": {"type": "string"},
                "started_at": {"type": "string", "nullable": True, "format": "date-time"},
                "finished_at": {"type": "string", "nullable": True, "format": "date-time"},
                "status": {"type": "string"},
                "read": {"type": "integer", "nullable": True},
                "imported": {"type": "integer", "nullable": True},
                "duplicates": {"type": "integer", "nullable": True},
                "rejected": {"type": "integer", "nullable": True},
                "message": _TEXT,
                "report": {
                    "type": "string",
                    "nullable": True,
                    "description": "URL of the rejected-rows CSV.",
                },
            },
        },
    }


def _paths(levels: Sequence[str], categories: Sequence[str]) -> dict[str, Any]:
    bad_request = {"$ref": "#/components/responses/BadRequest"}
    not_found = {"$ref": "#/components/responses/NotFound"}
    unauthorised = {"$ref": "#/components/responses/Unauthorised"}
    forbidden = _ok({"$ref": "#/components/schemas/Error"}, "The caller's role may not.")

    def get(
        operation: str,
        summary: str,
        parameters: list[dict[str, Any]],
        ok: dict[str, Any],
        description: str = "",
        may_forbid: bool = False,
    ) -> dict[str, Any]:
        responses: dict[str, Any] = {
            "200": ok,
            "400": bad_request,
            "401": unauthorised,
            "404": not_found,
        }
        if may_forbid:
            responses["403"] = forbidden
        body: dict[str, Any] = {
            "summary": summary,
            "operationId": operation,
            "parameters": parameters,
            "responses": responses,
        }
        if description:
            body["description"] = description
        return {"get": body}

    return {
        "/hotspots": get(
            "listHotspots",
            "Gi* hot-spot result and emerging class of every visible grid",
            [_query("period", _PERIOD_TEXT, required=True), _query("area", _AREA_TEXT)],
            _ok({"type": "array", "items": _ref("GridHotspot")}, "Grids by code."),
        ),
        "/forecasts": get(
            "getForecast",
            "Expected incidents per area for a period, with the stored back-test",
            [
                _query("level", "Area level (default: grid).", enum=levels),
                _query("period", "The period forecast, e.g. 2026-12 or 2027Q1.", required=True),
                _query("area", _AREA_TEXT),
            ],
            _ok(_ref("Forecast"), "The object of `gridwatch forecast --json`, visible areas."),
            description=(
                "Forecast from the data before the period; once it is over each row also "
                "carries `actual`. 400 when there are fewer than 28 days of history."
            ),
        ),
        "/incidents": get(
            "listIncidents",
            "Incidents of the jurisdiction: cases, or counts for roles that see no cases",
            [
                _query("area", _AREA_TEXT),
                _query("from", "First local day, 2026-07-01.", schema={"type": "string"}),
                _query("to", "Last local day, 2026-07-31.", schema={"type": "string"}),
                _query("category", "Category code.", enum=categories),
                _query(
                    "status",
                    "Case status, or solved_not_notified (破而不馈).",
                    enum=[*INCIDENT_STATUSES, NOT_NOTIFIED],
                ),
                _query("by", "Counts only: the level counted by (default: grid).", enum=levels),
                *_PAGING,
            ],
            _ok(_ref("IncidentPage"), "One page."),
            description=(
                "Roles admin, county and station get one item per case (id, times, "
                "category, source, status, grid), newest first; township and viewer get "
                "counts per grid (or `by` level) and category. No role gets the address, "
                "coordinates, case summary or any victim detail."
            ),
        ),
        "/cameras": get(
            "listCameras",
            "Cameras of the visible grids",
            [
                _query("area", _AREA_TEXT),
                _query(
                    "status",
                    "Status, or not_working (offline or broken).",
                    enum=[*CAMERA_STATUSES, NOT_WORKING],
                ),
                _query("type", "Camera type.", enum=CAMERA_TYPES),
                *_PAGING,
            ],
            _ok(_ref("CameraPage"), "One page, by grid and id."),
            description="Roles admin, county, station and township.",
            may_forbid=True,
        ),
        "/patrols": get(
            "getPatrols",
            "Patrol teams' activity and per-grid patrol dosage",
            [_query("period", _PERIOD_TEXT, required=True), _query("area", _AREA_TEXT)],
            _ok(_ref("PatrolSummary"), "Teams by code, grids by code."),
            description=(
                "Team figures are as of the newest published run (active days in 90, "
                "minutes in 30 days, inactive after 14 days without a patrol); grid dosage "
                "is of `period`."
            ),
        ),
        "/imports": get(
            "listImports",
            "Import batches, newest first",
            [
                _query(
                    "limit",
                    "Most batches returned.",
                    schema={
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_IMPORTS,
                        "default": DEFAULT_PER_PAGE,
                    },
                )
            ],
            _ok({"type": "array", "items": _ref("ImportBatch")}, "Batches."),
            description=(
                "Roles that may import. Admin and county users see every batch; station "
                "and township users the batches they uploaded."
            ),
            may_forbid=True,
        ),
    }


def extend_openapi(
    document: dict[str, Any], levels: Sequence[str], categories: Sequence[str]
) -> dict[str, Any]:
    """Add this module's paths and schemas to the API's OpenAPI ``document`` (in place).

    Parameters
    ----------
    document : dict
        The document of :func:`gridwatch.web.openapi.openapi_document`.
    levels : sequence of str
        The configured area levels.
    categories : sequence of str
        The incident category codes of the taxonomy.
    """
    document["paths"].update(_paths(levels, categories))
    document["components"]["schemas"].update(_schemas())
    return document


__all__ = ["extend_openapi"]
