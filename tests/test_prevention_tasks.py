"""Prevention tasks: status transitions, audit, scoping, effect (DiD) and displacement watch.

The effect tests build a township of six 0.01° grids in a row (G1 … G6) and a second
township beside it, then place incidents by hand around the day a task on G1 was done: G2
borders G1 (the displacement watch looks there), G3 … G6 are the comparison pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shapely.geometry import MultiPolygon, box
from sqlalchemy import Engine, inspect, select

from gridwatch.accounts import recent_events
from gridwatch.storage import session_scope
from gridwatch.storage.models import Area, Incident, PreventionTask, Station, StationTownship
from gridwatch.targeting.tasks import (
    TaskError,
    change_status,
    create_task,
    get_task,
    list_tasks,
    task_effect,
    task_from_plan_item,
    task_history,
)

X0, Y0, D = 110.0, 25.0, 0.01
COUNTY, TOWN, OTHER = "450000000000", "450000001000", "450000002000"
VILLAGE, OTHER_VILLAGE = "450000001001", "450000002001"
GRIDS = [f"450000001001{n:03d}" for n in range(1, 7)]
OTHER_GRID = "450000002001001"
DONE = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


def _mp(minx: float, miny: float, maxx: float, maxy: float) -> MultiPolygon:
    return MultiPolygon([box(minx, miny, maxx, maxy)])


@pytest.fixture
def county(engine: Engine) -> Engine:
    """Township TOWN with six grids in a row; township OTHER with one grid north of them."""
    with session_scope(engine) as session:
        county = Area(
            code=COUNTY, name="测试县", level="county", geom=_mp(X0, Y0, X0 + 6 * D, Y0 + 2 * D)
        )
        session.add(county)
        session.flush()
        town = Area(
            code=TOWN,
            name="东镇",
            level="township",
            parent_id=county.id,
            geom=_mp(X0, Y0, X0 + 6 * D, Y0 + D),
        )
        other = Area(
            code=OTHER,
            name="西乡",
            level="township",
            parent_id=county.id,
            geom=_mp(X0, Y0 + D, X0 + D, Y0 + 2 * D),
        )
        session.add_all([town, other])
        session.flush()
        village = Area(
            code=VILLAGE, name="东村", level="village", parent_id=town.id, geom=town.geom
        )
        other_village = Area(
            code=OTHER_VILLAGE, name="西村", level="village", parent_id=other.id, geom=other.geom
        )
        session.add_all([village, other_village])
        session.flush()
        for n, code in enumerate(GRIDS):
            session.add(
                Area(
                    code=code,
                    name=f"东村第{n + 1}网格",
                    level="grid",
                    parent_id=village.id,
                    geom=_mp(X0 + n * D, Y0, X0 + (n + 1) * D, Y0 + D),
                )
            )
        session.add(
            Area(
                code=OTHER_GRID,
                name="西村第1网格",
                level="grid",
                parent_id=other_village.id,
                geom=other.geom,
            )
        )
        station = Station(code="PS9", name="东镇派出所")
        session.add(station)
        session.flush()
        session.add(StationTownship(station_id=station.id, area_id=town.id))
    return engine


def _incidents(engine: Engine, grid_code: str, before: int, after: int, tag: str) -> None:
    """Add ``before`` incidents in the 8 weeks before DONE and ``after`` in the 8 after."""
    with session_scope(engine) as session:
        grid = session.scalar(select(Area).where(Area.code == grid_code))
        assert grid is not None
        lon, lat = grid.geom.centroid.x, grid.geom.centroid.y  # type: ignore[union-attr]
        for k in range(before + after):
            days = -(1 + k * 50 // max(before, 1) % 55) if k < before else 1 + (k - before) % 55
            session.add(
                Incident(
                    source_id=f"{tag}-{grid_code}-{k}",
                    occurred_at=DONE + timedelta(days=days, hours=3),
                    category="theft",
                    lon=lon,
                    lat=lat,
                    source="call_110",
                    grid_id=grid.id,
                )
            )


def _done_task(engine: Engine, settings, grids=(GRIDS[0],)) -> int:
    task = create_task(
        engine,
        settings,
        township_code=TOWN,
        kind="patrol",
        title="重点巡逻 第1网格",
        grid_codes=grids,
    )
    change_status(engine, task["id"], "in_progress", now=DONE - timedelta(days=7))
    change_status(engine, task["id"], "done", now=DONE)
    return int(task["id"])


# -- migration and model ---------------------------------------------------------------------


def test_migration_creates_the_tasks_table(engine: Engine):
    columns = {c["name"] for c in inspect(engine).get_columns("prevention_tasks")}
    assert {
        "kind",
        "title",
        "township_id",
        "station_id",
        "grid_ids",
        "assignee",
        "assignee_user_id",
        "due_date",
        "status",
        "created_by",
        "created_at",
        "updated_at",
        "done_at",
        "source_plan",
        "source_ref",
    } <= columns


# -- transitions and audit -------------------------------------------------------------------


def test_transitions_only_along_the_allowed_paths_and_each_is_audited(county, db_settings):
    task = create_task(
        county,
        db_settings,
        township_code=TOWN,
        kind="repair",
        title="修复摄像头 C1",
        grid_codes=[GRIDS[1]],
        station_code="PS9",
        assignee="巡防一队",
        due_date="2026-07-01",
    )
    assert task["status"] == "open" and task["station_code"] == "PS9"
    assert task["grid_codes"] == [GRIDS[1]] and task["next_statuses"] == [
        "in_progress",
        "cancelled",
    ]
    with pytest.raises(TaskError, match="is open and cannot become done"):
        change_status(county, task["id"], "done")
    change_status(county, task["id"], "in_progress", note="已派单")
    change_status(county, task["id"], "done", now=DONE)
    found = get_task(county, task["id"])
    assert found is not None and found["status"] == "done" and found["done_at"] == DONE
    with pytest.raises(TaskError, match="final"):
        change_status(county, task["id"], "open")
    with pytest.raises(TaskError, match="status must be one of"):
        change_status(county, task["id"], "finished")
    history = task_history(county, task["id"])
    assert [(h["from"], h["to"]) for h in history] == [
        (None, "open"),
        ("open", "in_progress"),
        ("in_progress", "done"),
    ]
    assert history[1]["note"] == "已派单"
    actions = [e["action"] for e in recent_events(county)]
    assert actions.count("task_status") == 2 and actions.count("task_add") == 1


def test_cancelled_task_can_be_reopened(county, db_settings):
    task = create_task(county, db_settings, township_code=TOWN, kind="other", title="x")
    change_status(county, task["id"], "cancelled")
    change_status(county, task["id"], "open")
    assert get_task(county, task["id"])["status"] == "open"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "bribe"}, "kind must be one of"),
        ({"township_code": "nope"}, "no township with code"),
        ({"grid_codes": [OTHER_GRID]}, f"grid {OTHER_GRID} is not in township {TOWN}"),
        ({"due_date": "next week"}, "due date must be a day"),
        ({"title": "  "}, "needs a title"),
        ({"township_code": OTHER, "station_code": "PS9"}, "does not cover township"),
    ],
)
def test_bad_task_input_is_one_sentence(county, db_settings, kwargs, message):
    args = {"township_code": TOWN, "kind": "patrol", "title": "t"} | kwargs
    with pytest.raises(TaskError, match=message):
        create_task(county, db_settings, **args)


def test_list_is_scoped_to_the_townships_given(county, db_settings):
    mine = create_task(county, db_settings, township_code=TOWN, kind="patrol", title="东")
    theirs = create_task(county, db_settings, township_code=OTHER, kind="patrol", title="西")
    with session_scope(county) as session:
        town_id = session.scalar(select(Area.id).where(Area.code == TOWN))
    assert [t["id"] for t in list_tasks(county, {town_id})] == [mine["id"]]
    assert get_task(county, theirs["id"], {town_id}) is None
    with pytest.raises(TaskError, match="no task with number"):
        change_status(county, theirs["id"], "in_progress", township_ids={town_id})
    assert {t["id"] for t in list_tasks(county)} == {mine["id"], theirs["id"]}
    assert list_tasks(county, set()) == []


def test_plan_items_become_tasks(county, db_settings):
    from gridwatch.areas import load_tree

    plan = {
        "township": TOWN,
        "period": "2026Q2",
        "cameras": {
            "sites": [
                {
                    "lon": 110.005,
                    "lat": 25.005,
                    "grid_code": GRIDS[0],
                    "kind": "hotspot_cell",
                    "covered_incidents": 7,
                }
            ]
        },
        "publicity": [{"village_code": VILLAGE, "village_name": "东村"}],
        "follow_up": [
            {
                "station_code": "PS9",
                "station_name": "东镇派出所",
                "case_count": 2,
                "by_grid": [{"grid_code": GRIDS[2], "cases": 2}],
            }
        ],
    }
    tree = load_tree(county)
    camera = task_from_plan_item(plan, "cameras", "110.005000,25.005000", tree, db_settings)
    assert camera["kind"] == "camera" and camera["grid_codes"] == [GRIDS[0]]
    assert "7" in camera["detail"] and camera["source_ref"]["period"] == "2026Q2"
    visits = task_from_plan_item(plan, "publicity", VILLAGE, tree, db_settings)
    assert visits["grid_codes"] == GRIDS
    follow = task_from_plan_item(plan, "follow_up", "PS9", tree, db_settings)
    assert follow["station_code"] == "PS9" and follow["grid_codes"] == [GRIDS[2]]
    created = create_task(county, db_settings, **follow)
    assert created["source_plan"] == "follow_up" and created["kind"] == "follow_up"
    with pytest.raises(TaskError, match="no cameras item"):
        task_from_plan_item(plan, "cameras", "1,1", tree, db_settings)


# -- effect ----------------------------------------------------------------------------------


def test_effect_is_too_early_before_the_window_has_passed(county, db_settings):
    task_id = _done_task(county, db_settings)
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=3))
    assert effect["state"] == "too_early" and effect["weeks_elapsed"] == 3.0
    assert effect["ready_on"] == (DONE + timedelta(weeks=8)).date().isoformat()
    assert "ratio" not in effect
    open_task = create_task(county, db_settings, township_code=TOWN, kind="other", title="o")
    assert task_effect(county, db_settings, open_task["id"])["state"] == "not_done"


def test_a_real_drop_against_flat_comparables_is_a_negative_effect(county, db_settings):
    task_id = _done_task(county, db_settings)
    _incidents(county, GRIDS[0], before=20, after=5, tag="t")
    for code in GRIDS[2:]:
        _incidents(county, code, before=18, after=18, tag="c")
    _incidents(county, GRIDS[1], before=4, after=4, tag="n")
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=9))
    assert effect["state"] == "measured"
    assert effect["target"] == {"grids": [GRIDS[0]], "before": 20, "after": 5}
    # G2 borders the target: never a comparison grid
    assert GRIDS[1] not in effect["comparison"]["grids"]
    assert effect["comparison"]["before"] == effect["comparison"]["after"] == 18 * 4
    assert effect["comparison_similar"] and effect["pool_trend"] == pytest.approx(1.0)
    assert effect["did_per_grid"] == -15.0 and effect["did_incidents"] == -15.0
    assert effect["ratio"] < 0.5 and effect["ratio_high"] < 1.0 and effect["effect_pct"] < -50
    assert effect["verdict"] == "reduced"
    assert effect["displacement"]["rising"] == 0


def test_no_change_gives_an_effect_near_zero(county, db_settings):
    task_id = _done_task(county, db_settings)
    _incidents(county, GRIDS[0], before=12, after=12, tag="t")
    for code in GRIDS[2:]:
        _incidents(county, code, before=12, after=12, tag="c")
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=9))
    assert effect["did_per_grid"] == 0.0 and effect["ratio"] == pytest.approx(1.0)
    assert effect["ratio_low"] < 1.0 < effect["ratio_high"]
    assert effect["verdict"] == "no_clear_change"


def test_comparables_are_the_closest_in_pre_period_counts(county, db_settings):
    task_id = _done_task(county, db_settings)
    _incidents(county, GRIDS[0], before=10, after=10, tag="t")
    for code, n in zip(GRIDS[2:], (9, 11, 40, 10), strict=True):
        _incidents(county, code, before=n, after=n, tag="c")
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=9))
    assert GRIDS[4] not in effect["comparison"]["grids"]  # 40 before: not comparable
    assert effect["comparison"]["before"] == 30


def test_displacement_fires_for_a_neighbour_that_rises(county, db_settings):
    task_id = _done_task(county, db_settings)
    _incidents(county, GRIDS[0], before=20, after=4, tag="t")
    _incidents(county, GRIDS[1], before=3, after=15, tag="n")
    for code in GRIDS[2:]:
        _incidents(county, code, before=15, after=15, tag="c")
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=9))
    rows = {r["grid_code"]: r for r in effect["displacement"]["rows"]}
    # G2 (east) and the other township's grid (north) border G1; G3 does not
    assert set(rows) == {GRIDS[1], OTHER_GRID}
    assert rows[GRIDS[1]]["rising"] and rows[GRIDS[1]]["after"] == 15
    assert rows[GRIDS[1]]["expected"] == pytest.approx(3.0, abs=0.1)
    assert not rows[OTHER_GRID]["rising"] and rows[OTHER_GRID]["township_code"] == OTHER
    assert effect["displacement"]["rising"] == 1


def test_displacement_stays_quiet_when_neighbours_follow_the_trend(county, db_settings):
    task_id = _done_task(county, db_settings)
    _incidents(county, GRIDS[0], before=20, after=4, tag="t")
    _incidents(county, GRIDS[1], before=6, after=8, tag="n")
    # a grid going from 0 to 3 is within the noise of its own (empty) baseline
    _incidents(county, OTHER_GRID, before=0, after=3, tag="o")
    for code in GRIDS[2:]:
        _incidents(county, code, before=15, after=18, tag="c")
    effect = task_effect(county, db_settings, task_id, weeks=8, now=DONE + timedelta(weeks=9))
    rows = {r["grid_code"]: r for r in effect["displacement"]["rows"]}
    assert rows[OTHER_GRID]["after"] == 3 and rows[GRIDS[1]]["after"] == 8
    assert effect["displacement"]["rising"] == 0


def test_tasks_table_keeps_grid_ids(county, db_settings):
    task_id = _done_task(county, db_settings, grids=(GRIDS[0], GRIDS[3]))
    with session_scope(county) as session:
        stored = session.get_one(PreventionTask, task_id)
        ids = list(stored.grid_ids)
    assert len(ids) == 2 and all(isinstance(i, int) for i in ids)


# -- web: board, task page, forms -------------------------------------------------------------


def _as(client, username):
    from web_support import login

    response = login(client, username)
    assert response.status_code == 302
    return client


def _token(client, url="/survey/tasks"):
    from web_support import csrf_token

    return csrf_token(client.get(url).get_data(as_text=True))


def _create_in_a(client, **extra):
    from web_support import GRIDS_A, TOWNSHIP_A

    data = {
        "township": TOWNSHIP_A,
        "kind": "patrol",
        "title": "夜间巡逻 东一村",
        "grids": f"{GRIDS_A[0]}, {GRIDS_A[1]}",
        "assignee": "东城巡防队",
        "due_date": "2026-12-31",
        "csrf_token": _token(client),
    } | extra
    return client.post("/survey/tasks", data=data)


def test_web_board_is_scoped_and_another_townships_task_is_404(app, client):
    response = _create_in_a(_as(client, "town_a"))
    assert response.status_code == 302
    task_url = response.location
    task_id = int(task_url.rstrip("/").rsplit("/", 1)[1])
    page = client.get(task_url).get_data(as_text=True)
    assert "夜间巡逻 东一村" in page and "东城巡防队" in page and "为时尚早" not in page
    board = client.get("/survey/tasks").get_data(as_text=True)
    assert "夜间巡逻 东一村" in board and "tasks/from-plan" not in board
    client.post("/auth/logout", data={"csrf_token": _token(client)})
    _as(client, "town_b")
    assert "夜间巡逻 东一村" not in client.get("/survey/tasks").get_data(as_text=True)
    assert client.get(f"/survey/tasks/{task_id}").status_code == 404
    token = _token(client)
    refused = client.post(
        f"/survey/tasks/{task_id}/status", data={"status": "in_progress", "csrf_token": token}
    )
    assert refused.status_code == 404
    # the county and the station covering A see it
    for user in ("county", "station"):
        other = app.test_client()
        _as(other, user)
        assert "夜间巡逻 东一村" in other.get("/survey/tasks").get_data(as_text=True), user


def test_web_status_changes_follow_transitions_and_are_audited(app, client):
    _as(client, "town_a")
    task_url = _create_in_a(client).location
    task_id = int(task_url.rsplit("/", 1)[1])
    bad = client.post(
        f"/survey/tasks/{task_id}/status",
        data={"status": "done", "csrf_token": _token(client)},
        follow_redirects=True,
    )
    assert "cannot become done" in bad.get_data(as_text=True)
    for status in ("in_progress", "done"):
        response = client.post(
            f"/survey/tasks/{task_id}/status",
            data={"status": status, "note": "已落实", "csrf_token": _token(client)},
        )
        assert response.status_code == 302
    page = client.get(task_url).get_data(as_text=True)
    assert "已完成" in page and "为时尚早" in page and "已落实" in page
    events = recent_events(app.extensions["gridwatch"].engine)
    changes = [e for e in events if e["action"] == "task_status"]
    assert [e["detail"]["to"] for e in changes] == ["done", "in_progress"]
    assert all(e["username"] == "town_a" for e in changes)


def test_web_forms_need_the_csrf_token(app, client):
    from web_support import TOWNSHIP_A

    _as(client, "town_a")
    response = client.post(
        "/survey/tasks", data={"township": TOWNSHIP_A, "kind": "patrol", "title": "无令牌"}
    )
    assert response.status_code == 400
    assert "无令牌" not in client.get("/survey/tasks").get_data(as_text=True)
    task_id = int(_create_in_a(client).location.rsplit("/", 1)[1])
    response = client.post(f"/survey/tasks/{task_id}/status", data={"status": "cancelled"})
    assert response.status_code == 400
    assert get_task(app.extensions["gridwatch"].engine, task_id)["status"] == "open"  # type: ignore[index]


def test_web_viewer_reads_but_cannot_change(app, client):
    _as(client, "screen")
    board = client.get("/survey/tasks")
    html = board.get_data(as_text=True)
    assert board.status_code == 200 and 'action="/survey/tasks"' not in html
    response = _create_in_a(client)
    assert response.status_code == 403


def test_web_bad_input_is_one_sentence_on_the_board(app, client):
    from web_support import GRIDS_B

    _as(client, "town_a")
    response = _create_in_a(client, grids=GRIDS_B[0])
    assert response.status_code == 400
    assert f"grid {GRIDS_B[0]} is not in township" in response.get_data(as_text=True)


def test_web_plan_item_becomes_a_task(app, client):
    import re

    _as(client, "town_a")
    plan = client.get("/survey/plan").get_data(as_text=True)
    assert "转为任务" in plan
    keys = re.findall(
        r'name="list" value="patrol_focus"><input type="hidden" name="key" '
        r'value="([^"]+)"',
        plan,
    )
    assert keys, "no patrol focus button"
    from web_support import TOWNSHIP_A

    response = client.post(
        "/survey/tasks/from-plan",
        data={
            "township": TOWNSHIP_A,
            "period": "",
            "list": "patrol_focus",
            "key": keys[0],
            "csrf_token": _token(client),
        },
    )
    assert response.status_code == 302 and "/survey/tasks/" in response.location
    page = client.get(response.location).get_data(as_text=True)
    assert "重点巡逻" in page and keys[0] in page
    # a key that is not in the plan is refused with a sentence
    refused = client.post(
        "/survey/tasks/from-plan",
        data={
            "township": TOWNSHIP_A,
            "list": "patrol_focus",
            "key": "999",
            "csrf_token": _token(client),
        },
        follow_redirects=True,
    )
    assert "any more; reload the plan" in refused.get_data(as_text=True)


# -- command line ----------------------------------------------------------------------------


def test_cli_add_list_status_effect(runner):
    import json

    from web_support import GRIDS_A, GRIDS_B, TOWNSHIP_A, TOWNSHIP_B

    added = runner.invoke(
        [
            "tasks",
            "add",
            "--township",
            TOWNSHIP_A,
            "--kind",
            "patrol",
            "--title",
            "夜巡",
            "--grid",
            GRIDS_A[0],
            "--station",
            "PS01",
            "--due",
            "2026-12-31",
            "--json",
        ]
    )
    assert added.exit_code == 0, added.output
    task = json.loads(added.output)
    assert task["status"] == "open" and task["grid_codes"] == [GRIDS_A[0]]
    runner.invoke(["tasks", "add", "--township", TOWNSHIP_B, "--title", "西", "--json"])
    listed = json.loads(
        runner.invoke(["tasks", "list", "--township", TOWNSHIP_A, "--json"]).output
    )
    assert [t["id"] for t in listed] == [task["id"]]
    early = runner.invoke(["tasks", "effect", str(task["id"])])
    assert early.exit_code == 0 and "not done yet" in early.output
    bad = runner.invoke(["tasks", "status", str(task["id"]), "done"])
    assert bad.exit_code == 2
    assert bad.output.strip().startswith("gridwatch: task") and "Traceback" not in bad.output
    assert runner.invoke(["tasks", "status", str(task["id"]), "in_progress"]).exit_code == 0
    done = runner.invoke(["tasks", "status", str(task["id"]), "done"])
    assert done.exit_code == 0 and "[done]" in done.output
    effect = json.loads(runner.invoke(["tasks", "effect", str(task["id"]), "--json"]).output)
    assert effect["state"] == "too_early" and effect["weeks_elapsed"] == 0.0
    wrong = runner.invoke(
        ["tasks", "add", "--township", TOWNSHIP_A, "--title", "x", "--grid", GRIDS_B[0]]
    )
    assert wrong.exit_code == 2 and f"grid {GRIDS_B[0]} is not in township" in wrong.output
    missing = runner.invoke(["tasks", "status", "999", "done"])
    assert missing.exit_code == 2 and "no task with number 999" in missing.output
