"""Convert coordinates to WGS84 (EPSG:4326), the only system GridWatch stores.

Chinese web maps publish shifted coordinates: GCJ-02 (Amap/高德, Tencent/腾讯) and BD-09
(Baidu/百度). The GCJ-02 shift is a published closed-form function of WGS84, so the inverse is
found by fixed-point iteration to well under a metre; outside China the shift is zero. Any
other system (CGCS2000, projected Gauss-Krüger zones, UTM …) goes through pyproj.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by GCJ-02
_EE = 0.00669342162296594323
_X_PI = np.pi * 3000.0 / 180.0

FloatArray = NDArray[np.float64]

#: Names accepted by ``--crs`` besides ``EPSG:n``.
NAMED_CRS = ("wgs84", "cgcs2000", "gcj02", "bd09")


class CoordinateSystemError(ValueError):
    """The coordinate reference system name is not understood."""


def _as_arrays(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def in_china(lon: ArrayLike, lat: ArrayLike) -> NDArray[np.bool_]:
    """Return where the GCJ-02 shift applies (the customary rectangle around China)."""
    x, y = _as_arrays(lon, lat)
    return (x >= 72.004) & (x <= 137.8347) & (y >= 0.8293) & (y <= 55.8271)


def _gcj_offset(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    x = lon - 105.0
    y = lat - 35.0
    d_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    d_lat += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    d_lat += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    d_lat += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    d_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    d_lon += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    d_lon += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    d_lon += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - _EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    d_lat = (d_lat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrt_magic) * np.pi)
    d_lon = (d_lon * 180.0) / (_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    inside = in_china(lon, lat)
    return np.where(inside, d_lon, 0.0), np.where(inside, d_lat, 0.0)


def wgs84_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Shift WGS84 coordinates to GCJ-02 (what Amap and Tencent display)."""
    x, y = _as_arrays(lon, lat)
    d_lon, d_lat = _gcj_offset(x, y)
    return x + d_lon, y + d_lat


def gcj02_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Invert the GCJ-02 shift by fixed-point iteration (residual well below 1 cm)."""
    gx, gy = _as_arrays(lon, lat)
    wx, wy = gx.copy(), gy.copy()
    for _ in range(30):
        fx, fy = wgs84_to_gcj02(wx, wy)
        ex, ey = fx - gx, fy - gy
        wx, wy = wx - ex, wy - ey
        if np.all(np.abs(ex) < 1e-10) and np.all(np.abs(ey) < 1e-10):
            break
    return wx, wy


def bd09_to_gcj02(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Undo Baidu's BD-09 transform, giving GCJ-02."""
    bx, by = _as_arrays(lon, lat)
    x = bx - 0.0065
    y = by - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def gcj02_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Apply Baidu's BD-09 transform to GCJ-02 coordinates."""
    x, y = _as_arrays(lon, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def bd09_to_wgs84(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Convert Baidu BD-09 coordinates to WGS84."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def wgs84_to_bd09(lon: ArrayLike, lat: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Convert WGS84 coordinates to Baidu BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def normalise_crs_name(name: str | None) -> str:
    """Return ``wgs84``, ``cgcs2000``, ``gcj02``, ``bd09`` or ``EPSG:n`` for a user's spelling.

    Raises
    ------
    CoordinateSystemError
        When the name is neither one of the named systems nor a CRS pyproj understands.
    """
    raw = (name or "wgs84").strip()
    key = raw.lower().replace("-", "").replace("_", "")
    aliases = {
        "wgs84": "wgs84",
        "epsg4326": "wgs84",
        "epsg:4326": "wgs84",
        "cgcs2000": "cgcs2000",
        "epsg4490": "cgcs2000",
        "epsg:4490": "cgcs2000",
        "gcj02": "gcj02",
        "gcj": "gcj02",
        "amap": "gcj02",
        "tencent": "gcj02",
        "bd09": "bd09",
        "bd09ll": "bd09",
        "baidu": "bd09",
    }
    if key in aliases:
        return aliases[key]
    try:
        crs = CRS.from_user_input(raw)
    except CRSError as exc:
        raise CoordinateSystemError(
            f"unknown coordinate system {raw!r}; use wgs84, cgcs2000, gcj02, bd09 or EPSG:n"
        ) from exc
    epsg = crs.to_epsg()
    if epsg == 4326:
        return "wgs84"
    return f"EPSG:{epsg}" if epsg else crs.to_string()


@lru_cache(maxsize=16)
def _transformer(source: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(source), CRS.from_epsg(4326), always_xy=True)


def to_wgs84(x: ArrayLike, y: ArrayLike, crs: str | None) -> tuple[FloatArray, FloatArray]:
    """Convert coordinates in any accepted system to WGS84 longitude/latitude.

    Parameters
    ----------
    x, y : array_like
        Longitude/latitude (or easting/northing for projected systems).
    crs : str
        ``wgs84``, ``cgcs2000``, ``gcj02``, ``bd09``, ``EPSG:n`` or anything pyproj accepts.

    Returns
    -------
    tuple of numpy.ndarray
        WGS84 longitude and latitude.
    """
    name = normalise_crs_name(crs)
    if name == "wgs84":
        return _as_arrays(x, y)
    if name == "gcj02":
        return gcj02_to_wgs84(x, y)
    if name == "bd09":
        return bd09_to_wgs84(x, y)
    if name == "cgcs2000":
        name = "EPSG:4490"
    lon, lat = _transformer(name).transform(*_as_arrays(x, y))
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
