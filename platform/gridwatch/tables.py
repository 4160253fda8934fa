"""Data tables with filters, and their CSV / XLSX exports (the "data tables" pages).

Three tables, each filtered to the user's jurisdiction before anything else:

``metrics``
    The published metrics of every visible area of one level for one period
    (:func:`gridwatch.workers.engine.read_metrics`), optionally under one area.
``incidents``
    The incident records of the visible grids, filtered by area, dates, category and status.
    Who sees single cases is decided by role (:data:`INCIDENT_DETAIL_ROLES`):

    - ``admin``, ``county`` (the command centre) and ``station`` (the police station that
      handles the cases) see one row per case: id, time, category, source, status, solved
      and victim-notified dates, grid;
    - ``township`` (the township's comprehensive-management office, not the police) and
      ``viewer`` (the wall screen) get counts only: per area of a chosen level and category,
      incidents, solved, and solved without the victim told.

    No role gets the victim's details: the case summary (``description``) and the address
    are never shown or exported, and neither are the coordinates; the grid says where.
``cameras``
    The visible grids' cameras (雪亮工程 points) with type, status and location, filtered by
    area, status and type; every role but ``viewer`` (:data:`CAMERA_ROLES`).

Records outside every grid belong to no jurisdiction and are left out of every table.

Exports go through :func:`export_table`: every cell passes :func:`gridwatch.spreadsheet.safe_cell`
(formula injection), at most :data:`EXPORT_ROW_LIMIT` rows are written (more is refused with
a sentence asking for narrower filters, never silently cut), and each export is recorded in
the audit log with its table, format, filters and row count.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from gridwatch.accounts import Principal, audit
from gridwatch.areas import AreaNode, AreaTree, Jurisdiction
from gridwatch.overview import HEADLINE_GROUP
from gridwatch.periods import PeriodError, parse_period
from gridwatch.spreadsheet import safe_row
from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Camera, Incident
from gridwatch.workers.engine import read_metrics

TableName = Literal["metrics", "incidents", "cameras"]
ExportFormat = Literal["csv", "xlsx"]

#: Roles that see single incident records; the others get counts only (module docstring).
INCIDENT_DETAIL_ROLES = ("admin", "county", "station")
#: Roles that may read the camera list.
CAMERA_ROLES = ("admin", "county", "station", "township")
#: Roles that may export (the wall screen's ``viewer`` only looks).
EXPORT_ROLES = ("admin", "county", "station", "township")
#: Rows per page on screen.
PAGE_SIZE = 100
#: Most rows one export writes.
EXPORT_ROW_LIMIT = 100_000

INCIDENT_STATUSES = ("reported", "accepted", "solved", "closed")
#: Status filter value: solved (or closed) cases whose victim was not told (破而不馈).
NOT_NOTIFIED = "solved_not_notified"
CAMERA_STATUSES = ("online", "offline", "broken")
#: Status filter value: offline or broken (what the overview's camera alert counts).
NOT_WORKING = "not_working"
CAMERA_TYPES = ("checkpoint", "hd", "standard", "private")

METRIC_COLUMNS = (
    "area_code",
    "area_name",
    "parent_name",
    "population",
    "incidents_total",
    HEADLINE_GROUP,
    "incidents_per_1000",
    "change_prev_pct",
    "change_last_year_pct",
    "incidents_solved",
    "solved_rate_pct",
    "solved_not_notified",
    "not_notified_pct",
    "night_share_pct",
    "blind_spot_incident_pct",
    "cameras_total",
    "cameras_working",
    "camera_coverage_pct",
    "patrol_minutes",
)
INCIDENT_COLUMNS = (
    "id",
    "occurred_at",
    "category",
    "source",
    "status",
    "solved_at",
    "victim_notified_at",
    "grid_code",
    "grid_name",
    "township",
)
INCIDENT_SUMMARY_COLUMNS = (
    "area_code",
    "area_name",
    "category",
    "incidents",
    "solved",
    "solved_not_notified",
)
CAMERA_COLUMNS = (
    "id",
    "name",
    "type",
    "status",
    "resolution",
    "installed_at",
    "owner",
    "grid_code",
    "grid_name",
    "township",
    "lon",
    "lat",
)


class TableError(ValueError):
    """A filter value cannot be used; the message is one sentence for the user."""


class AreaNotVisible(LookupError):
    """The area asked for does not exist or lies outside the user's jurisdiction."""


@dataclass
class Table:
    """One table's page (or whole export): columns, rows and how many rows match.

    Attributes
    ----------
    name : str
        ``metrics``, ``incidents`` or ``cameras``.
    columns : tuple of str
        Column keys of ``rows``, in display order.
    rows : list of dict
        The rows of this page.
    total : int
        Rows matching the filters (all pages).
    filters : dict
        The filters applied, in canonical form (for links, the export and the audit log).
    detail : bool
        ``False`` when the incidents table shows counts instead of cases.
    """

    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    total: int
    filters: dict[str, str] = field(default_factory=dict)
    detail: bool = True


# -- scope ------------------------------------------------------------------------------------


def visible_area(tree: AreaTree, jurisdiction: Jurisdiction, code: str) -> AreaNode:
    """Return the area with ``code`` if the user may see it.

    Raises
    ------
    AreaNotVisible
        When it does not exist or is outside ``jurisdiction`` (the same answer for both).
    """
    node = tree.by_code.get(code)
    if node is None or node.id not in jurisdiction:
        raise AreaNotVisible(code)
    return node


def scope_grid_ids(tree: AreaTree, jurisdiction: Jurisdiction, area_code: str = "") -> list[int]:
    """Return the ids of the visible leaf areas (grids) under ``area_code`` (or everywhere)."""
    if area_code:
        ids = tree.subtree(visible_area(tree, jurisdiction, area_code).id) & jurisdiction.area_ids
    else:
        ids = set(jurisdiction.area_ids)
    return sorted(i for i in ids if not tree.children.get(i))


def filter_areas(
    tree: AreaTree, jurisdiction: Jurisdiction, levels: Sequence[str]
) -> list[AreaNode]:
    """Return the visible areas offered in the area filter: every level but the grids."""
    shown = set(levels[:-1]) if len(levels) > 1 else set(levels)
    nodes = [tree.nodes[i] for i in jurisdiction.area_ids if tree.nodes[i].level in shown]
    return sorted(nodes, key=lambda n: n.code)


def summary_levels(tree: AreaTree, jurisdiction: Jurisdiction, levels: Sequence[str]) -> list[str]:
    """Return the levels incident counts may be grouped by: the user's top level and below.

    Counting a township's incidents under its county's name would present part of a
    county as the whole.
    """
    depths = [
        list(levels).index(tree.nodes[i].level)
        for i in jurisdiction.root_ids
        if tree.nodes[i].level in levels
    ]
    return list(levels[min(depths) :]) if depths else list(levels)


def _township_of(tree: AreaTree, node: AreaNode, cache: dict[int, str]) -> str:
    if node.id not in cache:
        names = [a.name for a in tree.ancestors(node.id) if a.level == "township"]
        cache[node.id] = names[0] if names else ""
    return cache[node.id]


# -- filters ----------------------------------------------------------------------------------


def _one_of(value: str, allowed: Iterable[str], what: str) -> str:
    allowed = tuple(allowed)
    if value and value not in allowed:
        raise TableError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")
    return value


def _date(value: str, what: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TableError(f"the {what} date {value!r} is not a date like 2026-07-31") from None


@dataclass(frozen=True)
class IncidentFilters:
    """Filters of the incidents table (all optional)."""

    area: str = ""
    date_from: date | None = None
    date_to: date | None = None
    category: str = ""
    status: str = ""
    by: str = ""

    def as_dict(self) -> dict[str, str]:
        """Return the filters that are set, as text (for links and the audit log)."""
        values = {
            "area": self.area,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "category": self.category,
            "status": self.status,
            "by": self.by,
        }
        return {k: v for k, v in values.items() if v}


def parse_incident_filters(
    args: Mapping[str, str], categories: Iterable[str], levels: Sequence[str]
) -> IncidentFilters:
    """Read the incidents table's filters from request arguments.

    Raises
    ------
    TableError
        For an unknown category, status or level, a bad date, or ``from`` after ``to``.
    """
    start = _date(args.get("from", "").strip(), "from")
    end = _date(args.get("to", "").strip(), "to")
    if start and end and start > end:
        raise TableError(f"the from date {start} is after the to date {end}")
    return IncidentFilters(
        area=args.get("area", "").strip(),
        date_from=start,
        date_to=end,
        category=_one_of(args.get("category", "").strip(), categories, "category"),
        status=_one_of(
            args.get("status", "").strip(), (*INCIDENT_STATUSES, NOT_NOTIFIED), "status"
        ),
        by=_one_of(args.get("by", "").strip(), levels, "level"),
    )


def _local_bound(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _solved() -> ColumnElement[bool]:
    # The aggregation's rule (workers/aggregate/incidents.py): solved or closed, or a solved time.
    return or_(Incident.status.in_(("solved", "closed")), Incident.solved_at.is_not(None))


def _incident_conditions(
    filters: IncidentFilters, grid_ids: list[int], tz: ZoneInfo
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Incident.grid_id.in_(grid_ids)]
    if filters.date_from:
        conditions.append(Incident.occurred_at >= _local_bound(filters.date_from, tz))
    if filters.date_to:
        end = _local_bound(filters.date_to + timedelta(days=1), tz)
        conditions.append(Incident.occurred_at < end)
    if filters.category:
        conditions.append(Incident.category == filters.category)
    if filters.status == NOT_NOTIFIED:
        conditions.append(and_(_solved(), Incident.victim_notified_at.is_(None)))
    elif filters.status:
        conditions.append(Incident.status == filters.status)
    return conditions


def _local_text(moment: datetime | None, tz: ZoneInfo, with_time: bool = True) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


# -- tables -----------------------------------------------------------------------------------


def metrics_table(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    levels: Sequence[str],
    level: str,
    period: str,
    area_code: str = "",
) -> Table:
    """Return the published metrics of the visible areas of ``level`` for ``period``.

    Raises
    ------
    TableError
        For an unknown level or a period that cannot be read.
    AreaNotVisible
        When ``area_code`` is not the code of a visible area.
    """
    _one_of(level, levels, "level")
    try:
        label = parse_period(period).label
    except PeriodError:
        raise TableError(
            f"the period {period!r} is not like 2026, 2026Q3, 2026-07 or 2026-W27"
        ) from None
    inside = jurisdiction.area_ids
    if area_code:
        inside = frozenset(tree.subtree(visible_area(tree, jurisdiction, area_code).id) & inside)
    rows = []
    for row in read_metrics(engine, level, label):
        node = tree.by_code.get(row["area_code"])
        if node is None or node.id not in inside:
            continue
        parent = tree.nodes.get(node.parent_id) if node.parent_id is not None else None
        rows.append(
            {
                **{key: row.get(key) for key in METRIC_COLUMNS},
                "area_name": node.name,
                "parent_name": parent.name if parent is not None else None,
                "population": node.population,
                HEADLINE_GROUP: (row.get("incidents_by_group") or {}).get(HEADLINE_GROUP, 0),
            }
        )
    filters = {"level": level, "period": label, "area": area_code}
    return Table(
        "metrics", METRIC_COLUMNS, rows, len(rows), {k: v for k, v in filters.items() if v}
    )


def incidents_table(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    levels: Sequence[str],
    role: str,
    filters: IncidentFilters,
    tz: ZoneInfo,
    page: int = 1,
    limit: int | None = PAGE_SIZE,
) -> Table:
    """Return the incidents matching ``filters`` in the jurisdiction: cases or counts by role.

    Roles in :data:`INCIDENT_DETAIL_ROLES` get one row per case, newest first, ``limit`` per
    page (``None``: all); the others get counts per area of level ``filters.by`` (default:
    the grid level) and category, with every row on one page.

    Raises
    ------
    AreaNotVisible
        When ``filters.area`` is not the code of a visible area.
    """
    grid_ids = scope_grid_ids(tree, jurisdiction, filters.area)
    conditions = _incident_conditions(filters, grid_ids, tz)
    if role not in INCIDENT_DETAIL_ROLES:
        return _incident_counts(engine, tree, levels, filters, conditions)
    with session_scope(engine) as session:
        total = int(session.scalar(select(func.count(Incident.id)).where(*conditions)) or 0)
        query = (
            select(
                Incident.source_id,
                Incident.occurred_at,
                Incident.category,
                Incident.source,
                Incident.status,
                Incident.solved_at,
                Incident.victim_notified_at,
                Incident.grid_id,
            )
            .where(*conditions)
            .order_by(Incident.occurred_at.desc(), Incident.source_id)
        )
        if limit is not None:
            query = query.limit(limit).offset(max(page - 1, 0) * limit)
        found = session.execute(query).all()
    townships: dict[int, str] = {}
    rows = []
    for source_id, occurred, category, source, status, solved, notified, grid_id in found:
        assert grid_id is not None  # filtered on visible grid ids
        grid = tree.nodes[grid_id]
        rows.append(
            {
                "id": source_id,
                "occurred_at": _local_text(occurred, tz),
                "category": category,
                "source": source,
                "status": status,
                "solved_at": _local_text(solved, tz),
                "victim_notified_at": _local_text(notified, tz),
                "grid_code": grid.code,
                "grid_name": grid.name,
                "township": _township_of(tree, grid, townships),
            }
        )
    return Table("incidents", INCIDENT_COLUMNS, rows, total, filters.as_dict())


def _incident_counts(
    engine: Engine,
    tree: AreaTree,
    levels: Sequence[str],
    filters: IncidentFilters,
    conditions: list[ColumnElement[bool]],
) -> Table:
    level = filters.by or levels[-1]
    solved = _solved()
    with session_scope(engine) as session:
        found = session.execute(
            select(
                Incident.grid_id,
                Incident.category,
                func.count(Incident.id),
                func.sum(case((solved, 1), else_=0)),
                func.sum(case((and_(solved, Incident.victim_notified_at.is_(None)), 1), else_=0)),
            )
            .where(*conditions)
            .group_by(Incident.grid_id, Incident.category)
        ).all()
    up: dict[int, AreaNode | None] = {}

    def area_at_level(grid_id: int) -> AreaNode | None:
        if grid_id not in up:
            node = tree.nodes[grid_id]
            chain = [*tree.ancestors(grid_id), node]
            up[grid_id] = next((a for a in chain if a.level == level), None)
        return up[grid_id]

    sums: dict[tuple[str, str], list[int]] = {}
    names: dict[str, str] = {}
    for grid_id, category, count, solved_count, not_notified in found:
        area = area_at_level(grid_id)
        if area is None:
            continue
        names[area.code] = area.name
        entry = sums.setdefault((area.code, category), [0, 0, 0])
        entry[0] += int(count or 0)
        entry[1] += int(solved_count or 0)
        entry[2] += int(not_notified or 0)
    rows = [
        {
            "area_code": code,
            "area_name": names[code],
            "category": category,
            "incidents": counts[0],
            "solved": counts[1],
            "solved_not_notified": counts[2],
        }
        for (code, category), counts in sorted(sums.items())
    ]
    applied = {**filters.as_dict(), "by": level}
    return Table("incidents", INCIDENT_SUMMARY_COLUMNS, rows, len(rows), applied, detail=False)


@dataclass(frozen=True)
class CameraFilters:
    """Filters of the cameras table (all optional)."""

    area: str = ""
    status: str = ""
    type: str = ""

    def as_dict(self) -> dict[str, str]:
        """Return the filters that are set."""
        values = {"area": self.area, "status": self.status, "type": self.type}
        return {k: v for k, v in values.items() if v}


def parse_camera_filters(args: Mapping[str, str]) -> CameraFilters:
    """Read the cameras table's filters from request arguments.

    Raises
    ------
    TableError
        For an unknown status or type.
    """
    return CameraFilters(
        area=args.get("area", "").strip(),
        status=_one_of(
            args.get("status", "").strip(), (*CAMERA_STATUSES, NOT_WORKING), "camera status"
        ),
        type=_one_of(args.get("type", "").strip(), CAMERA_TYPES, "camera type"),
    )


def cameras_table(
    engine: Engine,
    tree: AreaTree,
    jurisdiction: Jurisdiction,
    filters: CameraFilters,
    tz: ZoneInfo,
    page: int = 1,
    limit: int | None = PAGE_SIZE,
) -> Table:
    """Return the cameras of the visible grids matching ``filters``, by grid and id.

    Raises
    ------
    AreaNotVisible
        When ``filters.area`` is not the code of a visible area.
    """
    grid_ids = scope_grid_ids(tree, jurisdiction, filters.area)
    conditions: list[ColumnElement[bool]] = [Camera.grid_id.in_(grid_ids)]
    if filters.status == NOT_WORKING:
        conditions.append(Camera.status != "online")
    elif filters.status:
        conditions.append(Camera.status == filters.status)
    if filters.type:
        conditions.append(Camera.type == filters.type)
    with session_scope(engine) as session:
        total = int(session.scalar(select(func.count(Camera.id)).where(*conditions)) or 0)
        query = (
            select(
                Camera.source_id,
                Camera.name,
                Camera.type,
                Camera.status,
                Camera.resolution,
                Camera.installed_at,
                Camera.owner,
                Camera.grid_id,
                Camera.lon,
                Camera.lat,
            )
            .where(*conditions)
            .order_by(Camera.grid_id, Camera.source_id)
        )
        if limit is not None:
            query = query.limit(limit).offset(max(page - 1, 0) * limit)
        found = session.execute(query).all()
    townships: dict[int, str] = {}
    rows = []
    for source_id, name, kind, status, resolution, installed, owner, grid_id, lon, lat in found:
        assert grid_id is not None  # filtered on visible grid ids
        grid = tree.nodes[grid_id]
        rows.append(
            {
                "id": source_id,
                "name": name,
                "type": kind,
                "status": status,
                "resolution": resolution,
                "installed_at": _local_text(installed, tz, with_time=False),
                "owner": owner,
                "grid_code": grid.code,
                "grid_name": grid.name,
                "township": _township_of(tree, grid, townships),
                "lon": round(float(lon), 6),
                "lat": round(float(lat), 6),
            }
        )
    return Table("cameras", CAMERA_COLUMNS, rows, total, filters.as_dict())


# -- export -----------------------------------------------------------------------------------


def csv_bytes(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    """Write a CSV file (UTF-8 with BOM, which Chinese Excel needs), every cell made safe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(safe_row(headers))
    for row in rows:
        writer.writerow(safe_row("" if v is None else v for v in row))
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def xlsx_bytes(headers: Sequence[str], rows: Iterable[Sequence[Any]], sheet: str) -> bytes:
    """Write an XLSX workbook of one sheet; text cells can never become formulas.

    openpyxl stores a string starting with ``=`` as a formula; after
    :func:`gridwatch.spreadsheet.safe_cell` no text starts with ``=`` (nor ``+ - @``, tab or
    carriage return) any more, so every text cell is written as a plain string.
    """
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    worksheet = book.create_sheet(title=sheet[:31])
    worksheet.append(safe_row(headers))
    for row in rows:
        worksheet.append(safe_row(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def export_table(
    engine: Engine,
    table: Table,
    fmt: ExportFormat,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    actor: Principal,
    ip: str = "",
) -> bytes:
    """Write ``rows`` (already formatted for reading) as ``fmt`` and record the export.

    Parameters
    ----------
    table : Table
        The table exported (its name, filters and ``detail`` go to the audit log).
    fmt : {"csv", "xlsx"}
    headers : sequence of str
        Column headings, in the interface language.
    rows : sequence of sequence
        Cell values, in the order of ``headers``.
    actor : Principal
        Who exports.
    ip : str
        Address of the request.

    Raises
    ------
    TableError
        When more than :data:`EXPORT_ROW_LIMIT` rows would be written (nothing is written).
    """
    if len(rows) > EXPORT_ROW_LIMIT:
        raise TableError(
            f"{len(rows)} rows match, more than the {EXPORT_ROW_LIMIT} one export may hold: "
            "narrow the filters"
        )
    data = csv_bytes(headers, rows) if fmt == "csv" else xlsx_bytes(headers, rows, table.name)
    audit(
        engine,
        "export",
        actor=actor,
        ip=ip,
        target=f"tables/{table.name}.{fmt}",
        detail={
            "table": table.name,
            "format": fmt,
            "rows": len(rows),
            "filters": table.filters,
            "detail": table.detail,
        },
    )
    return data


__all__ = [
    "CAMERA_COLUMNS",
    "CAMERA_ROLES",
    "CAMERA_STATUSES",
    "CAMERA_TYPES",
    "EXPORT_ROLES",
    "EXPORT_ROW_LIMIT",
    "INCIDENT_COLUMNS",
    "INCIDENT_DETAIL_ROLES",
    "INCIDENT_STATUSES",
    "INCIDENT_SUMMARY_COLUMNS",
    "METRIC_COLUMNS",
    "NOT_NOTIFIED",
    "NOT_WORKING",
    "PAGE_SIZE",
    "AreaNotVisible",
    "CameraFilters",
    "IncidentFilters",
    "Table",
    "TableError",
    "cameras_table",
    "csv_bytes",
    "export_table",
    "filter_areas",
    "incidents_table",
    "metrics_table",
    "parse_camera_filters",
    "parse_incident_filters",
    "scope_grid_ids",
    "summary_levels",
    "visible_area",
    "xlsx_bytes",
]
