"""The overview page: the signed-in user's area at a glance."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Blueprint, abort, render_template, request

from gridwatch.areas import station_name
from gridwatch.overview import key_figures, last_refresh, ranking
from gridwatch.periods import Period, PeriodError, PeriodKind, parse_period, period_of
from gridwatch.web.access import area_tree, current_jurisdiction, current_user, login_required
from gridwatch.web.extensions import state

bp = Blueprint("dashboard", __name__)

#: Period kinds offered above the ranking table.
RANKING_KINDS: tuple[PeriodKind, ...] = ("week", "month", "quarter", "year")


def local_today() -> date:
    """Return today's date in the configured time zone."""
    return datetime.now(UTC).astimezone(state().settings.timezone).date()


def ranking_period(today: date) -> Period:
    """Return the period asked for with ``?period=`` (default: this quarter); 400 if bad."""
    raw = request.args.get("period", "").strip()
    if not raw:
        return period_of(today, "quarter")
    try:
        return parse_period(raw)
    except PeriodError:
        abort(400)


def period_choices(today: date) -> list[Period]:
    """Return this week, month, quarter and year, for the ranking's period switch."""
    return [period_of(today, kind) for kind in RANKING_KINDS]


@bp.get("/")
@login_required
def index() -> str:
    """Key figures, ranking and last refresh for the user's whole jurisdiction."""
    engine = state().engine
    tree = area_tree()
    jurisdiction = current_jurisdiction()
    user = current_user()
    roots = [tree.nodes[i] for i in jurisdiction.root_ids]
    today = local_today()
    period = ranking_period(today)
    if user is not None and user.role == "station":
        title = station_name(engine, user.station_id) or ""
    else:
        title = "、".join(node.name for node in roots)
    return render_template(
        "dashboard/overview.html",
        title=title,
        roots=roots,
        figures=key_figures(engine, roots, today) if roots else [],
        ranking=ranking(
            engine,
            tree,
            jurisdiction,
            state().settings.area_levels,
            period.label,
            # A station's overview ranks its townships, however many it covers.
            rank_roots=user is not None and user.role == "station",
        ),
        period=period,
        periods=period_choices(today),
        refresh=last_refresh(engine),
    )
