"""The OpenAPI 3 document of the JSON API (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gridwatch import __version__

_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorised"},
}


def _param(
    name: str, description: str, required: bool = False, enum: list[str] | None = None
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum is not None:
        schema["enum"] = enum
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PERIOD = "2026, 2026Q3, 2026-07, 2026-W27 or 2026-07-04."


def _geojson(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/geo+json": {"schema": {"$ref": "#/components/schemas/FeatureCollection"}}
        },
    }


def openapi_document(levels: Sequence[str], import_kinds: Sequence[str] = ()) -> dict[str, Any]:
    """Return the OpenAPI document.

    Parameters
    ----------
    levels : sequence of str
        The configured area levels.
    import_kinds : sequence of str, optional
        The importers' kinds (``gridwatch.ingest.IMPORTERS``).
    """
    not_found = {"$ref": "#/components/responses/NotFound"}
    bad_request = {"$ref": "#/components/responses/BadRequest"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "GridWatch API",
            "version": __version__,
            "description": (
                "Areas, published metrics, map layers and aggregation runs, filtered to the "
                "caller's jurisdiction. An area outside it answers 404 like an unknown one."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
        "paths": {
            "/areas": {
                "get": {
                    "summary": "Areas the caller may see",
                    "operationId": "listAreas",
                    "parameters": [
                        _param("level", "Only areas of this level.", enum=list(levels))
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"$ref": "#/components/schemas/Area"}},
                            "Areas by code.",
                        ),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
            "/areas/{code}": {
                "get": {
                    "summary": "One area",
                    "operationId": "getArea",
                    "parameters": [
                        {
                            "name": "code",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Area"}, "The area."),
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Published metrics of every visible area of a level",
                    "description": "The same objects as `gridwatch metrics --json`.",
                    "operationId": "listMetrics",
                    "parameters": [
                        _param("level", "Area level.", required=True, enum=list(levels)),
                        _param(
                            "period",
                            "2026, 2026Q3, 2026-07, 2026-W27 or 2026-07-04.",
                            required=True,
                        ),
                        _param("area", "Only this area, or its descendants at `level`."),
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"$ref": "#/components/schemas/Metrics"}},
                            "One object per area, by code.",
                        ),
                        "400": bad_request,
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/geo/metrics": {
                "get": {
                    "summary": "Published metrics of a level as GeoJSON polygons",
                    "description": (
                        "One feature per visible area of `level`; its properties are the "
                        "object of `gridwatch metrics --json` plus `name`. Polygons are "
                        "simplified (about 5 m) and rounded to 5 decimals."
                    ),
                    "operationId": "geoMetrics",
                    "parameters": [
                        _param("level", "Area level.", required=True, enum=list(levels)),
                        _param("period", _PERIOD, required=True),
                        _param("area", "Only this area's part of the jurisdiction."),
                    ],
                    "responses": {
                        "200": _geojson("Areas with their metrics."),
                        "400": bad_request,
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/geo/hotspots": {
                "get": {
                    "summary": "Grids that are significant Gi* hot or cold spots",
                    "description": (
                        "Properties: `code, name, hotspot` (hot_99 … cold_99), `gi_star_z`, "
                        "`gi_star_q` (Benjamini-Hochberg), `hotspot_class` (emerging trend) "
                        "and `incidents_total`."
                    ),
                    "operationId": "geoHotspots",
                    "parameters": [
                        _param("period", _PERIOD, required=True),
                        _param("area", "Only this area's part of the jurisdiction."),
                    ],
                    "responses": {
                        "200": _geojson("Hot and cold spots."),
                        "400": bad_request,
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/geo/blind-spots": {
                "get": {
                    "summary": "The part of each grid that no working camera sees",
                    "description": "Properties: `code, name` of the grid (newest run).",
                    "operationId": "geoBlindSpots",
                    "parameters": [_param("area", "Only this area's part of the jurisdiction.")],
                    "responses": {
                        "200": _geojson("Camera blind spots."),
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/imports/{kind}": {
                "post": {
                    "summary": "Import a file",
                    "description": (
                        "Validates every row, commits the good ones and quarantines the rest, "
                        "then refreshes the changed grids. Roles admin, county, station and "
                        "township. With a session cookie, send the CSRF token as "
                        "`X-CSRFToken`. A file that cannot be imported at all answers 400 "
                        "with one sentence and commits nothing."
                    ),
                    "operationId": "importFile",
                    "parameters": [
                        {
                            "name": "kind",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": list(import_kinds)},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {"file": {"type": "string", "format": "binary"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/ImportSummary"}, "The import summary."
                        ),
                        "400": bad_request,
                        "403": _json(
                            {"$ref": "#/components/schemas/Error"}, "Role may not import."
                        ),
                        "404": not_found,
                        "413": _json({"$ref": "#/components/schemas/Error"}, "File too large."),
                        **_ERRORS,
                    },
                }
            },
            "/routes": {
                "get": {
                    "summary": "The newest stored patrol plan of a police station for a date",
                    "operationId": "getPatrolPlan",
                    "parameters": [
                        _param("station", "Police station code.", required=True),
                        _param(
                            "date", "Local date of the shift start, 2026-11-22.", required=True
                        ),
                        _param("shift", "Only a plan of this shift, such as 20:00-02:00."),
                    ],
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/PatrolPlan"},
                            "The plan (the `gridwatch routes plan --json` object).",
                        ),
                        "400": bad_request,
                        "404": not_found,
                        **_ERRORS,
                    },
                }
            },
            "/survey/rankings": {
                "get": {
                    "summary": "Township survey ranking with rank intervals and ladder status",
                    "description": (
                        "Ranks and intervals are county-wide; `rows` holds only the caller's "
                        "townships (`area_code, rank, security_pct, ci_low, ci_high, rank_best, "
                        "rank_worst, bottom_within_noise, status, status_history`)."
                    ),
                    "operationId": "getSurveyRanking",
                    "parameters": [_param("period", "Survey quarter, 2026Q3 (default: newest).")],
                    "responses": {
                        "200": _json({"type": "object"}, "The ranking of the quarter."),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
            "/priorities": {
                "get": {
                    "summary": "Priority index per village or grid, with its explanation",
                    "operationId": "getPriorities",
                    "parameters": [
                        _param("level", "village (default) or grid.", enum=["village", "grid"]),
                        _param("period", "Survey quarter, 2026Q3 (default: newest)."),
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "Visible areas, highest index first."),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
            "/early-warning": {
                "get": {
                    "summary": "Predicted security % per township for the next quarter",
                    "description": (
                        "`used` is false when the model did not beat 'same score as last "
                        "quarter' on held-out quarters; `validation` holds the errors."
                    ),
                    "operationId": "getEarlyWarning",
                    "responses": {
                        "200": _json({"type": "object"}, "Prediction and validation."),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
            "/tasks": {
                "get": {
                    "summary": "Prevention tasks of the caller's jurisdiction, newest first",
                    "operationId": "listTasks",
                    "parameters": [
                        _param(
                            "status",
                            "Only tasks with this status.",
                            enum=["open", "in_progress", "done", "cancelled"],
                        ),
                        _param(
                            "kind",
                            "Only tasks of this kind.",
                            enum=["camera", "repair", "patrol", "publicity", "follow_up", "other"],
                        ),
                    ],
                    "responses": {
                        "200": _json({"type": "array", "items": {"type": "object"}}, "Tasks."),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
            "/tasks/{task_id}": {
                "get": {
                    "summary": "One prevention task with its history, effect and displacement",
                    "description": (
                        "`effect.state` is `not_done`, `no_targets`, `too_early` or "
                        "`measured`; when measured it holds the target and comparison grids' "
                        "counts, the difference in differences with its interval and "
                        "`displacement` (bordering grids the caller may see; `hidden` counts "
                        "the others)."
                    ),
                    "operationId": "getTask",
                    "parameters": [
                        {
                            "name": "task_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "The task."),
                        "404": {"description": "No such task in the caller's jurisdiction."},
                        **_ERRORS,
                    },
                }
            },
            "/runs": {
                "get": {
                    "summary": "Aggregation runs, newest first",
                    "operationId": "listRuns",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": 200,
                                "default": 20,
                            },
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                            "Runs.",
                        ),
                        "400": bad_request,
                        **_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `gridwatch users token NAME`.",
                },
                "sessionCookie": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "gridwatch_session",
                },
            },
            "responses": {
                "BadRequest": _json({"$ref": "#/components/schemas/Error"}, "Bad parameters."),
                "Unauthorised": _json(
                    {"$ref": "#/components/schemas/Error"}, "No valid token or session."
                ),
                "NotFound": _json(
                    {"$ref": "#/components/schemas/Error"},
                    "Unknown, or outside the caller's jurisdiction.",
                ),
            },
            "schemas": {
                "PatrolPlan": {
                    "type": "object",
                    "required": [
                        "plan_id",
                        "station_code",
                        "day",
                        "shift",
                        "teams",
                        "risk_covered",
                        "greedy",
                    ],
                    "properties": {
                        "plan_id": {"type": "integer"},
                        "station_code": {"type": "string"},
                        "day": {"type": "string", "format": "date"},
                        "shift": {"type": "string"},
                        "risk_covered": {
                            "type": "number",
                            "description": "Sum of stop risk per minute x dwell minutes.",
                        },
                        "km": {"type": "number"},
                        "greedy": {
                            "type": "object",
                            "description": "The greedy nearest-high-risk baseline, same run.",
                            "properties": {
                                "risk_covered": {"type": "number"},
                                "km": {"type": "number"},
                            },
                        },
                        "teams": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["team_id", "base", "stops", "km", "duration_min"],
                                "properties": {
                                    "team_id": {"type": "integer"},
                                    "team_code": {"type": "string"},
                                    "base": {"$ref": "#/components/schemas/LonLat"},
                                    "km": {"type": "number"},
                                    "duration_min": {"type": "number"},
                                    "stops": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": [
                                                "lon",
                                                "lat",
                                                "grid_code",
                                                "arrive",
                                                "depart",
                                                "risk",
                                            ],
                                            "properties": {
                                                "lon": {"type": "number"},
                                                "lat": {"type": "number"},
                                                "grid_code": {"type": "string"},
                                                "arrive": {
                                                    "type": "string",
                                                    "format": "date-time",
                                                },
                                                "depart": {
                                                    "type": "string",
                                                    "format": "date-time",
                                                },
                                                "dwell_min": {"type": "number"},
                                                "risk": {"type": "number"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
                "LonLat": {
                    "type": "object",
                    "required": ["lon", "lat"],
                    "properties": {"lon": {"type": "number"}, "lat": {"type": "number"}},
                },
                "Area": {
                    "type": "object",
                    "required": ["code", "name", "level", "parent_code", "bbox", "centroid"],
                    "properties": {
                        "code": {"type": "string"},
                        "name": {"type": "string"},
                        "level": {"type": "string"},
                        "parent_code": {"type": "string", "nullable": True},
                        "population": {"type": "integer", "nullable": True},
                        "bbox": {
                            "type": "array",
                            "nullable": True,
                            "items": {"type": "number"},
                            "minItems": 4,
                            "maxItems": 4,
                            "description": "[minx, miny, maxx, maxy] in WGS84.",
                        },
                        "centroid": {
                            "type": "object",
                            "nullable": True,
                            "properties": {
                                "lon": {"type": "number"},
                                "lat": {"type": "number"},
                            },
                        },
                    },
                },
                "Metrics": {
                    "type": "object",
                    "required": ["area_code", "level", "period", "run_id", "incidents_total"],
                    "properties": {
                        "area_code": {"type": "string"},
                        "parent_code": {"type": "string", "nullable": True},
                        "level": {"type": "string"},
                        "period": {"type": "string"},
                        "run_id": {"type": "integer", "nullable": True},
                        "incidents_total": {"type": "integer"},
                        "incidents_by_category": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                        "incidents_by_group": {
                            "type": "object",
                            "additionalProperties": {"type": "integer"},
                        },
                    },
                    "additionalProperties": True,
                },
                "FeatureCollection": {
                    "type": "object",
                    "description": "GeoJSON (RFC 7946) in WGS84.",
                    "required": ["type", "features"],
                    "properties": {
                        "type": {"type": "string", "enum": ["FeatureCollection"]},
                        "features": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type", "geometry", "properties"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["Feature"]},
                                    "geometry": {"type": "object"},
                                    "properties": {"type": "object"},
                                },
                            },
                        },
                    },
                },
                "Run": {
                    "type": "object",
                    "required": ["run_id", "status"],
                    "properties": {
                        "run_id": {"type": "integer"},
                        "status": {"type": "string"},
                        "mode": {"type": "string"},
                        "trigger": {"type": "string"},
                        "scope": {"type": "string"},
                        "created_at": {"type": "string", "nullable": True},
                        "started_at": {"type": "string", "nullable": True},
                        "finished_at": {"type": "string", "nullable": True},
                    },
                    "additionalProperties": True,
                },
                "ImportSummary": {
                    "type": "object",
                    "required": ["file", "kind", "read", "imported", "duplicates", "rejected"],
                    "properties": {
                        "file": {"type": "string", "description": "The uploaded file's name."},
                        "kind": {"type": "string"},
                        "read": {"type": "integer"},
                        "imported": {"type": "integer"},
                        "duplicates": {"type": "integer"},
                        "rejected": {"type": "integer"},
                        "report": {
                            "type": "string",
                            "nullable": True,
                            "description": "URL of the rejected-rows CSV.",
                        },
                        "batch_id": {"type": "integer", "nullable": True},
                        "refresh": {"type": "object", "nullable": True},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "status": {"type": "integer"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
