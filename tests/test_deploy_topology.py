"""The production topology as real processes on loopback (``deploy/topology.py``).

PostgreSQL + PostGIS (a fresh database), a Redis server of its own, ``migrate``, gunicorn,
two Celery workers and beat, each started through ``deploy/entrypoint.sh``: ``/readyz``
answers through gunicorn, ``celery inspect ping`` hears both workers, an import through the
API starts a run that the workers complete, and afterwards no process is left.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from conftest import redis_server_binary, service_unavailable
from shapely.geometry import box
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INCIDENTS = 240


def _topology_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "gridwatch_deploy_topology", DEPLOY / "topology.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def topology_module() -> Any:
    return _topology_module()


@pytest.fixture
def services(postgres_server):
    """The PostgreSQL server's admin URL; skip (fail under CI) when a service is missing."""
    if postgres_server.error:
        service_unavailable("PostgreSQL + PostGIS", postgres_server.error)
    redis_server_binary()  # the topology starts a redis-server of its own
    return postgres_server.server_url.render_as_string(hide_password=False)


# -- HTTP helpers -----------------------------------------------------------------------------


def _request(
    url: str, token: str | None = None, data: bytes | None = None, headers: dict | None = None
):
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    status, _, body = _request(url, token)
    return status, json.loads(body)


def _upload(url: str, token: str, path: Path) -> tuple[int, Any]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    status, _, answer = _request(
        url, token, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    return status, json.loads(answer)


# -- data -------------------------------------------------------------------------------------


def _county_files(directory: Path) -> tuple[Path, Path]:
    """Two townships of four grids each, and incidents spread over both."""
    rows: list[dict[str, Any]] = [
        {
            "code": "430000000000",
            "name": "部署县",
            "level": "county",
            "parent_code": None,
            "population": 8000,
            "geometry": box(113.0, 28.0, 113.04, 28.02),
        }
    ]
    for t in range(2):
        township = f"43000000{t + 1}000"
        x0 = 113.0 + 0.02 * t
        rows.append(
            {
                "code": township,
                "name": f"第{t + 1}镇",
                "level": "township",
                "parent_code": "430000000000",
                "population": 4000,
                "geometry": box(x0, 28.0, x0 + 0.02, 28.02),
            }
        )
        for i in range(2):
            for j in range(2):
                rows.append(
                    {
                        "code": f"{township}{i}{j:02d}",
                        "name": f"第{t + 1}镇网格{i}{j}",
                        "level": "grid",
                        "parent_code": township,
                        "population": 1000,
                        "geometry": box(
                            x0 + 0.01 * i, 28 + 0.01 * j, x0 + 0.01 * (i + 1), 28.01 + 0.01 * j
                        ),
                    }
                )
    grids = directory / "areas.geojson"
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_file(grids, driver="GeoJSON")
    lines = ["id,occurred_at,category,lon,lat,source"]
    for n in range(INCIDENTS):
        lines.append(
            f"T{n},2026-{1 + n % 10:02d}-{1 + n % 27:02d} {n % 24:02d}:20,"
            f"{['theft', 'burglary', 'fraud', 'gambling'][n % 4]},"
            f"{113.0005 + (n * 0.00137) % 0.039:.6f},{28.0005 + (n * 0.00291) % 0.019:.6f},"
            f"{['call_110', 'patrol', 'walk_in'][n % 3]}"
        )
    incidents = directory / "incidents.csv"
    incidents.write_text("\n".join(lines) + "\n", "utf-8")
    return grids, incidents


# -- the test ---------------------------------------------------------------------------------


def test_topology_serves_imports_and_runs_on_two_workers(services, topology_module, tmp_path):
    topology = topology_module.Topology(pg_admin_url=services, workers=2)
    with topology:
        # readiness through gunicorn: database at head, Redis answering
        status, headers, body = _request(f"{topology.web_url}/readyz")
        assert status == 200, body
        assert headers["Server"].startswith("gunicorn")
        assert json.loads(body) == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}
        assert _request(f"{topology.web_url}/healthz")[0] == 200

        # `celery inspect ping` (the workers' health check) hears both workers
        ping = topology.run(
            "celery", "--app", "gridwatch.workers.celery_app", "inspect", "ping", "--timeout", "2"
        )
        assert ping.returncode == 0, ping.stderr
        assert ping.stdout.count("pong") == 2
        assert all(f"{name}: OK" in ping.stdout for name in topology.worker_names)
        # the container health check pings its own worker by name, and only that one
        healthy = subprocess.run(
            ["bash", str(DEPLOY / "entrypoint.sh"), "healthcheck", "worker"],
            env=topology.env(WORKER_NAME=topology.worker_names[1]),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert healthy.returncode == 0, healthy.stderr
        assert f"{topology.worker_names[1]}: OK" in healthy.stdout
        assert topology.worker_names[0] not in healthy.stdout
        unknown = topology.run("healthcheck", "worker")  # no worker is named worker@host
        assert unknown.returncode != 0

        # an operator's commands against the same settings
        added = topology.run(
            "gridwatch",
            "users",
            "add",
            "ops",
            "--role",
            "admin",
            "--password-stdin",
            input="a long enough password 1\n",
        )
        assert added.returncode == 0, added.stderr
        issued = topology.run("gridwatch", "users", "token", "ops")
        assert issued.returncode == 0, issued.stderr
        token = issued.stdout.strip().splitlines()[-1]

        grids, incidents = _county_files(tmp_path)
        status, answer = _upload(f"{topology.web_url}/api/v1/imports/grids", token, grids)
        assert status == 200, answer
        assert answer["imported"] == 11 and answer["rejected"] == 0
        # the first full run, queued to the workers by the command line
        first = topology.run("gridwatch", "aggregate", "--wait", "--json", timeout=300)
        assert first.returncode == 0, first.stderr
        first_run = json.loads(first.stdout)
        assert first_run["status"] == "done" and first_run["mode"] == "worker"

        # an import through the API starts a run, and the workers complete it
        status, answer = _upload(f"{topology.web_url}/api/v1/imports/incidents", token, incidents)
        assert status == 200, answer
        assert answer["imported"] == INCIDENTS
        refresh = answer["refresh"]
        assert refresh["mode"] == "worker" and refresh["status"] in ("queued", "running")
        run_id = refresh["run_id"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status, runs = _get_json(f"{topology.web_url}/api/v1/runs", token)
            assert status == 200
            run = next(r for r in runs if r["run_id"] == run_id)
            if run["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
        assert run["status"] == "done", run
        assert run["townships_done"] == run["townships_total"] == 2

        status, metrics = _get_json(
            f"{topology.web_url}/api/v1/metrics?level=county&period=2026", token
        )
        assert status == 200
        assert [row["incidents_total"] for row in metrics] == [INCIDENTS]

        # both workers took part across the two runs (three tasks per run at least)
        stats = topology.run(
            "celery", "--app", "gridwatch.workers.celery_app", "inspect", "stats", "--json"
        )
        assert stats.returncode == 0, stats.stderr
        per_worker = json.loads(stats.stdout.strip().splitlines()[-1])
        assert sorted(per_worker) == sorted(topology.worker_names)
        done = {name: sum(s["total"].values()) for name, s in per_worker.items()}
        assert sum(done.values()) >= 6, done

        database = topology.database
        root = topology.root
        assert topology.leftover_processes()

    # stopped cleanly: every process ended by its own SIGTERM handling, nothing is left
    assert topology.leftover_processes() == []
    codes = topology.exit_codes()
    assert set(codes) == {"redis", "web", "worker1", "worker2", "beat"}
    assert all(code == 0 for code in codes.values()), codes
    assert not root.exists()
    admin = create_engine(services)
    try:
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :name"), {"name": database}
            ).scalar_one()
    finally:
        admin.dispose()
    assert left == 0


def test_topology_reports_a_missing_server_in_one_sentence(topology_module):
    port = topology_module.free_port()  # nothing listens there
    topology = topology_module.Topology(
        pg_admin_url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    )
    root = topology.root
    with pytest.raises(topology_module.TopologyError, match="cannot create a database on"):
        topology.start()
    assert topology.processes == {} and topology.leftover_processes() == []
    assert not root.exists()
