"""Users, passwords, sign-in lockout, API tokens and the audit log.

Plain functions over the database, shared by the web app and the ``gridwatch users`` command;
nothing here knows Flask. Passwords are hashed with argon2id; API tokens are random strings of
which only the SHA-256 is stored (they carry 256 bits of entropy, so a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from gridwatch.storage.db import session_scope
from gridwatch.storage.models import (
    USER_ROLES,
    ApiToken,
    Area,
    AuditEvent,
    Station,
    User,
    utcnow,
)

#: Consecutive failed sign-ins after which an account is locked for LOCKOUT.
MAX_FAILED_LOGINS = 5
LOCKOUT = timedelta(minutes=15)
#: Failed sign-ins from one address (any user names) within IP_WINDOW before it is refused.
IP_MAX_FAILURES = 20
IP_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 8
#: Token prefix, so a leaked token is recognisable in logs and secret scanners.
TOKEN_PREFIX = "gw_"
#: last_used_at is written at most this often, so API reads do not each cost a write.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)

#: Roles whose user must be tied to an area (a station user is tied to a station instead).
AREA_ROLES = ("county", "township", "viewer")

AuditAction = Literal[
    "login",
    "login_failed",
    "login_locked",
    "logout",
    "user_add",
    "user_change",
    "token_issue",
    "token_revoke",
    "import",
    "export",
    "task_add",
    "task_status",
]

_hasher = PasswordHasher()


class AccountError(ValueError):
    """A request about users that cannot be carried out (message is for the user)."""


@dataclass(frozen=True)
class Principal:
    """The signed-in user as plain data (detached from any database session).

    ``session_key`` changes whenever the password does, so sessions signed before a password
    change stop working.
    """

    id: int
    username: str
    role: str
    area_id: int | None
    station_id: int | None
    session_key: str


@dataclass(frozen=True)
class LoginResult:
    """Outcome of :func:`authenticate`.

    ``ok``, ``bad`` (wrong name or password), ``locked`` (too many failures for this user) or
    ``rate_limited`` (too many failures from this address).
    """

    outcome: Literal["ok", "bad", "locked", "rate_limited"]
    principal: Principal | None = None


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password``."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Return whether ``password`` matches ``password_hash`` (never raises on a bad hash)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def _session_key(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode("utf-8")).hexdigest()[:16]


def _principal(user: User) -> Principal:
    return Principal(
        id=user.id,
        username=user.username,
        role=user.role,
        area_id=user.area_id,
        station_id=user.station_id,
        session_key=_session_key(user.password_hash),
    )


def token_digest(token: str) -> str:
    """Return the stored form (SHA-256 hex) of an API token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def record_event(
    session: Session,
    action: AuditAction,
    *,
    actor: Principal | None = None,
    username: str | None = None,
    target: str = "",
    ip: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Add one audit record in ``session`` (committed with the change it records)."""
    session.add(
        AuditEvent(
            at=utcnow(),
            user_id=actor.id if actor else None,
            username=(actor.username if actor else username or "")[:100],
            action=action,
            target=target[:500],
            ip=ip[:64],
            detail=detail or {},
        )
    )


def audit(engine: Engine, action: AuditAction, **kwargs: Any) -> None:
    """Record one audit event in its own transaction (see :func:`record_event`)."""
    with session_scope(engine) as session:
        record_event(session, action, **kwargs)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise AccountError(f"no user named {username!r}")
    return user


def create_user(
    engine: Engine,
    username: str,
    role: str,
    password: str,
    area_code: str | None = None,
    *,
    actor: Principal | None = None,
    ip: str = "",
) -> Principal:
    """Create a user.

    Parameters
    ----------
    engine : sqlalchemy.Engine
    username, password : str
    role : {"admin", "county", "station", "township", "viewer"}
    area_code : str, optional
        The area the user answers for; for a ``station`` user, the police station's code.
        Required for every role but ``admin`` (an admin without an area sees everything).
    actor : Principal, optional
        Who creates the user (``None``: the command line).
    ip : str
        Address of the request, for the audit log.

    Raises
    ------
    AccountError
        Unknown role, area or station, a name already taken, or a short password.
    """
    username = username.strip()
    if not username or len(username) > 100:
        raise AccountError("a user name must have 1 to 100 characters")
    if role not in USER_ROLES:
        raise AccountError(f"role must be one of {', '.join(USER_ROLES)}, not {role!r}")
    _check_password(password)
    with session_scope(engine) as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise AccountError(f"a user named {username!r} already exists")
        area_id = station_id = None
        if role == "station":
            if not area_code:
                raise AccountError("a station user needs --area with the police station's code")
            station_id = session.scalar(select(Station.id).where(Station.code == area_code))
            if station_id is None:
                raise AccountError(f"no police station with code {area_code!r}")
        elif area_code:
            area_id = session.scalar(select(Area.id).where(Area.code == area_code))
            if area_id is None:
                raise AccountError(f"no area with code {area_code!r}")
        elif role in AREA_ROLES:
            raise AccountError(f"a {role} user needs --area with the code of their area")
        user = User(
            username=username,
            password_hash=hash_password(password),
            role=role,
            area_id=area_id,
            station_id=station_id,
            active=True,
            failed_logins=0,
        )
        session.add(user)
        session.flush()
        record_event(
            session,
            "user_add",
            actor=actor,
            username=None if actor else "cli",
            target=username,
            ip=ip,
            detail={"role": role, "area": area_code},
        )
        return _principal(user)


def set_password(
    engine: Engine, username: str, password: str, *, actor: Principal | None = None, ip: str = ""
) -> None:
    """Replace a user's password (their existing sessions end) and clear any lockout."""
    _check_password(password)
    with session_scope(engine) as session:
        user = _user(session, username)
        user.password_hash = hash_password(password)
        user.failed_logins = 0
        user.locked_until = None
        record_event(
            session,
            "user_change",
            actor=actor,
            username=None if actor else "cli",
            target=username,
            ip=ip,
            detail={"change": "password"},
        )


def set_active(
    engine: Engine, username: str, active: bool, *, actor: Principal | None = None, ip: str = ""
) -> None:
    """Enable or disable a user; a disabled user's sessions and tokens stop working."""
    with session_scope(engine) as session:
        user = _user(session, username)
        user.active = active
        record_event(
            session,
            "user_change",
            actor=actor,
            username=None if actor else "cli",
            target=username,
            ip=ip,
            detail={"change": "enabled" if active else "disabled"},
        )


def list_users(engine: Engine) -> list[dict[str, Any]]:
    """Return every user as plain data, by name."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(User, Area.code, Area.name, Station.code, Station.name)
            .outerjoin(Area, User.area_id == Area.id)
            .outerjoin(Station, User.station_id == Station.id)
            .order_by(User.username)
        ).all()
        return [
            {
                "username": user.username,
                "role": user.role,
                "area_code": area_code or station_code,
                "area_name": area_name or station_name,
                "active": user.active,
                "locked_until": user.locked_until,
                "last_login_at": user.last_login_at,
                "created_at": user.created_at,
            }
            for user, area_code, area_name, station_code, station_name in rows
        ]


def load_principal(engine: Engine, user_id: int) -> Principal | None:
    """Return the active user with ``user_id``, or ``None``."""
    with session_scope(engine) as session:
        user = session.get(User, user_id)
        if user is None or not user.active:
            return None
        return _principal(user)


def _recent_failures_from(session: Session, ip: str, now: datetime) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == "login_failed",
                AuditEvent.at >= now - IP_WINDOW,
                AuditEvent.ip == ip,
            )
        )
        or 0
    )


def authenticate(
    engine: Engine, username: str, password: str, ip: str = "", now: datetime | None = None
) -> LoginResult:
    """Check a sign-in, counting failures per user and per address, and audit it.

    After :data:`MAX_FAILED_LOGINS` consecutive failures the account is locked for
    :data:`LOCKOUT`; an address with :data:`IP_MAX_FAILURES` failures within :data:`IP_WINDOW`
    is refused before any password is checked. An unknown name costs the same hash check as
    a known one, so timing does not tell which names exist.
    """
    now = now or utcnow()
    username = username.strip()
    with session_scope(engine) as session:
        if ip and _recent_failures_from(session, ip, now) >= IP_MAX_FAILURES:
            record_event(session, "login_locked", username=username, ip=ip, detail={"by": "ip"})
            return LoginResult("rate_limited")
        user = session.scalar(select(User).where(User.username == username))
        if user is None or not user.active:
            verify_password(_dummy_hash(), password)
            record_event(session, "login_failed", username=username, ip=ip)
            return LoginResult("bad")
        if user.locked_until is not None and user.locked_until > now:
            record_event(session, "login_locked", username=username, ip=ip, detail={"by": "user"})
            return LoginResult("locked")
        if not verify_password(user.password_hash, password):
            user.failed_logins = (user.failed_logins or 0) + 1
            locked = user.failed_logins >= MAX_FAILED_LOGINS
            if locked:
                user.locked_until = now + LOCKOUT
                user.failed_logins = 0
            record_event(
                session, "login_failed", username=username, ip=ip, detail={"locked": locked}
            )
            return LoginResult("locked" if locked else "bad")
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        principal = _principal(user)
        record_event(session, "login", actor=principal, ip=ip)
        return LoginResult("ok", principal)


def issue_token(
    engine: Engine,
    username: str,
    label: str = "",
    *,
    actor: Principal | None = None,
    ip: str = "",
) -> str:
    """Create an API token for ``username`` and return it (it is not stored, only its hash)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        user = _user(session, username)
        session.add(
            ApiToken(
                user_id=user.id,
                token_sha256=token_digest(token),
                label=label[:100],
                created_at=utcnow(),
            )
        )
        record_event(
            session,
            "token_issue",
            actor=actor,
            username=None if actor else "cli",
            target=username,
            ip=ip,
            detail={"label": label},
        )
    return token


def revoke_tokens(
    engine: Engine, username: str, *, actor: Principal | None = None, ip: str = ""
) -> int:
    """Revoke every live API token of ``username``; return how many were revoked."""
    with session_scope(engine) as session:
        user = _user(session, username)
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        count = int(getattr(result, "rowcount", 0) or 0)
        record_event(
            session,
            "token_revoke",
            actor=actor,
            username=None if actor else "cli",
            target=username,
            ip=ip,
            detail={"revoked": count},
        )
        return count


def _token_live(revoked_at: datetime | None, active: bool) -> bool:
    return revoked_at is None and bool(active)


def _token_needs_touch(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at > TOKEN_TOUCH_INTERVAL


def principal_for_token(engine: Engine, token: str) -> Principal | None:
    """Return the active user a live API token belongs to, or ``None``."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = utcnow()
    with session_scope(engine) as session:
        row = session.execute(
            select(ApiToken, User)
            .join(User, ApiToken.user_id == User.id)
            .where(ApiToken.token_sha256 == token_digest(token))
        ).first()
        if row is None:
            return None
        api_token, user = row
        if not _token_live(api_token.revoked_at, user.active):
            return None
        if _token_needs_touch(api_token.last_used_at, now):
            api_token.last_used_at = now
        return _principal(user)


@dataclass(frozen=True)
class TokenHolder:
    """The user behind a live API token, as far as a read-only answer depends on it."""

    user_id: int
    username: str
    role: str
    area_id: int | None
    station_id: int | None
    #: The token's last use is due to be recorded (:func:`principal_for_token` does it).
    touch_due: bool


def token_holder_query(*extra: Any) -> Select[Any]:
    """Return the one-row query of an API token and its user, plus ``extra`` columns.

    The token's digest is the bind parameter ``digest`` (:func:`token_digest`). The
    ``extra`` columns (scalar subqueries) are answered in the same round trip; read the row
    with :func:`token_holder`.
    """
    return (
        select(
            ApiToken.revoked_at,
            ApiToken.last_used_at,
            User.active,
            User.id,
            User.username,
            User.role,
            User.area_id,
            User.station_id,
            *extra,
        )
        .join_from(ApiToken, User, ApiToken.user_id == User.id)
        .where(ApiToken.token_sha256 == bindparam("digest"))
    )


def token_holder(row: Any, now: datetime | None = None) -> TokenHolder | None:
    """Return the holder of a live token from a :func:`token_holder_query` row.

    ``None`` when the token is revoked or its user disabled.
    """
    revoked_at, last_used_at, active, user_id, username, role, area_id, station_id = row[:8]
    if not _token_live(revoked_at, active):
        return None
    touch_due = _token_needs_touch(last_used_at, now or utcnow())
    return TokenHolder(user_id, username, role, area_id, station_id, touch_due)


def recent_events(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Return the newest audit records first, as plain data."""
    with session_scope(engine) as session:
        events = session.scalars(
            select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        ).all()
        return [
            {
                "at": e.at,
                "username": e.username,
                "action": e.action,
                "target": e.target,
                "ip": e.ip,
                "detail": dict(e.detail or {}),
            }
            for e in events
        ]


__all__ = [
    "AccountError",
    "LoginResult",
    "Principal",
    "audit",
    "authenticate",
    "create_user",
    "hash_password",
    "issue_token",
    "list_users",
    "load_principal",
    "principal_for_token",
    "recent_events",
    "record_event",
    "revoke_tokens",
    "set_active",
    "TokenHolder",
    "token_holder",
    "token_holder_query",
    "set_password",
    "verify_password",
]
