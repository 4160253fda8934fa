"""The patrol-route map: each team's route line, numbered stops and times, from a plan payload.

:func:`route_map` takes a stored plan as plain data (the ``gridwatch routes plan --json``
shape) and knows no request or database. Every team is one layer in the layer control, in its
own colour: a line from the base through the stops back to the base (the road path when the
caller passes one, straight legs otherwise), the base as a square, and each stop as a circle
numbered in visiting order. A stop's popup lists the team, grid, arrival, departure, dwell and
risk. All data travels as escaped JSON and the popups are built as DOM nodes with
``textContent``, so a team code or label like ``<script>`` shows as written; the stop number
is set the same way. The document loads only the vendored Leaflet (see
:mod:`gridwatch.maps.offline`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import folium
from branca.element import Element, MacroElement
from folium.template import Template

from gridwatch.maps.builder import Basemap, base_map
from gridwatch.maps.layers import ReadyFlag, script_json
from gridwatch.maps.offline import AssetUrl, default_asset_url, render_html

#: Colours of the teams' routes, in team order (repeated after the last).
TEAM_COLOURS = (
    "#d7191c",
    "#2b83ba",
    "#1a9641",
    "#7b3294",
    "#fdae61",
    "#008837",
    "#e66101",
    "#5e3c99",
    "#018571",
    "#a6611a",
)

#: English defaults of the map's labels; the web app passes translated ones.
DEFAULT_ROUTE_TEXT: dict[str, str] = {
    "team": "Team",
    "stop": "Stop",
    "grid": "Grid",
    "arrive": "Arrive",
    "depart": "Depart",
    "dwell": "Dwell (min)",
    "risk": "Risk per minute",
    "base": "Base",
    "leave": "Leave base",
    "return": "Back at base",
}

#: Marker styles: a class per element, colours set by the script through the CSSOM.
ROUTE_CSS = """
.gw-stop-icon { background: none; border: none; }
.gw-stop-number {
  display: flex; align-items: center; justify-content: center; box-sizing: border-box;
  width: 24px; height: 24px; border-radius: 50%; border: 2px solid #ffffff;
  color: #ffffff; font-weight: 700; font-size: 12px; box-shadow: 0 0 3px rgba(0, 0, 0, 0.6);
}
.gw-base-mark {
  width: 16px; height: 16px; border: 2px solid #ffffff; box-sizing: border-box;
  box-shadow: 0 0 3px rgba(0, 0, 0, 0.6);
}
.gw-route-popup { border-collapse: collapse; }
.gw-route-popup th { text-align: left; font-weight: 600; padding: 1px 8px 1px 0; }
.gw-route-popup td { padding: 1px 0; }
"""


class RouteLayers(MacroElement):
    """Draws every team's route as its own overlay (see the module docstring)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map, teams, text) {
          function row(table, label, value) {
            var tr = table.insertRow();
            var th = document.createElement('th');
            th.textContent = label;
            tr.appendChild(th);
            tr.insertCell().textContent = value === null || value === undefined ? '—' : value;
          }
          function popup(rows) {
            var table = document.createElement('table');
            table.className = 'gw-route-popup';
            rows.forEach(function (r) { row(table, r[0], r[1]); });
            return table;
          }
          function icon(className, inner, colour, size, number) {
            var box = document.createElement('div');
            box.className = inner;
            box.style.background = colour;
            if (number !== null) { box.textContent = String(number); }
            return L.divIcon({className: className, html: box, iconSize: [size, size],
                              iconAnchor: [size / 2, size / 2], popupAnchor: [0, -size / 2]});
          }
          var control = L.control.layers(null, null, {collapsed: false}).addTo(map);
          teams.forEach(function (team) {
            var group = L.featureGroup();
            L.polyline(team.path, {color: team.colour, weight: 4, opacity: 0.85})
              .addTo(group);
            L.marker(team.base, {icon: icon('gw-stop-icon', 'gw-base-mark', team.colour, 16,
                                            null), zIndexOffset: 1000})
              .bindPopup(function () {
                return popup([[text.team, team.code], [text.base, team.base_label],
                              [text.leave, team.leave], [text['return'], team.back]]);
              })
              .addTo(group);
            team.stops.forEach(function (stop) {
              L.marker(stop.at, {icon: icon('gw-stop-icon', 'gw-stop-number', team.colour, 24,
                                            stop.number)})
                .bindPopup(function () {
                  return popup([[text.team, team.code], [text.stop, stop.number],
                                [text.grid, stop.grid], [text.arrive, stop.arrive],
                                [text.depart, stop.depart], [text.dwell, stop.dwell],
                                [text.risk, stop.risk]]);
                })
                .addTo(group);
            });
            group.addTo(map);
            var label = document.createElement('span');
            label.textContent = team.code;
            control.addOverlay(group, label.outerHTML);
          });
        })({{ this._parent.get_name() }}, {{ this.teams_json }}, {{ this.text_json }});
        {% endmacro %}
        """
    )

    def __init__(self, teams: list[dict[str, Any]], text: Mapping[str, str]) -> None:
        super().__init__()
        self._name = "RouteLayers"
        self.teams_json = script_json(teams)
        self.text_json = script_json(dict(text))


def _clock(iso: str | None) -> str | None:
    """Return ``HH:MM`` of a local ISO 8601 time (the sheet and popups show local times)."""
    return iso[11:16] if iso else None


def route_features(
    payload: Mapping[str, Any],
    paths: Mapping[int, Sequence[tuple[float, float]]] | None = None,
    base_label: str = "",
) -> list[dict[str, Any]]:
    """Return the per-team drawing data of a plan: colour, base, numbered stops and path.

    Parameters
    ----------
    payload : mapping
        A plan payload.
    paths : mapping, optional
        Team index → (lon, lat) points of the route on the roads; else the team's own
        ``path`` (stored with plans made on a road network); else straight legs.
    base_label : str
        Text for the base in its popup.

    Returns
    -------
    list of dict
        ``code``, ``colour``, ``base`` [lat, lon], ``path`` [[lat, lon], …], ``leave``,
        ``back`` and ``stops`` (``number``, ``at``, ``grid``, ``arrive``, ``depart``,
        ``dwell``, ``risk``), for teams with at least one stop.
    """
    teams = []
    for index, team in enumerate(payload.get("teams", [])):
        if not team.get("stops"):
            continue
        base = [float(team["base"]["lat"]), float(team["base"]["lon"])]
        points = [(float(s["lon"]), float(s["lat"])) for s in team["stops"]]
        if paths is not None and index in paths:
            line = [[float(lat), float(lon)] for lon, lat in paths[index]]
        elif team.get("path"):
            line = [[float(lat), float(lon)] for lon, lat in team["path"]]
        else:
            line = [base, *[[lat, lon] for lon, lat in points], base]
        teams.append(
            {
                "code": str(team.get("team_code", team.get("team_id"))),
                "colour": TEAM_COLOURS[index % len(TEAM_COLOURS)],
                "base": base,
                "base_label": base_label,
                "path": line,
                "leave": _clock(team.get("leave_base")),
                "back": _clock(team.get("return_base")),
                "stops": [
                    {
                        "number": number,
                        "at": [float(stop["lat"]), float(stop["lon"])],
                        "grid": (
                            f"{stop['grid_name']}（{stop['grid_code']}）"
                            if stop.get("grid_name")
                            else str(stop["grid_code"])
                        ),
                        "arrive": _clock(stop["arrive"]),
                        "depart": _clock(stop["depart"]),
                        "dwell": round(float(stop.get("dwell_min", 0.0))),
                        "risk": round(float(stop["risk"]), 3),
                    }
                    for number, stop in enumerate(team["stops"], start=1)
                ],
            }
        )
    return teams


def _bounds(payload: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    lons, lats = [], []
    for team in payload.get("teams", []):
        for point in [team["base"], *team.get("stops", [])]:
            lons.append(float(point["lon"]))
            lats.append(float(point["lat"]))
    if not lons:
        return None
    pad = 0.002
    return min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad


def route_map(
    payload: Mapping[str, Any],
    basemap: Basemap | None = None,
    text: Mapping[str, str] | None = None,
    paths: Mapping[int, Sequence[tuple[float, float]]] | None = None,
) -> folium.Map:
    """Build the map of a plan: one overlay per team with its line and numbered stops.

    Parameters
    ----------
    payload : mapping
        A plan payload (:func:`gridwatch.routing.plans.plan_payload`).
    basemap : Basemap, optional
        Tiles under the routes; none by default.
    text : mapping, optional
        Translated labels (keys of :data:`DEFAULT_ROUTE_TEXT`).
    paths : mapping, optional
        Road paths per team index (see :func:`route_features`).
    """
    labels = {**DEFAULT_ROUTE_TEXT, **(text or {})}
    fmap = base_map(basemap, _bounds(payload))
    fmap.get_root().header.add_child(Element(f"<style>{ROUTE_CSS}</style>"), name="gw_route_css")
    teams = route_features(payload, paths, base_label=labels["base"])
    RouteLayers(teams, labels).add_to(fmap)
    ReadyFlag().add_to(fmap)
    return fmap


def route_map_html(
    payload: Mapping[str, Any],
    asset_url: AssetUrl = default_asset_url,
    **options: Any,
) -> str:
    """Render :func:`route_map` as an HTML document that loads only the app's own files."""
    return render_html(route_map(payload, **options), asset_url)


__all__ = [
    "DEFAULT_ROUTE_TEXT",
    "TEAM_COLOURS",
    "RouteLayers",
    "route_features",
    "route_map",
    "route_map_html",
]
