"""The command-centre screen (指挥中心大屏): ``/screen`` and the figures it refreshes from.

The page is complete when served (it works without scripts); ``static/js/screen.js`` then
polls ``/screen/data`` and swaps in the panels rendered here, so nothing flashes, and keeps
retrying with a growing pause while the server is away. A wall screen cannot type a
password: ``/screen?token=TOKEN`` with a ``viewer`` user's API token opens it (the token is
checked on every request by :func:`gridwatch.web.access.load_request_user`, and opens only
the screen, its data and its map frames).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, g, jsonify, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from gridwatch.areas import station_name
from gridwatch.mapdata import published_run_id
from gridwatch.screen import accountability_statuses, screen_figures
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import ImportBatch
from gridwatch.taxonomy import load_taxonomy
from gridwatch.web.access import (
    SCREEN_TOKEN_ARG,
    area_tree,
    current_jurisdiction,
    current_user,
    login_required,
)
from gridwatch.web.dashboard import local_today
from gridwatch.web.extensions import state
from gridwatch.web.mapcache import map_cache
from gridwatch.web.maps import MAP_TEXT

bp = Blueprint("screen", __name__, url_prefix="/screen")

#: Seconds between two refreshes of the figures.
POLL_SECONDS = 60
#: Seconds each map layer stays on the screen.
ROTATE_SECONDS = 30
#: Map layers the screen rotates through (one per frame), with the figure each one shows.
ROTATION: tuple[tuple[str, str], ...] = (
    ("choropleth", "incidents"),
    ("heat", "incidents"),
    ("hotspots", "incidents"),
    ("patrol", "patrol_minutes"),
)
#: Panels of the page, in the order of ``templates/screen/_panels.html``.
PANELS = ("status", "categories", "trend", "ranking", "cameras", "teams", "forecast")

STATUS_LABELS: dict[str, LazyString] = {
    "none": _l("No action"),
    "summons": _l("Summons"),
    "yellow_card": _l("Yellow card"),
    "listed": _l("Listed for remediation"),
    "veto": _l("One-vote veto"),
}
STALE_REASONS: dict[str, LazyString] = {
    "no_run": _l("No figures have been published yet."),
    "imports_waiting": _l("New imports are waiting and no refresh run has published them."),
    "nightly_missed": _l("The nightly recompute has not published for more than a day."),
}


def _token() -> str | None:
    return request.args.get(SCREEN_TOKEN_ARG) if g.get("auth") == "screen_token" else None


def _with_token(endpoint: str, **args: Any) -> str:
    token = _token()
    if token is not None:
        args[SCREEN_TOKEN_ARG] = token
    return url_for(endpoint, **args)


def _statuses() -> dict[str, Any]:
    """Return the survey accountability statuses, kept until the run or the imports change."""
    engine = state().engine
    with session_scope(engine) as session:
        last_batch = session.scalar(select(func.max(ImportBatch.id)))
    # The ladder depends on every township's survey, not on the jurisdiction: one entry.
    key = ("screen-statuses", published_run_id(engine), last_batch)
    found: dict[str, Any] = map_cache().get_or_build(
        key, lambda: accountability_statuses(engine, state().settings, area_tree())
    )
    return found


def _title() -> str:
    user = current_user()
    if user is not None and user.role == "station":
        return station_name(state().engine, user.station_id) or ""
    tree = area_tree()
    return "、".join(tree.nodes[i].name for i in current_jurisdiction().root_ids)


def trend_chart(
    trend: list[dict[str, Any]], width: int = 560, height: int = 200
) -> dict[str, Any]:
    """Return the geometry of the trend chart: one bar per week, scaled to the largest.

    Drawn as inline SVG by the template (no script, no inline style).
    """
    top = max([int(t["count"]) for t in trend] + [1])
    pad_left, pad_bottom, pad_top = 36, 28, 16
    inner_w, inner_h = width - pad_left, height - pad_bottom - pad_top
    step = inner_w / max(len(trend), 1)
    bars = []
    for i, week in enumerate(trend):
        bar_h = inner_h * int(week["count"]) / top
        bars.append(
            {
                "x": round(pad_left + i * step + step * 0.15, 1),
                "y": round(pad_top + inner_h - bar_h, 1),
                "w": round(step * 0.7, 1),
                "h": round(bar_h, 1),
                "count": int(week["count"]),
                "label": str(week["period"]).split("-W")[-1],
                "period": week["period"],
                "cx": round(pad_left + i * step + step / 2, 1),
                "current": i == len(trend) - 1,
            }
        )
    return {
        "width": width,
        "height": height,
        "top": top,
        "baseline": pad_top + inner_h,
        "left": pad_left,
        "label_y": height - 8,
        "bars": bars,
    }


def figures() -> dict[str, Any]:
    """Return the screen's figures for the signed-in user's jurisdiction."""
    user = current_user()
    return screen_figures(
        state().engine,
        state().settings,
        area_tree(),
        current_jurisdiction(),
        local_today(),
        datetime.now(UTC),
        station_id=user.station_id if user is not None else None,
        statuses=_statuses(),
    )


def _category_names() -> dict[str, str]:
    locale = str(get_locale() or "zh_CN")
    taxonomy = load_taxonomy(state().settings.categories_file)
    return {
        code: (c.zh if locale.startswith("zh") else c.en)
        for code, c in taxonomy.categories.items()
    }


def panel_context(data: dict[str, Any]) -> dict[str, Any]:
    """Return what the panel templates need besides the figures."""
    return {
        "data": data,
        "chart": trend_chart(data["trend"]),
        "category_names": _category_names(),
        "status_labels": STATUS_LABELS,
        "stale_reasons": STALE_REASONS,
        "category_top": max([max(r["today"], r["last_week"]) for r in data["categories"]] + [1]),
    }


def render_panels(data: dict[str, Any]) -> dict[str, str]:
    """Render each panel's inner HTML (escaped by Jinja) for the refresh."""
    context = panel_context(data)
    return {name: render_template("screen/_panels.html", panel=name, **context) for name in PANELS}


@bp.get("")
@login_required
def page() -> str:
    """Show the screen (its figures are in the page; the script keeps them fresh)."""
    data = figures()
    today = local_today()
    frames = [
        {
            "url": _with_token(
                "maps.frame",
                level="grid",
                period=data["ranking"]["period"],
                metric=metric,
                layers=layer,
            ),
            "label": str(MAP_TEXT[f"layer.{layer}"]),
        }
        for layer, metric in ROTATION
    ]
    return render_template(
        "screen/screen.html",
        title=_title(),
        panels=PANELS,
        frames=frames,
        data_url=_with_token("screen.data"),
        poll_seconds=POLL_SECONDS,
        rotate_seconds=ROTATE_SECONDS,
        timezone=state().settings.timezone.key,
        today=today,
        **panel_context(data),
    )


@bp.get("/data")
def data() -> Response:
    """Return the figures as JSON with each panel's HTML; 401 (not a redirect) without a user."""
    if current_user() is None:
        response = jsonify(error={"status": 401, "message": "authentication required"})
        response.status_code = 401
        return response
    found = figures()
    payload = {**found, "panels": render_panels(found)}
    return Response(
        json.dumps(payload, ensure_ascii=False, default=str), mimetype="application/json"
    )
