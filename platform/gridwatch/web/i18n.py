"""Interface language: Chinese by default, English on request (kept in the session)."""

from __future__ import annotations

from flask import Blueprint, redirect, session, url_for
from werkzeug.wrappers import Response

from gridwatch.web.forms import LanguageForm

DEFAULT_LOCALE = "zh_CN"
#: Locale code → the language's own name, as offered by the switch.
LOCALES = {"zh_CN": "中文", "en": "English"}

bp = Blueprint("i18n", __name__)


def select_locale() -> str:
    """Return the session's language, else Chinese.

    The browser's preference is not asked: staff share workstations whose browsers are often
    set to English.
    """
    chosen = session.get("lang")
    return chosen if chosen in LOCALES else DEFAULT_LOCALE


def html_lang() -> str:
    """Return the BCP 47 tag of the current language for ``<html lang>``."""
    return "zh-CN" if select_locale() == "zh_CN" else "en"


def _local_target(target: str | None) -> str:
    # Only paths on this site: never redirect to another host ("//evil" included).
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("dashboard.index")


@bp.post("/lang")
def switch_language() -> Response:
    """Remember the chosen language and go back to the page it was chosen on."""
    form = LanguageForm()
    if form.validate_on_submit() and form.lang.data in LOCALES:
        session["lang"] = form.lang.data
    return redirect(_local_target(form.next.data))
