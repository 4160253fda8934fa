"""Sign-in and sign-out."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response

from gridwatch.accounts import LOCKOUT, audit, authenticate
from gridwatch.web.access import client_ip, current_user, start_session
from gridwatch.web.extensions import state
from gridwatch.web.forms import LoginForm, LogoutForm
from gridwatch.web.i18n import _local_target

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """Show the sign-in form; on a valid submission start a session."""
    form = LoginForm()
    # HEAD is a GET without a body: it must never be taken for a (CSRF-less) submission.
    if request.method != "POST":
        form.next.data = request.args.get("next", "")
        if current_user() is not None:
            return redirect(_local_target(form.next.data))
        return render_template("auth/login.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400
    result = authenticate(
        state().engine, form.username.data or "", form.password.data or "", ip=client_ip()
    )
    if result.outcome == "ok" and result.principal is not None:
        start_session(result.principal)
        return redirect(_local_target(form.next.data))
    status = 200
    if result.outcome == "bad":
        flash(_("Wrong user name or password."), "error")
    elif result.outcome == "locked":
        minutes = int(LOCKOUT.total_seconds() // 60)
        flash(
            _(
                "Too many failed sign-ins: this account is locked for %(minutes)d minutes.",
                minutes=minutes,
            ),
            "error",
        )
        status = 429
    else:
        flash(_("Too many failed sign-ins from this computer. Try again later."), "error")
        status = 429
    form.password.data = ""
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
def logout() -> Response:
    """End the session (a POST with the CSRF token, so no link can sign anyone out)."""
    form = LogoutForm()
    user = current_user()
    if form.validate_on_submit() and user is not None:
        audit(state().engine, "logout", actor=user, ip=client_ip())
        language = session.get("lang")
        session.clear()
        if language:
            session["lang"] = language
    return redirect(url_for("auth.login"))
