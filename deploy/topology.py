"""Run GridWatch's production topology as real processes on loopback, then stop it.

The same roles as ``deploy/docker-compose.yml``, each started through ``deploy/entrypoint.sh``
exactly as the image starts it: a fresh PostgreSQL + PostGIS database in a running server, a
Redis server of its own (append-only file, own directory, free port), ``migrate``, gunicorn
``web``, two Celery ``worker`` processes and one ``beat``. :class:`Topology` waits until
``/readyz`` answers 200 through gunicorn, ``celery inspect ping`` hears every worker and beat
has started; :meth:`Topology.stop` ends every process group, drops the database and removes
the directory. The tests use it (``tests/test_deploy_topology.py``); by hand::

    .venv/bin/python deploy/topology.py up        # prints the URL and settings; Ctrl+C stops

It needs ``redis-server`` on the PATH and a PostgreSQL server with PostGIS available
(``GRIDWATCH_TEST_PG_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

DEPLOY_DIR = Path(__file__).resolve().parent
ENTRYPOINT = DEPLOY_DIR / "entrypoint.sh"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Seconds a process group gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0


class TopologyError(RuntimeError):
    """The topology could not be started (the message says why in one sentence)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def group_members(pgid: int) -> list[int]:
    """Return the live (not zombie) processes of process group ``pgid``.

    Reads ``/proc`` so that zombies left for init to reap do not count as running.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # "pid (comm) state ppid pgrp …": comm may hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    exit_code: int | None = None


@dataclass
class Topology:
    """GridWatch's processes on loopback: database, Redis, migrate, web, workers, beat.

    Parameters
    ----------
    pg_admin_url : str
        URL of a database on the PostgreSQL server through which a fresh database is created
        (and dropped by :meth:`stop`); its role must be allowed to create databases.
    workers : int
        Celery worker processes, named ``worker1@host``, ``worker2@host`` …
    worker_concurrency, web_concurrency : int
        Task processes per worker, and gunicorn worker processes.
    settings : dict
        Extra ``GRIDWATCH_*`` settings for every process.
    bin_dir : pathlib.Path
        Directory holding ``gunicorn``, ``celery`` and ``gridwatch`` (default: the one of
        the running Python, i.e. the virtualenv).
    """

    pg_admin_url: str = field(
        default_factory=lambda: os.environ.get("GRIDWATCH_TEST_PG_URL") or DEFAULT_PG_URL
    )
    workers: int = 2
    worker_concurrency: int = 1
    web_concurrency: int = 2
    settings: dict[str, str] = field(default_factory=dict)
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)
    root: Path = field(init=False)
    database: str = field(init=False, default="")
    database_url: str = field(init=False, default="")
    redis_port: int = field(init=False, default=0)
    web_port: int = field(init=False, default=0)
    processes: dict[str, _Process] = field(init=False, default_factory=dict)
    process_groups: list[int] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gridwatch-topology-"))
        self._secret_key = secrets.token_hex(32)

    # -- what clients need ------------------------------------------------------------------

    @property
    def web_url(self) -> str:
        """Base URL of the gunicorn web processes."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def redis_url(self) -> str:
        """URL of this topology's Redis."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def worker_names(self) -> list[str]:
        """Celery node names of the workers."""
        host = socket.gethostname()
        return [f"worker{n}@{host}" for n in range(1, self.workers + 1)]

    def env(self, **extra: str) -> dict[str, str]:
        """Return the environment of every GridWatch process of this topology."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "GRIDWATCH_DATABASE_URL": self.database_url,
                "GRIDWATCH_REDIS_URL": self.redis_url,
                "GRIDWATCH_VAR_DIR": str(self.root / "var"),
                "GRIDWATCH_SECRET_KEY": self._secret_key,
                "LOG_LEVEL": "INFO",
            }
        )
        env.update(self.settings)
        env.update(extra)
        return env

    def run(
        self, *args: str, input: str | None = None, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command through the entrypoint with this topology's settings."""
        return subprocess.run(
            ["bash", str(ENTRYPOINT), *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- start -------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> Topology:
        """Start every process and wait until the topology is healthy.

        Raises
        ------
        TopologyError
            When a service is missing or a process does not come up; whatever had been
            started is stopped again.
        """
        try:
            self._create_database()
            self._start_redis(timeout)
            migrate = self.run("migrate")
            if migrate.returncode != 0:
                raise TopologyError(f"migrate failed: {_last_line(migrate.stderr)}")
            self.web_port = free_port()
            self._spawn(
                "web",
                ["web"],
                WEB_BIND=f"127.0.0.1:{self.web_port}",
                WEB_CONCURRENCY=str(self.web_concurrency),
            )
            for number, name in enumerate(self.worker_names, start=1):
                self._spawn(
                    f"worker{number}",
                    ["worker"],
                    WORKER_NAME=name,
                    WORKER_CONCURRENCY=str(self.worker_concurrency),
                    WORKER_QUEUES="gridwatch.quick,gridwatch.heavy",
                )
            self._spawn("beat", ["beat"])
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _admin_engine(self) -> Any:
        return create_engine(make_url(self.pg_admin_url), isolation_level="AUTOCOMMIT")

    def _create_database(self) -> None:
        admin_url = make_url(self.pg_admin_url)
        shown = admin_url.render_as_string(hide_password=True)
        name = f"gw_topology_{uuid.uuid4().hex[:12]}"
        engine = self._admin_engine()
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self.database = name
        except SQLAlchemyError as exc:
            raise TopologyError(
                f"cannot create a database on {shown}: {_first_line(exc)}"
            ) from exc
        finally:
            engine.dispose()
        self.database_url = admin_url.set(database=name).render_as_string(hide_password=False)
        engine = create_engine(make_url(self.database_url), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
        except SQLAlchemyError as exc:
            raise TopologyError(f"PostGIS is not usable on {shown}: {_first_line(exc)}") from exc
        finally:
            engine.dispose()

    def _start_redis(self, timeout: float) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise TopologyError("redis-server is not installed (Debian: apt-get install redis)")
        directory = self.root / "redis"
        directory.mkdir(parents=True)
        self.redis_port = free_port()
        self._spawn_command(
            "redis",
            [
                server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--dir",
                str(directory),
                # As in docker-compose.yml: queued tasks survive a restart of Redis.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
            ],
            env=dict(os.environ),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive("redis")
            if _redis_answers(self.redis_port):
                return
            time.sleep(0.1)
        raise TopologyError(f"Redis did not answer within {timeout:.0f} s")

    def _spawn(self, name: str, args: list[str], **extra_env: str) -> None:
        self._spawn_command(name, ["bash", str(ENTRYPOINT), *args], env=self.env(**extra_env))

    def _spawn_command(self, name: str, command: list[str], env: dict[str, str]) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        log = open(log_path, "ab")  # closed by stop()
        # Its own session, so stop() can end the process with every child it forked.
        popen = subprocess.Popen(
            command,
            env=env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = _Process(name, popen, log_path, log)
        self.process_groups.append(popen.pid)

    # -- health ------------------------------------------------------------------------------

    def _check_alive(self, name: str) -> None:
        process = self.processes[name]
        if process.popen.poll() is not None:
            raise TopologyError(
                f"{name} exited with status {process.popen.returncode}: "
                f"{_last_line(process.log_path.read_text(errors='replace'))}"
                f" (log: {process.log_path})"
            )

    def ready(self) -> bool:
        """Return whether ``/readyz`` answers 200 through gunicorn."""
        try:
            with urllib.request.urlopen(f"{self.web_url}/readyz", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def ping_workers(self, timeout: float = 2.0) -> list[str]:
        """Return the names of the workers that answer ``celery inspect ping``."""
        result = self.run(
            "celery",
            "--app",
            "gridwatch.workers.celery_app",
            "inspect",
            "ping",
            "--json",
            "--timeout",
            str(timeout),
            timeout=timeout + 60,
        )
        if result.returncode != 0:
            return []
        try:
            replies = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return []
        return sorted(replies)

    def beat_started(self) -> bool:
        """Return whether beat is running and has started its scheduler."""
        process = self.processes["beat"]
        return process.popen.poll() is None and "beat: Starting" in process.log_path.read_text(
            errors="replace"
        )

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Wait until web is ready, every worker answers and beat has started."""
        deadline = time.monotonic() + timeout
        waiting_for = "web"
        while time.monotonic() < deadline:
            for name in self.processes:
                self._check_alive(name)
            if not self.ready():
                waiting_for = "web /readyz"
            elif sorted(self.ping_workers()) != sorted(self.worker_names):
                waiting_for = "the workers' ping"
            elif not self.beat_started():
                waiting_for = "beat"
            else:
                return
            time.sleep(0.5)
        raise TopologyError(
            f"the topology was not healthy within {timeout:.0f} s (waiting for {waiting_for}; "
            f"logs in {self.root / 'logs'})"
        )

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process (beat, web, workers, Redis), drop the database, remove files.

        Each process group gets SIGTERM (workers finish their task: a warm shutdown) and is
        killed if it has not ended within :data:`STOP_TIMEOUT_S`.
        """
        order = ["beat", "web", *[n for n in self.processes if n.startswith("worker")], "redis"]
        for name in order:
            process = self.processes.get(name)
            if process is None or process.exit_code is not None:
                continue
            process.exit_code = _stop_group(process.popen)
            process.log.close()
        try:
            if self.database:
                engine = self._admin_engine()
                try:
                    with engine.connect() as conn:
                        conn.execute(
                            text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                        )
                    self.database = ""
                finally:
                    engine.dispose()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def exit_codes(self) -> dict[str, int | None]:
        """Return each stopped process's exit status (negative: the signal that ended it)."""
        return {name: process.exit_code for name, process in self.processes.items()}

    def leftover_processes(self) -> list[int]:
        """Return processes of this topology that still run (empty after :meth:`stop`)."""
        return [pid for pgid in self.process_groups for pid in group_members(pgid)]

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _stop_group(popen: subprocess.Popen[bytes]) -> int:
    """End a process and its whole group; return the process's exit status."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if popen.poll() is not None and not group_members(popen.pid):
                return popen.returncode
            time.sleep(0.1)
    popen.wait(timeout=10)
    return popen.returncode


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``topology.py up`` runs the topology until Ctrl+C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg-url", default=None, help="admin URL of the PostgreSQL server")
    args = parser.parse_args(argv)
    topology = Topology(workers=args.workers)
    if args.pg_url:
        topology.pg_admin_url = args.pg_url
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        topology.start()
    except TopologyError as exc:
        print(f"topology.py: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"GridWatch is up: {topology.web_url}/  (Ctrl+C stops everything)", flush=True)
        print("Settings of its processes (for `gridwatch …` against it):")
        for key, value in sorted(topology.env().items()):
            if key.startswith("GRIDWATCH_"):
                print(f"  export {key}={value}")
        print(f"Logs: {topology.root / 'logs'}", flush=True)
        while not stop_requested:
            time.sleep(0.5)
    finally:
        topology.stop()
        print("stopped:", ", ".join(f"{k} {v}" for k, v in topology.exit_codes().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
