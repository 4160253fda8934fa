"""Display names of codes (roles, levels, period kinds), through the translation catalogue."""

from __future__ import annotations

from flask import Flask
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

ROLE_LABELS: dict[str, LazyString] = {
    "admin": _l("Administrator"),
    "county": _l("County (command centre)"),
    "station": _l("Police station"),
    "township": _l("Township"),
    "viewer": _l("Viewer (screen)"),
}

LEVEL_LABELS: dict[str, LazyString] = {
    "county": _l("County"),
    "township": _l("Township"),
    "village": _l("Village"),
    "grid": _l("Grid"),
}

PERIOD_LABELS: dict[str, LazyString] = {
    "day": _l("Today"),
    "week": _l("This week"),
    "month": _l("This month"),
    "quarter": _l("This quarter"),
    "year": _l("This year"),
}


def level_label(level: str | None) -> str:
    """Return the display name of an area level (configured levels show as they are)."""
    if level is None:
        return ""
    return str(LEVEL_LABELS.get(level, level))


ACTION_LABELS: dict[str, LazyString] = {
    "login": _l("Signed in"),
    "login_failed": _l("Failed sign-in"),
    "login_locked": _l("Sign-in refused (locked)"),
    "logout": _l("Signed out"),
    "user_add": _l("User created"),
    "user_change": _l("User changed"),
    "token_issue": _l("API token issued"),
    "token_revoke": _l("API tokens revoked"),
    "import": _l("Import"),
    "export": _l("Export"),
}


IMPORT_KIND_LABELS: dict[str, LazyString] = {
    "grids": _l("Administrative areas and grids"),
    "stations": _l("Police stations"),
    "teams": _l("Patrol teams"),
    "incidents": _l("Incidents"),
    "cameras": _l("Cameras"),
    "patrols": _l("Patrol tracks"),
    "surveys": _l("Survey results"),
    "survey-responses": _l("Survey responses"),
}


def import_kind_label(kind: str) -> str:
    """Return the display name of an import kind."""
    return str(IMPORT_KIND_LABELS.get(kind, kind))


def period_label(kind: str) -> str:
    """Return the display name of a period kind ("this quarter")."""
    return str(PERIOD_LABELS.get(kind, kind))


def action_label(action: str) -> str:
    """Return the display name of an audited action."""
    return str(ACTION_LABELS.get(action, action))


def init_app(app: Flask) -> None:
    """Make the label functions available to every template."""
    app.jinja_env.globals.update(
        level_label=level_label,
        period_label=period_label,
        action_label=action_label,
        import_kind_label=import_kind_label,
    )
