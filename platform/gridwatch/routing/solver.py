"""Plan the routes of all teams of a shift at once: a prize-collecting VRP with time windows.

Model
-----
Stops
    Every candidate place (a hot-spot grid's representative point) becomes one or more *stop
    copies*, one per possible visit. Copy ``k`` of a place may be arrived at within
    ``[offset + k * period, offset + k * period + window]`` seconds after the shift starts,
    where ``period = window + revisit``: whatever the arrival times inside two windows, two
    visits to one place are at least ``revisit`` apart (arrival to arrival), whichever teams
    make them. Each place's ``offset`` is its index times the golden ratio, modulo ``period``,
    so windows are spread over the shift instead of all opening at once. Each copy is visited
    by at most one team, so teams never crowd the same visit.
Prize
    A copy's prize is the place's risk per minute of presence at the local hour of the middle
    of its window (see :mod:`gridwatch.routing.risk`) times the dwell. Skipping a copy
    costs its prize (an OR-Tools disjunction penalty); travel costs its seconds, a tie-breaker
    worth 1/1,000,000 of a risk-minute per second.
Time
    Each stop copy has its own dwell inside the Koper range (10–16 minutes), chosen by its
    risk: the copy's percentile rank among all copies of the problem maps linearly onto the
    range, rounded to whole minutes, so the riskiest places get the full 16 minutes and the
    least risky the 10 that still deter (:func:`choose_dwell_seconds`). Ranks rather than raw
    risk values spread the dwells over the whole range although risk is heavily skewed. The
    dwell is fixed before solving, so the solver's objective stays equal to the risk covered it
    reports (the sum of ``risk × dwell minutes``), and warm-starting from the greedy plan
    guarantees the VRP is never worse. The bottom of the range is what adherence accepts as
    "enough dwell". Routes start and end at the team's base, leave no earlier than the shift
    start and are back by its end.
Determinism
    OR-Tools' routing search is single-threaded and deterministic for a given input and
    parameters; only a wall-clock limit makes the result depend on the machine. The search
    therefore starts from the greedy baseline's routes and runs guided local search for a
    fixed number of solutions (``solution_limit``); the time limit is only a safety net, and a
    plan reports whether it was hit (then, and only then, results may differ between runs).
    When the greedy routes already take every stop copy, plain greedy descent replaces guided
    local search (only travel can improve, and it stops by itself). Copies that no team can
    reach in their window and return from in time are dropped before solving.
Baseline
    The greedy nearest-high-risk plan: the team that is free earliest takes the open copy with
    the most prize per minute spent getting there and dwelling, until nothing fits. The VRP
    starts from it, so it can only do better on its own objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from time import perf_counter
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Disjunction penalty units per risk-minute (travel costs 1 per second).
PRIZE_SCALE: Final = 1_000_000
_GOLDEN: Final = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class TeamShift:
    """One team on shift: where it starts and ends, and how fast it moves.

    Attributes
    ----------
    team_id : int
        Storage id of the team (or any key in tests and benches).
    code : str
        The team's code, for output.
    lon, lat : float
        The base (station or home-area centre), WGS84.
    mode : str
        ``foot``, ``ebike`` or ``car``.
    speed_kmh : float
        Travel speed of the mode.
    """

    team_id: int
    code: str
    lon: float
    lat: float
    mode: str
    speed_kmh: float


@dataclass(frozen=True)
class Place:
    """A candidate stop: a hot-spot grid's representative point and its risk by local hour.

    Attributes
    ----------
    grid_code : str
        Code of the grid.
    lon, lat : float
        Representative point (inside the grid), WGS84.
    risk_by_hour : tuple of float
        24 values: risk per minute of presence at each local hour 0–23.
    """

    grid_code: str
    lon: float
    lat: float
    risk_by_hour: tuple[float, ...]


@dataclass(frozen=True)
class StopCopy:
    """One possible visit of a place, with its arrival window (seconds after shift start)."""

    place: int
    copy: int
    open_s: int
    close_s: int
    risk: float


@dataclass(frozen=True)
class PlanningOptions:
    """Parameters of one planning run.

    Attributes
    ----------
    dwell_min_minutes, dwell_max_minutes : int
        Dwell range at a stop (Koper curve: 10–16 minutes).
    revisit_minutes : int
        Least time between two arrivals at the same place.
    window_minutes : int
        Width of each stop copy's arrival window.
    solution_limit : int
        Solutions the guided local search may find before it stops (the deterministic limit).
    time_limit_seconds : float
        Safety net on the search's wall-clock time.
    """

    dwell_min_minutes: int = 10
    dwell_max_minutes: int = 16
    revisit_minutes: int = 120
    window_minutes: int = 60
    solution_limit: int = 100
    time_limit_seconds: float = 30.0


@dataclass
class Visit:
    """A scheduled stop of a route (seconds after shift start)."""

    stop: int
    arrive_s: int
    depart_s: int


@dataclass
class Route:
    """One team's route: its visits in order, distance and timing."""

    team: int
    visits: list[Visit]
    metres: float
    leave_base_s: int
    return_base_s: int
    busy_s: int

    @property
    def duration_s(self) -> int:
        """Seconds from leaving the base to returning to it (0 for a team that stays)."""
        return self.return_base_s - self.leave_base_s if self.visits else 0


@dataclass
class Solution:
    """Routes of every team with the plan's figures."""

    routes: list[Route]
    risk_covered: float
    km: float
    utilisation: float
    source: str
    seconds: float = 0.0
    objective: int | None = None
    time_limit_hit: bool = False
    extra: dict[str, float] = field(default_factory=dict)


class Problem:
    """A planning problem: teams, places, their stop copies and the travel times.

    Parameters
    ----------
    teams : list of TeamShift
        Teams on shift.
    places : list of Place
        Candidate stops.
    distances : numpy.ndarray
        ``(len(places) + len(teams))²`` travel distances in metres: places first, then the
        teams' bases in order.
    shift_start_hour : float
        Local hour at which the shift starts (20.0 for 20:00), for the risk of each window.
    shift_minutes : int
        Length of the shift.
    options : PlanningOptions
        Dwell, revisit and search parameters.
    """

    def __init__(
        self,
        teams: list[TeamShift],
        places: list[Place],
        distances: FloatArray,
        shift_start_hour: float,
        shift_minutes: int,
        options: PlanningOptions,
    ) -> None:
        n_loc = len(places) + len(teams)
        if distances.shape != (n_loc, n_loc):
            raise ValueError(f"distances must be {n_loc} x {n_loc}, got {distances.shape}")
        if not 0 < options.dwell_min_minutes <= options.dwell_max_minutes:
            raise ValueError("dwell range must satisfy 0 < minimum <= maximum")
        self.teams = teams
        self.places = places
        self.distances = distances
        self.options = options
        self.shift_s = int(shift_minutes * 60)
        self.dwell_min_s = int(options.dwell_min_minutes * 60)
        self.dwell_max_s = int(options.dwell_max_minutes * 60)
        self.stops = reachable_copies(
            make_stop_copies(places, shift_start_hour, self.shift_s, options),
            teams,
            len(places),
            distances,
            self.shift_s,
            self.dwell_min_s,
        )
        n_stops = len(self.stops)
        # Node layout: stop copies 0..S-1, then one base node per team.
        self.location = np.concatenate(
            [
                np.array([s.place for s in self.stops], dtype=np.int64),
                len(places) + np.arange(len(teams), dtype=np.int64),
            ]
        )
        self.open_s = np.array([s.open_s for s in self.stops], dtype=np.int64)
        self.close_s = np.array([s.close_s for s in self.stops], dtype=np.int64)
        risks = np.array([s.risk for s in self.stops], dtype=np.float64)
        #: Dwell seconds planned at each stop copy (by risk, within the Koper range).
        self.dwell_s = choose_dwell_seconds(risks, self.dwell_min_s, self.dwell_max_s)
        self.prize = risks * self.dwell_s / 60
        node_metres = distances[np.ix_(self.location, self.location)]
        self.node_metres = node_metres
        big = 10 * max(self.shift_s, 1)
        self._travel: dict[float, IntArray] = {}
        for speed in sorted({t.speed_kmh for t in teams}):
            seconds = node_metres / (speed / 3.6)
            self._travel[speed] = np.minimum(np.rint(seconds), big).astype(np.int64)
        self.n_stops = n_stops

    def travel_s(self, team: int) -> IntArray:
        """Return the node × node travel seconds (no service time) for ``team``'s mode."""
        return self._travel[self.teams[team].speed_kmh]

    def base_node(self, team: int) -> int:
        """Return the node of ``team``'s base."""
        return self.n_stops + team


def choose_dwell_seconds(risks: FloatArray, low_s: int, high_s: int) -> IntArray:
    """Return each stop's dwell: its risk's percentile rank mapped onto ``[low_s, high_s]``.

    Parameters
    ----------
    risks : numpy.ndarray
        Risk per minute of each stop copy.
    low_s, high_s : int
        Dwell range in seconds (Koper: 600–960).

    Returns
    -------
    numpy.ndarray
        Whole minutes in seconds, ``low_s`` for the least risky copy and ``high_s`` for the
        riskiest; equal risks get equal dwells, a single copy gets ``high_s``.
    """
    risks = np.asarray(risks, dtype=np.float64)
    if risks.size == 0:
        return np.zeros(0, dtype=np.int64)
    ordered = np.sort(risks)
    below = np.searchsorted(ordered, risks, side="left")
    at_or_below = np.searchsorted(ordered, risks, side="right")
    rank = (below + at_or_below - 1) / 2  # mean rank of ties, 0 … n-1
    share = rank / (risks.size - 1) if risks.size > 1 else np.ones_like(risks)
    low_min, high_min = low_s / 60, high_s / 60
    minutes = np.rint(low_min + share * (high_min - low_min))
    seconds = np.clip(minutes * 60, low_s, high_s)
    return np.asarray(seconds, dtype=np.int64)


def reachable_copies(
    copies: list[StopCopy],
    teams: list[TeamShift],
    n_places: int,
    distances: FloatArray,
    shift_s: int,
    dwell_s: int,
) -> list[StopCopy]:
    """Return the copies some team can visit alone: out from its base, dwell, back in time.

    A copy no team reaches within its window, or from which no team gets home before the
    shift ends (a place the road network does not connect, say), can never be part of a
    plan; left in, it only gives the local search moves that all fail, and with nothing
    feasible to try the search would run until its time limit instead of its solution limit.
    """
    if not copies or not teams:
        return copies
    place = np.array([c.place for c in copies], dtype=np.int64)
    open_s = np.array([c.open_s for c in copies], dtype=np.float64)
    close_s = np.array([c.close_s for c in copies], dtype=np.float64)
    reachable = np.zeros(len(copies), dtype=bool)
    for index, team in enumerate(teams):
        speed = team.speed_kmh / 3.6
        base = n_places + index
        arrive = np.maximum(distances[base, place] / speed, open_s)
        home = arrive + dwell_s + distances[place, base] / speed
        reachable |= (arrive <= close_s) & (home <= shift_s)
    return [copy for copy, keep in zip(copies, reachable, strict=True) if keep]


def make_stop_copies(
    places: list[Place], shift_start_hour: float, shift_s: int, options: PlanningOptions
) -> list[StopCopy]:
    """Return every place's stop copies with staggered, revisit-spaced arrival windows.

    Parameters
    ----------
    places : list of Place
        Candidate stops; places without risk get no copy.
    shift_start_hour : float
        Local hour of the shift start.
    shift_s : int
        Shift length in seconds.
    options : PlanningOptions
        Window, revisit and dwell minutes.

    Returns
    -------
    list of StopCopy
        Ordered by place, then copy.
    """
    window = options.window_minutes * 60
    period = window + options.revisit_minutes * 60
    latest_open = shift_s - options.dwell_max_minutes * 60
    copies: list[StopCopy] = []
    for index, place in enumerate(places):
        offset = int(round(((index * _GOLDEN) % 1.0) * period)) if len(places) > 1 else 0
        # The window before the offset is kept, clipped to the shift start: the shift's first
        # hour is not lost to the stagger, and the gaps between windows stay ``revisit``.
        starts = [offset + k * period for k in range(-1, shift_s // period + 2)]
        for k, start in enumerate(s for s in starts if s + window > 0 and s <= latest_open):
            open_s = max(start, 0)
            close_s = min(start + window, latest_open)
            middle_hour = shift_start_hour + (open_s + close_s) / 2 / 3600
            risk = float(place.risk_by_hour[int(middle_hour) % 24])
            if risk > 0:
                copies.append(StopCopy(index, k, open_s, close_s, risk))
    return copies


# --- schedules and figures ---------------------------------------------------------------------


def schedule_route(problem: Problem, team: int, stops: list[int]) -> Route:
    """Time a route: arrive as early as allowed and dwell each stop's planned dwell.

    Raises
    ------
    ValueError
        When the stop sequence does not fit the windows or the shift.
    """
    travel = problem.travel_s(team)
    base = problem.base_node(team)
    dwell_s = problem.dwell_s
    n = len(stops)
    if n == 0:
        return Route(team, [], 0.0, 0, 0, 0)
    latest_depart = [0] * n
    latest_arrive = [0] * n
    following, deadline = base, problem.shift_s
    for k in range(n - 1, -1, -1):
        stop = stops[k]
        latest_depart[k] = deadline - int(travel[stop, following])
        latest_arrive[k] = min(int(problem.close_s[stop]), latest_depart[k] - int(dwell_s[stop]))
        following, deadline = stop, latest_arrive[k]
    visits = []
    clock, here, metres, busy = 0, base, 0.0, 0
    for k, stop in enumerate(stops):
        reach = clock + int(travel[here, stop])
        arrive = max(reach, int(problem.open_s[stop]))
        if arrive > latest_arrive[k]:
            raise ValueError(f"route of team {team} misses stop {stop}'s window or the shift")
        dwell = int(dwell_s[stop])
        visits.append(Visit(stop, arrive, arrive + dwell))
        metres += float(problem.node_metres[here, stop])
        busy += int(travel[here, stop]) + dwell
        clock, here = arrive + dwell, stop
    back = clock + int(travel[here, base])
    metres += float(problem.node_metres[here, base])
    busy += int(travel[here, base])
    leave = visits[0].arrive_s - int(travel[base, stops[0]])
    return Route(team, visits, metres, max(leave, 0), back, busy)


def evaluate(problem: Problem, routes: list[list[int]], source: str) -> Solution:
    """Schedule every team's stop sequence and compute the plan's figures."""
    scheduled = [schedule_route(problem, t, stops) for t, stops in enumerate(routes)]
    risk = sum(
        problem.stops[v.stop].risk * (v.depart_s - v.arrive_s) / 60
        for route in scheduled
        for v in route.visits
    )
    km = sum(route.metres for route in scheduled) / 1000
    shift = max(problem.shift_s, 1)
    utilisation = (
        float(np.mean([route.busy_s / shift for route in scheduled])) if scheduled else 0.0
    )
    return Solution(scheduled, float(risk), float(km), utilisation, source)


# --- greedy baseline ------------------------------------------------------------------------


def greedy_routes(problem: Problem) -> list[list[int]]:
    """Return the greedy nearest-high-risk stop sequence of every team.

    The team that is free earliest (ties: lowest index) takes, among the copies it can still
    reach in their window and return from before the shift ends, the one with the most prize
    per minute of travel, waiting and dwell; a team with nothing left goes home.
    """
    n_teams = len(problem.teams)
    routes: list[list[int]] = [[] for _ in range(n_teams)]
    if problem.n_stops == 0:
        return routes
    taken = np.zeros(problem.n_stops, dtype=bool)
    clock = np.zeros(n_teams, dtype=np.int64)
    here = np.array([problem.base_node(t) for t in range(n_teams)], dtype=np.int64)
    active = np.ones(n_teams, dtype=bool)
    dwell = problem.dwell_s
    stops = np.arange(problem.n_stops)
    while active.any():
        team = int(np.flatnonzero(active)[np.argmin(clock[active])])
        travel = problem.travel_s(team)
        arrive = np.maximum(clock[team] + travel[here[team], stops], problem.open_s)
        home = arrive + dwell + travel[stops, problem.base_node(team)]
        fits = ~taken & (arrive <= problem.close_s) & (home <= problem.shift_s)
        if not fits.any():
            active[team] = False
            continue
        spent = (arrive - clock[team] + dwell).astype(np.float64)
        score = np.where(fits, problem.prize / spent, -np.inf)
        stop = int(np.argmax(score))
        taken[stop] = True
        routes[team].append(stop)
        clock[team] = arrive[stop] + dwell[stop]
        here[team] = stop
    return routes


# --- OR-Tools -------------------------------------------------------------------------------


def solve(problem: Problem) -> tuple[Solution, Solution]:
    """Plan every team with OR-Tools, and the greedy baseline in the same run.

    Returns
    -------
    tuple of Solution
        The plan and the greedy baseline. The plan is the VRP's solution (``source`` ``vrp``)
        unless, after dwell stretching, the baseline covers more risk; then the baseline's
        routes are the plan (``source`` ``greedy``), so a plan never covers less than it.
    """
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

    started = perf_counter()
    initial = greedy_routes(problem)
    greedy = evaluate(problem, initial, "greedy")
    greedy.seconds = perf_counter() - started
    n_teams = len(problem.teams)
    if problem.n_stops == 0 or n_teams == 0:
        plan = evaluate(problem, [[] for _ in range(n_teams)], "vrp")
        return plan, greedy

    started = perf_counter()
    n_nodes = problem.n_stops + n_teams
    bases = [problem.base_node(t) for t in range(n_teams)]
    manager = pywrapcp.RoutingIndexManager(n_nodes, n_teams, bases, bases)
    routing = pywrapcp.RoutingModel(manager)
    service = np.zeros(n_nodes, dtype=np.int64)
    service[: problem.n_stops] = problem.dwell_s
    time_callbacks: dict[float, int] = {}
    cost_callbacks: dict[float, int] = {}
    for speed, travel in problem._travel.items():
        time_callbacks[speed] = routing.RegisterTransitMatrix((travel + service[:, None]).tolist())
        cost_callbacks[speed] = routing.RegisterTransitMatrix(travel.tolist())
    per_team_time = [time_callbacks[t.speed_kmh] for t in problem.teams]
    for v, team in enumerate(problem.teams):
        routing.SetArcCostEvaluatorOfVehicle(cost_callbacks[team.speed_kmh], v)
    routing.AddDimensionWithVehicleTransits(
        per_team_time, problem.shift_s, problem.shift_s, True, "time"
    )
    time = routing.GetDimensionOrDie("time")
    for stop in range(problem.n_stops):
        index = manager.NodeToIndex(stop)
        time.CumulVar(index).SetRange(int(problem.open_s[stop]), int(problem.close_s[stop]))
        penalty = max(1, int(round(problem.prize[stop] * PRIZE_SCALE)))
        routing.AddDisjunction([index], penalty)

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PATH_CHEAPEST_ARC
    # When the greedy plan already visits every stop copy no prize is left to collect and only
    # travel can improve: greedy descent stops at its local optimum, whereas guided local
    # search over so few moves finds too few solutions for the limit and runs until the clock.
    everything_taken = sum(len(r) for r in initial) == problem.n_stops
    params.local_search_metaheuristic = (
        routing_enums_pb2.LocalSearchMetaheuristic.GREEDY_DESCENT
        if everything_taken
        else routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    )
    params.solution_limit = problem.options.solution_limit
    params.time_limit.FromMilliseconds(int(problem.options.time_limit_seconds * 1000))
    routing.CloseModelWithParameters(params)
    start = routing.ReadAssignmentFromRoutes(initial, True)
    assignment = (
        routing.SolveFromAssignmentWithParameters(start, params)
        if start is not None
        else routing.SolveWithParameters(params)
    )
    if assignment is None:
        assignment = start
    routes: list[list[int]] = []
    for v in range(n_teams):
        index = routing.Start(v)
        sequence = []
        index = assignment.Value(routing.NextVar(index)) if assignment is not None else None
        while index is not None and not routing.IsEnd(index):
            sequence.append(manager.IndexToNode(index))
            index = assignment.Value(routing.NextVar(index))
        routes.append(sequence)
    elapsed = perf_counter() - started
    plan = evaluate(problem, routes, "vrp")
    plan.seconds = elapsed
    plan.objective = int(assignment.ObjectiveValue()) if assignment is not None else None
    # ROUTING_FAIL_TIMEOUT (4) or a success found while the limit expired
    status = routing.status()
    plan.time_limit_hit = status == 4 or elapsed >= problem.options.time_limit_seconds
    if greedy.risk_covered > plan.risk_covered + 1e-9:
        fallback = evaluate(problem, initial, "greedy")
        fallback.seconds, fallback.objective = elapsed, plan.objective
        fallback.time_limit_hit = plan.time_limit_hit
        fallback.extra["vrp_risk_covered"] = plan.risk_covered
        fallback.extra["vrp_prize"] = float(sum(problem.prize[s] for r in routes for s in r))
        return fallback, greedy
    return plan, greedy
