"""Sign-in, lockout, CSRF, sessions and the audit log of the web app."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from web_support import PASSWORD, csrf_token, login

from gridwatch.accounts import (
    IP_MAX_FAILURES,
    LOCKOUT,
    MAX_FAILED_LOGINS,
    authenticate,
    set_active,
    set_password,
)
from gridwatch.storage import session_scope
from gridwatch.storage.models import AuditEvent, User, utcnow


def engine_of(app):
    return app.extensions["gridwatch"].engine


def audit_actions(app, username: str | None = None) -> list[str]:
    with session_scope(engine_of(app)) as session:
        query = select(AuditEvent.action).order_by(AuditEvent.id)
        if username is not None:
            query = query.where(AuditEvent.username == username)
        return list(session.scalars(query))


def test_pages_need_a_signed_in_user(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/auth/login?next=/")
    assert client.get("/areas/510000000000").status_code == 302


def test_login_success_opens_the_overview(client, app):
    response = login(client, "county")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "测试县" in page.get_data(as_text=True)
    assert audit_actions(app, "county") == ["login"]


def test_login_follows_a_local_next_but_never_another_host(client):
    assert login(client, "county", next="/areas/510000001000").headers["Location"] == (
        "/areas/510000001000"
    )
    client.post("/auth/logout", data={"csrf_token": csrf_token(client.get("/").text)})
    for target in ("//evil.example/x", "https://evil.example/", "javascript:alert(1)"):
        response = login(client, "county", next=target)
        assert response.headers["Location"] == "/", target
        client.post("/auth/logout", data={"csrf_token": csrf_token(client.get("/").text)})


def test_wrong_password_is_refused_without_a_session(client, app):
    response = login(client, "county", password="not the password")
    assert response.status_code == 200
    assert "用户名或密码错误" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    unknown = login(client, "nobody", password="whatever123")
    assert "用户名或密码错误" in unknown.get_data(as_text=True)  # same answer: no enumeration
    assert audit_actions(app, "county") == ["login_failed"]
    assert audit_actions(app, "nobody") == ["login_failed"]


def test_lockout_after_repeated_failures(client, app):
    for _ in range(MAX_FAILED_LOGINS - 1):
        assert login(client, "town_a", password="wrong-password").status_code == 200
    locked = login(client, "town_a", password="wrong-password")
    assert locked.status_code == 429
    assert "锁定" in locked.get_data(as_text=True)
    # While locked, even the right password does not sign in.
    still = login(client, "town_a")
    assert still.status_code == 429
    assert client.get("/").status_code == 302
    with session_scope(engine_of(app)) as session:
        user = session.scalar(select(User).where(User.username == "town_a"))
        assert user.locked_until is not None
        assert user.locked_until > utcnow() + LOCKOUT - timedelta(minutes=1)
    # Other users are not affected.
    assert login(client, "town_b").status_code == 302


def test_lockout_ends_after_its_time(app):
    engine = engine_of(app)
    start = utcnow()
    for _ in range(MAX_FAILED_LOGINS):
        authenticate(engine, "station", "wrong-password", ip="10.0.0.1", now=start)
    assert authenticate(engine, "station", PASSWORD, now=start).outcome == "locked"
    later = start + LOCKOUT + timedelta(seconds=1)
    result = authenticate(engine, "station", PASSWORD, now=later)
    assert result.outcome == "ok"
    assert result.principal is not None and result.principal.username == "station"


def test_one_address_with_many_failures_is_rate_limited(app):
    engine = engine_of(app)
    for n in range(IP_MAX_FAILURES):
        assert authenticate(engine, f"guess{n}", "password1", ip="10.9.9.9").outcome == "bad"
    assert authenticate(engine, "county", PASSWORD, ip="10.9.9.9").outcome == "rate_limited"
    # Another address is not.
    assert authenticate(engine, "county", PASSWORD, ip="10.9.9.8").outcome == "ok"


def test_login_without_csrf_token_is_rejected(client, app):
    client.get("/auth/login")
    response = client.post("/auth/login", data={"username": "county", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302
    forged = client.post(
        "/auth/login",
        data={"username": "county", "password": PASSWORD, "csrf_token": "forged"},
    )
    assert forged.status_code == 400
    assert audit_actions(app, "county") == []


def test_head_answers_like_get_without_a_body(client, app):
    before = audit_actions(app)
    page = client.get("/auth/login")
    head = client.head("/auth/login")
    assert (head.status_code, head.content_type) == (200, page.content_type)
    assert head.data == b""
    assert audit_actions(app) == before  # not taken for a failed sign-in
    login(client, "admin")
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.arguments:
            continue
        get, head = client.get(rule.rule), client.head(rule.rule)
        assert (head.status_code, head.data) == (get.status_code, b""), rule.rule
        assert head.headers.get("Location") == get.headers.get("Location"), rule.rule


def test_logout_needs_post_and_csrf(client):
    login(client, "county")
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 400
    assert client.get("/").status_code == 200
    token = csrf_token(client.get("/").get_data(as_text=True))
    assert client.post("/auth/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_password_is_stored_as_argon2id(app):
    with session_scope(engine_of(app)) as session:
        hashes = session.scalars(select(User.password_hash)).all()
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert all(PASSWORD not in h for h in hashes)


def test_password_change_ends_existing_sessions(client, app):
    login(client, "town_b")
    assert client.get("/").status_code == 200
    set_password(engine_of(app), "town_b", "another password")
    assert client.get("/").status_code == 302
    assert login(client, "town_b", password="another password").status_code == 302


def test_disabled_user_is_signed_out_and_cannot_sign_in(client, app):
    login(client, "town_b")
    set_active(engine_of(app), "town_b", False)
    assert client.get("/").status_code == 302
    assert login(client, "town_b").status_code == 200  # refused like a wrong password


def test_session_cookie_is_secure_and_http_only(client):
    response = login(client, "county")
    cookie = next(
        value
        for name, value in response.headers.items()
        if name == "Set-Cookie" and value.startswith("gridwatch_session=")
    )
    assert "; Secure" in cookie
    assert "; HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_session_cookie_can_be_made_plain_http(tmp_path, web_settings):
    from dataclasses import replace

    from gridwatch.web import create_app

    app = create_app({"GRIDWATCH_SETTINGS": replace(web_settings, secure_cookies=False)})
    assert app.config["SESSION_COOKIE_SECURE"] is False
    app.extensions["gridwatch"].engine.dispose()


def test_failed_sign_ins_are_counted_per_client_behind_a_proxy(web_settings):
    from dataclasses import replace

    from gridwatch.web import create_app

    app = create_app({"GRIDWATCH_SETTINGS": replace(web_settings, proxy_hops=1)})
    try:
        client = app.test_client()
        page = client.get("/auth/login").get_data(as_text=True)
        client.post(
            "/auth/login",
            data={"username": "county", "password": "wrong-pass", "csrf_token": csrf_token(page)},
            headers={"X-Forwarded-For": "192.0.2.7"},
        )
        with session_scope(engine_of(app)) as session:
            ips = session.scalars(
                select(AuditEvent.ip).where(AuditEvent.action == "login_failed")
            ).all()
        assert ips == ["192.0.2.7"]
    finally:
        app.extensions["gridwatch"].engine.dispose()


def test_web_settings_are_checked(tmp_path):
    from conftest import make_settings

    from gridwatch.config import ConfigError

    assert make_settings(tmp_path).secure_cookies is True
    assert make_settings(tmp_path).proxy_hops == 0
    assert make_settings(tmp_path, GRIDWATCH_SECURE_COOKIES="false").secure_cookies is False
    assert make_settings(tmp_path, GRIDWATCH_PROXY_HOPS="2").proxy_hops == 2
    with pytest.raises(ConfigError, match="GRIDWATCH_SECURE_COOKIES"):
        make_settings(tmp_path, GRIDWATCH_SECURE_COOKIES="perhaps")
    with pytest.raises(ConfigError, match="GRIDWATCH_PROXY_HOPS"):
        make_settings(tmp_path, GRIDWATCH_PROXY_HOPS="-1")
