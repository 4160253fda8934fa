"""The shared import pipeline: read → map headers → validate rows → locate → dedupe → commit.

One :class:`Importer` subclass per kind (pygeoapi-provider style) declares its fields and how
a validated record becomes table rows; everything else — encodings, Chinese headers, mapping
files, coordinate systems, the grid join, duplicate detection, quarantine and the report —
is done once, here.

A file is imported in one transaction: either every good row and every rejected row of the
file is committed, or (when the file turns out unreadable half-way) nothing is.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, cast
from zoneinfo import ZoneInfo

import numpy as np
import shapely
from sqlalchemy import Engine, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gridwatch.config import Settings
from gridwatch.geo.coords import CoordinateSystemError, normalise_crs_name, to_wgs84
from gridwatch.ingest.errors import ImportFileError, RowError
from gridwatch.ingest.mapping import ColumnMapping, load_mapping
from gridwatch.ingest.parsing import is_blank, parse_datetime, parse_float, text
from gridwatch.ingest.readers import GEOMETRY_KEY, ROW_ERROR_KEY, Source, open_source
from gridwatch.ingest.spatial import GridIndex
from gridwatch.observability import import_file_refused
from gridwatch.spreadsheet import safe_row
from gridwatch.storage.db import session_scope, upgrade_database
from gridwatch.storage.models import ImportBatch, RejectedRow, utcnow

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class Field:
    """A field an importer understands, with the header spellings that mean it."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class ImportOptions:
    """What the user said on the command line (or the API) about one file."""

    layer: str | None = None
    crs: str | None = None
    encoding: str | None = "auto"
    mapping: Path | None = None


@dataclass
class ImportSummary:
    """The outcome of one import, as printed by ``gridwatch import --json``."""

    file: str
    kind: str
    read: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    report: str | None = None
    batch_id: int | None = None
    affected_grid_ids: set[int] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """Return the JSON summary (file, kind, read, imported, duplicates, rejected, report)."""
        return {
            "file": self.file,
            "kind": self.kind,
            "read": self.read,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "report": self.report,
            "batch_id": self.batch_id,
        }


@dataclass
class Rejection:
    """One quarantined row."""

    row: int
    column: str
    reason: str
    raw: dict[str, Any]


@dataclass
class Record:
    """A validated row on its way to the database."""

    row: int
    values: dict[str, Any]
    raw: dict[str, Any]
    key: str = ""


def normalise_header(name: str) -> str:
    """Fold a header for matching: NFKC, case, and no spaces, underscores or hyphens."""
    folded = unicodedata.normalize("NFKC", str(name)).casefold()
    return re.sub(r"[\s_\-]+", "", folded)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        if isinstance(value, float) and value != value:
            return None
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def raw_for_storage(raw: dict[str, Any]) -> dict[str, Any]:
    """Return a row's original cells as JSON-safe values (geometry as WKT, shortened)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == GEOMETRY_KEY:
            out["geometry"] = None if value is None else value.wkt[:2000]
        elif key != ROW_ERROR_KEY:
            out[key] = _jsonable(value)
    return out


def _content_hash(kind: str, raw: dict[str, Any]) -> str:
    parts = [kind]
    for key in sorted(raw):
        value = raw[key]
        if key == GEOMETRY_KEY:
            value = None if value is None else shapely.to_wkb(value, hex=True)
        parts.append(f"{key}={_jsonable(value)}")
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def insert_ignoring_duplicates(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose unique key is already stored (both backends)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only the two supported backends
        raise RuntimeError(f"unsupported database {dialect}")
    session.execute(stmt, rows)


class Importer:
    """Base class of the per-kind importers.

    Subclasses set :attr:`kind`, :attr:`fields`, :attr:`table` and :attr:`key_column`, and
    implement :meth:`parse` (one row → validated values) and :meth:`to_rows` (records →
    table rows). Point kinds set :attr:`has_point` to get coordinate conversion, extent
    checks and the grid join for free.
    """

    kind: ClassVar[str]
    fields: ClassVar[tuple[Field, ...]]
    table: ClassVar[Table]
    key_field: ClassVar[str | None] = "id"
    key_column: ClassVar[str] = "source_id"
    has_point: ClassVar[bool] = False
    point_required: ClassVar[bool] = True
    formats: ClassVar[frozenset[str]] = frozenset({"csv", "xlsx"})

    def __init__(
        self,
        settings: Settings,
        session: Session,
        options: ImportOptions,
        mapping: ColumnMapping,
        source: Source,
    ) -> None:
        self.settings = settings
        self.session = session
        self.options = options
        self.mapping = mapping
        self.source = source
        self.tz: ZoneInfo = mapping.source_timezone or settings.timezone
        crs_name = options.crs or mapping.crs or source.crs
        try:
            self.crs = normalise_crs_name(crs_name)
        except CoordinateSystemError as exc:
            raise ImportFileError(str(exc)) from exc
        self.grid_index: GridIndex | None = None
        self.affected_grid_ids: set[int] = set()
        # Dates more than a day ahead of the import are typing errors, not future events.
        self.latest_plausible = utcnow() + timedelta(days=1)

    # -- hooks -------------------------------------------------------------------------
    @classmethod
    def all_fields(cls, settings: Settings) -> tuple[Field, ...]:
        """Return the fields of this kind (may depend on configuration)."""
        return cls.fields

    def prepare(self) -> None:
        """Load lookups before the first row (grid index, known codes …)."""
        if self.has_point:
            self.grid_index = GridIndex.load(self.session)

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one row's mapped values; raise :class:`RowError` to reject it."""
        raise NotImplementedError

    def to_rows(self, records: list[Record], batch_id: int) -> list[dict[str, Any]]:
        """Turn validated records into rows for :attr:`table`."""
        raise NotImplementedError

    def write(self, records: list[Record], batch_id: int) -> int:
        """Insert new records (duplicates are already removed); return how many."""
        insert_ignoring_duplicates(self.session, self.table, self.to_rows(records, batch_id))
        return len(records)

    def finish(self, batch_id: int, reject: Callable[[Rejection], None]) -> int:
        """Run after the last chunk; return how many more rows were imported there."""
        return 0

    # -- shared helpers for subclasses ---------------------------------------------------
    def datetime_value(
        self, values: dict[str, Any], name: str, required: bool = False
    ) -> datetime | None:
        """Parse a date/time field in the source time zone, or ``None`` when blank."""
        value = values.get(name)
        if is_blank(value):
            if required:
                raise RowError(name, "required value is missing")
            return None
        try:
            moment = parse_datetime(value, self.tz, self.mapping.datetime_format)
        except ValueError as exc:
            raise RowError(name, str(exc)) from None
        if moment.year < 1970 or moment > self.latest_plausible:
            raise RowError(name, f"{text(value)!r} is not a plausible date (in the future?)")
        return moment

    def float_value(
        self,
        values: dict[str, Any],
        name: str,
        low: float | None = None,
        high: float | None = None,
    ) -> float | None:
        """Parse an optional number, checking an inclusive range."""
        value = values.get(name)
        if is_blank(value):
            return None
        try:
            number = parse_float(value)
        except ValueError as exc:
            raise RowError(name, str(exc)) from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise RowError(name, f"{number:g} is outside {low:g}–{high:g}")
        return number

    def required_text(self, values: dict[str, Any], name: str) -> str:
        """Return a non-empty text field or reject the row."""
        value = text(values.get(name))
        if not value:
            raise RowError(name, "required value is missing")
        return value

    def point_values(self, values: dict[str, Any]) -> tuple[float, float] | None:
        """Parse raw ``lon``/``lat`` (still in the source CRS); conversion comes later."""
        lon, lat = values.get("lon"), values.get("lat")
        if is_blank(lon) and is_blank(lat) and not self.point_required:
            return None
        out = []
        for name, value in (("lon", lon), ("lat", lat)):
            if is_blank(value):
                raise RowError(name, "required value is missing")
            try:
                out.append(parse_float(value))
            except ValueError as exc:
                raise RowError(name, str(exc)) from None
        return out[0], out[1]

    def locate(self, records: list[Record], reject: Callable[[Rejection], None]) -> list[Record]:
        """Convert points to WGS84, check them and join them to grids (vectorised)."""
        with_point = [r for r in records if r.values.get("_xy") is not None]
        if with_point:
            xy = np.array([r.values["_xy"] for r in with_point], dtype=np.float64)
            lon, lat = to_wgs84(xy[:, 0], xy[:, 1], self.crs)
            finite = np.isfinite(lon) & np.isfinite(lat)
            valid = finite & (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
            valid &= ~((np.abs(lon) < 1e-9) & (np.abs(lat) < 1e-9))
            extent = self.settings.county_extent
            inside = valid.copy()
            if extent is not None:
                inside &= (lon >= extent[0]) & (lon <= extent[2])
                inside &= (lat >= extent[1]) & (lat <= extent[3])
            grid_ids = (
                self.grid_index.assign(lon, lat)
                if self.grid_index is not None
                else np.full(len(lon), -1)
            )
            for i, record in enumerate(with_point):
                x, y = record.values["_xy"]
                if not valid[i]:
                    record.values["_rejected"] = RowError(
                        "lon", f"({x:g}, {y:g}) is not a valid coordinate in {self.crs}"
                    )
                    continue
                if not inside[i]:
                    record.values["_rejected"] = RowError(
                        "lon",
                        f"({lon[i]:.6f}, {lat[i]:.6f}) lies outside the county extent "
                        f"{extent}; wrong coordinate system (try --crs gcj02/bd09)?",
                    )
                    continue
                record.values["lon"] = round(float(lon[i]), 7)
                record.values["lat"] = round(float(lat[i]), 7)
                gid = int(grid_ids[i])
                record.values["grid_id"] = gid if gid >= 0 else None
                record.values["outside_grids"] = gid < 0
        kept = []
        for record in records:
            error = record.values.pop("_rejected", None)
            record.values.pop("_xy", None)
            if error is not None:
                reject(Rejection(record.row, error.column, error.reason, record.raw))
            else:
                kept.append(record)
        return kept

    @staticmethod
    def point_wkb(records: Iterable[Record]) -> list[bytes | None]:
        """Return WKB points for records that have coordinates."""
        records = list(records)
        lon = np.array([r.values.get("lon") for r in records], dtype=float)
        lat = np.array([r.values.get("lat") for r in records], dtype=float)
        has_point = np.isfinite(lon) & np.isfinite(lat)
        wkb = np.full(len(records), None, dtype=object)
        if has_point.any():
            wkb[has_point] = shapely.to_wkb(shapely.points(lon[has_point], lat[has_point]))
        return list(wkb)

    def existing_keys(self, keys: list[str]) -> set[str]:
        """Return which keys are already stored."""
        column = self.table.c[self.key_column]
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            found.update(self.session.scalars(select(column).where(column.in_(part))))
        return found


def resolve_header(
    source: Source, fields: tuple[Field, ...], mapping: ColumnMapping
) -> dict[str, str]:
    """Match the file's columns to the importer's fields.

    Returns
    -------
    dict
        Field name → file column, for every field found.

    Raises
    ------
    ImportFileError
        When a required field is neither in the file nor set as a constant.
    """
    by_norm = {normalise_header(c): c for c in source.columns}
    found: dict[str, str] = {}
    for fld in fields:
        if fld.name in mapping.columns:
            wanted = mapping.columns[fld.name]
            column = wanted if wanted in source.columns else by_norm.get(normalise_header(wanted))
            if column is None:
                raise ImportFileError(
                    f"{source.path.name}: the mapping file names column {wanted!r} for "
                    f"{fld.name!r}, but the file has no such column "
                    f"(it has: {', '.join(source.columns)})"
                )
            found[fld.name] = column
            continue
        for spelling in (fld.name, *fld.aliases):
            column = by_norm.get(normalise_header(spelling))
            if column is not None and column not in found.values():
                found[fld.name] = column
                break
    missing = [
        f.name
        for f in fields
        if f.required and f.name not in found and f.name not in mapping.constants
    ]
    if missing:
        hints = {f.name: f.aliases[:2] for f in fields if f.name in missing}
        spelled = "; ".join(f"{name} (e.g. {', '.join(a) or name})" for name, a in hints.items())
        raise ImportFileError(
            f"{source.path.name}: required columns missing: {spelled}. "
            f"The file has: {', '.join(source.columns) or '(no columns)'}"
        )
    return found


def write_report(path: Path, file_name: str, rejections: list[Rejection]) -> None:
    """Write rejected rows to a CSV (UTF-8 with BOM so Excel shows Chinese correctly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw_columns: list[str] = []
    for rejection in rejections:
        for key in raw_for_storage(rejection.raw):
            if key not in raw_columns:
                raw_columns.append(key)
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        # Raw cells and the file's own headers come from the user: no formula may survive.
        writer.writerow(safe_row(["file", "row", "column", "reason", *raw_columns]))
        for rejection in sorted(rejections, key=lambda r: r.row):
            raw = raw_for_storage(rejection.raw)
            writer.writerow(
                safe_row(
                    [file_name, rejection.row, rejection.column, rejection.reason]
                    + ["" if raw.get(c) is None else raw.get(c) for c in raw_columns]
                )
            )


def run_import(
    importer_cls: type[Importer],
    path: Path,
    settings: Settings,
    engine: Engine,
    options: ImportOptions | None = None,
    progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import one file with one importer; see the module docstring for the guarantees.

    Parameters
    ----------
    importer_cls : type
        The importer for the file's kind.
    path : pathlib.Path
    settings : Settings
    engine : sqlalchemy.Engine
    options : ImportOptions, optional
    progress : callable, optional
        Called with the number of rows read so far after each chunk.

    Raises
    ------
    ImportFileError
        When the file as a whole cannot be imported; nothing is committed then.
    """
    options = options or ImportOptions()
    path = Path(path)
    fields = importer_cls.all_fields(settings)
    # A file refused here leaves no batch behind, so the refusal is counted as a metric.
    reason = "mapping"
    try:
        mapping = load_mapping(options.mapping, {f.name for f in fields})
        reason = "unreadable"
        source = open_source(path, options.encoding, options.layer)
        reason = "format"
        if source.format not in importer_cls.formats:
            raise ImportFileError(
                f"{path.name}: {importer_cls.kind} cannot be imported from a {source.format} "
                f"file (use {', '.join(sorted(importer_cls.formats))})"
            )
        reason = "columns"
        header = resolve_header(source, fields, mapping)
    except ImportFileError:
        import_file_refused(importer_cls.kind, reason)
        raise
    upgrade_database(engine)
    digest = file_sha256(path)
    summary = ImportSummary(file=str(path), kind=importer_cls.kind)
    rejections: list[Rejection] = []
    batch_options = {
        "layer": options.layer,
        "crs": options.crs,
        "encoding": source.encoding or options.encoding,
        "mapping": str(options.mapping) if options.mapping else None,
    }
    try:
        with session_scope(engine) as session:
            batch = ImportBatch(
                kind=importer_cls.kind,
                file_name=path.name,
                file_sha256=digest,
                options=batch_options,
            )
            session.add(batch)
            session.flush()
            summary.batch_id = batch.id
            importer = importer_cls(settings, session, options, mapping, source)
            importer.prepare()
            seen: dict[str, int] = {}
            occurrences: dict[str, int] = {}

            def reject(rejection: Rejection) -> None:
                rejections.append(rejection)

            for chunk in source.chunks(settings.import_chunk_size):
                records: list[Record] = []
                for row_number, raw in chunk:
                    summary.read += 1
                    if raw.get(ROW_ERROR_KEY):
                        reject(Rejection(row_number, "", raw[ROW_ERROR_KEY], raw))
                        continue
                    values = {name: raw.get(column) for name, column in header.items()}
                    for name, constant in mapping.constants.items():
                        if is_blank(values.get(name)):
                            values[name] = constant
                    values = {n: mapping.translate(n, v) for n, v in values.items()}
                    if GEOMETRY_KEY in raw:
                        values[GEOMETRY_KEY] = raw[GEOMETRY_KEY]
                    try:
                        parsed = importer.parse(values)
                    except RowError as exc:
                        reject(Rejection(row_number, exc.column, exc.reason, raw))
                        continue
                    record = Record(row_number, parsed, raw)
                    key_field = importer.key_field
                    explicit = text(values.get(key_field)) if key_field else ""
                    if "_key" in parsed:
                        record.key = str(parsed.pop("_key"))
                    elif explicit:
                        record.key = explicit
                    elif key_field in header:
                        # The file has ids: a blank one is a data error, not a content id.
                        reject(Rejection(row_number, key_field, "required value is missing", raw))
                        continue
                    else:
                        digest_key = _content_hash(importer.kind, raw)
                        nth = occurrences.get(digest_key, 0)
                        occurrences[digest_key] = nth + 1
                        record.key = f"h:{digest_key}:{nth}"
                    if record.key in seen:
                        column = key_field or ""
                        reject(
                            Rejection(
                                row_number,
                                column,
                                f"duplicate id {record.key!r} within the file "
                                f"(first at row {seen[record.key]})",
                                raw,
                            )
                        )
                        continue
                    seen[record.key] = row_number
                    records.append(record)
                # Duplicates first: rows already stored need no conversion or grid join.
                existing = importer.existing_keys([r.key for r in records])
                summary.duplicates += sum(1 for r in records if r.key in existing)
                new = [r for r in records if r.key not in existing]
                if importer.has_point:
                    new = importer.locate(new, reject)
                    importer.affected_grid_ids.update(
                        r.values["grid_id"] for r in new if r.values.get("grid_id") is not None
                    )
                summary.imported += importer.write(new, batch.id)
                if progress is not None:
                    progress(summary.read)
            summary.imported += importer.finish(batch.id, reject)
            summary.rejected = len(rejections)
            if rejections:
                # A re-import finds its rejected rows already stored (unique per file and row).
                insert_ignoring_duplicates(
                    session,
                    cast(Table, RejectedRow.__table__),
                    [
                        {
                            "batch_id": batch.id,
                            "kind": importer.kind,
                            "file_name": path.name,
                            "file_sha256": digest,
                            "row_number": rejection.row,
                            "column_name": rejection.column,
                            "reason": rejection.reason,
                            "raw": raw_for_storage(rejection.raw),
                        }
                        for rejection in rejections
                    ],
                )
                report = settings.reports_dir / (
                    f"batch-{batch.id:06d}-{importer.kind}-{path.stem}-rejected.csv"
                )
                write_report(report, path.name, rejections)
                summary.report = str(report)
            summary.affected_grid_ids = importer.affected_grid_ids
            batch.rows_read = summary.read
            batch.rows_imported = summary.imported
            batch.rows_duplicate = summary.duplicates
            batch.rows_rejected = summary.rejected
            batch.report_path = summary.report
            batch.status = "done"
            batch.finished_at = datetime.now(UTC)
    except ImportFileError as exc:
        _record_failed_batch(engine, importer_cls.kind, path, digest, batch_options, str(exc))
        raise
    return summary


def _record_failed_batch(
    engine: Engine, kind: str, path: Path, digest: str, options: dict[str, Any], message: str
) -> None:
    with session_scope(engine) as session:
        session.add(
            ImportBatch(
                kind=kind,
                file_name=path.name,
                file_sha256=digest,
                options=options,
                status="failed",
                message=message,
                finished_at=datetime.now(UTC),
            )
        )


__all__ = [
    "Field",
    "ImportOptions",
    "ImportSummary",
    "Importer",
    "Record",
    "Rejection",
    "resolve_header",
    "run_import",
]
