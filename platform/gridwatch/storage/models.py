"""The GridWatch data model (SQLAlchemy 2 declarative, SQLite and PostgreSQL + PostGIS).

Every imported table carries a ``source_id`` that is unique within its table: re-importing a
file finds its rows already there and adds nothing. Points are kept twice, as ``lon``/``lat``
floats (cheap filters on any backend) and as a WGS84 geometry (PostGIS spatial queries).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gridwatch.storage.types import Geometry, UTCDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Incident sources. Patrol-discovered incidents are kept apart from reported ones so that
#: patrols do not chase their own findings.
INCIDENT_SOURCES = ("call_110", "walk_in", "patrol", "other")
INCIDENT_STATUSES = ("reported", "accepted", "solved", "closed")
CAMERA_TYPES = ("checkpoint", "hd", "standard", "private")
CAMERA_STATUSES = ("online", "offline", "broken")
TEAM_KINDS = ("police", "township", "village")
RESPONSE_OUTCOMES = ("completed", "refused", "hung_up", "no_answer")
USER_ROLES = ("admin", "county", "station", "township", "viewer")


def utcnow() -> datetime:
    """Return the current instant, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them on SQLite)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ImportBatch(Base):
    """One run of an importer over one file."""

    __tablename__ = "import_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    file_name: Mapped[str] = mapped_column(String(500))
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_imported: Mapped[int] = mapped_column(Integer, default=0)
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0)
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0)
    report_path: Mapped[str | None] = mapped_column(String(1000))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str | None] = mapped_column(Text)


class RejectedRow(Base):
    """A row an importer refused, kept with the reason so nothing is silently lost.

    Unique on (kind, file hash, row, column) so re-importing a file does not pile up copies.
    """

    __tablename__ = "rejected_rows"
    __table_args__ = (UniqueConstraint("kind", "file_sha256", "row_number", "column_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("import_batches.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    file_name: Mapped[str] = mapped_column(String(500))
    file_sha256: Mapped[str] = mapped_column(String(64))
    row_number: Mapped[int] = mapped_column(Integer)
    column_name: Mapped[str] = mapped_column(String(200), default="")
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Area(Base):
    """A node of the administrative tree: county → township → village → grid (any depth)."""

    __tablename__ = "areas"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(32), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    parent_code: Mapped[str | None] = mapped_column(String(64))
    population: Mapped[int | None] = mapped_column(Integer)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("MULTIPOLYGON"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))

    parent: Mapped[Area | None] = relationship(remote_side=[id], back_populates="children")
    children: Mapped[list[Area]] = relationship(back_populates="parent")


class Incident(Base):
    """A reported or discovered incident (警情 / 案件)."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_grid_occurred", "grid_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    category: Mapped[str] = mapped_column(String(64), index=True)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("POINT"))
    address: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16), default="other", index=True)
    status: Mapped[str] = mapped_column(String(16), default="reported")
    solved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    victim_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    description: Mapped[str | None] = mapped_column(Text)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    outside_grids: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class Camera(Base):
    """A video camera (雪亮工程 point)."""

    __tablename__ = "cameras"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("POINT"))
    type: Mapped[str] = mapped_column(String(16), default="standard")
    status: Mapped[str] = mapped_column(String(16), default="online", index=True)
    resolution: Mapped[str | None] = mapped_column(String(32))
    direction_deg: Mapped[float | None] = mapped_column(Float)
    fov_deg: Mapped[float | None] = mapped_column(Float)
    range_m: Mapped[float | None] = mapped_column(Float)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    outside_grids: Mapped[bool] = mapped_column(Boolean, default=False)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class Station(Base):
    """A police station (派出所) and the townships it covers."""

    __tablename__ = "stations"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("POINT"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))

    townships: Mapped[list[StationTownship]] = relationship(
        back_populates="station", cascade="all, delete-orphan"
    )


class StationTownship(Base):
    """Which townships a police station covers."""

    __tablename__ = "station_townships"

    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), primary_key=True)
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), primary_key=True)

    station: Mapped[Station] = relationship(back_populates="townships")
    area: Mapped[Area] = relationship()


class PatrolTeam(Base):
    """A patrol team: police, township patrol (巡防队) or village patrol."""

    __tablename__ = "patrol_teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"))
    home_area_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    members: Mapped[int | None] = mapped_column(Integer)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class PatrolTrack(Base):
    """A GPX track of one patrol; its points are also stored as pings."""

    __tablename__ = "patrol_tracks"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("patrol_teams.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("LINESTRING"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class PatrolPing(Base):
    """One GPS position of a patrol team."""

    __tablename__ = "patrol_pings"
    __table_args__ = (Index("ix_patrol_pings_team_ts", "team_id", "ts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("patrol_teams.id"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    lon: Mapped[float] = mapped_column(Float)
    lat: Mapped[float] = mapped_column(Float)
    geom: Mapped[BaseGeometry | None] = mapped_column(Geometry("POINT"))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"), index=True)
    outside_grids: Mapped[bool] = mapped_column(Boolean, default=False)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("patrol_tracks.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class SurveyWave(Base):
    """One round of the sense-of-security survey, e.g. ``2026Q3``."""

    __tablename__ = "survey_waves"

    id: Mapped[int] = mapped_column(primary_key=True)
    period: Mapped[str] = mapped_column(String(16), unique=True)


class SurveyResult(Base):
    """Aggregated survey figures for one area in one wave (percentages 0–100)."""

    __tablename__ = "survey_results"
    __table_args__ = (UniqueConstraint("wave_id", "area_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    wave_id: Mapped[int] = mapped_column(ForeignKey("survey_waves.id"))
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), index=True)
    respondents: Mapped[int | None] = mapped_column(Integer)
    security_pct: Mapped[float | None] = mapped_column(Float)
    satisfaction_pct: Mapped[float | None] = mapped_column(Float)
    composite_score: Mapped[float | None] = mapped_column(Float)
    awareness_pct: Mapped[float | None] = mapped_column(Float)
    participation_pct: Mapped[float | None] = mapped_column(Float)
    factor_shares: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class SurveyResponse(Base):
    """One respondent's answers in one wave (raw responses)."""

    __tablename__ = "survey_responses"
    __table_args__ = (Index("ix_survey_responses_wave_area", "wave_id", "area_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[str] = mapped_column(String(128), unique=True)
    wave_id: Mapped[int] = mapped_column(ForeignKey("survey_waves.id"))
    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"))
    respondent: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16), default="completed")
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    factors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    weight: Mapped[float | None] = mapped_column(Float)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batches.id"))


class User(Base):
    """A person who signs in to the web app (used from the web issue on)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    area_id: Mapped[int | None] = mapped_column(ForeignKey("areas.id"))
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Consecutive failed sign-ins; reaching the limit sets locked_until (reset on success).
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token for the JSON API; only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One audited action: a sign-in (or failed attempt), import, export or user change.

    ``username`` is kept as written at the time so the record survives the user's removal.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(100), default="")
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(500), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


#: Tables that carry a geometry column, with the column's PostGIS type (for the migration).
GEOMETRY_TABLES = {
    "areas": "MULTIPOLYGON",
    "incidents": "POINT",
    "cameras": "POINT",
    "stations": "POINT",
    "patrol_tracks": "LINESTRING",
    "patrol_pings": "POINT",
}


RUN_STATUSES = ("queued", "running", "done", "failed")


class AggregationRun(Base):
    """One aggregation run; its metrics become visible only when it is published.

    Readers use the newest run with ``status == "done"``: a run's rows are written while it
    is ``running`` and published by the single update that sets ``done``, so a reader sees the
    previous complete run or the new complete run, never a half-written one.
    """

    __tablename__ = "aggregation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(32), default="cli")
    scope: Mapped[str] = mapped_column(String(16), default="full")
    mode: Mapped[str] = mapped_column(String(16), default="eager")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    period_kinds: Mapped[list[Any]] = mapped_column(JSON, default=list)
    date_from: Mapped[str | None] = mapped_column(String(10))
    date_to: Mapped[str | None] = mapped_column(String(10))
    area_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    based_on_run_id: Mapped[int | None] = mapped_column(ForeignKey("aggregation_runs.id"))
    townships_total: Mapped[int] = mapped_column(Integer, default=0)
    townships_done: Mapped[int] = mapped_column(Integer, default=0)
    rows_read: Mapped[int] = mapped_column(Integer, default=0)
    rows_written: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    scorecard: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task_id: Mapped[str | None] = mapped_column(String(64))


class MetricBlock(Base):
    """The metrics of every area of one level in one period, as computed by one run.

    ``payload`` is an Arrow IPC stream with one row per area that has data (``area_id`` and
    the additive columns: counts, category counts, patrol dosage, Gi*); ratios and changes
    are derived when read. ``period`` is a period label (``2026Q3``) or ``current`` for the
    state that has no period (camera coverage, forecasts, emerging hot-spot classes). One
    row per (run, level, period) keeps a full city's day-by-day history to a few thousand
    rows instead of millions.
    """

    __tablename__ = "metric_blocks"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("aggregation_runs.id", ondelete="CASCADE"), primary_key=True
    )
    level: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    period_kind: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class RunPart(Base):
    """An intermediate result of one run: a township task's counts, or a county-wide layer.

    Township tasks write their grids' counts here (keyed by unit, so a repeated task
    replaces its own parts); finalising reads them all. Parts of the published run also
    hold the map layers (blind-spot polygons, the density surface), and an incremental run
    copies the parts of unchanged townships from the run it builds on.
    """

    __tablename__ = "run_parts"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("aggregation_runs.id", ondelete="CASCADE"), primary_key=True
    )
    unit: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class SituationReport(Base):
    """The daily situation summary (每日治安形势) of one local day, built from a published run."""

    __tablename__ = "situation_reports"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        ForeignKey("aggregation_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DirtyGrid(Base):
    """A grid whose data changed since the last run (filled by imports, drained by runs)."""

    __tablename__ = "dirty_grids"

    area_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), primary_key=True)
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunUnit(Base):
    """One planned unit (township) of a run and when its task last completed.

    Finalising checks that every planned unit is done, so a redelivered duplicate task can
    never make a run publish early.
    """

    __tablename__ = "run_units"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("aggregation_runs.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(64), primary_key=True)
    grid_count: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PatrolPlan(Base):
    """A planned patrol shift of one station's teams (routes as JSON), kept for adherence.

    ``payload`` holds the plan as printed by ``gridwatch routes plan --json``: teams, bases,
    stops with local ISO 8601 times, figures and the greedy baseline.
    """

    __tablename__ = "patrol_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    station_id: Mapped[int] = mapped_column(ForeignKey("stations.id"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    shift: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


TASK_KINDS = ("camera", "repair", "patrol", "publicity", "follow_up", "other")
TASK_STATUSES = ("open", "in_progress", "done", "cancelled")


class PreventionTask(Base):
    """A prevention task (a plan recommendation or a hand-made one) and its progress.

    It belongs to one township (who may see it follows from that), may name a police station
    and lists its target grids as area ids in ``grid_ids``. ``source_plan`` names the plan
    list it came from (``cameras``, ``repairs``, ``patrol_focus``, ``publicity``,
    ``follow_up``; empty for a hand-made task) and ``source_ref`` the item as it stood then.
    """

    __tablename__ = "prevention_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    township_id: Mapped[int] = mapped_column(ForeignKey("areas.id"), index=True)
    station_id: Mapped[int | None] = mapped_column(ForeignKey("stations.id"))
    grid_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    assignee: Mapped[str] = mapped_column(String(200), default="")
    assignee_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    due_date: Mapped[str | None] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_plan: Mapped[str] = mapped_column(String(32), default="")
    source_ref: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
