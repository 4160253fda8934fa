"""Shared fixtures (flaskr style): settings, one throwaway database per test, service checks.

Databases
---------
``db_url`` is parametrised over SQLite and PostgreSQL, so every test that asks for it (or for
``engine`` / ``db_settings``) runs on both. On PostgreSQL each test gets its own database,
cloned from a per-session template that already has the PostGIS extension: cloning and
migrating costs about 0.2 s per test, against about 0.6 s when ``CREATE EXTENSION postgis``
runs every time (measured on 2 cores). The clone is dropped ``WITH (FORCE)`` afterwards.

Services
--------
PostgreSQL + PostGIS and Redis are expected on 127.0.0.1. When one cannot be reached the test
is skipped on a workstation but *fails* when ``CI=true``: CI must never pass by skipping.
``GRIDWATCH_TEST_PG_URL`` / ``GRIDWATCH_TEST_REDIS_URL`` point the tests at other servers.
A test that stops or restarts Redis starts a ``redis-server`` of its own instead
(``private_redis_server``), so the shared server is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import geopandas as gpd
import pytest
from shapely.geometry import box
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gridwatch.config import Settings, load_settings
from gridwatch.storage import create_db_engine, upgrade_database

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
TEST_SECRET_KEY = "test-secret-key-0123456789"


def running_in_ci() -> bool:
    """Return whether we run under CI, where a missing service is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def service_unavailable(service: str, reason: str) -> None:
    """Skip the test, or fail it under ``CI=true``, because ``service`` cannot be used."""
    message = f"{service} is not available: {reason}"
    if running_in_ci():
        pytest.fail(f"{message} (CI=true: services are required; see .ci/run)", pytrace=False)
    pytest.skip(message)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def make_settings(tmp_path: Path, **overrides: str) -> Settings:
    """Build settings for a test the way the app does: through :func:`load_settings`."""
    var_dir = tmp_path / "var"
    env = {
        "GRIDWATCH_VAR_DIR": str(var_dir),
        "GRIDWATCH_DATABASE_URL": f"sqlite:///{var_dir / 'gridwatch.db'}",
        "GRIDWATCH_SECRET_KEY": TEST_SECRET_KEY,
    }
    env.update(overrides)
    return load_settings(env)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with ``var/`` and a SQLite file database under the test's temporary directory."""
    return make_settings(tmp_path)


# --------------------------------------------------------------------------------------------
# PostgreSQL + PostGIS
# --------------------------------------------------------------------------------------------


def _pg_server_url() -> str:
    return os.environ.get("GRIDWATCH_TEST_PG_URL") or DEFAULT_PG_URL


class _PostgresServer:
    """The test server: an admin engine plus a PostGIS-enabled template database."""

    def __init__(self, server_url: str) -> None:
        self.server_url = make_url(server_url)
        self.admin = create_engine(self.server_url, isolation_level="AUTOCOMMIT")
        self.template: str | None = None
        self.error: str | None = None

    def start(self) -> None:
        try:
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
                has_postgis = conn.execute(
                    text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
                ).first()
        except SQLAlchemyError as exc:
            self.error = f"cannot connect to {self._shown()}: {_first_line(exc)}"
            return
        if not has_postgis:
            self.error = f"the PostGIS extension is not installed on {self._shown()}"
            return
        name = f"gw_tmpl_{uuid.uuid4().hex[:12]}"
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self.template = name
            engine = create_engine(self.url_for(name), isolation_level="AUTOCOMMIT")
            try:
                with engine.connect() as conn:
                    conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
            finally:
                engine.dispose()
        except SQLAlchemyError as exc:
            self.error = f"cannot prepare a PostGIS database on {self._shown()}: {exc}"

    def url_for(self, database: str) -> str:
        return self.server_url.set(database=database).render_as_string(hide_password=False)

    def create_database(self) -> str:
        name = f"gw_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def stop(self) -> None:
        try:
            if self.template:
                self.drop_database(self.template)
        finally:
            self.admin.dispose()

    def _shown(self) -> str:
        return self.server_url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[_PostgresServer]:
    """The PostgreSQL server, checked once per session (skip or fail via the test)."""
    server = _PostgresServer(_pg_server_url())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: _PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty PostGIS database, dropped after the test."""
    if postgres_server.error:
        service_unavailable("PostgreSQL + PostGIS", postgres_server.error)
    name = postgres_server.create_database()
    try:
        yield postgres_server.url_for(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database of each kind (SQLite file, PostgreSQL + PostGIS)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'test.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` with the schema migrated to head."""
    eng = create_db_engine(db_url)
    try:
        upgrade_database(eng)
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def db_settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at ``db_url`` (ask for ``engine`` too when the schema is needed)."""
    return make_settings(tmp_path, GRIDWATCH_DATABASE_URL=db_url)


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _redis_ping(url: str, timeout: float = 2.0) -> str | None:
    """PING Redis; return ``None`` when it answers, else the reason it does not."""
    try:
        import redis  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError as exc:
            return f"cannot connect to {host}:{port}: {exc}"
        return None if reply.startswith(b"+PONG") else f"unexpected reply {reply!r}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any client error means "not usable"
        return f"{url}: {exc}"
    return None


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a Redis server that answers PING (skip, or fail under CI, otherwise)."""
    url = os.environ.get("GRIDWATCH_TEST_REDIS_URL") or DEFAULT_REDIS_URL
    problem = _redis_ping(url)
    if problem:
        service_unavailable("Redis", problem)
    return url


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """Path of ``redis-server`` (skip, or fail under CI, when it is not installed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server", "it is not installed")
    assert binary is not None  # service_unavailable() does not return
    return binary


class PrivateRedis:
    """A ``redis-server`` of one test's own, on a free port and a data directory of its own.

    Tests stop and start it again (same port, same data directory) to play a restart of
    Redis; only these servers are ever stopped, never the machine's shared one.
    """

    def __init__(self, binary: str, data_dir: Path, extra_args: tuple[str, ...]) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL of database 0 on this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and return once it answers PING (fail the test otherwise)."""
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
            + ["--dir", str(self.data_dir), "--save", "", *self.extra_args],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"private redis-server exited with {self.proc.returncode}")
            if _redis_ping(self.url, timeout=0.5) is None:
                return
            time.sleep(0.1)
        self.kill()
        pytest.fail(f"private redis-server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGTERM, as a restart does: Redis writes its append-only file (if any) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash does: whatever is only in memory is lost."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[Callable[..., PrivateRedis]]:
    """Factory: ``private_redis_server(*extra_args)`` starts a :class:`PrivateRedis`.

    ``extra_args`` go to ``redis-server`` after the defaults (port, loopback, a directory
    under ``tmp_path``, no RDB snapshots). Every server started is stopped after the test.
    """
    binary = redis_server_binary()
    servers: list[PrivateRedis] = []

    def start(*extra_args: str) -> PrivateRedis:
        data_dir = tmp_path / f"redis-{len(servers)}"
        data_dir.mkdir()
        server = PrivateRedis(binary, data_dir, extra_args)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# --------------------------------------------------------------------------------------------
# A tiny county for aggregation tests
# --------------------------------------------------------------------------------------------


# A 2 × 2 block of grids in one village in one township (WGS84), 0.01° squares.
X0, Y0, D = 113.0, 28.0, 0.01


def grid_frame() -> gpd.GeoDataFrame:
    """Return the tiny county: county → township → village → four 0.01° grids."""
    rows = [
        ("430000000000", "测试县", "county", None, 4000, box(X0, Y0, X0 + 2 * D, Y0 + 2 * D)),
        (
            "430000001000",
            "城关镇",
            "township",
            "430000000000",
            4000,
            box(X0, Y0, X0 + 2 * D, Y0 + 2 * D),
        ),
        (
            "430000001001",
            "东村",
            "village",
            "430000001000",
            4000,
            box(X0, Y0, X0 + 2 * D, Y0 + 2 * D),
        ),
    ]
    n = 1
    for i in range(2):
        for j in range(2):
            cell = box(X0 + i * D, Y0 + j * D, X0 + (i + 1) * D, Y0 + (j + 1) * D)
            rows.append(
                (f"430000001001{n:03d}", f"东村第{n}网格", "grid", "430000001001", 1000, cell)
            )
            n += 1
    return gpd.GeoDataFrame(
        {
            "code": [r[0] for r in rows],
            "name": [r[1] for r in rows],
            "level": [r[2] for r in rows],
            "parent_code": [r[3] for r in rows],
            "population": [r[4] for r in rows],
        },
        geometry=[r[5] for r in rows],
        crs="EPSG:4326",
    )


@pytest.fixture
def loaded_county(engine: Engine, db_settings: Settings, tmp_path: Path):
    """Four 0.01° grids in one village/township/county, with three incidents in 2026Q3."""
    from gridwatch.ingest import import_file

    frame = grid_frame()
    grids = tmp_path / "county.geojson"
    frame.to_file(grids, driver="GeoJSON")
    import_file("grids", grids, db_settings, engine)
    incidents = tmp_path / "county.csv"
    incidents.write_text(
        "id,occurred_at,category,lon,lat,source,status,solved_at,victim_notified_at\n"
        "I1,2026-06-30T16:30:00Z,theft,113.005,28.005,call_110,solved,2026-07-02 10:00,\n"
        "I2,2026-07-05 21:00,burglary,113.005,28.005,patrol,accepted,,\n"
        "I3,2026-08-10 10:00,snatching,113.015,28.015,walk_in,solved,2026-08-11 10:00,"
        "2026-08-12 10:00\n",
        "utf-8",
    )
    import_file("incidents", incidents, db_settings, engine)
    return engine, db_settings


# --------------------------------------------------------------------------------------------
# The web app (flaskr style): app, client, runner on a throwaway copy of a small county
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def web_county_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web tests' county (tests/web_support.py), built and aggregated once per session.

    Each test gets its own copy (``app``), so nothing one test changes reaches another.
    """
    from web_support import build_web_county

    directory = tmp_path_factory.mktemp("web_county")
    settings = make_settings(directory)
    build_web_county(directory, settings)
    return directory / "var" / "gridwatch.db"


@pytest.fixture
def web_settings(tmp_path: Path, web_county_db: Path) -> Settings:
    """Settings on a private copy of the web county's SQLite database."""
    import shutil

    var_dir = tmp_path / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    for part in web_county_db.parent.glob(web_county_db.name + "*"):
        shutil.copy2(part, var_dir / part.name)
    return make_settings(tmp_path)


@pytest.fixture
def app(web_settings: Settings):
    """The web app on the test's own database (CSRF checks stay on)."""
    from gridwatch.web import create_app

    flask_app = create_app({"GRIDWATCH_SETTINGS": web_settings, "TESTING": True})
    yield flask_app
    flask_app.extensions["gridwatch"].engine.dispose()


@pytest.fixture
def client(app):
    """A test client of ``app``."""
    return app.test_client()


@pytest.fixture
def runner(web_settings: Settings):
    """Invoke the ``gridwatch`` command line on the test's database."""
    from click.testing import CliRunner

    from gridwatch.cli import main

    class _Runner:
        def __init__(self) -> None:
            self.cli = CliRunner()

        def invoke(self, args: list[str], input: str | None = None):
            return self.cli.invoke(main, args, input=input, obj={"settings": web_settings})

    return _Runner()
