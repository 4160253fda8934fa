"""The camera layer: clustered camera points coloured by status, view sectors at high zoom.

Cameras travel to the page as one compact table (:func:`camera_payload`: a row of a few
rounded numbers and short strings per camera) instead of GeoJSON, so 15,000 cameras stay a few
hundred kB, and the web app sends them only when the layer is first switched on.
``gridwatch-map.js`` clusters them with Leaflet.markercluster, colours each point by status,
draws the view sectors (direction, angle, range; a 50 m circle when the direction is unknown)
only from zoom :data:`SECTOR_MIN_ZOOM`, within the visible part of the map, and builds the
popups with ``textContent``, so a camera named ``<script>`` shows as written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import folium
import pandas as pd
from folium.elements import JSCSSMixin
from folium.template import Template

from gridwatch.maps.layers import COORD_DIGITS, Legend, script_json

#: Camera statuses as stored, in legend order, with their colours.
CAMERA_COLOURS: dict[str, str] = {
    "online": "#1a9641",
    "offline": "#7f7f7f",
    "broken": "#d7191c",
}
#: Zoom level from which view sectors are drawn (about 2 m per pixel).
SECTOR_MIN_ZOOM = 16
#: Radius of the view circle of a camera without a known direction, in metres.
UNKNOWN_RANGE_M = 50.0
#: Columns of a payload row, in order.
ROW_COLUMNS = (
    "lat",
    "lon",
    "status",
    "direction_deg",
    "fov_deg",
    "range_m",
    "id",
    "name",
    "type",
    "resolution",
)


def _number(value: Any, digits: int) -> float | int | None:
    """Return ``value`` rounded to ``digits`` (an ``int`` for 0: "90", not "90.0")."""
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        return None
    return round(number) if digits == 0 else round(number, digits)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return str(value)


def camera_payload(cameras: pd.DataFrame) -> dict[str, Any]:
    """Return cameras as the compact table the camera layer draws.

    Parameters
    ----------
    cameras : pandas.DataFrame
        One row per camera: ``id``, ``name``, ``lon``, ``lat`` (WGS84), ``status``
        (``online``/``offline``/``broken``), ``type``, ``resolution``, ``direction_deg``,
        ``fov_deg``, ``range_m`` (missing values as ``None`` or NaN).

    Returns
    -------
    dict
        ``{"columns": [...], "statuses": [...], "rows": [[lat, lon, status index, direction,
        angle, range, id, name, type, resolution], ...]}``; an unknown status gets the index
        of ``offline``.
    """
    statuses = list(CAMERA_COLOURS)
    rows = []
    frame = cameras.astype(object).where(cameras.notna(), None)
    for record in frame.to_dict("records"):
        lat, lon = _number(record["lat"], COORD_DIGITS), _number(record["lon"], COORD_DIGITS)
        if lat is None or lon is None:
            continue
        status = str(record.get("status") or "offline")
        rows.append(
            [
                lat,
                lon,
                statuses.index(status) if status in statuses else statuses.index("offline"),
                _number(record.get("direction_deg"), 0),
                _number(record.get("fov_deg"), 0),
                _number(record.get("range_m"), 0),
                _text(record.get("id")),
                _text(record.get("name")),
                _text(record.get("type")),
                _text(record.get("resolution")),
            ]
        )
    return {"columns": list(ROW_COLUMNS), "statuses": statuses, "rows": rows}


class CameraLayer(JSCSSMixin, folium.map.Layer):
    """Clustered cameras with status colours, popups and view sectors at high zoom.

    Parameters
    ----------
    data : dict or str
        A :func:`camera_payload`, or the same-origin URL answering one (fetched when the
        layer is first switched on).
    fields : list
        Popup rows ``[column, label]`` or ``[column, label, {value: text}]`` (columns of
        :data:`ROW_COLUMNS`).
    name : str
        Name in the layer control.
    show : bool
        Whether the layer is on when the map opens.
    """

    _template = Template(
        """
        {% macro script(this, kwargs) %}
        var {{ this.get_name() }} = GridWatchMap.cameras({{ this._parent.get_name() }},
            {{ this.source }}, {{ this.options|tojson }});
        {% endmacro %}
        """
    )
    default_js = [("markerclusterjs", "leaflet.markercluster.js")]
    default_css = [
        ("markerclustercss", "MarkerCluster.css"),
        ("markerclusterdefaultcss", "MarkerCluster.Default.css"),
    ]

    def __init__(
        self,
        data: dict[str, Any] | str,
        fields: list[list[Any]],
        name: str,
        show: bool = True,
    ) -> None:
        super().__init__(name=name, overlay=True, control=True, show=show)
        self._name = "CameraLayer"
        self.data = data
        self.options = {
            "colours": list(CAMERA_COLOURS.values()),
            "fields": fields,
            "sectorMinZoom": SECTOR_MIN_ZOOM,
            "unknownRange": UNKNOWN_RANGE_M,
        }
        self.source = ""

    def render(self, **kwargs: Any) -> Any:
        """Serialise the cameras (or their URL) as JSON safe inside ``<script>``."""
        self.source = script_json(self.data)
        return super().render(**kwargs)


def camera_layer(
    data: dict[str, Any] | str,
    name: str,
    fields: list[list[Any]],
    status_names: Mapping[str, str],
    show: bool = True,
) -> tuple[CameraLayer, Legend]:
    """Return the camera layer and its legend (one colour per status)."""
    layer = CameraLayer(data, fields, name, show)
    items = [[colour, status_names.get(s, s)] for s, colour in CAMERA_COLOURS.items()]
    return layer, Legend(layer, name, items)


def statuses_of(payload: Mapping[str, Any]) -> Sequence[str]:
    """Return the status of each row of a :func:`camera_payload`."""
    names = payload["statuses"]
    return [names[row[2]] for row in payload["rows"]]


__all__ = [
    "CAMERA_COLOURS",
    "ROW_COLUMNS",
    "SECTOR_MIN_ZOOM",
    "UNKNOWN_RANGE_M",
    "CameraLayer",
    "camera_layer",
    "camera_payload",
    "statuses_of",
]
