"""The patrol-route map: each team's route line, numbered stops and times, from a plan payload.

:func:`route_map` takes a stored plan as plain data (the ``gridwatch routes plan --json``
shape) and knows no request or database. Every team is one layer in the layer control, in its
own colour: a line from the base through the stops back to the base (the road path when the
caller passes one, straight legs otherwise), the base as a square, and each stop as a circle
numbered in visiting order. A stop's popup lists the team, grid, arrival, departure, dwell and
risk. A stop in one of the prevention plan's patrol-focus grids (the stop's ``focus`` flag,
its peak hours from the payload's ``plan_focus``) wears a ring, has a hover tooltip ("patrol-
focus grid 20–23 h") and the same line in its popup; a legend explains the ring when the plan
has such stops. All data travels as escaped JSON and the popups are built as DOM nodes with
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
    "focus": "Patrol-focus grid",
    "focus_hours": "Patrol-focus grid %(hours)s h",
    "focus_legend": "Patrol-focus grid of the prevention plan",
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
/* A patrol-focus stop: a dark and a yellow ring round the team-coloured number. */
.gw-stop-number.gw-stop-focus {
  box-shadow: 0 0 0 2px #1b1b1b, 0 0 0 5px #ffd21f, 0 0 0 6px #1b1b1b;
}
.gw-legend-ring {
  display: inline-block; flex: none; width: 12px; height: 12px; border-radius: 50%;
  margin: 0 4px; background: #8a8a8a; border: 2px solid #ffffff;
  box-shadow: 0 0 0 2px #1b1b1b, 0 0 0 5px #ffd21f, 0 0 0 6px #1b1b1b;
}
.gw-legend.gw-route-legend { max-width: none; white-space: nowrap; }
.gw-route-popup caption { text-align: left; font-weight: 600; padding-bottom: 2px; }
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
          function popup(rows, caption) {
            var table = document.createElement('table');
            table.className = 'gw-route-popup';
            if (caption) { table.createCaption().textContent = caption; }
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
          function line(text) {
            var span = document.createElement('span');
            span.textContent = text;
            return span;
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
              var inner = stop.focus ? 'gw-stop-number gw-stop-focus' : 'gw-stop-number';
              var marker = L.marker(stop.at, {icon: icon('gw-stop-icon', inner, team.colour, 24,
                                                         stop.number)})
                .bindPopup(function () {
                  return popup([[text.team, team.code], [text.stop, stop.number],
                                [text.grid, stop.grid], [text.arrive, stop.arrive],
                                [text.depart, stop.depart], [text.dwell, stop.dwell],
                                [text.risk, stop.risk]], stop.focus);
                });
              if (stop.focus) {
                marker.bindTooltip(line(stop.focus), {direction: 'top', offset: [0, -14]});
              }
              marker.addTo(group);
            });
            group.addTo(map);
            var label = document.createElement('span');
            label.textContent = team.code;
            control.addOverlay(group, label.outerHTML);
          });
          var focused = teams.some(function (team) {
            return team.stops.some(function (stop) { return stop.focus; });
          });
          if (focused) {
            var legend = L.control({position: 'bottomleft'});
            legend.onAdd = function () {
              var box = L.DomUtil.create('div', 'gw-legend gw-route-legend');
              var item = L.DomUtil.create('div', 'gw-legend-item', box);
              L.DomUtil.create('span', 'gw-legend-ring', item);
              L.DomUtil.create('span', 'gw-legend-text', item).textContent = text.focus_legend;
              return box;
            };
            legend.addTo(map);
          }
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


def hour_spans(hours: Sequence[int]) -> str:
    """Return local hours as spans, e.g. ``[20, 21, 22]`` → ``"20–23"``, ``[23, 0]`` → ``"23–01"``.

    Runs of consecutive hours (wrapping midnight) become ``start–end`` (end exclusive), several
    runs are joined by ``、``; no hours give ``""``.
    """
    present = {int(h) % 24 for h in hours}
    if not present:
        return ""
    if len(present) == 24:
        return "00–24"
    spans = []
    for start in sorted(h for h in present if (h - 1) % 24 not in present):
        end = start + 1
        while end % 24 in present:
            end += 1
        spans.append(f"{start:02d}–{end % 24:02d}")
    return "、".join(spans)


def focus_hours(payload: Mapping[str, Any]) -> dict[str, str]:
    """Return the plan's patrol-focus grids: grid code → their peak hours as :func:`hour_spans`.

    From ``plan_focus["grids"]`` as :func:`gridwatch.routing.plans.add_plan_focus` stores it
    (empty for a plan made without the focus grids, or stored before they existed).
    """
    grids = (payload.get("plan_focus") or {}).get("grids") or []
    return {str(g["grid_code"]): hour_spans(g.get("peak_hours") or ()) for g in grids}


def focus_line(hours: str, label: str, template: str) -> str:
    """Return the line of a patrol-focus stop: ``template`` with ``%(hours)s`` as ``hours``.

    A grid without peak hours (no recent incidents) gets ``label`` alone.
    """
    return template.replace("%(hours)s", hours) if hours else label


def route_features(
    payload: Mapping[str, Any],
    paths: Mapping[int, Sequence[tuple[float, float]]] | None = None,
    base_label: str = "",
    focus_label: str = DEFAULT_ROUTE_TEXT["focus"],
    focus_template: str = DEFAULT_ROUTE_TEXT["focus_hours"],
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
    focus_label, focus_template : str
        The line of a patrol-focus stop without peak hours, and with them (``%(hours)s``).

    Returns
    -------
    list of dict
        ``code``, ``colour``, ``base`` [lat, lon], ``path`` [[lat, lon], …], ``leave``,
        ``back`` and ``stops`` (``number``, ``at``, ``grid``, ``arrive``, ``depart``,
        ``dwell``, ``risk``, ``focus``: the line of a patrol-focus stop, else ``None``), for
        teams with at least one stop.
    """
    peaks = focus_hours(payload)
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
                        "focus": (
                            focus_line(
                                peaks.get(str(stop["grid_code"]), ""),
                                focus_label,
                                focus_template,
                            )
                            if stop.get("focus")
                            else None
                        ),
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
    teams = route_features(
        payload,
        paths,
        base_label=labels["base"],
        focus_label=labels["focus"],
        focus_template=labels["focus_hours"],
    )
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
    "focus_hours",
    "focus_line",
    "hour_spans",
    "route_features",
    "route_map",
    "route_map_html",
]
