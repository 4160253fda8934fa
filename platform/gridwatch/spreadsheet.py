"""Cells that are safe to open in a spreadsheet (CSV/XLSX formula injection).

Every CSV or XLSX file GridWatch writes carries text that came from imported files or from
users: addresses, case summaries, rejected raw rows. Excel, WPS and LibreOffice run a cell that
starts with ``=``, ``+``, ``-`` or ``@`` as a formula (``=cmd|' /C calc'!A0`` is the classic
DDE payload), and a leading tab or carriage return is stripped before that check. The OWASP
remedy is to make such a cell plain text by putting an apostrophe in front of it; a reader
sees the original value after the apostrophe.

Use :func:`safe_cell` on every value a writer puts in a cell (``csv.writer``, openpyxl
``ws.append``/``cell.value``, pandas before ``to_csv``/``to_excel``), or :func:`safe_row` on a
whole row. With openpyxl the prefix matters twice: openpyxl itself stores a string starting with
``=`` as a formula.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

# Full-width forms too: Chinese input methods type them, and WPS/Excel in a Chinese locale may
# convert them to their ASCII twins on editing.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")
"""First characters that make a spreadsheet treat a text cell as a formula."""

_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")

_Value = TypeVar("_Value")


def safe_cell(value: _Value) -> _Value | str:
    """Return ``value`` made safe to write into a CSV or XLSX cell.

    A string starting with one of :data:`FORMULA_PREFIXES` gets a leading apostrophe, so a
    spreadsheet shows it as text instead of evaluating it. Everything else is returned
    unchanged: numbers, dates, ``None``, and strings that are just a signed number (``-3.5``,
    ``+86``), which no spreadsheet can turn into a formula. The function is idempotent: an
    already-escaped cell starts with the apostrophe and is left alone.

    Parameters
    ----------
    value : object
        The value about to be written into a cell.

    Returns
    -------
    object
        ``value`` itself, or the escaped string.

    Examples
    --------
    >>> safe_cell("=cmd|' /C calc'!A0")
    "'=cmd|' /C calc'!A0"
    >>> safe_cell("-12.5"), safe_cell(-3), safe_cell("盗窃")
    ('-12.5', -3, '盗窃')
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    if _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """Return a row (list of cell values) with :func:`safe_cell` applied to every value.

    Parameters
    ----------
    values : iterable
        The row's cell values, in column order.

    Returns
    -------
    list
        The escaped values, ready for ``csv.writer.writerow`` or openpyxl ``ws.append``.
    """
    return [safe_cell(v) for v in values]


def safe_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return a dict row with :func:`safe_cell` applied to every value (for ``csv.DictWriter``).

    Keys are column names that GridWatch chooses, so only the values are escaped; escape a
    header row built from user data with :func:`safe_row`.

    Parameters
    ----------
    record : mapping
        Column name to cell value.

    Returns
    -------
    dict
        The same keys with escaped values.
    """
    return {key: safe_cell(value) for key, value in record.items()}


def safe_csv_bytes(path: Path) -> bytes:
    """Return a CSV file's content with every cell passed through :func:`safe_cell`.

    For serving CSV files written before the writers escaped their cells (older import
    reports): the copy is UTF-8 with a BOM, which Excel needs to show Chinese text.

    Parameters
    ----------
    path : pathlib.Path
        A CSV file in UTF-8 (with or without BOM).

    Returns
    -------
    bytes
        The escaped CSV.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        for row in csv.reader(fh):
            writer.writerow(safe_row(row))
    return out.getvalue().encode("utf-8-sig")
