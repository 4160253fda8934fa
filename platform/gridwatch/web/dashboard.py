"""The overview page: the signed-in user's area at a glance (figures, trends, alerts, ranking)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask import Blueprint, abort, render_template, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from gridwatch.alerts import overview_alerts
from gridwatch.areas import station_name
from gridwatch.overview import (
    HEADLINE_GROUP,
    key_figures,
    last_refresh,
    line_chart,
    ranking,
    trend,
)
from gridwatch.periods import Period, PeriodError, PeriodKind, parse_period, period_of
from gridwatch.taxonomy import load_taxonomy
from gridwatch.web.access import area_tree, current_jurisdiction, current_user, login_required
from gridwatch.web.extensions import state

bp = Blueprint("dashboard", __name__)

#: Period kinds offered above the ranking table.
RANKING_KINDS: tuple[PeriodKind, ...] = ("week", "month", "quarter", "year")
#: Trend charts on the overview: (period kind, title).
TREND_CHARTS: tuple[tuple[PeriodKind, LazyString], ...] = (
    ("week", _l("Incidents per week")),
    ("month", _l("Incidents per month")),
)
#: Display names of the lines of a trend chart.
SERIES_LABELS: dict[str, LazyString] = {
    "total": _l("All incidents"),
    HEADLINE_GROUP: _l("Two robberies, one theft"),
}
#: Display names of the emerging hot-spot classes that are alerts.
HOTSPOT_CLASS_LABELS: dict[str, LazyString] = {
    "new": _l("New"),
    "intensifying": _l("Intensifying"),
}


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


def category_names() -> dict[str, str]:
    """Return category code → display name in the interface language."""
    chinese = str(get_locale() or "zh_CN").startswith("zh")
    taxonomy = load_taxonomy(state().settings.categories_file)
    return {code: (c.zh if chinese else c.en) for code, c in taxonomy.categories.items()}


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
    levels = state().settings.area_levels
    charts = (
        [
            {
                "title": chart_title,
                "chart": line_chart(trend(engine, roots, today, kind), ("total", HEADLINE_GROUP)),
            }
            for kind, chart_title in TREND_CHARTS
        ]
        if roots
        else []
    )
    return render_template(
        "dashboard/overview.html",
        title=title,
        roots=roots,
        figures=key_figures(engine, roots, today) if roots else [],
        ranking=ranking(
            engine,
            tree,
            jurisdiction,
            levels,
            period.label,
            # A station's overview ranks its townships, however many it covers.
            rank_roots=user is not None and user.role == "station",
        ),
        period=period,
        periods=period_choices(today),
        refresh=last_refresh(engine),
        charts=charts,
        series_labels=SERIES_LABELS,
        alerts=overview_alerts(
            engine,
            tree,
            jurisdiction,
            levels,
            today,
            station_id=user.station_id if user is not None else None,
        ),
        category_names=category_names(),
        hotspot_labels=HOTSPOT_CLASS_LABELS,
    )
