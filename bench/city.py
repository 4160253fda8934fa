"""Synthetic full-size city for the aggregation benchmarks, and a fast loader into GridWatch.

The county (fictional, code ``349901``, about 60 km across around lon 117.0, lat 31.0, WGS84)
is drawn from one seed, each stage from its own random stream (so, e.g., the incidents do not
change when the camera count does):

- **Areas**: county → townships (~grids/100) → villages (~grids/10) → ``grids`` grids. The
  grids are Voronoi cells of a jittered hexagonal lattice (the ``grids`` seeds nearest the
  centre, measured against a wobbly outline), every edge densified so that each grid has about
  100 vertices, then bent by a smooth displacement field and projected to WGS84. Each shared
  edge is densified once (from its lexicographically smaller end) and every distinct vertex is
  displaced once, so neighbours share their boundaries exactly, vertex for vertex, like
  digitised boundaries that were cleaned as a coverage. Villages are the grids nearest each
  point of a coarser lattice, townships the villages nearest each point of a still coarser one;
  every parent is the coverage union of its children. Codes follow the demo county: township
  ``349901ttt000``, village ``349901tttvvv``, grid ``349901tttvvvggg``.
- **Incidents**: ``incidents`` points over the two years ending yesterday (Asia/Shanghai),
  clustered at market-town centres, secondary hot spots, junctions and village centres, with
  the demo county's category mix, night-heavy hours, sources (110 calls and walk-ins, some
  found on patrol) and a life cycle (accepted, solved with or without the victim notified,
  closed). Every incident lies in a grid; ``grid_index`` is its grid (exact join, ties on a
  shared edge to the lowest code as in :class:`gridwatch.ingest.spatial.GridIndex`).
- **Cameras**: ``cameras`` points (checkpoint / hd / standard / private; online, offline,
  broken), about 30 % without a direction (a circle in
  :func:`gridwatch.workers.aggregate.coverage.camera_views`), field of view and range
  sometimes unknown; 10 % of the villages have none.
- **Patrols**: police squads, township patrols (巡防队) and village teams (about 10 % of them
  log nothing: teams in name only) patrol for ``patrol_hours`` hours in total over the last
  120 days, pinging every ``ping_minutes`` minutes (2, as the demo county; 50,000 hours give
  1.5 million pings).

:func:`load_city` writes a :class:`City` into a GridWatch database with bulk inserts (plain
DB-API ``executemany`` on SQLite, ``COPY`` on PostgreSQL) and :func:`city_database` keeps a
built SQLite file for reuse. Import from bench scripts with the bench directory on
``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from city import city_database, city_frames, load_city
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, Table, func, insert, select, text

from gridwatch.demo.generator import _CATEGORY_PROFILES, _hour_profile, _name_stems
from gridwatch.ingest.spatial import GridIndex
from gridwatch.storage import create_db_engine, upgrade_database
from gridwatch.storage.models import (
    Area,
    Camera,
    ImportBatch,
    Incident,
    PatrolPing,
    PatrolTeam,
    Station,
    StationTownship,
)
from gridwatch.taxonomy import load_taxonomy
from gridwatch.workers.aggregate.coverage import metres_per_degree

#: Bump when the generated data change, so cached databases are rebuilt.
CITY_VERSION = 1
TZ = ZoneInfo("Asia/Shanghai")
UTC_OFFSET_HOURS = 8  # Asia/Shanghai has kept UTC+8 without daylight saving since 1991
ORIGIN_LON, ORIGIN_LAT = 117.0, 31.0
COUNTY_RADIUS_M = 30_000.0
COUNTY_PREFIX = "349901"
COUNTY_CODE = f"{COUNTY_PREFIX}000000"
COUNTY_NAME = "基准县"
VERTICES_PER_GRID = 92  # lower bound per grid before closing; the mean comes out near 100
GRIDS_PER_VILLAGE = 10
VILLAGES_PER_TOWNSHIP = 10
INCIDENT_DAYS = 730
PATROL_DAYS = 120
PING_MINUTES = 2  # as the demo county (gridwatch.demo.generator.PING_INTERVAL_MINUTES)
SOURCES = np.array(["call_110", "walk_in", "patrol", "other"], dtype=object)
CAMERA_TYPES = np.array(["checkpoint", "hd", "standard", "private"], dtype=object)
CAMERA_STATUSES = np.array(["online", "offline", "broken"], dtype=object)
_EAST_M_PER_DEG, _NORTH_M_PER_DEG = (float(v) for v in metres_per_degree(ORIGIN_LAT))


# ------------------------------------------------------------------------------------------
# Result
# ------------------------------------------------------------------------------------------


@dataclass
class City:
    """The synthetic city as plain frames (WGS84, timestamps in UTC).

    Attributes
    ----------
    areas : geopandas.GeoDataFrame
        ``code, name, level, parent_code, population, geometry``: the county, then the
        townships, villages and grids (each level in code order).
    incidents : pandas.DataFrame
        ``source_id, occurred_at, reported_at, category`` (categorical, taxonomy order),
        ``lon, lat, address, source, status, solved_at, victim_notified_at, grid_index``
        (row of :attr:`grids`).
    cameras : pandas.DataFrame
        ``source_id, name, lon, lat, type, status, resolution, direction_deg, fov_deg,
        range_m`` (NaN when unknown), ``installed_at, owner, grid_index``.
    stations : pandas.DataFrame
        ``code, name, lon, lat, township_codes`` (list of codes).
    teams : pandas.DataFrame
        ``code, name, kind, station_code, home_area_code, members, active``.
    pings : pandas.DataFrame
        ``team_code`` (categorical), ``ts, lon, lat, grid_index`` (-1 outside every grid),
        ordered by team and time.
    seed, today, sizes :
        What the city was drawn from.
    """

    areas: gpd.GeoDataFrame
    incidents: pd.DataFrame
    cameras: pd.DataFrame
    stations: pd.DataFrame
    teams: pd.DataFrame
    pings: pd.DataFrame
    seed: int
    today: date
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def grids(self) -> gpd.GeoDataFrame:
        """The grids (leaf areas), indexed 0…n-1 as ``grid_index`` counts them."""
        return self.areas[self.areas["level"] == "grid"].reset_index(drop=True)


def city_frames(
    seed: int = 0,
    grids: int = 5000,
    incidents: int = 1_000_000,
    cameras: int = 15_000,
    patrol_hours: int = 50_000,
    *,
    ping_minutes: int = PING_MINUTES,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
) -> City:
    """Draw the synthetic city.

    Parameters
    ----------
    seed : int
        Seed of every random draw.
    grids, incidents, cameras, patrol_hours : int
        Sizes; 0 cameras or 0 patrol hours skip those stages.
    ping_minutes : int
        Interval between a patrol team's GPS pings.
    today : datetime.date, optional
        The day of the "export": incidents end the day before. Defaults to today in
        Asia/Shanghai.
    progress : callable, optional
        Called with a message after each stage.

    Returns
    -------
    City
    """
    today = today or datetime.now(TZ).date()
    say = progress or (lambda message: None)
    start = time.perf_counter()

    def done(message: str) -> None:
        say(f"{message} ({time.perf_counter() - start:.1f} s)")

    county = _build_county(_stage_rng(seed, "areas"), grids)
    done(
        f"areas: {len(county.townships)} townships, {len(county.villages)} villages, "
        f"{grids:,} grids ({county.mean_vertices:.0f} vertices on average)"
    )
    incident_frame = _incidents(county, incidents, today, _stage_rng(seed, "incidents"))
    done(f"incidents: {len(incident_frame):,}")
    camera_frame = _cameras(county, cameras, _stage_rng(seed, "cameras"))
    done(f"cameras: {len(camera_frame):,}")
    stations, teams = _stations_and_teams(county, _stage_rng(seed, "teams"))
    pings = _pings(county, teams, patrol_hours, ping_minutes, today, _stage_rng(seed, "patrols"))
    done(f"patrols: {len(teams)} teams, {len(pings):,} pings every {ping_minutes} min")
    return City(
        areas=county.frame,
        incidents=incident_frame,
        cameras=camera_frame,
        stations=stations,
        teams=teams,
        pings=pings,
        seed=seed,
        today=today,
        sizes={
            "grids": grids,
            "incidents": incidents,
            "cameras": cameras,
            "patrol_hours": patrol_hours,
            "ping_minutes": ping_minutes,
        },
    )


# ------------------------------------------------------------------------------------------
# Randomness and projection
# ------------------------------------------------------------------------------------------


def _stage_rng(seed: int, stage: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(stage.encode("utf-8"))])


def _bend(xy: np.ndarray) -> np.ndarray:
    """Displace city metres by a smooth field (at most ~14 m, slope below 0.5)."""
    x, y = xy[:, 0], xy[:, 1]
    dx = 9.0 * np.sin(x / 43.0 + 1.2 * np.sin(y / 97.0)) + 2.5 * np.sin(y / 17.0 + 0.7)
    dy = 9.0 * np.sin(y / 47.0 + 1.1 * np.sin(x / 83.0)) + 2.5 * np.sin(x / 19.0 + 1.9)
    return np.column_stack([x + dx, y + dy])


def _to_lonlat(xy: np.ndarray) -> np.ndarray:
    """City metres (east, north of the centre) → WGS84 longitude, latitude."""
    return np.column_stack(
        [ORIGIN_LON + xy[:, 0] / _EAST_M_PER_DEG, ORIGIN_LAT + xy[:, 1] / _NORTH_M_PER_DEG]
    )


def _project(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lonlat = _to_lonlat(_bend(np.column_stack([x, y])))
    return lonlat[:, 0], lonlat[:, 1]


# ------------------------------------------------------------------------------------------
# Areas
# ------------------------------------------------------------------------------------------


@dataclass
class _County:
    frame: gpd.GeoDataFrame
    grid_xy: np.ndarray  # grid seeds, city metres
    grid_village: np.ndarray
    grid_population: np.ndarray
    villages: pd.DataFrame  # name, township, x, y, population, market_town, community
    townships: pd.DataFrame  # name, kind, x, y, population, hotspots (list of (x, y))
    corners: np.ndarray  # Voronoi vertices inside the county (junctions), city metres
    outline: Any  # county polygon in city metres (undisplaced)
    index: GridIndex
    mean_vertices: float

    @property
    def grid_township(self) -> np.ndarray:
        return self.villages["township"].to_numpy()[self.grid_village]


def _hex_lattice(spacing: float, extent: float, rng: np.random.Generator) -> np.ndarray:
    rows = int(2 * extent / (spacing * math.sqrt(3) / 2)) + 2
    cols = int(2 * extent / spacing) + 2
    j, i = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    x = -extent + i * spacing + (j % 2) * spacing / 2
    y = -extent + j * spacing * math.sqrt(3) / 2
    points = np.column_stack([x.ravel(), y.ravel()])
    return points + rng.uniform(-0.38, 0.38, points.shape) * spacing


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    tree = shapely.STRtree(shapely.points(centres))
    which, nearest = tree.query_nearest(shapely.points(points), all_matches=False)
    out = np.empty(len(points), dtype=np.int64)
    out[which] = nearest
    return out


def _densified_cells(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Densify every edge once, identically for both cells that share it.

    Returns the ring coordinates (not closed) and the cell of each coordinate.
    """
    coords, owner = shapely.get_coordinates(cells, return_index=True)
    same = owner[1:] == owner[:-1]
    start, end, cell = coords[:-1][same], coords[1:][same], owner[:-1][same]
    forward = (start[:, 0] < end[:, 0]) | ((start[:, 0] == end[:, 0]) & (start[:, 1] < end[:, 1]))
    low = np.where(forward[:, None], start, end)
    high = np.where(forward[:, None], end, start)
    _, edge = np.unique(np.hstack([low, high]), axis=0, return_inverse=True)
    edge = edge.ravel()
    # An edge's step comes from the smaller of its two cells, so every cell gets at least
    # VERTICES_PER_GRID vertices and both sides cut the edge into the same pieces.
    step = np.full(edge.max() + 1, np.inf)
    np.minimum.at(step, edge, shapely.length(cells)[cell] / VERTICES_PER_GRID)
    length = np.hypot(high[:, 0] - low[:, 0], high[:, 1] - low[:, 1])
    pieces = np.maximum(1, np.ceil(length / step[edge])).astype(np.int64)
    segment = np.repeat(np.arange(len(pieces)), pieces)
    first = np.cumsum(pieces) - pieces
    j = np.arange(len(segment)) - first[segment]
    k = np.where(forward[segment], j, pieces[segment] - j)
    t = (k / pieces[segment])[:, None]
    out = low[segment] + (high[segment] - low[segment]) * t
    at_start = j == 0
    out[at_start] = start[segment[at_start]]
    return out, cell[segment]


def _build_county(rng: np.random.Generator, n_grids: int) -> _County:
    # The outline: a wobbly disc, ~60 km across; the grids are the n cells whose seeds are
    # nearest the centre relative to it.
    harmonics = [(h, rng.uniform(0.01, 0.05), rng.uniform(0, 2 * math.pi)) for h in range(2, 7)]

    def outline_radius(angle: np.ndarray) -> np.ndarray:
        radius = np.ones_like(angle)
        for h, amplitude, phase in harmonics:
            radius += amplitude * np.cos(h * angle + phase)
        return COUNTY_RADIUS_M * radius

    spacing = math.sqrt(math.pi * COUNTY_RADIUS_M**2 / (n_grids * math.sqrt(3) / 2))
    extent = COUNTY_RADIUS_M * 1.3 + 3 * spacing
    seeds = _hex_lattice(spacing, extent, rng)
    relative = np.hypot(seeds[:, 0], seeds[:, 1]) / outline_radius(
        np.arctan2(seeds[:, 1], seeds[:, 0])
    )
    chosen = np.sort(np.argsort(relative, kind="stable")[:n_grids])
    frame_box = shapely.box(-extent * 1.2, -extent * 1.2, extent * 1.2, extent * 1.2)
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=frame_box, ordered=True)
    )[chosen]
    grid_xy = seeds[chosen]
    outline = shapely.coverage_union_all(cells)
    junctions = np.unique(shapely.get_coordinates(cells), axis=0)
    junctions = junctions[
        shapely.contains_xy(outline.buffer(-1.0), junctions[:, 0], junctions[:, 1])
    ]

    ring_xy, ring_cell = _densified_cells(cells)
    unique_xy, inverse = np.unique(ring_xy, axis=0, return_inverse=True)
    lonlat = _to_lonlat(_bend(unique_xy))[inverse.ravel()]  # one displacement per vertex
    polygons = shapely.polygons(shapely.linearrings(lonlat, indices=ring_cell))
    if not shapely.is_valid(polygons).all():
        raise RuntimeError("a displaced grid is not a valid polygon; change the seed")
    mean_vertices = float(shapely.get_num_coordinates(polygons).mean())

    # Villages: the grids nearest each point of a coarser lattice; townships likewise.
    # (the coarser lattices are a little wider: groups cut by the border are small)
    village_seeds = _hex_lattice(spacing * math.sqrt(GRIDS_PER_VILLAGE) * 1.04, extent, rng)
    grid_village = np.unique(_nearest(grid_xy, village_seeds), return_inverse=True)[1].ravel()
    n_villages = int(grid_village.max()) + 1
    village_xy = _group_centres(grid_xy, grid_village, n_villages)
    township_seeds = _hex_lattice(
        spacing * math.sqrt(GRIDS_PER_VILLAGE * VILLAGES_PER_TOWNSHIP) * 1.1, extent, rng
    )
    village_township = np.unique(_nearest(village_xy, township_seeds), return_inverse=True)[1]
    village_township = village_township.ravel()
    n_townships = int(village_township.max()) + 1
    township_xy = _group_centres(village_xy, village_township, n_townships)

    # Codes: townships clockwise from north by distance ring (the seat first), villages
    # clockwise around their township's centre, grids from the north-west.
    distance = np.hypot(township_xy[:, 0], township_xy[:, 1])
    angle = np.mod(np.arctan2(township_xy[:, 0], township_xy[:, 1]), 2 * math.pi)
    seat = int(np.argmin(distance))
    street_offices = set(np.argsort(distance)[: max(1, min(4, n_townships // 12))].tolist())
    remote = np.argsort(-distance)[: n_townships // 5]
    kind_rank = np.where(np.isin(np.arange(n_townships), remote), 2, 1)
    kind_rank[list(street_offices)] = 0
    township_order = np.lexsort((angle, np.arange(n_townships) != seat, kind_rank))
    township_rank = np.empty(n_townships, dtype=np.int64)
    township_rank[township_order] = np.arange(n_townships)
    village_township = township_rank[village_township]
    township_xy = township_xy[township_order]
    kind_rank = kind_rank[township_order]

    village_angle = np.mod(
        np.arctan2(
            village_xy[:, 0] - township_xy[village_township, 0],
            village_xy[:, 1] - township_xy[village_township, 1],
        ),
        2 * math.pi,
    )
    village_order = np.lexsort((village_angle, village_township))
    village_rank = np.empty(n_villages, dtype=np.int64)
    village_rank[village_order] = np.arange(n_villages)
    grid_village = village_rank[grid_village]
    village_xy = village_xy[village_order]
    village_township = village_township[village_order]
    grid_order = np.lexsort((grid_xy[:, 0], -np.round(grid_xy[:, 1], -2), grid_village))
    grid_xy, grid_village = grid_xy[grid_order], grid_village[grid_order]
    polygons = polygons[grid_order]

    stems = _stems(rng)
    kinds = np.array(["街道", "镇", "乡"])[kind_rank]
    township_stems = ["城关" if t == 0 else next(stems) for t in range(n_townships)]
    township_names = [
        stem + kind for stem, kind in zip(township_stems, kinds.tolist(), strict=True)
    ]
    township_codes = [f"{COUNTY_PREFIX}{t + 1:03d}000" for t in range(n_townships)]
    village_number = _rank_within(village_township)
    village_codes = [
        f"{township_codes[t][:9]}{n + 1:03d}"
        for t, n in zip(village_township.tolist(), village_number.tolist(), strict=True)
    ]
    # The village nearest its township's centre is the market-town community.
    to_centre = np.hypot(*(village_xy - township_xy[village_township]).T)
    market_town = np.zeros(n_villages, dtype=bool)
    market_town[pd.Series(to_centre).groupby(village_township).idxmin().to_numpy()] = True
    community = market_town | (kind_rank[village_township] == 0)
    village_names = [
        (township_stems[t] if market else next(stems)) + ("社区" if comm else "村")
        for t, market, comm in zip(
            village_township.tolist(), market_town.tolist(), community.tolist(), strict=True
        )
    ]
    population = np.clip(np.exp(rng.normal(math.log(4500.0), 0.45, n_villages)), 1500, 15000)
    population *= np.where(market_town, 1.8, 1.0) * np.where(community, 1.3, 1.0)
    village_population = np.round(population).astype(np.int64)
    grid_population = np.zeros(len(grid_xy), dtype=np.int64)
    grid_number = _rank_within(grid_village)
    for v in range(n_villages):
        members = np.flatnonzero(grid_village == v)
        share = rng.dirichlet(np.full(members.size, 4.0))
        grid_population[members] = rng.multinomial(village_population[v], share)
    township_population = np.bincount(
        village_township, weights=village_population, minlength=n_townships
    ).astype(np.int64)

    village_shapes = _unions(polygons, grid_village, n_villages)
    township_shapes = _unions(village_shapes, village_township, n_townships)
    county_shape = shapely.coverage_union_all(township_shapes)
    grid_codes = [
        f"{village_codes[v]}{n + 1:03d}"
        for v, n in zip(grid_village.tolist(), grid_number.tolist(), strict=True)
    ]
    grid_names = [
        f"{village_names[v]}第{n + 1}网格"
        for v, n in zip(grid_village.tolist(), grid_number.tolist(), strict=True)
    ]
    frame = gpd.GeoDataFrame(
        {
            "code": [COUNTY_CODE, *township_codes, *village_codes, *grid_codes],
            "name": [COUNTY_NAME, *township_names, *village_names, *grid_names],
            "level": ["county"]
            + ["township"] * n_townships
            + ["village"] * n_villages
            + ["grid"] * len(grid_codes),
            "parent_code": [None]
            + [COUNTY_CODE] * n_townships
            + [township_codes[t] for t in village_township.tolist()]
            + [village_codes[v] for v in grid_village.tolist()],
            "population": np.concatenate(
                [
                    [township_population.sum()],
                    township_population,
                    village_population,
                    grid_population,
                ]
            ),
        },
        geometry=np.concatenate([[county_shape], township_shapes, village_shapes, polygons]),
        crs=4326,
    )

    hotspots = []
    for t in range(n_townships):
        own = np.flatnonzero(village_township[grid_village] == t)
        count = min(own.size, int(rng.integers(1, 4)))
        hotspots.append(grid_xy[rng.choice(own, count, replace=False)])
    townships = pd.DataFrame(
        {
            "name": township_names,
            "stem": township_stems,
            "kind": kinds,
            "x": township_xy[:, 0],
            "y": township_xy[:, 1],
            "population": township_population,
            "hotspots": hotspots,
        }
    )
    villages = pd.DataFrame(
        {
            "name": village_names,
            "township": village_township,
            "x": village_xy[:, 0],
            "y": village_xy[:, 1],
            "population": village_population,
            "market_town": market_town,
            "community": community,
        }
    )
    index = GridIndex.from_geometries(
        list(zip(range(len(grid_codes)), grid_codes, polygons, strict=True))
    )
    return _County(
        frame=frame,
        grid_xy=grid_xy,
        grid_village=grid_village,
        grid_population=grid_population,
        villages=villages,
        townships=townships,
        corners=junctions,
        outline=outline,
        index=index,
        mean_vertices=mean_vertices,
    )


def _stems(rng: np.random.Generator) -> Iterator[str]:
    """Yield the demo county's name stems, numbered once they run out (very large cities)."""
    base = _name_stems(rng)
    for round_number in itertools.count(1):
        for stem in base:
            yield stem if round_number == 1 else f"{stem}{round_number}"


def _group_centres(points: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Return, per group, the member point nearest the group's mean."""
    count = np.bincount(group, minlength=groups)
    mean = np.column_stack(
        [np.bincount(group, weights=points[:, i], minlength=groups) / count for i in (0, 1)]
    )
    distance = np.hypot(*(points - mean[group]).T)
    nearest = pd.Series(distance).groupby(group).idxmin().to_numpy()
    return points[nearest]


def _rank_within(group: np.ndarray) -> np.ndarray:
    """Number the members of each group 0, 1, … in order of appearance."""
    return pd.Series(group).groupby(group).cumcount().to_numpy()


def _unions(shapes: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    out = np.empty(groups, dtype=object)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(groups + 1))
    for g in range(groups):
        out[g] = shapely.coverage_union_all(shapes[order[bounds[g] : bounds[g + 1]]])
    return out


# ------------------------------------------------------------------------------------------
# Places (city metres) and grid assignment
# ------------------------------------------------------------------------------------------


def _draw_places(
    county: _County,
    township: np.ndarray,
    place: np.ndarray,
    rng: np.random.Generator,
    spread: tuple[float, float, float, float] = (500.0, 220.0, 40.0, 450.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Place points in their township: 0 centre, 1 hot spot, 2 junction, 3 village, 4 anywhere."""
    n = len(township)
    x, y = np.zeros(n), np.zeros(n)
    towns = county.townships
    seat_factor = np.where(towns["kind"].to_numpy() == "街道", 2.0, 1.0)
    members = place == 0
    x[members] = towns["x"].to_numpy()[township[members]]
    y[members] = towns["y"].to_numpy()[township[members]]
    sigma = spread[0] * seat_factor[township]
    for t in range(len(towns)):
        spots = towns.at[t, "hotspots"]
        members = np.flatnonzero((place == 1) & (township == t))
        pick = spots[rng.integers(0, len(spots), members.size)]
        x[members], y[members] = pick[:, 0], pick[:, 1]
        sigma[members] = spread[1]
        village_ids = np.flatnonzero(county.villages["township"].to_numpy() == t)
        members = np.flatnonzero((place == 3) & (township == t))
        weights = county.villages["population"].to_numpy()[village_ids].astype(float)
        chosen = village_ids[rng.choice(village_ids.size, members.size, p=weights / weights.sum())]
        x[members] = county.villages["x"].to_numpy()[chosen]
        y[members] = county.villages["y"].to_numpy()[chosen]
        sigma[members] = spread[3]
    members = np.flatnonzero(place == 2)
    corner = county.corners[rng.integers(0, len(county.corners), members.size)]
    x[members], y[members] = corner[:, 0], corner[:, 1]
    sigma[place == 2] = spread[2]
    x += rng.normal(0.0, 1.0, n) * sigma
    y += rng.normal(0.0, 1.0, n) * sigma
    members = np.flatnonzero(place == 4)
    minx, miny, maxx, maxy = county.outline.bounds
    x[members] = rng.uniform(minx, maxx, members.size)
    y[members] = rng.uniform(miny, maxy, members.size)
    return x, y


def _locate_inside(
    county: _County,
    draw: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw points (``draw(indices)`` → city metres) until every one lies in a grid.

    Returns longitude, latitude and grid index.
    """
    lon, lat = np.zeros(n), np.zeros(n)
    grid = np.full(n, -1, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(100):
        x, y = draw(todo)
        lon[todo], lat[todo] = _project(x, y)
        grid[todo] = county.index.assign(lon[todo], lat[todo])
        todo = todo[grid[todo] < 0]
        if todo.size == 0:
            return lon, lat, grid
    raise RuntimeError(f"{todo.size} points still outside the county after 100 draws")


# ------------------------------------------------------------------------------------------
# Incidents
# ------------------------------------------------------------------------------------------


def _incidents(county: _County, n: int, today: date, rng: np.random.Generator) -> pd.DataFrame:
    codes = list(load_taxonomy().categories)
    profiles = {profile.code: profile for profile in _CATEGORY_PROFILES}
    default = profiles["other"]
    chosen = [profiles.get(code, default) for code in codes]
    share = np.array(
        [p.share if p.code == code else 0.5 for p, code in zip(chosen, codes, strict=True)]
    )
    n_townships = len(county.townships)
    rate = county.townships["population"].to_numpy() * np.exp(rng.normal(0, 0.35, n_townships))
    rate *= np.where(county.townships["kind"].to_numpy() == "街道", 1.4, 1.0)
    mix = share[None, :] * np.exp(rng.normal(0.0, 0.2, (n_townships, len(codes))))
    cells = rng.multinomial(n, (rate[:, None] * mix / (rate[:, None] * mix).sum()).ravel())
    township, category = np.unravel_index(np.repeat(np.arange(cells.size), cells), mix.shape)
    shuffle = rng.permutation(n)
    township, category = township[shuffle].astype(np.int64), category[shuffle].astype(np.int64)

    # Days: the two years ending yesterday, with a mild season, weekends and a slow rise.
    first_day = np.datetime64(today) - np.timedelta64(INCIDENT_DAYS, "D")
    days = first_day + np.arange(INCIDENT_DAYS).astype("timedelta64[D]")
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    weekday = (days.astype(np.int64) + 3) % 7
    weight = 1.0 + 0.12 * np.cos((month - 7) / 12 * 2 * math.pi)
    weight *= np.where(weekday >= 5, 1.08, 1.0) * np.linspace(0.92, 1.08, INCIDENT_DAYS)
    day = rng.choice(INCIDENT_DAYS, n, p=weight / weight.sum())
    hour = np.zeros(n, dtype=np.int64)
    place = np.zeros(n, dtype=np.int64)
    source = np.zeros(n, dtype=np.int64)
    for c, profile in enumerate(chosen):
        members = np.flatnonzero(category == c)
        hour[members] = rng.choice(24, members.size, p=_hour_profile(profile.night_share))
        centre, hotspot, road, village = profile.places
        place[members] = rng.choice(
            5,
            members.size,
            p=np.array([centre, hotspot, road, village, 0.0]) * 0.97 + [0, 0, 0, 0, 0.03],
        )
        call, walk_in, patrol = profile.sources
        source[members] = rng.choice(
            4, members.size, p=np.array([call, walk_in, patrol, 0.0]) * 0.99 + [0, 0, 0, 0.01]
        )
    local = days[day].astype("datetime64[s]") + (hour * 3600 + rng.integers(0, 3600, n)).astype(
        "timedelta64[s]"
    )
    occurred = local - np.timedelta64(UTC_OFFSET_HOURS, "h")
    now = (np.datetime64(today) - np.timedelta64(UTC_OFFSET_HOURS, "h")).astype("datetime64[s]")
    delay_minutes = np.exp(
        np.log(np.select([source == 2, source == 1], [3.0, 300.0], 12.0)) + rng.normal(0, 0.9, n)
    )
    reported = occurred + np.round(np.minimum(delay_minutes, 4320) * 60 + 60).astype(
        "timedelta64[s]"
    )
    reported = np.minimum(reported, now - np.timedelta64(1, "s"))

    # Life cycle: accepted, solved (some victims never told: 破而不馈), closed.
    notify_rate = np.clip(rng.normal(0.88, 0.05, n_townships), 0.6, 0.98)
    notify_rate[rng.choice(n_townships, max(1, n_townships // 10), replace=False)] = 0.45
    solve_probability = np.array([p.solve_probability for p in chosen])[category]
    solve_days = np.array([p.solve_days for p in chosen])[category]
    has_victim = np.array([p.has_victim for p in chosen])[category]
    age_days = (now - reported).astype(np.int64) / 86400
    accepted = rng.random(n) < np.where(age_days > 2, 0.97, 0.85)
    solved_at = reported + np.round(
        np.exp(np.log(solve_days) + rng.normal(0, 1.0, n)) * 86400
    ).astype("timedelta64[s]")
    solved = accepted & (rng.random(n) < solve_probability) & (solved_at < now)
    closed = solved & (now - solved_at > np.timedelta64(30, "D")) & (rng.random(n) < 0.75)
    notified_at = solved_at + np.round(np.exp(np.log(2.0) + rng.normal(0, 0.8, n)) * 86400).astype(
        "timedelta64[s]"
    )
    notified = solved & has_victim & (rng.random(n) < notify_rate[township]) & (notified_at < now)
    status = np.select([closed, solved, accepted], ["closed", "solved", "accepted"], "reported")
    not_a_time = np.datetime64("NaT", "s")

    lon, lat, grid = _locate_inside(
        county, lambda todo: _draw_places(county, township[todo], place[todo], rng), n
    )
    order = np.lexsort((rng.random(n), occurred))
    grid_village = county.grid_village[grid]
    township_names = county.townships["name"].to_numpy()
    village_names = county.villages["name"].to_numpy()
    group = rng.integers(1, 13, n)
    address = pd.Series(township_names[county.villages["township"].to_numpy()[grid_village]])
    address = address + village_names[grid_village] + pd.Series(group.astype(str)) + "组"

    def utc(values: np.ndarray) -> pd.Series:
        return pd.Series(pd.DatetimeIndex(values[order]).tz_localize("UTC"))

    return pd.DataFrame(
        {
            "source_id": [f"JZ{COUNTY_PREFIX}{i + 1:08d}" for i in range(n)],
            "occurred_at": utc(occurred),
            "reported_at": utc(reported),
            "category": pd.Categorical.from_codes(category[order], categories=codes),
            "lon": lon[order],
            "lat": lat[order],
            "address": address.to_numpy()[order],
            "source": pd.Categorical(SOURCES[source[order]], categories=SOURCES),
            "status": status[order].astype(object),
            "solved_at": utc(np.where(solved, solved_at, not_a_time)),
            "victim_notified_at": utc(np.where(notified, notified_at, not_a_time)),
            "grid_index": grid[order],
        }
    )


# ------------------------------------------------------------------------------------------
# Cameras
# ------------------------------------------------------------------------------------------


def _cameras(county: _County, n: int, rng: np.random.Generator) -> pd.DataFrame:
    n_villages = len(county.villages)
    n_townships = len(county.townships)
    without = np.zeros(n_villages, dtype=bool)
    rural = np.flatnonzero(~county.villages["community"].to_numpy())
    without[rng.choice(rural, min(rural.size, n_villages // 10), replace=False)] = True
    kind = rng.choice(4, n, p=[0.018, 0.096, 0.22, 0.666])
    # checkpoints and HD at junctions and centres, SD at village offices, private everywhere
    place_by_kind = np.array(
        [[0.5, 0.0, 0.5, 0.0, 0.0], [0.4, 0.1, 0.4, 0.1, 0.0], [0.2, 0.1, 0.2, 0.5, 0.0]]
        + [[0.35, 0.1, 0.15, 0.35, 0.05]]
    )
    place = (rng.random(n)[:, None] > np.cumsum(place_by_kind[kind], axis=1)).sum(axis=1)
    place = np.minimum(place, 4)
    weight = county.townships["population"].to_numpy() * np.exp(rng.normal(0, 0.5, n_townships))
    township = rng.choice(n_townships, n, p=weight / weight.sum())
    spread = (600.0, 200.0, 15.0, 300.0)

    def draw(todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _draw_places(county, township[todo], place[todo], rng, spread)

    lon, lat, grid = _locate_inside(county, draw, n)
    for _ in range(100):  # keep the camera-less villages without cameras
        moved = np.flatnonzero(without[county.grid_village[grid]])
        if moved.size == 0:
            break
        township[moved] = rng.choice(n_townships, moved.size, p=weight / weight.sum())
        lon[moved], lat[moved], grid[moved] = _locate_inside(
            county, lambda todo, moved=moved: draw(moved[todo]), moved.size
        )

    broken_factor = np.exp(rng.normal(0, 0.3, n_townships))[county.grid_township[grid]]
    broken_probability = np.minimum(np.array([0.02, 0.05, 0.12, 0.1])[kind] * broken_factor, 0.6)
    broken = rng.random(n) < broken_probability
    status = np.where(broken, np.where(rng.random(n) < 0.6, 1, 2), 0)
    direction = np.round(rng.uniform(0, 360, n)) % 360
    direction[rng.random(n) < 0.3] = np.nan
    fov = rng.integers(60, 111, n).astype(float)
    fov[rng.random(n) < 0.25] = np.nan
    reach = rng.integers(np.where(kind == 0, 100, 30), 151).astype(float)
    reach[rng.random(n) < 0.2] = np.nan
    installed = np.datetime64("2012-01-01") + rng.integers(0, 5000, n).astype("timedelta64[D]")
    names = county.frame["name"].to_numpy()[len(county.frame) - len(county.grid_xy) + grid]
    return pd.DataFrame(
        {
            "source_id": [f"{COUNTY_PREFIX}00051320{i + 1:06d}" for i in range(n)],
            "name": names + np.array(["卡口", "路口", "村部", "门口"], dtype=object)[kind],
            "lon": lon,
            "lat": lat,
            "type": CAMERA_TYPES[kind],
            "status": CAMERA_STATUSES[status],
            "resolution": np.array(["400万", "1080P", "720P", "720P"], dtype=object)[kind],
            "direction_deg": direction,
            "fov_deg": fov,
            "range_m": reach,
            "installed_at": pd.Series(
                pd.DatetimeIndex(installed.astype("datetime64[s]")).tz_localize("UTC")
            ),
            "owner": np.array(["县公安局", "县公安局", "乡镇人民政府", "个体商户"], dtype=object)[
                kind
            ],
            "grid_index": grid,
        }
    )


# ------------------------------------------------------------------------------------------
# Stations, teams and patrol pings
# ------------------------------------------------------------------------------------------


def _stations_and_teams(
    county: _County, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    towns = county.townships
    township_codes = county.frame.loc[county.frame["level"] == "township", "code"].tolist()
    village_codes = county.frame.loc[county.frame["level"] == "village", "code"].tolist()
    n_townships = len(towns)
    station_of = np.arange(n_townships) // 2  # neighbouring codes are neighbouring townships
    n_stations = int(station_of.max()) + 1
    first = np.searchsorted(station_of, np.arange(n_stations))
    station_lon, station_lat = _project(towns["x"].to_numpy()[first], towns["y"].to_numpy()[first])
    stations = pd.DataFrame(
        {
            "code": [f"PS{COUNTY_PREFIX}{s + 1:04d}" for s in range(n_stations)],
            "name": [f"{towns.at[int(t), 'stem']}派出所" for t in first],
            "lon": station_lon,
            "lat": station_lat,
            "township_codes": [
                [township_codes[t] for t in np.flatnonzero(station_of == s)]
                for s in range(n_stations)
            ],
        }
    )
    rows = []
    for s in range(n_stations):
        for squad in range(2):
            rows.append(
                (
                    "police",
                    f"{stations.at[s, 'name']}巡逻{squad + 1}组",
                    s,
                    township_codes[first[s]],
                    4,
                )
            )
    for t in range(n_townships):
        rows.append(
            ("township", f"{towns.at[t, 'name']}巡防队", station_of[t], township_codes[t], 8)
        )
    villages = np.flatnonzero(~county.villages["market_town"].to_numpy())
    for v in villages[::GRIDS_PER_VILLAGE]:
        township = int(county.villages.at[v, "township"])
        name = f"{county.villages.at[v, 'name']}巡逻队"
        rows.append(("village", name, station_of[township], village_codes[v], 6))
    teams = pd.DataFrame(rows, columns=["kind", "name", "station", "home_area_code", "members"])
    teams.insert(0, "code", [f"T{COUNTY_PREFIX}{i + 1:04d}" for i in range(len(teams))])
    teams["station_code"] = stations["code"].to_numpy()[teams.pop("station").to_numpy()]
    teams["active"] = True
    idle = max(1, round(0.1 * len(teams))) if len(teams) > 1 else 0
    teams.loc[rng.choice(len(teams), idle, replace=False), "active"] = False
    return stations, teams[
        ["code", "name", "kind", "station_code", "home_area_code", "members", "active"]
    ]


def _pings(
    county: _County,
    teams: pd.DataFrame,
    hours: int,
    interval: int,
    today: date,
    rng: np.random.Generator,
) -> pd.DataFrame:
    columns = {"team_code": [], "ts": [], "lon": [], "lat": [], "grid_index": []}
    active = np.flatnonzero(teams["active"].to_numpy())
    if hours <= 0 or active.size == 0:
        frame = pd.DataFrame(columns)
        frame["ts"] = pd.Series(pd.DatetimeIndex([], tz="UTC"))
        return frame
    kinds = teams["kind"].to_numpy()[active]

    # Patrols of 1–4 h until the hours are used up, shared out by kind.
    durations = np.round(rng.uniform(60, 240, int(hours / 2.5 * 1.3) + 10) / interval) * interval
    used = np.cumsum(durations)
    n_patrols = int(np.searchsorted(used, hours * 60)) + 1
    durations = durations[:n_patrols].astype(np.int64)
    weight = np.select([kinds == "police", kinds == "township"], [1.2, 1.0], 0.6)
    weight *= rng.uniform(0.7, 1.3, active.size)
    team = np.sort(rng.choice(active.size, n_patrols, p=weight / weight.sum()))
    # Each patrol takes its own (day, shift) slot, so a team's patrols never overlap: night
    # shift starting 01:30–02:30, day shift 08:00–14:00, evening shift 19:00–21:00 (local).
    shifts = np.array([[90, 6], [8 * 60, 36], [19 * 60, 12]])  # first start, 10-min choices
    shift_weight = {"police": (0.2, 0.45, 0.35), "township": (0.3, 0.15, 0.55)}
    slots = len(shifts) * PATROL_DAYS
    slot = np.empty(n_patrols, dtype=np.int64)
    for member in range(active.size):
        mine = np.flatnonzero(team == member)
        if mine.size > slots:
            raise ValueError("too many patrol hours for the teams: lower patrol_hours")
        p = np.tile(shift_weight.get(kinds[member], (0.1, 0.1, 0.8)), PATROL_DAYS)
        slot[mine] = np.sort(rng.choice(slots, mine.size, replace=False, p=p / p.sum()))
    first_day = np.datetime64(today) - np.timedelta64(PATROL_DAYS, "D")
    shift = slot % len(shifts)
    start_minute = shifts[shift, 0] + 10 * rng.integers(0, shifts[shift, 1] + 1)
    start_local = (first_day + (slot // len(shifts)).astype("timedelta64[D]")).astype(
        "datetime64[m]"
    )
    start_local = start_local + start_minute.astype("timedelta64[m]")

    # Where each team goes: its home, its township's centre and hot spots, its villages.
    towns = county.townships
    codes = county.frame["code"].tolist()
    township_of_code = {c: i for i, c in enumerate(codes[1 : 1 + len(towns)])}
    village_of_code = {
        c: i for i, c in enumerate(codes[1 + len(towns) : 1 + len(towns) + len(county.villages)])
    }
    village_township = county.villages["township"].to_numpy()
    village_xy = county.villages[["x", "y"]].to_numpy()
    waypoints: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for member in active:
        home = teams.at[member, "home_area_code"]
        if home in village_of_code:
            v = village_of_code[home]
            t = int(village_township[v])
            near = np.argsort(np.hypot(*(village_xy - village_xy[v]).T))[:5]
            points = np.vstack([village_xy[near], [[towns.at[t, "x"], towns.at[t, "y"]]]])
            w = np.array([3.0, 1, 1, 1, 1, 2][: len(points) - 1] + [2.0])
        else:
            t = township_of_code[home]
            own = np.flatnonzero(village_township == t)
            points = np.vstack(
                [[[towns.at[t, "x"], towns.at[t, "y"]]], towns.at[t, "hotspots"], village_xy[own]]
            )
            w = np.concatenate(
                [[5.0], np.full(len(towns.at[t, "hotspots"]), 2.0), np.full(own.size, 0.6)]
            )
        waypoints.append(points)
        weights.append(w / w.sum())
    widest = max(len(w) for w in weights)
    cumulative = np.ones((active.size, widest))
    padded = np.zeros((active.size, widest, 2))
    for member, (points, w) in enumerate(zip(waypoints, weights, strict=True)):
        cumulative[member, : len(w)] = np.cumsum(w)
        padded[member, : len(w)] = points

    # Legs: travel to a waypoint, stop 4–16 min, on to the next; the last key point holds.
    legs = 40
    pick = (rng.random((n_patrols, legs))[:, :, None] > cumulative[team][:, None, :]).sum(axis=2)
    pick = np.minimum(pick, widest - 1)
    targets = padded[team[:, None], pick] + rng.normal(0, 40.0, (n_patrols, legs, 2))
    speed = np.where(kinds[team] == "village", 75.0, rng.uniform(300.0, 500.0, n_patrols))
    here = np.concatenate([padded[team, :1], targets[:, :-1]], axis=1)
    travel = np.maximum(0.5, np.hypot(*(targets - here).transpose(2, 0, 1)) / speed[:, None])
    dwell = rng.uniform(4.0, 16.0, (n_patrols, legs))
    arrive = np.cumsum(travel + dwell, axis=1) - dwell
    leave = arrive + dwell
    key_time = np.concatenate(
        [np.zeros((n_patrols, 1)), np.stack([arrive, leave], axis=2).reshape(n_patrols, -1)],
        axis=1,
    )
    key_xy = np.concatenate([padded[team, :1], np.repeat(targets, 2, axis=1)], axis=1)
    span = float(key_time.max() + durations.max() + 10)
    key_time = np.concatenate([key_time, np.full((n_patrols, 1), span - 1)], axis=1)
    key_xy = np.concatenate([key_xy, key_xy[:, -1:]], axis=1)
    offset = np.arange(n_patrols)[:, None] * span
    per_patrol = durations // interval + 1
    patrol = np.repeat(np.arange(n_patrols), per_patrol)
    minute = (
        np.arange(patrol.size) - np.repeat(np.cumsum(per_patrol) - per_patrol, per_patrol)
    ) * interval
    at = patrol * span + minute
    flat_time = (key_time + offset).ravel()
    x = np.interp(at, flat_time, key_xy[:, :, 0].ravel()) + rng.normal(0, 8.0, at.size)
    y = np.interp(at, flat_time, key_xy[:, :, 1].ravel()) + rng.normal(0, 8.0, at.size)
    lon, lat = _project(x, y)
    grid = county.index.assign(lon, lat)
    local = start_local[patrol] + minute.astype("timedelta64[m]")
    ts = (local - np.timedelta64(UTC_OFFSET_HOURS, "h")).astype("datetime64[s]")
    now = (np.datetime64(today) - np.timedelta64(UTC_OFFSET_HOURS, "h")).astype("datetime64[s]")
    keep = ts < now
    team_codes = teams["code"].to_numpy()[active]
    return pd.DataFrame(
        {
            "team_code": pd.Categorical.from_codes(team[patrol][keep], categories=team_codes),
            "ts": pd.Series(pd.DatetimeIndex(ts[keep]).tz_localize("UTC")),
            "lon": lon[keep],
            "lat": lat[keep],
            "grid_index": grid[keep],
        }
    )


# ------------------------------------------------------------------------------------------
# Loading into a GridWatch database
# ------------------------------------------------------------------------------------------


def load_city(
    engine: Engine, city: City, progress: Callable[[str], None] | None = None
) -> dict[str, int]:
    """Write ``city`` into an empty GridWatch database (the schema is created when missing).

    Incidents, cameras and pings carry their grid (``grid_id``, ``outside_grids``) as the
    importers would set it; each table gets one :class:`ImportBatch` (``done``). The big
    tables go in with DB-API ``executemany`` (SQLite) or ``COPY`` (PostgreSQL), one
    transaction per table.

    Returns
    -------
    dict of str to int
        Rows written per table.
    """
    say = progress or (lambda message: None)
    upgrade_database(engine)
    with engine.connect() as conn:
        if conn.scalar(select(func.count()).select_from(Area.__table__)):
            raise ValueError("load_city needs a database without areas")
    counts: dict[str, int] = {}
    digest = hashlib.sha256(
        json.dumps({"seed": city.seed, "today": str(city.today), **city.sizes}).encode()
    ).hexdigest()
    areas = city.areas
    area_ids = np.arange(1, len(areas) + 1)
    id_of_code = dict(zip(areas["code"], area_ids.tolist(), strict=True))
    grid_ids = area_ids[(areas["level"] == "grid").to_numpy()]

    def grid_columns(grid_index: np.ndarray) -> dict[str, Any]:
        inside = grid_index >= 0
        return {
            "grid_id": np.where(inside, grid_ids[np.maximum(grid_index, 0)], -1),
            "outside_grids": ~inside,
        }

    def batch(conn: Connection, kind: str, rows: int) -> int:
        now = datetime.now(UTC)
        result = conn.execute(
            insert(ImportBatch.__table__).values(
                kind=kind,
                file_name=f"synthetic-city-seed{city.seed}-{kind}",
                file_sha256=digest,
                started_at=now,
                finished_at=now,
                status="done",
                rows_read=rows,
                rows_imported=rows,
                rows_duplicate=0,
                rows_rejected=0,
                options={"synthetic_city": city.sizes, "seed": city.seed},
            )
        )
        return int(result.inserted_primary_key[0])

    start = time.perf_counter()
    with engine.begin() as conn:
        batch_id = batch(conn, "grids", len(areas))
        parts, owner = shapely.get_parts(np.asarray(areas.geometry.values), return_index=True)
        geometry = shapely.multipolygons(parts, indices=owner)
        parent = areas["parent_code"].map(id_of_code).fillna(-1).astype(np.int64)
        counts["areas"] = _bulk_insert(
            conn,
            Area.__table__,
            {
                "id": area_ids,
                "code": areas["code"].to_numpy(),
                "name": areas["name"].to_numpy(),
                "level": areas["level"].to_numpy(),
                "parent_id": parent.to_numpy(),
                "parent_code": areas["parent_code"].to_numpy(),
                "population": areas["population"].to_numpy(),
                "geom": geometry,
                "batch_id": batch_id,
            },
        )
        stations = city.stations
        batch_id = batch(conn, "stations", len(stations))
        station_ids = np.arange(1, len(stations) + 1)
        counts["stations"] = _bulk_insert(
            conn,
            Station.__table__,
            {
                "id": station_ids,
                "code": stations["code"].to_numpy(),
                "name": stations["name"].to_numpy(),
                "lon": stations["lon"].to_numpy(),
                "lat": stations["lat"].to_numpy(),
                "geom": shapely.points(stations["lon"], stations["lat"]),
                "batch_id": batch_id,
            },
        )
        pairs = [
            (station_id, id_of_code[code])
            for station_id, codes in zip(
                station_ids.tolist(), stations["township_codes"], strict=True
            )
            for code in codes
        ]
        _bulk_insert(
            conn,
            StationTownship.__table__,
            {"station_id": [p[0] for p in pairs], "area_id": [p[1] for p in pairs]},
        )
        teams = city.teams
        batch_id = batch(conn, "teams", len(teams))
        station_of_code = dict(zip(stations["code"], station_ids.tolist(), strict=True))
        team_ids = np.arange(1, len(teams) + 1)
        counts["patrol_teams"] = _bulk_insert(
            conn,
            PatrolTeam.__table__,
            {
                "id": team_ids,
                "code": teams["code"].to_numpy(),
                "name": teams["name"].to_numpy(),
                "kind": teams["kind"].to_numpy(),
                "station_id": teams["station_code"].map(station_of_code).to_numpy(np.int64),
                "home_area_id": teams["home_area_code"].map(id_of_code).to_numpy(np.int64),
                "members": teams["members"].to_numpy(),
                "batch_id": batch_id,
            },
        )
        _fix_sequences(conn, ["areas", "stations", "patrol_teams"])
    say(f"areas, stations, teams ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    incidents = city.incidents
    with engine.begin() as conn:
        batch_id = batch(conn, "incidents", len(incidents))
        lon, lat = incidents["lon"].to_numpy(), incidents["lat"].to_numpy()
        counts["incidents"] = _bulk_insert(
            conn,
            Incident.__table__,
            {
                "source_id": incidents["source_id"].to_numpy(),
                "occurred_at": incidents["occurred_at"],
                "reported_at": incidents["reported_at"],
                "category": incidents["category"].to_numpy(dtype=object),
                "lon": lon,
                "lat": lat,
                "geom": shapely.points(lon, lat),
                "address": incidents["address"].to_numpy(),
                "source": incidents["source"].to_numpy(dtype=object),
                "status": incidents["status"].to_numpy(),
                "solved_at": incidents["solved_at"],
                "victim_notified_at": incidents["victim_notified_at"],
                **grid_columns(incidents["grid_index"].to_numpy()),
                "batch_id": batch_id,
            },
        )
    say(f"incidents: {counts['incidents']:,} ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    cameras = city.cameras
    with engine.begin() as conn:
        batch_id = batch(conn, "cameras", len(cameras))
        lon, lat = cameras["lon"].to_numpy(), cameras["lat"].to_numpy()
        counts["cameras"] = _bulk_insert(
            conn,
            Camera.__table__,
            {
                **{
                    column: cameras[column].to_numpy()
                    for column in (
                        "source_id",
                        "name",
                        "type",
                        "status",
                        "resolution",
                        "direction_deg",
                        "fov_deg",
                        "range_m",
                        "owner",
                    )
                },
                "lon": lon,
                "lat": lat,
                "geom": shapely.points(lon, lat),
                "installed_at": cameras["installed_at"],
                **grid_columns(cameras["grid_index"].to_numpy()),
                "batch_id": batch_id,
            },
        )
    say(f"cameras: {counts['cameras']:,} ({time.perf_counter() - start:.1f} s)")

    start = time.perf_counter()
    pings = city.pings
    team_id_of_code = dict(zip(teams["code"], team_ids.tolist(), strict=True))
    with engine.begin() as conn:
        batch_id = batch(conn, "patrols", len(pings))
        lon, lat = pings["lon"].to_numpy(), pings["lat"].to_numpy()
        team_codes = pings["team_code"].astype("category")
        team_lookup = np.array(
            [team_id_of_code[c] for c in team_codes.cat.categories], dtype=np.int64
        )
        counts["patrol_pings"] = _bulk_insert(
            conn,
            PatrolPing.__table__,
            {
                # zero-padded, so the unique index is filled in order
                "source_id": np.array([f"PZ{i:09d}" for i in range(1, len(pings) + 1)], object),
                "team_id": team_lookup[team_codes.cat.codes.to_numpy()]
                if len(pings)
                else np.zeros(0, dtype=np.int64),
                "ts": pings["ts"],
                "lon": lon,
                "lat": lat,
                "geom": shapely.points(lon, lat),
                **grid_columns(pings["grid_index"].to_numpy().astype(np.int64)),
                "batch_id": batch_id,
            },
        )
    say(f"patrol pings: {counts['patrol_pings']:,} ({time.perf_counter() - start:.1f} s)")
    return counts


def _fix_sequences(conn: Connection, tables: Sequence[str]) -> None:
    """Move PostgreSQL id sequences past ids that were written explicitly."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        )


def _python_values(values: Any, n: int, postgres: bool) -> list[Any]:
    """Turn one column (array, Series or scalar) into a list of DB-API values."""
    if np.isscalar(values) or values is None:
        return [values] * n
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return _timestamps(values, postgres)
    array = np.asarray(values)
    if array.dtype == object and n and isinstance(array[0], shapely.Geometry):
        if postgres:
            return list(shapely.to_wkb(shapely.set_srid(array, 4326), hex=True, include_srid=True))
        return list(shapely.to_wkb(array))
    if array.dtype.kind == "f":
        out = array.astype(object)
        out[np.isnan(array)] = None
        return out.tolist()
    if array.dtype.kind == "b":
        return array.tolist() if postgres else array.astype(np.int64).tolist()
    if array.dtype.kind == "i":
        out = array.astype(object)
        out[array < 0] = None  # -1 marks "none" in id columns
        return out.tolist()
    return [None if v is None or v is pd.NA or v != v else v for v in array.tolist()]


def _timestamps(values: pd.Series, postgres: bool) -> list[str | None]:
    """Format aware timestamps as SQLAlchemy stores them on SQLite (or as PostgreSQL reads).

    ``YYYY-MM-DD HH:MM:SS.ffffff`` in UTC, byte-patched in NumPy rather than formatted row by
    row (the importers' values compare as text on SQLite, so the format must be the same).
    """
    stamps = values.dt.tz_convert(None).to_numpy().astype("datetime64[us]")
    missing = np.isnat(stamps)
    whole = stamps.astype("datetime64[s]")
    if (whole[~missing] == stamps[~missing]).all():
        text = np.datetime_as_string(whole, unit="s").astype("S19")
        text.view(np.uint8).reshape(-1, 19)[:, 10] = ord(" ")
        text = np.char.add(text, b".000000+00:00" if postgres else b".000000")
    else:
        text = np.datetime_as_string(stamps, unit="us").astype("S26")
        text.view(np.uint8).reshape(-1, 26)[:, 10] = ord(" ")
        if postgres:
            text = np.char.add(text, b"+00:00")
    out = text.astype(str).astype(object)
    out[missing] = None
    return list(out)


def _bulk_insert(
    conn: Connection, table: Table, columns: dict[str, Any], chunk: int = 200_000
) -> int:
    """Insert columns of equal length without per-row ORM or type processing.

    Model columns left out get their scalar Python default; a NOT NULL column with neither a
    value nor a default raises, so a schema change cannot slip in NULLs.
    """
    n = max((len(v) for v in columns.values() if not np.isscalar(v) and v is not None), default=0)
    columns = dict(columns)
    for column in table.columns:
        if column.name in columns:
            continue
        if column.default is not None and column.default.is_scalar:
            columns[column.name] = column.default.arg
        elif not column.nullable and not column.primary_key and column.server_default is None:
            raise ValueError(f"no value for NOT NULL column {table.name}.{column.name}")
    postgres = conn.dialect.name == "postgresql"
    names = list(columns)
    values = [_python_values(columns[name], n, postgres) for name in names]
    if n == 0:
        return 0
    if postgres:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for row in zip(*values, strict=True):
                copy.write_row(row)
        return n
    statement = (
        f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    )
    # Building the secondary indexes once at the end is about twice as fast as keeping them up
    # to date row by row (SQLite DDL is transactional: they come back in the same transaction).
    indexes = []
    if n >= 50_000:
        indexes = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master "
            f"WHERE type = 'index' AND tbl_name = '{table.name}' AND sql IS NOT NULL"
        ).all()
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    for start in range(0, n, chunk):
        rows = list(zip(*(v[start : start + chunk] for v in values), strict=True))
        conn.exec_driver_sql(statement, rows)
    for _, sql in indexes:
        conn.exec_driver_sql(sql)
    return n


# ------------------------------------------------------------------------------------------
# Cached SQLite database
# ------------------------------------------------------------------------------------------


def city_database(
    path: str | os.PathLike[str],
    seed: int = 0,
    *,
    today: date | None = None,
    progress: Callable[[str], None] | None = None,
    **sizes: int,
) -> Path:
    """Return a SQLite file holding the city, building it only when needed.

    A marker file ``<path>.city.json`` records the seed, sizes and format version; an existing
    file is reused when they match (whatever day it was built on, unless ``today`` is given
    and differs). The file is built under a temporary name and renamed when complete, so an
    interrupted build is never reused.

    Parameters
    ----------
    path : path-like
        The SQLite file.
    seed : int
        Seed of the city.
    today : datetime.date, optional
        Day of the "export" (default: today in Asia/Shanghai).
    progress : callable, optional
        Called with a message after each stage.
    **sizes : int
        ``grids``, ``incidents``, ``cameras``, ``patrol_hours``, ``ping_minutes`` (see
        :func:`city_frames`).

    Returns
    -------
    pathlib.Path
        The database file; its marker holds the build times.
    """
    path = Path(path)
    marker_path = path.with_name(path.name + ".city.json")
    defaults = {
        "grids": 5000,
        "incidents": 1_000_000,
        "cameras": 15_000,
        "patrol_hours": 50_000,
        "ping_minutes": PING_MINUTES,
    }
    unknown = set(sizes) - set(defaults)
    if unknown:
        raise TypeError(f"unknown sizes: {sorted(unknown)}")
    wanted = {"version": CITY_VERSION, "seed": seed, **defaults, **sizes}
    if path.exists() and marker_path.exists():
        marker = json.loads(marker_path.read_text("utf-8"))
        same_day = today is None or marker.get("today") == today.isoformat()
        if {k: marker.get(k) for k in wanted} == wanted and same_day:
            return path
    for stale in (path, marker_path, *_sqlite_side_files(path)):
        stale.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(path.name + ".building")
    for stale in (building, *_sqlite_side_files(building)):
        stale.unlink(missing_ok=True)

    start = time.perf_counter()
    city = city_frames(
        seed,
        **{k: v for k, v in wanted.items() if k not in ("version", "seed", "ping_minutes")},
        ping_minutes=wanted["ping_minutes"],
        today=today,
        progress=progress,
    )
    generated = time.perf_counter() - start
    engine = create_db_engine(f"sqlite:///{building}")
    try:
        start = time.perf_counter()
        counts = load_city(engine, city, progress=progress)
        loaded = time.perf_counter() - start
    finally:
        engine.dispose()
    os.replace(building, path)
    marker = {
        **wanted,
        "today": city.today.isoformat(),
        "rows": counts,
        "generate_seconds": round(generated, 1),
        "load_seconds": round(loaded, 1),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    marker_path.write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
    return path


def add_city_arguments(
    parser: argparse.ArgumentParser,
    grids: int = 5000,
    incidents: int = 1_000_000,
    cameras: int = 15_000,
    patrol_hours: int = 50_000,
    cache: bool = True,
) -> None:
    """Add the city's size options (and ``--seed``, and ``--cache`` for a kept database)."""
    parser.add_argument("--grids", type=int, default=grids)
    parser.add_argument("--incidents", type=int, default=incidents)
    parser.add_argument("--cameras", type=int, default=cameras)
    parser.add_argument("--patrol-hours", type=int, default=patrol_hours)
    parser.add_argument("--seed", type=int, default=0)
    if cache:
        parser.add_argument(
            "--cache",
            type=Path,
            default=Path(__file__).resolve().parent.parent / "var" / "bench",
            help="folder of the cached city databases",
        )


def city_sizes(args: argparse.Namespace) -> dict[str, int]:
    """Return the sizes :func:`add_city_arguments` read, as :func:`build_city` takes them."""
    return {
        "grids": args.grids,
        "incidents": args.incidents,
        "cameras": args.cameras,
        "patrol_hours": args.patrol_hours,
    }


def cached_city(args: argparse.Namespace, progress: Callable[[str], None] | None = None) -> Path:
    """Return the city database of the options in ``args`` (in ``--cache``, built if needed)."""
    sizes = city_sizes(args)
    args.cache.mkdir(parents=True, exist_ok=True)
    name = "city-" + "-".join(f"{v}" for v in sizes.values()) + f"-s{args.seed}.db"
    return city_database(args.cache / name, args.seed, progress=progress, **sizes)


def _sqlite_side_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def city_marker(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the marker :func:`city_database` wrote next to ``path``."""
    path = Path(path)
    return dict(json.loads(path.with_name(path.name + ".city.json").read_text("utf-8")))


__all__ = [
    "City",
    "city_database",
    "city_frames",
    "city_marker",
    "load_city",
]
