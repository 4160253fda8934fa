"""Gunicorn hooks for GridWatch: ``gunicorn -c python:gridwatch.web.gunicorn_conf ...``.

With ``PROMETHEUS_MULTIPROC_DIR`` set, each web process writes its metrics to files in that
directory and a scrape adds them up. The directory must start empty (files of a previous
server would be counted again), and a process that exits must be marked dead so its gauges
stop counting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def on_starting(server: Any) -> None:
    """Empty the metrics directory before the first worker process starts."""
    raw = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not raw:
        return
    directory = Path(raw)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Mark an exited worker process dead in the metrics directory."""
    from gridwatch.observability import process_exited

    process_exited(worker.pid)
