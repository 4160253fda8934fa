"""deploy/backup.sh and deploy/restore.sh on a real PostgreSQL + PostGIS database.

A database with areas (polygons), incidents (points), a published aggregation run (metric
blocks, blind-spot polygons) and a user is dumped, restored into a fresh database and
compared table by table, geometry by geometry and metric by metric.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import grid_frame, make_settings, service_unavailable
from sqlalchemy import create_engine, text

from gridwatch.storage import create_db_engine, upgrade_database

pytestmark = [pytest.mark.postgres]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


@pytest.fixture(scope="module", autouse=True)
def _client_tools():
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            service_unavailable("PostgreSQL client tools", f"{tool} is not installed")


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GRIDWATCH_DATABASE_URL"}
    return subprocess.run(
        ["bash", str(DEPLOY / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _load(url: str, tmp_path: Path) -> None:
    from gridwatch.accounts import create_user
    from gridwatch.ingest import import_file
    from gridwatch.workers.engine import RunRequest, run_eager

    settings = make_settings(tmp_path, GRIDWATCH_DATABASE_URL=url)
    engine = create_db_engine(url)
    try:
        upgrade_database(engine)
        grids = tmp_path / "grids.geojson"
        grid_frame().to_file(grids, driver="GeoJSON")
        import_file("grids", grids, settings, engine)
        lines = ["id,occurred_at,category,lon,lat,source"]
        for n in range(120):
            lines.append(
                f"B{n},2026-{1 + n % 9:02d}-{1 + n % 27:02d} {n % 24:02d}:05,"
                f"{['theft', 'burglary', 'fraud'][n % 3]},"
                f"{113.0005 + (n * 0.00137) % 0.019:.6f},{28.0005 + (n * 0.00291) % 0.019:.6f},"
                f"{['call_110', 'patrol', 'walk_in'][n % 3]}"
            )
        lines.append("BAD,not a date,theft,113.01,28.01,call_110")  # one rejected row
        incidents = tmp_path / "incidents.csv"
        incidents.write_text("\n".join(lines) + "\n", "utf-8")
        import_file("incidents", incidents, settings, engine)
        summary = run_eager(engine, settings, RunRequest(full=True))
        assert summary["status"] == "done", summary
        create_user(engine, "backup-admin", "admin", "a long enough password 1")
    finally:
        engine.dispose()


def _snapshot(url: str) -> dict[str, object]:
    """What must survive a backup and restore: every table's rows, geometry and metrics."""
    from gridwatch.workers.engine import read_metrics

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'spatial_ref_sys' ORDER BY tablename"
                )
            ).scalars()
            counts = {
                table: conn.execute(text(f'SELECT count(*) FROM "{table}"')).scalar_one()
                for table in tables
            }
            areas = conn.execute(
                text("SELECT code, md5(ST_AsEWKB(geom)::text) FROM areas ORDER BY code")
            ).all()
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        gw_engine = create_db_engine(url)
        try:
            metrics = {
                (level, period): read_metrics(gw_engine, level, period)
                for level in ("grid", "county")
                for period in ("2026", "2026Q1", "2026-03")
            }
        finally:
            gw_engine.dispose()
    finally:
        engine.dispose()
    return {"counts": counts, "areas": areas, "revision": revision, "metrics": metrics}


def test_backup_and_restore_into_a_fresh_database(postgres_server, postgres_url, tmp_path):
    _load(postgres_url, tmp_path)
    before = _snapshot(postgres_url)
    counts = before["counts"]
    assert counts["incidents"] == 120 and counts["areas"] == 7
    assert counts["rejected_rows"] == 1 and counts["users"] == 1
    assert counts["metric_blocks"] > 0
    county_2026 = before["metrics"][("county", "2026")]
    assert sum(row["incidents_total"] for row in county_2026) == 120

    backups = tmp_path / "backups"
    done = _script("backup.sh", "-d", postgres_url, "-o", str(backups))
    assert done.returncode == 0, done.stderr
    dump = Path(done.stdout.strip())
    assert dump.parent == backups and dump.is_file() and dump.suffix == ".dump"
    assert dump.name.startswith(f"gridwatch-{postgres_url.rsplit('/', 1)[1]}-")
    assert not list(backups.glob("*.partial"))

    # The new database already has PostGIS (cloned from the template), as when a DBA
    # creates it for an application role that may not create extensions.
    restored = postgres_server.create_database()
    restored_url = postgres_server.url_for(restored)
    try:
        done = _script("restore.sh", "-d", restored_url, str(dump))
        assert done.returncode == 0, done.stderr
        assert "schema revision 0" in done.stderr
        after = _snapshot(restored_url)
        assert after == before

        # Restoring over a database that holds data needs -c, and then replaces it.
        refused = _script("restore.sh", "-d", restored_url, str(dump))
        assert refused.returncode == 2
        assert refused.stderr.strip().splitlines() == [
            f"restore.sh: the database already holds {len(before['counts'])} tables: restore "
            "into a new empty database, or pass -c to replace them"
        ]
        with create_engine(restored_url).begin() as conn:
            conn.execute(text("DELETE FROM rejected_rows"))
        replaced = _script("restore.sh", "-c", "-d", restored_url, str(dump))
        assert replaced.returncode == 0, replaced.stderr
        assert _snapshot(restored_url) == before
    finally:
        postgres_server.drop_database(restored)


def test_backup_keeps_the_newest_dumps_and_archives_var(postgres_url, tmp_path):
    engine = create_db_engine(postgres_url)
    upgrade_database(engine)
    engine.dispose()
    var_dir = tmp_path / "var"
    (var_dir / "reports").mkdir(parents=True)
    (var_dir / "reports" / "rejected.csv").write_text("row,column,reason\n", "utf-8")
    backups = tmp_path / "backups"
    old = backups / f"gridwatch-{postgres_url.rsplit('/', 1)[1]}-20000101T000000Z.dump"
    backups.mkdir()
    old.write_bytes(b"an old dump")
    done = _script(
        "backup.sh", "-d", postgres_url, "-o", str(backups), "-k", "1", "-v", str(var_dir)
    )
    assert done.returncode == 0, done.stderr
    dump = Path(done.stdout.strip())
    assert sorted(p.name for p in backups.iterdir()) == sorted(
        [dump.name, dump.name.replace(".dump", "-var.tar.gz")]
    )
    listing = subprocess.run(
        ["tar", "-tzf", str(dump).replace(".dump", "-var.tar.gz")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "./reports/rejected.csv" in listing


@pytest.mark.parametrize(
    ("script", "args", "sentence"),
    [
        ("backup.sh", ["-d", "postgresql://postgres@127.0.0.1:1/none"], "cannot connect"),
        ("backup.sh", ["-d", "sqlite:///var/gridwatch.db"], "the database is SQLite"),
        ("backup.sh", [], "no database: pass -d URL or set GRIDWATCH_DATABASE_URL"),
        ("backup.sh", ["-d", "postgresql://x/y", "-k", "0"], "-k must be a whole number"),
        ("restore.sh", ["-d", "postgresql://x/y", "/nonexistent.dump"], "does not exist"),
        ("restore.sh", ["-d", "postgresql://x/y", __file__], "is not a pg_dump custom-format"),
        ("restore.sh", ["-d", "postgresql://x/y"], "name one dump file"),
    ],
)
def test_scripts_refuse_bad_input_with_one_sentence(script, args, sentence):
    done = _script(script, *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: ") and sentence in lines[0]
