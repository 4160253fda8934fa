"""Adherence: whether the teams went where and when their stored plan sent them.

Rules
-----
Presence at a stop
    A team is at a stop while its pings are within ``radius_m`` (default 150 m) of the stop's
    point. Pings become presence with the aggregation's own rule
    (:func:`gridwatch.workers.aggregate.patrol.presence_segments`: a ping covers the time to
    the next one if that comes within 10 minutes), the "grid" being "inside the radius".
Visited with enough dwell
    A planned stop counts as visited when one continuous stay within the radius, clipped to the
    stop's matching window (planned arrival − ``tolerance_min`` to planned departure +
    ``tolerance_min``, default 45 minutes, shorter than the revisit gap so two visits of one
    place never compete), lasts at least the smaller of the planned dwell and the minimum
    dwell (Koper: 10 minutes).
Late / early
    Minutes from the planned arrival to the start of that stay (positive: late), for visited
    stops.
Off-route
    Kilometres between consecutive pings during the shift (at most 10 minutes apart) whose
    midpoint lies more than ``corridor_m`` (default 300 m) from the planned route: its road
    path when the plan was made on a road network, else straight lines base → stops → base.
A team with no ping during the shift is reported as ``no_pings`` (inactive on that shift).

Over time
    :func:`adherence_over_time` compares every stored plan of a station in a date range and
    :func:`summarise_adherence` rolls the results up per team and per station by day, week
    or month: the same figures summed over the shifts, and the teams that sent no ping on
    any of their planned shifts (inactive, "in name only").
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Engine, select

from gridwatch.periods import PeriodKind, period_of
from gridwatch.routing.travel import haversine_m
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import PatrolPing
from gridwatch.workers.aggregate.patrol import DEFAULT_MAX_GAP, presence_segments

DEFAULT_RADIUS_M: Final = 150.0
DEFAULT_TOLERANCE_MIN: Final = 45.0
DEFAULT_CORRIDOR_M: Final = 300.0
#: Pings this long before the shift start and after its end are read too.
_MARGIN: Final = timedelta(minutes=60)
_METRES_PER_DEGREE: Final = 111_320.0


def _stay_runs(pings: pd.DataFrame, inside: np.ndarray, tz: ZoneInfo) -> pd.DataFrame:
    """Return continuous stays inside a radius: ``start``, ``end`` (UTC) of each visit piece."""
    frame = pd.DataFrame(
        {
            "team_id": np.zeros(len(pings), dtype=np.int64),
            "ts": pings["ts"].reset_index(drop=True),
            "grid_id": pd.array(np.where(inside, 1, 0), dtype="Int64"),
        }
    )
    frame.loc[~inside, "grid_id"] = pd.NA
    segments = presence_segments(frame, DEFAULT_MAX_GAP, tz=tz)
    segments["visit"] = np.cumsum(segments["visit_start"].to_numpy(dtype=bool))
    segments = segments[segments["grid_id"].notna()]
    return segments[["visit", "start", "end"]]


def _stop_result(
    stop: dict[str, Any],
    pings: pd.DataFrame,
    tz: ZoneInfo,
    dwell_floor: float,
    radius_m: float,
    tolerance_min: float,
) -> dict[str, Any]:
    planned_arrive = datetime.fromisoformat(stop["arrive"])
    planned_depart = datetime.fromisoformat(stop["depart"])
    required = min(float(stop["dwell_min"]), dwell_floor)
    out: dict[str, Any] = {
        "grid_code": stop["grid_code"],
        "planned_arrive": stop["arrive"],
        "actual_arrive": None,
        "late_min": None,
        "dwell_min": 0.0,
        "visited": False,
    }
    if pings.empty:
        return out
    distance = haversine_m(
        pings["lon"].to_numpy(), pings["lat"].to_numpy(), float(stop["lon"]), float(stop["lat"])
    )
    inside = np.asarray(distance <= radius_m)
    if not inside.any():
        return out
    stays = _stay_runs(pings, inside, tz)
    lo = pd.Timestamp(planned_arrive - timedelta(minutes=tolerance_min)).tz_convert("UTC")
    hi = pd.Timestamp(planned_depart + timedelta(minutes=tolerance_min)).tz_convert("UTC")
    start = stays["start"].clip(lower=lo)
    end = stays["end"].clip(upper=hi)
    minutes = ((end - start).dt.total_seconds() / 60).clip(lower=0)
    per_visit = pd.DataFrame({"visit": stays["visit"], "start": start, "minutes": minutes})
    per_visit = per_visit[per_visit["minutes"] > 0]
    if per_visit.empty:
        return out
    visits = per_visit.groupby("visit").agg(start=("start", "min"), minutes=("minutes", "sum"))
    best = visits.sort_values(["minutes", "start"], ascending=[False, True]).iloc[0]
    out["dwell_min"] = round(float(best["minutes"]), 2)
    enough = visits[visits["minutes"] >= required - 1e-6]
    if not enough.empty:
        first = enough.sort_values("start").iloc[0]
        arrived = pd.Timestamp(first["start"]).tz_convert(tz).to_pydatetime()
        out["visited"] = True
        out["dwell_min"] = round(float(first["minutes"]), 2)
        out["actual_arrive"] = arrived.isoformat(timespec="seconds")
        out["late_min"] = round((arrived - planned_arrive).total_seconds() / 60, 1)
    return out


def _off_route_km(
    team: dict[str, Any], pings: pd.DataFrame, corridor_m: float
) -> tuple[float, float]:
    """Return (off-route km, km travelled) of a team's pings against its planned route."""
    if len(pings) < 2:
        return 0.0, 0.0
    lon, lat = pings["lon"].to_numpy(), pings["lat"].to_numpy()
    ts = pings["ts"].to_numpy()
    joined = (ts[1:] - ts[:-1]) <= np.timedelta64(int(DEFAULT_MAX_GAP.total_seconds()), "s")
    legs = haversine_m(lon[:-1], lat[:-1], lon[1:], lat[1:]) * joined
    base = team["base"]
    if team.get("path"):  # planned on roads: the corridor follows them
        points = [(float(lon), float(lat)) for lon, lat in team["path"]]
    else:
        points = [(base["lon"], base["lat"])]
        points += [(s["lon"], s["lat"]) for s in team["stops"]]
        points.append((base["lon"], base["lat"]))
    lat0 = float(np.mean([p[1] for p in points]))
    scale = np.array([_METRES_PER_DEGREE * np.cos(np.radians(lat0)), _METRES_PER_DEGREE])
    route_xy = np.asarray(points) * scale
    route = shapely.LineString(route_xy) if len(team["stops"]) else shapely.Point(route_xy[0])
    middle = np.column_stack([(lon[:-1] + lon[1:]) / 2, (lat[:-1] + lat[1:]) / 2]) * scale
    away = shapely.distance(route, shapely.points(middle)) > corridor_m
    return float(legs[away].sum() / 1000), float(legs.sum() / 1000)


def adherence_from_pings(
    plan: dict[str, Any],
    pings: pd.DataFrame,
    tz: ZoneInfo,
    *,
    radius_m: float = DEFAULT_RADIUS_M,
    tolerance_min: float = DEFAULT_TOLERANCE_MIN,
    corridor_m: float = DEFAULT_CORRIDOR_M,
) -> dict[str, Any]:
    """Compare a plan payload with pings; return per-team and per-station adherence.

    Parameters
    ----------
    plan : dict
        A plan payload (:func:`gridwatch.routing.plans.plan_payload`).
    pings : pandas.DataFrame
        ``team_id``, ``ts`` (aware), ``lon``, ``lat`` of the plan's teams around the shift.
    tz : zoneinfo.ZoneInfo
        Local time zone of the output times.
    radius_m, tolerance_min, corridor_m : float
        See the module docstring.
    """
    dwell_floor = float(plan["options"]["dwell_minutes"][0])
    shift_start = pd.Timestamp(datetime.fromisoformat(plan["shift_start"])).tz_convert("UTC")
    shift_end = pd.Timestamp(datetime.fromisoformat(plan["shift_end"])).tz_convert("UTC")
    if not pings.empty:
        pings = pings.assign(ts=pd.to_datetime(pings["ts"], utc=True)).sort_values(
            ["team_id", "ts"], kind="stable"
        )
    teams_out = []
    for team in plan["teams"]:
        own = (
            pings[pings["team_id"] == team["team_id"]].reset_index(drop=True)
            if not pings.empty
            else pd.DataFrame(columns=["team_id", "ts", "lon", "lat"])
        )
        on_shift = (
            own[(own["ts"] >= shift_start) & (own["ts"] <= shift_end)] if not own.empty else own
        )
        stops = [
            _stop_result(s, own, tz, dwell_floor, radius_m, tolerance_min) for s in team["stops"]
        ]
        off_km, km = _off_route_km(team, on_shift.reset_index(drop=True), corridor_m)
        visited = [s for s in stops if s["visited"]]
        late = [s["late_min"] for s in visited]
        teams_out.append(
            {
                "team_id": team["team_id"],
                "team_code": team.get("team_code"),
                "stops_planned": len(stops),
                "stops_visited": len(visited),
                "visited_pct": round(100.0 * len(visited) / len(stops), 1) if stops else None,
                "mean_late_min": round(float(np.mean(late)), 1) if late else None,
                "mean_abs_late_min": round(float(np.mean(np.abs(late))), 1) if late else None,
                "off_route_km": round(off_km, 3),
                "km_travelled": round(km, 3),
                "pings": int(len(on_shift)),
                "no_pings": bool(on_shift.empty),
                "stops": stops,
            }
        )
    planned = sum(t["stops_planned"] for t in teams_out)
    visited_total = sum(t["stops_visited"] for t in teams_out)
    all_late = [s["late_min"] for t in teams_out for s in t["stops"] if s["visited"]]
    return {
        "plan_id": plan.get("plan_id"),
        "station_code": plan["station_code"],
        "day": plan["day"],
        "shift": plan["shift"],
        "station": {
            "stops_planned": planned,
            "stops_visited": visited_total,
            "visited_pct": round(100.0 * visited_total / planned, 1) if planned else None,
            "mean_late_min": round(float(np.mean(all_late)), 1) if all_late else None,
            "off_route_km": round(sum(t["off_route_km"] for t in teams_out), 3),
            "teams_without_pings": [t["team_code"] for t in teams_out if t["no_pings"]],
        },
        "teams": teams_out,
        "rules": {
            "radius_m": radius_m,
            "tolerance_min": tolerance_min,
            "corridor_m": corridor_m,
            "dwell_floor_min": dwell_floor,
        },
    }


def plan_adherence(
    engine: Engine, plan: dict[str, Any], tz: ZoneInfo, **rules: float
) -> dict[str, Any]:
    """Read the plan's teams' pings around its shift from storage and compute adherence."""
    start = datetime.fromisoformat(plan["shift_start"]) - _MARGIN
    end = datetime.fromisoformat(plan["shift_end"]) + _MARGIN
    team_ids = [int(t["team_id"]) for t in plan["teams"]]
    with session_scope(engine) as session:
        rows = session.execute(
            select(PatrolPing.team_id, PatrolPing.ts, PatrolPing.lon, PatrolPing.lat)
            .where(PatrolPing.team_id.in_(team_ids), PatrolPing.ts >= start, PatrolPing.ts <= end)
            .order_by(PatrolPing.team_id, PatrolPing.ts)
        ).all()
    pings = pd.DataFrame(rows, columns=["team_id", "ts", "lon", "lat"])
    return adherence_from_pings(plan, pings, tz, **rules)


# --- over time: per team and per station --------------------------------------------------


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum per-shift adherence rows (``_shift_row``) into one figure set."""
    planned = sum(r["stops_planned"] for r in rows)
    visited = sum(r["stops_visited"] for r in rows)
    late = [m for r in rows for m in r["late_minutes"]]
    return {
        "shifts": len(rows),
        "stops_planned": planned,
        "stops_visited": visited,
        "visited_pct": round(100.0 * visited / planned, 1) if planned else None,
        "mean_late_min": round(float(np.mean(late)), 1) if late else None,
        "mean_abs_late_min": round(float(np.mean(np.abs(late))), 1) if late else None,
        "off_route_km": round(sum(r["off_route_km"] for r in rows), 3),
        "shifts_without_pings": sum(1 for r in rows if r["no_pings"]),
    }


def _shift_row(team: dict[str, Any]) -> dict[str, Any]:
    return {
        "stops_planned": team["stops_planned"],
        "stops_visited": team["stops_visited"],
        "late_minutes": [s["late_min"] for s in team["stops"] if s["visited"]],
        "off_route_km": team["off_route_km"],
        "no_pings": team["no_pings"],
    }


def summarise_adherence(
    results: list[dict[str, Any]], period_kind: PeriodKind = "week"
) -> dict[str, Any]:
    """Roll adherence results of many plans up per team and per station, by period.

    Parameters
    ----------
    results : list of dict
        Answers of :func:`adherence_from_pings` (one per stored plan).
    period_kind : str
        ``day``, ``week``, ``month``, ``quarter`` or ``year``: the periods (of the plans'
        days) the figures are cut into.

    Returns
    -------
    dict
        ``period_kind``, ``stations`` and ``teams``. Each station (by code) and team (by
        code) has ``periods`` — one row per period with any plan, oldest first: ``period``,
        ``shifts``, ``stops_planned``, ``stops_visited``, ``visited_pct``, ``mean_late_min``,
        ``mean_abs_late_min``, ``off_route_km`` and ``shifts_without_pings`` — and ``total``
        over all of them. A team has ``inactive`` true when it sent no ping on any of its
        planned shifts (a team "in name only"); a station lists those teams under
        ``inactive_teams``.
    """
    team_rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    station_rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    team_station: dict[str, str] = {}
    for result in results:
        label = period_of(date.fromisoformat(result["day"]), period_kind).label
        station = str(result["station_code"])
        for team in result["teams"]:
            code = str(team.get("team_code") or team["team_id"])
            row = _shift_row(team)
            team_station[code] = station
            team_rows.setdefault(code, {}).setdefault(label, []).append(row)
            station_rows.setdefault(station, {}).setdefault(label, []).append(row)

    def periods(by_label: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [{"period": label, **_totals(by_label[label])} for label in sorted(by_label)]

    teams_out = []
    for code in sorted(team_rows):
        every = [r for rows in team_rows[code].values() for r in rows]
        teams_out.append(
            {
                "team_code": code,
                "station_code": team_station[code],
                "inactive": all(r["no_pings"] for r in every),
                "periods": periods(team_rows[code]),
                "total": _totals(every),
            }
        )
    stations_out = []
    for station in sorted(station_rows):
        every = [r for rows in station_rows[station].values() for r in rows]
        stations_out.append(
            {
                "station_code": station,
                "plans": sum(1 for r in results if str(r["station_code"]) == station),
                "inactive_teams": [
                    t["team_code"]
                    for t in teams_out
                    if t["station_code"] == station and t["inactive"]
                ],
                "periods": periods(station_rows[station]),
                "total": _totals(every),
            }
        )
    return {"period_kind": period_kind, "stations": stations_out, "teams": teams_out}


def adherence_over_time(
    engine: Engine,
    tz: ZoneInfo,
    station_ids: list[int],
    date_from: date,
    date_to: date,
    period_kind: PeriodKind = "week",
    **rules: float,
) -> dict[str, Any]:
    """Compare every stored plan of ``station_ids`` from ``date_from`` to ``date_to``.

    When a station has several plans for the same day and shift, only the newest counts (a
    re-plan replaces the earlier one). Returns :func:`summarise_adherence`'s answer plus
    ``from``, ``to`` and ``plan_ids``.
    """
    from gridwatch.routing.plans import load_plan
    from gridwatch.storage.models import PatrolPlan

    with session_scope(engine) as session:
        rows = session.execute(
            select(PatrolPlan.id, PatrolPlan.station_id, PatrolPlan.day, PatrolPlan.shift)
            .where(
                PatrolPlan.station_id.in_(station_ids),
                PatrolPlan.day >= date_from.isoformat(),
                PatrolPlan.day <= date_to.isoformat(),
            )
            .order_by(PatrolPlan.created_at, PatrolPlan.id)
        ).all()
    newest: dict[tuple[int, str, str], int] = {}
    for plan_id, station_id, day, shift in rows:
        newest[(station_id, day, shift)] = plan_id  # later rows replace earlier ones
    plan_ids = sorted(newest.values())
    results = [plan_adherence(engine, load_plan(engine, pid), tz, **rules) for pid in plan_ids]
    summary = summarise_adherence(results, period_kind)
    return {
        "from": date_from.isoformat(),
        "to": date_to.isoformat(),
        "plan_ids": plan_ids,
        **summary,
    }
