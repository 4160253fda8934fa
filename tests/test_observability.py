"""Observability: /metrics (requests, tasks, runs, imports, queues), access to it, JSON logs.

The counters are per process, so the tests compare a scrape before and after what they do.
Redis tests use database 13 of the test server, which no worker consumes, so the fake queue
entries they push are never taken by anyone's worker.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from web_support import login

from gridwatch import logs, observability
from gridwatch.config import ConfigError
from gridwatch.storage import create_db_engine
from gridwatch.storage.models import AggregationRun
from gridwatch.web import create_app

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client, **kwargs) -> Samples:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain; version=")
    return parse(response.get_data(as_text=True))


@pytest.fixture
def restore_logging():
    """Put the root logger's handlers and level back after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _redis_db(redis_url: str, db: int = 13) -> str:
    return re.sub(r"/\d*$", "", redis_url.rstrip("/")) + f"/{db}"


# --------------------------------------------------------------------------------------------
# HTTP metrics and what a scrape reads from the database
# --------------------------------------------------------------------------------------------


def test_requests_are_counted_by_endpoint_method_and_status(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/auth/login").status_code == 200
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    login_ok = {"endpoint": "auth.login", "method": "GET", "status": "200"}
    assert grew("gridwatch_http_requests_total", **login_ok) == 3
    assert grew("gridwatch_http_requests_total", endpoint="none", method="GET", status="404") == 1
    latency = {"endpoint": "auth.login", "method": "GET"}
    assert grew("gridwatch_http_request_duration_seconds_count", **latency) == 3
    assert grew("gridwatch_http_request_duration_seconds_sum", **latency) > 0
    # The scrape before was itself counted once it had answered.
    assert (
        grew(
            "gridwatch_http_requests_total", endpoint="metrics.metrics", method="GET", status="200"
        )
        >= 1
    )


def test_last_successful_run_age_comes_from_the_newest_published_run(app, client):
    engine = app.extensions["gridwatch"].engine
    with engine.connect() as conn:
        published, finished = conn.execute(
            select(AggregationRun.published_at, AggregationRun.finished_at)
            .where(AggregationRun.status == "done")
            .order_by(AggregationRun.id.desc())
        ).first()
    stamp = (published or finished).timestamp()
    samples = scrape(client)
    assert value(samples, "gridwatch_last_successful_run_timestamp_seconds") == pytest.approx(
        stamp
    )
    age = value(samples, "gridwatch_last_successful_run_age_seconds")
    assert 0 < age <= datetime.now(UTC).timestamp() - stamp + 1
    assert value(samples, "gridwatch_aggregation_runs", status="done") >= 1
    assert value(samples, "gridwatch_dependency_up", dependency="database") == 1
    # No Redis configured: no queue figures and no Redis health line.
    assert not any(name == "gridwatch_celery_queue_depth" for name, _ in samples)
    assert ("gridwatch_dependency_up", frozenset({("dependency", "redis")})) not in samples


def test_import_rejections_are_counted_per_kind(app, client, tmp_path):
    from gridwatch.ingest import ImportFileError, import_file

    state = app.extensions["gridwatch"]
    before = scrape(client)
    good_and_bad = tmp_path / "incidents.csv"
    good_and_bad.write_text(
        "id,occurred_at,category,lon,lat,source,status\n"
        "M1,2026-07-03 09:00,theft,104.005,30.005,call_110,solved\n"
        "M2,not a date,theft,104.005,30.005,call_110,solved\n"
        "M3,2026-07-03 09:00,no-such-category,104.005,30.005,call_110,solved\n",
        "utf-8",
    )
    summary = import_file("incidents", good_and_bad, state.settings, state.engine)
    assert (summary.imported, summary.rejected) == (1, 2)
    # A field beyond the CSV reader's limit stops the file half-way: refused as a whole, and
    # recorded as a failed batch (files refused at the header row leave no batch behind).
    unreadable = tmp_path / "huge_field.csv"
    unreadable.write_text(
        "id,occurred_at,category,lon,lat,source,status\n"
        f"M9,2026-07-03 09:00,theft,104.005,30.005,call_110,{'x' * 200_000}\n",
        "utf-8",
    )
    with pytest.raises(ImportFileError):
        import_file("incidents", unreadable, state.settings, state.engine)
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gridwatch_import_rejected_rows_total", kind="incidents") == 2
    assert grew("gridwatch_import_rejected_files_total", kind="incidents") == 1
    assert grew("gridwatch_import_rows_total", kind="incidents", outcome="imported") == 1
    assert grew("gridwatch_import_rows_total", kind="incidents", outcome="rejected") == 2
    assert grew("gridwatch_import_files_total", kind="incidents", status="done") == 1
    assert grew("gridwatch_import_files_total", kind="incidents", status="failed") == 1


def test_files_refused_when_opened_are_counted_by_reason(app, client, tmp_path):
    from gridwatch.ingest import ImportFileError, ImportOptions, import_file

    state = app.extensions["gridwatch"]
    header = "id,occurred_at,category,lon,lat,source,status\n"
    row = "R1,2026-07-03 09:00,盗窃,104.005,30.005,call_110,solved\n"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes((header + row).encode("gbk"))
    pdf = tmp_path / "incidents.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    geojson = tmp_path / "incidents.geojson"
    geojson.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
        '{"id": "G1"}, "geometry": {"type": "Point", "coordinates": [104.005, 30.005]}}]}',
        "utf-8",
    )
    no_date = tmp_path / "no_date.csv"
    no_date.write_text("id,category,lon,lat\nR2,theft,104.005,30.005\n", "utf-8")
    good = tmp_path / "good.csv"
    good.write_text(header + row, "utf-8")
    bad_mapping = tmp_path / "mapping.yaml"
    bad_mapping.write_text("- not\n- a mapping\n", "utf-8")
    cases = [
        (empty, ImportOptions()),
        (gbk, ImportOptions(encoding="utf-8")),
        (pdf, ImportOptions()),
        (geojson, ImportOptions()),
        (no_date, ImportOptions()),
        (good, ImportOptions(mapping=bad_mapping)),
    ]
    before = scrape(client)
    for path, options in cases:
        with pytest.raises(ImportFileError):
            import_file("incidents", path, state.settings, state.engine, options)
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    refused = "gridwatch_import_files_refused_total"
    assert grew(refused, kind="incidents", reason="unreadable") == 3
    assert grew(refused, kind="incidents", reason="format") == 1
    assert grew(refused, kind="incidents", reason="columns") == 1
    assert grew(refused, kind="incidents", reason="mapping") == 1
    # They left no batch, so the batch-based figures did not move.
    assert grew("gridwatch_import_rejected_files_total", kind="incidents") == 0
    assert grew("gridwatch_import_files_total", kind="incidents", status="failed") == 0


def test_a_database_without_schema_is_reported_down_not_as_an_error(web_settings, tmp_path):
    empty = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        body, content_type = observability.render_metrics(web_settings, empty, environ={})
    finally:
        empty.dispose()
    samples = parse(body.decode())
    assert value(samples, "gridwatch_dependency_up", dependency="database") == 0
    # Files refused when opened are counted in the process, not read from the database.
    from_database = {
        name
        for name, _ in samples
        if name.startswith("gridwatch_import") and "files_refused" not in name
    }
    assert not from_database


# --------------------------------------------------------------------------------------------
# Queue depth (real Redis)
# --------------------------------------------------------------------------------------------


def test_queue_depth_and_unacked_tasks_are_read_from_redis(redis_url, app):
    import redis

    url = _redis_db(redis_url)
    state = app.extensions["gridwatch"]
    settings = replace(state.settings, redis_url=url)
    client = redis.Redis.from_url(url)
    keys = ["gridwatch.heavy", "gridwatch.heavy\x06\x163", "gridwatch.quick", "unacked"]
    try:
        client.delete(*keys)
        client.rpush("gridwatch.heavy", "a", "b", "c")
        client.rpush("gridwatch.heavy\x06\x163", "d")  # a message sent with priority 3
        client.rpush("gridwatch.quick", "e", "f")
        client.hset("unacked", "tag-1", "x")
        body, _ = observability.render_metrics(settings, state.engine, environ={})
    finally:
        client.delete(*keys)
        client.close()
    samples = parse(body.decode())
    assert value(samples, "gridwatch_celery_queue_depth", queue="gridwatch.heavy") == 4
    assert value(samples, "gridwatch_celery_queue_depth", queue="gridwatch.quick") == 2
    assert value(samples, "gridwatch_celery_unacked_tasks") == 1
    assert value(samples, "gridwatch_dependency_up", dependency="redis") == 1


def test_redis_down_is_reported_and_the_scrape_still_answers(app):
    state = app.extensions["gridwatch"]
    closed_port = _free_port()
    settings = replace(state.settings, redis_url=f"redis://127.0.0.1:{closed_port}/0")
    body, _ = observability.render_metrics(settings, state.engine, environ={})
    samples = parse(body.decode())
    assert value(samples, "gridwatch_dependency_up", dependency="redis") == 0
    assert value(samples, "gridwatch_dependency_up", dependency="database") == 1


def test_queue_names_are_the_celery_queues():
    from gridwatch.workers.celery_app import HEAVY_QUEUE, QUICK_QUEUE

    assert set(observability.CELERY_QUEUES) == {QUICK_QUEUE, HEAVY_QUEUE}


# --------------------------------------------------------------------------------------------
# Who may scrape
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"])
def test_loopback_may_scrape_without_a_token(client, address):
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code == 200


@pytest.mark.parametrize("address", ["10.0.0.7", "192.168.1.20", "::ffff:10.0.0.7", "fe80::1"])
def test_other_addresses_are_refused_without_a_token(client, address):
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 403
    assert b"gridwatch_" not in response.data
    assert "GRIDWATCH_METRICS_TOKEN" in response.get_data(as_text=True)


def test_a_request_through_a_proxy_is_not_taken_for_loopback(client):
    # nginx on the same machine connects from 127.0.0.1 for every client.
    response = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403


def test_with_a_token_only_the_bearer_token_is_accepted(web_settings):
    token = "metrics-token-0123456789abcdef"
    app = create_app({"GRIDWATCH_SETTINGS": replace(web_settings, metrics_token=token)})
    client = app.test_client()
    try:
        refused = client.get("/metrics")  # loopback, but no token
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer " + token[:-1] + "x"})
        assert wrong.status_code == 401
        assert client.get("/metrics", headers={"Authorization": token}).status_code == 401
        remote = {"REMOTE_ADDR": "10.0.0.7"}
        ok = client.get(
            "/metrics", headers={"Authorization": f"Bearer {token}"}, environ_base=remote
        )
        assert ok.status_code == 200
        assert b"gridwatch_http_requests_total" in ok.data
    finally:
        app.extensions["gridwatch"].engine.dispose()


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("GRIDWATCH_LOG_FORMAT", "xml", "text or json"),
        ("GRIDWATCH_METRICS_TOKEN", "short", "at least 16"),
        ("GRIDWATCH_METRICS_TOKEN", "has a space in it 0123", "without spaces"),
        ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/prom", "does not exist"),
    ],
)
def test_bad_observability_settings_stop_with_one_sentence(tmp_path, name, raw, fragment):
    from conftest import make_settings

    with pytest.raises(ConfigError, match=fragment) as caught:
        make_settings(tmp_path, **{name: raw})
    assert name in str(caught.value)


def test_observability_settings_are_read(tmp_path):
    from conftest import make_settings

    settings = make_settings(
        tmp_path,
        GRIDWATCH_LOG_FORMAT="JSON",
        GRIDWATCH_METRICS_TOKEN="0123456789abcdef",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    assert settings.log_format == "json"
    assert settings.metrics_token == "0123456789abcdef"
    assert settings.metrics_multiproc_dir == tmp_path
    defaults = make_settings(tmp_path)
    assert (defaults.log_format, defaults.metrics_token) == ("text", "")
    assert defaults.metrics_multiproc_dir is None


# --------------------------------------------------------------------------------------------
# Celery: task signals and events
# --------------------------------------------------------------------------------------------


@pytest.fixture
def eager_celery(settings):
    from gridwatch.workers.celery_app import create_celery_app

    app = create_celery_app(settings, set_as_current=False)
    assert app.conf.task_always_eager

    @app.task(name="test.observability.ok")
    def ok(x: int) -> dict:
        return {"x": x + 1, "context": logs.current_context()}

    @app.task(name="test.observability.bad")
    def bad() -> None:
        raise ValueError("broken on purpose")

    return app, ok, bad


def test_task_signals_count_states_durations_and_failures(eager_celery):
    app, ok, bad = eager_celery
    registry = observability._PROCESS_REGISTRY

    def sample(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    ok_name, bad_name = "test.observability.ok", "test.observability.bad"
    before_ok = sample("gridwatch_celery_tasks_total", task=ok_name, state="SUCCESS")
    before_count = sample("gridwatch_celery_task_duration_seconds_count", task=ok_name)
    result = ok.delay(1)
    assert result.get()["x"] == 2
    # The task's log records carry its id while it runs, and only then.
    assert result.get()["context"]["task_id"] == result.id
    assert logs.current_context()["task_id"] is None
    assert sample("gridwatch_celery_tasks_total", task=ok_name, state="SUCCESS") == before_ok + 1
    assert sample("gridwatch_celery_task_duration_seconds_count", task=ok_name) == before_count + 1

    # In a worker the exception does not propagate: the task ends FAILURE and task_failure
    # names the exception.
    app.conf.task_eager_propagates = False
    failed_before = sample(
        "gridwatch_celery_task_failures_total", task=bad_name, exception="ValueError"
    )
    state_before = sample("gridwatch_celery_tasks_total", task=bad_name, state="FAILURE")
    outcome = bad.delay()
    assert outcome.state == "FAILURE"
    assert (
        sample("gridwatch_celery_task_failures_total", task=bad_name, exception="ValueError")
        == failed_before + 1
    )
    assert sample("gridwatch_celery_tasks_total", task=bad_name, state="FAILURE") == (
        state_before + 1
    )
    # Propagated to the caller (an eager task in the web app): still counted as a failure.
    app.conf.task_eager_propagates = True
    with pytest.raises(ValueError):
        bad.delay()
    assert sample("gridwatch_celery_tasks_total", task=bad_name, state="FAILURE") == (
        state_before + 2
    )


def test_task_events_are_on_for_flower(settings):
    from gridwatch.workers.celery_app import create_celery_app

    app = create_celery_app(replace(settings, redis_url="redis://127.0.0.1:6379/13"), False)
    assert app.conf.worker_send_task_events is True
    assert app.conf.task_send_sent_event is True


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------


def test_json_lines_carry_the_bound_context(restore_logging):
    stream = io.StringIO()
    logs.configure_logging("json", stream=stream)
    logs.configure_logging("json", stream=stream)  # a second call replaces, never doubles
    log = logging.getLogger("gridwatch.test")
    with logs.bound(request_id="r-1", user="town_a"):
        log.info("导入 %s 行", 3)
        try:
            raise KeyError("boom")
        except KeyError:
            log.exception("failed")
    log.warning("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    first, failed, outside = lines
    assert set(first) == {"time", "level", "logger", "message", "request_id", "task_id", "user"}
    assert first["message"] == "导入 3 行"
    assert (first["level"], first["logger"]) == ("INFO", "gridwatch.test")
    assert (first["request_id"], first["user"], first["task_id"]) == ("r-1", "town_a", None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert "KeyError: 'boom'" in failed["exception"]
    assert outside["request_id"] is None and outside["user"] is None
    assert "导入" in stream.getvalue()  # written as text, not \u escapes


def test_text_lines_carry_the_context_too(restore_logging):
    stream = io.StringIO()
    logs.configure_logging("text", stream=stream)
    with logs.bound(task_id="t-9"):
        logging.getLogger("gridwatch.test").warning("slow")
    assert "task=t-9" in stream.getvalue() and "slow" in stream.getvalue()


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("abc-123", True),
        ("5f0c6a1e-8d7b-4c2a-9b1f-0e3d2c1b0a99", True),
        ("x" * 129, False),
        ("two words", False),
        ("evil\u2028line", False),
        ("", False),
    ],
)
def test_request_ids_from_clients_are_kept_only_when_harmless(header, kept):
    result = logs.request_id_from(header)
    if kept:
        assert result == header
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", result)


def test_web_requests_log_json_with_request_id_and_user(web_settings, capsys, restore_logging):
    app = create_app({"GRIDWATCH_SETTINGS": replace(web_settings, log_format="json")})
    client = app.test_client()
    try:
        capsys.readouterr()
        answered = client.get("/auth/login", headers={"X-Request-ID": "req-0042"})
        assert answered.headers["X-Request-ID"] == "req-0042"
        generated = client.get("/auth/login").headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        assert login(client, "town_a").status_code in (302, 303)
        client.get("/", headers={"X-Request-ID": "req-0043"})
    finally:
        app.extensions["gridwatch"].engine.dispose()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    access = {
        line["request_id"]: line for line in lines if line["logger"] == "gridwatch.web.access"
    }
    assert access["req-0042"]["message"].startswith("GET /auth/login 200 ")
    assert access["req-0042"]["user"] is None
    assert generated in access
    assert access["req-0043"]["user"] == "town_a"
    assert access["req-0043"]["message"].startswith("GET / ")
    assert all(line["task_id"] is None for line in lines)


# --------------------------------------------------------------------------------------------
# Real processes: gunicorn with two workers in multiprocess mode
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read().decode()


def test_gunicorn_workers_add_up_in_one_scrape(web_settings, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "GRIDWATCH_DATABASE_URL": web_settings.database_url,
        "GRIDWATCH_VAR_DIR": str(web_settings.var_dir),
        "GRIDWATCH_SECRET_KEY": web_settings.secret_key,
        "GRIDWATCH_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    env.pop("GRIDWATCH_REDIS_URL", None)
    stderr_path = tmp_path / "gunicorn.err"
    with open(stderr_path, "w") as stderr:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                "2",
                "--bind",
                f"127.0.0.1:{port}",
                "gridwatch.web:create_app()",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(base + "/auth/login")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start: {stderr_path.read_text()[-2000:]}")
                time.sleep(0.3)

        def logins() -> float:
            text = _get(base + "/metrics")[2]
            labels = {"endpoint": "auth.login", "method": "GET", "status": "200"}
            return value(parse(text), "gridwatch_http_requests_total", **labels)

        # The warm-up may have been answered more than once (a retry after a slow start).
        before = logins()
        requests = 60

        def fetch(n: int) -> None:
            status, headers, _ = _get(base + "/auth/login", {"X-Request-ID": f"mp-{n}"})
            assert status == 200 and headers["X-Request-ID"] == f"mp-{n}"

        # Eight clients at once keep both (single-threaded) workers busy.
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fetch, range(requests)))
        # Both worker processes wrote their own counts (one file per process id) …
        pids = {p.stem.rsplit("_", 1)[-1] for p in prom_dir.glob("counter_*.db")}
        assert len(pids) == 2, pids
        # … and any worker's scrape adds them all up.
        for _ in range(4):
            assert logins() == before + requests
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    records = []
    for line in stderr_path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    access = [r for r in records if r["logger"] == "gridwatch.web.access"]
    assert {r["request_id"] for r in access} >= {f"mp-{n}" for n in range(requests)}


# --------------------------------------------------------------------------------------------
# Real processes: a Celery worker (task metrics through the multiprocess directory, task
# events for Flower, JSON logs with the task id)
# --------------------------------------------------------------------------------------------


def test_worker_counts_tasks_sends_events_and_logs_json(redis_url, settings, tmp_path):
    import threading

    from gridwatch.storage import upgrade_database
    from gridwatch.workers.celery_app import app_for

    url = _redis_db(redis_url)
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    config = replace(settings, redis_url=url, metrics_multiproc_dir=prom_dir)
    engine = create_db_engine(config.database_url)
    upgrade_database(engine)
    app = app_for(config)
    if app.control.ping(timeout=1.0):
        app.control.shutdown()  # a worker left over from an interrupted run of this test
        time.sleep(2)
    env = {
        **os.environ,
        "GRIDWATCH_DATABASE_URL": config.database_url,
        "GRIDWATCH_REDIS_URL": url,
        "GRIDWATCH_VAR_DIR": str(config.var_dir),
        "GRIDWATCH_SECRET_KEY": config.secret_key,
        "GRIDWATCH_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    log_path = tmp_path / "worker.log"
    events: list[dict] = []
    with open(log_path, "w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gridwatch.cli", "worker", "-c", "1", "--loglevel", "INFO"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker did not start: {log_path.read_text()[-2000:]}")

        receivers: list = []

        def capture() -> None:
            with app.connection() as connection:
                receiver = app.events.Receiver(connection, handlers={"*": events.append})
                receivers.append(receiver)
                try:
                    receiver.capture(limit=None, timeout=30, wakeup=True)
                except TimeoutError:
                    pass

        listener = threading.Thread(target=capture, daemon=True)
        listener.start()
        time.sleep(1.0)  # let the receiver bind its queue before the tasks are sent
        ok = app.send_task("aggregate.refresh")
        assert ok.get(timeout=30) is None
        bad = app.send_task("aggregate.refresh", args=[1])  # an argument too many
        with pytest.raises(TypeError):
            bad.get(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            seen = {(e.get("type"), e.get("uuid")) for e in events}
            if {("task-succeeded", ok.id), ("task-failed", bad.id)} <= seen:
                break
            time.sleep(0.2)
        for receiver in receivers:
            receiver.should_stop = True
        listener.join(timeout=10)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)

    # Events, as Flower reads them: sent by the caller, then received/started/finished.
    types = {(e.get("type"), e.get("uuid")) for e in events}
    for kind in ("task-sent", "task-received", "task-started", "task-succeeded"):
        assert (kind, ok.id) in types, (kind, sorted(t for t, _ in types))
    assert ("task-failed", bad.id) in types

    # The worker's pool process counted both tasks in the shared directory.
    body, _ = observability.render_metrics(config, engine)
    engine.dispose()
    samples = parse(body.decode())
    task = "aggregate.refresh"
    assert value(samples, "gridwatch_celery_tasks_total", task=task, state="SUCCESS") == 1
    assert value(samples, "gridwatch_celery_tasks_total", task=task, state="FAILURE") == 1
    failures = {"task": task, "exception": "TypeError"}
    assert value(samples, "gridwatch_celery_task_failures_total", **failures) == 1
    assert value(samples, "gridwatch_celery_task_duration_seconds_count", task=task) == 2
    assert value(samples, "gridwatch_celery_queue_depth", queue="gridwatch.quick") == 0

    # JSON log lines, the task's own ones tagged with its id.
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line[:1] == "{"]
    assert records, log_path.read_text()[-2000:]
    tagged = [r for r in records if r["task_id"] == bad.id]
    assert any("TypeError" in (r["message"] + r.get("exception", "")) for r in tagged), tagged
