"""The GridWatch web app: an application factory and one blueprint per area.

Run it with ``gridwatch serve`` (development) or ``gunicorn 'gridwatch.web:create_app()'``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, g, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.middleware.proxy_fix import ProxyFix

from gridwatch.config import Settings, load_settings
from gridwatch.storage import create_db_engine
from gridwatch.web.extensions import STATE_KEY, GridWatchState, babel, csrf

SESSION_LIFETIME = timedelta(hours=12)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the web app.

    Parameters
    ----------
    test_config : dict, optional
        Flask settings that override the defaults. The key ``GRIDWATCH_SETTINGS`` may hold a
        :class:`gridwatch.config.Settings`; without it the ``GRIDWATCH_*`` environment
        variables are read. ``GRIDWATCH_ENGINE`` may hold an engine to reuse.
    """
    config = dict(test_config or {})
    settings: Settings = config.pop("GRIDWATCH_SETTINGS", None) or load_settings()
    engine = config.pop("GRIDWATCH_ENGINE", None) or create_db_engine(settings.database_url)
    _configure_logging(settings)

    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="gridwatch_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # Checked explicitly (web.access.check_csrf) so bearer-token API calls can skip it.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=int(SESSION_LIFETIME.total_seconds()),
        WTF_CSRF_SSL_STRICT=settings.secure_cookies,
        BABEL_DEFAULT_LOCALE="zh_CN",
        BABEL_DEFAULT_TIMEZONE=settings.timezone.key,
        MAX_CONTENT_LENGTH=512 * 1024 * 1024,
        JSON_AS_ASCII=False,
    )
    app.config.update(config)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions[STATE_KEY] = GridWatchState(settings=settings, engine=engine)
    if settings.api_cache_mb:
        from gridwatch.web.answers import AnswerCache

        app.wsgi_app = AnswerCache(  # type: ignore[method-assign]
            app.wsgi_app, engine, settings.api_cache_mb * 1024 * 1024
        )
    if settings.proxy_hops:
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops
        )

    from gridwatch.web.i18n import html_lang, select_locale

    babel.init_app(app, locale_selector=select_locale)
    csrf.init_app(app)
    _register(app)

    from gridwatch.web import formatting, labels
    from gridwatch.web import metrics as request_metrics

    request_metrics.init_app(app)  # after _register: its user hook follows load_request_user

    formatting.init_app(app)
    labels.init_app(app)
    app.jinja_env.globals["html_lang"] = html_lang
    return app


def _configure_logging(settings: Settings) -> None:
    import logging

    from gridwatch.logs import configure_logging

    # JSON is asked for explicitly, so it is always installed; plain text only in a process
    # nobody configured (gunicorn, `gridwatch serve`), not under a test runner.
    if settings.log_format == "json" or not logging.getLogger().handlers:
        configure_logging(settings.log_format)


def _register(app: Flask) -> None:
    from gridwatch.web import (
        admin,
        api,
        api_data,  # noqa: F401  (adds its routes to api.bp)
        areas,
        auth,
        dashboard,
        i18n,
        imports,
        maps,
        screen,
    )
    from gridwatch.web.access import check_csrf, load_request_user
    from gridwatch.web.health import bp as health_bp
    from gridwatch.web.metrics import bp as metrics_bp
    from gridwatch.web.reports import bp as reports_bp
    from gridwatch.web.routes import bp as routes_bp
    from gridwatch.web.security import set_security_headers
    from gridwatch.web.survey import bp as survey_bp
    from gridwatch.web.tables import bp as tables_bp

    app.before_request(load_request_user)
    app.before_request(check_csrf)
    app.after_request(set_security_headers)
    for blueprint in (
        auth.bp,
        dashboard.bp,
        areas.bp,
        api.bp,
        admin.bp,
        maps.bp,
        imports.bp,
        screen.bp,
        i18n.bp,
        tables_bp,
        health_bp,
        metrics_bp,
        reports_bp,
        routes_bp,
        survey_bp,
    ):
        app.register_blueprint(blueprint)

    @app.context_processor
    def inject_user() -> dict[str, Any]:
        from gridwatch.web.forms import LanguageForm, LogoutForm
        from gridwatch.web.i18n import LOCALES, select_locale

        return {
            "current_user": g.get("user"),
            "locales": LOCALES,
            "current_locale": select_locale(),
            "language_form": LanguageForm(),
            "logout_form": LogoutForm(),
        }

    def error_page(status: int) -> Any:
        def handler(error: Exception) -> Any:
            if request.path.startswith(api.PREFIX + "/"):
                return api.error_response(status)
            return render_template("errors/error.html", status=status), status

        return handler

    for status in (400, 403, 404, 405, 413, 500):
        app.register_error_handler(status, error_page(status))

    @app.errorhandler(CSRFError)
    def csrf_failed(error: CSRFError) -> Any:
        if request.path.startswith(api.PREFIX + "/"):
            return api.error_response(400, "missing or invalid CSRF token")
        return render_template("errors/error.html", status=400, csrf=True), 400


__all__ = ["create_app"]
