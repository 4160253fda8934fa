"""deploy/: the files Docker, systemd and nginx read, checked where Docker cannot run.

The compose file is parsed with PyYAML and held against the entrypoint, the Dockerfile and
``gridwatch.config``; the entrypoint itself runs for real (its error sentences, its modes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gridwatch.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONFIG_SOURCE = ROOT / "platform" / "gridwatch" / "config.py"
ROLES = {"web", "worker", "beat", "migrate"}


class _RecordingEnviron(Mapping[str, str]):
    """An empty environment that remembers every name ``load_settings`` asks for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def names_read_by_config() -> set[str]:
    """Every environment variable gridwatch.config reads (asked for, or named in its source)."""
    environ = _RecordingEnviron()
    load_settings(environ)
    named = set(re.findall(r'"(GRIDWATCH_[A-Z0-9_]+)"', CONFIG_SOURCE.read_text("utf-8")))
    return environ.asked | named


def names_in_env_example() -> set[str]:
    text = (DEPLOY / ".env.example").read_text("utf-8")
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text("utf-8"))


def entrypoint_roles() -> set[str]:
    """The roles the entrypoint's top-level ``case`` switches on."""
    text = (DEPLOY / "entrypoint.sh").read_text("utf-8")
    return set(re.findall(r"^    ([a-z]+)\)$", text, flags=re.MULTILINE))


def gridwatch_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if str(service.get("image", "")).startswith("gridwatch:")
    }


# -- .env.example --------------------------------------------------------------------------


def test_env_example_documents_exactly_the_settings_config_reads():
    read = names_read_by_config()
    gridwatch_read = {n for n in read if n.startswith("GRIDWATCH_")}
    documented = {n for n in names_in_env_example() if n.startswith("GRIDWATCH_")}
    assert len(gridwatch_read) >= 28  # the recorder really saw load_settings' reads
    assert documented - gridwatch_read == set(), "documented but never read"
    assert gridwatch_read - documented == set(), "read by config.py but not in .env.example"
    # other variables config.py reads (PROMETHEUS_MULTIPROC_DIR …) are documented too
    assert read - gridwatch_read <= names_in_env_example()


def test_env_example_defaults_are_accepted_by_config():
    """Every commented default in .env.example is a value load_settings accepts."""
    text = (DEPLOY / ".env.example").read_text("utf-8")
    values = dict(re.findall(r"^#\s*(GRIDWATCH_[A-Z0-9_]+)=(.+)$", text, flags=re.MULTILINE))
    values.pop("GRIDWATCH_DATABASE_URL")  # an example URL with a placeholder password
    assert "GRIDWATCH_TIMEZONE" in values and len(values) >= 15
    settings = load_settings(values)
    assert settings.timezone.key == values["GRIDWATCH_TIMEZONE"]
    assert settings.route_speeds == {"foot": 4.5, "ebike": 15.0, "car": 30.0}


# -- docker-compose.yml --------------------------------------------------------------------


def test_compose_has_the_whole_topology(compose):
    services = compose["services"]
    assert {"db", "redis", "migrate", "web", "worker", "beat", "nginx"} <= set(services)
    assert services["db"]["image"].startswith("postgis/postgis:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["nginx"]["image"].startswith("nginx:")
    gridwatch = gridwatch_services(compose)
    assert {"migrate", "web", "worker", "worker-quick", "beat"} == set(gridwatch)
    for name, service in gridwatch.items():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


def test_compose_commands_are_entrypoint_roles(compose):
    roles = entrypoint_roles()
    assert ROLES | {"healthcheck"} <= roles
    used = {name: service["command"] for name, service in gridwatch_services(compose).items()}
    assert {command[0] for command in used.values()} == ROLES
    assert used["migrate"] == ["migrate"] and used["beat"] == ["beat"]
    assert used["web"] == ["web"] and used["worker"] == ["worker"]


def test_compose_services_wait_for_what_they_need(compose):
    services = compose["services"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "worker-quick", "beat"):
        depends = services[name]["depends_on"]
        assert depends["db"] == {"condition": "service_healthy"}, name
        assert depends["redis"] == {"condition": "service_healthy"}, name
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    assert services["nginx"]["depends_on"] == {"web": {"condition": "service_healthy"}}
    assert services["beat"]["deploy"]["replicas"] == 1


def test_compose_healthchecks(compose):
    services = compose["services"]
    checks = {name: s["healthcheck"]["test"] for name, s in services.items() if "healthcheck" in s}
    assert {"db", "redis", "web", "worker", "worker-quick", "nginx"} <= set(checks)
    assert "pg_isready" in " ".join(checks["db"])
    assert checks["redis"][-2:] == ["redis-cli", "ping"]
    assert checks["web"] == ["CMD", "gridwatch-entrypoint", "healthcheck", "web"]
    assert checks["worker"] == ["CMD", "gridwatch-entrypoint", "healthcheck", "worker"]
    # the worker check is `celery inspect ping` of this very worker
    entrypoint = (DEPLOY / "entrypoint.sh").read_text("utf-8")
    assert re.search(r"inspect ping \\\n\s+--destination \"\$\(worker_name\)\"", entrypoint)
    # the web check asks /healthz (liveness), not /readyz
    assert "/healthz" in entrypoint
    # nginx's check asks a location its configuration answers
    assert "/nginx-health" in " ".join(checks["nginx"])
    assert "location = /nginx-health" in (DEPLOY / "nginx" / "gridwatch.conf").read_text()


def test_compose_queues_and_redis_persistence(compose):
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert services["worker"]["environment"]["WORKER_QUEUES"] == (
        "gridwatch.quick,gridwatch.heavy"
    )
    assert services["worker-quick"]["environment"]["WORKER_QUEUES"] == "gridwatch.quick"
    from gridwatch.workers.celery_app import HEAVY_QUEUE, QUICK_QUEUE

    assert {QUICK_QUEUE, HEAVY_QUEUE} == set(
        services["worker"]["environment"]["WORKER_QUEUES"].split(",")
    )


def test_compose_volumes_and_mounts_exist(compose):
    declared = set(compose["volumes"])
    used_named = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                used_named.add(source)
    assert used_named == declared == {"db-data", "redis-data", "gridwatch-var"}
    mounts = compose["services"]["nginx"]["volumes"]
    # the site includes the upstream file the compose file mounts for it
    site = (DEPLOY / "nginx" / "gridwatch.conf").read_text()
    include = re.search(r"^include (\S+);", site, flags=re.MULTILINE)
    assert include and any(m.split(":")[1] == include.group(1) for m in mounts)


def test_compose_gridwatch_settings_exist_in_config(compose):
    text = (DEPLOY / "docker-compose.yml").read_text("utf-8")
    used = set(re.findall(r"GRIDWATCH_[A-Z0-9_]+", text))
    assert {"GRIDWATCH_DATABASE_URL", "GRIDWATCH_REDIS_URL", "GRIDWATCH_VAR_DIR"} <= used
    assert used <= names_read_by_config()
    environment = compose["services"]["web"]["environment"]
    assert environment["GRIDWATCH_DATABASE_URL"].startswith("postgresql://gridwatch:")
    assert environment["GRIDWATCH_REDIS_URL"] == "redis://redis:6379/0"
    # values compose hands to GridWatch are ones config accepts
    settings = load_settings(
        {k: v for k, v in environment.items() if k.startswith("GRIDWATCH_")}
        | {"GRIDWATCH_VAR_DIR": "var"}
    )
    assert settings.proxy_hops == 1 and settings.task_mode == "redis"


def test_every_setting_named_anywhere_in_deploy_exists_in_config():
    # the test suite's own server settings (README, "Configuration"), which topology.py honours
    known = names_read_by_config() | {"GRIDWATCH_TEST_PG_URL", "GRIDWATCH_TEST_REDIS_URL"}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix not in (".whl", ".dump", ".gz", ".pyc"):
            named = set(re.findall(r"GRIDWATCH_[A-Z0-9_]*[A-Z0-9]", path.read_text("utf-8")))
            assert named <= known, f"{path.relative_to(DEPLOY)}: {sorted(named - known)}"


def test_dockerfile_is_one_slim_image_with_the_entrypoint():
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "--no-index --find-links=/wheelhouse gridwatch" in text
    assert "COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/gridwatch-entrypoint" in text
    assert 'ENTRYPOINT ["gridwatch-entrypoint"]' in text
    assert re.search(r"^USER gridwatch$", text, flags=re.MULTILINE)
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text("utf-8")
    for path in re.findall(r"^COPY (?!--)(\S+)", text, flags=re.MULTILINE):
        assert f"!{path}" in ignore or path.rstrip("/") in ("pyproject.toml",), path


# -- systemd and nginx ---------------------------------------------------------------------


def _unit(name: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text("utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_units_start_the_entrypoint_roles():
    web = _unit("gridwatch-web.service")
    assert web["ExecStartPre"] == ["/opt/gridwatch/deploy/entrypoint.sh migrate"]
    assert web["ExecStart"] == ["/opt/gridwatch/deploy/entrypoint.sh web"]
    assert web["Type"] == ["notify"]
    worker = _unit("gridwatch-worker@.service")
    assert worker["ExecStart"] == ["/opt/gridwatch/deploy/entrypoint.sh worker"]
    assert "WORKER_NAME=%i@%H" in worker["Environment"]
    assert "-/etc/gridwatch/worker-%i.env" in worker["EnvironmentFile"]
    beat = _unit("gridwatch-beat.service")
    assert beat["ExecStart"] == ["/opt/gridwatch/deploy/entrypoint.sh beat"]
    for unit in (web, worker, beat):
        assert unit["User"] == ["gridwatch"]
        assert "/etc/gridwatch/gridwatch.env" in unit["EnvironmentFile"]
        assert unit["WantedBy"] == ["gridwatch.target"]
    backup = _unit("gridwatch-backup.service")
    assert backup["ExecStart"][0].startswith("/opt/gridwatch/deploy/backup.sh ")
    assert _unit("gridwatch-backup.timer")["OnCalendar"] == ["*-*-* 01:30:00"]
    # the web unit listens where the nginx upstream for installs without Docker points
    assert "WEB_BIND=127.0.0.1:8000" in web["Environment"]
    assert "server 127.0.0.1:8000;" in (DEPLOY / "nginx" / "upstream.conf").read_text()


def test_nginx_site_terminates_tls_and_forwards_what_proxy_hops_expects():
    site = (DEPLOY / "nginx" / "gridwatch.conf").read_text("utf-8")
    assert "listen 443 ssl" in site
    assert "ssl_certificate /etc/nginx/certs/gridwatch.crt;" in site
    assert "return 301 https://$host$request_uri;" in site
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in site
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in site
    assert "client_max_body_size 512m;" in site  # the app's upload limit
    assert "server web:8000;" in (DEPLOY / "nginx" / "upstream-docker.conf").read_text()


# -- the entrypoint, for real --------------------------------------------------------------


def _entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    clean["GRIDWATCH_VAR_DIR"] = str(tmp_path / "var")
    clean.update(env)
    return subprocess.run(
        ["bash", str(DEPLOY / "entrypoint.sh"), *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_entrypoint_migrate_creates_the_schema(tmp_path):
    result = _entrypoint(tmp_path, "migrate")
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    assert (tmp_path / "var" / "gridwatch.db").is_file()


@pytest.mark.parametrize(
    ("args", "env", "sentence"),
    [
        (["worker"], {}, "GRIDWATCH_REDIS_URL is not set"),
        (["beat"], {}, "GRIDWATCH_REDIS_URL is not set"),
        (["web"], {}, "GRIDWATCH_SECRET_KEY is not set"),
        (["web"], {"GRIDWATCH_TIMEZONE": "Mars/Olympus"}, "GRIDWATCH_TIMEZONE 'Mars/Olympus'"),
        (["worker"], {"GRIDWATCH_REDIS_URL": "http://x"}, "GRIDWATCH_REDIS_URL must start"),
        (["healthcheck"], {}, "healthcheck needs a role"),
    ],
)
def test_entrypoint_refuses_with_one_sentence(tmp_path, args, env, sentence):
    result = _entrypoint(tmp_path, *args, **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gridwatch: ") and sentence in lines[0]
    assert "Traceback" not in result.stderr


def test_entrypoint_passes_other_commands_through(tmp_path):
    result = _entrypoint(tmp_path, "gridwatch", "--version")
    assert result.returncode == 0 and "gridwatch" in result.stdout


def test_entrypoint_web_healthcheck_fails_when_nothing_listens(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = _entrypoint(tmp_path, "healthcheck", "web", WEB_BIND=f"0.0.0.0:{port}")
    assert result.returncode != 0
    assert f"127.0.0.1:{port}/healthz does not answer" in result.stderr
    assert "Traceback" not in result.stderr
