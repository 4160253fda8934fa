"""Template filters that format figures in the interface language."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Flask
from flask_babel import format_datetime, format_decimal
from flask_babel import gettext as _

NOT_AVAILABLE = "–"


def number(value: Any, digits: int = 0) -> str:
    """Format a count or a measure; ``None`` shows as a dash."""
    if value is None:
        return NOT_AVAILABLE
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return str(format_decimal(value, format=pattern))


def percent(value: Any, digits: int = 1) -> str:
    """Format a percentage held as 0–100."""
    if value is None:
        return NOT_AVAILABLE
    return number(value, digits) + "%"


def change(value: Any) -> str:
    """Format a relative change with its sign, e.g. ``+12.5%``."""
    if value is None:
        return NOT_AVAILABLE
    sign = "+" if value > 0 else ""
    return sign + percent(value)


def change_class(value: Any) -> str:
    """CSS class for a change: rising incidents are bad news."""
    if value is None or value == 0:
        return "flat"
    return "up" if value > 0 else "down"


def local_time(value: Any) -> str:
    """Format an instant (aware datetime or ISO string) in the configured time zone."""
    if value is None or value == "":
        return _("never")
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return str(format_datetime(value, "yyyy-MM-dd HH:mm"))


def init_app(app: Flask) -> None:
    """Register the filters."""
    app.add_template_filter(number)
    app.add_template_filter(percent)
    app.add_template_filter(change)
    app.add_template_filter(change_class)
    app.add_template_filter(local_time)
