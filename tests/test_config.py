"""Settings: defaults, and one clear ConfigError naming the variable for each bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gridwatch.config import DEFAULT_LEVELS, ConfigError, Settings, load_settings


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    expected_db = (tmp_path / "var" / "gridwatch.db").resolve()
    assert settings.database_url == f"sqlite:///{expected_db}"
    assert settings.var_dir == Path("var")
    assert settings.reports_dir == Path("var") / "reports"
    assert settings.timezone == ZoneInfo("Asia/Shanghai")
    assert settings.redis_url == ""
    assert settings.task_mode == "eager"
    assert settings.county_extent is None
    assert settings.categories_file is None
    assert settings.survey_factors_file is None
    assert settings.area_levels == DEFAULT_LEVELS == ("county", "township", "village", "grid")
    assert settings.import_chunk_size == 20_000
    # Without a configured key each process makes a strong random one.
    assert settings.secret_key_generated
    assert len(settings.secret_key) >= 32
    assert load_settings({}).secret_key != settings.secret_key


def test_settings_fixture_uses_a_temporary_sqlite_file(settings: Settings, tmp_path: Path):
    assert settings.var_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite:///{tmp_path / 'var' / 'gridwatch.db'}"
    assert not settings.secret_key_generated


def test_empty_values_mean_defaults():
    env = {
        "GRIDWATCH_DATABASE_URL": "",
        "GRIDWATCH_REDIS_URL": "  ",
        "GRIDWATCH_TIMEZONE": "",
        "GRIDWATCH_COUNTY_EXTENT": " ",
        "GRIDWATCH_AREA_LEVELS": "",
        "GRIDWATCH_IMPORT_CHUNK_SIZE": "",
        "GRIDWATCH_CATEGORIES_FILE": "",
    }
    settings = load_settings(env)
    assert settings.database_url.startswith("sqlite:///")
    assert settings.task_mode == "eager"
    assert settings.timezone == ZoneInfo("Asia/Shanghai")
    assert settings.import_chunk_size == 20_000


def test_good_values_are_parsed(tmp_path):
    categories = tmp_path / "categories.yaml"
    categories.write_text("categories: {theft: {zh: 盗窃, en: Theft}}\n", encoding="utf-8")
    settings = load_settings(
        {
            "GRIDWATCH_DATABASE_URL": "postgresql+psycopg://gw:pw@db:5432/gridwatch",
            "GRIDWATCH_REDIS_URL": "redis://127.0.0.1:6379/0",
            "GRIDWATCH_SECRET_KEY": "x" * 16,
            "GRIDWATCH_TIMEZONE": " Asia/Urumqi ",
            "GRIDWATCH_VAR_DIR": str(tmp_path / "v"),
            "GRIDWATCH_COUNTY_EXTENT": "113.7, 22.4, 114.6, 22.9",
            "GRIDWATCH_CATEGORIES_FILE": str(categories),
            "GRIDWATCH_AREA_LEVELS": "county, township ,community",
            "GRIDWATCH_IMPORT_CHUNK_SIZE": "5000",
        }
    )
    assert settings.database_url == "postgresql+psycopg://gw:pw@db:5432/gridwatch"
    assert settings.task_mode == "redis"
    assert settings.secret_key == "x" * 16
    assert not settings.secret_key_generated
    assert settings.timezone == ZoneInfo("Asia/Urumqi")
    assert settings.var_dir == tmp_path / "v"
    assert settings.county_extent == (113.7, 22.4, 114.6, 22.9)
    assert settings.categories_file == categories
    assert settings.area_levels == ("county", "township", "community")
    assert settings.import_chunk_size == 5000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://gw@db/gridwatch", "postgresql+psycopg://gw@db/gridwatch"),
        # The password (with an escaped "@") must survive the rewrite.
        ("postgresql://gw:p%40ss@db:5433/gw", "postgresql+psycopg://gw:p%40ss@db:5433/gw"),
        ("postgresql+psycopg://gw@db/gridwatch", "postgresql+psycopg://gw@db/gridwatch"),
        ("sqlite:////srv/gridwatch/gw.db", "sqlite:////srv/gridwatch/gw.db"),
    ],
)
def test_database_url_driver(raw, expected):
    assert load_settings({"GRIDWATCH_DATABASE_URL": raw}).database_url == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GRIDWATCH_TIMEZONE", "Mars/Olympus_Mons"),
        ("GRIDWATCH_TIMEZONE", "Asia"),  # a directory of the tz database, not a zone
        ("GRIDWATCH_TIMEZONE", "../../etc/passwd"),
        ("GRIDWATCH_TIMEZONE", "+08:00"),
        ("GRIDWATCH_DATABASE_URL", "mysql://gw@db/gridwatch"),
        ("GRIDWATCH_DATABASE_URL", "postgres://gw@db/gridwatch"),
        ("GRIDWATCH_DATABASE_URL", "not a url"),
        ("GRIDWATCH_REDIS_URL", "http://127.0.0.1:6379"),
        ("GRIDWATCH_REDIS_URL", "127.0.0.1:6379"),
        ("GRIDWATCH_COUNTY_EXTENT", "113.7,22.4,114.6"),
        ("GRIDWATCH_COUNTY_EXTENT", "a,b,c,d"),
        ("GRIDWATCH_COUNTY_EXTENT", "114.6,22.4,113.7,22.9"),  # minx > maxx
        ("GRIDWATCH_COUNTY_EXTENT", "113.7,95,114.6,96"),  # not latitudes
        ("GRIDWATCH_COUNTY_EXTENT", "nan,nan,nan,nan"),
        ("GRIDWATCH_SECRET_KEY", "too-short"),
        ("GRIDWATCH_IMPORT_CHUNK_SIZE", "20k"),
        ("GRIDWATCH_IMPORT_CHUNK_SIZE", "2.5"),
        ("GRIDWATCH_IMPORT_CHUNK_SIZE", "0"),
        ("GRIDWATCH_IMPORT_CHUNK_SIZE", "-100"),
        ("GRIDWATCH_AREA_LEVELS", "county,township,county"),
        ("GRIDWATCH_AREA_LEVELS", ",,"),
        ("GRIDWATCH_CATEGORIES_FILE", "/nonexistent/categories.yaml"),
        ("GRIDWATCH_SURVEY_FACTORS_FILE", "/nonexistent/factors.yaml"),
    ],
)
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as excinfo:
        load_settings({variable: value})
    assert variable in str(excinfo.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_settings_are_immutable(settings: Settings):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, "timezone", ZoneInfo("UTC"))  # noqa: B010 (mypy knows it is frozen)


def test_worker_and_beat_settings(tmp_path):
    from conftest import make_settings

    settings = make_settings(tmp_path)
    assert (settings.task_visibility_timeout, settings.refresh_minutes, settings.nightly_at) == (
        600,
        5,
        "02:30",
    )
    custom = make_settings(
        tmp_path,
        GRIDWATCH_TASK_VISIBILITY_TIMEOUT="5",
        GRIDWATCH_REFRESH_MINUTES="2",
        GRIDWATCH_NIGHTLY_AT="3:05",
    )
    assert (custom.task_visibility_timeout, custom.refresh_minutes, custom.nightly_at) == (
        5,
        2,
        "03:05",
    )
    from gridwatch.workers.celery_app import beat_schedule, create_celery_app

    schedule = beat_schedule(custom)
    assert schedule["aggregate.refresh"]["schedule"].total_seconds() == 120
    nightly = schedule["aggregate.nightly"]["schedule"]
    assert (nightly.hour, nightly.minute) == ({3}, {5})
    app = create_celery_app(custom, set_as_current=False)
    assert app.conf.broker_transport_options["visibility_timeout"] == 5
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    for name in ("aggregate.run", "aggregate.township", "aggregate.finalize"):
        task = app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost, name
        assert task.max_retries == 5 and task.retry_backoff, name
        assert 0 < task.soft_time_limit < task.time_limit, name
    assert custom.run_stale_seconds == 1800
    assert make_settings(tmp_path, GRIDWATCH_RUN_STALE_SECONDS="5").run_stale_seconds == 5
    with pytest.raises(ConfigError, match="GRIDWATCH_RUN_STALE_SECONDS"):
        make_settings(tmp_path, GRIDWATCH_RUN_STALE_SECONDS="0")
    for bad in ("25:00", "noon", "2:61"):
        with pytest.raises(ConfigError, match="GRIDWATCH_NIGHTLY_AT"):
            make_settings(tmp_path, GRIDWATCH_NIGHTLY_AT=bad)


def test_worker_command_builds_the_celery_argv(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from conftest import make_settings

    import gridwatch.workers.celery_app as celery_app
    from gridwatch.cli import main

    started: list[list[str]] = []

    class FakeCelery:
        def worker_main(self, argv: list[str]) -> None:
            started.append(argv)

    monkeypatch.setattr(celery_app, "create_celery_app", lambda settings: FakeCelery())
    settings = make_settings(tmp_path, GRIDWATCH_REDIS_URL="redis://127.0.0.1:6379/15")
    cli = CliRunner()
    for args in (["worker"], ["worker", "-c", "1", "-Q", "gridwatch.quick", "-n", "quick@%h"]):
        result = cli.invoke(main, args, obj={"settings": settings})
        assert result.exit_code == 0, result.output
    assert started == [
        ["worker", "--concurrency=2", "--queues=gridwatch.quick,gridwatch.heavy"]
        + ["--loglevel=INFO"],
        ["worker", "--concurrency=1", "--queues=gridwatch.quick", "--hostname=quick@%h"]
        + ["--loglevel=INFO"],
    ]
    assert "--hostname" in cli.invoke(main, ["worker", "--help"]).output


def test_tiles_setting(tmp_path):
    from gridwatch.config import TileSource

    assert load_settings({}).tiles == TileSource("none")
    assert load_settings({"GRIDWATCH_TILES": "none"}).tiles.kind == "none"
    template = "http://pgis.local/tiles/{z}/{x}/{y}.png"
    assert load_settings({"GRIDWATCH_TILES": template}).tiles == TileSource("xyz", template)
    assert load_settings({"GRIDWATCH_TILES": "/t/{z}/{x}/{y}.png"}).tiles.kind == "xyz"
    with pytest.raises(ConfigError, match=r"GRIDWATCH_TILES.*lacks \{y\}"):
        load_settings({"GRIDWATCH_TILES": "http://pgis.local/{z}/{x}.png"})
    with pytest.raises(ConfigError, match="GRIDWATCH_TILES.*does not exist"):
        load_settings({"GRIDWATCH_TILES": str(tmp_path / "missing.mbtiles")})
    not_sqlite = tmp_path / "bad.mbtiles"
    not_sqlite.write_text("hello", "utf-8")
    with pytest.raises(ConfigError, match="GRIDWATCH_TILES is not an MBTiles file"):
        load_settings({"GRIDWATCH_TILES": str(not_sqlite)})
    with pytest.raises(ConfigError, match="GRIDWATCH_TILES must be none"):
        load_settings({"GRIDWATCH_TILES": "osm"})
    import sqlite3

    good = tmp_path / "base.mbtiles"
    with sqlite3.connect(good) as db:
        db.execute("CREATE TABLE tiles (zoom_level, tile_column, tile_row, tile_data)")
    assert load_settings({"GRIDWATCH_TILES": str(good)}).tiles == TileSource(
        "mbtiles", mbtiles_path=good
    )
