"""Pages: language, security headers, escaping, offline assets, overview content."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from web_support import COUNTY, HOSTILE_NAME, TOWNSHIP_A, VILLAGE_A, csrf_token, login

WEB = Path(__file__).resolve().parent.parent / "platform" / "gridwatch" / "web"
CATALOGUE = WEB / "translations" / "zh" / "LC_MESSAGES"


def test_chinese_is_the_default(client):
    page = client.get("/auth/login").get_data(as_text=True)
    assert '<html lang="zh-CN">' in page
    assert "<h1>登录</h1>" in page
    assert "用户名" in page and "密码" in page


def test_english_switch(client):
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post(
        "/lang", data={"lang": "en", "next": "/auth/login", "csrf_token": csrf_token(page)}
    )
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    english = client.get("/auth/login").get_data(as_text=True)
    assert '<html lang="en">' in english and "<h1>Sign in</h1>" in english
    # The choice survives signing in, and the overview is English too.
    login(client, "county")
    overview = client.get("/").get_data(as_text=True)
    assert "Ranking" in overview and "排名" not in overview
    back = client.post("/lang", data={"lang": "zh_CN", "csrf_token": csrf_token(overview)})
    assert back.headers["Location"] == "/"
    assert "排名" in client.get("/").get_data(as_text=True)


def test_language_switch_needs_csrf(client):
    assert client.post("/lang", data={"lang": "en"}).status_code == 400
    assert '<html lang="zh-CN">' in client.get("/auth/login").get_data(as_text=True)


@pytest.mark.parametrize(
    "path", ["/auth/login", "/", f"/areas/{TOWNSHIP_A}", "/api/v1/runs", "/no-such-page"]
)
def test_security_headers(client, path):
    login(client, "admin")
    headers = client.get(path).headers
    csp = headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cache-Control"] == "no-store"


def _pages(app) -> dict[str, str]:
    client = app.test_client()
    pages = {"/auth/login": client.get("/auth/login").get_data(as_text=True)}
    login(client, "admin")
    paths = ["/", f"/areas/{COUNTY}", f"/areas/{TOWNSHIP_A}", f"/areas/{VILLAGE_A}"]
    paths += ["/admin/users", "/admin/audit", "/no-such-page"]
    pages.update({path: client.get(path).get_data(as_text=True) for path in paths})
    return pages


def test_pages_reference_no_external_host_and_no_inline_code(app):
    for path, html in _pages(app).items():
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), path
        assert "<script>" not in html.replace(HOSTILE_NAME, ""), path  # only src= scripts
        assert " style=" not in html, path  # the CSP forbids inline styles
        assert " on" + "click=" not in html, path
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert src.startswith(("/", "#")), (path, src)


def test_hostile_area_names_are_escaped(client):
    login(client, "county")
    for path in ("/areas/" + TOWNSHIP_A, "/areas/" + VILLAGE_A):
        html = client.get(path).get_data(as_text=True)
        assert HOSTILE_NAME not in html
        assert "东一村&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_static_and_map_assets_are_served_locally(client):
    for path in ("/static/css/app.css", "/static/js/app.js", "/maps/assets/leaflet/leaflet.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/maps/assets/leaflet-heat/leaflet-heat.js").status_code == 200
    assert client.get("/maps/assets/leaflet/images/layers.png").mimetype == "image/png"
    assert client.get("/maps/assets/../__init__.py").status_code == 404
    assets = WEB.parent.parent.parent / "maps" / "assets"
    for package in ("leaflet", "leaflet-heat"):
        licence = (assets / package / "LICENSE").read_text("utf-8")
        assert "Agafonkin" in licence and "Redistribution" in licence, package
    css = client.get("/maps/assets/leaflet/leaflet.css").get_data(as_text=True)
    assert not re.search(r"url\((?:['\"])?https?:", css)


def test_overview_for_the_county(client):
    login(client, "county")
    html = client.get("/").get_data(as_text=True)
    assert "测试县" in html
    for label in ("今日", "本周", "本季度", "两抢一盗", "环比", "破案率"):
        assert label in html, label
    # Ranking: both townships, most incidents first, linked to their area pages.
    assert html.index("/areas/510000001000") < html.index("/areas/510000002000")
    assert "数据更新于" in html


def test_ranking_period_switch(client):
    login(client, "county")
    html = client.get("/?period=2026Q3").get_data(as_text=True)
    rows = re.findall(r'<td class="num">(\d+)</td>', html)
    # rank 1 with 3 incidents (东城镇), rank 2 with 2 (西山乡)
    assert rows[:2] == ["1", "3"]
    assert client.get("/?period=2026Q9").status_code == 400


def test_area_page_drills_down_to_grids(client):
    login(client, "county")
    html = client.get(f"/areas/{VILLAGE_A}?period=2026Q3").get_data(as_text=True)
    assert "/areas/510000001001001" in html and "/areas/510000001001002" in html
    assert f'href="/areas/{COUNTY}"' in html  # breadcrumb back up
    grid = client.get("/areas/510000001001001").get_data(as_text=True)
    assert "没有下级区域" not in grid or "网格" in grid


def test_catalogue_translates_every_message_and_the_mo_is_current(tmp_path):
    pot = tmp_path / "messages.pot"
    CommandLineInterface().run(
        [
            "pybabel",
            "-q",
            "extract",
            "-F",
            str(WEB / "babel.cfg"),
            "-k",
            "_l",
            "-o",
            str(pot),
            str(WEB),
        ]
    )
    with pot.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    with (CATALOGUE / "messages.po").open("rb") as f:
        po = {m.id: m.string for m in read_po(f) if m.id}
    with (CATALOGUE / "messages.mo").open("rb") as f:
        mo = {m.id: m.string for m in read_mo(f) if m.id}
    assert sorted(wanted - set(po)) == [], "run `make translations` and translate"
    assert sorted(k for k in wanted if not po[k]) == [], "untranslated messages"
    assert mo == {k: v for k, v in po.items() if v}, "messages.mo is stale: `make translations`"
