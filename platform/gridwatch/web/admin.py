"""Administration: users (create, enable, disable) and the audit log."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from gridwatch.accounts import AccountError, create_user, list_users, recent_events, set_active
from gridwatch.web.access import ADMIN_ROLES, client_ip, current_user, roles_required
from gridwatch.web.extensions import state
from gridwatch.web.forms import UserActiveForm, UserForm
from gridwatch.web.labels import ROLE_LABELS

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _user_form() -> UserForm:
    form = UserForm()
    form.role.choices = [SelectChoice(role, str(label)) for role, label in ROLE_LABELS.items()]
    return form


def _users_page(form: UserForm, status: int = 200) -> tuple[str, int]:
    return (
        render_template(
            "admin/users.html",
            users=list_users(state().engine),
            form=form,
            active_form=UserActiveForm(),
            role_labels=ROLE_LABELS,
        ),
        status,
    )


@bp.get("/users")
@roles_required(*ADMIN_ROLES)
def users() -> tuple[str, int]:
    """List users, with the form that creates one."""
    return _users_page(_user_form())


@bp.post("/users")
@roles_required(*ADMIN_ROLES)
def add_user() -> Response | tuple[str, int]:
    """Create a user from the form."""
    form = _user_form()
    if not form.validate_on_submit():
        return _users_page(form, 400)
    try:
        create_user(
            state().engine,
            form.username.data or "",
            form.role.data or "",
            form.password.data or "",
            form.area_code.data or None,
            actor=current_user(),
            ip=client_ip(),
        )
    except AccountError as exc:
        flash(str(exc), "error")
        return _users_page(form, 400)
    flash(_("User %(name)s created.", name=form.username.data), "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<username>/active")
@roles_required(*ADMIN_ROLES)
def set_user_active(username: str) -> Response:
    """Enable or disable a user."""
    form = UserActiveForm()
    user = current_user()
    if not form.validate_on_submit() or form.active.data not in ("0", "1"):
        abort(400)
    if user is not None and user.username == username:
        flash(_("You cannot disable your own account."), "error")
        return redirect(url_for("admin.users"))
    try:
        set_active(state().engine, username, form.active.data == "1", actor=user, ip=client_ip())
    except AccountError:
        abort(404)
    return redirect(url_for("admin.users"))


@bp.get("/audit")
@roles_required(*ADMIN_ROLES)
def audit_log() -> str:
    """Show the newest audit records."""
    return render_template("admin/audit.html", events=recent_events(state().engine))
