"""The ``gridwatch`` command line: a thin face over the domain functions.

Every command turns known errors (bad settings, unreadable files, unreachable database) into
one clear sentence and exit status 2; a user never sees a traceback.
"""

from __future__ import annotations

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


def run() -> None:
    """Entry point that never shows a traceback for errors the user can fix."""
    main(standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

