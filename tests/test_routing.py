"""Patrol route planning: feasibility, greedy baseline, road networks, adherence."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString

from gridwatch.routing.adherence import adherence_from_pings
from gridwatch.routing.plans import Shift, plan_payload
from gridwatch.routing.solver import (
    Place,
    PlanningOptions,
    Problem,
    TeamShift,
    choose_dwell_seconds,
    solve,
)
from gridwatch.routing.travel import (
    RoadNetwork,
    RoadNetworkError,
    haversine_m,
    straight_line_matrix,
)

TZ = ZoneInfo("Asia/Shanghai")
SHIFT = Shift(
    date(2026, 11, 22),
    "20:00-02:00",
    datetime(2026, 11, 22, 20, 0, tzinfo=TZ),
    datetime(2026, 11, 23, 2, 0, tzinfo=TZ),
)
STATION = {"id": 1, "code": "PS1", "name": "测试派出所"}


def county_problem(n_teams: int = 6, n_places: int = 60, seed: int = 3, **options) -> Problem:
    """A demo-like station: clustered hot spots in 8 km, police cars, e-bikes and walkers."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 0.08, size=(5, 2))
    places = []
    for j in range(n_places):
        c = centres[j % 5]
        lon, lat = 113.0 + c[0] + rng.normal(0, 0.006), 28.0 + c[1] + rng.normal(0, 0.006)
        night = rng.uniform(0.5, 2.0)
        profile = np.array([night if (h >= 20 or h < 6) else 1.0 for h in range(24)])
        places.append(Place(f"G{j:03d}", lon, lat, tuple(rng.gamma(1.0) * profile)))
    kinds = [("car", 30.0), ("ebike", 15.0), ("foot", 4.5)]
    teams = []
    for t in range(n_teams):
        mode, speed = kinds[t % 3]
        c = centres[t % 5]
        teams.append(TeamShift(100 + t, f"T{t}", 113.0 + c[0], 28.0 + c[1], mode, speed))
    lon = np.array([p.lon for p in places] + [t.lon for t in teams])
    lat = np.array([p.lat for p in places] + [t.lat for t in teams])
    return Problem(
        teams, places, straight_line_matrix(lon, lat, 1.3), 20.0, 360, PlanningOptions(**options)
    )


def payload_of(problem: Problem) -> dict:
    plan, greedy = solve(problem)
    return plan_payload(problem, plan, greedy, SHIFT, STATION, "straight_line x 1.3")


def assert_feasible(payload: dict, problem: Problem) -> None:
    """Independent checks on the printed plan: shift, dwell, revisit gap, base, travel time."""
    opts = payload["options"]
    start = datetime.fromisoformat(payload["shift_start"])
    end = datetime.fromisoformat(payload["shift_end"])
    arrivals = defaultdict(list)
    for team in payload["teams"]:
        speed = team["speed_kmh"] / 3.6
        if not team["stops"]:
            continue
        leave = datetime.fromisoformat(team["leave_base"])
        back = datetime.fromisoformat(team["return_base"])
        assert start <= leave and back <= end, team["team_code"]
        here, clock = (team["base"]["lon"], team["base"]["lat"]), leave
        for stop in team["stops"]:
            arrive = datetime.fromisoformat(stop["arrive"])
            depart = datetime.fromisoformat(stop["depart"])
            dwell = (depart - arrive).total_seconds() / 60
            assert opts["dwell_minutes"][0] - 1e-9 <= dwell <= opts["dwell_minutes"][1] + 1e-9
            # at least the straight-line travel time since leaving the previous place
            metres = float(haversine_m(here[0], here[1], stop["lon"], stop["lat"]))
            assert (arrive - clock).total_seconds() >= metres / speed - 1.0
            arrivals[stop["grid_code"]].append(arrive)
            here, clock = (stop["lon"], stop["lat"]), depart
        metres = float(haversine_m(here[0], here[1], team["base"]["lon"], team["base"]["lat"]))
        assert (back - clock).total_seconds() >= metres / speed - 1.0
    for code, times in arrivals.items():
        times.sort()
        gaps = [(b - a).total_seconds() / 60 for a, b in zip(times, times[1:], strict=False)]
        assert all(g >= opts["revisit_minutes"] for g in gaps), (code, gaps)


def test_plan_is_feasible_and_beats_greedy():
    problem = county_problem()
    payload = payload_of(problem)
    assert_feasible(payload, problem)
    assert payload["solver"]["source"] == "vrp"
    assert payload["risk_covered"] > payload["greedy"]["risk_covered"]
    stops = sum(len(t["stops"]) for t in payload["teams"])
    assert stops > 10
    # the risk covered is the sum of the stops' risk x dwell
    total = sum(s["risk"] * s["dwell_min"] for t in payload["teams"] for s in t["stops"])
    assert total == pytest.approx(payload["risk_covered"], rel=1e-4)
    assert 0 < payload["utilisation"] <= 1


def test_dwell_follows_risk_within_the_koper_range():
    problem = county_problem()
    payload = payload_of(problem)
    low, high = payload["options"]["dwell_minutes"]
    assert (low, high) == (10, 16)
    stops = [s for t in payload["teams"] for s in t["stops"]]
    dwells = [s["dwell_min"] for s in stops]
    assert all(low <= d <= high for d in dwells)
    assert all(d == int(d) for d in dwells), "dwells are whole minutes"
    assert len(set(dwells)) >= 3, "dwells should use the range, not one fixed value"
    # riskier stops never get a shorter dwell
    ordered = sorted(stops, key=lambda s: s["risk"])
    for lower, higher in zip(ordered, ordered[1:], strict=False):
        if higher["risk"] > lower["risk"]:
            assert higher["dwell_min"] >= lower["dwell_min"]
    # the extremes of all stop windows get the ends of the range
    assert int(problem.dwell_s.min()) == low * 60 and int(problem.dwell_s.max()) == high * 60


def test_dwell_of_a_configured_range():
    problem = county_problem(
        n_teams=3, n_places=25, seed=6, dwell_min_minutes=12, dwell_max_minutes=14
    )
    payload = payload_of(problem)
    assert_feasible(payload, problem)
    dwells = {s["dwell_min"] for t in payload["teams"] for s in t["stops"]}
    assert dwells <= {12.0, 13.0, 14.0} and len(dwells) >= 2


def test_choose_dwell_seconds_ranks_ties_and_single_stop():
    risks = np.array([0.1, 5.0, 0.1, 1.0, 100.0])
    dwell = choose_dwell_seconds(risks, 600, 960)
    assert dwell.tolist() == [
        round(10 + 0.125 * 6) * 60,  # tied lowest: mean rank 0.5 of 4
        round(10 + 0.75 * 6) * 60,
        round(10 + 0.125 * 6) * 60,
        round(10 + 0.5 * 6) * 60,
        960,
    ]
    assert choose_dwell_seconds(np.array([2.0]), 600, 960).tolist() == [960]
    assert choose_dwell_seconds(np.array([]), 600, 960).size == 0


def test_revisits_happen_and_respect_the_gap():
    # two teams, three places: the only way to fill a shift is to come back
    problem = county_problem(n_teams=2, n_places=3, seed=5)
    payload = payload_of(problem)
    assert_feasible(payload, problem)
    codes = [s["grid_code"] for t in payload["teams"] for s in t["stops"]]
    assert len(codes) > len(set(codes)), "expected repeated visits of the same hot spot"


def test_plans_are_deterministic():
    first = payload_of(county_problem(seed=11))
    second = payload_of(county_problem(seed=11))
    for payload in (first, second):
        payload["solver"].pop("seconds")
        payload["greedy"].pop("seconds")
    assert first == second


def test_small_and_unreachable_problems_end_by_themselves():
    """Neither one stop nor stops no team can reach keep the search running to its clock."""
    team = TeamShift(1, "T", 113.0, 28.0, "foot", 4.5)
    near = Place("NEAR", 113.003, 28.0, tuple([1.0] * 24))
    far = Place("FAR", 113.5, 28.5, tuple([1.0] * 24))  # 70 km: beyond a 2-hour walk
    places = [near, far]
    lon = np.array([p.lon for p in places] + [team.lon])
    lat = np.array([p.lat for p in places] + [team.lat])
    options = PlanningOptions(time_limit_seconds=5)
    problem = Problem([team], places, straight_line_matrix(lon, lat, 1.3), 20.0, 120, options)
    assert {problem.places[s.place].grid_code for s in problem.stops} == {"NEAR"}
    plan, greedy = solve(problem)
    assert not plan.time_limit_hit and plan.seconds < 2
    assert len(plan.routes[0].visits) == problem.n_stops
    assert plan.risk_covered == pytest.approx(greedy.risk_covered)


def test_each_stop_window_is_visited_once():
    payload = payload_of(county_problem(n_teams=9, n_places=20, seed=2))
    visits = [(s["grid_code"], s["window"][0]) for t in payload["teams"] for s in t["stops"]]
    assert len(visits) == len(set(visits))


# --- road network -------------------------------------------------------------------------


def river_town() -> list[LineString]:
    """A 5 x 5 street grid (~1.1 km blocks); a river runs between rows 2 and 3, one bridge.

    North-south streets stop at the river banks except at x = 4 (the bridge).
    """
    step = 0.01
    lines = []
    for j in range(5):  # east-west streets
        y = 28.0 + j * step
        lines.append(LineString([(113.0 + i * step, y) for i in range(5)]))
    for i in range(5):  # north-south streets
        x = 113.0 + i * step
        south = [(x, 28.0 + j * step) for j in range(3)]
        north = [(x, 28.0 + j * step) for j in range(3, 5)]
        lines.append(LineString(south))
        lines.append(LineString(north))
        if i == 4:
            lines.append(LineString([(x, 28.02), (x, 28.03)]))  # the bridge
    return lines


def test_road_network_goes_round_by_the_bridge():
    roads = RoadNetwork(river_town())
    # (113.0, 28.02) on the south bank, (113.0, 28.03) straight across on the north bank
    lon = np.array([113.0, 113.0, 113.04])
    lat = np.array([28.02, 28.03, 28.02])
    distance = roads.distance_matrix(lon, lat)
    straight = float(haversine_m(113.0, 28.02, 113.0, 28.03))
    via_bridge = (
        float(haversine_m(113.0, 28.02, 113.04, 28.02))  # along the south bank
        + float(haversine_m(113.04, 28.02, 113.04, 28.03))  # over the bridge
        + float(haversine_m(113.04, 28.03, 113.0, 28.03))  # back along the north bank
    )
    assert distance[0, 1] == pytest.approx(via_bridge, rel=1e-6)
    assert distance[0, 1] > 5 * straight
    assert distance[0, 2] == pytest.approx(float(haversine_m(113.0, 28.02, 113.04, 28.02)))
    path = roads.path_coordinates(113.0, 28.02, 113.0, 28.03)
    assert (113.04, 28.02) in [(round(x, 6), round(y, 6)) for x, y in path]


def test_road_network_from_file_and_planning_on_it(tmp_path):
    import geopandas as gpd

    path = tmp_path / "roads.geojson"
    gpd.GeoDataFrame(geometry=river_town(), crs="EPSG:4326").to_file(path, driver="GeoJSON")
    roads = RoadNetwork.from_file(path)
    places = [
        Place("SOUTH", 113.001, 28.0205, tuple([1.0] * 24)),
        Place("NORTH", 113.001, 28.0295, tuple([1.0] * 24)),
    ]
    team = TeamShift(1, "T", 113.0, 28.0, "foot", 4.5)
    lon = np.array([p.lon for p in places] + [team.lon])
    lat = np.array([p.lat for p in places] + [team.lat])
    on_roads = roads.distance_matrix(lon, lat)
    problem = Problem([team], places, on_roads, 20.0, 120, PlanningOptions())
    plan, _ = solve(problem)
    straight = straight_line_matrix(lon, lat, 1.3)
    assert on_roads[0, 1] > 5 * straight[0, 1]
    assert plan.km * 1000 == pytest.approx(
        sum(r.metres for r in plan.routes)
    )  # distances come from the network
    # a 2-hour walk reaches the south bank but not the north bank and back via the bridge
    visited = {
        problem.places[problem.stops[v.stop].place].grid_code for v in plan.routes[0].visits
    }
    assert visited == {"SOUTH"}


# --- adherence ----------------------------------------------------------------------------


def synthetic_pings(payload: dict, follow_share: float) -> pd.DataFrame:
    """Pings every minute: at the first ``follow_share`` of each team's stops during their
    planned dwell, elsewhere (2 km away) the rest of the shift."""
    rows = []
    start = datetime.fromisoformat(payload["shift_start"])
    end = datetime.fromisoformat(payload["shift_end"])
    for team in payload["teams"]:
        n_followed = round(follow_share * len(team["stops"]))
        visits = [
            (
                datetime.fromisoformat(stop["arrive"]),
                datetime.fromisoformat(stop["depart"]),
                (stop["lon"], stop["lat"]),
            )
            for stop in team["stops"][:n_followed]
        ]
        away = (team["base"]["lon"] + 0.02, team["base"]["lat"] + 0.02)
        t = start
        while t <= end:
            lon, lat = next((where for a, d, where in visits if a <= t <= d), away)
            rows.append((team["team_id"], t.astimezone(UTC), lon, lat))
            t += timedelta(minutes=1)
    return pd.DataFrame(rows, columns=["team_id", "ts", "lon", "lat"])


def stops_covered_by_followed(payload: dict, share: float) -> int:
    """Count skipped stops that a followed stop's dwell visits anyway.

    A skipped stop within 150 m of a followed one counts as visited when the followed stay
    overlaps the skipped stop's matching window (planned arrival - 45 min to planned departure
    + 45 min) for at least the smaller of its dwell and 10 minutes.
    """
    covered = 0
    for team in payload["teams"]:
        n_followed = round(share * len(team["stops"]))
        done, skipped = team["stops"][:n_followed], team["stops"][n_followed:]
        for stop in skipped:
            lo = datetime.fromisoformat(stop["arrive"]) - timedelta(minutes=45)
            hi = datetime.fromisoformat(stop["depart"]) + timedelta(minutes=45)
            need = min(stop["dwell_min"], 10.0)
            for other in done:
                near = haversine_m(other["lon"], other["lat"], stop["lon"], stop["lat"]) <= 150
                start = max(lo, datetime.fromisoformat(other["arrive"]))
                end = min(hi, datetime.fromisoformat(other["depart"]))
                if near and (end - start).total_seconds() / 60 >= need:
                    covered += 1
                    break
    return covered


@pytest.mark.parametrize(("share", "expected"), [(1.0, 100.0), (0.5, 50.0), (0.0, 0.0)])
def test_adherence_follow_half_ignore(share, expected):
    payload = payload_of(county_problem(n_teams=4, n_places=30, seed=8))
    planned = sum(len(t["stops"]) for t in payload["teams"])
    assert planned >= 8
    result = adherence_from_pings(payload, synthetic_pings(payload, share), TZ)
    station = result["station"]
    followed = sum(round(share * len(t["stops"])) for t in payload["teams"])
    assert station["stops_visited"] == followed + stops_covered_by_followed(payload, share)
    assert station["visited_pct"] == pytest.approx(expected, abs=10)
    for planned_team, team in zip(payload["teams"], result["teams"], strict=True):
        earlier = [planned_team["base"]]
        for planned_stop, stop in zip(planned_team["stops"], team["stops"], strict=True):
            nearest = min(
                float(haversine_m(p["lon"], p["lat"], planned_stop["lon"], planned_stop["lat"]))
                for p in earlier
            )
            # a stop within reach of an earlier one may be "entered" while still there
            if stop["visited"] and nearest > 300:
                assert stop["late_min"] == pytest.approx(0.0, abs=1.0)
            earlier.append(planned_stop)
    if share == 0.0:
        # the whole shift spent 2 km off the route
        assert station["off_route_km"] == pytest.approx(0.0) or all(
            t["off_route_km"] == t["km_travelled"] for t in result["teams"]
        )
    assert station["teams_without_pings"] == []


def test_adherence_late_arrival_and_no_pings():
    payload = payload_of(county_problem(n_teams=2, n_places=20, seed=4))
    team = payload["teams"][0]
    stop = team["stops"][0]
    arrive = datetime.fromisoformat(stop["arrive"]) + timedelta(minutes=20)
    rows = [
        (
            team["team_id"],
            (arrive + timedelta(minutes=m)).astimezone(UTC),
            stop["lon"],
            stop["lat"],
        )
        for m in range(0, 17)
    ]
    result = adherence_from_pings(
        payload, pd.DataFrame(rows, columns=["team_id", "ts", "lon", "lat"]), TZ
    )
    first = result["teams"][0]["stops"][0]
    assert first["visited"] and first["late_min"] == pytest.approx(20.0, abs=0.5)
    # a stay of 5 minutes is not enough dwell
    short = adherence_from_pings(
        payload, pd.DataFrame(rows[:5], columns=["team_id", "ts", "lon", "lat"]), TZ
    )
    assert not short["teams"][0]["stops"][0]["visited"]
    assert result["teams"][1]["no_pings"]
    assert result["station"]["teams_without_pings"] == [payload["teams"][1]["team_code"]]


# --- OpenStreetMap extracts ---------------------------------------------------------------

OSM_TOWN = Path(__file__).parent / "data" / "osm" / "river_town.osm"


def test_osm_extract_gives_the_same_network_as_the_lines():
    """Only highway ways are roads: the canal and the proposed bridge are no shortcut."""
    from_osm = RoadNetwork.from_file(OSM_TOWN)
    from_lines = RoadNetwork(river_town())
    lon = np.array([113.0, 113.0, 113.04, 113.012, 113.031])
    lat = np.array([28.02, 28.03, 28.02, 28.007, 28.038])
    on_osm = from_osm.distance_matrix(lon, lat)
    np.testing.assert_allclose(on_osm, from_lines.distance_matrix(lon, lat), rtol=1e-9)
    straight = float(haversine_m(113.0, 28.02, 113.0, 28.03))
    assert on_osm[0, 1] > 5 * straight  # round by the bridge, not over the canal
    assert from_osm.nodes.shape[0] == 25  # the police node and the clipped footway add none


def test_osm_extract_compressed_and_planned_on(tmp_path):
    import gzip

    packed = tmp_path / "town.osm.gz"
    packed.write_bytes(gzip.compress(OSM_TOWN.read_bytes()))
    roads = RoadNetwork.from_file(packed)
    places = [
        Place("SOUTH", 113.001, 28.0205, tuple([1.0] * 24)),
        Place("NORTH", 113.001, 28.0295, tuple([1.0] * 24)),
    ]
    team = TeamShift(1, "T", 113.0, 28.0, "foot", 4.5)
    lon = np.array([p.lon for p in places] + [team.lon])
    lat = np.array([p.lat for p in places] + [team.lat])
    problem = Problem(
        [team], places, roads.distance_matrix(lon, lat), 20.0, 120, PlanningOptions()
    )
    plan, _ = solve(problem)
    visited = {
        problem.places[problem.stops[v.stop].place].grid_code for v in plan.routes[0].visits
    }
    assert visited == {"SOUTH"}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "broken.osm",
            '<osm version="0.6">\n  <node id="1" lat="28" lon=113/>\n</osm>\n',
            "broken OSM XML at line 2, column",
        ),
        ("other.osm", '<gpx version="1.1"></gpx>\n', "not an OpenStreetMap XML file"),
        (
            "empty.osm",
            '<osm version="0.6"><node id="1" lat="28" lon="113"/></osm>\n',
            "has no highway ways",
        ),
        (
            "bad.osm",
            '<osm version="0.6"><node id="1" lat="north" lon="113"/></osm>\n',
            "lacks a valid id, ref, lon or lat",
        ),
    ],
)
def test_bad_osm_files_give_one_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, "utf-8")
    with pytest.raises(RoadNetworkError) as caught:
        RoadNetwork.from_file(path)
    assert message in str(caught.value) and name in str(caught.value)
    assert "\n" not in str(caught.value)


def test_osm_pbf_extract_reads_like_the_xml(tmp_path):
    osmium = pytest.importorskip("osmium")
    pbf = tmp_path / "town.osm.pbf"
    writer = osmium.SimpleWriter(str(pbf))
    for obj in osmium.FileProcessor(str(OSM_TOWN)):
        if obj.is_node():
            writer.add_node(obj)
        elif obj.is_way():
            writer.add_way(obj)
    writer.close()
    assert pbf.read_bytes()[:64].find(b"OSMHeader") >= 0  # a real PBF file
    lon = np.array([113.0, 113.0, 113.04])
    lat = np.array([28.02, 28.03, 28.02])
    np.testing.assert_allclose(
        RoadNetwork.from_file(pbf).distance_matrix(lon, lat),
        RoadNetwork.from_file(OSM_TOWN).distance_matrix(lon, lat),
        rtol=1e-9,
    )


def test_pbf_without_osmium_says_how_to_convert(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "town.osm.pbf"
    path.write_bytes(b"\x00\x00\x00\x0dnot really pbf")
    monkeypatch.setitem(sys.modules, "osmium", None)  # as if the package were not installed
    with pytest.raises(RoadNetworkError, match=r"convert the extract to OSM XML"):
        RoadNetwork.from_file(path)


def test_road_paths_are_drawn_and_used_for_off_route():
    from gridwatch.routing.plans import add_road_paths

    roads = RoadNetwork.from_file(OSM_TOWN)
    places = [
        Place("SOUTH", 113.001, 28.0205, tuple([1.0] * 24)),
        Place("NORTH", 113.001, 28.0295, tuple([1.0] * 24)),
    ]
    team = TeamShift(7, "CAR", 113.0, 28.0, "car", 30.0)
    lon = np.array([p.lon for p in places] + [team.lon])
    lat = np.array([p.lat for p in places] + [team.lat])
    problem = Problem(
        [team], places, roads.distance_matrix(lon, lat), 20.0, 240, PlanningOptions()
    )
    plan, greedy = solve(problem)
    payload = plan_payload(problem, plan, greedy, SHIFT, STATION, "roads:river_town.osm")
    add_road_paths(roads, payload)
    route = payload["teams"][0]
    assert {s["grid_code"] for s in route["stops"]} == {"SOUTH", "NORTH"}
    path = [tuple(p) for p in route["path"]]
    assert path[0] == path[-1] == (113.0, 28.0)
    assert (113.04, 28.02) in path and (113.04, 28.03) in path  # over the bridge
    length = sum(
        float(haversine_m(a[0], a[1], b[0], b[1])) for a, b in zip(path, path[1:], strict=False)
    )
    # the drawn path is as long as the planned route, give or take the snapping at the ends
    assert length == pytest.approx(route["km"] * 1000, rel=0.02)

    # pings driving exactly along the road path are on the route, not off it
    start = datetime.fromisoformat(route["leave_base"])
    dense = []
    for a, b in zip(path, path[1:], strict=False):
        for k in range(10):
            dense.append((a[0] + (b[0] - a[0]) * k / 10, a[1] + (b[1] - a[1]) * k / 10))
    rows = [
        (team.team_id, (start + timedelta(seconds=20 * i)).astimezone(UTC), x, y)
        for i, (x, y) in enumerate(dense)
    ]
    pings = pd.DataFrame(rows, columns=["team_id", "ts", "lon", "lat"])
    on_roads = adherence_from_pings(payload, pings, TZ)["teams"][0]
    assert on_roads["km_travelled"] > 8
    assert on_roads["off_route_km"] == pytest.approx(0.0, abs=0.05)
    del route["path"]  # the same pings against straight legs: the detour is off route
    straight = adherence_from_pings(payload, pings, TZ)["teams"][0]
    assert straight["off_route_km"] > 3


# -- the prevention plan's patrol-focus grids as a risk term --------------------------------


def ring_of_grids(n: int = 8) -> pd.DataFrame:
    """``n`` grids on a 1.5 km ring round a base, every risk input equal."""
    angles = np.arange(n) * 2 * np.pi / n
    return pd.DataFrame(
        {
            "grid_code": [f"G{i}" for i in range(n)],
            "lon": 113.0 + 0.015 * np.cos(angles),
            "lat": 28.0 + 0.0135 * np.sin(angles),
            "forecast": 2.0,
            "recent": 5.0,
            "hotspot": True,
            "blind_spot": 1.0,
        }
    )


def ring_problem(scored: list, shift_minutes: int = 360) -> Problem:
    places = [Place(g.grid_code, g.lon, g.lat, g.risk_by_hour) for g in scored]
    places.sort(key=lambda p: p.grid_code)  # the solver sees the grids in one fixed order
    teams = [TeamShift(1, "T1", 113.0, 28.0, "ebike", 15.0)]
    lon = np.array([p.lon for p in places] + [113.0])
    lat = np.array([p.lat for p in places] + [28.0])
    return Problem(
        teams, places, straight_line_matrix(lon, lat, 1.3), 20.0, shift_minutes,
        PlanningOptions(),
    )  # fmt: skip


WEIGHTS = {"forecast": 0.4, "recent": 0.3, "hotspot": 0.2, "blind_spot": 0.1, "focus": 0.15}
NO_INCIDENTS = pd.DataFrame({"grid_code": [], "hour": []})


def test_focus_grid_with_otherwise_equal_risk_is_visited_first_with_more_dwell():
    from gridwatch.routing.risk import score_grids

    frame = ring_of_grids()
    plain = score_grids(frame, NO_INCIDENTS, WEIGHTS, 20.0, 360)
    assert len({round(g.shift_risk, 9) for g in plain}) == 1  # all equal without the plan
    focus = {"G5": (20, 21, 22)}
    scored = score_grids(frame, NO_INCIDENTS, WEIGHTS, 20.0, 360, focus)
    assert scored[0].grid_code == "G5"
    others = {g.grid_code: g for g in scored[1:]}
    assert scored[0].shift_risk > max(g.shift_risk for g in others.values())
    # stronger at its peak hours than at the shift's other hours
    assert scored[0].risk_by_hour[20] > scored[0].risk_by_hour[1]
    assert others["G1"].risk_by_hour[20] == others["G1"].risk_by_hour[1]
    # the focus term's mean over the day is its weight share: base = (1 + 0.15) / 1.15
    assert scored[0].base == pytest.approx(1.0)
    assert np.mean(scored[0].risk_by_hour) == pytest.approx(1.0, abs=1e-5)

    payload = payload_of(ring_problem(scored))
    stops = payload["teams"][0]["stops"]
    assert stops[0]["grid_code"] == "G5", [s["grid_code"] for s in stops]
    assert stops[0]["arrive"][11:13] in {"20", "21", "22"}
    focus_dwell = stops[0]["dwell_min"]
    other_dwells = [s["dwell_min"] for s in stops if s["grid_code"] != "G5"]
    assert other_dwells and focus_dwell > max(other_dwells)
    assert focus_dwell == 16


def test_focus_weight_zero_or_no_focus_grids_reproduce_the_old_plan_exactly():
    from gridwatch.routing.risk import score_grids

    rng = np.random.default_rng(5)
    frame = ring_of_grids(12).assign(
        forecast=rng.gamma(1.0, size=12),
        recent=rng.poisson(4, size=12),
        hotspot=rng.random(12) < 0.3,
        blind_spot=rng.poisson(2, size=12),
    )
    hours = pd.DataFrame(
        {"grid_code": [f"G{i % 12}" for i in range(90)], "hour": rng.integers(0, 24, size=90)}
    )
    old_weights = {k: v for k, v in WEIGHTS.items() if k != "focus"}
    old = score_grids(frame, hours, old_weights, 20.0, 360)
    focus = {"G3": (21, 22, 23), "G7": ()}
    zero = score_grids(frame, hours, {**WEIGHTS, "focus": 0.0}, 20.0, 360, focus)
    unused = score_grids(frame, hours, WEIGHTS, 20.0, 360, None)
    assert zero == old and unused == old  # identical floats, not approximately equal
    plans = [payload_of(ring_problem(scores)) for scores in (zero, old)]
    for plan in plans:  # wall-clock times differ between runs, nothing else may
        plan["solver"].pop("seconds")
        plan["greedy"].pop("seconds")
    assert plans[0] == plans[1] and plans[0]["teams"][0]["stops"]
    # and the weight does change the scores when it is not zero
    weighed = score_grids(frame, hours, WEIGHTS, 20.0, 360, focus)
    assert weighed != old
    ranks = [g.grid_code for g in weighed]
    assert ranks.index("G3") < [g.grid_code for g in old].index("G3")


def test_focus_weight_is_read_from_the_weights_setting():
    from gridwatch.config import ConfigError, load_settings

    assert load_settings({}).route_risk_weights["focus"] == 0.15
    settings = load_settings({"GRIDWATCH_ROUTE_RISK_WEIGHTS": "focus=0.5"})
    assert settings.route_risk_weights == {**WEIGHTS, "focus": 0.5}
    with pytest.raises(ConfigError, match="focus must be at least 0"):
        load_settings({"GRIDWATCH_ROUTE_RISK_WEIGHTS": "focus=-1"})
