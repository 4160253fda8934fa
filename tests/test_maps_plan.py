"""The camera-plan map builder (gridwatch.maps.plan) on hand-made layers."""

from __future__ import annotations

import json
import re

from gridwatch.maps.plan import DEFAULT_PLAN_TEXT, plan_map, plan_map_html

EVIL = "<script>alert(1)</script>"


def _layers() -> dict:
    return {
        "radius_m": 60.0,
        "bounds": [104.0, 30.0, 104.02, 30.02],
        "grids": [{"code": "g1", "rings": [[[30.0, 104.0], [30.0, 104.02], [30.02, 104.0]]]}],
        "cameras": [{"id": "C1", "name": EVIL, "type": "高清", "lon": 104.01, "lat": 30.01}],
        "blind_incidents": [
            {"lon": 104.005, "lat": 30.005, "grid_code": "g1", "grid": EVIL, "covered_by": 1},
            {"lon": 104.015, "lat": 30.015, "grid_code": "g1", "grid": "g1", "covered_by": None},
        ],
        "sites": [
            {
                "number": 1,
                "lon": 104.0051,
                "lat": 30.0051,
                "grid_code": "g1",
                "grid": "g1",
                "kind": "hotspot_cell",
                "covered_incidents": 1,
            },
            {
                "number": 2,
                "lon": 104.011,
                "lat": 30.011,
                "grid_code": "g1",
                "grid": "g1",
                "kind": "junction",
                "covered_incidents": 0,
            },
        ],
    }


def _arguments(html: str) -> list:
    """Return the JSON arguments the plan layers' script is called with."""
    decoder = json.JSONDecoder()
    start = re.search(r"\}\)\(map_\w+,", html)
    assert start
    rest, values = html[start.end() :], []
    for _ in range(3):
        rest = rest.lstrip(" ,\n")
        value, end = decoder.raw_decode(rest)
        values.append(value)
        rest = rest[end:]
    return values


def test_plan_map_escapes_names_and_loads_only_vendored_assets():
    html = plan_map_html(_layers(), kind_labels={"hotspot_cell": "警情聚集处"})
    assert EVIL not in html and "alert(1)" in html  # present, but only as escaped JSON
    assert "\\u003cscript\\u003e" in html
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not src.startswith(("http:", "https:", "//")), src
    assert json.dumps("警情聚集处")[1:-1] in html


def test_plan_map_fits_the_township_and_carries_every_layer():
    fmap = plan_map(_layers(), text={"layer.sites": "建议新增点位"})
    html = fmap.get_root().render()
    data, text = _arguments(html)[:2]
    assert [s["number"] for s in data["sites"]] == [1, 2] and data["radius_m"] == 60.0
    assert data["sites"][0]["kind_label"] == "hotspot_cell"  # no label given: the code
    assert len(data["blind_incidents"]) == 2 and len(data["cameras"]) == 1
    assert text["layer.sites"] == "建议新增点位"
    assert set(DEFAULT_PLAN_TEXT) <= set(text)
    bounds = html.split("fitBounds(", 1)[1].split(",\n", 1)[0]
    assert json.loads(bounds) == [[30.0, 104.0], [30.02, 104.02]]
