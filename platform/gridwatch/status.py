"""What is in the database: row counts, schema revision and the latest imports.

:func:`collect_status` returns plain data for ``gridwatch status`` (and later a web page). It
never changes the database: on a database without a schema it reports revision ``None`` and
zero counts rather than creating tables.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, func, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase

from gridwatch.config import Settings
from gridwatch.storage import DatabaseError, current_revision, head_revision
from gridwatch.storage.models import (
    AggregationRun,
    Area,
    Camera,
    ImportBatch,
    Incident,
    PatrolPing,
    PatrolTeam,
    PatrolTrack,
    RejectedRow,
    Station,
    SurveyResponse,
    SurveyResult,
    SurveyWave,
    User,
)

#: Number of import batches listed, newest first.
LAST_RUNS_SHOWN = 5
LAST_IMPORTS_SHOWN = 10

#: Tables counted as a whole, in the order they are reported.
COUNTED_TABLES: dict[str, type[DeclarativeBase]] = {
    "incidents": Incident,
    "cameras": Camera,
    "stations": Station,
    "patrol_teams": PatrolTeam,
    "patrol_pings": PatrolPing,
    "patrol_tracks": PatrolTrack,
    "survey_waves": SurveyWave,
    "survey_results": SurveyResult,
    "survey_responses": SurveyResponse,
    "rejected_rows": RejectedRow,
    "users": User,
}


def iso_utc(instant: datetime | None) -> str | None:
    """Write an instant as ISO 8601 in UTC with a ``Z``, e.g. ``2026-07-04T05:06:07Z``.

    Fractions of a second are kept only when there are any.

    Parameters
    ----------
    instant : datetime.datetime or None
        An aware datetime (naive values are taken to be UTC already, as storage hands back).

    Returns
    -------
    str or None
        ``None`` for ``None``.
    """
    if instant is None:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    instant = instant.astimezone(UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if instant.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return instant.strftime(pattern)


def database_label(engine: Engine) -> str:
    """Return the engine's URL with any password removed (safe to print or log)."""
    url = engine.url
    # URL.set(password=None) keeps the password; build the URL again without one.
    bare = URL.create(
        url.drivername, url.username, None, url.host, url.port, url.database, url.query
    )
    return bare.render_as_string(hide_password=False)


def _sqlite_file_missing(engine: Engine) -> bool:
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return not Path(url.database).exists()


def _empty_counts(settings: Settings) -> dict[str, Any]:
    counts: dict[str, Any] = {"areas": dict.fromkeys(settings.area_levels, 0)}
    for name in COUNTED_TABLES:
        counts[name] = 0
        if name == "incidents":
            counts["incidents_outside_grids"] = 0
    return counts


def collect_status(engine: Engine, settings: Settings) -> dict[str, Any]:
    """Count what the database holds and list the latest imports.

    Parameters
    ----------
    engine : sqlalchemy.Engine
        The GridWatch database (SQLite or PostgreSQL).
    settings : gridwatch.config.Settings
        Supplies the configured area levels (reported even when empty) and the task mode.

    Returns
    -------
    dict
        ``counts`` (``areas`` by level, then one number per table, plus
        ``incidents_outside_grids``), ``task_mode``, ``database`` (URL without password),
        ``schema_revision`` (``None`` when the schema was never created), ``schema_head``,
        ``last_imports`` (up to :data:`LAST_IMPORTS_SHOWN`, newest first, times in ISO 8601
        UTC) and ``rejected_by_kind``.

    Raises
    ------
    DatabaseError
        When the database cannot be reached.
    """
    status: dict[str, Any] = {
        "counts": _empty_counts(settings),
        "task_mode": settings.task_mode,
        "database": database_label(engine),
        "schema_revision": None,
        "schema_head": head_revision(engine),
        "last_imports": [],
        "last_runs": [],
        "rejected_by_kind": {},
    }
    if _sqlite_file_missing(engine):
        # Connecting would create an empty file; status changes nothing.
        return status
    try:
        revision = current_revision(engine)
        status["schema_revision"] = revision
        if revision is None:
            return status
        with engine.connect() as conn:
            by_level = conn.execute(
                select(Area.level, func.count()).group_by(Area.level).order_by(Area.level)
            ).all()
            totals = conn.execute(
                select(
                    *(
                        select(func.count()).select_from(model).scalar_subquery().label(name)
                        for name, model in COUNTED_TABLES.items()
                    ),
                    select(func.count())
                    .select_from(Incident)
                    .where(Incident.outside_grids.is_(True))
                    .scalar_subquery()
                    .label("incidents_outside_grids"),
                )
            ).one()
            batches = conn.execute(
                select(
                    ImportBatch.id,
                    ImportBatch.kind,
                    ImportBatch.file_name,
                    ImportBatch.finished_at,
                    ImportBatch.rows_read,
                    ImportBatch.rows_imported,
                    ImportBatch.rows_duplicate,
                    ImportBatch.rows_rejected,
                    ImportBatch.status,
                )
                .order_by(ImportBatch.id.desc())
                .limit(LAST_IMPORTS_SHOWN)
            ).all()
            runs = (
                conn.execute(
                    select(
                        AggregationRun.id,
                        AggregationRun.status,
                        AggregationRun.mode,
                        AggregationRun.scope,
                        AggregationRun.trigger,
                        AggregationRun.started_at,
                        AggregationRun.finished_at,
                        AggregationRun.rows_read,
                        AggregationRun.errors,
                    )
                    .order_by(AggregationRun.id.desc())
                    .limit(LAST_RUNS_SHOWN)
                ).all()
                if inspect(conn).has_table("aggregation_runs")
                else []
            )
            rejected = conn.execute(
                select(RejectedRow.kind, func.count())
                .group_by(RejectedRow.kind)
                .order_by(RejectedRow.kind)
            ).all()
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot read the database {database_label(engine)}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc

    counts = status["counts"]
    for level, n in by_level:
        counts["areas"][level] = int(n)
    for name, n in totals._mapping.items():
        counts[name] = int(n)
    status["last_imports"] = [
        {
            "id": row.id,
            "kind": row.kind,
            "file": row.file_name,
            "finished_at": iso_utc(row.finished_at),
            "read": row.rows_read,
            "imported": row.rows_imported,
            "duplicates": row.rows_duplicate,
            "rejected": row.rows_rejected,
            "status": row.status,
        }
        for row in batches
    ]
    status["rejected_by_kind"] = {kind: int(n) for kind, n in rejected}
    status["last_runs"] = [
        {
            "run_id": row.id,
            "status": row.status,
            "mode": row.mode,
            "scope": row.scope,
            "trigger": row.trigger,
            "started_at": iso_utc(row.started_at),
            "finished_at": iso_utc(row.finished_at),
            "incidents_read": row.rows_read,
            "errors": list(row.errors or []),
        }
        for row in runs
    ]
    return status


#: Chinese names of the default area levels; other levels are shown by their own name.
LEVEL_LABELS = {
    "county": "县 county",
    "township": "乡镇 township",
    "village": "村 village",
    "grid": "网格 grid",
}

#: Labels of the other counts, in the order they are shown.
COUNT_LABELS = {
    "incidents": "警情 incidents",
    "incidents_outside_grids": "  网格外 outside grids",
    "cameras": "摄像头 cameras",
    "stations": "派出所 stations",
    "patrol_teams": "巡逻队 patrol teams",
    "patrol_tracks": "巡逻轨迹 patrol tracks",
    "patrol_pings": "巡逻定位 patrol pings",
    "survey_waves": "测评轮次 survey waves",
    "survey_results": "测评结果 survey results",
    "survey_responses": "测评答卷 survey responses",
    "rejected_rows": "拒收行 rejected rows",
    "users": "用户 users",
}

NO_SCHEMA_HINT = (
    "数据库尚未建表 the database has no schema yet: run `gridwatch db upgrade`, "
    "then import files or load the demo data."
)


def _width(text: str) -> int:
    """Return the terminal width of ``text`` (CJK characters take two columns)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(rows: list[list[str]], right_aligned: set[int], indent: str = "") -> list[str]:
    widths = [max(_width(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - _width(cell))
            cells.append(pad + cell if i in right_aligned else cell + pad)
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def format_status(status: dict[str, Any]) -> str:
    """Render :func:`collect_status` output as a table for people (Chinese and English).

    Parameters
    ----------
    status : dict
        As returned by :func:`collect_status`.

    Returns
    -------
    str
        Several lines, without a trailing newline.
    """
    revision = status["schema_revision"]
    head = status.get("schema_head")
    if revision is None:
        schema = "—"
    elif head and revision != head:
        schema = f"{revision} (最新 head {head}: run `gridwatch db upgrade`)"
    else:
        schema = f"{revision} (最新 up to date)"
    mode = status["task_mode"]
    lines = _table(
        [
            ["数据库 database", status["database"]],
            ["表结构 schema", schema],
            ["任务 tasks", f"{mode} ({'in-process' if mode == 'eager' else 'Celery workers'})"],
        ],
        right_aligned=set(),
    )
    if revision is None:
        lines += ["", NO_SCHEMA_HINT]
        return "\n".join(lines)

    counts = status["counts"]
    rows = [["区域 areas", ""]]
    rows += [[f"  {LEVEL_LABELS.get(lvl, lvl)}", f"{n:,}"] for lvl, n in counts["areas"].items()]
    rows += [[label, f"{counts[key]:,}"] for key, label in COUNT_LABELS.items() if key in counts]
    lines += [""] + _table(rows, right_aligned={1})

    if status["rejected_by_kind"]:
        lines += ["", "拒收行按类型 rejected rows by kind"]
        lines += _table(
            [[kind, f"{n:,}"] for kind, n in status["rejected_by_kind"].items()],
            right_aligned={1},
            indent="  ",
        )

    lines += ["", "汇总运行 aggregation runs"]
    if status.get("last_runs"):
        lines += _table(
            [
                ["run", "status", "mode", "scope", "finished (UTC)"],
                *[
                    [
                        str(r["run_id"]),
                        r["status"],
                        r["mode"],
                        r["scope"],
                        r["finished_at"] or "—",
                    ]
                    for r in status["last_runs"]
                ],
            ],
            right_aligned={0},
            indent="  ",
        )
    else:
        lines.append("  (none yet — gridwatch aggregate)")
    lines += ["", "最近导入 last imports"]
    if not status["last_imports"]:
        lines.append("  (none yet)")
        return "\n".join(lines)
    header = [
        "#",
        "kind",
        "file",
        "finished (UTC)",
        "read",
        "imported",
        "dup",
        "rejected",
        "status",
    ]
    body = [
        [
            str(item["id"]),
            item["kind"],
            item["file"],
            item["finished_at"] or "—",
            f"{item['read']:,}",
            f"{item['imported']:,}",
            f"{item['duplicates']:,}",
            f"{item['rejected']:,}",
            item["status"],
        ]
        for item in status["last_imports"]
    ]
    lines += _table([header, *body], right_aligned={0, 4, 5, 6, 7}, indent="  ")
    return "\n".join(lines)


__all__ = [
    "COUNTED_TABLES",
    "LAST_IMPORTS_SHOWN",
    "collect_status",
    "database_label",
    "format_status",
    "iso_utc",
]
