"""Files uploaded through the web: storing them, importing them, and who may see which batch.

An upload is saved under ``var/uploads`` with a generated name (the user's file name is text
to show, never a path) and imported by :func:`gridwatch.ingest.import_file`. The audit event of
each import names the batch and the original file name; it is also how a station or township
user's own batches are found: those users see only batches they uploaded, while admin and
county users see every batch, including those imported from the command line.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, select

from gridwatch.accounts import Principal, audit
from gridwatch.config import Settings
from gridwatch.ingest import ImportFileError, ImportOptions, ImportSummary, import_file
from gridwatch.storage import session_scope
from gridwatch.storage.models import AuditEvent, ImportBatch

#: Roles that may upload files.
IMPORT_ROLES = ("admin", "county", "station", "township")
#: Roles that see every import batch; the others see only their own uploads.
ALL_BATCHES_ROLES = ("admin", "county")
#: File types the importers read (a Shapefile comes zipped, with its sidecar files).
UPLOAD_SUFFIXES = frozenset(
    {".csv", ".txt", ".tsv", ".xlsx", ".xlsm", ".xls"}
    | {".geojson", ".json", ".gpkg", ".zip", ".gpx"}
)
#: Rejected rows shown on a batch's page; the CSV report holds them all.
REJECTED_ROWS_SHOWN = 500
#: Batches listed in the history.
BATCHES_SHOWN = 100


def uploads_dir(settings: Settings) -> Path:
    """Return the directory holding uploaded files."""
    return settings.var_dir / "uploads"


def display_name(original_name: str) -> str:
    """Return the last part of a user's file name, for display only (at most 200 characters)."""
    name = original_name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:200] or "upload"


def save_upload(stream: IO[bytes], original_name: str, settings: Settings) -> Path:
    """Save an uploaded file under a generated name, keeping only a known file-type suffix.

    An unknown suffix is dropped, so the importer answers that the file type is unsupported.
    """
    suffix = Path(display_name(original_name)).suffix.lower()
    directory = uploads_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{uuid.uuid4().hex}{suffix if suffix in UPLOAD_SUFFIXES else ''}"
    with open(path, "wb") as out:
        while chunk := stream.read(1024 * 1024):
            out.write(chunk)
    return path


def import_upload(
    kind: str,
    path: Path,
    original_name: str,
    settings: Settings,
    engine: Engine,
    actor: Principal,
    ip: str = "",
) -> ImportSummary:
    """Import a saved upload and record the import in the audit log.

    Raises
    ------
    ImportFileError
        When the file cannot be imported at all; its message names the user's file, not the
        stored one, and the stored file is removed.
    """
    name = display_name(original_name)
    try:
        summary = import_file(kind, path, settings, engine, ImportOptions())
    except ImportFileError as exc:
        path.unlink(missing_ok=True)
        message = str(exc).replace(path.name, name).replace(path.stem, Path(name).stem)
        audit(
            engine,
            "import",
            actor=actor,
            ip=ip,
            target=f"{kind}: {name}",
            detail={"file_name": name, "error": message},
        )
        raise ImportFileError(message) from None
    audit(
        engine,
        "import",
        actor=actor,
        ip=ip,
        target=f"{kind}: {name}",
        detail={
            "batch_id": summary.batch_id,
            "file_name": name,
            "read": summary.read,
            "imported": summary.imported,
            "duplicates": summary.duplicates,
            "rejected": summary.rejected,
        },
    )
    return summary


@dataclass(frozen=True)
class _Upload:
    user_id: int | None
    username: str
    file_name: str


def _uploads(engine: Engine, batch_ids: Iterable[int] | None = None) -> dict[int, _Upload]:
    """Map batch ids to who uploaded them through the web (from the audit log)."""
    wanted = None if batch_ids is None else set(batch_ids)
    found: dict[int, _Upload] = {}
    with session_scope(engine) as session:
        events = session.execute(
            select(AuditEvent.user_id, AuditEvent.username, AuditEvent.detail).where(
                AuditEvent.action == "import", AuditEvent.user_id.is_not(None)
            )
        ).all()
    for user_id, username, detail in events:
        batch_id = (detail or {}).get("batch_id")
        if isinstance(batch_id, int) and (wanted is None or batch_id in wanted):
            found[batch_id] = _Upload(user_id, username, str(detail.get("file_name") or ""))
    return found


def _batch_record(batch: ImportBatch, upload: _Upload | None) -> dict[str, Any]:
    return {
        "id": batch.id,
        "kind": batch.kind,
        "file_name": upload.file_name if upload else batch.file_name,
        "uploaded_by": upload.username if upload else "",
        "started_at": batch.started_at,
        "finished_at": batch.finished_at,
        "status": batch.status,
        "read": batch.rows_read,
        "imported": batch.rows_imported,
        "duplicates": batch.rows_duplicate,
        "rejected": batch.rows_rejected,
        "has_report": bool(batch.report_path),
        "message": batch.message,
    }


def visible_batches(
    engine: Engine, principal: Principal, limit: int = BATCHES_SHOWN
) -> list[dict[str, Any]]:
    """Return the import batches ``principal`` may see, newest first, as plain data."""
    uploads = _uploads(engine)
    query = select(ImportBatch).order_by(ImportBatch.id.desc()).limit(limit)
    if principal.role not in ALL_BATCHES_ROLES:
        own = [i for i, u in uploads.items() if u.user_id == principal.id]
        query = query.where(ImportBatch.id.in_(own))
    with session_scope(engine) as session:
        batches = session.scalars(query).all()
        return [_batch_record(b, uploads.get(b.id)) for b in batches]


def visible_batch(engine: Engine, principal: Principal, batch_id: int) -> dict[str, Any] | None:
    """Return one batch if ``principal`` may see it (``None`` otherwise or when unknown)."""
    upload = _uploads(engine, [batch_id]).get(batch_id)
    if principal.role not in ALL_BATCHES_ROLES and (
        upload is None or upload.user_id != principal.id
    ):
        return None
    with session_scope(engine) as session:
        batch = session.get(ImportBatch, batch_id)
        return None if batch is None else _batch_record(batch, upload)


def report_path(engine: Engine, settings: Settings, batch_id: int) -> Path | None:
    """Return the rejected-rows CSV of a batch, if it exists under the reports directory."""
    with session_scope(engine) as session:
        batch = session.get(ImportBatch, batch_id)
        stored = batch.report_path if batch is not None else None
    if not stored:
        return None
    path = Path(stored).resolve()
    if not path.is_relative_to(settings.reports_dir.resolve()) or not path.is_file():
        return None
    return path


def rejected_rows(path: Path, limit: int = REJECTED_ROWS_SHOWN) -> list[dict[str, str]]:
    """Return the first rejected rows of a report as ``{"row", "column", "reason"}``."""
    rows: list[dict[str, str]] = []
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for record in csv.DictReader(fh):
            if len(rows) >= limit:
                break
            rows.append(
                {
                    "row": record.get("row") or "",
                    "column": record.get("column") or "",
                    "reason": record.get("reason") or "",
                }
            )
    return rows


__all__ = [
    "ALL_BATCHES_ROLES",
    "IMPORT_ROLES",
    "UPLOAD_SUFFIXES",
    "display_name",
    "import_upload",
    "rejected_rows",
    "report_path",
    "save_upload",
    "uploads_dir",
    "visible_batch",
    "visible_batches",
]
