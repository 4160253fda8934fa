"""Data tables: published metrics, incidents and cameras, with filters and CSV/XLSX export.

The tables, their jurisdiction filtering, the per-role rules (who sees single cases, who sees
cameras, who may export) and the exports live in :mod:`gridwatch.tables`; this blueprint
reads the filters from the query string, translates codes and headings, and answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from gridwatch.overview import HEADLINE_GROUP
from gridwatch.periods import period_of
from gridwatch.tables import (
    CAMERA_ROLES,
    CAMERA_STATUSES,
    CAMERA_TYPES,
    EXPORT_ROLES,
    EXPORT_ROW_LIMIT,
    INCIDENT_DETAIL_ROLES,
    INCIDENT_STATUSES,
    NOT_NOTIFIED,
    NOT_WORKING,
    PAGE_SIZE,
    AreaNotVisible,
    ExportFormat,
    Table,
    TableError,
    cameras_table,
    export_table,
    filter_areas,
    incidents_table,
    metrics_table,
    parse_camera_filters,
    parse_incident_filters,
    summary_levels,
)
from gridwatch.web.access import (
    area_tree,
    client_ip,
    current_jurisdiction,
    current_user,
    login_required,
    roles_required,
)
from gridwatch.web.dashboard import category_names, local_today
from gridwatch.web.extensions import state
from gridwatch.web.labels import level_label

bp = Blueprint("tables", __name__, url_prefix="/tables")

#: Column headings (also the exports' header row).
COLUMN_LABELS: dict[str, LazyString] = {
    "area_code": _l("Code"),
    "area_name": _l("Name"),
    "parent_name": _l("Parent area"),
    "population": _l("Population"),
    "incidents_total": _l("Incidents"),
    HEADLINE_GROUP: _l("Two robberies, one theft"),
    "incidents_per_1000": _l("Per 1,000 residents"),
    "change_prev_pct": _l("vs previous period"),
    "change_last_year_pct": _l("vs same period last year"),
    "incidents_solved": _l("Solved cases"),
    "solved_rate_pct": _l("Solved rate %"),
    "solved_not_notified": _l("Solved, victim not told"),
    "not_notified_pct": _l("Victim not told %"),
    "night_share_pct": _l("Night share %"),
    "blind_spot_incident_pct": _l("Incidents in blind spots %"),
    "cameras_total": _l("Cameras"),
    "cameras_working": _l("Cameras working"),
    "camera_coverage_pct": _l("Camera coverage %"),
    "patrol_minutes": _l("Patrol minutes"),
    "id": _l("Id"),
    "occurred_at": _l("Occurred at"),
    "category": _l("Category"),
    "source": _l("Source"),
    "status": _l("Status"),
    "solved_at": _l("Solved at"),
    "victim_notified_at": _l("Victim told at"),
    "grid_code": _l("Grid code"),
    "grid_name": _l("Grid"),
    "township": _l("Township"),
    "incidents": _l("Incidents"),
    "solved": _l("Solved cases"),
    "name": _l("Name"),
    "type": _l("Type"),
    "resolution": _l("Resolution"),
    "installed_at": _l("Installed"),
    "owner": _l("Owner"),
    "lon": _l("Longitude"),
    "lat": _l("Latitude"),
}
#: Columns holding percentages or rates (shown with one decimal).
DECIMAL_COLUMNS = frozenset(
    {
        "incidents_per_1000",
        "change_prev_pct",
        "change_last_year_pct",
        "solved_rate_pct",
        "not_notified_pct",
        "night_share_pct",
        "blind_spot_incident_pct",
        "camera_coverage_pct",
        "patrol_minutes",
    }
)
VALUE_LABELS: dict[str, dict[str, LazyString]] = {
    "status": {
        "reported": _l("Reported"),
        "accepted": _l("Accepted"),
        "solved": _l("Solved (status)"),
        "closed": _l("Closed"),
        NOT_NOTIFIED: _l("Solved, victim not told"),
        "online": _l("Online"),
        "offline": _l("Disconnected"),
        "broken": _l("Faulty"),
        NOT_WORKING: _l("Offline or faulty"),
    },
    "source": {
        "call_110": _l("110 call"),
        "walk_in": _l("Walk-in report"),
        "patrol": _l("Found on patrol"),
        "other": _l("Other"),
    },
    "type": {
        "checkpoint": _l("Checkpoint"),
        "hd": _l("HD"),
        "standard": _l("Standard definition"),
        "private": _l("Private, linked"),
    },
}
TABLE_TITLES: dict[str, LazyString] = {
    "metrics": _l("Area figures"),
    "incidents": _l("Incident records"),
    "cameras": _l("Cameras"),
}


def _page() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and int(raw) > 0 else 1


def _args() -> dict[str, str]:
    return {k: v for k, v in request.args.items() if k != "page"}


def _display(table: Table) -> Callable[[str, Any], Any]:
    names = category_names()
    # Translated once per request: a lazy string translates itself on every use.
    labels = {
        column: {k: str(v) for k, v in found.items()} for column, found in VALUE_LABELS.items()
    }

    def show(column: str, value: Any) -> Any:
        if value is None:
            return None
        if column == "category":
            return names.get(value, value)
        if column in labels and value in labels[column]:
            return labels[column][value]
        if column in DECIMAL_COLUMNS and isinstance(value, float):
            return round(value, 1)
        return value

    return show


def _render(table: Table | None, error: str | None = None, status: int = 200, **extra: Any) -> Any:
    user = current_user()
    assert user is not None
    name = table.name if table is not None else extra.pop("name")
    tree, jurisdiction = area_tree(), current_jurisdiction()
    levels = state().settings.area_levels
    context = {
        "table": table,
        "name": name,
        "error": error,
        "titles": TABLE_TITLES,
        "labels": COLUMN_LABELS,
        "show": _display(table) if table is not None else None,
        "args": _args(),
        "page": _page(),
        "page_size": PAGE_SIZE,
        "areas": filter_areas(tree, jurisdiction, levels),
        "levels": levels,
        "summary_levels": summary_levels(tree, jurisdiction, levels),
        "level_label": level_label,
        "categories": category_names(),
        "value_labels": VALUE_LABELS,
        "incident_statuses": (*INCIDENT_STATUSES, NOT_NOTIFIED),
        "camera_statuses": (*CAMERA_STATUSES, NOT_WORKING),
        "camera_types": CAMERA_TYPES,
        "can_export": user.role in EXPORT_ROLES,
        "can_see_cameras": user.role in CAMERA_ROLES,
        "detail_roles": INCIDENT_DETAIL_ROLES,
        **extra,
    }
    return render_template(f"tables/{name}.html", **context), status


def _export(table: Table, fmt: str) -> Response:
    user = current_user()
    assert user is not None
    show = _display(table)
    headers = [str(COLUMN_LABELS[c]) for c in table.columns]
    rows = [[show(c, row.get(c)) for c in table.columns] for row in table.rows]
    try:
        data = export_table(
            state().engine, table, cast(ExportFormat, fmt), headers, rows, user, ip=client_ip()
        )
    except TableError as exc:
        page, status = _render(table, error=str(exc), status=400)
        return Response(page, status=status)
    today = local_today().isoformat()
    mimetype = (
        "text/csv; charset=utf-8"
        if fmt == "csv"
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    response = Response(data, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="gridwatch-{table.name}-{today}.{fmt}"'
    )
    return response


def _answer(build: Callable[[int | None], Table], name: str, fmt: str | None) -> Any:
    """Build the table (one page, or everything for an export) and render or export it."""
    if fmt is not None:
        user = current_user()
        if user is None or user.role not in EXPORT_ROLES:
            abort(403)
    try:
        table = build(EXPORT_ROW_LIMIT + 1 if fmt else PAGE_SIZE)
    except AreaNotVisible:
        abort(404)
    except TableError as exc:
        return _render(None, error=str(exc), status=400, name=name)
    if fmt is not None:
        return _export(table, fmt)
    return _render(table)


@bp.get("/")
@login_required
def index() -> Any:
    """Open the first table."""
    return redirect(url_for("tables.metrics"))


@bp.get("/metrics", defaults={"fmt": None})
@bp.get("/metrics.<any(csv, xlsx):fmt>")
@login_required
def metrics(fmt: str | None) -> Any:
    """Show the published figures of the visible areas of one level and period."""
    levels = state().settings.area_levels
    level = request.args.get("level", "").strip() or (levels[1] if len(levels) > 1 else levels[0])
    period = request.args.get("period", "").strip() or period_of(local_today(), "quarter").label
    area = request.args.get("area", "").strip()

    def build(limit: int | None) -> Table:
        table = metrics_table(
            state().engine, area_tree(), current_jurisdiction(), levels, level, period, area
        )
        if fmt is None and limit is not None:
            start = (_page() - 1) * limit
            table.rows = table.rows[start : start + limit]
        return table

    return _answer(build, "metrics", fmt)


@bp.get("/incidents", defaults={"fmt": None})
@bp.get("/incidents.<any(csv, xlsx):fmt>")
@login_required
def incidents(fmt: str | None) -> Any:
    """Show the incidents of the jurisdiction: single cases or counts, by the user's role."""
    user = current_user()
    assert user is not None
    settings = state().settings

    def build(limit: int | None) -> Table:
        filters = parse_incident_filters(
            request.args,
            category_names().keys(),
            summary_levels(area_tree(), current_jurisdiction(), settings.area_levels),
        )
        return incidents_table(
            state().engine,
            area_tree(),
            current_jurisdiction(),
            settings.area_levels,
            user.role,
            filters,
            settings.timezone,
            page=1 if fmt else _page(),
            limit=limit,
        )

    return _answer(build, "incidents", fmt)


@bp.get("/cameras", defaults={"fmt": None})
@bp.get("/cameras.<any(csv, xlsx):fmt>")
@roles_required(*CAMERA_ROLES)
def cameras(fmt: str | None) -> Any:
    """Show the cameras of the visible grids with their status."""

    def build(limit: int | None) -> Table:
        return cameras_table(
            state().engine,
            area_tree(),
            current_jurisdiction(),
            parse_camera_filters(request.args),
            state().settings.timezone,
            page=1 if fmt else _page(),
            limit=limit,
        )

    return _answer(build, "cameras", fmt)
