"""County-wide survey results kept per run, import and survey data, and warmed on publish.

The web county (tests/web_support.py) with aggregated survey results for three quarters:
each test works on its own copy, so the runs, imports and deletions here reach no other test.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
from sqlalchemy import delete
from web_support import COUNTY, TOWNSHIP_A, TOWNSHIP_B, VILLAGE_A, VILLAGE_B, login

from gridwatch.storage import create_db_engine
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import SurveyResult
from gridwatch.targeting import survey_results
from gridwatch.targeting.survey_results import (
    SurveyResultStore,
    kept_result,
    survey_result,
    warm_survey_results,
)
from gridwatch.workers import engine as runs

QUARTERS = ("2026Q1", "2026Q2", "2026Q3")
#: area → security % (township A is the bottom township)
SCORES = {TOWNSHIP_A: 78.0, TOWNSHIP_B: 92.0, VILLAGE_A: 76.0, VILLAGE_B: 93.0, COUNTY: 85.0}


def _import_results(settings, engine, path, quarters, scores=SCORES):
    from gridwatch.ingest import import_file

    lines = ["area_code,period,respondents,security_pct,awareness_pct,participation_pct,两抢一盗"]
    for quarter in quarters:
        for code, security in scores.items():
            lines.append(f"{code},{quarter},400,{security},40,30,50")
    path.write_text("\n".join(lines) + "\n", "utf-8")
    summary = import_file("surveys", path, settings, engine)
    assert summary.imported == len(quarters) * len(scores)


@pytest.fixture
def county(web_settings, tmp_path):
    """The web county with survey results of three quarters (a run published after them)."""
    engine = create_db_engine(web_settings.database_url)
    _import_results(web_settings, engine, tmp_path / "results.csv", QUARTERS)
    runs.run_eager(engine, web_settings, runs.RunRequest(trigger="test", full=True))
    yield web_settings, engine
    engine.dispose()


def _counting_build(builds):
    def build():
        builds.append(len(builds) + 1)
        return {"build": len(builds)}

    return build


def test_a_new_run_an_import_or_changed_survey_data_builds_a_result_again(county, tmp_path):
    settings, engine = county
    builds: list[int] = []
    build = _counting_build(builds)
    kind = f"test.{uuid.uuid4().hex}"
    assert kept_result(engine, settings, kind, (), build) == {"build": 1}
    assert kept_result(engine, settings, kind, (), build) == {"build": 1}
    assert kept_result(engine, settings, kind, ("other",), build) == {"build": 2}

    runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    assert kept_result(engine, settings, kind, (), build) == {"build": 3}

    _import_results(settings, engine, tmp_path / "q4.csv", ("2026Q4",))
    assert kept_result(engine, settings, kind, (), build) == {"build": 4}

    # survey rows going without an import (a clean-up by hand) change the signature too
    with session_scope(engine) as session:
        session.execute(delete(SurveyResult).where(SurveyResult.security_pct == 92.0))
    assert kept_result(engine, settings, kind, (), build) == {"build": 5}
    assert kept_result(engine, settings, kind, (), build) == {"build": 5}


def test_survey_results_follow_a_survey_import_and_a_new_run(county, tmp_path):
    settings, engine = county
    ranking = survey_result(engine, settings, "ranking", ("2026Q3",))
    assert [r["area_code"] for r in ranking["rows"]] == [TOWNSHIP_B, TOWNSHIP_A]
    assert survey_result(engine, settings, "quarters") == list(QUARTERS)

    # The same quarter imported again with the places swapped: the kept ranking is not used.
    with session_scope(engine) as session:
        session.execute(delete(SurveyResult))
    swapped = {**SCORES, TOWNSHIP_A: 95.0, TOWNSHIP_B: 70.0}
    _import_results(settings, engine, tmp_path / "again.csv", QUARTERS, swapped)
    ranking = survey_result(engine, settings, "ranking", ("2026Q3",))
    assert [r["area_code"] for r in ranking["rows"]] == [TOWNSHIP_A, TOWNSHIP_B]
    assert ranking["rows"][0]["security_pct"] == 95.0

    _import_results(settings, engine, tmp_path / "q4.csv", ("2026Q4",))
    runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    summary = warm_survey_results(engine, settings)
    assert summary["quarter"] == "2026Q4"
    assert survey_result(engine, settings, "quarters") == [*QUARTERS, "2026Q4"]


def test_warmed_results_serve_the_survey_pages_without_building(county, monkeypatch):
    from gridwatch.web import create_app

    settings, engine = county
    summary = warm_survey_results(engine, settings)
    assert summary["quarter"] == "2026Q3"
    assert summary["skipped"] == []
    assert {"ranking", "ladder", "priorities.village", "priorities.grid", "early_warning"} <= set(
        summary["built"]
    )

    def no_build(*args, **kwargs):
        raise AssertionError(f"built on a request: {args[2:4]}")

    monkeypatch.setattr(survey_results, "build_survey_result", no_build)
    app = create_app({"GRIDWATCH_SETTINGS": settings, "TESTING": True})
    try:
        client = app.test_client()
        assert login(client, "admin").status_code == 302
        for page in ("/survey/rankings", "/survey/priorities"):
            response = client.get(page)
            assert response.status_code == 200, (page, response.get_data(as_text=True)[:500])
            assert "东城镇" in response.get_data(as_text=True)
    finally:
        app.extensions["gridwatch"].engine.dispose()


def test_a_publish_sends_the_warm_up_task_with_redis_only(county, monkeypatch):
    from gridwatch.workers import celery_app

    settings, engine = county
    assert survey_results.warm_after_publish in runs.PUBLISH_HOOKS
    sent: list[tuple[str, list, dict]] = []

    class _App:
        def send_task(self, name, args, **options):
            sent.append((name, args, options))

    monkeypatch.setattr(celery_app, "app_for", lambda _settings: _App())
    published = runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    assert published["status"] == "done"
    assert sent == []  # without Redis the results live in the web processes

    with_redis = replace(settings, redis_url="redis://127.0.0.1:1/0")
    survey_results.warm_after_publish(engine, with_redis, published["run_id"])
    database = engine.url.render_as_string(hide_password=True)
    assert sent == [
        (
            "survey.warm",
            [published["run_id"], database],
            {"queue": "gridwatch.heavy", "expires": survey_results.WARM_EXPIRES_S},
        )
    ]


def test_publish_hooks_are_called_with_the_published_run(county):
    settings, engine = county
    seen: list[int] = []

    def hook(hook_engine, hook_settings, run_id):
        seen.append(run_id)

    def failing(*_args):
        raise RuntimeError("a follower failed")

    runs.on_publish(failing)
    runs.on_publish(hook)
    try:
        published = runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    finally:
        runs.PUBLISH_HOOKS.remove(failing)
        runs.PUBLISH_HOOKS.remove(hook)
    assert published["status"] == "done"  # a failing follower does not undo the publish
    assert seen == [published["run_id"]]


def test_the_warm_up_task_skips_an_older_run_and_another_database(county, monkeypatch):
    settings, engine = county
    monkeypatch.setattr(survey_results, "_task_context", lambda: (settings, engine))
    first = runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    newest = runs.run_eager(engine, settings, runs.RunRequest(trigger="test", full=True))
    database = engine.url.render_as_string(hide_password=True)
    assert survey_results.warm_task(first["run_id"], database) is None
    assert survey_results.warm_task(newest["run_id"], "sqlite:///elsewhere.db") is None
    done = survey_results.warm_task(newest["run_id"], database)
    assert done is not None and done["quarter"] == "2026Q3" and "ranking" in done["built"]


def test_results_kept_in_redis_are_shared_between_processes(redis_url):
    key = ("survey", "test", uuid.uuid4().hex)
    builder, reader = SurveyResultStore(redis_url), SurveyResultStore(redis_url)
    builds: list[int] = []
    try:
        assert builder.get_or_build(key, _counting_build(builds)) == {"build": 1}
        # another process (its own store, nothing kept locally) reads it from Redis
        assert reader.get_or_build(key, _counting_build(builds)) == {"build": 1}
        assert builds == [1]
    finally:
        builder._redis().delete(builder.redis_key(key))


def test_an_entry_not_signed_with_this_installations_key_is_never_unpickled(redis_url):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled a forged entry')",))

    key = ("survey", "test", uuid.uuid4().hex)
    ours, other = (
        SurveyResultStore(redis_url, secret="a" * 32),
        SurveyResultStore(redis_url, secret="b" * 32),
    )
    client = ours._redis()
    try:
        forged = b"\0" * 32 + pickle.dumps(Boom())
        client.set(ours.redis_key(key), forged)
        assert ours.get(key) == (False, None)
        # signed with another key (another installation sharing the server): not read either
        other.put(key, {"from": "other"})
        assert ours.get(key) == (False, None)
        ours.put(key, {"from": "ours"})
        assert SurveyResultStore(redis_url, secret="a" * 32).get(key) == (True, {"from": "ours"})
    finally:
        client.delete(ours.redis_key(key))


def test_an_unreachable_redis_only_means_building_here():
    store = SurveyResultStore("redis://127.0.0.1:1/0")
    builds: list[int] = []
    key = ("survey", "test", uuid.uuid4().hex)
    assert store.get_or_build(key, _counting_build(builds)) == {"build": 1}
    assert store.get_or_build(key, _counting_build(builds)) == {"build": 1}  # kept here
    assert builds == [1]
    # and the next requests do not wait for the absent server again
    assert store._redis() is None


def test_a_survey_import_sends_the_warm_up_task_with_redis_only(county, monkeypatch):
    from gridwatch.workers import celery_app

    settings, engine = county
    sent: list[tuple[str, list]] = []

    class _App:
        def send_task(self, name, args, **options):
            sent.append((name, args))

    monkeypatch.setattr(celery_app, "app_for", lambda _settings: _App())
    with_redis = replace(settings, redis_url="redis://127.0.0.1:1/0")
    survey_results.warm_after_import(engine, settings, "surveys", 10)  # no Redis
    survey_results.warm_after_import(engine, with_redis, "incidents", 10)  # a run follows
    survey_results.warm_after_import(engine, with_redis, "survey-responses", 0)  # nothing new
    assert sent == []
    survey_results.warm_after_import(engine, with_redis, "survey-responses", 3)
    with session_scope(engine) as session:
        run_id = runs.latest_published_run_id(session)
    assert [(name, args[0]) for name, args in sent] == [("survey.warm", run_id)]
