"""The camera-plan map: proposed sites (numbered), working cameras and blind-spot incidents.

:func:`plan_map` takes the plain layers of one township's camera plan
(:func:`gridwatch.targeting.plan_layers.camera_plan_layers`) and knows no request or database.
Four overlays in the layer control: the township's grid outlines, the existing working
cameras, the incidents no working camera saw (dark red where a proposed site would see them,
grey where none would) and the proposed sites, each a circle numbered in the plan's order with
its camera radius drawn round it. All data travels as escaped JSON and the popups are built
as DOM nodes with ``textContent``, so a camera or grid named ``<script>`` shows as written.
The document loads only the vendored Leaflet (see :mod:`gridwatch.maps.offline`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import folium
from branca.element import Element, MacroElement
from folium.template import Template

from gridwatch.maps.builder import Basemap, base_map
from gridwatch.maps.layers import ReadyFlag, script_json
from gridwatch.maps.offline import AssetUrl, default_asset_url, render_html

#: Colours of the map's marks.
PLAN_COLOURS: dict[str, str] = {
    "site": "#2b83ba",
    "camera": "#1a9641",
    "covered": "#b2182b",
    "uncovered": "#7f7f7f",
    "grid": "#555555",
}
#: English defaults of the map's labels; the web app passes translated ones.
DEFAULT_PLAN_TEXT: dict[str, str] = {
    "layer.grids": "Grids",
    "layer.cameras": "Working cameras",
    "layer.incidents": "Blind-spot incidents",
    "layer.sites": "Proposed camera sites",
    "site": "Proposed site",
    "grid": "Grid",
    "kind": "Candidate kind",
    "adds": "Incidents it adds",
    "camera": "Camera",
    "type": "Type",
    "incident": "Blind-spot incident",
    "covered_by": "Seen by proposed site",
    "not_covered": "none",
    "legend.covered": "Would be seen by a proposed site",
    "legend.uncovered": "Still unseen",
}
#: Marker and legend styles (classes only; the script sets colours through the CSSOM).
PLAN_CSS = """
.gw-site-icon { background: none; border: none; }
.gw-site-number {
  display: flex; align-items: center; justify-content: center; box-sizing: border-box;
  width: 24px; height: 24px; border-radius: 50%; border: 2px solid #ffffff;
  color: #ffffff; font-weight: 700; font-size: 12px; box-shadow: 0 0 3px rgba(0, 0, 0, 0.6);
}
.gw-plan-popup { border-collapse: collapse; }
.gw-plan-popup th { text-align: left; font-weight: 600; padding: 1px 8px 1px 0;
  white-space: nowrap; }
.gw-plan-popup td { padding: 1px 0; }
.gw-plan-legend { background: #ffffff; padding: 6px 8px; border-radius: 4px;
  box-shadow: 0 0 4px rgba(0, 0, 0, 0.3); font-size: 12px; line-height: 18px; }
.gw-plan-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 6px; vertical-align: middle; }
"""


class PlanLayers(MacroElement):
    """Draws the plan's four overlays and a legend (see the module docstring)."""

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        (function (map, data, text, colours) {
          function popup(rows) {
            var table = document.createElement('table');
            table.className = 'gw-plan-popup';
            rows.forEach(function (r) {
              var tr = table.insertRow();
              var th = document.createElement('th');
              th.textContent = r[0];
              tr.appendChild(th);
              tr.insertCell().textContent =
                r[1] === null || r[1] === undefined ? '—' : String(r[1]);
            });
            return table;
          }
          function named(label) {
            var span = document.createElement('span');
            span.textContent = label;
            return span.outerHTML;
          }
          var control = L.control.layers(null, null, {collapsed: false}).addTo(map);
          var grids = L.featureGroup();
          data.grids.forEach(function (grid) {
            L.polygon(grid.rings, {color: colours.grid, weight: 1, opacity: 0.7,
                                   fill: false, interactive: false}).addTo(grids);
          });
          var cameras = L.featureGroup();
          data.cameras.forEach(function (camera) {
            L.circleMarker([camera.lat, camera.lon],
                           {radius: 4, color: colours.camera, weight: 1, fillOpacity: 0.8})
              .bindPopup(function () {
                return popup([[text.camera, camera.name || camera.id],
                              [text.type, camera.type]]);
              })
              .addTo(cameras);
          });
          var incidents = L.featureGroup();
          data.blind_incidents.forEach(function (incident) {
            var colour = incident.covered_by ? colours.covered : colours.uncovered;
            L.circleMarker([incident.lat, incident.lon],
                           {radius: 3, color: colour, weight: 0, fillOpacity: 0.75})
              .bindPopup(function () {
                return popup([[text.incident, ''],
                              [text.grid, incident.grid || incident.grid_code],
                              [text.covered_by, incident.covered_by || text.not_covered]]);
              })
              .addTo(incidents);
          });
          var sites = L.featureGroup();
          data.sites.forEach(function (site) {
            L.circle([site.lat, site.lon], {radius: data.radius_m, color: colours.site,
                                            weight: 1, fillOpacity: 0.08, interactive: false})
              .addTo(sites);
            var box = document.createElement('div');
            box.className = 'gw-site-number';
            box.style.background = colours.site;
            box.textContent = String(site.number);
            L.marker([site.lat, site.lon],
                     {icon: L.divIcon({className: 'gw-site-icon', html: box, iconSize: [24, 24],
                                       iconAnchor: [12, 12], popupAnchor: [0, -12]}),
                      zIndexOffset: 1000})
              .bindPopup(function () {
                return popup([[text.site, site.number], [text.grid, site.grid || site.grid_code],
                              [text.kind, site.kind_label], [text.adds, site.covered_incidents]]);
              })
              .addTo(sites);
          });
          [[grids, 'layer.grids'], [cameras, 'layer.cameras'],
           [incidents, 'layer.incidents'], [sites, 'layer.sites']].forEach(function (pair) {
            pair[0].addTo(map);
            control.addOverlay(pair[0], named(text[pair[1]]));
          });
          var legend = L.control({position: 'bottomleft'});
          legend.onAdd = function () {
            var div = L.DomUtil.create('div', 'gw-plan-legend');
            [[colours.site, text['layer.sites']], [colours.camera, text['layer.cameras']],
             [colours.covered, text['legend.covered']],
             [colours.uncovered, text['legend.uncovered']]].forEach(function (entry) {
              var line = document.createElement('div');
              var swatch = document.createElement('span');
              swatch.className = 'gw-plan-swatch';
              swatch.style.background = entry[0];
              line.appendChild(swatch);
              line.appendChild(document.createTextNode(entry[1]));
              div.appendChild(line);
            });
            return div;
          };
          legend.addTo(map);
        })({{ this._parent.get_name() }}, {{ this.data_json }}, {{ this.text_json }},
           {{ this.colours_json }});
        {% endmacro %}
        """
    )

    def __init__(self, data: Mapping[str, Any], text: Mapping[str, str]) -> None:
        super().__init__()
        self._name = "PlanLayers"
        self.data_json = script_json(dict(data))
        self.text_json = script_json(dict(text))
        self.colours_json = script_json(PLAN_COLOURS)


def plan_map(
    layers: Mapping[str, Any],
    basemap: Basemap | None = None,
    text: Mapping[str, str] | None = None,
    kind_labels: Mapping[str, str] | None = None,
) -> folium.Map:
    """Build the camera-plan map of one township.

    Parameters
    ----------
    layers : mapping
        The plan's layers (:func:`gridwatch.targeting.plan_layers.camera_plan_layers`).
    basemap : Basemap, optional
        Tiles under the plan; none by default (the grid outlines are the map).
    text : mapping, optional
        Translated labels (keys of :data:`DEFAULT_PLAN_TEXT`).
    kind_labels : mapping, optional
        Translated names of the candidate kinds (``hotspot_cell``, ``grid_centre``, …).

    Returns
    -------
    folium.Map
    """
    labels = {**DEFAULT_PLAN_TEXT, **(text or {})}
    kinds = dict(kind_labels or {})
    box = layers.get("bounds")
    bounds = (float(box[0]), float(box[1]), float(box[2]), float(box[3])) if box else None
    fmap = base_map(basemap, bounds)
    fmap.get_root().header.add_child(Element(f"<style>{PLAN_CSS}</style>"), name="gw_plan_css")
    data = {
        "radius_m": float(layers.get("radius_m") or 0.0),
        "grids": list(layers.get("grids", [])),
        "cameras": list(layers.get("cameras", [])),
        "blind_incidents": list(layers.get("blind_incidents", [])),
        "sites": [
            {**site, "kind_label": kinds.get(site.get("kind", ""), site.get("kind"))}
            for site in layers.get("sites", [])
        ],
    }
    PlanLayers(data, labels).add_to(fmap)
    ReadyFlag().add_to(fmap)
    return fmap


def plan_map_html(
    layers: Mapping[str, Any],
    asset_url: AssetUrl = default_asset_url,
    **options: Any,
) -> str:
    """Render :func:`plan_map` as an HTML document that loads only the app's own files."""
    return render_html(plan_map(layers, **options), asset_url)


__all__ = ["DEFAULT_PLAN_TEXT", "PLAN_COLOURS", "PlanLayers", "plan_map", "plan_map_html"]
