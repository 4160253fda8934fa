"""The daily situation report (每日治安形势分析): page, XLSX export and printable version.

The report is built once a day for the whole county by beat (``report.daily``, see
:mod:`gridwatch.workers.situation`) and stored; these views only cut out the reader's part
with :func:`~gridwatch.workers.situation.situation_for` and render or serialise it. A county
user sees the county and its townships, a station user their station and its townships, a
township user their own township; ``?area=CODE`` narrows to one visible township. The export
and the printed version are written in Chinese whatever the interface language: they are
documents to file and pass on.
"""

from __future__ import annotations

from datetime import date, timedelta
from io import BytesIO
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, send_file, url_for
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_wtf import FlaskForm
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from sqlalchemy import select
from werkzeug.wrappers import Response
from wtforms import HiddenField

from gridwatch.accounts import audit
from gridwatch.areas import AreaNode
from gridwatch.spreadsheet import safe_cell
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Station
from gridwatch.taxonomy import load_taxonomy
from gridwatch.web.access import (
    area_tree,
    client_ip,
    current_jurisdiction,
    current_user,
    login_required,
    roles_required,
    visible_area_or_404,
)
from gridwatch.web.dashboard import local_today
from gridwatch.web.extensions import state
from gridwatch.web.screen import STATUS_LABELS
from gridwatch.workers.situation import (
    COMPARISONS,
    build_daily_situation,
    get_daily_situation,
    report_days,
    situation_for,
)

bp = Blueprint("reports", __name__, url_prefix="/reports")

#: Roles that may build a missing report on demand (a viewer only reads the screen).
BUILD_ROLES = ("admin", "county", "station", "township")
#: Rows of each list shown on the page and in print (the XLSX export has every row).
LIST_LIMIT = 30
#: Language of the exported and printed report.
DOCUMENT_LOCALE = "zh_CN"

TEXT: dict[str, LazyString] = {
    "title": _l("Daily situation report"),
    "area": _l("Area"),
    "level": _l("Level"),
    "day": _l("Day"),
    "incidents": _l("Incidents"),
    "day_before": _l("Day before"),
    "week_before": _l("Same day last week"),
    "year_before": _l("Same day last year"),
    "change": _l("Change"),
    "group": _l("Category group"),
    "solved_not_notified": _l("Solved that day, victim not told"),
    "not_notified_open": _l("Solved, victim not told (all open)"),
    "cameras": _l("Cameras"),
    "cameras_not_working": _l("Cameras not working"),
    "summary": _l("Incidents against earlier days"),
    "groups": _l("By category group"),
    "township_groups": _l("Townships by category group"),
    "hotspots": _l("New and intensifying hot spots"),
    "displacement": _l("Displacement warnings"),
    "displacement_note": _l(
        "Grids next to a remediated hot spot (hot in at least 2 of 8 earlier weeks, not in "
        "the last 2) whose incidents in the last 7 days are at least 3 and 1.5 times their "
        "weekly mean of the 4 weeks before."
    ),
    "remediated": _l("Remediated hot spots"),
    "gone_offline": _l("Cameras gone offline"),
    "teams": _l("Inactive patrol teams"),
    "cases": _l("Solved cases without victim notification"),
    "ladder": _l("Townships at risk in the accountability ladder"),
    "grid": _l("Grid"),
    "village": _l("Village"),
    "hotspot_class": _l("Class"),
    "gi_star_z": _l("Gi* z"),
    "week_incidents": _l("Incidents in the week"),
    "incidents_window": _l("Incidents, last 7 days"),
    "baseline_weekly": _l("Weekly mean before"),
    "remediated_neighbours": _l("Remediated neighbours"),
    "last_hot_week": _l("Last hot week"),
    "camera": _l("Camera"),
    "name": _l("Name"),
    "status": _l("Status"),
    "team": _l("Team"),
    "kind": _l("Kind"),
    "home": _l("Home area"),
    "last_patrol": _l("Last patrol"),
    "case": _l("Case"),
    "category": _l("Category"),
    "solved_on": _l("Solved on"),
    "days_waiting": _l("Days waiting"),
    "quarter": _l("Survey quarter"),
    "score": _l("Score"),
    "place": _l("Place from bottom"),
    "streak": _l("Quarters in the bottom in a row"),
    "next_status": _l("If in the bottom again"),
    "none_found": _l("None."),
    "no_comparison": _l("No earlier report to compare with: cameras not working now are"),
    "open_total": _l("Open, in all"),
    "solved_on_day": _l("Solved on the day"),
    "generated": _l("Generated"),
    "run": _l("Run"),
    "township": _l("Township"),
    "station": _l("Police station"),
    "county": _l("County"),
    "jurisdiction": _l("Jurisdiction"),
    "no_survey": _l("No survey wave yet."),
}

HOTSPOT_CLASSES: dict[str, LazyString] = {
    "new": _l("New"),
    "intensifying": _l("Intensifying"),
}
CAMERA_STATUSES: dict[str, LazyString] = {
    "offline": _l("Offline"),
    "broken": _l("Broken"),
}


class BuildReportForm(FlaskForm):
    """Build the report of a day that has none yet (a POST, so it carries a CSRF token)."""

    day = HiddenField()


def _day() -> date:
    """Return the day asked for with ``?day=`` (default: yesterday); 400 if bad or future."""
    raw = request.args.get("day", "").strip()
    today = local_today()
    if not raw:
        return today - timedelta(days=1)
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        abort(400)
    if day > today or day.year < 2000:
        abort(400)
    return day


def _scope() -> dict[str, Any]:
    """Return the reader's part of the tree: head rows, townships, station, title."""
    tree = area_tree()
    jurisdiction = current_jurisdiction()
    user = current_user()
    code = request.args.get("area", "").strip()
    if code:
        node = visible_area_or_404(code)
        if node.level not in ("county", "township"):
            abort(404)
        inside = tree.subtree(node.id)
        return {
            "heads": [node.code],
            "townships": _township_codes(tree.nodes[i] for i in inside),
            "station": None,
            "sees_all": False,
            "title": node.name,
            "area": node.code,
        }
    roots = [tree.nodes[i] for i in jurisdiction.root_ids]
    visible = _township_codes(tree.nodes[i] for i in jurisdiction.area_ids)
    if user is not None and user.role == "station" and user.station_id is not None:
        with session_scope(state().engine) as session:
            found = session.execute(
                select(Station.code, Station.name).where(Station.id == user.station_id)
            ).first()
        if found is not None:
            return {
                "heads": [found.code],
                "townships": visible,
                "station": found.code,
                "sees_all": False,
                "title": found.name,
                "area": None,
            }
    return {
        "heads": [n.code for n in roots],
        "townships": visible,
        "station": None,
        "sees_all": any(n.parent_id is None for n in roots),
        "title": "、".join(n.name for n in roots),
        "area": None,
    }


def _township_codes(nodes: Any) -> set[str]:
    return {n.code for n in nodes if isinstance(n, AreaNode) and n.level == "township"}


def _view(day: date) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    scope = _scope()
    report = get_daily_situation(state().engine, day)
    if report is None:
        return None, scope
    view = situation_for(
        report, scope["heads"], scope["townships"], scope["station"], scope["sees_all"]
    )
    return view, scope


def _names() -> dict[str, dict[str, str]]:
    """Category and group display names in the current language."""
    english = not str(get_locale() or DOCUMENT_LOCALE).startswith("zh")
    taxonomy = load_taxonomy(state().settings.categories_file)
    return {
        "categories": {
            code: (c.en if english else c.zh) for code, c in taxonomy.categories.items()
        },
        "groups": {
            code: names.get("en" if english else "zh", code)
            for code, names in taxonomy.groups.items()
        },
    }


def _context(view: dict[str, Any] | None, scope: dict[str, Any], day: date) -> dict[str, Any]:
    names = _names()
    return {
        "view": view,
        "scope": scope,
        "day": day,
        "text": TEXT,
        "list_limit": LIST_LIMIT,
        "comparisons": COMPARISONS,
        "hotspot_classes": HOTSPOT_CLASSES,
        "camera_statuses": CAMERA_STATUSES,
        "status_labels": STATUS_LABELS,
        "category_names": names["categories"],
        "group_names": names["groups"],
        "area_names": {n.code: n.name for n in area_tree().nodes.values()},
    }


@bp.get("/daily")
@login_required
def daily() -> str:
    """Show the report of ``?day=`` (default yesterday) for the reader's jurisdiction."""
    day = _day()
    view, scope = _view(day)
    user = current_user()
    tree = area_tree()
    visible = [tree.nodes[i] for i in current_jurisdiction().area_ids]
    choices = sorted((n.code, n.name) for n in visible if n.level == "township")
    return render_template(
        "reports/daily.html",
        township_choices=choices,
        days=report_days(state().engine),
        today=local_today(),
        build_form=BuildReportForm(day=day.isoformat()),
        may_build=user is not None and user.role in BUILD_ROLES,
        **_context(view, scope, day),
    )


@bp.post("/daily")
@roles_required(*BUILD_ROLES)
def build() -> Response:
    """Build (or rebuild) the report of the posted day from the published run."""
    form = BuildReportForm()
    try:
        day = date.fromisoformat(form.day.data or "")
    except ValueError:
        abort(400)
    if day > local_today():
        abort(400)
    report = build_daily_situation(state().engine, state().settings, day)
    if report["run_id"] is None:
        flash(_("No figures have been published yet."), "error")
    return redirect(url_for("reports.daily", day=day.isoformat()))


@bp.get("/daily/print")
@login_required
def printable() -> str:
    """Show the report as a printable A4 document, in Chinese."""
    day = _day()
    view, scope = _view(day)
    if view is None:
        abort(404)
    with force_locale(DOCUMENT_LOCALE):
        return render_template("reports/print.html", **_context(view, scope, day))


@bp.get("/daily.xlsx")
@login_required
def export_xlsx() -> Response:
    """Send the report as an XLSX workbook (in Chinese), recorded in the audit log."""
    day = _day()
    view, scope = _view(day)
    if view is None:
        abort(404)
    with force_locale(DOCUMENT_LOCALE):
        payload = situation_workbook(view, scope["title"], _names())
    name = f"situation-{day.isoformat()}{'-' + scope['area'] if scope['area'] else ''}.xlsx"
    audit(
        state().engine,
        "export",
        actor=current_user(),
        ip=client_ip(),
        target=f"/reports/daily.xlsx?day={day.isoformat()}",
        detail={
            "format": "xlsx",
            "report": "daily_situation",
            "day": day.isoformat(),
            "scope": scope["heads"],
            "bytes": len(payload),
        },
    )
    return send_file(
        BytesIO(payload),
        mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        as_attachment=True,
        download_name=name,
    )


def _pct(value: Any) -> Any:
    return None if value is None else round(float(value), 1)


def situation_workbook(
    view: dict[str, Any], title: str, names: dict[str, dict[str, str]]
) -> bytes:
    """Write a report view (:func:`situation_for`) as an XLSX workbook, one sheet per part.

    Every cell goes through ``safe_cell``: names, codes and categories come from imported
    files and must never run as a formula.
    """
    book = Workbook()
    bold = Font(bold=True)
    first = True

    def sheet(name: str, headers: list[Any], rows: list[list[Any]]) -> None:
        nonlocal first
        ws = book.active if first else book.create_sheet()
        assert ws is not None
        first = False
        ws.title = str(name)[:31]
        ws.append([safe_cell(f"{TEXT['title']} {view['day']} {title}")])
        ws["A1"].font = Font(bold=True, size=13)
        ws.append([safe_cell(str(h)) for h in headers])
        for cell in ws[2]:
            cell.font = bold
            cell.alignment = Alignment(wrap_text=True)
        for row in rows:
            ws.append([safe_cell(v) for v in row])
        if not rows:
            ws.append([str(TEXT["none_found"])])
        for index, _header in enumerate(headers, start=1):
            letter = ws.cell(row=2, column=index).column_letter
            ws.column_dimensions[letter].width = 16
        ws.freeze_panes = "A3"

    compare_headers: list[Any] = []
    for name in COMPARISONS:
        compare_headers += [TEXT[name], f"{TEXT['change']} %"]
    level_names = {"county": TEXT["county"], "station": TEXT["station"]}
    level_names.update({"township": TEXT["township"], "jurisdiction": TEXT["jurisdiction"]})
    summary = []
    for row in [*view["heads"], *view["townships"]]:
        values: list[Any] = [
            row["name"] or title,
            str(level_names.get(row["level"], row["level"])),
            row["incidents"],
        ]
        for name in COMPARISONS:
            values += [row.get(name), _pct(row.get(f"change_{name}_pct"))]
        values += [
            row.get("not_notified_on_day"),
            row.get("not_notified_open"),
            row.get("cameras_total"),
            None
            if row.get("cameras_total") is None
            else int(row["cameras_total"]) - int(row.get("cameras_working") or 0),
        ]
        summary.append(values)
    sheet(
        str(TEXT["summary"]),
        [
            TEXT["area"],
            TEXT["level"],
            TEXT["incidents"],
            *compare_headers,
            TEXT["solved_not_notified"],
            TEXT["not_notified_open"],
            TEXT["cameras"],
            TEXT["cameras_not_working"],
        ],
        summary,
    )
    group_rows = []
    for g in view["group_rows"]:
        values = [names["groups"].get(g["code"], g["zh"]), g["day"]]
        for name in COMPARISONS:
            values += [g[name], _pct(g[f"change_{name}_pct"])]
        group_rows.append(values)
    sheet(str(TEXT["groups"]), [TEXT["group"], TEXT["incidents"], *compare_headers], group_rows)
    codes = [g["code"] for g in view["group_rows"]]
    sheet(
        str(TEXT["township_groups"]),
        [TEXT["township"], TEXT["incidents"], *(names["groups"].get(c, c) for c in codes)],
        [
            [t["name"], t["incidents"], *(int(t["by_group"].get(c, 0)) for c in codes)]
            for t in view["townships"]
        ],
    )
    sheet(
        str(TEXT["hotspots"]),
        [TEXT["grid"], TEXT["village"], TEXT["hotspot_class"], TEXT["gi_star_z"]]
        + [TEXT["week_incidents"]],
        [
            [
                h["name"],
                h.get("parent_name"),
                str(HOTSPOT_CLASSES.get(h["hotspot_class"], h["hotspot_class"])),
                h.get("gi_star_z"),
                h.get("incidents"),
            ]
            for h in view["rising_hotspots"]
        ],
    )
    sheet(
        str(TEXT["displacement"]),
        [TEXT["grid"], TEXT["village"], TEXT["incidents_window"], TEXT["baseline_weekly"]]
        + [TEXT["remediated_neighbours"]],
        [
            [
                d["name"],
                d.get("parent_name"),
                d["incidents_window"],
                d["baseline_weekly"],
                "、".join(d["remediated_neighbours"]),
            ]
            for d in view["displacement"]
        ],
    )
    gone = view["cameras"]["gone_offline"] or []
    sheet(
        str(TEXT["gone_offline"]),
        [TEXT["camera"], TEXT["name"], TEXT["status"], TEXT["grid"]],
        [
            [
                c["code"],
                c.get("name"),
                str(CAMERA_STATUSES.get(c["status"], c["status"])),
                c.get("grid_name"),
            ]
            for c in gone
        ],
    )
    sheet(
        str(TEXT["teams"]),
        [TEXT["team"], TEXT["name"], TEXT["kind"], TEXT["home"], TEXT["last_patrol"]],
        [
            [t["code"], t["name"], t["kind"], t.get("home_name"), t.get("last_patrol_at")]
            for t in view["inactive_teams"]
        ],
    )
    sheet(
        str(TEXT["cases"]),
        [TEXT["case"], TEXT["category"], TEXT["solved_on"], TEXT["days_waiting"], TEXT["grid"]],
        [
            [
                c["source_id"],
                names["categories"].get(c["category"], c["category"]),
                c["solved_on"],
                c["days_waiting"],
                c.get("grid_name"),
            ]
            for c in view["not_notified"]["cases"]
        ],
    )
    sheet(
        str(TEXT["ladder"]),
        [TEXT["township"], TEXT["status"], TEXT["score"], TEXT["place"], TEXT["streak"]]
        + [TEXT["next_status"]],
        [
            [
                t["name"],
                str(STATUS_LABELS.get(t["status"], t["status"])),
                t.get("score"),
                t.get("place_from_bottom"),
                t.get("streak"),
                str(STATUS_LABELS.get(t["next_status"], t["next_status"])),
            ]
            for t in view["ladder"].get("townships", [])
        ],
    )
    out = BytesIO()
    book.save(out)
    return out.getvalue()
