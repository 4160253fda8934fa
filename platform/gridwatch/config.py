"""Typed settings read from ``GRIDWATCH_*`` environment variables.

Every setting has one reader here that raises :class:`ConfigError` with a sentence naming
the variable and what is wrong, so a bad value stops the program at start-up rather than
half-way through an import.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_LEVELS = ("county", "township", "village", "grid")
DEFAULT_ROUTE_SPEEDS = {"foot": 4.5, "ebike": 15.0, "car": 30.0}
DEFAULT_ROUTE_RISK_WEIGHTS = {
    "forecast": 0.4,
    "recent": 0.3,
    "hotspot": 0.2,
    "blind_spot": 0.1,
    "focus": 0.15,
}


class ConfigError(ValueError):
    """A ``GRIDWATCH_*`` setting has a value that cannot be used."""


@dataclass(frozen=True)
class TileSource:
    """Where the maps' basemap comes from (``GRIDWATCH_TILES``).

    Attributes
    ----------
    kind : str
        ``none`` (no basemap: the grid polygons are the map), ``xyz`` (an intranet tile
        server) or ``mbtiles`` (a local file the app serves at ``/tiles/{z}/{x}/{y}.png``).
    url_template : str
        For ``xyz``: the URL template with ``{z}``, ``{x}`` and ``{y}``.
    mbtiles_path : pathlib.Path or None
        For ``mbtiles``: the file.
    """

    kind: str = "none"
    url_template: str = ""
    mbtiles_path: Path | None = None


@dataclass(frozen=True)
class Settings:
    """All GridWatch settings, already parsed and checked.

    Attributes
    ----------
    database_url : str
        SQLAlchemy URL; ``sqlite:///…`` (embedded default) or ``postgresql+psycopg://…``.
    redis_url : str
        Celery broker / result store and cache; empty means tasks run in-process.
    secret_key : str
        Flask session signing key.
    timezone : zoneinfo.ZoneInfo
        Zone in which days, weeks, months and quarters are cut (timestamps are stored in UTC).
    var_dir : pathlib.Path
        Directory for the SQLite file, import reports and other run-time files.
    county_extent : tuple of float or None
        ``(minx, miny, maxx, maxy)`` in WGS84; imported points outside it are rejected.
    categories_file, survey_factors_file : pathlib.Path or None
        Local replacements for the shipped category taxonomy and survey factor list.
    accountability_rules_file, factor_map_file : pathlib.Path or None
        Local replacements for the shipped accountability ladder rules and the map from
        survey factors to incident categories and levers.
    area_levels : tuple of str
        Area levels from the top down.
    import_chunk_size : int
        Rows read, validated and committed together by the importers.
    task_visibility_timeout : int
        Seconds after which a task taken by a worker that died is delivered again.
    refresh_minutes : int
        Beat: minutes between incremental refreshes of grids changed by imports.
    nightly_at : str
        Beat: local ``HH:MM`` of the nightly full recompute.
    report_at : str
        Beat: local ``HH:MM`` of the daily situation summary (每日治安形势).
    run_stale_seconds : int
        A run that made no progress for this many seconds (its tasks were lost, e.g. when Redis
        restarted) is marked failed and started again.
    stale_minutes : int
        Minutes after which waiting imports without a published refresh make the screens warn
        that their data is stale (default: twice ``refresh_minutes``).
    secure_cookies : bool
        Mark the session cookie ``Secure`` (sent over HTTPS only). Turn off only for a site
        served over plain HTTP on a closed intranet.
    proxy_hops : int
        Reverse proxies in front of the web app whose ``X-Forwarded-*`` headers are trusted
        (0: none). The client address counts failed sign-ins, so behind a proxy this must be
        set, or every user shares the proxy's address.
    tiles : TileSource
        The maps' basemap (none by default).
    route_dwell_minutes : tuple of int
        Patrol planning: least and most minutes at a stop (Koper curve, 10–16).
    route_revisit_minutes : int
        Patrol planning: least minutes between two visits to the same hot spot.
    route_detour_factor : float
        Patrol planning without roads: travel distance = straight line × this factor.
    route_speeds : dict
        Patrol planning: km/h of ``foot``, ``ebike`` and ``car``.
    route_risk_weights : dict
        Patrol planning: weights of ``forecast``, ``recent``, ``hotspot``, ``blind_spot`` and
        ``focus`` (the prevention plan's patrol-focus grids) in a grid's risk score
        (:mod:`gridwatch.routing.risk`).
    route_border_metres : float
        Patrol planning: grids of neighbouring stations within this distance of a station's
        townships are candidate stops too (joint defence).
    route_roads_file : pathlib.Path or None
        Patrol planning: GeoJSON / GeoPackage of road lines for travel on the network.
    log_format : str
        ``text`` (default) or ``json``: one JSON object per line with time, level, logger,
        message, request_id, task_id and user (:mod:`gridwatch.logs`), for the web app and the
        workers.
    metrics_token : str
        Bearer token that ``/metrics`` requires (``Authorization: Bearer …``). Empty (default):
        ``/metrics`` answers only requests from the loopback address.
    metrics_multiproc_dir : pathlib.Path or None
        ``PROMETHEUS_MULTIPROC_DIR`` (read by prometheus_client itself): a directory shared by
        the gunicorn workers and Celery workers of one machine, so ``/metrics`` adds up every
        process's counts. It must exist and be emptied before the processes start.
    api_cache_mb : int
        Megabytes of API answers each web process keeps (``GRIDWATCH_API_CACHE_MB``, default
        64; 0 turns the cache off): the metrics and map-layer answers of the published run,
        served again without entering the app while the run, the areas and the caller's
        token stay the same (:mod:`gridwatch.web.answers`).
    """

    database_url: str
    redis_url: str = ""
    secret_key: str = ""
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    var_dir: Path = Path("var")
    county_extent: tuple[float, float, float, float] | None = None
    categories_file: Path | None = None
    survey_factors_file: Path | None = None
    accountability_rules_file: Path | None = None
    factor_map_file: Path | None = None
    area_levels: tuple[str, ...] = DEFAULT_LEVELS
    import_chunk_size: int = 20_000
    task_visibility_timeout: int = 600
    refresh_minutes: int = 5
    nightly_at: str = "02:30"
    report_at: str = "06:00"
    run_stale_seconds: int = 1800
    stale_minutes: int = 10
    secure_cookies: bool = True
    proxy_hops: int = 0
    tiles: TileSource = field(default_factory=TileSource)
    route_dwell_minutes: tuple[int, int] = (10, 16)
    route_revisit_minutes: int = 120
    route_detour_factor: float = 1.3
    route_speeds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ROUTE_SPEEDS))
    route_risk_weights: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_ROUTE_RISK_WEIGHTS)
    )
    route_border_metres: float = 500.0
    route_roads_file: Path | None = None
    log_format: str = "text"
    metrics_token: str = ""
    metrics_multiproc_dir: Path | None = None
    api_cache_mb: int = 64
    secret_key_generated: bool = False

    @property
    def task_mode(self) -> str:
        """Return ``"redis"`` when a broker is configured, else ``"eager"`` (in-process)."""
        return "redis" if self.redis_url else "eager"

    @property
    def reports_dir(self) -> Path:
        """Directory where import reports (rejected rows) are written."""
        return self.var_dir / "reports"


def _read_database_url(raw: str | None, var_dir: Path) -> str:
    if not raw:
        return f"sqlite:///{(var_dir / 'gridwatch.db').resolve()}"
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError(f"GRIDWATCH_DATABASE_URL is not a database URL: {raw!r}") from exc
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"GRIDWATCH_DATABASE_URL must be sqlite:///… or postgresql://…, not {backend!r}"
        )
    if backend == "postgresql" and url.drivername == "postgresql":
        # psycopg 3 is the driver we install; plain postgresql:// would ask for psycopg2.
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def _read_redis_url(raw: str | None) -> str:
    raw = (raw or "").strip()
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"GRIDWATCH_REDIS_URL must start with redis:// or rediss://: {raw!r}")
    return raw


def _read_timezone(raw: str | None) -> ZoneInfo:
    name = (raw or "Asia/Shanghai").strip()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        # OSError: a tz database directory such as "Asia" is found but is not a zone file.
        raise ConfigError(
            f"GRIDWATCH_TIMEZONE {name!r} is not an IANA time zone such as Asia/Shanghai"
        ) from exc


def _read_extent(raw: str | None) -> tuple[float, float, float, float] | None:
    if not raw or not raw.strip():
        return None
    parts = raw.replace(" ", "").split(",")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError as exc:
        raise ConfigError(
            f"GRIDWATCH_COUNTY_EXTENT must be four numbers minx,miny,maxx,maxy: {raw!r}"
        ) from exc
    if not (-180 <= minx < maxx <= 180 and -90 <= miny < maxy <= 90):
        raise ConfigError(f"GRIDWATCH_COUNTY_EXTENT is not a WGS84 box: {raw!r}")
    return (minx, miny, maxx, maxy)


def _read_optional_file(name: str, raw: str | None) -> Path | None:
    if not raw or not raw.strip():
        return None
    path = Path(raw.strip())
    if not path.is_file():
        raise ConfigError(f"{name} names a file that does not exist: {raw!r}")
    return path


def _read_levels(raw: str | None) -> tuple[str, ...]:
    if not raw or not raw.strip():
        return DEFAULT_LEVELS
    levels = tuple(p.strip() for p in raw.split(",") if p.strip())
    if len(set(levels)) != len(levels) or not levels:
        raise ConfigError(f"GRIDWATCH_AREA_LEVELS must be distinct names: {raw!r}")
    return levels


def _read_positive_int(name: str, raw: str | None, default: int) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number: {raw!r}") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive: {raw!r}")
    return value


def _read_clock(name: str, raw: str | None, default: str) -> str:
    value = (raw or default).strip()
    parts = value.split(":")
    if (
        len(parts) != 2
        or not all(p.isdigit() for p in parts)
        or not (0 <= int(parts[0]) <= 23 and 0 <= int(parts[1]) <= 59)
    ):
        raise ConfigError(f"{name} must be a local time HH:MM such as 02:30, not {raw!r}")
    return f"{int(parts[0]):02d}:{int(parts[1]):02d}"


def _read_count(name: str, raw: str | None, default: int) -> int:
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number: {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more: {raw!r}")
    return value


def _read_bool(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _read_tiles(raw: str | None) -> TileSource:
    value = (raw or "").strip()
    if not value or value.lower() == "none":
        return TileSource()
    if "{z}" in value or value.startswith(("http://", "https://")):
        if not value.startswith(("http://", "https://", "/")):
            raise ConfigError(
                f"GRIDWATCH_TILES must be an http(s):// or /absolute URL template: {value!r}"
            )
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in value]
        if missing:
            raise ConfigError(
                f"GRIDWATCH_TILES URL template lacks {', '.join(missing)}: {value!r}"
            )
        return TileSource("xyz", url_template=value)
    path = Path(value)
    if path.suffix.lower() != ".mbtiles":
        raise ConfigError(
            "GRIDWATCH_TILES must be none, an XYZ URL template with {z}, {x} and {y}, "
            f"or the path of a .mbtiles file: {value!r}"
        )
    if not path.is_file():
        raise ConfigError(f"GRIDWATCH_TILES names an MBTiles file that does not exist: {value!r}")
    try:
        connection = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            connection.execute("SELECT zoom_level, tile_column, tile_row FROM tiles LIMIT 1")
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise ConfigError(
            f"GRIDWATCH_TILES is not an MBTiles file (no readable tiles table): {value!r}"
        ) from exc
    return TileSource("mbtiles", mbtiles_path=path)


def _read_dwell(raw: str | None) -> tuple[int, int]:
    name = "GRIDWATCH_ROUTE_DWELL_MINUTES"
    if raw is None or not raw.strip():
        return (10, 16)
    parts = raw.replace(" ", "").split("-")
    try:
        low, high = (int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError as exc:
        raise ConfigError(f"{name} must be minutes such as 10-16: {raw!r}") from exc
    if not 0 < low <= high <= 240:
        raise ConfigError(f"{name} must be 0 < least <= most <= 240 minutes: {raw!r}")
    return (low, high)


def _read_positive_float(name: str, raw: str | None, default: float, least: float = 0.0) -> float:
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number: {raw!r}") from exc
    if not value > least or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a number above {least:g}: {raw!r}")
    return value


def _read_named_numbers(
    name: str, raw: str | None, defaults: dict[str, float], positive: bool
) -> dict[str, float]:
    values = dict(defaults)
    if raw is None or not raw.strip():
        return values
    for item in raw.split(","):
        key, _, number = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ConfigError(
                f"{name}: unknown name {key!r} (expected {', '.join(defaults)}): {raw!r}"
            )
        try:
            value = float(number)
        except ValueError as exc:
            raise ConfigError(
                f"{name} must be name=number pairs such as {key}=1: {raw!r}"
            ) from exc
        if value < 0 or (positive and value == 0) or value != value:
            raise ConfigError(f"{name}: {key} must be {'above' if positive else 'at least'} 0")
        values[key] = value
    if not positive and sum(values.values()) <= 0:
        raise ConfigError(f"{name}: the weights must not all be zero: {raw!r}")
    return values


LOG_FORMATS = ("text", "json")


def _read_log_format(raw: str | None) -> str:
    value = (raw or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"GRIDWATCH_LOG_FORMAT must be text or json, not {raw!r}")
    return value


def _read_metrics_token(raw: str | None) -> str:
    value = (raw or "").strip()
    if value and (len(value) < 16 or any(c.isspace() for c in value)):
        raise ConfigError(
            "GRIDWATCH_METRICS_TOKEN must be at least 16 characters without spaces "
            "(or empty: /metrics then answers only the loopback address)"
        )
    return value


def _read_multiproc_dir(raw: str | None) -> Path | None:
    if not raw or not raw.strip():
        return None
    path = Path(raw.strip())
    if not path.is_dir():
        raise ConfigError(
            f"PROMETHEUS_MULTIPROC_DIR names a directory that does not exist: {raw!r}"
        )
    return path


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check every ``GRIDWATCH_*`` setting.

    Parameters
    ----------
    environ : mapping, optional
        Where to read from; defaults to :data:`os.environ`.

    Returns
    -------
    Settings

    Raises
    ------
    ConfigError
        When a value is present but unusable.
    """
    env = os.environ if environ is None else environ
    refresh_minutes = _read_positive_int(
        "GRIDWATCH_REFRESH_MINUTES", env.get("GRIDWATCH_REFRESH_MINUTES"), 5
    )
    var_dir = Path(env.get("GRIDWATCH_VAR_DIR") or "var")
    secret = env.get("GRIDWATCH_SECRET_KEY", "")
    generated = False
    if not secret:
        # A random key per process is safe (sessions just do not survive restarts);
        # production deployments set GRIDWATCH_SECRET_KEY.
        secret = secrets.token_hex(32)
        generated = True
    elif len(secret) < 16:
        raise ConfigError("GRIDWATCH_SECRET_KEY must be at least 16 characters long")
    return Settings(
        database_url=_read_database_url(env.get("GRIDWATCH_DATABASE_URL"), var_dir),
        redis_url=_read_redis_url(env.get("GRIDWATCH_REDIS_URL")),
        secret_key=secret,
        timezone=_read_timezone(env.get("GRIDWATCH_TIMEZONE")),
        var_dir=var_dir,
        county_extent=_read_extent(env.get("GRIDWATCH_COUNTY_EXTENT")),
        categories_file=_read_optional_file(
            "GRIDWATCH_CATEGORIES_FILE", env.get("GRIDWATCH_CATEGORIES_FILE")
        ),
        survey_factors_file=_read_optional_file(
            "GRIDWATCH_SURVEY_FACTORS_FILE", env.get("GRIDWATCH_SURVEY_FACTORS_FILE")
        ),
        accountability_rules_file=_read_optional_file(
            "GRIDWATCH_ACCOUNTABILITY_RULES_FILE", env.get("GRIDWATCH_ACCOUNTABILITY_RULES_FILE")
        ),
        factor_map_file=_read_optional_file(
            "GRIDWATCH_FACTOR_MAP_FILE", env.get("GRIDWATCH_FACTOR_MAP_FILE")
        ),
        area_levels=_read_levels(env.get("GRIDWATCH_AREA_LEVELS")),
        import_chunk_size=_read_positive_int(
            "GRIDWATCH_IMPORT_CHUNK_SIZE", env.get("GRIDWATCH_IMPORT_CHUNK_SIZE"), 20_000
        ),
        task_visibility_timeout=_read_positive_int(
            "GRIDWATCH_TASK_VISIBILITY_TIMEOUT", env.get("GRIDWATCH_TASK_VISIBILITY_TIMEOUT"), 600
        ),
        refresh_minutes=refresh_minutes,
        nightly_at=_read_clock("GRIDWATCH_NIGHTLY_AT", env.get("GRIDWATCH_NIGHTLY_AT"), "02:30"),
        report_at=_read_clock("GRIDWATCH_REPORT_AT", env.get("GRIDWATCH_REPORT_AT"), "06:00"),
        run_stale_seconds=_read_positive_int(
            "GRIDWATCH_RUN_STALE_SECONDS", env.get("GRIDWATCH_RUN_STALE_SECONDS"), 1800
        ),
        stale_minutes=_read_positive_int(
            "GRIDWATCH_STALE_MINUTES", env.get("GRIDWATCH_STALE_MINUTES"), 2 * refresh_minutes
        ),
        secure_cookies=_read_bool(
            "GRIDWATCH_SECURE_COOKIES", env.get("GRIDWATCH_SECURE_COOKIES"), True
        ),
        proxy_hops=_read_count("GRIDWATCH_PROXY_HOPS", env.get("GRIDWATCH_PROXY_HOPS"), 0),
        tiles=_read_tiles(env.get("GRIDWATCH_TILES")),
        route_dwell_minutes=_read_dwell(env.get("GRIDWATCH_ROUTE_DWELL_MINUTES")),
        route_revisit_minutes=_read_positive_int(
            "GRIDWATCH_ROUTE_REVISIT_MINUTES", env.get("GRIDWATCH_ROUTE_REVISIT_MINUTES"), 120
        ),
        route_detour_factor=_read_positive_float(
            "GRIDWATCH_ROUTE_DETOUR_FACTOR", env.get("GRIDWATCH_ROUTE_DETOUR_FACTOR"), 1.3, 0.99
        ),
        route_speeds=_read_named_numbers(
            "GRIDWATCH_ROUTE_SPEEDS", env.get("GRIDWATCH_ROUTE_SPEEDS"), DEFAULT_ROUTE_SPEEDS, True
        ),
        route_risk_weights=_read_named_numbers(
            "GRIDWATCH_ROUTE_RISK_WEIGHTS",
            env.get("GRIDWATCH_ROUTE_RISK_WEIGHTS"),
            DEFAULT_ROUTE_RISK_WEIGHTS,
            False,
        ),
        route_border_metres=_read_positive_float(
            "GRIDWATCH_ROUTE_BORDER_METRES", env.get("GRIDWATCH_ROUTE_BORDER_METRES"), 500.0, -1.0
        ),
        route_roads_file=_read_optional_file(
            "GRIDWATCH_ROUTE_ROADS_FILE", env.get("GRIDWATCH_ROUTE_ROADS_FILE")
        ),
        log_format=_read_log_format(env.get("GRIDWATCH_LOG_FORMAT")),
        metrics_token=_read_metrics_token(env.get("GRIDWATCH_METRICS_TOKEN")),
        metrics_multiproc_dir=_read_multiproc_dir(env.get("PROMETHEUS_MULTIPROC_DIR")),
        api_cache_mb=_read_count("GRIDWATCH_API_CACHE_MB", env.get("GRIDWATCH_API_CACHE_MB"), 64),
        secret_key_generated=generated,
    )


__all__ = ["ConfigError", "Settings", "load_settings"]
