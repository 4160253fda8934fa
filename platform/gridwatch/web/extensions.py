"""Flask extensions, created unbound here and bound to each app by :func:`create_app`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import Engine

from gridwatch.config import Settings

babel = Babel()
csrf = CSRFProtect()

#: Key of the app's :class:`GridWatchState` in ``app.extensions``.
STATE_KEY = "gridwatch"


@dataclass(frozen=True)
class GridWatchState:
    """What every request needs besides Flask: the settings and the database engine."""

    settings: Settings
    engine: Engine


def state() -> GridWatchState:
    """Return the current app's settings and engine."""
    found: GridWatchState = current_app.extensions[STATE_KEY]
    return found
