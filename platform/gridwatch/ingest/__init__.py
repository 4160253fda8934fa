"""Importers: read real-world files, validate every row, quarantine rejects, commit the rest.

``IMPORTERS`` maps each ``gridwatch import KIND`` to its importer class; :func:`import_file`
is the one entry point used by the CLI, the demo and (later) the web upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine

from gridwatch.config import Settings
from gridwatch.ingest.areas import AreaImporter
from gridwatch.ingest.base import Importer, ImportOptions, ImportSummary, run_import
from gridwatch.ingest.cameras import CameraImporter
from gridwatch.ingest.errors import ImportFileError, RowError
from gridwatch.ingest.incidents import IncidentImporter
from gridwatch.ingest.organisation import StationImporter, TeamImporter
from gridwatch.ingest.patrols import PatrolImporter
from gridwatch.ingest.surveys import SurveyResponseImporter, SurveyResultImporter

IMPORTERS: dict[str, type[Importer]] = {
    cls.kind: cls
    for cls in (
        AreaImporter,
        StationImporter,
        IncidentImporter,
        CameraImporter,
        TeamImporter,
        PatrolImporter,
        SurveyResultImporter,
        SurveyResponseImporter,
    )
}


def import_file(
    kind: str,
    path: Path,
    settings: Settings,
    engine: Engine,
    options: ImportOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Import one file of ``kind`` (see :data:`IMPORTERS`).

    Raises
    ------
    ImportFileError
        For an unknown kind or a file that cannot be imported as a whole.
    """
    if kind not in IMPORTERS:
        raise ImportFileError(f"unknown import kind {kind!r}; use one of {', '.join(IMPORTERS)}")
    return run_import(IMPORTERS[kind], Path(path), settings, engine, options, progress)


__all__ = [
    "IMPORTERS",
    "ImportFileError",
    "ImportOptions",
    "ImportSummary",
    "RowError",
    "import_file",
]
