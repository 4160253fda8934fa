"""Who is asking, and what they may see: the request's user, roles and jurisdiction.

A page request is signed in through the session cookie. An API request may instead carry
``Authorization: Bearer TOKEN``; such a request has no ambient credentials, so it is the one
kind exempt from the CSRF check that every other state-changing request passes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for
from werkzeug.wrappers import Response

from gridwatch.accounts import Principal, load_principal, principal_for_token
from gridwatch.areas import AreaNode, AreaTree, Jurisdiction, TreeCache, jurisdiction_of
from gridwatch.web.extensions import csrf, state

F = TypeVar("F", bound=Callable[..., Any])

#: Roles that may manage users and read the audit log.
ADMIN_ROLES = ("admin",)
#: Blueprints whose views accept a bearer token.
TOKEN_BLUEPRINTS = ("api",)
#: Endpoints that need no user (public files and the health checks): no session is read, so
#: a probe answers even while the database is down.
PUBLIC_FILE_ENDPOINTS = ("static", "maps.asset", "health.healthz", "health.readyz")
#: Endpoints a ``viewer`` user's token may open from the query string (``/screen?token=``):
#: the wall screen cannot type a password, and reads nothing else this way.
SCREEN_TOKEN_ENDPOINTS = ("screen.page", "screen.data", "maps.frame", "maps.polygons_layer")
#: Query-string argument carrying that token.
SCREEN_TOKEN_ARG = "token"
#: Key of the per-process tree cache in ``app.extensions``.
TREE_CACHE_KEY = "gridwatch_area_tree"


def client_ip() -> str:
    """Return the address of the client (as seen by the WSGI server)."""
    return request.remote_addr or ""


def _bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def load_request_user() -> None:
    """Set ``g.user`` (a :class:`Principal` or ``None``) and ``g.auth`` for this request."""
    g.user = None
    g.auth = None
    if request.endpoint in PUBLIC_FILE_ENDPOINTS:
        return  # stylesheets and scripts: no database round trip
    engine = state().engine
    if request.endpoint in SCREEN_TOKEN_ENDPOINTS and SCREEN_TOKEN_ARG in request.args:
        # Checked on every request (no session is started), so the screen keeps working
        # when the server restarts with a new secret key.
        principal = principal_for_token(engine, request.args[SCREEN_TOKEN_ARG])
        if principal is not None and principal.role == "viewer":
            g.user = principal
            g.auth = "screen_token"
        else:
            g.auth = "bad_token"
        return
    token = _bearer_token() if request.blueprint in TOKEN_BLUEPRINTS else None
    if token is not None:
        g.user = principal_for_token(engine, token)
        g.auth = "token" if g.user else "bad_token"
        return
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        principal = load_principal(engine, user_id)
        if principal is not None and session.get("session_key") == principal.session_key:
            g.user = principal
            g.auth = "session"
        else:
            session.clear()


def check_csrf() -> None:
    """Check the CSRF token of every state-changing request not signed by a bearer token."""
    if request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        return
    if g.get("auth") == "token":
        return
    csrf.protect()


def current_user() -> Principal | None:
    """Return the signed-in user of this request."""
    user: Principal | None = g.get("user")
    return user


def tree_cache() -> TreeCache:
    """Return this app's per-process cache of the administrative tree."""
    cache = current_app.extensions.get(TREE_CACHE_KEY)
    if cache is None:
        cache = current_app.extensions.setdefault(TREE_CACHE_KEY, TreeCache())
    assert isinstance(cache, TreeCache)
    return cache


def area_tree() -> AreaTree:
    """Return the administrative tree, checked against the database once per request.

    The tree is cached per process and reloaded only when its signature changed (an import
    of areas), so a request costs one one-row query instead of reading every area.
    """
    if "area_tree" not in g:
        g.area_tree = tree_cache().get(state().engine)
    tree: AreaTree = g.area_tree
    return tree


def current_jurisdiction() -> Jurisdiction:
    """Return the areas the signed-in user may see (empty when nobody is signed in).

    Kept with the cached tree for users tied to an area; a station user's townships are
    read every time (a stations import may change them without touching the tree).
    """
    if "jurisdiction" not in g:
        user = current_user()
        if user is None:
            g.jurisdiction = Jurisdiction((), frozenset())
        elif user.role == "station":
            g.jurisdiction = jurisdiction_of(
                state().engine, user.role, user.area_id, user.station_id, area_tree()
            )
        else:
            tree = area_tree()
            key = ("jurisdiction", user.role, user.area_id)
            if key not in tree.derived:
                tree.derived[key] = jurisdiction_of(
                    state().engine, user.role, user.area_id, None, tree
                )
            g.jurisdiction = tree.derived[key]
    found: Jurisdiction = g.jurisdiction
    return found


def visible_area_or_404(code: str) -> AreaNode:
    """Return the area with ``code`` if the user may see it; otherwise answer 404.

    An area outside the jurisdiction is indistinguishable from one that does not exist.
    """
    node = area_tree().by_code.get(code)
    if node is None or node.id not in current_jurisdiction():
        abort(404)
    return node


def _wants_json() -> bool:
    return request.blueprint in TOKEN_BLUEPRINTS


def _unauthorised() -> Response:
    if _wants_json():
        response = jsonify(error={"status": 401, "message": "authentication required"})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="gridwatch"'
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def login_required(view: F) -> F:
    """Answer 401 (API) or redirect to the sign-in page unless a user is signed in."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return _unauthorised()
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def roles_required(*roles: str) -> Callable[[F], F]:
    """Like :func:`login_required`, and answer 403 to users of any other role."""

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return _unauthorised()
            if user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator


def start_session(principal: Principal) -> None:
    """Begin a fresh session for ``principal`` (nothing of the old session is kept)."""
    language = session.get("lang")
    session.clear()
    session.permanent = True
    session["user_id"] = principal.id
    session["session_key"] = principal.session_key
    if language:
        session["lang"] = language


__all__ = [
    "ADMIN_ROLES",
    "SCREEN_TOKEN_ARG",
    "area_tree",
    "check_csrf",
    "client_ip",
    "current_jurisdiction",
    "current_user",
    "load_request_user",
    "login_required",
    "roles_required",
    "start_session",
    "tree_cache",
    "visible_area_or_404",
]
