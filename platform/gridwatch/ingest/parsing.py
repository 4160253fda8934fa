"""Value parsers shared by the importers. Each raises ``ValueError`` with a readable reason."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

_CN_DATE = str.maketrans({"年": "-", "月": "-", "日": " ", "时": ":", "分": ":", "秒": ""})
_LOOSE = re.compile(
    r"^(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2})(?:\.(\d{1,6}))?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?$"
)
_EXCEL_EPOCH = datetime(1899, 12, 30)


def is_blank(value: Any) -> bool:
    """Return whether a cell holds nothing (``None``, empty or whitespace, NaN)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return value != value
    return False


def text(value: Any) -> str:
    """Return a cell as clean text (NFKC folds full-width digits and letters)."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return unicodedata.normalize("NFKC", str(value)).strip()


def parse_float(value: Any) -> float:
    """Parse a number written with ASCII or full-width digits."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        number = float(value)
    else:
        raw = text(value).replace(",", "")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def parse_int(value: Any) -> int:
    """Parse a whole number (``12``, ``12.0``, ``１２``)."""
    number = parse_float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def parse_percent(value: Any) -> float:
    """Parse a percentage 0–100 (a trailing ``%`` is allowed)."""
    raw = text(value).rstrip("%").strip() if isinstance(value, str) else value
    number = parse_float(raw)
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"{number:g} is not a percentage between 0 and 100")
    return number


def _attach_zone(moment: datetime, tz: ZoneInfo) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def parse_datetime(value: Any, tz: ZoneInfo, fmt: str | None = None) -> datetime:
    """Parse a date/time cell into an aware UTC datetime.

    Parameters
    ----------
    value : str, datetime, date or number
        ``2026-07-04 13:05:00``, ``2026/7/4 13:05``, ``2026年7月4日13时5分``, ISO 8601 with
        offset or ``Z``, a spreadsheet datetime, or an Excel serial day number.
    tz : zoneinfo.ZoneInfo
        Zone of values written without an offset (the source system's local time).
    fmt : str, optional
        An explicit :func:`datetime.strptime` format from a mapping file.
    """
    if isinstance(value, datetime):
        return _attach_zone(value, tz)
    if isinstance(value, date):
        return _attach_zone(datetime(value.year, value.month, value.day), tz)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if 20000 < value < 80000:  # Excel serial day numbers (1954–2119)
            return _attach_zone(_EXCEL_EPOCH + timedelta(days=float(value)), tz)
        raise ValueError(f"{value!r} is not a date")
    raw = text(value)
    if not raw:
        raise ValueError("empty date")
    if fmt:
        try:
            return _attach_zone(datetime.strptime(raw, fmt), tz)
        except ValueError:
            raise ValueError(f"{raw!r} does not match the date format {fmt!r}") from None
    cleaned = raw.translate(_CN_DATE).replace("/", "-").replace(".", "-", 2)
    cleaned = re.sub(r"\s+", " ", cleaned).strip().rstrip(":")
    try:
        return _attach_zone(datetime.fromisoformat(cleaned), tz)
    except ValueError:
        pass
    match = _LOOSE.match(cleaned)
    if not match:
        raise ValueError(f"{raw!r} is not a date and time")
    year, month, day, hour, minute, second, frac, offset = match.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(6, "0")),
        )
    except ValueError as exc:
        raise ValueError(f"{raw!r} is not a real date and time ({exc})") from None
    if offset:
        if offset == "Z":
            return moment.replace(tzinfo=UTC)
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        return moment.replace(tzinfo=timezone(sign * delta)).astimezone(UTC)
    return _attach_zone(moment, tz)


def parse_choice(value: Any, choices: dict[str, str], what: str) -> str:
    """Map a cell to one of our codes through a table of accepted spellings."""
    key = text(value).casefold().replace(" ", "_")
    if key in choices:
        return choices[key]
    allowed = sorted(set(choices.values()))
    raise ValueError(f"{text(value)!r} is not a known {what} (use one of {', '.join(allowed)})")


def choice_table(spec: dict[str, list[str]]) -> dict[str, str]:
    """Build a lookup from every spelling (casefolded) to its code."""
    table: dict[str, str] = {}
    for code, spellings in spec.items():
        for spelling in [code, *spellings]:
            table[text(spelling).casefold().replace(" ", "_")] = code
    return table
