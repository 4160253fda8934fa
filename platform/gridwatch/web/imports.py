"""Imports: upload a file, read its validation report, download its rejected rows.

Admin and county users see every import batch; station and township users see only the
batches they uploaded themselves (matched through the audit log, see :mod:`gridwatch.uploads`).
"""

from __future__ import annotations

import io
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, send_file, url_for
from flask_babel import gettext as _
from werkzeug.datastructures import FileStorage
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from gridwatch.ingest import IMPORTERS, ImportSummary
from gridwatch.spreadsheet import safe_csv_bytes
from gridwatch.uploads import (
    IMPORT_ROLES,
    import_upload,
    rejected_rows,
    report_path,
    save_upload,
    visible_batch,
    visible_batches,
)
from gridwatch.web.access import client_ip, current_user, roles_required
from gridwatch.web.extensions import state
from gridwatch.web.forms import ImportForm
from gridwatch.web.labels import import_kind_label

bp = Blueprint("imports", __name__, url_prefix="/imports")


def run_upload(kind: str, upload: FileStorage) -> tuple[ImportSummary, dict[str, Any] | None]:
    """Save and import one uploaded file, then refresh the grids it changed.

    Returns the summary and the refresh started (``None`` when no grid changed).

    Raises
    ------
    gridwatch.ingest.ImportFileError
        When the file cannot be imported at all (nothing is committed then).
    """
    from gridwatch.targeting.survey_results import warm_after_import
    from gridwatch.workers.service import refresh_after_import

    settings, engine = state().settings, state().engine
    user = current_user()
    assert user is not None
    original = upload.filename or ""
    path = save_upload(upload.stream, original, settings)
    summary = import_upload(kind, path, original, settings, engine, user, ip=client_ip())
    refresh = None
    if summary.affected_grid_ids:
        refresh = refresh_after_import(settings, engine, summary.affected_grid_ids, kind=kind)
    warm_after_import(engine, settings, kind, summary.imported)
    return summary, refresh


def _form() -> ImportForm:
    form = ImportForm()
    form.kind.choices = [SelectChoice(kind, import_kind_label(kind)) for kind in IMPORTERS]
    return form


def _index_page(form: ImportForm, error: str | None = None, status: int = 200) -> Any:
    user = current_user()
    assert user is not None
    batches = visible_batches(state().engine, user)
    return (
        render_template("imports/index.html", form=form, error=error, batches=batches),
        status,
    )


@bp.get("/")
@roles_required(*IMPORT_ROLES)
def index() -> Any:
    """Show the upload form and the history of import batches, newest first."""
    return _index_page(_form())


@bp.post("/")
@roles_required(*IMPORT_ROLES)
def upload() -> Any:
    """Import the uploaded file and show its report (or the one sentence why it failed)."""
    from gridwatch.ingest import ImportFileError

    form = _form()
    if not form.validate_on_submit():
        return _index_page(form, status=400)
    try:
        summary, _refresh = run_upload(form.kind.data or "", form.file.data)
    except ImportFileError as exc:
        return _index_page(form, error=str(exc), status=400)
    flash(_("File imported."), "info")
    return redirect(url_for("imports.batch", batch_id=summary.batch_id), code=303)


def _visible_batch_or_404(batch_id: int) -> dict[str, Any]:
    user = current_user()
    assert user is not None
    found = visible_batch(state().engine, user, batch_id)
    if found is None:
        abort(404)
    return found


@bp.get("/<int:batch_id>")
@roles_required(*IMPORT_ROLES)
def batch(batch_id: int) -> str:
    """Show one batch's validation report: counts and rejected rows (row, column, reason)."""
    found = _visible_batch_or_404(batch_id)
    path = report_path(state().engine, state().settings, batch_id)
    rows = rejected_rows(path) if path is not None else []
    return render_template("imports/batch.html", batch=found, rows=rows, has_report=bool(path))


@bp.get("/<int:batch_id>/rejected.csv")
@roles_required(*IMPORT_ROLES)
def rejected_csv(batch_id: int) -> Response:
    """Download a batch's rejected rows as CSV (only for users who may see the batch)."""
    _visible_batch_or_404(batch_id)
    path = report_path(state().engine, state().settings, batch_id)
    if path is None:
        abort(404)
    # Re-escaped on the way out: reports written by older versions kept formulas as they were.
    return send_file(
        io.BytesIO(safe_csv_bytes(path)),
        mimetype="text/csv",
        as_attachment=True,
        download_name=f"batch-{batch_id:06d}-rejected.csv",
    )
