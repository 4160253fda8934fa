"""The ``gridwatch`` command line: a thin face over the domain functions.

Every command turns known errors (bad settings, unreadable files, unreachable database) into
one clear sentence and exit status 2; a user never sees a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import sys
from collections.abc import Callable
from datetime import date
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
        from sqlalchemy.exc import OperationalError

        try:
            return func(*args, **kwargs)
        except _known_errors() as exc:
            raise UserFacingError(str(exc)) from exc
        except OperationalError as exc:
            # The database went away mid-command (stopped, restarted, network): the open
            # transaction was rolled back, so nothing of the unfinished work is stored.
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines() or ["?"]
            raise UserFacingError(
                f"the database stopped answering ({reason[0]}); nothing of the unfinished "
                "work was committed — run the command again when the database is back"
            ) from exc

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


def _settings_and_engine(ctx: click.Context) -> tuple[Settings, Any]:
    """Return the settings and an engine on a database migrated to the current schema."""
    settings = get_settings(ctx)
    engine = create_db_engine(settings.database_url)
    upgrade_database(engine)
    return settings, engine


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
@click.option("--period", help="Metrics period for the areas layer (default: last quarter).")
@click.pass_context
@friendly_errors
def export_gpkg_command(ctx: click.Context, out_path: Path, period: str | None) -> None:
    """Write areas, incidents, cameras, stations and patrol pings to a GeoPackage.

    All layers are in WGS84 (EPSG:4326); an existing OUT.gpkg is replaced. The areas layer
    carries the published metrics of PERIOD (default: the last complete quarter).
    """
    from gridwatch.export import export_gpkg
    from gridwatch.periods import PeriodError, parse_period
    from gridwatch.workers.engine import metrics_by_code

    settings = get_settings(ctx)
    if not out_path.parent.is_dir():
        raise UserFacingError(f"the folder {out_path.parent} does not exist")
    try:
        label = parse_period(period).label if period else _last_quarter_label(settings)
    except PeriodError as exc:
        raise UserFacingError(str(exc)) from exc
    engine = create_db_engine(settings.database_url)
    area_metrics = metrics_by_code(engine, label) or None
    progress = _LayerProgress()
    try:
        counts = export_gpkg(
            engine,
            out_path,
            settings.timezone,
            progress=progress,
            area_metrics=area_metrics,
        )
    finally:
        progress.close()
    _audit_cli(engine, "export", str(out_path), {"format": "gpkg", "layers": counts})
    click.echo(f"wrote {out_path} (EPSG:4326)")
    if area_metrics:
        click.echo(f"  areas carry the published metrics of {label}")
    width = max(len(layer) for layer in counts)
    for layer, n in counts.items():
        click.echo(f"  {layer:<{width}}  {n:>12,}")


def _audit_cli(engine: Any, action: Any, target: str, detail: dict[str, Any]) -> None:
    """Record an import or export made from the command line in the audit log."""
    import getpass

    from sqlalchemy.exc import SQLAlchemyError

    from gridwatch.accounts import audit

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        who = "?"
    try:
        audit(engine, action, username=f"cli:{who}", target=target, detail=detail)
    except SQLAlchemyError:
        # Export does not migrate the schema: an older database has no audit log yet.
        click.echo(
            "gridwatch: not recorded in the audit log (run `gridwatch db upgrade`)", err=True
        )


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
    _audit_cli(
        engine,
        "import",
        f"{kind}: {file.name}",
        {k: data.get(k) for k in ("read", "imported", "duplicates", "rejected")},
    )
    if summary.affected_grid_ids:
        from gridwatch.workers.service import refresh_after_import

        data["refresh"] = refresh_after_import(
            settings, engine, summary.affected_grid_ids, kind=kind
        )
    if kind in ("surveys", "survey-responses"):
        from gridwatch.targeting.survey_results import warm_after_import

        warm_after_import(engine, settings, kind, summary.imported)
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
        f"{report.rejected} deliberately bad rows quarantined."
    )
    from gridwatch.workers.engine import RunRequest
    from gridwatch.workers.service import start_aggregation

    click.echo("Aggregating (incidents, coverage, patrols, hot spots, forecasts) …")
    run = start_aggregation(settings, engine, RunRequest(trigger="demo"), wait=True)
    click.echo(
        f"  run {run['run_id']} [{run['mode']}]: {run['status']}, "
        f"{run.get('rows_written', 0):,} metric rows. Try: gridwatch status; "
        "gridwatch metrics --level township --period "
        f"{_last_quarter_label(settings)}"
    )
    if not no_serve:
        from gridwatch.accounts import AccountError, create_user, set_password

        password = secrets.token_urlsafe(9)
        try:
            create_user(engine, DEMO_USER, "admin", password)
        except AccountError:
            set_password(engine, DEMO_USER, password)
        click.echo(f"\nSign in as {DEMO_USER} with the password {password}")
        _serve(settings, engine, "127.0.0.1", port, debug=False)


PERIOD_KIND_CHOICES = ["day", "week", "month", "quarter", "year"]


def _last_quarter_label(settings: Settings) -> str:
    from datetime import UTC, datetime

    from gridwatch.periods import period_of

    today = datetime.now(UTC).astimezone(settings.timezone).date()
    return period_of(today, "quarter").previous().label


def _parse_day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise UserFacingError(f"{option} must be a date like 2026-07-01, not {value!r}") from exc


@main.command("aggregate")
@click.option(
    "--period",
    "periods",
    multiple=True,
    type=click.Choice(PERIOD_KIND_CHOICES),
    help="Period kinds to compute (repeatable; default: all five).",
)
@click.option("--from", "date_from", help="First local day to include (YYYY-MM-DD).")
@click.option("--to", "date_to", help="Last local day to include (YYYY-MM-DD).")
@click.option("--full", is_flag=True, help="Recompute every grid, not only changed ones.")
@click.option("--wait", is_flag=True, help="With Redis: wait until the workers finish.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.pass_context
@friendly_errors
def aggregate_command(
    ctx: click.Context,
    periods: tuple[str, ...],
    date_from: str | None,
    date_to: str | None,
    full: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Start an aggregation run (through Redis when configured, else in this process)."""
    from gridwatch.workers.engine import RunRequest
    from gridwatch.workers.service import start_aggregation

    settings, engine = _settings_and_engine(ctx)
    kinds = tuple(k for k in PERIOD_KIND_CHOICES[::-1] if k in periods) if periods else None
    request = RunRequest(
        trigger="cli",
        full=full,
        date_from=_parse_day(date_from, "--from"),
        date_to=_parse_day(date_to, "--to"),
        **({"period_kinds": kinds} if kinds else {}),
    )
    summary = start_aggregation(settings, engine, request, wait=wait)
    if as_json:
        emit_json(summary)
    else:
        click.echo(
            f"run {summary['run_id']} [{summary['mode']}, {summary.get('scope', '?')}]: "
            f"{summary['status']} — {summary.get('townships_done', 0)}/"
            f"{summary.get('townships_total', 0)} townships, "
            f"{summary.get('rows_read', 0):,} incidents read, "
            f"{summary.get('rows_written', 0):,} metric rows"
        )


@main.command("runs")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
def runs_command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """List aggregation runs, newest first."""
    from gridwatch.workers.engine import list_runs

    settings, engine = _settings_and_engine(ctx)
    runs = list_runs(engine, limit)
    if as_json:
        emit_json(runs)
        return
    if not runs:
        click.echo("no runs yet — start one with `gridwatch aggregate`")
        return
    click.echo(f"{'run':>5}  {'status':8} {'mode':6} {'scope':11} {'started (UTC)':20} finished")
    for r in runs:
        click.echo(
            f"{r['run_id']:>5}  {r['status']:8} {r['mode']:6} {r['scope']:11} "
            f"{r['started_at'] or '-':20} {r['finished_at'] or '-'}"
        )


@main.command("metrics")
@click.option(
    "--level", required=True, help="Area level: grid, village, township, county (or configured)."
)
@click.option("--period", required=True, help="2026, 2026Q3, 2026-07, 2026-W27 or 2026-07-04.")
@click.option("--area", "area_code", help="Only this area, or its descendants at --level.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.pass_context
@friendly_errors
def metrics_command(
    ctx: click.Context,
    level: str,
    period: str,
    area_code: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Print the published metrics of every area of LEVEL for PERIOD."""
    from gridwatch.periods import PeriodError
    from gridwatch.workers.engine import RunError, read_metrics

    settings, engine = _settings_and_engine(ctx)
    try:
        rows = read_metrics(engine, level, period, area_code)
    except (PeriodError, RunError) as exc:
        raise UserFacingError(str(exc)) from exc
    if as_json:
        emit_json(rows)
    elif as_csv:
        import csv

        from gridwatch.spreadsheet import safe_record

        flat = [
            {
                **{k: v for k, v in r.items() if not isinstance(v, dict)},
                **{f"cat:{k}": v for k, v in r.get("incidents_by_category", {}).items()},
                **{f"group:{k}": v for k, v in r.get("incidents_by_group", {}).items()},
            }
            for r in rows
        ]
        columns: list[str] = []
        for r in flat:
            columns.extend(c for c in r if c not in columns)
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(safe_record(r) for r in flat)
    else:
        if rows and rows[0]["run_id"] is None:
            click.echo("no published run yet — run `gridwatch aggregate` first", err=True)
        click.echo(f"{'area':18} {'incidents':>9} {'两抢一盗':>8} {'per 1k':>7} {'vs prev':>8}")
        for r in rows:
            per_1000 = r.get("incidents_per_1000")
            change = r.get("change_prev_pct")
            click.echo(
                f"{r['area_code']:18} {r['incidents_total']:>9,} "
                f"{r.get('incidents_by_group', {}).get('two_robberies_one_theft', 0):>11,} "
                f"{'' if per_1000 is None else f'{per_1000:.2f}':>7} "
                f"{'' if change is None else f'{change:+.1f}%':>8}"
            )


@main.command("forecast")
@click.option("--level", default="grid", show_default=True, help="Area level.")
@click.option("--period", required=True, help="The period to forecast, e.g. 2026-12 or 2027Q1.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
def forecast_command(ctx: click.Context, level: str, period: str, as_json: bool) -> None:
    """Forecast incidents per area for PERIOD from data before it, with the back-test."""
    from gridwatch.periods import PeriodError
    from gridwatch.workers.engine import RunError, forecast_period

    settings, engine = _settings_and_engine(ctx)
    try:
        result = forecast_period(engine, settings, level, period)
    except (PeriodError, RunError) as exc:
        raise UserFacingError(str(exc)) from exc
    if as_json:
        emit_json(result)
        return
    click.echo(f"forecast for {result['period']} ({result['history_days']} days of history)")
    for row in result["forecast"][:50]:
        actual = f"  actual {row['actual']}" if "actual" in row else ""
        click.echo(f"  {row['area_code']:18} expected {row['expected']:8.2f}{actual}")
    if len(result["forecast"]) > 50:
        click.echo(f"  … {len(result['forecast']) - 50} more (use --json)")
    card = result["scorecard"].get("28d") or {}
    if "model" in card:
        model, base = card["model"], card["baseline"]
        click.echo(
            "back-test (28-day windows): PAI at 10 % of area "
            f"model {model['pai'].get('10')} vs last-period baseline {base['pai'].get('10')}"
        )


def _celery_for(ctx: click.Context) -> Any:
    settings = get_settings(ctx)
    if not settings.redis_url:
        raise UserFacingError(
            "GRIDWATCH_REDIS_URL is not set: without Redis, tasks run in-process and no "
            "worker or beat is needed"
        )
    from gridwatch.workers.celery_app import create_celery_app

    return create_celery_app(settings)


@main.command("worker")
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option(
    "--queues",
    "-Q",
    default="gridwatch.quick,gridwatch.heavy",
    show_default=True,
    help="Queues to consume.",
)
@click.option(
    "--hostname",
    "-n",
    help="Node name, unique per worker (%h = this host's name, e.g. quick@%h).",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker_command(
    ctx: click.Context, concurrency: int, queues: str, hostname: str | None, loglevel: str
) -> None:
    """Start a Celery worker (needs GRIDWATCH_REDIS_URL)."""
    # Registers ``survey.warm`` and the publish hook that sends it (the workers layer does
    # not import the targeting layer; the deploy entrypoint passes --include for the same).
    import gridwatch.targeting.survey_results  # noqa: F401

    app = _celery_for(ctx)
    argv = ["worker", f"--concurrency={concurrency}", f"--queues={queues}"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main([*argv, f"--loglevel={loglevel}"])


@main.command("beat")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def beat_command(ctx: click.Context, loglevel: str) -> None:
    """Start the beat scheduler (run exactly one; needs GRIDWATCH_REDIS_URL)."""
    app = _celery_for(ctx)
    settings = get_settings(ctx)
    schedule = settings.var_dir / "celerybeat-schedule"
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app.start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])


@main.group()
def report() -> None:
    """Build situation reports from the published metrics."""


@report.command("daily")
@click.option("--day", help="Local day to report on (YYYY-MM-DD; default yesterday).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
@friendly_errors
def report_daily_command(ctx: click.Context, day: str | None, as_json: bool) -> None:
    """Build the daily situation summary (每日治安形势); beat runs it at 06:00."""
    from gridwatch.workers.situation import build_daily_situation

    settings, engine = _settings_and_engine(ctx)
    built = build_daily_situation(engine, settings, _parse_day(day, "--day"))
    if as_json:
        emit_json(built)
        return
    if built["run_id"] is None:
        click.echo("no published run yet — run `gridwatch aggregate` first", err=True)
    click.echo(f"daily situation {built['day']} (run {built['run_id']})")
    for area in built["areas"]:
        change = area["change_day_before_pct"]
        click.echo(
            f"  {area['level']:<9} {area['area_code']:<16} {area['incidents']:>5} incidents"
            + ("" if change is None else f"  {change:+.1f} % on the day before")
        )
    click.echo(f"  rising hot spots ({built['hotspot_week']}): {len(built['rising_hotspots'])}")
    click.echo(
        f"  displacement warnings: {len(built['displacement'])}"
        f" (next to {len(built['remediated'])} remediated hot spots)"
    )
    cameras = built["cameras"]
    gone = cameras["gone_offline"]
    since = "" if gone is None else f", {len(gone)} gone offline since {cameras['compared_with']}"
    click.echo(f"  cameras not working: {cameras['not_working']}{since}")
    click.echo(f"  inactive teams: {len(built['inactive_teams'])}")
    waiting = sum(a["not_notified_open"] or 0 for a in built["areas"] if a["level"] == "county")
    click.echo(f"  solved, victim not told: {waiting}")
    ladder = built["ladder"]
    if ladder["quarter"]:
        click.echo(f"  townships at risk ({ladder['quarter']}): {len(ladder['townships'])}")


#: The administrator `gridwatch demo` creates (its password is new each time, and printed).
DEMO_USER = "demo"


@main.group()
def survey() -> None:
    """Survey indicators, rankings, the accountability ladder and priorities (安全感测评)."""


def _sentences_for(errors: Callable[[], tuple[type[Exception], ...]]) -> Callable[[F], F]:
    """Make a decorator that turns the exceptions ``errors()`` names into one sentence.

    ``errors`` is called when the command runs, so a command group's modules are imported
    only when one of its commands is used.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caught = errors()
            try:
                return func(*args, **kwargs)
            except caught as exc:
                raise UserFacingError(str(exc)) from exc

        return wrapper  # type: ignore[return-value]

    return decorate


def _targeting_errors(func: F) -> F:
    """Turn bad periods, rule files and options into one sentence."""

    def errors() -> tuple[type[Exception], ...]:
        from gridwatch.periods import PeriodError
        from gridwatch.targeting.rules import RulesError, TargetingError
        from gridwatch.taxonomy import TaxonomyError
        from gridwatch.workers.engine import RunError

        return (PeriodError, RulesError, TargetingError, TaxonomyError, RunError)

    return _sentences_for(errors)(func)


def _survey_quarter(ctx: click.Context, engine: Any, quarter: str | None) -> str:
    """Return ``quarter`` or, when not given, the newest survey wave."""
    from gridwatch.periods import parse_period
    from gridwatch.targeting.indicators import survey_periods

    if quarter:
        return parse_period(quarter).label
    waves = survey_periods(engine)
    if not waves:
        raise UserFacingError("no survey imported yet — `gridwatch import surveys FILE` first")
    return waves[-1]


def _pad(text: str, width: int) -> str:
    """Cut or pad ``text`` to ``width`` terminal columns (Chinese characters take two)."""
    import unicodedata

    out, used = "", 0
    for char in text:
        size = 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        if used + size > width:
            break
        out, used = out + char, used + size
    return out + " " * (width - used)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ci(low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"{low:.1f}–{high:.1f}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


@survey.command("indicators")
@click.option("--level", default="township", show_default=True, help="Area level.")
@click.option("--quarter", "--wave", "quarter", help="Survey wave, e.g. 2026Q3 (default: newest).")
@click.option(
    "--source",
    type=click.Choice(["auto", "results", "responses"]),
    default="auto",
    show_default=True,
    help="auto: published results where imported, raw responses otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_indicators_command(
    ctx: click.Context, level: str, quarter: str | None, source: str, as_json: bool
) -> None:
    """Survey figures per area with 95 % intervals and fieldwork quality flags."""
    from gridwatch.targeting.indicators import indicator_table
    from gridwatch.targeting.ladder import accountability_rules
    from gridwatch.taxonomy import load_survey_factors

    settings, engine = _settings_and_engine(ctx)
    label = _survey_quarter(ctx, engine, quarter)
    rules = accountability_rules(settings)
    names = {f.code: f.zh for f in load_survey_factors(settings.survey_factors_file).values()}
    rows = indicator_table(engine, level, [label], names, rules.quality, source)[label]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no survey figures for {level} areas in {label}")
        return
    click.echo(f"{label} survey indicators, {level} (source: {source}; 95 % Wilson intervals)")
    click.echo(
        f"{'area':14} {_pad('name', 10)} {'n':>5}  {'安全感':>6} {'95% CI':>11}  "
        f"{'满意度':>6} {'知晓率':>6} {'参与率':>6}  top factor  flags"
    )
    for r in rows:
        top = r["factors"][0] if r["factors"] else None
        click.echo(
            f"{r['area_code']:14} {_pad(r['area_name'], 10)} {r['respondents'] or '':>5}  "
            f"{_pct(r['security_pct']):>6} "
            f"{_ci(r['security_ci_low'], r['security_ci_high']):>11}  "
            f"{_pct(r['satisfaction_pct']):>6} {_pct(r['awareness_pct']):>6} "
            f"{_pct(r['participation_pct']):>6}  "
            f"{(top['name'] + ' ' + format(top['share_pct'], '.0f') + '%') if top else '':12}"
            f"{','.join(r['quality']['flags'])}"
        )


@survey.command("ranking")
@click.option("--quarter", "--wave", "quarter", help="Survey wave, e.g. 2026Q3 (default: newest).")
@click.option(
    "--level", default=None, help="Level to rank (default: the ladder's, township; or county)."
)
@click.option("--replicates", default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", default=20260, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_ranking_command(
    ctx: click.Context,
    quarter: str | None,
    level: str | None,
    replicates: int,
    seed: int,
    as_json: bool,
) -> None:
    """Rank areas by single-item security with bootstrap rank intervals and ladder status."""
    from gridwatch.targeting.ranking import survey_ranking

    settings, engine = _settings_and_engine(ctx)
    label = _survey_quarter(ctx, engine, quarter)
    if replicates < 1:
        raise UserFacingError("--replicates must be at least 1")
    result = survey_ranking(engine, settings, label, level, replicates, seed)
    if as_json:
        # `gridwatch rankings --json` prints the list of areas (the issue's contract).
        emit_json(result["rows"] if ctx.obj.get("rankings_list") else result)
        return
    score = result["score"]
    if not result["rows"]:
        click.echo(f"no survey scores for {result['level']} areas in {result['period']}", err=True)
        return
    click.echo(
        f"{result['period']} {result['level']} ranking by {score}: {result['ranked']} ranked, "
        f"bottom {result['bottom_n']}, {result['replicates']} bootstrap replicates (seed "
        f"{result['seed']}); red line {result['red_line_pct']:g} %, target "
        f"{result['target_pct']:g} %"
    )
    click.echo(
        f"{'rank':>4} {'area':14} {_pad('name', 10)} {score[:8]:>8} {'95% CI':>11} "
        f"{'rank 95%':>8} {'P(bottom)':>9}  status"
    )
    for r in result["rows"]:
        note = ""
        if r["bottom_within_noise"]:
            note = "  (bottom place within the noise)"
        elif r["may_be_bottom"]:
            note = "  (may belong in the bottom)"
        click.echo(
            f"{r['rank']:>4} {r['area_code']:14} {_pad(r['area_name'], 10)} {r[score]:>8.2f} "
            f"{_ci(r['ci_low'], r['ci_high']):>11} {r['rank_best']:>3}–{r['rank_worst']:<4} "
            f"{_num(r['bottom_probability']):>9}"
            f"  {r['status_zh'] or ''}{note}"
        )


@survey.command("ladder")
@click.option("--all", "show_all", is_flag=True, help="List townships that never had a status.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_ladder_command(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """Accountability ladder: status history per township, county titles."""
    from gridwatch.targeting.ladder import STATUS_ZH, ladder_report

    settings, engine = _settings_and_engine(ctx)
    report = ladder_report(engine, settings)
    if as_json:
        emit_json(report)
        return
    rules = report["rules"]
    quarters = report["quarters"]
    click.echo(
        f"accountability ladder ({rules['level']}, bottom {rules['bottom_n']} by "
        f"{rules['score']}): 约谈 after {rules['summons_after']}, 黄牌 after "
        f"{rules['yellow_card_after']}, 挂牌 after {rules['listed_after']} quarters in a row; "
        f"一票否决 when listed {rules['veto_listings']}× within {rules['veto_within_quarters']} "
        f"quarters or annual < {rules['veto_annual_below']:g} for "
        f"{rules['veto_annual_years']} years"
    )
    click.echo(f"{'area':14} {_pad('name', 10)} " + " ".join(f"{q:>12}" for q in quarters))
    for t in report["townships"]:
        if not show_all and all(h["status"] == "none" for h in t["history"]):
            continue
        by_period = {h["period"]: h for h in t["history"]}
        cells = []
        for q in quarters:
            h = by_period.get(q)
            cell = "" if h is None or h["score"] is None else f"{h['score']:.1f}"
            if h is not None and h["status"] != "none":
                cell += " " + STATUS_ZH[h["status"]]
            cells.append(f"{cell:>12}")
        click.echo(f"{t['area_code']:14} {_pad(t['area_name'], 10)} " + " ".join(cells))
    for county in report["counties"]:
        years = ", ".join(
            f"{y['year']}: {y['annual_score']:.2f}"
            + (
                " (provisional, {} quarters)".format(y["quarters"])
                if not y["complete"]
                else (" 平安县" if y["safe_county"] else " loses the safe-county title")
            )
            for y in county["years"]
        )
        below = [q["period"] for q in county["quarters"] if q["below_red_line"]]
        click.echo(
            f"county {county['area_code']} {county['area_name']}: annual {years}"
            + (f"; below the red line in {', '.join(below)}" if below else "")
        )


@survey.command("priorities")
@click.option("--quarter", "--wave", "quarter", help="Survey wave, e.g. 2026Q3 (default: newest).")
@click.option("--level", default="village", show_default=True, help="village or township.")
@click.option("--limit", default=20, show_default=True, help="Areas to print (text output).")
@click.option("--json", "as_json", is_flag=True, help="Print every area as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_priorities_command(
    ctx: click.Context, quarter: str | None, level: str, limit: int, as_json: bool
) -> None:
    """Priority index per area, explained in words and numbers."""
    from gridwatch.targeting.linkage import priorities

    settings, engine = _settings_and_engine(ctx)
    label = _survey_quarter(ctx, engine, quarter)
    result = priorities(engine, settings, label, level)
    if as_json:
        emit_json(result)
        return
    if not result["rows"]:
        click.echo(
            f"no {level} has both survey figures and published metrics for {label} — "
            "import the survey and run `gridwatch aggregate`",
            err=True,
        )
        return
    used = [
        f"{c['name']} {c['weight']:g}"
        + ("" if c["association"] is None else f" (ρ {c['association']['rho']})")
        for c in result["components"]
        if c["used"]
    ]
    dropped = [c["name"] for c in result["components"] if not c["used"]]
    click.echo(f"{result['period']} {level} priorities; index from: {', '.join(used)}")
    if dropped:
        click.echo(f"  left out (association with security does not hold): {', '.join(dropped)}")
    for r in result["rows"][:limit]:
        click.echo(f"{r['rank']:>4}. [{r['priority_index']:5.1f}] {r['explanation']}")
    if len(result["rows"]) > limit:
        click.echo(f"  … {len(result['rows']) - limit} more (use --json or --limit)")


@survey.command("model")
@click.option("--level", default="village", show_default=True, help="village or township.")
@click.option("--replicates", default=200, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", default=20262, show_default=True, help="Random seed.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_model_command(
    ctx: click.Context, level: str, replicates: int, seed: int, as_json: bool
) -> None:
    """Ridge model of security % on grid metrics, with cross-validated R² and intervals."""
    from gridwatch.targeting.model import security_model_report

    settings, engine = _settings_and_engine(ctx)
    if replicates < 1:
        raise UserFacingError("--replicates must be at least 1")
    result = security_model_report(engine, settings, level, replicates, seed)
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"{level} security % on grid metrics: {result['n']} rows, {result['areas']} areas, "
        f"quarters {', '.join(result['quarters']) or '-'}"
    )
    click.echo(f"  {result['verdict']}")
    if result["coefficients"]:
        click.echo(
            f"  ridge alpha {result['alpha']:g}; points of security per SD (95 % bootstrap):"
        )
    for c in result["coefficients"]:
        note = "" if c["holds"] else "  (interval includes 0)"
        if c["holds"] and c["as_expected"] is False:
            note = "  (opposite of the expected sign)"
        click.echo(
            f"  {c['feature']:34} {c['coef']:+7.2f}  [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
            f"{note}"
        )


@survey.command("early-warning")
@click.option(
    "--lead",
    type=click.IntRange(0, 1),
    default=1,
    show_default=True,
    help="1: from the last surveyed quarter's metrics; 0: from the new quarter's own.",
)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def survey_early_warning_command(ctx: click.Context, lead: int, as_json: bool) -> None:
    """Predicted security % per township before the survey, and who risks the bottom 5."""
    from gridwatch.targeting.early_warning import early_warning

    settings, engine = _settings_and_engine(ctx)
    result = early_warning(engine, settings, lead=lead)
    if as_json:
        emit_json(result)
        return
    if not result["rows"]:
        click.echo(result["verdict"], err=True)
        return
    click.echo(
        f"early warning for {result['target_period']} ({result['level']}, from the metrics of "
        f"{result['metrics_period']}; method: {result['method']})"
    )
    click.echo(f"  {result['verdict']}")
    for q in result["validation"]["quarters"]:
        click.echo(
            f"  held out {q['period']}: error {q['mae']:.2f} (persistence "
            f"{q['persistence_mae']:.2f}); bottom {q['bottom_n']} caught {q['bottom_hits']} "
            f"(persistence {q['persistence_bottom_hits']})"
        )
    click.echo(
        f"{'area':14} {_pad('name', 10)} {'predicted':>9} {'95% range':>13} {'last':>6} "
        f"{'P(bottom)':>9}"
    )
    for r in result["rows"]:
        if not r["at_risk"]:
            continue
        click.echo(
            f"{r['area_code']:14} {_pad(r['area_name'], 10)} {r['predicted_pct']:>9.2f} "
            f"{_ci(r['interval_low'], r['interval_high']):>13} {_pct(r['last_pct']):>6} "
            f"{r['bottom_probability']:>9.2f}"
            + ("  predicted bottom" if r["predicted_bottom"] else "")
        )


@main.command("rankings")
@click.option(
    "--period", "--quarter", "period", help="Survey wave, e.g. 2026Q3 (default: newest)."
)
@click.option(
    "--level", type=click.Choice(["township", "county"]), default=None, help="Default township."
)
@click.option("--replicates", default=1000, show_default=True, help="Bootstrap replicates.")
@click.option("--seed", default=20260, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the list of ranked areas as JSON.")
@click.pass_context
def rankings_command(
    ctx: click.Context,
    period: str | None,
    level: str | None,
    replicates: int,
    seed: int,
    as_json: bool,
) -> None:
    """Ranking with CIs and ladder status (JSON: a list of areas; see `survey ranking`)."""
    if as_json:
        ctx.obj["rankings_list"] = True
    ctx.invoke(
        survey_ranking_command,
        quarter=period,
        level=level,
        replicates=replicates,
        seed=seed,
        as_json=as_json,
    )


@main.command("priorities")
@click.option(
    "--period", "--quarter", "period", help="Survey wave, e.g. 2026Q3 (default: newest)."
)
@click.option(
    "--level",
    type=click.Choice(["village", "township", "grid"]),
    default="village",
    show_default=True,
)
@click.option("--area", "area_code", help="Grid level: only grids inside this area (code).")
@click.option("--limit", default=20, show_default=True, help="Areas to print (text output).")
@click.option("--json", "as_json", is_flag=True, help="Print every area as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def priorities_command(
    ctx: click.Context,
    period: str | None,
    level: str,
    area_code: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Priority index per village, township or grid, explained in words and numbers."""
    if level != "grid":
        if area_code:
            raise UserFacingError("--area applies to --level grid only")
        ctx.invoke(
            survey_priorities_command, quarter=period, level=level, limit=limit, as_json=as_json
        )
        return
    from gridwatch.targeting.grid_priorities import grid_priorities

    settings, engine = _settings_and_engine(ctx)
    label = _survey_quarter(ctx, engine, period)
    if area_code:
        from gridwatch.areas import load_tree

        if area_code not in load_tree(engine).by_code:
            raise UserFacingError(f"no area with code {area_code!r}")
    result = grid_priorities(engine, settings, label, area_code)
    if as_json:
        emit_json(result)
        return
    if not result["rows"]:
        click.echo(
            f"no grid of a surveyed village has published metrics for {label} — "
            "import the survey and run `gridwatch aggregate`",
            err=True,
        )
        return
    used = [c["name"] for c in result["components"] if c["used"]]
    click.echo(f"{result['period']} grid priorities; index from: {', '.join(used)}")
    for r in result["rows"][:limit]:
        click.echo(f"{r['rank']:>5}. [{r['priority_index']:5.1f}] {r['explanation']}")
    if len(result["rows"]) > limit:
        click.echo(f"  … {len(result['rows']) - limit} more (use --json or --limit)")


@main.group()
def plan() -> None:
    """Prevention plan: new camera sites, repairs, patrol focus, publicity, follow-up."""


@plan.command("cameras")
@click.option("--township", "township", required=True, help="Township code.")
@click.option("--n", "n", default=30, show_default=True, help="New cameras to place.")
@click.option("--radius", default=50.0, show_default=True, help="Metres a new camera sees.")
@click.option("--days", default=365, show_default=True, help="Incidents of the last N days.")
@click.option("--time-limit", default=10.0, show_default=True, help="Solver seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def plan_cameras_command(
    ctx: click.Context,
    township: str,
    n: int,
    radius: float,
    days: int,
    time_limit: float,
    as_json: bool,
) -> None:
    """Propose new camera sites covering the most blind-spot incidents (MCLP, greedy)."""
    from gridwatch.targeting.prevention import camera_plan

    settings, engine = _settings_and_engine(ctx)
    if days < 1:
        raise UserFacingError("--days must be at least 1")
    result = camera_plan(engine, settings, township, n, radius, days, time_limit)
    if as_json:
        emit_json(result)
        return
    _echo_camera_plan(result)


def _echo_camera_plan(result: dict[str, Any]) -> None:
    solver = result["solver"]
    click.echo(
        f"{result['township']} {result['township_name']}: {result['n']} new cameras "
        f"(radius {result['radius_m']:g} m), incidents {result['since'][:10]} – "
        f"{result['until'][:10]}: {result['incidents']}, in blind spots "
        f"{result['blind_spot_incidents']}"
    )
    click.echo(
        f"  covered by cameras: before {result['covered_before']}, after {result['covered_after']}"
        f" (greedy {result['greedy_covered_after']}, one per worst grid "
        f"{result['naive_covered_after']}); solver {solver['status']} in {solver['seconds']} s"
    )
    for k, site in enumerate(result["sites"], start=1):
        click.echo(
            f"  {k:>3}. {site['lon']:.6f},{site['lat']:.6f}  grid {site['grid_code']}  "
            f"+{site['covered_incidents']}  ({site['kind']})"
        )


@plan.command("prevention")
@click.option("--township", "township", required=True, help="Township code.")
@click.option("--period", "--quarter", "period", help="Survey wave (default: newest).")
@click.option("--n", "n", default=30, show_default=True, help="New cameras to place.")
@click.option("--limit", default=10, show_default=True, help="Rows per list (text output).")
@click.option("--replicates", default=500, show_default=True, help="Bootstrap replicates.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole plan as JSON.")
@click.pass_context
@friendly_errors
@_targeting_errors
def plan_prevention_command(
    ctx: click.Context,
    township: str,
    period: str | None,
    n: int,
    limit: int,
    replicates: int,
    as_json: bool,
) -> None:
    """Print a township's prevention plan: cameras, repairs, patrols, visits, follow-up."""
    from gridwatch.targeting.prevention import prevention_plan

    settings, engine = _settings_and_engine(ctx)
    if replicates < 1:
        raise UserFacingError("--replicates must be at least 1")
    result = prevention_plan(engine, settings, township, period, n, replicates=replicates)
    if as_json:
        emit_json(result)
        return
    click.echo(f"prevention plan for {result['township']} {result['township_name']}")
    _echo_camera_plan({**result["cameras"], "sites": result["cameras"]["sites"][:limit]})
    click.echo(f"repair first ({len(result['repairs'])} cameras not working):")
    for r in result["repairs"][:limit]:
        click.echo(
            f"  {r['camera_id']} {r['name'] or ''} [{r['status']}] grid {r['grid_code']}: "
            f"would see {r['would_see_incidents']} blind-spot incidents"
        )
    click.echo("patrol focus:")
    for r in result["patrol_focus"][:limit]:
        click.echo(
            f"  {r['grid_code']} {r['grid_name']}: {r['recent_incidents']} incidents in "
            f"{r['recent_days']} days, peak {r['peak_hours'] or '-'}"
            + ("" if r["priority_index"] is None else f", priority {r['priority_index']}")
        )
    click.echo("publicity (door-to-door, ≥ 10 households per cadre visit):")
    for r in result["publicity"][:limit]:
        click.echo(
            f"  {r['village_code']} {r['village_name']}: awareness {_pct(r['awareness_pct'])} %, "
            f"participation {_pct(r['participation_pct'])} %"
        )
    click.echo("victims not told of the result (破而不馈):")
    for station in result["follow_up"]:
        click.echo(
            f"  {station['station_code'] or '(no station)'} {station['station_name'] or ''}: "
            f"{len(station['cases'])} cases"
        )


@main.group()
def users() -> None:
    """Create and manage web users and their API tokens."""


def _engine_for(ctx: click.Context) -> Any:
    return _settings_and_engine(ctx)[1]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line: what a password manager or `printf '%s\n' "$PW" |` sends.
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _account_errors(func: F) -> F:
    """Turn account errors (unknown user, bad role or password) into one sentence."""

    def errors() -> tuple[type[Exception], ...]:
        from gridwatch.accounts import AccountError

        return (AccountError,)

    return _sentences_for(errors)(func)


@users.command("add")
@click.argument("name")
@click.option(
    "--role",
    required=True,
    type=click.Choice(["admin", "county", "station", "township", "viewer"]),
    help="admin: everything; county: the whole county; station: a police station's "
    "townships; township: one township; viewer: read-only (the command-centre screen).",
)
@click.option(
    "--area",
    "area_code",
    help="Code of the user's area (for --role station: the police station's code). "
    "Required for every role but admin.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@click.pass_context
@friendly_errors
@_account_errors
def users_add(
    ctx: click.Context, name: str, role: str, area_code: str | None, password_stdin: bool
) -> None:
    """Create the web user NAME."""
    from gridwatch.accounts import create_user

    engine = _engine_for(ctx)
    create_user(engine, name, role, _read_password(password_stdin), area_code)
    click.echo(f"created user {name} ({role}{', ' + area_code if area_code else ''})")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
def users_list(ctx: click.Context, as_json: bool) -> None:
    """List web users."""
    from gridwatch.accounts import list_users

    rows = list_users(_engine_for(ctx))
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        state = "active" if row["active"] else "disabled"
        click.echo(f"{row['username']:20} {row['role']:9} {row['area_code'] or '-':16} {state}")


@users.command("password")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (one line)."
)
@click.pass_context
@friendly_errors
@_account_errors
def users_password(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a new password for NAME (their sessions end; a lockout is lifted)."""
    from gridwatch.accounts import set_password

    set_password(_engine_for(ctx), name, _read_password(password_stdin))
    click.echo(f"password of {name} changed")


@users.command("disable")
@click.argument("name")
@click.pass_context
@friendly_errors
@_account_errors
def users_disable(ctx: click.Context, name: str) -> None:
    """Disable NAME: their sessions and API tokens stop working at once."""
    from gridwatch.accounts import set_active

    set_active(_engine_for(ctx), name, False)
    click.echo(f"user {name} disabled")


@users.command("enable")
@click.argument("name")
@click.pass_context
@friendly_errors
@_account_errors
def users_enable(ctx: click.Context, name: str) -> None:
    """Enable NAME again."""
    from gridwatch.accounts import set_active

    set_active(_engine_for(ctx), name, True)
    click.echo(f"user {name} enabled")


@users.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for, e.g. the screen's location.")
@click.option("--revoke", is_flag=True, help="Revoke every token of NAME instead.")
@click.pass_context
@friendly_errors
@_account_errors
def users_token(ctx: click.Context, name: str, label: str, revoke: bool) -> None:
    """Print a new API token for NAME (sent as `Authorization: Bearer TOKEN`).

    The token is shown once; only its hash is stored. `--revoke` revokes all of NAME's tokens.
    """
    from gridwatch.accounts import issue_token, revoke_tokens

    engine = _engine_for(ctx)
    if revoke:
        count = revoke_tokens(engine, name)
        click.echo(f"revoked {count} token{'s' if count != 1 else ''} of {name}")
        return
    click.echo(issue_token(engine, name, label))


def _serve(settings: Settings, engine: Any, host: str, port: int, debug: bool) -> None:
    from gridwatch.web import create_app

    app = create_app({"GRIDWATCH_SETTINGS": settings, "GRIDWATCH_ENGINE": engine})
    if settings.secure_cookies:
        click.echo(
            "note: session cookies are Secure (HTTPS only); browsers accept them from "
            "http://127.0.0.1 and http://localhost. Set GRIDWATCH_SECURE_COOKIES=false only "
            "for a plain-HTTP intranet site."
        )
    click.echo(f"GridWatch on http://{host}:{port}/  (Ctrl+C stops)")
    app.run(host=host, port=port, debug=debug, use_reloader=False)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@click.option("--debug", is_flag=True, help="Flask debug mode (never on a shared network).")
@click.pass_context
@friendly_errors
def serve_command(ctx: click.Context, host: str, port: int, debug: bool) -> None:
    """Run the web app with Flask's development server (production: gunicorn)."""
    settings = get_settings(ctx)
    engine = _engine_for(ctx)
    _serve(settings, engine, host, port, debug)


@main.group()
def routes() -> None:
    """Plan patrol routes to the hot spots and check afterwards whether teams kept to them."""


def _routing_errors(func: F) -> F:
    """Turn planning errors (unknown station or plan, bad shift, bad roads) into a sentence."""

    def errors() -> tuple[type[Exception], ...]:
        from gridwatch.routing.plans import PlanningError
        from gridwatch.routing.travel import RoadNetworkError

        return (PlanningError, RoadNetworkError)

    return _sentences_for(errors)(func)


@routes.command("plan")
@click.option("--station", "station_code", required=True, help="Police station code.")
@click.option("--date", "day", required=True, help="Local date of the shift start (YYYY-MM-DD).")
@click.option("--shift", "shift", required=True, help="Local HH:MM-HH:MM, e.g. 20:00-02:00.")
@click.option("--teams", help="Only these team codes (comma-separated; default: all on shift).")
@click.option(
    "--roads",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Road lines (GeoJSON / GeoPackage) or an OSM extract (.osm, .osm.pbf); default: "
    "GRIDWATCH_ROUTE_ROADS_FILE.",
)
@click.option("--max-stops", default=80, show_default=True, help="Candidate hot-spot grids.")
@click.option(
    "--solution-limit",
    type=int,
    default=None,
    help="Solutions the local search may find (the deterministic limit; default 100).",
)
@click.option(
    "--time-limit", type=float, default=None, help="Safety limit in seconds (default 30)."
)
@click.option(
    "--gpx",
    "gpx_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one GPX file per team into this directory.",
)
@click.option("--no-store", is_flag=True, help="Do not store the plan.")
@click.option(
    "--no-plan-focus",
    is_flag=True,
    help="Leave out the prevention plan's patrol-focus grids (used by default when survey "
    "data exists).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.pass_context
@friendly_errors
@_routing_errors
def routes_plan_command(
    ctx: click.Context,
    station_code: str,
    day: str,
    shift: str,
    teams: str | None,
    roads: Path | None,
    max_stops: int,
    solution_limit: int | None,
    time_limit: float | None,
    gpx_dir: Path | None,
    no_store: bool,
    no_plan_focus: bool,
    as_json: bool,
) -> None:
    """Plan one shift of a station's teams: risk-weighted stops, routes, greedy baseline."""
    from gridwatch.routing.plans import plan_station, store_plan, write_gpx
    from gridwatch.targeting.prevention import station_patrol_focus_or_note

    settings, engine = _settings_and_engine(ctx)
    shift_day = _parse_day(day, "--date")
    assert shift_day is not None
    focus, focus_note = (
        (None, None)
        if no_plan_focus
        else station_patrol_focus_or_note(engine, settings, station_code)
    )
    payload = plan_station(
        engine,
        settings,
        station_code,
        shift_day,
        shift,
        team_codes=[c.strip() for c in teams.split(",") if c.strip()] if teams else None,
        roads_file=roads,
        max_stops=max_stops,
        solution_limit=solution_limit,
        time_limit_seconds=time_limit,
        focus_grids=focus,
    )
    if focus_note:
        payload["plan_focus"]["note"] = focus_note
    if not no_store:
        store_plan(engine, payload)
    written = write_gpx(payload, gpx_dir) if gpx_dir else []
    if as_json:
        emit_json(payload)
        return
    solver = payload["solver"]
    if focus_note:
        click.echo(focus_note)
    elif focus is not None:
        named = [g["grid_code"] for g in payload["plan_focus"]["grids"]]
        click.echo(
            f"prevention plan's patrol-focus grids weighed ({len(named)} in reach): "
            + (", ".join(named) or "none")
        )
    click.echo(
        f"plan {payload.get('plan_id', '(not stored)')}: station {payload['station_code']} "
        f"{payload['day']} {payload['shift']}, {len(payload['teams'])} teams, "
        f"{solver['candidates']} candidate grids ({solver['stop_copies']} stop windows)"
    )
    for team in payload["teams"]:
        click.echo(
            f"  {team['team_code']:<12} {team['mode']:<6} {len(team['stops']):>3} stops "
            f"{team['km']:>7.1f} km {team['duration_min']:>6.0f} min "
            f"utilisation {100 * team['utilisation']:.0f} %"
        )
        for number, stop in enumerate(team["stops"], start=1):
            click.echo(
                f"      {number:>2}. {stop['arrive'][11:16]}-{stop['depart'][11:16]} "
                f"{stop['grid_code']}  risk {stop['risk']:.3f}"
            )
    greedy = payload["greedy"]
    click.echo(
        f"risk covered {payload['risk_covered']:.1f} ({payload['km']:.1f} km, "
        f"utilisation {100 * payload['utilisation']:.0f} %); greedy baseline "
        f"{greedy['risk_covered']:.1f} ({greedy['km']:.1f} km); solved by {solver['source']} "
        f"in {solver['seconds']:.2f} s"
        + (
            " (time limit hit: result may vary between machines)"
            if solver["time_limit_hit"]
            else ""
        )
    )
    for path in written:
        click.echo(f"  GPX: {path}")


@routes.command("adherence")
@click.option("--plan", "plan_id", type=int, help="Id of one stored plan.")
@click.option("--station", "station_code", help="Every stored plan of this police station …")
@click.option("--from", "date_from", help="… from this date (YYYY-MM-DD) …")
@click.option("--to", "date_to", help="… to this date (default: the from date).")
@click.option(
    "--by",
    type=click.Choice(["day", "week", "month"]),
    default="week",
    show_default=True,
    help="Periods the figures over time are cut into.",
)
@click.option("--radius", default=150.0, show_default=True, help="Metres around a stop.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_routing_errors
def routes_adherence_command(
    ctx: click.Context,
    plan_id: int | None,
    station_code: str | None,
    date_from: str | None,
    date_to: str | None,
    by: str,
    radius: float,
    as_json: bool,
) -> None:
    """Compare plans with the teams' GPS pings: stops visited, lateness, off-route km.

    Give --plan for one plan, or --station with --from (and --to) for every plan of a
    station, per team and per station by day, week or month.
    """
    from gridwatch.routing.adherence import adherence_over_time, plan_adherence
    from gridwatch.routing.plans import load_plan, stations_in

    if (plan_id is None) == (station_code is None):
        raise UserFacingError("give either --plan ID or --station CODE with --from DATE")
    settings, engine = _settings_and_engine(ctx)
    if station_code is not None:
        first = _parse_day(date_from, "--from")
        if first is None:
            raise UserFacingError("--station needs --from DATE (and optionally --to DATE)")
        last = _parse_day(date_to, "--to") or first
        if last < first:
            raise UserFacingError(f"--to {last} is before --from {first}")
        station = next((s for s in stations_in(engine) if s["code"] == station_code), None)
        if station is None:
            raise UserFacingError(f"no station with code {station_code!r}")
        kind: Any = by  # one of the click choices: a PeriodKind
        summary = adherence_over_time(
            engine, settings.timezone, [station["id"]], first, last, kind, radius_m=radius
        )
        if as_json:
            emit_json(summary)
            return
        _echo_adherence_over_time(summary)
        return
    assert plan_id is not None
    result = plan_adherence(engine, load_plan(engine, plan_id), settings.timezone, radius_m=radius)
    if as_json:
        emit_json(result)
        return
    station_figures = result["station"]
    pct = station_figures["visited_pct"]
    click.echo(
        f"plan {plan_id}: station {result['station_code']} {result['day']} {result['shift']}: "
        f"{station_figures['stops_visited']}/{station_figures['stops_planned']} stops visited"
        + (f" ({pct:.0f} %)" if pct is not None else "")
        + f", off-route {station_figures['off_route_km']:.1f} km"
    )
    for team in result["teams"]:
        late = team["mean_late_min"]
        click.echo(
            f"  {team['team_code']:<12} {team['stops_visited']:>3}/{team['stops_planned']:<3} "
            + ("no pings during the shift" if team["no_pings"] else f"{team['pings']} pings")
            + ("" if late is None else f", mean {late:+.0f} min late")
            + f", off-route {team['off_route_km']:.1f} km"
        )


def _adherence_line(label: str, figures: dict[str, Any]) -> str:
    pct = figures["visited_pct"]
    late = figures["mean_late_min"]
    return (
        f"  {label:<14} {figures['shifts']:>3} shifts {figures['stops_visited']:>4}/"
        f"{figures['stops_planned']:<4} stops"
        + (f" ({pct:5.1f} %)" if pct is not None else "         ")
        + ("" if late is None else f", mean {late:+.0f} min late")
        + f", off-route {figures['off_route_km']:.1f} km"
        + (
            f", {figures['shifts_without_pings']} shifts without pings"
            if figures["shifts_without_pings"]
            else ""
        )
    )


def _echo_adherence_over_time(summary: dict[str, Any]) -> None:
    click.echo(
        f"{len(summary['plan_ids'])} plans from {summary['from']} to {summary['to']}, "
        f"by {summary['period_kind']}"
    )
    for station in summary["stations"]:
        click.echo(f"station {station['station_code']}:")
        for row in station["periods"]:
            click.echo(_adherence_line(row["period"], row))
        click.echo(_adherence_line("total", station["total"]))
        if station["inactive_teams"]:
            click.echo(f"  inactive teams: {', '.join(station['inactive_teams'])}")
    for team in summary["teams"]:
        click.echo(f"team {team['team_code']}" + (" (inactive)" if team["inactive"] else ""))
        for row in team["periods"]:
            click.echo(_adherence_line(row["period"], row))


@main.group()
def tasks() -> None:
    """Prevention tasks: assign a plan item or a hand-made task, track it, measure its effect."""


def _task_errors(func: F) -> F:
    """Turn bad task input (unknown township, grid, status, transition) into one sentence."""

    def errors() -> tuple[type[Exception], ...]:
        from gridwatch.periods import PeriodError
        from gridwatch.targeting.rules import RulesError, TargetingError

        return (PeriodError, RulesError, TargetingError)

    return _sentences_for(errors)(func)


def _task_line(task: dict[str, Any]) -> str:
    due = f" due {task['due_date']}" + (" (overdue)" if task["overdue"] else "")
    grids = ",".join(task["grid_codes"]) or "-"
    return (
        f"#{task['id']} [{task['status']}] {task['kind']} {task['township_code']} "
        f"{task['title']} · grids {grids} · {task['assignee'] or '-'}"
        + (due if task["due_date"] else "")
    )


@tasks.command("add")
@click.option("--township", "township", required=True, help="Township code.")
@click.option(
    "--kind",
    type=click.Choice(["camera", "repair", "patrol", "publicity", "follow_up", "other"]),
    default="other",
    show_default=True,
)
@click.option("--title", default="", help="Title (default: from the plan item).")
@click.option("--detail", default="", help="What is to be done.")
@click.option("--grid", "grids", multiple=True, help="Target grid code (repeatable).")
@click.option("--station", default=None, help="Police station code.")
@click.option("--assignee", default="", help="Team, grid worker or user name.")
@click.option("--due", default=None, help="Due day, e.g. 2026-12-31.")
@click.option(
    "--from-plan",
    "from_plan",
    type=click.Choice(["cameras", "repairs", "patrol_focus", "publicity", "follow_up"]),
    help="Make the task from this list of the township's prevention plan.",
)
@click.option(
    "--key",
    default=None,
    help="The plan item: lon,lat / camera id / grid / village / station code.",
)
@click.option("--period", "--quarter", "period", help="Survey wave of the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@click.pass_context
@friendly_errors
@_task_errors
def tasks_add_command(
    ctx: click.Context,
    township: str,
    kind: str,
    title: str,
    detail: str,
    grids: tuple[str, ...],
    station: str | None,
    assignee: str,
    due: str | None,
    from_plan: str | None,
    key: str | None,
    period: str | None,
    as_json: bool,
) -> None:
    """Create a prevention task by hand or from an item of the prevention plan."""
    from gridwatch.areas import load_tree
    from gridwatch.targeting.tasks import create_task, task_from_plan_item

    settings = get_settings(ctx)
    engine = _engine_for(ctx)
    tree = load_tree(engine)
    fields: dict[str, Any]
    if from_plan:
        from gridwatch.targeting.prevention import prevention_plan

        if not key:
            raise UserFacingError("--from-plan needs --key naming the plan item")
        plan_data = prevention_plan(engine, settings, township, period, replicates=200)
        fields = task_from_plan_item(plan_data, from_plan, key, tree, settings)
        if title:
            fields["title"] = title
        if detail:
            fields["detail"] = detail
        if station:
            fields["station_code"] = station
    else:
        if not title:
            raise UserFacingError("a task made by hand needs --title")
        fields = {
            "township_code": township,
            "kind": kind,
            "title": title,
            "detail": detail,
            "grid_codes": list(grids),
            "station_code": station,
        }
    task = create_task(engine, settings, assignee=assignee, due_date=due, tree=tree, **fields)
    if as_json:
        emit_json(task)
        return
    click.echo(_task_line(task))


@tasks.command("list")
@click.option("--township", "township", default=None, help="Only this township's tasks.")
@click.option("--status", default=None, help="Only tasks with this status.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_task_errors
def tasks_list_command(
    ctx: click.Context, township: str | None, status: str | None, as_json: bool
) -> None:
    """List prevention tasks, newest first."""
    from gridwatch.areas import load_tree
    from gridwatch.targeting.tasks import list_tasks

    engine = _engine_for(ctx)
    tree = load_tree(engine)
    ids = None
    if township:
        node = tree.by_code.get(township)
        if node is None:
            raise UserFacingError(f"no area with code {township!r}")
        ids = {node.id}
    found = list_tasks(engine, ids, status, tree)
    if as_json:
        emit_json(found)
        return
    for task in found:
        click.echo(_task_line(task))
    if not found:
        click.echo("no tasks")


@tasks.command("status")
@click.argument("task_id", type=int)
@click.argument("status")
@click.option("--note", default="", help="Why (kept in the audit log).")
@click.pass_context
@friendly_errors
@_task_errors
def tasks_status_command(ctx: click.Context, task_id: int, status: str, note: str) -> None:
    """Move task TASK_ID to STATUS (open, in_progress, done, cancelled)."""
    from gridwatch.targeting.tasks import change_status, get_task

    engine = _engine_for(ctx)
    change_status(engine, task_id, status, note=note)
    task = get_task(engine, task_id)
    assert task is not None
    click.echo(_task_line(task))


@tasks.command("effect")
@click.argument("task_id", type=int)
@click.option("--weeks", default=8, show_default=True, help="Weeks before and after.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
@friendly_errors
@_task_errors
def tasks_effect_command(ctx: click.Context, task_id: int, weeks: int, as_json: bool) -> None:
    """Measure a done task's effect (difference in differences) and watch its neighbours."""
    from gridwatch.targeting.tasks import task_effect

    settings = get_settings(ctx)
    engine = _engine_for(ctx)
    effect = task_effect(engine, settings, task_id, weeks)
    if as_json:
        emit_json(effect)
        return
    state_ = effect["state"]
    if state_ == "not_done":
        click.echo(f"task {task_id} is not done yet: there is no effect to measure")
        return
    if state_ == "no_targets":
        click.echo(f"task {task_id} names no grid: there is no effect to measure")
        return
    if state_ == "too_early":
        click.echo(
            f"too early: {effect['weeks_elapsed']} of {weeks} weeks have passed since the task "
            f"was done; ready on {effect['ready_on']}"
        )
        return
    t, c = effect["target"], effect["comparison"]
    click.echo(
        f"target grids ({len(t['grids'])}): {t['before']} incidents in the {weeks} weeks "
        f"before, {t['after']} after"
    )
    click.echo(f"comparison grids ({len(c['grids'])}): {c['before']} before, {c['after']} after")
    if effect["ratio"] is None:
        click.echo("no comparable grid: no estimate")
    else:
        click.echo(
            f"difference in differences: {effect['did_incidents']:+g} incidents "
            f"({effect['did_per_grid']:+g} per target grid); ratio {effect['ratio']} "
            f"(95% {effect['ratio_low']}–{effect['ratio_high']}), {effect['effect_pct']:+g} %: "
            f"{effect['verdict']}"
        )
    shift = effect["displacement"]
    click.echo(
        f"neighbouring grids: {shift['before']} before, {shift['after']} after; "
        f"rising: {shift['rising']}"
    )
    for row in shift["rows"]:
        if row["rising"]:
            click.echo(
                f"  {row['grid_code']} {row['grid_name']}: {row['before']} → {row['after']} "
                f"(expected {row['expected']}, p={row['p_value']})"
            )


def run() -> None:
    """Entry point that never shows a traceback for errors the user can fix."""
    main(standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
