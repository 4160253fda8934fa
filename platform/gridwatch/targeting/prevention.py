"""Prevention plan for one township: where new cameras go, what to repair, patrol, visit, call.

Cameras (maximal covering location problem)
-------------------------------------------
The incidents of the last ``days`` days that no working camera saw (outside every view of
:func:`gridwatch.workers.aggregate.coverage.camera_views`) are the demand. A new camera is
modelled as seeing every point within ``radius_m`` of it (the default 50 m is the range
assumed for a camera whose range is unknown; a sector camera can be turned to the incidents,
a dome sees all round). Candidate sites are

* *hot-spot cells*: the blind-spot incidents binned on a square lattice of side ``radius_m``;
  each non-empty cell offers the incidents' centre of mass (so a site stands where incidents
  cluster, not at an arbitrary cell corner);
* *grid centres*: a point inside each of the township's grids (``point_on_surface``);
* *junctions*, when a road network is configured (``GRIDWATCH_ROUTE_ROADS_FILE``): nodes
  where three or more road segments meet.

Existing working cameras stay as they are: only blind-spot incidents can be gained. Choosing
at most ``n`` sites to maximise the blind-spot incidents within reach is solved exactly as a
mixed-integer program (SCIP through OR-Tools, :func:`solve_mclp`; incidents with the same set
of reaching sites merged into one weighted demand), started from the greedy solution, within a
time limit. The greedy baseline (each step the site adding the most uncovered incidents) and
a naive one (the centre of each of the ``n`` grids with the most blind-spot incidents) are
computed in the same run on the same demand and reported beside it; the plan is never worse
than greedy (if the solver stops early without beating its starting point, the greedy sites
are the plan).

The other lists
---------------
* **Repairs**: offline and broken cameras, each with the blind-spot incidents its view would
  see if it worked, most first (ties: the higher grid priority).
* **Patrol focus**: the township's grids by grid priority index (else by recent incidents)
  with their peak three hours of the day, night share and patrol visits.
* **Publicity**: villages whose awareness or participation is below the county's median, for
  door-to-door visits (at least 10 households per cadre visit, the rule in the domain brief).
* **Case follow-up**: solved cases whose victim was never told the result, per police station.
"""

from __future__ import annotations

import time as clock
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import shapely
from numpy.typing import NDArray
from scipy.sparse import csr_array
from scipy.spatial import cKDTree
from sqlalchemy import Engine, select

from gridwatch.areas import AreaTree, load_tree
from gridwatch.config import Settings
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Area, Camera, Incident
from gridwatch.targeting.rules import TargetingError

DEFAULT_NEW_CAMERAS = 30
DEFAULT_RADIUS_M = 50.0
DEFAULT_DAYS = 365
DEFAULT_TIME_LIMIT_S = 10.0
#: Most hot-spot cells offered as candidate sites (the heaviest).
MAX_CELL_CANDIDATES = 1500
#: Households a cadre visits at least per visit (domain brief).
HOUSEHOLDS_PER_VISIT = 10
PATROL_FOCUS_GRIDS = 10
_METRES_PER_DEGREE = 111_320.0
# Cameras this far outside the township still see into it.
_CAMERA_MARGIN_M = 500.0


@dataclass
class CameraInputs:
    """What the camera plan is computed from (WGS84 throughout)."""

    township_code: str
    township_name: str
    grid_codes: list[str]
    grid_geoms: NDArray[np.object_]
    incident_lon: NDArray[np.float64]
    incident_lat: NDArray[np.float64]
    incident_grid: list[str]
    cameras: pd.DataFrame
    since: datetime
    until: datetime


def _township(tree: AreaTree, code: str, settings: Settings) -> Any:
    node = tree.by_code.get(code)
    if node is None:
        raise TargetingError(f"no area with code {code!r}")
    level = settings.area_levels[1] if len(settings.area_levels) > 1 else node.level
    if node.level != level:
        raise TargetingError(f"{code} is a {node.level}, not a {level}")
    return node


def _leaves_under(tree: AreaTree, area_id: int, leaf_level: str) -> list[int]:
    return sorted(i for i in tree.subtree(area_id) if tree.nodes[i].level == leaf_level)


def load_camera_inputs(
    engine: Engine,
    settings: Settings,
    township_code: str,
    days: int = DEFAULT_DAYS,
    until: datetime | None = None,
    tree: AreaTree | None = None,
) -> CameraInputs:
    """Read a township's grids, its incidents of the last ``days`` days and nearby cameras.

    ``until`` defaults to just after the township's newest incident, so a plan made from a
    file exported some days ago still looks at a full window.
    """
    tree = tree or load_tree(engine)
    township = _township(tree, township_code, settings)
    grid_ids = _leaves_under(tree, township.id, settings.area_levels[-1])
    with session_scope(engine) as session:
        grids = session.execute(
            select(Area.id, Area.code, Area.geom).where(Area.id.in_(grid_ids)).order_by(Area.code)
        ).all()
        grids = [g for g in grids if g.geom is not None and not g.geom.is_empty]
        if not grids:
            raise TargetingError(f"township {township_code} has no grids with a boundary")
        if until is None:
            newest = session.execute(
                select(Incident.occurred_at)
                .where(Incident.grid_id.in_([g.id for g in grids]))
                .order_by(Incident.occurred_at.desc())
                .limit(1)
            ).scalar()
            until = (newest or datetime.now(UTC)) + timedelta(seconds=1)
        since = until - timedelta(days=days)
        incidents = session.execute(
            select(Incident.lon, Incident.lat, Incident.grid_id).where(
                Incident.grid_id.in_([g.id for g in grids]),
                Incident.occurred_at >= since,
                Incident.occurred_at < until,
            )
        ).all()
        minx, miny, maxx, maxy = shapely.total_bounds([g.geom for g in grids])
        pad_lat = _CAMERA_MARGIN_M / _METRES_PER_DEGREE
        pad_lon = pad_lat / max(np.cos(np.radians((miny + maxy) / 2)), 0.1)
        cameras = session.execute(
            select(
                Camera.source_id,
                Camera.name,
                Camera.lon,
                Camera.lat,
                Camera.type,
                Camera.status,
                Camera.direction_deg,
                Camera.fov_deg,
                Camera.range_m,
                Camera.grid_id,
            ).where(
                Camera.lon.between(minx - pad_lon, maxx + pad_lon),
                Camera.lat.between(miny - pad_lat, maxy + pad_lat),
            )
        ).all()
    code_of = {g.id: g.code for g in grids}
    camera_frame = pd.DataFrame(
        cameras,
        columns=[
            "source_id",
            "name",
            "lon",
            "lat",
            "type",
            "status",
            "direction_deg",
            "fov_deg",
            "range_m",
            "grid_id",
        ],
    )
    camera_frame["grid_code"] = [
        tree.nodes[int(i)].code if i is not None and int(i) in tree.nodes else None
        for i in camera_frame["grid_id"]
    ]
    camera_frame["in_township"] = camera_frame["grid_code"].isin(set(code_of.values()))
    return CameraInputs(
        township_code=township.code,
        township_name=township.name,
        grid_codes=[g.code for g in grids],
        grid_geoms=np.array([g.geom for g in grids], dtype=object),
        incident_lon=np.array([i.lon for i in incidents], dtype=np.float64),
        incident_lat=np.array([i.lat for i in incidents], dtype=np.float64),
        incident_grid=[code_of[i.grid_id] for i in incidents],
        cameras=camera_frame,
        since=since,
        until=until,
    )


class LocalFrame:
    """An equirectangular projection to metres around a reference point (fine within ~50 km)."""

    def __init__(self, lon0: float, lat0: float) -> None:
        self.lon0, self.lat0 = lon0, lat0
        self.kx = _METRES_PER_DEGREE * float(np.cos(np.radians(lat0)))
        self.ky = _METRES_PER_DEGREE

    def to_xy(self, lon: Any, lat: Any) -> NDArray[np.float64]:
        """Return an ``(n, 2)`` array of metres east and north of the reference point."""
        x = (np.asarray(lon, dtype=float) - self.lon0) * self.kx
        y = (np.asarray(lat, dtype=float) - self.lat0) * self.ky
        return np.column_stack([x, y])

    def to_lonlat(self, xy: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        """Return longitudes and latitudes of metric points."""
        return (xy[:, 0] / self.kx + self.lon0, xy[:, 1] / self.ky + self.lat0)


def cell_candidates(xy: NDArray[np.float64], cell_m: float, limit: int) -> NDArray[np.float64]:
    """Centres of mass of the points in each non-empty square cell, heaviest cells first."""
    if len(xy) == 0:
        return np.zeros((0, 2))
    cells = np.floor(xy / cell_m).astype(np.int64)
    _, inverse, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sums = np.zeros((len(counts), 2))
    np.add.at(sums, inverse, xy)
    centres = sums / counts[:, None]
    order = np.lexsort((centres[:, 1], centres[:, 0], -counts))[:limit]
    return np.asarray(centres[order])


def coverage_matrix(
    demand_xy: NDArray[np.float64], sites_xy: NDArray[np.float64], radius_m: float
) -> csr_array:
    """Sparse (demand × site) matrix of 1 where the site is within ``radius_m`` of the demand."""
    if len(demand_xy) == 0 or len(sites_xy) == 0:
        return csr_array((len(demand_xy), len(sites_xy)), dtype=np.int8)
    reach = cKDTree(sites_xy).query_ball_point(demand_xy, radius_m)
    rows = np.repeat(np.arange(len(demand_xy)), [len(r) for r in reach])
    cols = np.fromiter((c for r in reach for c in r), dtype=np.int64, count=len(rows))
    data = np.ones(len(rows), dtype=np.int8)
    return csr_array((data, (rows, cols)), shape=(len(demand_xy), len(sites_xy)))


def merge_demand(
    cover: csr_array, weights: NDArray[np.float64]
) -> tuple[csr_array, NDArray[np.float64]]:
    """Merge demand rows that the same sites reach (one weighted row each); drop unreachable."""
    groups: dict[tuple[int, ...], float] = defaultdict(float)
    indptr, indices = cover.indptr, cover.indices
    for i in range(cover.shape[0]):
        key = tuple(sorted(indices[indptr[i] : indptr[i + 1]].tolist()))
        if key:
            groups[key] += float(weights[i])
    keys = sorted(groups)
    rows = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    cols = np.fromiter((c for k in keys for c in k), dtype=np.int64, count=len(rows))
    merged = csr_array(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(keys), cover.shape[1])
    )
    return merged, np.array([groups[k] for k in keys], dtype=np.float64)


def covered_weight(cover: csr_array, weights: NDArray[np.float64], chosen: list[int]) -> float:
    """Total weight of demand reached by at least one chosen site."""
    if not chosen or cover.shape[0] == 0:
        return 0.0
    reached = np.asarray(cover[:, chosen].sum(axis=1)).ravel() > 0
    return float(weights[reached].sum())


def greedy_sites(cover: csr_array, weights: NDArray[np.float64], n: int) -> list[int]:
    """Pick up to ``n`` sites, each time the one reaching the most still-uncovered weight."""
    chosen: list[int] = []
    if cover.shape[0] == 0:
        return chosen
    remaining = weights.astype(np.float64).copy()
    by_site = cover.T.tocsr()
    for _ in range(min(n, cover.shape[1])):
        gain = by_site @ remaining
        best = int(np.argmax(gain))
        if gain[best] <= 0:
            break
        chosen.append(best)
        reached = by_site.indices[by_site.indptr[best] : by_site.indptr[best + 1]]
        remaining[reached] = 0.0
    return chosen


def solve_mclp(
    cover: csr_array,
    weights: NDArray[np.float64],
    n: int,
    hint: list[int],
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    seed: int = 0,
) -> tuple[list[int], dict[str, Any]]:
    """Maximal covering location: at most ``n`` sites maximising the weight reached.

    A mixed-integer program solved by SCIP through OR-Tools (CBC when SCIP is missing):
    binary ``x_j`` (site ``j`` chosen), ``0 ≤ y_i ≤ 1`` (demand ``i`` reached),
    ``y_i ≤ Σ_{j reaches i} x_j``, ``Σ x_j ≤ n``, maximise ``Σ w_i y_i``. The LP relaxation of
    this model is tight in practice, so county-sized instances solve to optimality in well
    under a second. ``hint`` (the greedy sites) starts the search; if the solver stops
    without anything at least as good, the hint is returned.

    Returns
    -------
    tuple
        The chosen site indices and ``{status, optimal, objective, bound, seconds, backend}``.
    """
    from ortools.linear_solver import pywraplp

    started = clock.perf_counter()
    hint_value = covered_weight(cover, weights, hint)
    if cover.shape[0] == 0 or n <= 0:
        return [], {
            "status": "trivial",
            "optimal": True,
            "objective": 0.0,
            "bound": 0.0,
            "seconds": 0.0,
            "backend": None,
        }
    backend = "SCIP"
    solver = pywraplp.Solver.CreateSolver(backend)
    if solver is None:
        backend = "CBC"
        solver = pywraplp.Solver.CreateSolver(backend)
    if solver is None:
        raise TargetingError("no mixed-integer solver (SCIP or CBC) in this OR-Tools build")
    sites = [solver.BoolVar(f"x{j}") for j in range(cover.shape[1])]
    demand = [solver.NumVar(0.0, 1.0, f"y{i}") for i in range(cover.shape[0])]
    for i in range(cover.shape[0]):
        reach = cover.indices[cover.indptr[i] : cover.indptr[i + 1]]
        solver.Add(demand[i] <= solver.Sum([sites[j] for j in reach]))
    solver.Add(solver.Sum(sites) <= n)
    solver.Maximize(solver.Sum([float(w) * y for w, y in zip(weights, demand, strict=True)]))
    chosen_hint = set(hint)
    solver.SetHint(sites, [1.0 if j in chosen_hint else 0.0 for j in range(len(sites))])
    solver.SetTimeLimit(int(time_limit_s * 1000))
    solver.SetSolverSpecificParametersAsString(
        f"randomization/randomseedshift = {int(seed)}" if backend == "SCIP" else ""
    )
    status = solver.Solve()
    found = status in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE)
    chosen = [j for j, x in enumerate(sites) if x.solution_value() > 0.5] if found else []
    value = covered_weight(cover, weights, chosen) if found else -1.0
    names = {
        pywraplp.Solver.OPTIMAL: "optimal",
        pywraplp.Solver.FEASIBLE: "feasible",
        pywraplp.Solver.INFEASIBLE: "infeasible",
        pywraplp.Solver.NOT_SOLVED: "not_solved",
    }
    info = {
        "status": names.get(status, "error"),
        "optimal": status == pywraplp.Solver.OPTIMAL,
        "objective": None,
        "bound": round(float(solver.Objective().BestBound()), 3) if found else None,
        "seconds": round(clock.perf_counter() - started, 3),
        "backend": backend,
    }
    if value < hint_value:
        info["objective"] = hint_value
        info["used_hint"] = True
        return list(hint), info
    info["objective"] = value
    return chosen, info


def _junctions(settings: Settings, frame: LocalFrame, box: tuple[float, ...]) -> NDArray[Any]:
    """Road junctions (nodes of degree ≥ 3) inside ``box``, in metres, if roads are set."""
    path = settings.route_roads_file
    if path is None:
        return np.zeros((0, 2))
    import geopandas as gpd

    try:
        roads = gpd.read_file(path, bbox=box)
    except Exception as exc:  # pyogrio raises several kinds; the sentence is what matters
        raise TargetingError(f"{path}: cannot read the road network ({exc})") from exc
    if roads.empty:
        return np.zeros((0, 2))
    roads = roads.to_crs(4326) if roads.crs is not None and roads.crs.to_epsg() != 4326 else roads
    parts = shapely.get_parts(roads.geometry.to_numpy())
    parts = parts[shapely.get_type_id(parts) == 1]
    ends: dict[tuple[float, float], int] = defaultdict(int)
    for line in parts:
        coords = shapely.get_coordinates(line)
        for point in (coords[0], coords[-1]):
            ends[(round(float(point[0]), 6), round(float(point[1]), 6))] += 1
    nodes = np.array([k for k, degree in ends.items() if degree >= 3], dtype=float)
    if len(nodes) == 0:
        return np.zeros((0, 2))
    return frame.to_xy(nodes[:, 0], nodes[:, 1])


def camera_plan(
    engine: Engine,
    settings: Settings,
    township_code: str,
    n: int = DEFAULT_NEW_CAMERAS,
    radius_m: float = DEFAULT_RADIUS_M,
    days: int = DEFAULT_DAYS,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    inputs: CameraInputs | None = None,
) -> dict[str, Any]:
    """Propose ``n`` new camera sites for a township (see the module docstring).

    Returns
    -------
    dict
        ``township, township_name, n, radius_m, since, until, incidents, blind_spot_incidents,
        candidates`` (by kind), ``sites`` (``lon, lat, grid_code, kind, covered_incidents``:
        the blind-spot incidents the site adds, in the order listed, so they sum to the gain),
        ``covered_before, covered_after, greedy_covered_after, naive_covered_after,
        reachable_blind_spot_incidents, solver`` and ``method`` (``mclp`` or ``greedy``).
    """
    from gridwatch.workers.aggregate.coverage import ViewIndex, camera_views

    if n < 1:
        raise TargetingError("the number of new cameras must be at least 1")
    if not radius_m > 0:
        raise TargetingError("the camera radius must be a positive number of metres")
    data = inputs or load_camera_inputs(engine, settings, township_code, days)
    views = camera_views(data.cameras) if len(data.cameras) else np.zeros(0, dtype=object)
    blind = ViewIndex(views).outside(data.incident_lon, data.incident_lat)
    located = np.isfinite(data.incident_lon) & np.isfinite(data.incident_lat)
    blind &= located
    covered_before = int((located & ~blind).sum())
    minx, miny, maxx, maxy = shapely.total_bounds(data.grid_geoms)
    frame = LocalFrame((minx + maxx) / 2, (miny + maxy) / 2)
    demand_xy = frame.to_xy(data.incident_lon[blind], data.incident_lat[blind])
    cells = cell_candidates(demand_xy, radius_m, MAX_CELL_CANDIDATES)
    centres = shapely.point_on_surface(data.grid_geoms)
    centre_xy = frame.to_xy(shapely.get_x(centres), shapely.get_y(centres))
    junctions = _junctions(settings, frame, (minx, miny, maxx, maxy))
    sites_xy = np.vstack([cells, centre_xy, junctions])
    kinds = ["hotspot_cell"] * len(cells) + ["grid_centre"] * len(centre_xy)
    kinds += ["junction"] * len(junctions)
    full = coverage_matrix(demand_xy, sites_xy, radius_m)
    cover, weights = merge_demand(full, np.ones(len(demand_xy)))
    greedy = greedy_sites(cover, weights, n)
    chosen, info = solve_mclp(cover, weights, n, greedy, time_limit_s)
    greedy_gain = covered_weight(cover, weights, greedy)
    gain = covered_weight(cover, weights, chosen)
    method = "mclp"
    if gain < greedy_gain:
        chosen, gain, method = greedy, greedy_gain, "greedy"
    # Naive: the centre of each of the n grids with the most blind-spot incidents.
    blind_grids = pd.Series([g for g, b in zip(data.incident_grid, blind, strict=True) if b])
    worst = blind_grids.value_counts().sort_index().sort_values(ascending=False, kind="stable")
    offset = len(cells)
    naive = [offset + data.grid_codes.index(code) for code in worst.index[:n]]
    naive_gain = covered_weight(cover, weights, naive)
    # List the chosen sites by what each adds, largest first (greedy order within the plan).
    ordered = [chosen[k] for k in greedy_sites(cover[:, chosen], weights, len(chosen))]
    ordered += [j for j in chosen if j not in ordered]
    lon, lat = frame.to_lonlat(sites_xy[ordered]) if ordered else (np.zeros(0), np.zeros(0))
    points = shapely.points(lon, lat)
    tree = shapely.STRtree(data.grid_geoms)
    sites = []
    already: list[int] = []
    for k, j in enumerate(ordered):
        hits = tree.query(points[k], predicate="intersects")
        if len(hits):
            grid_code = data.grid_codes[int(min(hits))]
        else:
            grid_code = data.grid_codes[int(tree.nearest(points[k]))]
        adds = covered_weight(cover, weights, [*already, j]) - covered_weight(
            cover, weights, already
        )
        already.append(j)
        sites.append(
            {
                "lon": round(float(lon[k]), 6),
                "lat": round(float(lat[k]), 6),
                "grid_code": grid_code,
                "kind": kinds[j],
                "covered_incidents": int(round(adds)),
            }
        )
    return {
        "township": data.township_code,
        "township_name": data.township_name,
        "n": n,
        "radius_m": radius_m,
        "since": data.since.isoformat(),
        "until": data.until.isoformat(),
        "incidents": int(located.sum()),
        "blind_spot_incidents": int(blind.sum()),
        "reachable_blind_spot_incidents": int(round(float(weights.sum()))),
        "candidates": {
            "hotspot_cell": len(cells),
            "grid_centre": len(centre_xy),
            "junction": len(junctions),
        },
        "sites": sites,
        "covered_before": covered_before,
        "covered_after": covered_before + int(round(gain)),
        "greedy_covered_after": covered_before + int(round(greedy_gain)),
        "naive_covered_after": covered_before + int(round(naive_gain)),
        "method": method,
        "solver": info,
    }


def repair_list(
    data: CameraInputs, grid_priority: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Offline and broken cameras of the township, most blind-spot incidents regained first.

    Each camera's view is built as if it worked; ``would_see_incidents`` counts the window's
    incidents inside it that no working camera sees now.
    """
    from gridwatch.workers.aggregate.coverage import WORKING_STATUS, ViewIndex, camera_views

    cameras = data.cameras
    if cameras.empty:
        return []
    views = camera_views(cameras)
    blind = ViewIndex(views).outside(data.incident_lon, data.incident_lat)
    down = cameras[(cameras["status"] != WORKING_STATUS) & cameras["in_township"]]
    if down.empty:
        return []
    as_working = camera_views(down.assign(status=WORKING_STATUS))
    lon, lat = data.incident_lon[blind], data.incident_lat[blind]
    priority = grid_priority or {}
    out = []
    for view, (_, camera) in zip(as_working, down.iterrows(), strict=True):
        seen = int((~ViewIndex([view]).outside(lon, lat)).sum()) if view is not None else 0
        out.append(
            {
                "camera_id": camera["source_id"],
                "name": camera["name"],
                "status": camera["status"],
                "type": camera["type"],
                "lon": float(camera["lon"]),
                "lat": float(camera["lat"]),
                "grid_code": camera["grid_code"],
                "would_see_incidents": seen,
                "grid_priority_index": priority.get(str(camera["grid_code"])),
            }
        )
    out.sort(
        key=lambda r: (
            -r["would_see_incidents"],
            -(r["grid_priority_index"] or 0.0),
            str(r["camera_id"]),
        )
    )
    return out


def peak_hours(hours: NDArray[np.int64], width: int = 3) -> tuple[int, int] | None:
    """Return ``(start, share %)`` of the ``width``-hour window (wrapping midnight) with most."""
    if len(hours) == 0:
        return None
    counts = np.bincount(np.asarray(hours) % 24, minlength=24)
    windows = np.array([counts[(h + np.arange(width)) % 24].sum() for h in range(24)])
    start = int(np.argmax(windows))
    return start, int(round(100.0 * windows[start] / counts.sum()))


def patrol_focus(
    engine: Engine,
    settings: Settings,
    data: CameraInputs,
    grid_rows: list[dict[str, Any]],
    limit: int = PATROL_FOCUS_GRIDS,
    recent_days: int = 180,
) -> list[dict[str, Any]]:
    """List the township's grids patrols should cover, with the hours incidents happen.

    Grids are taken by grid priority index when the survey linkage has one, else by incidents
    in the last ``recent_days`` days; each comes with its peak three hours (local time).
    """
    tz = settings.timezone
    codes = set(data.grid_codes)
    since = data.until - timedelta(days=recent_days)
    tree = load_tree(engine)
    ids = [tree.by_code[c].id for c in codes if c in tree.by_code]
    with session_scope(engine) as session:
        rows = session.execute(
            select(Incident.grid_id, Incident.occurred_at).where(
                Incident.grid_id.in_(ids),
                Incident.occurred_at >= since,
                Incident.occurred_at < data.until,
                Incident.source != "patrol",
            )
        ).all()
    hours_of: dict[str, list[int]] = defaultdict(list)
    for grid_id, occurred in rows:
        if grid_id is None:
            continue
        moment = occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)
        hours_of[tree.nodes[int(grid_id)].code].append(moment.astimezone(tz).hour)
    ranked = [r for r in grid_rows if r["area_code"] in codes]
    order: list[tuple[str, dict[str, Any] | None]]
    if ranked:
        order = [(r["area_code"], r) for r in ranked]
    else:
        busiest = sorted(codes, key=lambda c: (-len(hours_of.get(c, [])), c))
        order = [(c, None) for c in busiest if hours_of.get(c)]
    out = []
    for code, row in order[:limit]:
        hours = np.array(hours_of.get(code, []), dtype=np.int64)
        peak = peak_hours(hours)
        night = ((hours >= 20) | (hours < 6)).mean() * 100 if len(hours) else None
        node = tree.by_code.get(code)
        out.append(
            {
                "grid_code": code,
                "grid_name": node.name if node else code,
                "priority_index": row["priority_index"] if row else None,
                "recent_incidents": int(len(hours)),
                "recent_days": recent_days,
                "peak_hours": None
                if peak is None
                else f"{peak[0]:02d}:00–{(peak[0] + 3) % 24:02d}:00",
                "peak_share_pct": None if peak is None else peak[1],
                "night_share_pct": None if night is None else round(float(night), 1),
                "patrol_visits_per_week": (
                    row["counts"]["patrol_visits_per_week"] if row else None
                ),
                "explanation": row["explanation"] if row else None,
            }
        )
    return out


def publicity_targets(
    engine: Engine,
    settings: Settings,
    township_code: str,
    quarter: str,
    tree: AreaTree | None = None,
) -> list[dict[str, Any]]:
    """Villages of the township below the county's median awareness or participation.

    Each row names the gaps and the rule of the visits: at least
    :data:`HOUSEHOLDS_PER_VISIT` households per cadre visit.
    """
    from gridwatch.targeting.indicators import indicator_table
    from gridwatch.targeting.ladder import accountability_rules
    from gridwatch.taxonomy import load_survey_factors

    tree = tree or load_tree(engine)
    rules = accountability_rules(settings)
    names = {f.code: f.zh for f in load_survey_factors(settings.survey_factors_file).values()}
    village_level = settings.area_levels[2] if len(settings.area_levels) > 2 else "village"
    rows = indicator_table(engine, village_level, [quarter], names, rules.quality, "auto", tree)
    rows_q = rows.get(quarter, [])

    def median(key: str) -> float | None:
        values = [float(r[key]) for r in rows_q if r.get(key) is not None]
        return float(np.median(values)) if values else None

    aware_mid, part_mid = median("awareness_pct"), median("participation_pct")
    township = tree.by_code[township_code]
    inside = tree.subtree(township.id)
    out = []
    for r in rows_q:
        node = tree.by_code.get(r["area_code"])
        if node is None or node.id not in inside:
            continue
        aware, part = r.get("awareness_pct"), r.get("participation_pct")
        low_aware = aware is not None and aware_mid is not None and aware < aware_mid
        low_part = part is not None and part_mid is not None and part < part_mid
        if not (low_aware or low_part):
            continue
        out.append(
            {
                "village_code": r["area_code"],
                "village_name": r["area_name"],
                "awareness_pct": aware,
                "participation_pct": part,
                "county_median_awareness_pct": None if aware_mid is None else round(aware_mid, 2),
                "county_median_participation_pct": (
                    None if part_mid is None else round(part_mid, 2)
                ),
                "low": [
                    k
                    for k, flag in (("awareness", low_aware), ("participation", low_part))
                    if flag
                ],
                "population": node.population,
                "households_per_visit": HOUSEHOLDS_PER_VISIT,
            }
        )
    out.sort(
        key=lambda r: (
            (r["awareness_pct"] or 0) + (r["participation_pct"] or 0),
            r["village_code"],
        )
    )
    return out


def follow_up_cases(
    engine: Engine, settings: Settings, township_code: str, tree: AreaTree | None = None
) -> list[dict[str, Any]]:
    """Solved cases whose victim was never told the result (破而不馈), per police station.

    Returns
    -------
    list of dict
        Per station (``station_code, station_name``; ``None`` when no station covers the
        township) the ``cases`` (``incident_id, category, occurred_at, solved_at, grid_code,
        address``), oldest solved first.
    """
    from gridwatch.storage.models import Station, StationTownship

    tree = tree or load_tree(engine)
    township = _township(tree, township_code, settings)
    grid_ids = _leaves_under(tree, township.id, settings.area_levels[-1])
    with session_scope(engine) as session:
        stations = session.execute(
            select(Station.code, Station.name)
            .join(StationTownship, StationTownship.station_id == Station.id)
            .where(StationTownship.area_id == township.id)
            .order_by(Station.code)
        ).all()
        cases = session.execute(
            select(
                Incident.source_id,
                Incident.category,
                Incident.occurred_at,
                Incident.solved_at,
                Incident.grid_id,
                Incident.address,
            )
            .where(
                Incident.grid_id.in_(grid_ids),
                Incident.solved_at.is_not(None),
                Incident.victim_notified_at.is_(None),
            )
            .order_by(Incident.solved_at, Incident.source_id)
        ).all()
    from gridwatch.taxonomy import load_taxonomy

    categories = load_taxonomy(settings.categories_file).categories
    listed = [
        {
            "incident_id": c.source_id,
            "category": c.category,
            "category_zh": categories[c.category].zh if c.category in categories else c.category,
            "occurred_at": c.occurred_at.isoformat() if c.occurred_at else None,
            "solved_at": c.solved_at.isoformat() if c.solved_at else None,
            "grid_code": tree.nodes[c.grid_id].code if c.grid_id in tree.nodes else None,
            "address": c.address,
        }
        for c in cases
    ]
    if not stations:
        return [{"station_code": None, "station_name": None, "cases": listed}] if listed else []
    # A township covered by several stations: each is asked to follow up every case.
    return [{"station_code": s.code, "station_name": s.name, "cases": listed} for s in stations]


def prevention_plan(
    engine: Engine,
    settings: Settings,
    township_code: str,
    quarter: str | None = None,
    n: int = DEFAULT_NEW_CAMERAS,
    radius_m: float = DEFAULT_RADIUS_M,
    days: int = DEFAULT_DAYS,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    replicates: int = 500,
) -> dict[str, Any]:
    """Assemble a township's whole prevention plan (the domain function the web calls).

    Parameters
    ----------
    quarter : str, optional
        Survey wave for the grid priorities and publicity (default: the newest); without any
        survey the lists that need one are empty and the rest still comes.
    n, radius_m, days, time_limit_s
        As for :func:`camera_plan`.
    replicates : int
        Bootstrap replicates of the associations behind the grid priorities.

    Returns
    -------
    dict
        ``township, township_name, period, cameras`` (:func:`camera_plan`), ``repairs,
        patrol_focus, publicity, follow_up``.
    """
    from gridwatch.periods import parse_period
    from gridwatch.targeting.grid_priorities import grid_priorities
    from gridwatch.targeting.indicators import survey_periods

    tree = load_tree(engine)
    data = load_camera_inputs(engine, settings, township_code, days, tree=tree)
    waves = [w for w in survey_periods(engine) if parse_period(w).kind == "quarter"]
    label = parse_period(quarter).label if quarter else (waves[-1] if waves else None)
    grid_rows: list[dict[str, Any]] = []
    if label is not None:
        grid_rows = grid_priorities(engine, settings, label, township_code, replicates, tree=tree)[
            "rows"
        ]
    priority = {r["area_code"]: r["priority_index"] for r in grid_rows}
    return {
        "township": data.township_code,
        "township_name": data.township_name,
        "period": label,
        "cameras": camera_plan(
            engine, settings, township_code, n, radius_m, days, time_limit_s, inputs=data
        ),
        "repairs": repair_list(data, priority),
        "patrol_focus": patrol_focus(engine, settings, data, grid_rows),
        "publicity": (
            publicity_targets(engine, settings, township_code, label, tree) if label else []
        ),
        "follow_up": follow_up_cases(engine, settings, township_code, tree),
    }


#: Bootstrap replicates behind the grid priorities that rank route planning's focus grids.
PATROL_FOCUS_REPLICATES = 200


def patrol_focus_hours(
    engine: Engine,
    settings: Settings,
    township_codes: list[str],
    quarter: str | None = None,
    replicates: int = PATROL_FOCUS_REPLICATES,
) -> dict[str, tuple[int, ...]]:
    """Return the prevention plans' patrol-focus grids of townships with their peak hours.

    The plain data patrol planning takes (:func:`gridwatch.routing.plans.plan_station`'s
    ``focus_grids``): grid code → the local hours (0–23) of its peak three-hour window, empty
    when the grid had no recent incidents. Only the patrol-focus list of
    :func:`prevention_plan` is computed (no camera plan).

    Parameters
    ----------
    township_codes : list of str
        E.g. the townships a police station covers.
    quarter : str, optional
        Survey wave of the grid priorities (default: the newest).
    replicates : int
        Bootstrap replicates of the associations behind the grid priorities.

    Raises
    ------
    TargetingError
        Without a quarterly survey wave (the focus grids are ranked by the survey-linked grid
        priority index), or for an unknown township or one without grid boundaries.
    """
    from gridwatch.periods import parse_period
    from gridwatch.targeting.grid_priorities import grid_priorities
    from gridwatch.targeting.indicators import survey_periods
    from gridwatch.targeting.linkage import priorities

    waves = [w for w in survey_periods(engine) if parse_period(w).kind == "quarter"]
    if quarter is None and not waves:
        raise TargetingError("no quarterly survey wave to rank the patrol-focus grids by")
    label = parse_period(quarter).label if quarter else waves[-1]
    tree = load_tree(engine)
    villages = priorities(engine, settings, label, "village", replicates, tree=tree)
    focus: dict[str, tuple[int, ...]] = {}
    for code in township_codes:
        data = load_camera_inputs(engine, settings, code, tree=tree)
        rows = grid_priorities(
            engine, settings, label, code, replicates, tree=tree, village_result=villages
        )["rows"]
        for row in patrol_focus(engine, settings, data, rows):
            window = row["peak_hours"]
            start = int(window[:2]) if window else None
            focus[row["grid_code"]] = (
                () if start is None else tuple((start + k) % 24 for k in range(3))
            )
    return focus


def station_patrol_focus(
    engine: Engine, settings: Settings, station_code: str, quarter: str | None = None
) -> dict[str, tuple[int, ...]]:
    """Return :func:`patrol_focus_hours` for the townships a police station covers.

    Raises
    ------
    TargetingError
        For an unknown station, and as :func:`patrol_focus_hours`.
    """
    from gridwatch.storage.models import Station, StationTownship

    with session_scope(engine) as session:
        station_id = session.scalar(select(Station.id).where(Station.code == station_code))
        if station_id is None:
            raise TargetingError(f"no station with code {station_code!r}")
        townships = list(
            session.scalars(
                select(Area.code)
                .join(StationTownship, StationTownship.area_id == Area.id)
                .where(StationTownship.station_id == station_id)
                .order_by(Area.code)
            )
        )
    return patrol_focus_hours(engine, settings, townships, quarter)


def station_patrol_focus_or_note(
    engine: Engine, settings: Settings, station_code: str, quarter: str | None = None
) -> tuple[dict[str, tuple[int, ...]] | None, str | None]:
    """Return the station's patrol-focus grids for route planning, or ``None`` and why not.

    The one place the planning adapters (web form, ``gridwatch routes plan``, whoever sends
    the ``plan.routes`` task) get :func:`station_patrol_focus` from: when the prevention plan
    cannot be computed (no survey wave yet …) routes are planned without the focus grids and
    the note, stored as the plan's ``plan_focus["note"]``, says so.

    Returns
    -------
    focus : dict or None
        Grid code → peak local hours, as ``plan_station`` takes it; ``None`` on failure.
    note : str or None
        The sentence explaining a failure; ``None`` when the focus grids were computed.
    """
    try:
        return station_patrol_focus(engine, settings, station_code, quarter), None
    except TargetingError as exc:
        return None, f"planned without the prevention plan's patrol-focus grids: {exc}"
