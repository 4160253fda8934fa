"""Survey pages: township ranking and ladder, priorities and early warning, prevention plan.

Thin views over :mod:`gridwatch.targeting`: the domain functions compute county-wide results
(a ranking, a priority index and an early warning only mean something across the whole
county), which are kept per published run, import and survey data by
:mod:`gridwatch.targeting.survey_results` (in Redis when configured, warmed by a worker after
each publish), and each request then keeps only the rows of the reader's jurisdiction. A
township user sees their own township's place in the ranking (``rank`` of ``ranked``), never
another township's row.

The prevention plan follows the data tables' role rules (:mod:`gridwatch.tables`): single
cases of the victim follow-up list only for ``admin``, ``county`` and ``station`` users (case
id, category, dates and grid; never the address), counts per grid for the others; the repair
list of cameras not for ``viewer`` users; exports only for :data:`EXPORT_ROLES`, each recorded
in the audit log. The printable briefing and the XLSX briefing are in Chinese whatever the
interface language: they are documents to file and pass on.
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Callable
from io import BytesIO
from typing import Any, TypeVar

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask import g as request_state
from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from openpyxl import Workbook
from openpyxl.styles import Font

from gridwatch.accounts import audit
from gridwatch.areas import AreaNode
from gridwatch.periods import PeriodError, parse_period
from gridwatch.spreadsheet import safe_cell
from gridwatch.tables import CAMERA_ROLES, EXPORT_ROLES, INCIDENT_DETAIL_ROLES, csv_bytes
from gridwatch.targeting.rules import RulesError, TargetingError
from gridwatch.targeting.survey_results import (
    data_version,
    kept_result,
    survey_result,
)
from gridwatch.web.access import (
    area_tree,
    client_ip,
    current_jurisdiction,
    current_user,
    login_required,
    visible_area_or_404,
)
from gridwatch.web.extensions import state
from gridwatch.web.maps import basemap, tile_origins, with_nonce
from gridwatch.web.screen import STATUS_LABELS
from gridwatch.web.security import content_security_policy

T = TypeVar("T")

bp = Blueprint("survey", __name__, url_prefix="/survey")

#: Rows shown per list on the pages (exports carry every row).
LIST_LIMIT = 50
#: Language of the briefing (print and XLSX).
DOCUMENT_LOCALE = "zh_CN"
XLSX_MIMETYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

TEXT: dict[str, LazyString] = {
    "rankings": _l("Survey ranking"),
    "priorities": _l("Priorities and early warning"),
    "plan": _l("Prevention plan"),
    "briefing": _l("Quarterly survey briefing"),
    "period": _l("Survey quarter"),
    "township": _l("Township"),
    "village": _l("Village"),
    "grid": _l("Grid"),
    "county": _l("County"),
    "rank": _l("Rank"),
    "security": _l("Security %"),
    "ci": _l("Interval (95%)"),
    "rank_interval": _l("Rank interval"),
    "bottom_probability": _l("Chance of the bottom"),
    "respondents": _l("Respondents"),
    "status": _l("Status"),
    "history": _l("Status history"),
    "within_noise": _l("Within the noise: another sample could lift it out of the bottom."),
    "may_be_bottom": _l("May belong in the bottom within the noise."),
    "below_red_line": _l("Below the red line"),
    "red_line": _l("County red line"),
    "safe_county": _l("Safe-county title"),
    "annual_score": _l("Annual score"),
    "quarters": _l("Quarters"),
    "yes": _l("Yes"),
    "no": _l("No"),
    "provisional": _l("Year not complete"),
    "priority_index": _l("Priority index"),
    "top_factor": _l("Top dissatisfaction factor"),
    "explanation": _l("Why"),
    "early_warning": _l("Early warning"),
    "predicted": _l("Predicted security %"),
    "range": _l("Range (95%)"),
    "last": _l("Last quarter"),
    "at_risk": _l("At risk of the bottom"),
    "model_used": _l("Model used"),
    "model_not_used": _l("Model not used"),
    "cameras": _l("New camera sites"),
    "site": _l("Site"),
    "kind": _l("Kind"),
    "covered": _l("Blind-spot incidents reached"),
    "covered_before": _l("Seen by cameras now"),
    "covered_after": _l("Seen with the plan"),
    "greedy_after": _l("Seen with the greedy baseline"),
    "naive_after": _l("Seen with one camera per worst grid"),
    "incidents": _l("Incidents"),
    "repairs": _l("Cameras to repair first"),
    "camera": _l("Camera"),
    "name": _l("Name"),
    "would_see": _l("Blind-spot incidents it would see"),
    "patrol_focus": _l("Patrol focus"),
    "peak_hours": _l("Peak hours"),
    "night_share": _l("Night share %"),
    "publicity": _l("Publicity: door-to-door visits"),
    "awareness": _l("Awareness %"),
    "participation": _l("Participation %"),
    "county_median": _l("County median"),
    "follow_up": _l("Victims not told of the result"),
    "station": _l("Police station"),
    "case": _l("Case"),
    "category": _l("Category"),
    "occurred_at": _l("Occurred at"),
    "solved_at": _l("Solved at"),
    "cases": _l("Cases"),
    "none_found": _l("None."),
    "no_survey": _l("No survey quarter has been imported yet."),
    "exported": _l("Download"),
    "print": _l("Printable briefing"),
    "xlsx_briefing": _l("XLSX briefing"),
}
SITE_KINDS: dict[str, LazyString] = {
    "hotspot_cell": _l("Incident cluster"),
    "grid_centre": _l("Grid centre"),
    "junction": _l("Road junction"),
}
CAMERA_STATUS: dict[str, LazyString] = {"offline": _l("Disconnected"), "broken": _l("Faulty")}
#: Labels of the camera plan's map (keys of gridwatch.maps.plan.DEFAULT_PLAN_TEXT).
PLAN_MAP_TEXT: dict[str, LazyString] = {
    "layer.grids": _l("Grids"),
    "layer.cameras": _l("Working cameras"),
    "layer.incidents": _l("Blind-spot incidents"),
    "layer.sites": _l("Proposed camera sites"),
    "site": _l("Proposed site"),
    "grid": _l("Grid"),
    "kind": _l("Candidate kind"),
    "adds": _l("Incidents it adds"),
    "camera": _l("Camera"),
    "type": _l("Type"),
    "incident": _l("Blind-spot incident"),
    "covered_by": _l("Seen by proposed site"),
    "not_covered": _l("none"),
    "legend.covered": _l("Would be seen by a proposed site"),
    "legend.uncovered": _l("Still unseen"),
}


class SurveyRequestError(ValueError):
    """A request the survey pages cannot answer, with the one sentence saying why."""


# -- cached domain results -------------------------------------------------------------------


def _version() -> tuple[Any, ...]:
    """Return the data version the survey results are kept under (read once per request)."""
    if "survey_data_version" not in request_state:
        request_state.survey_data_version = data_version(state().engine)
    version: tuple[Any, ...] = request_state.survey_data_version
    return version


def _result(kind: str, params: tuple[Any, ...] = ()) -> Any:
    """Return a county-wide result, built once per run, import and survey data (not per user)."""
    engine, settings = state().engine, state().settings
    return _domain_errors(
        lambda: survey_result(engine, settings, kind, params, area_tree(), _version())
    )


def _cached(kind: str, params: tuple[Any, ...], build: Callable[[], T]) -> T:
    """Keep another county-wide value the same way (under the same run, import and data)."""
    return kept_result(state().engine, state().settings, kind, params, build, _version())


def survey_quarters() -> list[str]:
    """Return the imported quarterly survey waves, oldest first."""
    quarters: list[str] = _result("quarters")
    return quarters


def chosen_quarter(raw: str | None) -> str | None:
    """Return the quarter asked for (default: the newest wave; ``None`` without any).

    Raises
    ------
    SurveyRequestError
        When ``raw`` is not a quarter such as 2026Q3.
    """
    raw = (raw or "").strip()
    if not raw:
        waves = survey_quarters()
        return waves[-1] if waves else None
    try:
        period = parse_period(raw)
    except PeriodError as exc:
        raise SurveyRequestError(str(exc)) from exc
    if period.kind != "quarter":
        raise SurveyRequestError(
            f"the survey period must be a quarter such as 2026Q3, not {raw!r}"
        )
    return period.label


def _visible_codes() -> set[str]:
    tree, jurisdiction = area_tree(), current_jurisdiction()
    return {tree.nodes[i].code for i in jurisdiction.area_ids if i in tree.nodes}


def visible_townships() -> list[AreaNode]:
    """Return the reader's townships, by code."""
    tree, jurisdiction = area_tree(), current_jurisdiction()
    nodes = [tree.nodes[i] for i in jurisdiction.area_ids if i in tree.nodes]
    return sorted((n for n in nodes if n.level == "township"), key=lambda n: n.code)


def _domain_errors(call: Callable[[], T]) -> T:
    try:
        return call()
    except (PeriodError, RulesError, TargetingError) as exc:
        raise SurveyRequestError(str(exc)) from exc


def scoped_rankings(quarter: str | None) -> dict[str, Any]:
    """Return the township ranking of ``quarter`` cut to the reader's townships.

    The result of :func:`gridwatch.targeting.ranking.survey_ranking` (ranks and intervals
    across the whole county) with ``rows`` kept to visible townships, and ``counties``: the
    visible counties' red-line status from the ladder report.
    """
    if quarter is None:
        return {"period": None, "rows": [], "counties": [], "city": []}
    full = _result("ranking", (quarter,))
    ladder = _result("ladder")
    visible = _visible_codes()
    result = {k: v for k, v in full.items() if k != "rows"}
    result["rows"] = [r for r in full["rows"] if r["area_code"] in visible]
    result["counties"] = [c for c in ladder["counties"] if c["area_code"] in visible]
    # The city's share of safe counties is a figure about every county: county users only.
    sees_top = any(area_tree().nodes[i].parent_id is None for i in current_jurisdiction().root_ids)
    result["city"] = ladder["city"] if sees_top else []
    return result


def _village_priorities(quarter: str) -> dict[str, Any]:
    villages: dict[str, Any] = _result("priorities.village", (quarter,))
    return villages


def scoped_priorities(quarter: str | None, level: str = "village") -> dict[str, Any]:
    """Return the village or grid priority index of ``quarter`` cut to the jurisdiction.

    Ranks stay county-wide (an index means the same everywhere); ``rows`` holds only the
    visible areas.
    """
    if level not in ("village", "grid"):
        raise SurveyRequestError(f"level must be village or grid, not {level!r}")
    if quarter is None:
        return {"period": None, "level": level, "components": [], "rows": []}
    if level == "village":
        full = _village_priorities(quarter)
    else:
        full = _result("priorities.grid", (quarter,))
    visible = _visible_codes()
    result = {k: v for k, v in full.items() if k != "rows"}
    result["rows"] = [r for r in full["rows"] if r["area_code"] in visible]
    return result


def scoped_early_warning() -> dict[str, Any]:
    """Return next quarter's predicted scores of the reader's townships, with validation.

    The validation figures are the county's (the model is fitted across every township); the
    rows are only the visible townships'. ``used`` says whether the model beat persistence.
    """
    full = _result("early_warning")
    visible = _visible_codes()
    result = {k: v for k, v in full.items() if k != "rows"}
    result["rows"] = [r for r in full["rows"] if r["area_code"] in visible]
    result["used"] = full.get("method") == "ridge"
    return result


def _follow_up_for_role(stations: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    """Cut the victim follow-up list to what ``role`` may see (never an address)."""
    out = []
    for station in stations:
        cases = station["cases"]
        entry: dict[str, Any] = {
            "station_code": station["station_code"],
            "station_name": station["station_name"],
            "case_count": len(cases),
        }
        if role in INCIDENT_DETAIL_ROLES:
            entry["cases"] = [
                {k: c.get(k) for k in ("incident_id", "category_zh", "occurred_at", "solved_at")}
                | {"grid_code": c.get("grid_code")}
                for c in cases
            ]
        else:
            per_grid = Counter(str(c.get("grid_code")) for c in cases)
            entry["by_grid"] = [
                {"grid_code": code, "cases": n} for code, n in sorted(per_grid.items())
            ]
        out.append(entry)
    return out


def scoped_plan(township_code: str, quarter: str | None) -> dict[str, Any]:
    """Return the prevention plan of a visible township, cut to the reader's role."""
    node = visible_area_or_404(township_code)
    if node.level != "township":
        abort(404)
    full = _result("plan", (node.code, quarter))
    user = current_user()
    role = user.role if user is not None else "viewer"
    plan = {k: v for k, v in full.items() if k not in ("follow_up", "repairs")}
    plan["repairs"] = full["repairs"] if role in CAMERA_ROLES else None
    plan["follow_up"] = _follow_up_for_role(full["follow_up"], role)
    return plan


def scoped_plan_layers(township_code: str, quarter: str | None) -> dict[str, Any]:
    """Return the camera plan's map layers of a visible township, cut to the reader's role.

    Single incidents are points only for :data:`INCIDENT_DETAIL_ROLES`, cameras only for
    :data:`CAMERA_ROLES` (the data tables' rules); every reader sees the proposed sites.
    """
    from gridwatch.targeting.plan_layers import camera_plan_layers

    plan = scoped_plan(township_code, quarter)
    engine, settings = state().engine, state().settings
    full = _cached(
        "plan_layers",
        (township_code, quarter),
        lambda: _domain_errors(
            lambda: camera_plan_layers(engine, settings, plan["cameras"], area_tree())
        ),
    )
    role = _role()
    layers = dict(full)
    if role not in INCIDENT_DETAIL_ROLES:
        layers["blind_incidents"] = []
    if role not in CAMERA_ROLES:
        layers["cameras"] = []
    return layers


# -- views -----------------------------------------------------------------------------------


def _quarter_or_error() -> tuple[str | None, str | None]:
    try:
        return chosen_quarter(request.args.get("period")), None
    except SurveyRequestError as exc:
        return None, str(exc)


def _common(quarter: str | None, error: str | None) -> dict[str, Any]:
    tree = area_tree()
    return {
        "text": TEXT,
        "quarter": quarter,
        "quarters": survey_quarters(),
        "error": error,
        "status_labels": STATUS_LABELS,
        "site_kinds": SITE_KINDS,
        "camera_status": CAMERA_STATUS,
        "names": {n.code: n.name for n in tree.nodes.values()},
        "list_limit": LIST_LIMIT,
        "can_export": _may_export(),
    }


def _may_export() -> bool:
    user = current_user()
    return user is not None and user.role in EXPORT_ROLES


def _page(template: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(f"survey/{template}", **context), status


@bp.get("/")
@login_required
def index() -> Any:
    """Open the ranking."""
    return rankings()


@bp.get("/rankings")
@login_required
def rankings() -> Any:
    """Show the township ranking of a quarter with intervals and the ladder's status."""
    quarter, error = _quarter_or_error()
    result: dict[str, Any] = {"rows": [], "counties": [], "city": []}
    if error is None:
        try:
            result = scoped_rankings(quarter)
        except SurveyRequestError as exc:
            error = str(exc)
    return _page("rankings.html", 400 if error else 200, result=result, **_common(quarter, error))


@bp.get("/rankings.<any(csv, xlsx):fmt>")
@login_required
def rankings_export(fmt: str) -> Response:
    """Export the visible ranking with each township's status history (audit-logged)."""
    if not _may_export():
        abort(403)
    try:
        quarter = chosen_quarter(request.args.get("period"))
        result = scoped_rankings(quarter)
    except SurveyRequestError as exc:
        return Response(exc.args[0], status=400, mimetype="text/plain")
    if quarter is None:
        abort(404)
    headers, rows = ranking_table(result)
    if fmt == "csv":
        payload = csv_bytes(headers, rows)
        mimetype = "text/csv; charset=utf-8"
    else:
        payload = _workbook([(str(TEXT["rankings"]), headers, rows)], title=None)
        mimetype = XLSX_MIMETYPE
    _audit_export("survey_ranking", fmt, quarter, len(rows))
    response = Response(payload, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="gridwatch-survey-ranking-{quarter}.{fmt}"'
    )
    return response


@bp.get("/priorities")
@login_required
def priorities_page() -> Any:
    """Show the village and grid priority index and the early warning of the jurisdiction."""
    quarter, error = _quarter_or_error()
    villages: dict[str, Any] = {"rows": [], "components": []}
    grids: dict[str, Any] = {"rows": []}
    warning: dict[str, Any] = {"rows": [], "validation": {}, "used": False}
    if error is None:
        try:
            villages = scoped_priorities(quarter, "village")
            grids = scoped_priorities(quarter, "grid")
            warning = scoped_early_warning()
        except SurveyRequestError as exc:
            error = str(exc)
    return _page(
        "priorities.html",
        400 if error else 200,
        villages=villages,
        grids=grids,
        warning=warning,
        **_common(quarter, error),
    )


def _township_arg() -> AreaNode | None:
    """Return the township asked for with ``?township=`` (default: the reader's first)."""
    code = request.args.get("township", "").strip()
    if code:
        node = visible_area_or_404(code)
        if node.level != "township":
            abort(404)
        return node
    townships = visible_townships()
    return townships[0] if townships else None


@bp.get("/plan")
@login_required
def plan() -> Any:
    """Show the prevention plan of one of the reader's townships."""
    quarter, error = _quarter_or_error()
    township = _township_arg()
    result = None
    if error is None and township is not None:
        try:
            result = scoped_plan(township.code, quarter)
        except SurveyRequestError as exc:
            error = str(exc)
    return _page(
        "plan.html",
        400 if error else 200,
        plan=result,
        township=township,
        townships=visible_townships(),
        detail=_role() in INCIDENT_DETAIL_ROLES,
        can_edit_tasks=_role() in TASK_EDIT_ROLES,
        **_common(quarter, error),
    )


@bp.get("/plan/frame")
@login_required
def plan_frame() -> Any:
    """Return the camera plan's map document (vendored Leaflet, a nonce on its inline code)."""
    from gridwatch.maps.plan import plan_map_html

    quarter, error = _quarter_or_error()
    township = _township_arg()
    if error is not None or township is None:
        abort(404)
    try:
        layers = scoped_plan_layers(township.code, quarter)
    except SurveyRequestError:
        abort(404)
    html = plan_map_html(
        layers,
        lambda path: url_for("maps.asset", filename=path),
        basemap=basemap(),
        text={key: str(label) for key, label in PLAN_MAP_TEXT.items()},
        kind_labels={key: str(label) for key, label in SITE_KINDS.items()},
    )
    nonce = secrets.token_urlsafe(18)
    response = Response(with_nonce(html, nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = content_security_policy(
        nonce, img_sources=tile_origins()
    )
    return response


def _role() -> str:
    user = current_user()
    return user.role if user is not None else ""


def _briefing(township: AreaNode, quarter: str) -> dict[str, Any]:
    ranking = scoped_rankings(quarter)
    inside = area_tree().subtree(township.id)
    tree = area_tree()

    def under(code: str) -> bool:
        node = tree.by_code.get(code)
        return node is not None and node.id in inside

    warning = scoped_early_warning()
    return {
        "township": township,
        "quarter": quarter,
        "ranking": ranking,
        "row": next((r for r in ranking["rows"] if r["area_code"] == township.code), None),
        "villages": [
            r for r in scoped_priorities(quarter, "village")["rows"] if under(r["area_code"])
        ],
        "grids": [r for r in scoped_priorities(quarter, "grid")["rows"] if under(r["area_code"])],
        "warning": warning,
        "warning_row": next((r for r in warning["rows"] if r["area_code"] == township.code), None),
        "plan": scoped_plan(township.code, quarter),
    }


def _briefing_args() -> tuple[AreaNode, str]:
    township = _township_arg()
    if township is None:
        abort(404)
    assert township is not None
    try:
        quarter = chosen_quarter(request.args.get("period"))
    except SurveyRequestError as exc:
        abort(Response(exc.args[0], status=400, mimetype="text/plain"))
    if quarter is None:
        abort(404)
    assert quarter is not None
    return township, quarter


@bp.get("/briefing")
@login_required
def briefing() -> Any:
    """Show a township's quarterly briefing as a printable A4 document, in Chinese."""
    township, quarter = _briefing_args()
    try:
        with force_locale(DOCUMENT_LOCALE):
            data = _briefing(township, quarter)
            return render_template(
                "survey/briefing.html",
                b=data,
                detail=_role() in INCIDENT_DETAIL_ROLES,
                **_common(quarter, None),
            )
    except SurveyRequestError as exc:
        return Response(exc.args[0], status=400, mimetype="text/plain")


@bp.get("/briefing.xlsx")
@login_required
def briefing_xlsx() -> Response:
    """Send a township's quarterly briefing as an XLSX workbook (in Chinese, audit-logged)."""
    if not _may_export():
        abort(403)
    township, quarter = _briefing_args()
    try:
        with force_locale(DOCUMENT_LOCALE):
            payload = briefing_workbook(_briefing(township, quarter))
    except SurveyRequestError as exc:
        return Response(exc.args[0], status=400, mimetype="text/plain")
    _audit_export("survey_briefing", "xlsx", quarter, None, township.code)
    response = Response(payload, mimetype=XLSX_MIMETYPE)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="gridwatch-briefing-{township.code}-{quarter}.xlsx"'
    )
    return response


# -- prevention tasks ------------------------------------------------------------------------

#: Roles that may create tasks and change their status (viewers only read the board).
TASK_EDIT_ROLES = ("admin", "county", "station", "township")
#: Weeks before and after the done day over which a task's effect is measured.
TASK_EFFECT_WEEKS = 8
TASK_TEXT: dict[str, LazyString] = {
    "tasks": _l("Prevention tasks"),
    "task": _l("Task"),
    "new_task": _l("New task"),
    "make_task": _l("Make a task"),
    "title": _l("Title"),
    "detail": _l("What is to be done"),
    "grids": _l("Target grids"),
    "grid_codes_help": _l("Grid codes, separated by spaces or commas."),
    "assignee": _l("Assigned to"),
    "due": _l("Due"),
    "overdue": _l("Overdue"),
    "created": _l("Created"),
    "done_at": _l("Done on"),
    "change_status": _l("Change status"),
    "note": _l("Note"),
    "save": _l("Save"),
    "history": _l("History"),
    "source": _l("From the plan"),
    "effect": _l("Effect"),
    "displacement": _l("Displacement watch (neighbouring grids)"),
    "before": _l("Before"),
    "after": _l("After"),
    "target_grids": _l("Target grids"),
    "comparison_grids": _l("Comparable grids"),
    "did": _l("Difference in differences"),
    "ratio": _l("Ratio of ratios (interval 95%)"),
    "expected": _l("Expected"),
    "excess": _l("Excess"),
    "rising": _l("Rising"),
    "read_only": _l("Your role may read the tasks but not change them."),
    "no_tasks": _l("No tasks."),
}
TASK_KIND_LABELS: dict[str, LazyString] = {
    "camera": _l("New camera"),
    "repair": _l("Camera repair"),
    "patrol": _l("Patrol"),
    "publicity": _l("Publicity"),
    "follow_up": _l("Victim follow-up"),
    "other": _l("Other"),
}
TASK_STATUS_LABELS: dict[str, LazyString] = {
    "open": _l("Task status: open"),
    "in_progress": _l("Task status: in progress"),
    "done": _l("Task status: done"),
    "cancelled": _l("Task status: cancelled"),
}
TASK_VERDICTS: dict[str, LazyString] = {
    "reduced": _l("Incidents fell in the target grids beyond the comparable grids' change."),
    "increased": _l("Incidents rose in the target grids beyond the comparable grids' change."),
    "no_clear_change": _l("No change beyond chance against the comparable grids."),
    "no_comparison": _l("No comparable grid in the township: no estimate."),
}


def _may_edit_tasks() -> bool:
    return _role() in TASK_EDIT_ROLES


def _task_context() -> dict[str, Any]:
    return {
        "text": TEXT,
        "task_text": TASK_TEXT,
        "kind_labels": TASK_KIND_LABELS,
        "task_status_labels": TASK_STATUS_LABELS,
        "verdicts": TASK_VERDICTS,
        "can_edit": _may_edit_tasks(),
        "plan_lists": {
            name: TEXT[name]
            for name in ("cameras", "repairs", "patrol_focus", "publicity", "follow_up")
        },
    }


def _task_or_404(task_id: int) -> dict[str, Any]:
    from gridwatch.targeting.tasks import get_task

    task = get_task(state().engine, task_id, current_jurisdiction().area_ids, area_tree())
    if task is None:
        abort(404)
    assert task is not None
    return task


def _board(status: int = 200, form: dict[str, str] | None = None) -> tuple[str, int]:
    from gridwatch.storage.models import TASK_STATUSES
    from gridwatch.targeting.tasks import list_tasks

    found = list_tasks(state().engine, current_jurisdiction().area_ids, tree=area_tree())
    groups = [(s, [t for t in found if t["status"] == s]) for s in TASK_STATUSES]
    return (
        render_template(
            "survey/tasks.html",
            groups=groups,
            townships=visible_townships(),
            form=form or {},
            **_task_context(),
        ),
        status,
    )


@bp.get("/tasks")
@login_required
def tasks_board() -> Any:
    """Show the jurisdiction's prevention tasks grouped by status, with the form for a new one."""
    return _board()


@bp.post("/tasks")
@login_required
def tasks_create() -> Any:
    """Create a task by hand (township, kind, title, target grids, assignee, due day)."""
    from gridwatch.targeting.tasks import TaskError, create_task

    if not _may_edit_tasks():
        abort(403)
    form = {k: request.form.get(k, "").strip() for k in request.form if k != "csrf_token"}
    township = visible_area_or_404(form.get("township", ""))
    try:
        task = create_task(
            state().engine,
            state().settings,
            township_code=township.code,
            kind=form.get("kind", "other"),
            title=form.get("title", ""),
            detail=form.get("detail", ""),
            grid_codes=re.split(r"[\s,，;；]+", form.get("grids", "")),
            assignee=form.get("assignee", ""),
            due_date=form.get("due_date") or None,
            actor=current_user(),
            ip=client_ip(),
            tree=area_tree(),
        )
    except TaskError as exc:
        flash(str(exc), "error")
        return _board(400, form)
    return redirect(url_for("survey.task_page", task_id=task["id"]))


@bp.post("/tasks/from-plan")
@login_required
def tasks_from_plan() -> Any:
    """Make a task from one item of a township's prevention plan (the "make a task" buttons)."""
    from gridwatch.targeting.tasks import TaskError, create_task, task_from_plan_item

    if not _may_edit_tasks():
        abort(403)
    township = visible_area_or_404(request.form.get("township", "").strip())
    if township.level != "township":
        abort(404)
    try:
        quarter = chosen_quarter(request.form.get("period"))
        # The plan is read again (from the cache) so only a real item of a visible township
        # can become a task, whatever the form says.
        plan_data = scoped_plan(township.code, quarter)
        fields = task_from_plan_item(
            plan_data,
            request.form.get("list", ""),
            request.form.get("key", ""),
            area_tree(),
            state().settings,
        )
        task = create_task(
            state().engine,
            state().settings,
            actor=current_user(),
            ip=client_ip(),
            tree=area_tree(),
            **fields,
        )
    except (SurveyRequestError, TaskError) as exc:
        flash(str(exc), "error")
        return redirect(url_for("survey.plan", township=township.code))
    flash(_("Task %(id)s created.", id=task["id"]), "info")
    return redirect(url_for("survey.task_page", task_id=task["id"]))


def _visible_displacement(effect: dict[str, Any]) -> dict[str, Any]:
    """Keep the displacement rows of grids the reader may see (and say how many are hidden)."""
    shift = effect.get("displacement")
    if not shift:
        return effect
    visible = _visible_codes()
    rows = [r for r in shift["rows"] if r["grid_code"] in visible]
    return effect | {
        "displacement": shift
        | {
            "rows": rows,
            "hidden": len(shift["rows"]) - len(rows),
            "rising": sum(1 for r in rows if r["rising"]),
        }
    }


def scoped_tasks(status: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
    """Return the tasks of the reader's jurisdiction, newest first, by status and kind.

    Raises
    ------
    SurveyRequestError
        When ``status`` or ``kind`` is not one the tasks have.
    """
    from gridwatch.targeting.tasks import TaskError, list_tasks

    try:
        return list_tasks(
            state().engine,
            current_jurisdiction().area_ids,
            status=status,
            tree=area_tree(),
            kind=kind,
        )
    except TaskError as exc:
        raise SurveyRequestError(str(exc)) from exc


def scoped_task(task_id: int) -> dict[str, Any]:
    """Return a visible task with its history, effect and displacement watch (else 404).

    Neighbouring grids outside the reader's jurisdiction are left out of the displacement
    rows (``hidden`` counts them).
    """
    from gridwatch.targeting.tasks import task_effect, task_history

    task = _task_or_404(task_id)
    effect = _visible_displacement(
        task_effect(state().engine, state().settings, task_id, TASK_EFFECT_WEEKS, tree=area_tree())
    )
    return task | {"history": task_history(state().engine, task_id), "effect": effect}


@bp.get("/tasks/<int:task_id>")
@login_required
def task_page(task_id: int) -> Any:
    """Show a task with its history, its effect and the displacement watch."""
    from gridwatch.targeting.tasks import task_effect, task_history

    task = _task_or_404(task_id)
    effect = _visible_displacement(
        task_effect(state().engine, state().settings, task_id, TASK_EFFECT_WEEKS, tree=area_tree())
    )
    return render_template(
        "survey/task.html",
        task=task,
        effect=effect,
        history=task_history(state().engine, task_id),
        **_task_context(),
    )


@bp.post("/tasks/<int:task_id>/status")
@login_required
def task_status(task_id: int) -> Any:
    """Move a task to another status (only along the allowed transitions)."""
    from gridwatch.targeting.tasks import TaskError, change_status

    if not _may_edit_tasks():
        abort(403)
    _task_or_404(task_id)
    try:
        change_status(
            state().engine,
            task_id,
            request.form.get("status", ""),
            note=request.form.get("note", ""),
            township_ids=current_jurisdiction().area_ids,
            actor=current_user(),
            ip=client_ip(),
        )
    except TaskError as exc:
        flash(str(exc), "error")
    return redirect(url_for("survey.task_page", task_id=task_id))


# -- exports ---------------------------------------------------------------------------------


def _audit_export(
    report: str, fmt: str, quarter: str, rows: int | None, township: str | None = None
) -> None:
    detail: dict[str, Any] = {"format": fmt, "report": report, "period": quarter}
    if rows is not None:
        detail["rows"] = rows
    if township is not None:
        detail["township"] = township
    audit(
        state().engine,
        "export",
        actor=current_user(),
        ip=client_ip(),
        target=request.path.lstrip("/"),
        detail=detail,
    )


def _history_text(history: list[dict[str, Any]]) -> str:
    parts = [
        f"{h['period']} {STATUS_LABELS.get(h['status'], h['status'])}"
        for h in history
        if h["status"] != "none"
    ]
    return "; ".join(parts)


def ranking_table(result: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Return the ranking's header and rows for CSV / XLSX (status history as text)."""
    headers = [
        str(TEXT["rank"]),
        str(TEXT["township"]),
        "code",
        str(TEXT["security"]),
        str(TEXT["ci"]),
        str(TEXT["rank_interval"]),
        str(TEXT["bottom_probability"]),
        str(TEXT["respondents"]),
        str(TEXT["status"]),
        str(TEXT["history"]),
    ]
    rows = []
    for r in result["rows"]:
        ci = "" if r["ci_low"] is None else f"{r['ci_low']:.1f}–{r['ci_high']:.1f}"
        rows.append(
            [
                r["rank"],
                r["area_name"],
                r["area_code"],
                r.get("security_pct"),
                ci,
                f"{r['rank_best']}–{r['rank_worst']}",
                r["bottom_probability"],
                r["respondents"],
                str(STATUS_LABELS.get(r["status"] or "none", r["status"])),
                _history_text(r["status_history"]),
            ]
        )
    return headers, rows


def _workbook(sheets: list[tuple[str, list[str], list[list[Any]]]], title: str | None) -> bytes:
    """Write sheets (name, header, rows) as XLSX; every cell goes through ``safe_cell``."""
    book = Workbook()
    first = True
    for name, headers, rows in sheets:
        ws = book.active if first else book.create_sheet()
        assert ws is not None
        first = False
        ws.title = re.sub(r"[\[\]:*?/\\]", " ", name)[:31].strip() or "-"
        if title:
            ws.append([safe_cell(title)])
            ws["A1"].font = Font(bold=True, size=13)
        ws.append([safe_cell(h) for h in headers])
        for cell in ws[ws.max_row]:
            cell.font = Font(bold=True)
        for row in rows:
            ws.append([safe_cell(v) for v in row])
        if not rows:
            ws.append([str(TEXT["none_found"])])
        for index in range(1, len(headers) + 1):
            ws.column_dimensions[ws.cell(row=1, column=index).column_letter].width = 16
    out = BytesIO()
    book.save(out)
    return out.getvalue()


def briefing_workbook(b: dict[str, Any]) -> bytes:
    """Write a township's briefing (:func:`_briefing`) as an XLSX workbook, one sheet a part."""
    township: AreaNode = b["township"]
    title = f"{township.name} {b['quarter']} {TEXT['briefing']}"
    ranking_headers, ranking_rows = ranking_table({"rows": [b["row"]] if b["row"] else []})
    plan = b["plan"]
    cams = plan["cameras"]
    sheets: list[tuple[str, list[str], list[list[Any]]]] = [
        (str(TEXT["rankings"]), ranking_headers, ranking_rows),
        (
            str(TEXT["priorities"]),
            [str(TEXT["rank"]), str(TEXT["village"]), str(TEXT["priority_index"])]
            + [str(TEXT["security"]), str(TEXT["explanation"])],
            [
                [
                    r["rank"],
                    r["area_name"],
                    r["priority_index"],
                    r["security_pct"],
                    r["explanation"],
                ]
                for r in b["villages"]
            ],
        ),
        (
            str(TEXT["grid"]),
            [str(TEXT["rank"]), str(TEXT["grid"]), str(TEXT["priority_index"])]
            + [str(TEXT["explanation"])],
            [
                [r["rank"], r["area_name"], r["priority_index"], r["explanation"]]
                for r in b["grids"]
            ],
        ),
        (
            str(TEXT["early_warning"]),
            [str(TEXT["township"]), str(TEXT["predicted"]), str(TEXT["range"])]
            + [str(TEXT["last"]), str(TEXT["bottom_probability"]), str(TEXT["at_risk"])]
            + [str(TEXT["model_used"])],
            [
                [
                    township.name,
                    w["predicted_pct"],
                    f"{w['interval_low']:.1f}–{w['interval_high']:.1f}",
                    w["last_pct"],
                    w["bottom_probability"],
                    str(TEXT["yes"] if w["at_risk"] else TEXT["no"]),
                    str(TEXT["yes"] if b["warning"]["used"] else TEXT["no"]),
                ]
                for w in ([b["warning_row"]] if b["warning_row"] else [])
            ],
        ),
        (
            str(TEXT["cameras"]),
            [str(TEXT["site"]), "lon", "lat", str(TEXT["grid"]), str(TEXT["kind"])]
            + [str(TEXT["covered"])],
            [
                [
                    k,
                    s["lon"],
                    s["lat"],
                    s["grid_code"],
                    str(SITE_KINDS.get(s["kind"], s["kind"])),
                    s["covered_incidents"],
                ]
                for k, s in enumerate(cams["sites"], start=1)
            ]
            + [
                [str(TEXT["covered_before"]), cams["covered_before"]],
                [str(TEXT["covered_after"]), cams["covered_after"]],
                [str(TEXT["greedy_after"]), cams["greedy_covered_after"]],
                [str(TEXT["naive_after"]), cams["naive_covered_after"]],
            ],
        ),
    ]
    if plan["repairs"] is not None:
        sheets.append(
            (
                str(TEXT["repairs"]),
                [str(TEXT["camera"]), str(TEXT["name"]), str(TEXT["grid"])]
                + [str(TEXT["status"]), str(TEXT["would_see"])],
                [
                    [
                        r["camera_id"],
                        r["name"],
                        r["grid_code"],
                        str(CAMERA_STATUS.get(r["status"], r["status"])),
                        r["would_see_incidents"],
                    ]
                    for r in plan["repairs"]
                ],
            )
        )
    sheets.append(
        (
            str(TEXT["patrol_focus"]),
            [str(TEXT["grid"]), str(TEXT["priority_index"]), str(TEXT["incidents"])]
            + [str(TEXT["peak_hours"]), str(TEXT["night_share"])],
            [
                [
                    r["grid_name"],
                    r["priority_index"],
                    r["recent_incidents"],
                    r["peak_hours"],
                    r["night_share_pct"],
                ]
                for r in plan["patrol_focus"]
            ],
        )
    )
    sheets.append(
        (
            str(TEXT["publicity"]),
            [str(TEXT["village"]), str(TEXT["awareness"]), str(TEXT["participation"])],
            [
                [r["village_name"], r["awareness_pct"], r["participation_pct"]]
                for r in plan["publicity"]
            ],
        )
    )
    follow_rows: list[list[Any]] = []
    for station in plan["follow_up"]:
        for c in station.get("cases", []):
            follow_rows.append(
                [
                    station["station_name"],
                    c["incident_id"],
                    c["category_zh"],
                    c["solved_at"],
                    c["grid_code"],
                ]
            )
        for g in station.get("by_grid", []):
            follow_rows.append(
                [station["station_name"], None, None, None, g["grid_code"], g["cases"]]
            )
    sheets.append(
        (
            str(TEXT["follow_up"]),
            [str(TEXT["station"]), str(TEXT["case"]), str(TEXT["category"])]
            + [str(TEXT["solved_at"]), str(TEXT["grid"]), str(TEXT["cases"])],
            follow_rows,
        )
    )
    return _workbook(sheets, title)


__all__ = [
    "SurveyRequestError",
    "bp",
    "chosen_quarter",
    "scoped_early_warning",
    "scoped_plan",
    "scoped_priorities",
    "scoped_rankings",
]
