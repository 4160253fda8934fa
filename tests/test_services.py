"""The test services themselves: Redis answers, and a missing service fails under CI."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import pytest
from conftest import _redis_ping, service_unavailable


def test_redis_answers_ping(redis_url: str) -> None:
    parts = urlsplit(redis_url)
    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"+PONG")


def test_redis_ping_reports_a_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        problem = _redis_ping(f"redis://127.0.0.1:{port}/0", timeout=1)
    assert problem is not None


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_service_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="Redis is not available: down"):
        service_unavailable("Redis", "down")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_missing_service_skips_on_a_workstation(
    monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL"):
        service_unavailable("PostgreSQL + PostGIS", "cannot connect")
