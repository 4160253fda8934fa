"""What the camera plan's map draws: proposed sites, working cameras, blind-spot incidents.

:func:`camera_plan_layers` turns a township's camera plan (:func:`gridwatch.targeting.
prevention.camera_plan`) into plain lists for :mod:`gridwatch.maps.plan`: the proposed sites
numbered in the plan's order, the existing working cameras the plan kept fixed, the incidents
of the plan's window that no working camera saw (each with the number of the first proposed
site within the camera radius, if any) and the outlines of the township's grids.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Engine

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.targeting.prevention import LocalFrame, load_camera_inputs

#: Decimals kept for map coordinates (about 1 m).
COORD_DIGITS = 5
#: Tolerance of the grid outlines drawn under the plan, in degrees (about 10 m).
OUTLINE_TOLERANCE_DEG = 0.0001


def camera_plan_layers(
    engine: Engine,
    settings: Settings,
    plan: Mapping[str, Any],
    tree: AreaTree | None = None,
) -> dict[str, Any]:
    """Return the map layers of one township's camera plan.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    settings : Settings
    plan : mapping
        A camera plan (``township, since, until, radius_m, sites``).
    tree : AreaTree, optional
        The area tree, when the caller has it.

    Returns
    -------
    dict
        ``township, township_name, radius_m, bounds`` (``minx, miny, maxx, maxy``),
        ``sites`` (``number, lon, lat, grid_code, grid, kind, covered_incidents``; ``grid``
        is name and code), ``cameras`` (working ones: ``id, name, type, lon, lat``),
        ``blind_incidents`` (``lon, lat, grid_code, grid, covered_by``: a site number or
        ``None``) and ``grids`` (``code`` and
        ``rings``, lists of ``[lat, lon]`` rings of the outline).
    """
    from gridwatch.workers.aggregate.coverage import ViewIndex, camera_views

    tree = tree or load_tree(engine)

    def grid_label(code: str) -> str:
        node = tree.by_code.get(code)
        return f"{node.name}（{code}）" if node is not None else code

    since = datetime.fromisoformat(str(plan["since"]))
    until = datetime.fromisoformat(str(plan["until"]))
    days = max(1, round((until - since) / timedelta(days=1)))
    data = load_camera_inputs(engine, settings, str(plan["township"]), days, until, tree)
    views = camera_views(data.cameras) if len(data.cameras) else np.zeros(0, dtype=object)
    located = np.isfinite(data.incident_lon) & np.isfinite(data.incident_lat)
    blind = ViewIndex(views).outside(data.incident_lon, data.incident_lat) & located

    sites = [
        {"number": number, **{k: site[k] for k in ("lon", "lat", "grid_code", "kind")}}
        | {"grid": grid_label(site["grid_code"])}
        | {"covered_incidents": int(site["covered_incidents"])}
        for number, site in enumerate(plan["sites"], start=1)
    ]
    minx, miny, maxx, maxy = (float(v) for v in shapely.total_bounds(data.grid_geoms))
    frame = LocalFrame((minx + maxx) / 2, (miny + maxy) / 2)
    blind_lon, blind_lat = data.incident_lon[blind], data.incident_lat[blind]
    blind_grid = [g for g, b in zip(data.incident_grid, blind, strict=True) if b]
    covered_by: list[int | None] = [None] * len(blind_lon)
    if sites and len(blind_lon):
        demand = frame.to_xy(blind_lon, blind_lat)
        site_xy = frame.to_xy([s["lon"] for s in sites], [s["lat"] for s in sites])
        distance = np.hypot(
            demand[:, None, 0] - site_xy[None, :, 0], demand[:, None, 1] - site_xy[None, :, 1]
        )
        within = distance <= float(plan["radius_m"])
        first = np.argmax(within, axis=1)
        covered_by = [
            int(first[i]) + 1 if within[i, first[i]] else None for i in range(len(blind_lon))
        ]
    working = data.cameras[data.cameras["status"] == "online"]
    cameras = [
        {
            "id": str(row.source_id),
            "name": None if row.name is None else str(row.name),
            "type": None if row.type is None else str(row.type),
            "lon": round(float(row.lon), COORD_DIGITS),
            "lat": round(float(row.lat), COORD_DIGITS),
        }
        for row in working.itertuples(index=False)
    ]
    grids = []
    for code, geom in zip(data.grid_codes, data.grid_geoms, strict=True):
        outline = shapely.simplify(geom, OUTLINE_TOLERANCE_DEG, preserve_topology=True)
        parts = getattr(outline, "geoms", [outline])
        rings = [
            [[round(y, COORD_DIGITS), round(x, COORD_DIGITS)] for x, y in part.exterior.coords]
            for part in parts
            if not part.is_empty
        ]
        grids.append({"code": code, "rings": rings})
    return {
        "township": data.township_code,
        "township_name": data.township_name,
        "radius_m": float(plan["radius_m"]),
        "bounds": [minx, miny, maxx, maxy],
        "sites": sites,
        "cameras": cameras,
        "blind_incidents": [
            {
                "lon": round(float(lon), COORD_DIGITS),
                "lat": round(float(lat), COORD_DIGITS),
                "grid_code": grid,
                "grid": grid_label(grid),
                "covered_by": by,
            }
            for lon, lat, grid, by in zip(
                blind_lon, blind_lat, blind_grid, covered_by, strict=True
            )
        ],
        "grids": grids,
    }


__all__ = ["camera_plan_layers"]
