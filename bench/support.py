"""What the web benchmarks share: the aggregated city, a gunicorn server, small helpers.

``bench_web.py`` and ``bench_load.py`` both serve an aggregated copy of a ``city.py`` city
with the README's production command on a free loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from city import city_marker


def log(message: str = "") -> None:
    """Print one line at once (the benchmarks run for minutes)."""
    print(message, flush=True)


def free_port() -> int:
    """Return a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def last_quarter(database: Path) -> str:
    """Return the label of the last complete quarter before the city's "today"."""
    from datetime import date

    today = date.fromisoformat(city_marker(database)["today"])
    quarter = (today.month - 1) // 3  # the current quarter, 0-based
    year, previous = (today.year, quarter) if quarter else (today.year - 1, 4)
    return f"{year}Q{previous}"


def aggregated_city(
    city: Path,
    prefix: str,
    secret_key: str,
    after: Callable[[Any], dict[str, Any]] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Return a copy of ``city`` with a published full run, and its marker.

    The copy is kept as ``<prefix>-<city>`` beside the city and built again only when the
    city was. ``after(engine)`` may add users or tokens to it; what it returns is kept in the
    marker (``<copy>.json``) with the run's time.
    """
    from gridwatch.config import load_settings
    from gridwatch.storage import create_db_engine, upgrade_database
    from gridwatch.workers.engine import RunRequest, run_eager

    target = city.with_name(f"{prefix}-{city.name}")
    marker_file = target.with_name(target.name + ".json")
    built_at = city_marker(city)["built_at"]
    if target.exists() and marker_file.exists():
        marker: dict[str, Any] = json.loads(marker_file.read_text("utf-8"))
        if marker.get("city_built_at") == built_at:
            return target, marker
    building = target.with_name(target.name + ".building")
    building.unlink(missing_ok=True)
    shutil.copyfile(city, building)
    with tempfile.TemporaryDirectory(prefix=f"gw-bench-{prefix}-") as scratch:
        url = f"sqlite:///{building}"
        settings = load_settings(
            {
                "GRIDWATCH_DATABASE_URL": url,
                "GRIDWATCH_VAR_DIR": scratch,
                "GRIDWATCH_SECRET_KEY": secret_key,
                "GRIDWATCH_TIMEZONE": "Asia/Shanghai",
            }
        )
        engine = create_db_engine(url)
        try:
            upgrade_database(engine)
            start = time.perf_counter()
            run_eager(engine, settings, RunRequest(trigger="bench", full=True))
            seconds = time.perf_counter() - start
            extra = after(engine) if after is not None else {}
        finally:
            engine.dispose()
    os.replace(building, target)
    marker = {"city_built_at": built_at, "aggregate_seconds": round(seconds, 1), **extra}
    marker_file.write_text(json.dumps(marker) + "\n", "utf-8")
    log(f"  aggregated the city once (full run, {seconds:.1f} s) → {target}")
    return target, marker


def server_env(database: Path, var_dir: Path, secret_key: str, **more: str) -> dict[str, str]:
    """Return the environment of a server on ``database``: no Redis, no secure cookies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")}
    env.update(
        {
            "GRIDWATCH_DATABASE_URL": f"sqlite:///{database}",
            "GRIDWATCH_VAR_DIR": str(var_dir),
            "GRIDWATCH_SECRET_KEY": secret_key,  # shared by the workers: one session
            "GRIDWATCH_SECURE_COOKIES": "false",
            "GRIDWATCH_REDIS_URL": "",
            "GRIDWATCH_TIMEZONE": "Asia/Shanghai",
            **more,
        }
    )
    return env


class Gunicorn:
    """``gunicorn -w N 'gridwatch.web:create_app()'`` on a free loopback port.

    Parameters
    ----------
    env : dict
        The server's environment (:func:`server_env`).
    workers : int
        Worker processes.
    log_file : pathlib.Path
        Where its output (and errors) go, apart from the figures.
    threads : int
        With threads, gthread workers: a browser keeps idle connections open (preconnects)
        and a sync worker waits on one until its 30 s timeout kills it; threads serve pages
        as nginx would (it forwards only whole requests).
    """

    def __init__(
        self, env: dict[str, str], workers: int, log_file: Path, threads: int = 0
    ) -> None:
        self.port = free_port()
        self.log_file = log_file
        self.log = log_file.open("ab")
        self.base_url = f"http://127.0.0.1:{self.port}"
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.process = subprocess.Popen(
            [
                str(gunicorn),
                "-w",
                str(workers),
                *(["-k", "gthread", "--threads", str(threads)] if threads else []),
                "-b",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
                "gridwatch.web:create_app()",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,  # the access log: kept apart from the figures
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited at start-up, see {log_file}") from None
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not answer within 60 s")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 30 s)."""
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def tail(self, lines: int = 30) -> str:
        """Return the end of the server's log (its errors)."""
        return "\n".join(self.log_file.read_text("utf-8", "replace").splitlines()[-lines:])
