"""The ``gridwatch`` command line: a thin face over the domain functions.

Every command turns known errors (bad settings, unreadable files, unreachable database) into
one clear sentence and exit status 2; a user never sees a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gridwatch.config import ConfigError, Settings, load_settings
from gridwatch.storage import DatabaseError, create_db_engine, upgrade_database

F = TypeVar("F", bound=Callable[..., Any])

#: The kinds ``gridwatch import`` accepts (kept here so --help needs no heavy imports).
IMPORT_KINDS = [
    "grids",
    "stations",
    "incidents",
    "cameras",
    "teams",
    "patrols",
    "surveys",
    "survey-responses",
]


class UserFacingError(click.ClickException):
    """An error shown to the user as one sentence, exiting with status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        """Print ``gridwatch: <message>`` on standard error."""
        click.echo(f"gridwatch: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from gridwatch.ingest.errors import ImportFileError

    return (ConfigError, DatabaseError, ImportFileError)


def friendly_errors(func: F) -> F:
    """Turn the errors a user can cause into :class:`UserFacingError`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _known_errors() as exc:
            raise UserFacingError(str(exc)) from exc

    return wrapper  # type: ignore[return-value]


def get_settings(ctx: click.Context) -> Settings:
    """Return the settings for this invocation (read once, from the environment)."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = load_settings()
        except ConfigError as exc:
            raise UserFacingError(str(exc)) from exc
    settings: Settings = obj["settings"]
    return settings


def emit_json(data: Any) -> None:
    """Print ``data`` as JSON (UTF-8, Chinese unescaped)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


@click.group()
@click.version_option(package_name="gridwatch")
@click.pass_context
def main(ctx: click.Context) -> None:
    """GridWatch: grid-based incident and prevention monitoring (平安建设 / 综治)."""
    ctx.ensure_object(dict)


@main.group()
def db() -> None:
    """Create or migrate the database schema."""


@db.command("upgrade")
@click.pass_context
@friendly_errors
def db_upgrade(ctx: click.Context) -> None:
    """Create the schema on an empty database or migrate it to the newest revision."""
    settings = get_settings(ctx)
    engine = create_db_engine(settings.database_url)
    revision = upgrade_database(engine)
    click.echo(f"database at revision {revision}: {engine.url.render_as_string()}")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
@friendly_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Show what the database holds: counts, schema revision and the latest imports."""
    from gridwatch.status import collect_status, format_status

    settings = get_settings(ctx)
    report = collect_status(create_db_engine(settings.database_url), settings)
    if as_json:
        emit_json(report)
    else:
        click.echo(format_status(report))


@main.group()
def export() -> None:
    """Export data for GIS and other tools."""


class _LayerProgress:
    """One progress bar per exported layer, on standard error."""

    def __init__(self) -> None:
        self._bars = contextlib.ExitStack()
        self._bar: Any = None
        self._layer = ""
        self._done = 0

    def __call__(self, layer: str, done: int, total: int) -> None:
        if layer != self._layer:
            self.close()
            self._layer, self._done = layer, 0
            bar = click.progressbar(length=max(total, 1), label=f"{layer:<13}", file=sys.stderr)
            self._bar = self._bars.enter_context(bar)
        self._bar.update(done - self._done)
        self._done = done

    def close(self) -> None:
        self._bars.close()


@export.command("gpkg")
@click.argument("out_path", metavar="OUT.gpkg", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
@friendly_errors
def export_gpkg_command(ctx: click.Context, out_path: Path) -> None:
    """Write areas, incidents, cameras, stations and patrol pings to a GeoPackage.

    All layers are in WGS84 (EPSG:4326); an existing OUT.gpkg is replaced.
    """
    from gridwatch.export import export_gpkg

    settings = get_settings(ctx)
    if not out_path.parent.is_dir():
        raise UserFacingError(f"the folder {out_path.parent} does not exist")
    progress = _LayerProgress()
    try:
        counts = export_gpkg(
            create_db_engine(settings.database_url),
            out_path,
            settings.timezone,
            progress=progress,
        )
    finally:
        progress.close()
    click.echo(f"wrote {out_path} (EPSG:4326)")
    width = max(len(layer) for layer in counts)
    for layer, n in counts.items():
        click.echo(f"  {layer:<{width}}  {n:>12,}")


class RowProgress:
    """Report rows read on standard error while a long import runs."""

    def __init__(self, label: str, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()

    def __call__(self, rows: int) -> None:
        """Print the running count (overwriting the line on a terminal)."""
        if self.quiet:
            return
        end = "\r" if self.tty else "\n"
        click.echo(f"{self.label}: {rows:,} rows read", err=True, nl=False)
        click.echo(end, err=True, nl=False)

    def done(self) -> None:
        """End the progress line."""
        if self.tty and not self.quiet:
            click.echo("", err=True)


def summary_line(summary: dict[str, Any]) -> str:
    """Return the one-line human summary of an import."""
    line = (
        f"{Path(summary['file']).name} [{summary['kind']}]: read {summary['read']:,}, "
        f"imported {summary['imported']:,}, duplicates {summary['duplicates']:,}, "
        f"rejected {summary['rejected']:,}"
    )
    if summary.get("report"):
        line += f"\n  rejected rows (row, column, reason): {summary['report']}"
    return line


@main.command("import")
@click.argument("kind", type=click.Choice(IMPORT_KINDS))
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--layer", help="Layer (GeoPackage) or sheet (XLSX) to read.")
@click.option(
    "--crs",
    help="Coordinate system of the file: wgs84, cgcs2000, gcj02 (Amap/Tencent), bd09 (Baidu) "
    "or EPSG:n. Default: the file's own, else wgs84.",
)
@click.option(
    "--encoding",
    default="auto",
    show_default=True,
    help="Text encoding of CSV files: auto, utf-8, gbk or gb18030.",
)
@click.option(
    "--mapping",
    type=click.Path(path_type=Path),
    help="YAML file renaming foreign columns and values.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
@friendly_errors
def import_command(
    ctx: click.Context,
    kind: str,
    file: Path,
    layer: str | None,
    crs: str | None,
    encoding: str,
    mapping: Path | None,
    as_json: bool,
) -> None:
    """Import FILE of KIND; bad rows are quarantined and listed, good rows committed."""
    from gridwatch.ingest import ImportOptions, import_file

    settings = get_settings(ctx)
    engine = create_db_engine(settings.database_url)
    progress = RowProgress(file.name)
    options = ImportOptions(layer=layer, crs=crs, encoding=encoding, mapping=mapping)
    summary = import_file(kind, file, settings, engine, options, progress=progress)
    progress.done()
    data = summary.as_dict()
    if as_json:
        emit_json(data)
    else:
        click.echo(summary_line(data))


@main.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the demo files (default: var/demo).",
)
@click.option("--seed", default=7, show_default=True, help="Random seed (same seed, same county).")
@click.option(
    "--scale",
    type=click.Choice(["small", "county"]),
    default="small",
    show_default=True,
    help="small ≈ 20,000 incidents; county ≈ 200,000.",
)
@click.option("--no-serve", is_flag=True, help="Stop after building the data.")
@click.option("--port", default=5000, show_default=True, help="Port for the web app.")
@click.pass_context
@friendly_errors
def demo_command(
    ctx: click.Context,
    out_dir: Path | None,
    seed: int,
    scale: str,
    no_serve: bool,
    port: int,
) -> None:
    """Build the synthetic demo county through the real importers (then serve it)."""
    from gridwatch.demo.build import build_demo

    settings = get_settings(ctx)
    engine = create_db_engine(settings.database_url)
    target = out_dir or settings.var_dir / "demo"
    click.echo(f"GridWatch demo county (seed {seed}, scale {scale}) → {target}")

    def say(message: str) -> None:
        click.echo(f"  · {message}")

    report = build_demo(
        settings,
        engine,
        target,
        seed=seed,
        scale=scale,  # type: ignore[arg-type]
        progress=say,
        row_progress=lambda name: RowProgress(f"    {name}"),
    )
    click.echo("")
    for summary in report.imports:
        click.echo("  " + summary_line(summary.as_dict()).replace("\n", "\n  "))
    click.echo(
        f"\nDemo data ready: {sum(s.imported for s in report.imports):,} rows imported, "
        f"{report.rejected} deliberately bad rows quarantined. Try: gridwatch status"
    )
    if not no_serve:
        # The web app arrives with the web issue; until then the demo ends with the data.
        click.echo("The web app is not part of this version yet; nothing to serve.")


def run() -> None:
    """Entry point that never shows a traceback for errors the user can fix."""
    main(standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
