"""The ``gridwatch users`` commands."""

from __future__ import annotations

import json

from web_support import STATION, TOWNSHIP_B, login

from gridwatch.accounts import principal_for_token


def test_users_add_reads_the_password_from_stdin(runner, client):
    result = runner.invoke(
        ["users", "add", "new_b", "--role", "township", "--area", TOWNSHIP_B, "--password-stdin"],
        input="a good password\n",
    )
    assert result.exit_code == 0, result.output
    assert "created user new_b" in result.output
    assert login(client, "new_b", password="a good password").status_code == 302
    assert "西山乡" in client.get("/").get_data(as_text=True)


def test_users_add_station_user_by_station_code(runner, client):
    result = runner.invoke(
        ["users", "add", "ps2", "--role", "station", "--area", STATION, "--password-stdin"],
        input="a good password\n",
    )
    assert result.exit_code == 0, result.output
    login(client, "ps2", password="a good password")
    assert "东城派出所" in client.get("/").get_data(as_text=True)


def test_users_add_refuses_bad_requests(runner):
    cases = [
        (["users", "add", "county", "--role", "county", "--area", "510000000000"], "exists"),
        (["users", "add", "x1", "--role", "township", "--area", "999"], "no area"),
        (["users", "add", "x2", "--role", "township"], "needs --area"),
        (["users", "add", "x3", "--role", "station", "--area", "510000000000"], "station"),
    ]
    for args, message in cases:
        result = runner.invoke([*args, "--password-stdin"], input="a good password\n")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    short = runner.invoke(
        ["users", "add", "x4", "--role", "admin", "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 2 and "at least 8" in short.output
    bad_role = runner.invoke(["users", "add", "x5", "--role", "god", "--password-stdin"])
    assert bad_role.exit_code == 2


def test_users_list_and_password(runner, client):
    listed = json.loads(runner.invoke(["users", "list", "--json"]).output)
    assert {u["username"] for u in listed} >= {"admin", "county", "station", "town_a"}
    station = next(u for u in listed if u["username"] == "station")
    assert station["area_code"] == STATION and station["role"] == "station"
    changed = runner.invoke(
        ["users", "password", "town_a", "--password-stdin"], input="brand new password\n"
    )
    assert changed.exit_code == 0, changed.output
    assert login(client, "town_a", password="brand new password").status_code == 302
    missing = runner.invoke(["users", "password", "ghost", "--password-stdin"], input="x" * 9)
    assert missing.exit_code == 2 and "no user named" in missing.output


def test_users_disable_stops_tokens(runner, app):
    engine = app.extensions["gridwatch"].engine
    token = runner.invoke(["users", "token", "town_a"]).output.strip()
    assert principal_for_token(engine, token) is not None
    assert runner.invoke(["users", "disable", "town_a"]).exit_code == 0
    assert principal_for_token(engine, token) is None
    assert runner.invoke(["users", "enable", "town_a"]).exit_code == 0
    assert principal_for_token(engine, token) is not None


def test_user_changes_are_audited(runner, client):
    runner.invoke(["users", "token", "county"])
    runner.invoke(["users", "token", "county", "--revoke"])
    login(client, "admin")
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "签发接口令牌" in audit and "吊销接口令牌" in audit


def test_cli_imports_and_exports_are_audited(runner, app, tmp_path):
    from sqlalchemy import select

    from gridwatch.storage import session_scope
    from gridwatch.storage.models import AuditEvent

    stations = tmp_path / "stations.csv"
    stations.write_text("code,name,lon,lat,township_codes\nPS09,新站,104.001,30.001,\n", "utf-8")
    assert runner.invoke(["import", "stations", str(stations)]).exit_code == 0
    out = tmp_path / "out.gpkg"
    exported = runner.invoke(["export", "gpkg", str(out)])
    assert exported.exit_code == 0, exported.output
    with session_scope(app.extensions["gridwatch"].engine) as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.target, AuditEvent.username, AuditEvent.detail)
            .where(AuditEvent.action.in_(["import", "export"]))
            .order_by(AuditEvent.id)
        ).all()
    assert [(e.action, e.target) for e in events] == [
        ("import", "stations: stations.csv"),
        ("export", str(out)),
    ]
    assert events[0].username.startswith("cli:")
    assert events[0].detail["imported"] == 1
    assert events[1].detail["layers"]["stations"] == 2
