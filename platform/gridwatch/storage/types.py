"""Column types that behave the same on SQLite (embedded) and PostgreSQL + PostGIS.

``Geometry`` is a PostGIS ``geometry(<kind>, 4326)`` column on PostgreSQL (with a GiST index
created by the migration) and a WKB ``BLOB`` on SQLite; in Python it is always a Shapely
geometry. ``UTCDateTime`` stores UTC and always hands back timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry
from sqlalchemy import DateTime, LargeBinary, func
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler, TypeCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import TypeDecorator, UserDefinedType


class Geometry(UserDefinedType[BaseGeometry]):
    """A WGS84 geometry column (``POINT``, ``MULTIPOLYGON``, ``LINESTRING`` …).

    Parameters
    ----------
    geometry_type : str
        PostGIS geometry type name.
    """

    cache_ok = True

    def __init__(self, geometry_type: str = "GEOMETRY") -> None:
        self.geometry_type = geometry_type.upper()

    def get_col_spec(self, **kw: Any) -> str:
        """Return the PostGIS column type (SQLite is handled by a compiler hook)."""
        return f"geometry({self.geometry_type},4326)"

    def bind_expression(self, bindvalue: Any) -> ColumnElement[Any]:
        """Wrap parameters so PostGIS parses WKB; on SQLite the WKB is stored as it is."""
        return _GeomFromWKB(bindvalue, type_=self)

    def column_expression(self, col: ColumnElement[Any]) -> ColumnElement[Any]:
        """Select geometries as WKB on every backend."""
        return _AsWKB(col, type_=self)

    def bind_processor(self, dialect: Dialect) -> Any:
        """Turn Shapely geometries into WKB bytes."""

        def process(value: Any) -> bytes | None:
            if value is None:
                return None
            if isinstance(value, BaseGeometry):
                return shapely.to_wkb(value)
            return bytes(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """Turn WKB bytes back into Shapely geometries."""

        def process(value: Any) -> BaseGeometry | None:
            if value is None:
                return None
            return shapely.from_wkb(bytes(value))

        return process


@compiles(Geometry, "sqlite")
def _geometry_sqlite(type_: Geometry, compiler: TypeCompiler, **kw: Any) -> str:
    return "BLOB"


class _GeomFromWKB(GenericFunction[Any]):
    name = "gw_geom_from_wkb"
    inherit_cache = True


class _AsWKB(GenericFunction[Any]):
    name = "gw_as_wkb"
    inherit_cache = True


@compiles(_GeomFromWKB)
def _geom_from_wkb_default(element: _GeomFromWKB, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_GeomFromWKB, "postgresql")
def _geom_from_wkb_pg(element: _GeomFromWKB, compiler: SQLCompiler, **kw: Any) -> str:
    return f"ST_GeomFromWKB({compiler.process(element.clauses, **kw)}, 4326)"


@compiles(_AsWKB)
def _as_wkb_default(element: _AsWKB, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_AsWKB, "postgresql")
def _as_wkb_pg(element: _AsWKB, compiler: SQLCompiler, **kw: Any) -> str:
    return f"ST_AsBinary({compiler.process(element.clauses, **kw)})"


class UTCDateTime(TypeDecorator[datetime]):
    """Store instants in UTC; return aware UTC datetimes on every backend.

    Naive datetimes are refused: the importers attach the source time zone before storing.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert to UTC (naive UTC on SQLite, which has no zone type)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; attach a time zone first")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def wkb_of(column: Any) -> ColumnElement[bytes]:
    """Select a geometry column as plain WKB bytes on every backend.

    For reading many geometries at once: :func:`shapely.from_wkb` on the whole array is
    far cheaper than the column type's conversion row by row.
    """
    return _AsWKB(column, type_=LargeBinary())


# Re-exported so migrations need only this module.
__all__ = ["Geometry", "LargeBinary", "UTCDateTime", "func", "wkb_of"]
