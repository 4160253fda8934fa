"""Coordinate conversion to WGS84 checked against published reference values.

Reference points
----------------
* WGS84 ↔ GCJ-02 pairs for Shanghai, Shenzhen and Beijing from the eviltransform project,
  ``googollee/eviltransform`` ``python/test.py`` (the same table is in ``go/transform_test.go``),
  given there as (wgsLat, wgsLng, gcjLat, gcjLng).
* WGS84 → GCJ-02 and GCJ-02 ↔ BD-09 results for (116.404, 39.915) published in the README of
  ``wandergis/coordtransform`` (lon, lat order). Its ``gcj02towgs84`` is the one-step
  approximation, so its printed value is not used as a reference for the inverse.
  (eviltransform's BD-09 pairs use a variant of Baidu's formula with ``sin(y·π)`` instead of
  ``sin(y·x_pi)`` and are therefore not used either.)
* Projected systems are checked without pyproj: on the central meridian of a transverse
  Mercator zone the easting is the false easting and the northing is k0 times the meridian
  arc length, which is integrated numerically below from the ellipsoid alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Transformer

from gridwatch.geo.coords import (
    CoordinateSystemError,
    bd09_to_gcj02,
    bd09_to_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    in_china,
    normalise_crs_name,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

# (wgs_lon, wgs_lat, gcj_lon, gcj_lat) from googollee/eviltransform python/test.py
EVILTRANSFORM_PAIRS = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # Beijing
]

# wandergis/coordtransform README.md, "result" block, input (116.404, 39.915)
WANDERGIS_INPUT = (116.404, 39.915)
WANDERGIS_WGS84_TO_GCJ02 = (116.41024449916938, 39.91640428150164)
WANDERGIS_GCJ02_TO_BD09 = (116.41036949371029, 39.92133699351021)
WANDERGIS_BD09_TO_GCJ02 = (116.39762729119315, 39.90865673957631)

OUTSIDE_CHINA = [(2.3522, 48.8566), (-74.006, 40.7128), (151.2093, -33.8688), (139.0, 60.0)]


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres (spherical Earth, R = 6 371 008.8 m)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(h))


def meridian_arc_m(lat_deg: float, a: float, inv_f: float) -> float:
    """Length of the meridian from the equator to ``lat_deg`` on an ellipsoid (numerically)."""
    f = 1 / inv_f
    e2 = f * (2 - f)
    phi = np.linspace(0.0, math.radians(lat_deg), 400_001)
    radius_of_curvature = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    step = phi[1] - phi[0]
    # Composite Simpson's rule.
    weights = np.ones_like(phi)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return float(step / 3 * np.sum(weights * radius_of_curvature))


# ------------------------------------------------------------------------------------------
# GCJ-02 (Amap / Tencent)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVILTRANSFORM_PAIRS)
def test_wgs84_to_gcj02_matches_eviltransform(wlon, wlat, glon, glat):
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert float(lon) == pytest.approx(glon, abs=1e-8)
    assert float(lat) == pytest.approx(glat, abs=1e-8)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), EVILTRANSFORM_PAIRS)
def test_gcj02_to_wgs84_recovers_published_point_within_2m(wlon, wlat, glon, glat):
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert haversine_m(float(lon), float(lat), wlon, wlat) < 2.0
    # The iteration is far better than the 2 m requirement.
    assert haversine_m(float(lon), float(lat), wlon, wlat) < 0.01
    # And the published GCJ-02 point is really shifted by hundreds of metres.
    assert haversine_m(glon, glat, wlon, wlat) > 100


def test_wgs84_to_gcj02_matches_wandergis():
    lon, lat = wgs84_to_gcj02(*WANDERGIS_INPUT)
    assert (float(lon), float(lat)) == pytest.approx(WANDERGIS_WGS84_TO_GCJ02, abs=1e-9)
    back = gcj02_to_wgs84(*WANDERGIS_WGS84_TO_GCJ02)
    assert haversine_m(float(back[0]), float(back[1]), *WANDERGIS_INPUT) < 2.0


def test_to_wgs84_gcj02_by_name():
    wlon, wlat, glon, glat = EVILTRANSFORM_PAIRS[2]
    for name in ("gcj02", "GCJ-02", "amap", "Tencent"):
        lon, lat = to_wgs84(glon, glat, name)
        assert haversine_m(float(lon), float(lat), wlon, wlat) < 2.0


# ------------------------------------------------------------------------------------------
# BD-09 (Baidu)
# ------------------------------------------------------------------------------------------


def test_gcj02_to_bd09_matches_wandergis():
    lon, lat = gcj02_to_bd09(*WANDERGIS_INPUT)
    assert (float(lon), float(lat)) == pytest.approx(WANDERGIS_GCJ02_TO_BD09, abs=1e-9)


def test_bd09_to_gcj02_matches_wandergis():
    lon, lat = bd09_to_gcj02(*WANDERGIS_INPUT)
    assert (float(lon), float(lat)) == pytest.approx(WANDERGIS_BD09_TO_GCJ02, abs=1e-9)


def test_bd09_to_wgs84_chains_through_gcj02():
    # BD-09 of a published GCJ-02 point, then back to WGS84: the published WGS84 point.
    for wlon, wlat, glon, glat in EVILTRANSFORM_PAIRS:
        blon, blat = gcj02_to_bd09(glon, glat)
        lon, lat = bd09_to_wgs84(blon, blat)
        assert haversine_m(float(lon), float(lat), wlon, wlat) < 2.0
        lon, lat = to_wgs84(blon, blat, "baidu")
        assert haversine_m(float(lon), float(lat), wlon, wlat) < 2.0


# ------------------------------------------------------------------------------------------
# Round trips, outside China, arrays
# ------------------------------------------------------------------------------------------


def test_round_trips_over_china():
    rng = np.random.default_rng(20260704)
    lon = rng.uniform(74.0, 134.0, 2000)
    lat = rng.uniform(18.0, 53.0, 2000)
    # GCJ-02 is inverted by iteration: exact to far below a millimetre (1e-9 degrees).
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert np.max(np.abs(back_lon - lon)) < 1e-9
    assert np.max(np.abs(back_lat - lat)) < 1e-9
    # BD-09 → GCJ-02 is the customary closed-form approximate inverse of Baidu's formula (the
    # one wandergis/coordtransform publishes); it is good to a few decimetres (3e-6 degrees).
    for b_lon, b_lat in (
        bd09_to_wgs84(*wgs84_to_bd09(lon, lat)),
        gcj02_to_bd09(*bd09_to_gcj02(lon, lat)),
    ):
        assert np.max(np.abs(b_lon - lon)) < 3e-6
        assert np.max(np.abs(b_lat - lat)) < 3e-6


@pytest.mark.parametrize(("lon", "lat"), OUTSIDE_CHINA)
def test_identity_outside_china(lon, lat):
    assert not in_china(lon, lat)
    assert tuple(map(float, wgs84_to_gcj02(lon, lat))) == (lon, lat)
    assert tuple(map(float, gcj02_to_wgs84(lon, lat))) == (lon, lat)
    assert tuple(map(float, to_wgs84(lon, lat, "gcj02"))) == (lon, lat)


def test_in_china():
    lon, lat = EVILTRANSFORM_PAIRS[0][:2]
    assert in_china(lon, lat)
    mask = in_china([lon, 2.35, 114.0], [lat, 48.85, 22.5])
    assert mask.tolist() == [True, False, True]


def test_vectorised_matches_scalar():
    wgs = np.array([p[:2] for p in EVILTRANSFORM_PAIRS] + [OUTSIDE_CHINA[0]])
    lon, lat = wgs84_to_gcj02(wgs[:, 0], wgs[:, 1])
    assert lon.shape == lat.shape == (4,)
    for i, (x, y) in enumerate(wgs):
        sx, sy = wgs84_to_gcj02(x, y)
        assert lon[i] == float(sx) and lat[i] == float(sy)
    expected = np.array([p[2:] for p in EVILTRANSFORM_PAIRS])
    np.testing.assert_allclose(np.c_[lon, lat][:3], expected, atol=1e-8)
    np.testing.assert_array_equal(np.c_[lon, lat][3], wgs[3])
    # The inverse iterates until every point has converged, and keeps array shapes.
    grid_lon, grid_lat = np.meshgrid(np.linspace(110, 120, 5), np.linspace(20, 40, 4))
    back_lon, back_lat = gcj02_to_wgs84(*wgs84_to_gcj02(grid_lon, grid_lat))
    assert back_lon.shape == (4, 5)
    np.testing.assert_allclose(back_lon, grid_lon, atol=1e-7)
    np.testing.assert_allclose(back_lat, grid_lat, atol=1e-7)


def test_lists_are_accepted():
    lon, lat = to_wgs84([116.0, 117.0], [39.0, 40.0], "wgs84")
    assert lon.dtype == np.float64
    assert lon.tolist() == [116.0, 117.0] and lat.tolist() == [39.0, 40.0]


# ------------------------------------------------------------------------------------------
# CGCS2000 and projected systems (through pyproj)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cgcs2000", "EPSG:4490", "epsg:4490"])
def test_cgcs2000_is_wgs84_within_a_metre(name):
    lon = np.array([121.5272106, 113.912316, 87.6, 126.6])
    lat = np.array([31.1774276, 22.543847, 43.8, 45.75])
    out_lon, out_lat = to_wgs84(lon, lat, name)
    for i in range(len(lon)):
        assert haversine_m(out_lon[i], out_lat[i], lon[i], lat[i]) < 1.0


@pytest.mark.parametrize(
    ("crs", "central_meridian", "k0", "a", "inv_f", "lat"),
    [
        # CGCS2000 / 3-degree Gauss-Kruger CM 114E: CGCS2000 ellipsoid, k0 = 1, FE 500 000 m.
        ("EPSG:4547", 114.0, 1.0, 6_378_137.0, 298.257222101, 22.5),
        ("EPSG:4547", 114.0, 1.0, 6_378_137.0, 298.257222101, 30.0),
        # WGS 84 / UTM zone 49N: CM 111E, k0 = 0.9996, FE 500 000 m.
        ("EPSG:32649", 111.0, 0.9996, 6_378_137.0, 298.257223563, 25.0),
    ],
)
def test_projected_central_meridian_against_meridian_arc(crs, central_meridian, k0, a, inv_f, lat):
    northing = k0 * meridian_arc_m(lat, a, inv_f)
    lon, lat_out = to_wgs84(500_000.0, northing, crs)
    # 1e-8 degrees is about a millimetre; CGCS2000 → WGS84 is a null transformation in PROJ.
    assert float(lon) == pytest.approx(central_meridian, abs=1e-8)
    assert float(lat_out) == pytest.approx(lat, abs=1e-8)


def test_meridian_arc_helper_matches_the_textbook_value():
    # 10 001 965.729 m, the WGS84 equator-to-pole quarter meridian (Moritz, Geodetic
    # Reference System 1980, gives 10 001 965.7293 m for GRS80).
    assert meridian_arc_m(90.0, 6_378_137.0, 298.257222101) == pytest.approx(
        10_001_965.7293, abs=0.001
    )


def test_projected_off_meridian_uses_easting_northing_order():
    # EPSG:4547 declares northing first; GridWatch always takes x = easting, y = northing.
    forward = Transformer.from_crs("EPSG:4326", "EPSG:4547", always_xy=True)
    east, north = forward.transform(113.26, 23.13)  # Guangzhou
    assert 400_000 < east < 500_000 and north > 2_500_000
    lon, lat = to_wgs84(np.array([east]), np.array([north]), "EPSG:4547")
    assert haversine_m(float(lon[0]), float(lat[0]), 113.26, 23.13) < 0.01


# ------------------------------------------------------------------------------------------
# Names
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (None, "wgs84"),
        ("", "wgs84"),
        ("WGS84", "wgs84"),
        ("wgs-84", "wgs84"),
        ("EPSG:4326", "wgs84"),
        ("epsg4326", "wgs84"),
        ("CGCS2000", "cgcs2000"),
        ("EPSG:4490", "cgcs2000"),
        ("GCJ-02", "gcj02"),
        ("gcj_02", "gcj02"),
        ("Amap", "gcj02"),
        ("BD-09", "bd09"),
        ("bd09ll", "bd09"),
        ("Baidu", "bd09"),
        ("EPSG:4547", "EPSG:4547"),
        ("epsg:32649", "EPSG:32649"),
        ("  EPSG:4547 ", "EPSG:4547"),
    ],
)
def test_normalise_crs_name(name, expected):
    assert normalise_crs_name(name) == expected


@pytest.mark.parametrize("name", ["not-a-crs", "EPSG:999999", "mars", "gcj03"])
def test_normalise_crs_name_rejects_nonsense(name):
    with pytest.raises(CoordinateSystemError, match="unknown coordinate system"):
        normalise_crs_name(name)
    with pytest.raises(CoordinateSystemError):
        to_wgs84(116.0, 39.0, name)
