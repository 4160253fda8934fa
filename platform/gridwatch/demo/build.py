"""Build the demo county: generate its files, then import them through the real importers.

Nothing here writes to the database directly: the demo goes through exactly the path a
county's own files take, bad rows included, so the demo exercises the product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine

from gridwatch.config import Settings
from gridwatch.demo.generator import DemoFiles, generate_demo
from gridwatch.ingest import ImportOptions, ImportSummary, import_file
from gridwatch.storage.db import upgrade_database


@dataclass
class DemoReport:
    """What the demo build produced: the files and one import summary per file."""

    files: DemoFiles
    imports: list[ImportSummary] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Rows rejected across all files (the deliberately bad ones)."""
        return sum(s.rejected for s in self.imports)


def import_plan(files: DemoFiles) -> list[tuple[str, Path, ImportOptions]]:
    """Return the imports in dependency order (areas before what refers to them)."""
    return [
        ("grids", files.grids, ImportOptions()),
        ("stations", files.stations, ImportOptions()),
        ("teams", files.teams, ImportOptions()),
        # The incident file is what a 110 system exports: GBK, Chinese headers, GCJ-02.
        ("incidents", files.incidents, ImportOptions(crs="gcj02", encoding="auto")),
        ("cameras", files.cameras, ImportOptions()),
        ("patrols", files.patrols, ImportOptions()),
        ("patrols", files.patrol_gpx, ImportOptions()),
        ("surveys", files.surveys, ImportOptions()),
        ("survey-responses", files.survey_responses, ImportOptions()),
    ]


def build_demo(
    settings: Settings,
    engine: Engine,
    out_dir: Path,
    seed: int = 7,
    scale: Literal["small", "county"] = "small",
    progress: Callable[[str], None] | None = None,
    row_progress: Callable[[str], Callable[[int], None]] | None = None,
) -> DemoReport:
    """Generate the demo county's files under ``out_dir`` and import them.

    Parameters
    ----------
    settings : Settings
    engine : sqlalchemy.Engine
    out_dir : pathlib.Path
        Where the generated files are written (kept, so users can look at them).
    seed, scale
        Passed to :func:`gridwatch.demo.generator.generate_demo`.
    progress : callable, optional
        Receives one message per stage.
    row_progress : callable, optional
        Given a file name, returns a callback for rows read (long imports).
    """
    say = progress or (lambda message: None)
    upgrade_database(engine)
    files = generate_demo(Path(out_dir), seed=seed, scale=scale, progress=say)
    # Points outside the county are errors in the demo data: check them against its extent.
    demo_settings = (
        settings if settings.county_extent else replace(settings, county_extent=files.extent)
    )
    report = DemoReport(files=files)
    for kind, path, options in import_plan(files):
        say(f"import {kind}: {path.name}")
        callback = row_progress(path.name) if row_progress else None
        summary = import_file(kind, path, demo_settings, engine, options, progress=callback)
        report.imports.append(summary)
    return report
