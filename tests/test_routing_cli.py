"""Patrol routes on the demo county, through the command line (click's runner) and storage.

The demo county is built once per module with the real importers and aggregated, then
``gridwatch routes plan`` plans real stations' shifts from the published run, and
``gridwatch routes adherence`` compares stored plans with pings imported afterwards.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from test_routing import assert_feasible

from gridwatch.cli import main
from gridwatch.storage import create_db_engine
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import PatrolPing, PatrolTeam, Station

pytestmark = pytest.mark.slow

SHIFT = "20:00-02:00"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The small demo county, imported and aggregated (about 20 s on 2 cores)."""
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.workers.engine import RunRequest, run_eager

    root = tmp_path_factory.mktemp("routes_demo")
    settings = make_settings(root)
    engine = create_db_engine(settings.database_url)
    build_demo(settings, engine, root / "files", seed=7, scale="small")
    run_eager(engine, settings, RunRequest(trigger="test", full=True))
    with session_scope(engine) as session:
        stations = list(session.scalars(select(Station.code).order_by(Station.code)))
    yield settings, engine, stations
    engine.dispose()


def invoke(settings, *args: str):
    result = CliRunner().invoke(main, list(args), obj={"settings": settings})
    return result


def plan_json(settings, station: str, day: str, *extra: str) -> dict:
    result = invoke(
        settings, "routes", "plan", "--station", station, "--date", day, "--shift", SHIFT,
        "--json", *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_json_shape_feasibility_and_greedy(demo):
    settings, engine, stations = demo
    payload = plan_json(settings, stations[0], "2026-11-22")
    # the shape, with ISO 8601 times
    assert set(payload) >= {"teams", "risk_covered", "greedy"}
    assert set(payload["greedy"]) >= {"risk_covered", "km"}
    assert isinstance(payload["plan_id"], int)  # stored
    assert payload["teams"], "the station has teams on shift"
    for team in payload["teams"]:
        assert set(team) >= {"team_id", "base", "stops", "km", "duration_min"}
        assert set(team["base"]) == {"lon", "lat"}
        for stop in team["stops"]:
            assert set(stop) >= {"lon", "lat", "grid_code", "arrive", "depart", "risk"}
            arrive = datetime.fromisoformat(stop["arrive"])
            assert arrive.utcoffset() == timedelta(hours=8)  # local time, Asia/Shanghai
            assert stop["risk"] > 0
            assert stop["grid_name"]  # the sheet and the map name the grid
    assert sum(len(t["stops"]) for t in payload["teams"]) >= 10
    assert_feasible(payload, None)
    assert payload["risk_covered"] >= payload["greedy"]["risk_covered"] - 1e-6
    # dwell chosen per stop inside the Koper range
    dwells = {s["dwell_min"] for t in payload["teams"] for s in t["stops"]}
    assert min(dwells) >= 10 and max(dwells) <= 16 and len(dwells) > 1


def test_plans_cover_at_least_the_greedy_risk_on_every_demo_station_tried(demo):
    settings, _, stations = demo
    gains = []
    for station in stations[:4]:
        payload = plan_json(settings, station, "2026-11-22", "--no-store")
        assert "plan_id" not in payload
        assert_feasible(payload, None)
        assert payload["risk_covered"] >= payload["greedy"]["risk_covered"] - 1e-6, station
        gains.append(payload["risk_covered"] / max(payload["greedy"]["risk_covered"], 1e-9))
    assert max(gains) > 1.0  # the solver improves on greedy somewhere, not only ties


def test_plan_errors_are_one_sentence(demo):
    settings, _, stations = demo
    result = invoke(
        settings, "routes", "plan", "--station", "NOPE", "--date", "2026-11-22", "--shift", SHIFT
    )
    assert result.exit_code == 2
    assert "no station with code 'NOPE'" in result.output
    assert "Traceback" not in result.output
    result = invoke(
        settings, "routes", "plan", "--station", stations[0], "--date", "2026-11-22",
        "--shift", "late",
    )  # fmt: skip
    assert result.exit_code == 2 and "--shift must be HH:MM-HH:MM" in result.output


def import_pings(settings, engine, rows: list[tuple[str, datetime, float, float]], tmp: Path):
    """Import pings through the real patrol importer (CSV with ISO 8601 times)."""
    from gridwatch.ingest import import_file

    path = tmp / "pings.csv"
    lines = ["team_code,ts,lon,lat"]
    lines += [f"{code},{ts.isoformat()},{lon:.7f},{lat:.7f}" for code, ts, lon, lat in rows]
    path.write_text("\n".join(lines) + "\n", "utf-8")
    summary = import_file("patrols", path, settings, engine)
    assert summary.imported == len(rows), summary
    assert summary.rejected == 0


def following(team: dict, stops: list[dict]) -> list[tuple[str, datetime, float, float]]:
    """A ping a minute at each given stop during its planned dwell."""
    rows = []
    for stop in stops:
        t = datetime.fromisoformat(stop["arrive"])
        end = datetime.fromisoformat(stop["depart"])
        while t <= end:
            rows.append((team["team_code"], t, stop["lon"], stop["lat"]))
            t += timedelta(minutes=1)
    return rows


def test_adherence_per_team_and_station_over_days(demo, tmp_path):
    settings, engine, stations = demo
    station = stations[0]
    days = ["2026-11-20", "2026-11-21"]
    plans = [plan_json(settings, station, day) for day in days]
    walker = plans[0]["teams"][0]  # follows every stop on day 1, the first half on day 2
    assert len(plans[0]["teams"]) >= 2, "needs a team that ignores its plan"
    idle_codes = [t["team_code"] for t in plans[0]["teams"][1:]]
    start = datetime.fromisoformat(plans[0]["shift_start"]) - timedelta(hours=1)
    end = datetime.fromisoformat(plans[-1]["shift_end"]) + timedelta(hours=1)
    with session_scope(engine) as session:
        ids = {
            code: team_id
            for code, team_id in session.execute(select(PatrolTeam.code, PatrolTeam.id))
        }
        before = session.scalars(
            select(PatrolPing.team_id).where(
                PatrolPing.ts >= start.astimezone(UTC), PatrolPing.ts <= end.astimezone(UTC)
            )
        ).all()
    assert not set(before) & {ids[walker["team_code"]], *(ids[c] for c in idle_codes)}

    day2_team = next(t for t in plans[1]["teams"] if t["team_code"] == walker["team_code"])
    half = len(day2_team["stops"]) // 2
    rows = following(walker, walker["stops"]) + following(day2_team, day2_team["stops"][:half])
    import_pings(settings, engine, rows, tmp_path)

    result = invoke(
        settings, "routes", "adherence", "--station", station, "--from", days[0], "--to",
        days[1], "--by", "day", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["plan_ids"] == sorted(p["plan_id"] for p in plans)
    team = next(t for t in summary["teams"] if t["team_code"] == walker["team_code"])
    by_day = {row["period"]: row for row in team["periods"]}
    assert by_day[days[0]]["stops_visited"] == len(walker["stops"])
    assert by_day[days[0]]["visited_pct"] == 100.0
    assert by_day[days[0]]["mean_abs_late_min"] <= 1.0
    assert by_day[days[1]]["stops_planned"] == len(day2_team["stops"])
    # the followed half, plus any skipped stop that lies where a followed one was
    assert half <= by_day[days[1]]["stops_visited"] < len(day2_team["stops"])
    assert not team["inactive"]
    assert team["total"]["shifts"] == 2
    for code in idle_codes:
        idle = next(t for t in summary["teams"] if t["team_code"] == code)
        assert idle["inactive"] and idle["total"]["stops_visited"] == 0
        assert idle["total"]["shifts_without_pings"] == 2
    station_row = summary["stations"][0]
    assert station_row["station_code"] == station and station_row["plans"] == 2
    assert set(station_row["inactive_teams"]) == set(idle_codes)
    planned = sum(len(t["stops"]) for p in plans for t in p["teams"])
    assert station_row["total"]["stops_planned"] == planned
    assert station_row["total"]["stops_visited"] == team["total"]["stops_visited"]

    # re-planning a day replaces the earlier plan of that day and shift
    replanned = plan_json(settings, station, days[1])
    again = json.loads(
        invoke(
            settings,
            "routes",
            "adherence",
            "--station",
            station,
            "--from",
            days[0],
            "--to",
            days[1],
            "--json",
        ).output  # fmt: skip
    )
    assert again["plan_ids"] == [plans[0]["plan_id"], replanned["plan_id"]]
    assert again["period_kind"] == "week"

    # text output and the one-plan form
    text = invoke(settings, "routes", "adherence", "--station", station, "--from", days[0])
    assert text.exit_code == 0 and f"station {station}" in text.output
    one = invoke(settings, "routes", "adherence", "--plan", str(plans[0]["plan_id"]))
    assert one.exit_code == 0 and f"{len(walker['stops'])}/" in one.output
    both = invoke(settings, "routes", "adherence", "--plan", "1", "--station", station)
    assert both.exit_code == 2 and "either --plan" in both.output


def test_plan_focus_grids_are_weighed_and_named_in_the_json(demo):
    from gridwatch.targeting.prevention import station_patrol_focus

    settings, engine, stations = demo
    station = stations[0]
    focus = station_patrol_focus(engine, settings, station)
    assert focus, "the demo has survey data, so the prevention plan names focus grids"
    assert all(len(hours) in (0, 3) for hours in focus.values())

    with_focus = plan_json(settings, station, "2026-11-22", "--no-store")
    without = plan_json(settings, station, "2026-11-22", "--no-store", "--no-plan-focus")
    named = with_focus["plan_focus"]
    assert named["used"] is True and named["weight"] == 0.15 and "note" not in named
    assert named["grids"], "some focus grids are among the candidate stops"
    for grid in named["grids"]:
        assert grid["peak_hours"] == sorted(focus[grid["grid_code"]])
    assert without["plan_focus"] == {"used": False, "weight": 0.0, "grids": []}
    assert_feasible(with_focus, None)

    def focus_stops(payload: dict) -> list[dict]:
        return [s for t in payload["teams"] for s in t["stops"] if s["grid_code"] in focus]

    assert all(s["focus"] for s in focus_stops(with_focus))
    assert not any(s["focus"] for t in without["teams"] for s in t["stops"])
    # the focus grids get more of the shift: more stop-minutes with the term than without
    minutes_with = sum(s["dwell_min"] for s in focus_stops(with_focus))
    minutes_without = sum(s["dwell_min"] for s in focus_stops(without))
    assert minutes_with > minutes_without, (minutes_with, minutes_without)

    text = invoke(
        settings, "routes", "plan", "--station", station, "--date", "2026-11-22",
        "--shift", SHIFT, "--no-store",
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "prevention plan's patrol-focus grids weighed" in text.output
    assert named["grids"][0]["grid_code"] in text.output


def test_plan_without_survey_data_plans_without_focus_and_says_so(tmp_path):
    """A county with grids, a station and a team but no survey: one line, then the plan."""
    from conftest import make_settings

    from gridwatch.demo.build import build_demo
    from gridwatch.storage.models import SurveyResponse, SurveyResult, SurveyWave

    settings = make_settings(tmp_path)
    engine = create_db_engine(settings.database_url)
    build_demo(settings, engine, tmp_path / "files", seed=7, scale="small")
    with session_scope(engine) as session:
        for table in (SurveyResponse, SurveyResult, SurveyWave):
            session.query(table).delete()
        station = session.scalars(select(Station.code).order_by(Station.code)).first()
    result = invoke(
        settings, "routes", "plan", "--station", station, "--date", "2026-11-22",
        "--shift", SHIFT, "--no-store",
    )  # fmt: skip
    engine.dispose()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "patrol-focus" in line]
    assert lines == [
        "planned without the prevention plan's patrol-focus grids: "
        "no quarterly survey wave to rank the patrol-focus grids by"
    ]
    assert "Traceback" not in result.output


def test_plan_routes_task_stores_the_focus_grids_it_is_sent(demo, monkeypatch):
    """Whoever sends ``plan.routes`` computes the focus grids; the task stores what it gets."""
    from gridwatch.routing.plans import load_plan
    from gridwatch.targeting.prevention import station_patrol_focus_or_note
    from gridwatch.workers import tasks

    settings, engine, stations = demo
    station = stations[0]
    monkeypatch.setattr(tasks, "_context", lambda: (settings, engine))
    focus, note = station_patrol_focus_or_note(engine, settings, station)
    assert focus and note is None
    # the arguments as a worker receives them: through JSON (hour tuples become lists)
    sent = json.loads(json.dumps({"focus_grids": focus, "focus_note": note}))
    plan_id = tasks.plan_routes.apply(args=[station, "2026-11-22", SHIFT], kwargs=sent).get()
    stored = load_plan(engine, plan_id)
    named = stored["plan_focus"]
    assert named["used"] is True and named["weight"] == 0.15 and "note" not in named
    assert named["grids"], "some focus grids are among the candidate stops"
    assert all(g["peak_hours"] == sorted(focus[g["grid_code"]]) for g in named["grids"])
    stops = [s for t in stored["teams"] for s in t["stops"]]
    assert [s["focus"] for s in stops] == [s["grid_code"] in focus for s in stops]
    assert any(s["focus"] for s in stops)

    # planned without them, the dispatcher's note is stored for the plan page
    why = "planned without the prevention plan's patrol-focus grids: no survey"
    plain_id = tasks.plan_routes.apply(
        args=[station, "2026-11-22", SHIFT], kwargs={"focus_note": why}
    ).get()
    plain = load_plan(engine, plain_id)
    assert plain["plan_focus"] == {"used": False, "weight": 0.0, "grids": [], "note": why}
    assert not any(s["focus"] for t in plain["teams"] for s in t["stops"])
