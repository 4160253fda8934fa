"""Mapping files: rename a foreign system's columns and values so its export imports as is.

.. code-block:: yaml

    columns: {id: ID, occurred_at: Date, category: Primary Type, lon: Longitude, lat: Latitude}
    categories: {THEFT: theft, BURGLARY: burglary}
    values: {source: {"911": call_110}}
    constants: {level: village}
    datetime_format: "%Y/%m/%d %H:%M:%S%z"
    source_timezone: UTC
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from gridwatch.ingest.errors import ImportFileError

_KEYS = {
    "columns",
    "categories",
    "values",
    "constants",
    "datetime_format",
    "source_timezone",
    "crs",
}


@dataclass(frozen=True)
class ColumnMapping:
    """How a foreign file's columns and values map onto GridWatch's fields."""

    columns: dict[str, str] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    constants: dict[str, Any] = field(default_factory=dict)
    datetime_format: str | None = None
    source_timezone: ZoneInfo | None = None
    crs: str | None = None

    def translate(self, field_name: str, value: Any) -> Any:
        """Apply ``categories`` / ``values`` translations to one field's value."""
        table = self.categories if field_name == "category" else self.values.get(field_name)
        if table and value is not None:
            key = str(value).strip()
            if key in table:
                return table[key]
        return value


def _mapping_of_str(data: Any, where: str, path: Path) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ImportFileError(f"{path.name}: '{where}' must be a mapping")
    return {str(k): str(v) for k, v in data.items()}


def load_mapping(path: Path | None, known_fields: set[str] | None = None) -> ColumnMapping:
    """Read and check a mapping YAML file (``None`` gives the empty mapping).

    Parameters
    ----------
    path : pathlib.Path or None
    known_fields : set of str, optional
        The importer's field names; a ``columns`` or ``constants`` key outside it is an error.
    """
    if path is None:
        return ColumnMapping()
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: mapping file not found")
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ImportFileError(f"{path.name}: not a readable YAML mapping file ({exc})") from exc
    if not isinstance(data, dict):
        raise ImportFileError(f"{path.name}: a mapping file must be a YAML mapping")
    unknown = set(data) - _KEYS
    if unknown:
        raise ImportFileError(
            f"{path.name}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}"
        )
    columns = _mapping_of_str(data.get("columns"), "columns", path)
    constants = data.get("constants") or {}
    if not isinstance(constants, dict):
        raise ImportFileError(f"{path.name}: 'constants' must be a mapping")
    if known_fields is not None:
        bad = (set(columns) | set(constants)) - known_fields
        if bad:
            raise ImportFileError(
                f"{path.name}: fields {sorted(bad)} are not fields of this import kind "
                f"(known: {', '.join(sorted(known_fields))})"
            )
    values_raw = data.get("values") or {}
    if not isinstance(values_raw, dict):
        raise ImportFileError(f"{path.name}: 'values' must be a mapping of mappings")
    values = {str(k): _mapping_of_str(v, f"values.{k}", path) for k, v in values_raw.items()}
    tz = None
    if data.get("source_timezone"):
        try:
            tz = ZoneInfo(str(data["source_timezone"]))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ImportFileError(
                f"{path.name}: source_timezone {data['source_timezone']!r} is not a time zone"
            ) from exc
    return ColumnMapping(
        columns=columns,
        categories=_mapping_of_str(data.get("categories"), "categories", path),
        values=values,
        constants={str(k): v for k, v in constants.items()},
        datetime_format=str(data["datetime_format"]) if data.get("datetime_format") else None,
        source_timezone=tz,
        crs=str(data["crs"]) if data.get("crs") else None,
    )
