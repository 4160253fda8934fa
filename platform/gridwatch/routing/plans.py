"""Build a station's patrol plan for one shift from storage, store it and export it as GPX.

Teams on shift are the station's teams plus the village teams whose home area lies in the
station's townships. A team's base is the station for police teams and the centre of its home
area (township or village) for the others; police drive, township teams ride e-bikes and
village teams walk (speeds: ``GRIDWATCH_ROUTE_SPEEDS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Engine, select

from gridwatch.config import Settings
from gridwatch.periods import period_of
from gridwatch.routing.risk import is_hot, score_grids
from gridwatch.routing.solver import (
    Place,
    PlanningOptions,
    Problem,
    Solution,
    TeamShift,
    solve,
)
from gridwatch.routing.travel import RoadNetwork, straight_line_matrix
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    Area,
    Incident,
    PatrolPlan,
    PatrolTeam,
    Station,
    StationTownship,
)

#: Travel mode of each team kind.
MODE_OF_KIND: Final = {"police": "car", "township": "ebike", "village": "foot"}
#: Days of reported incidents behind the "recent" score and the hour profiles.
RECENT_DAYS: Final = 90
#: Default number of candidate grids (highest shift risk first).
DEFAULT_MAX_STOPS: Final = 80
_METRES_PER_DEGREE: Final = 111_320.0


class PlanningError(ValueError):
    """A plan cannot be made or found (unknown station, no teams, bad shift …)."""


@dataclass(frozen=True)
class Shift:
    """A shift's local start and end (the end may fall on the next day)."""

    day: date
    label: str
    start: datetime
    end: datetime

    @property
    def minutes(self) -> int:
        """Length of the shift in minutes."""
        return int((self.end - self.start).total_seconds() // 60)


def parse_shift(day: date, text: str, tz: ZoneInfo) -> Shift:
    """Parse ``HH:MM-HH:MM`` on ``day`` in ``tz``; an end at or before the start is next day."""
    try:
        first, last = (part.strip() for part in text.split("-"))
        start_clock = time.fromisoformat(first)
        end_clock = time.fromisoformat(last)
    except ValueError as exc:
        raise PlanningError(f"--shift must be HH:MM-HH:MM such as 20:00-02:00: {text!r}") from exc
    start = datetime.combine(day, start_clock, tzinfo=tz)
    end_day = day if end_clock > start_clock else day + timedelta(days=1)
    end = datetime.combine(end_day, end_clock, tzinfo=tz)
    if (end - start) > timedelta(hours=16):
        raise PlanningError(f"a shift is at most 16 hours long: {text!r}")
    return Shift(day, f"{start_clock:%H:%M}-{end_clock:%H:%M}", start, end)


def options_from_settings(settings: Settings, **overrides: Any) -> PlanningOptions:
    """Return the planning options of the settings, with keyword overrides."""
    low, high = settings.route_dwell_minutes
    values: dict[str, Any] = {
        "dwell_min_minutes": low,
        "dwell_max_minutes": high,
        "revisit_minutes": settings.route_revisit_minutes,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PlanningOptions(**values)


def _local_metres(geom: BaseGeometry, lon0: float, lat0: float) -> BaseGeometry:
    """Project WGS84 geometry to metres on a plane tangent near (lon0, lat0)."""
    scale = np.array([_METRES_PER_DEGREE * np.cos(np.radians(lat0)), _METRES_PER_DEGREE])
    origin = np.array([lon0, lat0])
    return shapely.transform(geom, lambda xy: (xy - origin) * scale)


def _areas(session: Any) -> pd.DataFrame:
    rows = session.execute(select(Area.id, Area.code, Area.level, Area.parent_id, Area.geom)).all()
    return pd.DataFrame(rows, columns=["id", "code", "level", "parent_id", "geom"]).set_index(
        "id", drop=False
    )


def _under(areas: pd.DataFrame, roots: set[int]) -> set[int]:
    """Return the ids of the areas at or below any of ``roots``."""
    parent = areas["parent_id"].to_dict()
    inside: set[int] = set()
    for area_id in areas.index:
        node: Any = area_id
        for _ in range(16):
            if node in roots:
                inside.add(int(area_id))
                break
            node = parent.get(node)
            if node is None or node != node:  # None or NaN
                break
    return inside


def _point(geom: BaseGeometry | None) -> tuple[float, float] | None:
    if geom is None or geom.is_empty:
        return None
    point = geom.point_on_surface()
    return (float(point.x), float(point.y))


def load_problem_inputs(
    engine: Engine,
    settings: Settings,
    station_code: str,
    shift: Shift,
    team_codes: list[str] | None = None,
    max_stops: int = DEFAULT_MAX_STOPS,
    focus_grids: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, Any], list[TeamShift], list[Place]]:
    """Read the station, its teams and its candidate stops with their risk by hour.

    ``focus_grids`` (grid code → peak local hours) are the prevention plan's patrol-focus
    grids, computed by the caller; they add the ``focus`` term of the risk score.

    Returns
    -------
    tuple
        The station (``id``, ``code``, ``name``), the teams on shift, and the candidate places
        (at most ``max_stops``, highest shift risk first).
    """
    tz = settings.timezone
    with session_scope(engine) as session:
        station = session.scalar(select(Station).where(Station.code == station_code))
        if station is None:
            raise PlanningError(f"no station with code {station_code!r}")
        township_ids = set(
            session.scalars(
                select(StationTownship.area_id).where(StationTownship.station_id == station.id)
            )
        )
        areas = _areas(session)
        leaf_level = settings.area_levels[-1]
        inside = _under(areas, township_ids)
        grids = areas[areas["level"] == leaf_level]
        grids = grids[grids["geom"].notna()]
        jurisdiction = shapely.union_all(
            [g for g in areas.loc[sorted(township_ids & set(areas.index)), "geom"] if g]
        )
        if jurisdiction.is_empty:
            raise PlanningError(f"station {station_code} has no townships with a boundary")
        lon0, lat0 = jurisdiction.centroid.x, jurisdiction.centroid.y
        near = shapely.dwithin(
            _local_metres(jurisdiction, lon0, lat0),
            _local_metres(grids["geom"].to_numpy(), lon0, lat0),
            settings.route_border_metres,
        )
        in_reach = grids[grids.index.isin(inside) | np.asarray(near, dtype=bool)]
        station_point = (
            (station.lon, station.lat)
            if station.lon is not None and station.lat is not None
            else (float(jurisdiction.centroid.x), float(jurisdiction.centroid.y))
        )
        team_rows = session.execute(
            select(
                PatrolTeam.id,
                PatrolTeam.code,
                PatrolTeam.kind,
                PatrolTeam.station_id,
                PatrolTeam.home_area_id,
            ).order_by(PatrolTeam.code)
        ).all()
        day_start = datetime.combine(shift.day, time(), tzinfo=tz)
        grid_ids = [int(i) for i in in_reach.index]
        code_of = dict(zip(grids.index, grids["code"], strict=True))
        incident_rows = (
            session.execute(
                select(Incident.grid_id, Incident.occurred_at).where(
                    Incident.grid_id.in_(grid_ids),
                    Incident.occurred_at >= day_start - timedelta(days=RECENT_DAYS),
                    Incident.occurred_at < day_start,
                    Incident.source != "patrol",
                )
            ).all()
            if grid_ids
            else []
        )
        station_info = {"id": station.id, "code": station.code, "name": station.name}

    teams: list[TeamShift] = []
    for team_id, code, kind, team_station, home_area in team_rows:
        belongs = team_station == station_info["id"] or (
            team_station is None and home_area is not None and int(home_area) in inside
        )
        if not belongs or (team_codes and code not in team_codes):
            continue
        mode = MODE_OF_KIND.get(kind, "car")
        base = station_point
        if kind != "police" and home_area is not None and home_area in areas.index:
            base = _point(areas.at[home_area, "geom"]) or station_point
        teams.append(
            TeamShift(
                int(team_id),
                code,
                float(base[0]),
                float(base[1]),
                mode,
                float(settings.route_speeds[mode]),
            )
        )
    if team_codes:
        missing = sorted(set(team_codes) - {t.code for t in teams})
        if missing:
            raise PlanningError(f"not teams of station {station_code}: {', '.join(missing)}")
    if not teams:
        raise PlanningError(f"station {station_code} has no patrol teams")

    frame = _grid_inputs(engine, in_reach, shift.day)
    hours = pd.DataFrame(
        {
            "grid_code": [code_of[int(g or 0)] for g, _ in incident_rows],
            "hour": [ts.astimezone(tz).hour for _, ts in incident_rows],
        }
    )
    recent = hours.groupby("grid_code").size() if not hours.empty else pd.Series(dtype=float)
    frame["recent"] = frame["grid_code"].map(recent).fillna(0.0)
    start_hour = shift.start.hour + shift.start.minute / 60
    scored = score_grids(
        frame, hours, settings.route_risk_weights, start_hour, shift.minutes, focus_grids
    )
    places = [
        Place(g.grid_code, g.lon, g.lat, g.risk_by_hour)
        for g in scored[:max_stops]
        if g.shift_risk > 0
    ]
    return station_info, teams, places


def _grid_inputs(engine: Engine, grids: pd.DataFrame, day: date) -> pd.DataFrame:
    """Return per grid in reach: representative point and the published metrics used."""
    from gridwatch.workers.engine import read_metrics

    week = period_of(day - timedelta(days=1), "week")
    month = period_of(day, "month").previous()
    by_week = {r["area_code"]: r for r in read_metrics(engine, "grid", week.label)}
    by_month = {r["area_code"]: r for r in read_metrics(engine, "grid", month.label)}
    rows = []
    for _, grid in grids.sort_values("code").iterrows():
        point = _point(grid["geom"])
        if point is None:
            continue
        w = by_week.get(grid["code"], {})
        m = by_month.get(grid["code"], {})
        rows.append(
            {
                "grid_code": grid["code"],
                "lon": point[0],
                "lat": point[1],
                "forecast": w.get("forecast_next"),
                "hotspot": is_hot(m.get("hotspot"), m.get("hotspot_class")),
                "blind_spot": m.get("incidents_blind_spot"),
            }
        )
    return pd.DataFrame(
        rows, columns=["grid_code", "lon", "lat", "forecast", "hotspot", "blind_spot"]
    )


def travel_distances(
    teams: list[TeamShift],
    places: list[Place],
    detour_factor: float,
    roads: RoadNetwork | None = None,
) -> np.ndarray:
    """Return the distance matrix over places then team bases (metres)."""
    lon = np.array([p.lon for p in places] + [t.lon for t in teams], dtype=np.float64)
    lat = np.array([p.lat for p in places] + [t.lat for t in teams], dtype=np.float64)
    if roads is not None:
        return roads.distance_matrix(lon, lat)
    return straight_line_matrix(lon, lat, detour_factor)


def plan_payload(
    problem: Problem,
    plan: Solution,
    greedy: Solution,
    shift: Shift,
    station: dict[str, Any],
    travel: str,
) -> dict[str, Any]:
    """Return the plan as plain data (the ``routes plan --json`` shape)."""

    def at(seconds: int) -> str:
        return (shift.start + timedelta(seconds=int(seconds))).isoformat(timespec="seconds")

    teams_out = []
    for route in plan.routes:
        team = problem.teams[route.team]
        stops = []
        for visit in route.visits:
            copy = problem.stops[visit.stop]
            place = problem.places[copy.place]
            dwell = (visit.depart_s - visit.arrive_s) / 60
            stops.append(
                {
                    "lon": round(place.lon, 7),
                    "lat": round(place.lat, 7),
                    "grid_code": place.grid_code,
                    "arrive": at(visit.arrive_s),
                    "depart": at(visit.depart_s),
                    "dwell_min": round(dwell, 2),
                    "risk": round(copy.risk, 6),
                    "window": [at(copy.open_s), at(copy.close_s)],
                }
            )
        teams_out.append(
            {
                "team_id": team.team_id,
                "team_code": team.code,
                "mode": team.mode,
                "speed_kmh": team.speed_kmh,
                "base": {"lon": round(team.lon, 7), "lat": round(team.lat, 7)},
                "leave_base": at(route.leave_base_s) if route.visits else None,
                "return_base": at(route.return_base_s) if route.visits else None,
                "stops": stops,
                "km": round(route.metres / 1000, 3),
                "duration_min": round(route.duration_s / 60, 1),
                "utilisation": round(route.busy_s / max(problem.shift_s, 1), 4),
            }
        )
    return {
        "station_code": station["code"],
        "station_name": station["name"],
        "day": shift.day.isoformat(),
        "shift": shift.label,
        "shift_start": shift.start.isoformat(timespec="seconds"),
        "shift_end": shift.end.isoformat(timespec="seconds"),
        "teams": teams_out,
        "risk_covered": round(plan.risk_covered, 4),
        "km": round(plan.km, 3),
        "utilisation": round(plan.utilisation, 4),
        "greedy": {
            "risk_covered": round(greedy.risk_covered, 4),
            "km": round(greedy.km, 3),
            "utilisation": round(greedy.utilisation, 4),
            "seconds": round(greedy.seconds, 3),
        },
        "solver": {
            "source": plan.source,
            "seconds": round(plan.seconds, 3),
            "objective": plan.objective,
            "solution_limit": problem.options.solution_limit,
            "time_limit_hit": plan.time_limit_hit,
            "candidates": len(problem.places),
            "stop_copies": problem.n_stops,
        },
        "options": {
            "dwell_minutes": [
                problem.options.dwell_min_minutes,
                problem.options.dwell_max_minutes,
            ],
            "revisit_minutes": problem.options.revisit_minutes,
            "window_minutes": problem.options.window_minutes,
            "travel": travel,
        },
    }


def plan_station(
    engine: Engine,
    settings: Settings,
    station_code: str,
    day: date,
    shift_text: str,
    *,
    team_codes: list[str] | None = None,
    roads_file: Path | None = None,
    max_stops: int = DEFAULT_MAX_STOPS,
    solution_limit: int | None = None,
    time_limit_seconds: float | None = None,
    focus_grids: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Plan one shift of a station's teams; return the payload (not yet stored).

    ``focus_grids`` maps the prevention plan's patrol-focus grids to their peak local hours
    (the caller computes them with the targeting layer's ``station_patrol_focus``); ``None``
    plans without the focus term. The payload's ``plan_focus`` names the focus grids among the
    candidate stops and each stop says whether its grid is one (``focus``).
    """
    shift = parse_shift(day, shift_text, settings.timezone)
    station, teams, places = load_problem_inputs(
        engine, settings, station_code, shift, team_codes, max_stops, focus_grids
    )
    roads_path = roads_file or settings.route_roads_file
    roads = RoadNetwork.from_file(roads_path) if roads_path else None
    distances = travel_distances(teams, places, settings.route_detour_factor, roads)
    options = options_from_settings(
        settings, solution_limit=solution_limit, time_limit_seconds=time_limit_seconds
    )
    start_hour = shift.start.hour + shift.start.minute / 60
    problem = Problem(teams, places, distances, start_hour, shift.minutes, options)
    plan, greedy = solve(problem)
    travel = (
        f"roads:{Path(roads_path).name}"
        if roads_path
        else f"straight_line x {settings.route_detour_factor:g}"
    )
    payload = plan_payload(problem, plan, greedy, shift, station, travel)
    add_plan_focus(
        payload,
        focus_grids,
        settings.route_risk_weights.get("focus", 0.0),
        {place.grid_code for place in places},
    )
    add_grid_names(engine, payload)
    if roads is not None:
        add_road_paths(roads, payload)
    return payload


def add_plan_focus(
    payload: dict[str, Any],
    focus_grids: Mapping[str, Sequence[int]] | None,
    weight: float,
    candidates: set[str],
) -> None:
    """Add ``plan_focus`` (``used``, ``weight``, ``grids``) and each stop's ``focus`` flag.

    ``grids`` lists the focus grids among the ``candidates`` (the candidate stops' grid
    codes), each with its ``grid_code`` and ``peak_hours``, by code: the ones the focus term
    weighed.
    """
    focus = dict(focus_grids or {})
    payload["plan_focus"] = {
        "used": focus_grids is not None,
        "weight": float(weight) if focus_grids is not None else 0.0,
        "grids": [
            {"grid_code": code, "peak_hours": sorted({int(h) % 24 for h in focus[code]})}
            for code in sorted(focus)
            if code in candidates
        ],
    }
    for team in payload["teams"]:
        for stop in team["stops"]:
            stop["focus"] = stop["grid_code"] in focus


def add_road_paths(roads: RoadNetwork, payload: dict[str, Any]) -> None:
    """Add each team's ``path``: its route along the roads as ``[lon, lat]`` pairs.

    Base → stops → base, each leg the shortest road path (a leg the network does not connect
    is a straight line). The map draws it, and adherence measures off-route distance from it.
    """
    for team in payload["teams"]:
        if not team["stops"]:
            continue
        points = [team["base"], *team["stops"], team["base"]]
        path: list[list[float]] = []
        for here, there in zip(points, points[1:], strict=False):
            leg = roads.path_coordinates(here["lon"], here["lat"], there["lon"], there["lat"])
            for lon, lat in leg[1:] if path else leg:
                path.append([round(lon, 6), round(lat, 6)])
        team["path"] = path


def add_grid_names(engine: Engine, payload: dict[str, Any]) -> None:
    """Add each stop's ``grid_name`` (for the route sheet and the map) to a plan payload."""
    codes = {stop["grid_code"] for team in payload["teams"] for stop in team["stops"]}
    if not codes:
        return
    with session_scope(engine) as session:
        rows = session.execute(select(Area.code, Area.name).where(Area.code.in_(codes)))
        names = {code: name for code, name in rows}
    for team in payload["teams"]:
        for stop in team["stops"]:
            stop["grid_name"] = names.get(stop["grid_code"])


def store_plan(engine: Engine, payload: dict[str, Any]) -> int:
    """Store a plan payload; return its id (also written into the stored payload)."""
    with session_scope(engine) as session:
        station_id = session.scalar(
            select(Station.id).where(Station.code == payload["station_code"])
        )
        if station_id is None:
            raise PlanningError(f"no station with code {payload['station_code']!r}")
        row = PatrolPlan(
            station_id=station_id, day=payload["day"], shift=payload["shift"], payload={}
        )
        session.add(row)
        session.flush()
        payload["plan_id"] = row.id
        row.payload = dict(payload)
        return int(row.id)


def load_plan(engine: Engine, plan_id: int) -> dict[str, Any]:
    """Return a stored plan's payload."""
    with session_scope(engine) as session:
        row = session.get(PatrolPlan, plan_id)
        if row is None:
            raise PlanningError(f"no stored plan with id {plan_id}")
        payload = dict(row.payload)
    payload["plan_id"] = plan_id
    return payload


def gpx_text(payload: dict[str, Any], team: dict[str, Any]) -> str:
    """Return one team's route as GPX 1.1: numbered stops as waypoints and a route.

    Names and descriptions are Chinese (基地 for the base, 停留 … 分钟 for the dwell), as the
    phones' navigation apps show them.
    """
    import gpxpy.gpx

    gpx = gpxpy.gpx.GPX()
    gpx.name = f"{payload['station_code']} {team['team_code']} {payload['day']} {payload['shift']}"
    route = gpxpy.gpx.GPXRoute(name=team["team_code"])
    base = team["base"]
    route.points.append(gpxpy.gpx.GPXRoutePoint(base["lat"], base["lon"], name="基地"))
    for number, stop in enumerate(team["stops"], start=1):
        arrive = datetime.fromisoformat(stop["arrive"])
        label = f"{number:02d} {stop['grid_code']} {arrive:%H:%M}"
        gpx.waypoints.append(
            gpxpy.gpx.GPXWaypoint(
                stop["lat"],
                stop["lon"],
                time=arrive,
                name=label,
                description=f"停留 {stop['dwell_min']:.0f} 分钟，至 {stop['depart'][11:16]}",
            )
        )
        route.points.append(
            gpxpy.gpx.GPXRoutePoint(stop["lat"], stop["lon"], time=arrive, name=label)
        )
    route.points.append(gpxpy.gpx.GPXRoutePoint(base["lat"], base["lon"], name="基地"))
    gpx.routes.append(route)
    xml: str = gpx.to_xml()
    return xml


def gpx_file_name(payload: dict[str, Any], team: dict[str, Any]) -> str:
    """Return the file name of a team's GPX (day and team code, safe on every system)."""
    code = "".join(
        c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in str(team["team_code"])
    )
    return f"{payload['day']}_{code}.gpx"


def write_gpx(payload: dict[str, Any], directory: Path) -> list[Path]:
    """Write one GPX file per team (stops as waypoints and a route); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for team in payload["teams"]:
        path = directory / gpx_file_name(payload, team)
        path.write_text(gpx_text(payload, team), "utf-8")
        written.append(path)
    return written


# --- stored plans for the web pages and the API -----------------------------------------


def stations_in(engine: Engine, area_ids: frozenset[int] | None = None) -> list[dict[str, Any]]:
    """Return the stations covering any of ``area_ids`` (every station for ``None``).

    Each is ``{"id", "code", "name", "township_ids"}``, by code. A station user's or a
    township user's jurisdiction thus gives the stations that plan for their townships.
    """
    with session_scope(engine) as session:
        rows = session.execute(
            select(Station.id, Station.code, Station.name).order_by(Station.code)
        )
        stations: dict[int, dict[str, Any]] = {
            sid: {"id": sid, "code": code, "name": name, "township_ids": []}
            for sid, code, name in rows
        }
        for station_id, area_id in session.execute(
            select(StationTownship.station_id, StationTownship.area_id)
        ):
            if station_id in stations:
                stations[station_id]["township_ids"].append(int(area_id))
    found = [
        station
        for station in stations.values()
        if area_ids is None or any(t in area_ids for t in station["township_ids"])
    ]
    return sorted(found, key=lambda s: s["code"])


def list_plans(
    engine: Engine,
    station_ids: list[int],
    day: date | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Return stored plans of ``station_ids`` (on ``day`` if given), newest first.

    Each is a summary: ``plan_id``, ``station_code``, ``day``, ``shift``, ``created_at``,
    ``teams``, ``stops``, ``risk_covered``, ``greedy_risk_covered``, ``km``.
    """
    if not station_ids:
        return []
    query = select(PatrolPlan).where(PatrolPlan.station_id.in_(station_ids))
    if day is not None:
        query = query.where(PatrolPlan.day == day.isoformat())
    query = query.order_by(PatrolPlan.created_at.desc(), PatrolPlan.id.desc()).limit(limit)
    out = []
    with session_scope(engine) as session:
        for row in session.scalars(query):
            payload = row.payload or {}
            teams = payload.get("teams", [])
            out.append(
                {
                    "plan_id": row.id,
                    "station_id": row.station_id,
                    "station_code": payload.get("station_code"),
                    "station_name": payload.get("station_name"),
                    "day": row.day,
                    "shift": row.shift,
                    "created_at": row.created_at,
                    "teams": len(teams),
                    "stops": sum(len(t.get("stops", [])) for t in teams),
                    "risk_covered": payload.get("risk_covered"),
                    "greedy_risk_covered": payload.get("greedy", {}).get("risk_covered"),
                    "km": payload.get("km"),
                }
            )
    return out


def plan_station_id(engine: Engine, plan_id: int) -> int | None:
    """Return the station id of a stored plan (``None`` when there is no such plan)."""
    with session_scope(engine) as session:
        station_id = session.scalar(select(PatrolPlan.station_id).where(PatrolPlan.id == plan_id))
    return int(station_id) if station_id is not None else None


def latest_plan(
    engine: Engine, station_id: int, day: date, shift: str | None = None
) -> dict[str, Any] | None:
    """Return the newest stored plan of a station for ``day`` (and ``shift``), or ``None``."""
    query = select(PatrolPlan.id).where(
        PatrolPlan.station_id == station_id, PatrolPlan.day == day.isoformat()
    )
    if shift is not None:
        query = query.where(PatrolPlan.shift == shift)
    query = query.order_by(PatrolPlan.created_at.desc(), PatrolPlan.id.desc()).limit(1)
    with session_scope(engine) as session:
        plan_id = session.scalar(query)
    return load_plan(engine, int(plan_id)) if plan_id is not None else None
