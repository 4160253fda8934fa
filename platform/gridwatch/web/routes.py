"""Patrol routes in the browser: plan a station's shift, view it on a map, print it, GPX.

``/routes/`` lists the stations the user answers for (a station user their own, a township
user the stations covering their township, county users those of their county) with their
stored plans, and plans a new shift (roles that may import may plan; the form carries a CSRF
token). ``/routes/<id>`` shows one plan: per-team figures, the route map (its own document at
``/routes/<id>/frame`` with a per-response nonce, as ``/map/frame`` is served), a printable
Chinese route sheet and one GPX file per team. A plan of a station outside the user's
jurisdiction answers 404, like one that does not exist. The views only parse, call
:mod:`gridwatch.routing.plans` and render.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, DateField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Regexp, ValidationError

from gridwatch.routing.plans import (
    PlanningError,
    gpx_file_name,
    gpx_text,
    list_plans,
    load_plan,
    parse_shift,
    plan_station,
    plan_station_id,
    stations_in,
    store_plan,
)
from gridwatch.routing.travel import RoadNetworkError
from gridwatch.targeting.prevention import station_patrol_focus_or_note
from gridwatch.uploads import IMPORT_ROLES
from gridwatch.web.access import current_jurisdiction, current_user, login_required
from gridwatch.web.dashboard import local_today
from gridwatch.web.extensions import state
from gridwatch.web.maps import basemap, tile_origins, with_nonce
from gridwatch.web.security import content_security_policy

bp = Blueprint("routes", __name__, url_prefix="/routes")

#: Roles that may plan (the others only view the plans of their jurisdiction).
PLAN_ROLES = IMPORT_ROLES

#: Labels of the route map, through the catalogue.
ROUTE_TEXT = {
    "team": _l("Team"),
    "stop": _l("Stop"),
    "grid": _l("Grid"),
    "arrive": _l("Arrive"),
    "depart": _l("Depart"),
    "dwell": _l("Dwell (min)"),
    "risk": _l("Risk per minute"),
    "base": _l("Base"),
    "leave": _l("Leave base"),
    "return": _l("Back at base"),
    "focus": _l("Patrol-focus grid"),
    "focus_hours": _l("Patrol-focus grid %(hours)s h"),
    "focus_legend": _l("Patrol-focus grid of the prevention plan"),
}

#: Travel modes as shown on the pages.
MODE_TEXT = {"car": _l("Car"), "ebike": _l("E-bike"), "foot": _l("On foot")}


class PlanForm(FlaskForm):
    """Plan one shift of a station's teams."""

    station = SelectField(_l("Police station"), validators=[DataRequired()])
    day = DateField(_l("Date"), validators=[DataRequired()])
    shift = StringField(
        _l("Shift"),
        default="20:00-02:00",
        validators=[
            DataRequired(),
            Length(max=11),
            Regexp(
                r"^\d{1,2}:\d{2}-\d{1,2}:\d{2}$", message=_l("Write the shift as 20:00-02:00.")
            ),
        ],
    )

    plan_focus = BooleanField(
        _l("Weigh the prevention plan's patrol-focus grids (needs survey data)"), default=True
    )

    def validate_shift(self, field: StringField) -> None:
        """Check the shift as the planner will read it (real clock times, at most 16 hours)."""
        try:
            parse_shift(date(2026, 1, 1), str(field.data), ZoneInfo("UTC"))
        except PlanningError as exc:
            raise ValidationError(_l("Write the shift as 20:00-02:00.")) from exc


def visible_stations() -> list[dict[str, Any]]:
    """Return the stations whose townships the user may see (every one for a full admin)."""
    return stations_in(state().engine, current_jurisdiction().area_ids)


def plan_or_404(plan_id: int) -> dict[str, Any]:
    """Return a stored plan of a visible station; 404 for any other."""
    station_id = plan_station_id(state().engine, plan_id)
    if station_id is None or station_id not in {s["id"] for s in visible_stations()}:
        abort(404)
    return load_plan(state().engine, plan_id)


def may_plan() -> bool:
    """Return whether the signed-in user may make plans."""
    user = current_user()
    return user is not None and user.role in PLAN_ROLES


def _plan_form(stations: list[dict[str, Any]]) -> PlanForm:
    form = PlanForm()
    form.station.choices = [(s["code"], f"{s['name']}（{s['code']}）") for s in stations]
    if form.day.data is None and request.method == "GET":
        form.day.data = local_today()
    return form


def _index(form: PlanForm, error: str | None = None, status: int = 200) -> tuple[str, int]:
    stations = visible_stations()
    plans = list_plans(state().engine, [s["id"] for s in stations])
    return (
        render_template(
            "routes/index.html",
            form=form,
            stations=stations,
            plans=plans,
            may_plan=may_plan(),
            error=error,
        ),
        status,
    )


@bp.get("/")
@login_required
def index() -> tuple[str, int]:
    """List the user's stations and their stored plans; offer the planning form."""
    return _index(_plan_form(visible_stations()))


@bp.post("/")
@login_required
def plan() -> Any:
    """Plan the shift given in the form, store it and show it (400 with the reason if not)."""
    if not may_plan():
        abort(403)
    stations = visible_stations()
    form = _plan_form(stations)
    if not form.validate():
        return _index(form, status=400)
    day: date = form.day.data
    settings = state().settings
    station_code = str(form.station.data)
    focus, focus_note = (
        station_patrol_focus_or_note(state().engine, settings, station_code)
        if form.plan_focus.data
        else (None, None)
    )
    try:
        payload = plan_station(
            state().engine, settings, station_code, day, str(form.shift.data), focus_grids=focus
        )
    except (PlanningError, RoadNetworkError) as exc:
        return _index(form, error=str(exc), status=400)
    if focus_note:
        payload["plan_focus"]["note"] = focus_note
    plan_id = store_plan(state().engine, payload)
    return redirect(url_for("routes.show", plan_id=plan_id))


@bp.get("/<int:plan_id>")
@login_required
def show(plan_id: int) -> str:
    """Show one plan: figures per team, the map, links to the sheet and the GPX files.

    Once the shift has begun, the teams' adherence so far (from their GPS pings) is shown too.
    """
    from gridwatch.routing.adherence import plan_adherence

    payload = plan_or_404(plan_id)
    started = datetime.fromisoformat(payload["shift_start"]) <= datetime.now(UTC)
    adherence = (
        plan_adherence(state().engine, payload, state().settings.timezone) if started else None
    )
    return render_template(
        "routes/plan.html",
        plan=payload,
        plan_id=plan_id,
        modes=MODE_TEXT,
        gain=_gain(payload),
        adherence=adherence,
    )


def _gain(payload: dict[str, Any]) -> float | None:
    greedy = float(payload.get("greedy", {}).get("risk_covered") or 0.0)
    if greedy <= 0:
        return None
    return 100.0 * (float(payload["risk_covered"]) / greedy - 1.0)


@bp.get("/<int:plan_id>/frame")
@login_required
def frame(plan_id: int) -> Response:
    """Return the route map document (vendored Leaflet, a nonce on its inline code)."""
    from gridwatch.maps.routes import route_map_html

    payload = plan_or_404(plan_id)
    html = route_map_html(
        payload,
        lambda path: url_for("maps.asset", filename=path),
        basemap=basemap(),
        text={key: str(label) for key, label in ROUTE_TEXT.items()},
    )
    nonce = secrets.token_urlsafe(18)
    response = Response(with_nonce(html, nonce), mimetype="text/html")
    response.headers["Content-Security-Policy"] = content_security_policy(
        nonce, img_sources=tile_origins()
    )
    return response


@bp.get("/<int:plan_id>/sheet")
@login_required
def sheet(plan_id: int) -> str:
    """Return the printable route sheet (路线单): one page per team, always in Chinese.

    The sheet goes to the teams in the field, whatever language the planner reads. Stops in
    the prevention plan's patrol-focus grids are marked ★ with their peak hours.
    """
    from gridwatch.maps.routes import focus_hours

    payload = plan_or_404(plan_id)
    with force_locale("zh_CN"):
        return render_template(
            "routes/sheet.html",
            plan=payload,
            plan_id=plan_id,
            modes=MODE_TEXT,
            focus_hours=focus_hours(payload),
        )


@bp.get("/<int:plan_id>/gpx/<team_code>")
@login_required
def gpx(plan_id: int, team_code: str) -> Response:
    """Download one team's route as GPX (waypoints and a route, for the phones)."""
    payload = plan_or_404(plan_id)
    team = next((t for t in payload["teams"] if str(t["team_code"]) == team_code), None)
    if team is None:
        abort(404)
    response = Response(gpx_text(payload, team), mimetype="application/gpx+xml")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{gpx_file_name(payload, team)}"'
    )
    return response
