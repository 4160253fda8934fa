"""The prevention tasks API: /api/v1/tasks (scoped, filtered) and /api/v1/tasks/<id>."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from web_support import GRIDS_A, TOWNSHIP_A, TOWNSHIP_B, login

from gridwatch.targeting.tasks import change_status, create_task

DONE = datetime.now(UTC) - timedelta(weeks=20)


def _as(client, username):
    response = login(client, username)
    assert response.status_code == 302
    return client


@pytest.fixture
def tasks(app, web_settings):
    """Three tasks: a patrol in A done 20 weeks ago, a camera task in A, a patrol in B."""
    engine = app.extensions["gridwatch"].engine
    patrol_a = create_task(
        engine,
        web_settings,
        township_code=TOWNSHIP_A,
        kind="patrol",
        title="夜间巡逻 <b>东一村</b>",
        grid_codes=[GRIDS_A[0]],
        assignee="东城巡防队",
        due_date="2026-12-31",
    )
    change_status(engine, patrol_a["id"], "in_progress", now=DONE - timedelta(days=7))
    change_status(engine, patrol_a["id"], "done", note="已完成", now=DONE)
    camera_a = create_task(
        engine, web_settings, township_code=TOWNSHIP_A, kind="camera", title="新增监控 东一村"
    )
    patrol_b = create_task(
        engine, web_settings, township_code=TOWNSHIP_B, kind="patrol", title="巡逻 西一村"
    )
    return {"patrol_a": patrol_a["id"], "camera_a": camera_a["id"], "patrol_b": patrol_b["id"]}


def test_task_list_is_scoped_and_filtered(app, client, tasks):
    assert client.get("/api/v1/tasks").status_code == 401
    _as(client, "town_a")
    rows = client.get("/api/v1/tasks").json
    assert [r["id"] for r in rows] == [tasks["camera_a"], tasks["patrol_a"]]  # newest first
    assert {r["township_code"] for r in rows} == {TOWNSHIP_A}
    done = client.get("/api/v1/tasks?status=done").json
    assert [r["id"] for r in done] == [tasks["patrol_a"]]
    assert done[0]["title"] == "夜间巡逻 <b>东一村</b>" and done[0]["grid_codes"] == [GRIDS_A[0]]
    # times are ISO 8601, not the RFC 822 jsonify would write
    assert datetime.fromisoformat(done[0]["done_at"]) == DONE
    assert datetime.fromisoformat(done[0]["created_at"]).tzinfo is not None
    cameras = client.get("/api/v1/tasks?kind=camera").json
    assert [r["id"] for r in cameras] == [tasks["camera_a"]]
    assert client.get("/api/v1/tasks?kind=camera&status=done").json == []
    for query, word in (("status=finished", "status"), ("kind=bribe", "task kind")):
        response = client.get(f"/api/v1/tasks?{query}")
        assert response.status_code == 400
        message = response.json["error"]["message"]
        assert word in message and message.count(".") <= 1 and "Traceback" not in message
    county = _as(app.test_client(), "county").get("/api/v1/tasks?kind=patrol").json
    assert {r["id"] for r in county} == {tasks["patrol_a"], tasks["patrol_b"]}
    town_b = _as(app.test_client(), "town_b").get("/api/v1/tasks").json
    assert [r["id"] for r in town_b] == [tasks["patrol_b"]]


def test_task_detail_has_history_effect_and_displacement(app, client, tasks):
    _as(client, "town_a")
    task = client.get(f"/api/v1/tasks/{tasks['patrol_a']}").json
    assert task["id"] == tasks["patrol_a"] and task["status"] == "done"
    assert [h["to"] for h in task["history"]] == ["open", "in_progress", "done"]
    assert task["history"][-1]["note"] == "已完成"
    effect = task["effect"]
    assert effect["task_id"] == tasks["patrol_a"] and effect["weeks"] == 8
    # done 20 weeks ago: the 8 weeks after are over, so the effect is measured
    assert effect["state"] == "measured", effect
    assert set(effect["target"]) >= {"grids", "before", "after"}
    assert effect["target"]["grids"] == [GRIDS_A[0]]
    shift = effect["displacement"]
    assert {"rows", "hidden", "rising"} <= set(shift)
    # the bordering grids shown are the reader's own; B's are only counted
    assert shift["rows"] and shift["hidden"] > 0
    assert all(r["township_code"] == TOWNSHIP_A for r in shift["rows"])
    county = _as(app.test_client(), "county").get(f"/api/v1/tasks/{tasks['patrol_a']}").json
    county_shift = county["effect"]["displacement"]
    assert county_shift["hidden"] == 0
    assert len(county_shift["rows"]) == len(shift["rows"]) + shift["hidden"]
    # an open task has no figures yet
    open_task = client.get(f"/api/v1/tasks/{tasks['camera_a']}").json
    assert open_task["effect"]["state"] == "not_done" and open_task["history"]


def test_another_townships_task_is_a_json_404(app, client, tasks):
    _as(client, "town_b")
    for task_id in (tasks["patrol_a"], 999_999):
        response = client.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 404 and response.json["error"]["status"] == 404
    assert client.get(f"/api/v1/tasks/{tasks['patrol_b']}").status_code == 200


def test_openapi_documents_the_tasks_endpoints(client):
    _as(client, "county")
    paths = client.get("/api/v1/openapi.json").json["paths"]
    listing = paths["/tasks"]["get"]
    assert {p["name"] for p in listing["parameters"]} == {"status", "kind"}
    assert (
        "done" in next(p for p in listing["parameters"] if p["name"] == "status")["schema"]["enum"]
    )
    detail = paths["/tasks/{task_id}"]["get"]
    assert detail["parameters"][0]["in"] == "path" and "404" in detail["responses"]
