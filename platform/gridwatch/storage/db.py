"""Engines, sessions and schema migrations for SQLite and PostgreSQL + PostGIS."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import BigInteger, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.functions import FunctionElement


class DatabaseError(RuntimeError):
    """The database cannot be reached or is not usable (message is for the user)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_db_engine(database_url: str, **kwargs: Any) -> Engine:
    """Create an engine; on SQLite, create the file's directory and turn on WAL and FKs.

    Parameters
    ----------
    database_url : str
        SQLAlchemy URL from :class:`gridwatch.config.Settings`.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # psycopg prepares a statement after five runs and PostgreSQL may then keep a generic
    # plan made while a table was still empty (a sequential scan for `source_id IN (…)`),
    # which made large imports slow down as rows piled up. Plan every statement afresh.
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args.setdefault("prepare_threshold", None)
    return create_engine(url, connect_args=connect_args, **kwargs)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    location = resources.files("gridwatch.storage").joinpath("migrations")
    cfg.set_main_option("script_location", str(location))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision(engine: Engine) -> str | None:
    """Return the newest migration revision shipped with this version."""
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_database(engine: Engine, revision: str = "head") -> str | None:
    """Create or migrate the schema to ``revision`` and return the revision reached.

    Raises
    ------
    DatabaseError
        When the database cannot be reached, or PostGIS is missing on PostgreSQL.
    """
    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise DatabaseError(
            f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc
    except DBAPIError as exc:
        detail = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        hint = (
            " (install PostGIS on the server, e.g. apt-get install postgresql-15-postgis-3)"
            if "postgis" in detail.lower()
            else ""
        )
        raise DatabaseError(
            f"cannot migrate the database {engine.url.render_as_string(hide_password=True)}: "
            f"{detail}{hint}"
        ) from exc
    return current_revision(engine)


def read_frame(session: Session, stmt: Any, names: list[str]) -> pd.DataFrame:
    """Run a Core ``select`` of plain columns and return its rows as a DataFrame, fast.

    Rows come straight from the DB-API cursor as tuples: no ORM loading, no per-row
    ``Row`` objects and no result type processing, which dominate reading millions of rows.
    Select only numbers, strings and booleans here (times through :class:`epoch_seconds`).
    Text columns stay plain ``object`` columns.
    """
    result = session.connection().execute(stmt)
    try:
        rows = result.cursor.fetchall() if result.cursor is not None else []
    finally:
        result.close()
    if not rows:
        return pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    # One object matrix, then a cast per column: several times faster than zip(*rows).
    table = np.empty((len(rows), len(names)), dtype=object)
    table[:] = rows
    columns = {}
    for i, name in enumerate(names):
        values = table[:, i]
        first = values[0]
        array = values.copy()
        if isinstance(first, int | float) and not isinstance(first, bool):
            try:
                as_float = values.astype(float)  # NULL becomes NaN
            except (TypeError, ValueError):
                as_float = None  # text mixed in: leave the column as it came
            if as_float is not None:
                array = as_float
                whole = isinstance(first, int) and not np.isnan(as_float).any()
                if whole and bool((as_float == np.round(as_float)).all()):
                    array = values.astype(np.int64)  # integers without NULLs stay exact
        columns[name] = pd.Series(array, dtype=array.dtype, copy=False)
    return pd.DataFrame(columns, copy=False)


class epoch_seconds(FunctionElement[int]):  # noqa: N801 - used like a SQL function
    """Whole seconds since 1970-01-01 UTC of a :class:`UTCDateTime` column, computed in SQL.

    Exact (fractions are cut, which never moves an instant across a day or hour boundary)
    and far cheaper to fetch in bulk than a ``datetime`` per row.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_seconds, "sqlite")
def _epoch_sqlite(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    # SQLite's %s rounds fractional seconds; cut them off first (stored as text, UTC).
    inner = compiler.process(element.clauses, **kw)
    return f"CAST(strftime('%s', substr({inner}, 1, 19)) AS INTEGER)"


@compiles(epoch_seconds, "postgresql")
def _epoch_postgresql(element: epoch_seconds, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(EPOCH FROM date_trunc('second', {inner})) AS BIGINT)"
