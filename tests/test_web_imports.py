"""Imports in the web app: upload, validation report, rejected rows, history and the API."""

from __future__ import annotations

import csv
import io

from web_support import csrf_token, login

from gridwatch.accounts import issue_token
from gridwatch.storage import session_scope
from gridwatch.storage.models import AuditEvent, ImportBatch, Incident, RejectedRow

HEADER = "id,occurred_at,category,lon,lat,source,status\n"
GOOD = HEADER + (
    "N1,2026-07-10 09:00,theft,104.005,30.005,call_110,solved\n"
    "N2,2026-07-11 10:00,burglary,104.015,30.005,walk_in,reported\n"
)
HOSTILE_VALUE = "<script>alert(1)</script>"
BAD_ROWS = HEADER + (
    "M1,2026-07-10 09:00,theft,104.005,30.005,call_110,solved\n"
    "M2,not a date,theft,104.005,30.005,call_110,solved\n"
    f"M3,2026-07-12 09:00,{HOSTILE_VALUE},104.005,30.005,call_110,solved\n"
)
HOSTILE_FILE = "<img src=x onerror=alert(1)>报表.csv"


def engine_of(app):
    return app.extensions["gridwatch"].engine


def count(app, model) -> int:
    with session_scope(engine_of(app)) as session:
        return session.query(model).count()


def upload(
    client,
    content: str | bytes,
    name: str = "incidents.csv",
    kind: str = "incidents",
    follow_redirects: bool = False,
):
    """Post a file through the real form, with the CSRF token of the imports page."""
    token = csrf_token(client.get("/imports/").get_data(as_text=True))
    body = content.encode("utf-8") if isinstance(content, str) else content
    data = {"kind": kind, "file": (io.BytesIO(body), name), "csrf_token": token}
    return client.post(
        "/imports/",
        data=data,
        content_type="multipart/form-data",
        follow_redirects=follow_redirects,
    )


def test_good_file_shows_counts_and_history(client, app):
    login(client, "county")
    before = count(app, Incident)
    response = upload(client, GOOD)
    assert response.status_code == 303
    page = client.get(response.headers["Location"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="rows-read">2<' in html and 'id="rows-imported">2<' in html
    assert 'id="rows-rejected">0<' in html
    assert count(app, Incident) == before + 2
    history = client.get("/imports/").get_data(as_text=True)
    assert "incidents.csv" in history and ">county<" in history
    # Newest first: the new batch comes before the test county's own imports.
    assert history.index("incidents.csv") < history.index("areas.geojson")
    # Saved under a generated name in var/uploads, and audited with the user's file name.
    settings = app.extensions["gridwatch"].settings
    stored = list((settings.var_dir / "uploads").iterdir())
    assert len(stored) == 1 and stored[0].name != "incidents.csv"
    with session_scope(engine_of(app)) as session:
        event = session.query(AuditEvent).filter_by(action="import").one()
        assert event.username == "county"
        assert event.detail["file_name"] == "incidents.csv" and event.detail["imported"] == 2
    # Importing the same file again adds nothing.
    again = client.get(upload(client, GOOD).headers["Location"]).get_data(as_text=True)
    assert 'id="rows-duplicate">2<' in again and 'id="rows-imported">0<' in again


def test_bad_rows_are_listed_and_downloadable(client, app):
    login(client, "town_a")
    response = upload(client, BAD_ROWS, follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'id="rows-imported">1<' in html and 'id="rows-rejected">2<' in html
    table = html[html.index('id="rejected-rows"') :]
    assert '<td class="num">3</td><td>occurred_at</td>' in table
    assert '<td class="num">4</td><td>category</td>' in table
    # Rejected values are user text: escaped, never markup.
    assert HOSTILE_VALUE not in html and "&lt;script&gt;" in html
    (batch_id,) = [b.id for b in _batches(app) if b.rows_rejected == 2 and b.kind == "incidents"]
    download = client.get(f"/imports/{batch_id}/rejected.csv")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "attachment" in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data().decode("utf-8-sig"))))
    assert [(r["row"], r["column"]) for r in rows] == [("3", "occurred_at"), ("4", "category")]
    assert all(r["reason"] for r in rows)
    assert count(app, RejectedRow) == 2


def _batches(app) -> list[ImportBatch]:
    with session_scope(engine_of(app)) as session:
        return session.query(ImportBatch).order_by(ImportBatch.id).all()


def test_unparseable_file_gives_one_sentence_and_commits_nothing(client, app):
    login(client, "county")
    incidents, rejected = count(app, Incident), count(app, RejectedRow)
    last_batch = max(b.id for b in _batches(app))
    response = upload(client, "name,colour\nfoo,red\n", name="notes.csv")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert 'id="import-error"' in html
    message = html.split('id="import-error">', 1)[1].split("</p>", 1)[0]
    assert "notes.csv" in message and "required columns missing" in message
    assert "Traceback" not in html and "uploads" not in message
    assert count(app, Incident) == incidents and count(app, RejectedRow) == rejected
    assert all(b.status == "failed" for b in _batches(app) if b.id > last_batch)
    # An unsupported file type is one sentence too.
    binary = upload(client, b"\x00\x01PK junk", name="photo.png")
    assert binary.status_code == 400
    assert "unsupported file type" in binary.get_data(as_text=True)
    settings = app.extensions["gridwatch"].settings
    assert not any((settings.var_dir / "uploads").iterdir())


def test_viewer_is_forbidden(client, app):
    login(client, "screen")
    assert client.get("/imports/").status_code == 403
    response = client.post("/imports/", data={}, content_type="multipart/form-data")
    assert response.status_code in (400, 403)
    token = issue_token(engine_of(app), "screen")
    api = client.post(
        "/api/v1/imports/incidents",
        data={"file": (io.BytesIO(GOOD.encode()), "i.csv")},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )
    assert api.status_code == 403 and api.get_json()["error"]["status"] == 403


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get("/imports/")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_missing_csrf_token_is_rejected(client, app):
    login(client, "county")
    before = count(app, Incident)
    response = client.post(
        "/imports/",
        data={"kind": "incidents", "file": (io.BytesIO(GOOD.encode()), "i.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 400
    assert count(app, Incident) == before
    # The API with a session (no bearer token) needs the token too.
    api = client.post(
        "/api/v1/imports/incidents",
        data={"file": (io.BytesIO(GOOD.encode()), "i.csv")},
        content_type="multipart/form-data",
    )
    assert api.status_code == 400 and count(app, Incident) == before


def test_api_upload_with_token_returns_the_summary(client, app):
    token = issue_token(engine_of(app), "station")
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/api/v1/imports/incidents",
        data={"file": (io.BytesIO(BAD_ROWS.encode()), "bad.csv")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert {k: body[k] for k in ("file", "kind", "read", "imported", "duplicates")} == {
        "file": "bad.csv",
        "kind": "incidents",
        "read": 3,
        "imported": 1,
        "duplicates": 0,
    }
    assert body["rejected"] == 2 and isinstance(body["batch_id"], int)
    assert body["report"] == f"/imports/{body['batch_id']}/rejected.csv"
    unparseable = client.post(
        "/api/v1/imports/incidents",
        data={"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert unparseable.status_code == 400
    assert "required columns missing" in unparseable.get_json()["error"]["message"]
    missing = client.post("/api/v1/imports/incidents", headers=headers)
    assert missing.status_code == 400
    assert client.post("/api/v1/imports/planets", headers=headers).status_code == 404
    document = client.get("/api/v1/openapi.json").get_json()
    assert "post" in document["paths"]["/imports/{kind}"]


def test_hostile_file_name_is_escaped(client, app):
    login(client, "county")
    batch = client.get(upload(client, GOOD, name=HOSTILE_FILE).headers["Location"])
    history = client.get("/imports/")
    for page in (batch, history):
        html = page.get_data(as_text=True)
        assert HOSTILE_FILE not in html and "<img src=x" not in html
        assert "&lt;img src=x onerror=" in html
    settings = app.extensions["gridwatch"].settings
    assert all("<" not in p.name for p in (settings.var_dir / "uploads").iterdir())
    # A path in the file name is never followed.
    sneaky = upload(client, GOOD.replace("N", "P"), name="../../etc/passwd.csv")
    assert sneaky.status_code == 303
    assert not (settings.var_dir.parent / "etc").exists()


def test_township_user_cannot_see_another_users_batches(client, app):
    login(client, "town_b")
    location = upload(client, BAD_ROWS).headers["Location"]
    batch_id = int(location.rstrip("/").rsplit("/", 1)[1])
    assert client.get(f"/imports/{batch_id}/rejected.csv").status_code == 200
    client.post(
        "/auth/logout", data={"csrf_token": csrf_token(client.get("/imports/").get_data(True))}
    )
    login(client, "town_a")
    assert client.get(f"/imports/{batch_id}").status_code == 404
    assert client.get(f"/imports/{batch_id}/rejected.csv").status_code == 404
    history = client.get("/imports/").get_data(as_text=True)
    assert f'href="/imports/{batch_id}"' not in history
    assert "areas.geojson" not in history  # command-line imports are the county's business
    client.post(
        "/auth/logout", data={"csrf_token": csrf_token(client.get("/imports/").get_data(True))}
    )
    login(client, "county")
    assert client.get(f"/imports/{batch_id}/rejected.csv").status_code == 200


def test_page_speaks_chinese_by_default(client):
    login(client, "station")
    html = client.get("/imports/").get_data(as_text=True)
    assert "数据导入" in html and "上传文件" in html and "导入记录" in html
