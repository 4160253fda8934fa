"""Area pages: any township, village or grid, with drill-down to the areas below it."""

from __future__ import annotations

from flask import Blueprint, render_template

from gridwatch.overview import key_figures, last_refresh, ranking
from gridwatch.web.access import (
    area_tree,
    current_jurisdiction,
    login_required,
    visible_area_or_404,
)
from gridwatch.web.dashboard import local_today, period_choices, ranking_period
from gridwatch.web.extensions import state

bp = Blueprint("areas", __name__, url_prefix="/areas")

#: Layers an area's own map opens with: its grids' figures, incident heat, Gi* hot spots and
#: cameras (the rest stay in the map's layer control).
AREA_MAP_LAYERS = ("heat", "choropleth", "hotspots", "cameras")


def area_map_args(code: str, period: str) -> dict[str, str]:
    """Return the query of the map focused on area ``code``: its grids, for ``period``."""
    return {"area": code, "level": "grid", "period": period, "layers": ",".join(AREA_MAP_LAYERS)}


@bp.get("/<code>")
@login_required
def show(code: str) -> str:
    """One area: its key figures and the ranking of the areas directly below it."""
    node = visible_area_or_404(code)
    engine = state().engine
    tree = area_tree()
    jurisdiction = current_jurisdiction()
    today = local_today()
    period = ranking_period(today)
    breadcrumb = [a for a in tree.ancestors(node.id) if a.id in jurisdiction]
    return render_template(
        "areas/area.html",
        area=node,
        breadcrumb=breadcrumb,
        figures=key_figures(engine, [node], today),
        ranking=ranking(
            engine, tree, jurisdiction, state().settings.area_levels, period.label, parent=node
        ),
        period=period,
        map_args=area_map_args(node.code, period.label),
        periods=period_choices(today),
        refresh=last_refresh(engine),
    )
