"""Forms (Flask-WTF): each carries a ``csrf_token`` field checked on submission."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import HiddenField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from gridwatch.accounts import MIN_PASSWORD_LENGTH
from gridwatch.storage.models import USER_ROLES


class LoginForm(FlaskForm):
    """Sign-in: ``username``, ``password`` (and ``csrf_token``)."""

    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=100)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=1000)])
    next = HiddenField()


class LogoutForm(FlaskForm):
    """Sign-out is a POST, so another site cannot sign a user out with a link."""


class LanguageForm(FlaskForm):
    """The language switch in the header."""

    lang = HiddenField(validators=[DataRequired()])
    next = HiddenField()


class UserForm(FlaskForm):
    """An administrator creates a user."""

    username = StringField(_l("User name"), validators=[DataRequired(), Length(max=100)])
    role = SelectField(_l("Role"), choices=[SelectChoice(r) for r in USER_ROLES])
    area_code = StringField(
        _l("Area code (police station code for station users)"),
        validators=[Optional(), Length(max=64)],
    )
    password = PasswordField(
        _l("Password"), validators=[DataRequired(), Length(min=MIN_PASSWORD_LENGTH, max=1000)]
    )


class UserActiveForm(FlaskForm):
    """Enable or disable a user."""

    active = HiddenField(validators=[DataRequired()])


class ImportForm(FlaskForm):
    """Upload one file to import; ``kind`` is one of the importers' kinds."""

    kind = SelectField(_l("Kind of data"), validators=[DataRequired()])
    file = FileField(_l("File"), validators=[FileRequired()])
