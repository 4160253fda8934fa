"""Hot spots: Gi* against esda, FDR control, islands, emerging classes, kernel density."""

from __future__ import annotations

import math

import esda
import geopandas as gpd
import libpysal
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from shapely.geometry import box

from gridwatch.workers.aggregate import hotspots
from gridwatch.workers.aggregate.hotspots import (
    emerging_hotspots,
    gi_star,
    gi_star_zscores,
    grid_weights,
    kde_surface,
    mann_kendall,
)

SIZE = 0.01  # degrees per lattice cell
FIRST_ID = 100


def lattice(n: int = 10) -> gpd.GeoDataFrame:
    """An n x n lattice of square grids, ids 100, 101, … row by row from the north-west."""
    cells = [
        box(116 + c * SIZE, 40 - (r + 1) * SIZE, 116 + (c + 1) * SIZE, 40 - r * SIZE)
        for r in range(n)
        for c in range(n)
    ]
    return gpd.GeoDataFrame(
        geometry=cells, index=pd.Index(range(FIRST_ID, FIRST_ID + n * n)), crs=4326
    )


def grid_id(row: int, col: int, n: int = 10) -> int:
    return FIRST_ID + row * n + col


#: The 3 x 3 block of grids in the north-west corner.
CORNER = [grid_id(r, c) for r in range(3) for c in range(3)]


@pytest.fixture(scope="module")
def grids() -> gpd.GeoDataFrame:
    return lattice()


@pytest.fixture(scope="module")
def weights(grids):
    return grid_weights(grids)


@pytest.fixture(scope="module")
def background() -> np.ndarray:
    return np.random.default_rng(7).poisson(3, 100).astype(float)


def esda_z(y: np.ndarray, w) -> np.ndarray:
    return esda.G_Local(np.asarray(y, dtype=float), w, transform="B", star=True, permutations=0).Zs


# --- weights -----------------------------------------------------------------------------------


def test_lattice_weights_are_queen_contiguity(grids, weights):
    queen = libpysal.weights.Queen.from_dataframe(grids, use_index=True, silence_warnings=True)
    assert list(weights.id_order) == list(grids.index)
    for gid in grids.index:
        assert sorted(weights.neighbors[gid]) == sorted(queen.neighbors[gid])
    assert weights.cardinalities[grid_id(0, 0)] == 3  # corner
    assert weights.cardinalities[grid_id(0, 5)] == 5  # edge
    assert weights.cardinalities[grid_id(5, 5)] == 8  # interior: edges and corners


def test_vertex_on_edge_counts_as_neighbour():
    # The small squares' corner lies on the big square's edge with no shared vertex.
    big = box(0, 0, 0.02, 0.02)
    top = box(0, 0.02, 0.01, 0.03)
    right = box(0.01, 0.02, 0.02, 0.03)
    w = grid_weights(gpd.GeoDataFrame(geometry=[big, top, right], index=[1, 2, 3], crs=4326))
    assert sorted(w.neighbors[1]) == [2, 3]


def test_tolerance_bridges_a_digitising_gap():
    gap = 0.5 / hotspots.METRES_PER_DEGREE  # half a metre
    left = box(0, 0, 0.01, 0.01)
    right = box(0.01 + gap, 0, 0.02, 0.01)
    frame = gpd.GeoDataFrame(geometry=[left, right], index=[1, 2], crs=4326)
    assert grid_weights(frame, tolerance_m=2.0).neighbors[1] == [2]


def test_island_gets_nearest_neighbours_and_a_finite_z(grids):
    island = box(116.2, 39.95, 116.21, 39.96)  # ~8 km east of the lattice
    with_island = pd.concat([grids, gpd.GeoDataFrame(geometry=[island], index=[999], crs=4326)])
    w = grid_weights(with_island)
    assert w.islands == []
    # Nearest by centroid: the lattice's east column, rows 4-6 (the island sits at 39.955).
    nearest = {grid_id(r, 9) for r in (3, 4, 5)}
    assert set(w.neighbors[999]) == nearest
    for gid in nearest:  # symmetric
        assert 999 in w.neighbors[gid]
    counts = pd.Series(np.arange(101, dtype=float), index=with_island.index)
    result = gi_star(counts, w)
    assert np.isfinite(result.loc[999, "gi_star_z"])
    assert result.loc[999, "gi_star_z"] != 0
    assert np.allclose(result["gi_star_z"].to_numpy(), esda_z(counts.to_numpy(), w), atol=1e-9)


def test_duplicate_or_empty_grids_are_rejected(grids):
    with pytest.raises(ValueError, match="unique"):
        grid_weights(pd.concat([grids.iloc[:2], grids.iloc[:1]]))
    empty = grids.iloc[:3].copy()
    empty.loc[FIRST_ID + 1, "geometry"] = None
    with pytest.raises(ValueError, match="without a geometry"):
        grid_weights(empty)


# --- Gi* ---------------------------------------------------------------------------------------


def test_corner_cluster_is_hot_and_z_equals_esda(grids, weights, background):
    counts = pd.Series(background, index=grids.index)
    counts[CORNER] += 20
    result = gi_star(counts, weights)
    assert list(result.index) == list(grids.index)
    assert result.loc[CORNER, "hotspot"].str.startswith("hot_").all()
    assert result.loc[CORNER, "significant"].all()
    far = [grid_id(r, c) for r in range(5, 10) for c in range(5, 10)]
    assert not result.loc[far, "hotspot"].str.startswith("hot_").any()
    # esda's analytical z is ``Zs``; ``z_sim`` is the permutation-based one.
    assert np.abs(result["gi_star_z"].to_numpy() - esda_z(counts.to_numpy(), weights)).max() < 1e-9
    assert np.allclose(result["gi_star_p"], 2 * stats.norm.sf(np.abs(result["gi_star_z"])))


def test_cold_cluster_is_cold(grids, weights):
    counts = pd.Series(20.0, index=grids.index)
    counts[CORNER] = 0.0
    counts[grid_id(9, 9)] = 21.0  # not perfectly uniform elsewhere
    result = gi_star(counts, weights)
    assert result.loc[CORNER, "hotspot"].str.startswith("cold_").all()
    assert (result.loc[CORNER, "gi_star_z"] < 0).all()


def test_missing_grids_count_zero(grids, weights, background):
    counts = pd.Series(background, index=grids.index)
    counts[CORNER] += 20
    full = gi_star(counts, weights)
    sparse_counts = counts[counts > 0]
    assert len(sparse_counts) < len(counts)
    pd.testing.assert_frame_equal(gi_star(sparse_counts, weights), full)


@pytest.mark.parametrize("value", [0.0, 4.0, 3.3])
def test_uniform_field_has_no_significant_grids(grids, weights, value):
    result = gi_star(pd.Series(value, index=grids.index), weights)
    assert not result["significant"].any()
    assert (result["hotspot"] == "not_significant").all()
    assert (result["gi_star_z"] == 0).all()
    assert (result["gi_star_p"] == 1).all()


def test_fdr_never_makes_more_grids_significant_than_uncorrected(grids, weights):
    alpha = 0.05
    corrected_total = uncorrected_total = 0
    for seed in range(20):
        counts = pd.Series(
            np.random.default_rng(seed).poisson(5, len(grids)).astype(float), index=grids.index
        )
        result = gi_star(counts, weights, alpha=alpha)
        corrected = int(result["significant"].sum())
        uncorrected = int((result["gi_star_p"] <= alpha).sum())
        assert corrected <= uncorrected
        # Every FDR-significant grid is also significant before correction.
        assert (result["gi_star_p"][result["significant"]] <= alpha).all()
        corrected_total += corrected
        uncorrected_total += uncorrected
    assert corrected_total < uncorrected_total


def test_bh_adjustment_matches_scipy():
    p = np.random.default_rng(3).uniform(0, 0.2, size=(50, 4))
    adjusted = hotspots._bh_adjust(p)
    for column in range(p.shape[1]):
        expected = stats.false_discovery_control(p[:, column], method="bh")
        assert np.allclose(adjusted[:, column], expected)


def test_confidence_bins_follow_adjusted_p(grids, weights, background):
    counts = pd.Series(background, index=grids.index)
    counts[CORNER] += 6
    result = gi_star(counts, weights, alpha=0.10)
    q, z, label = result["gi_star_q"], result["gi_star_z"], result["hotspot"]
    assert (label[(q <= 0.01) & (z > 0)] == "hot_99").all()
    assert (label[(q > 0.01) & (q <= 0.05) & (z > 0)] == "hot_95").all()
    assert (label[(q > 0.05) & (q <= 0.10) & (z > 0)] == "hot_90").all()
    assert (label[q > 0.10] == "not_significant").all()
    assert (result["significant"] == (q <= 0.10)).all()


def test_permutation_inference(grids, weights, background):
    counts = pd.Series(background, index=grids.index)
    counts[CORNER] += 20
    first = gi_star(counts, weights, permutations=999, seed=5)
    again = gi_star(counts, weights, permutations=999, seed=5)
    pd.testing.assert_frame_equal(first, again)
    assert np.isfinite(first["gi_star_z"]).all()
    assert (first["gi_star_p"] >= 2 / 1000).all()
    assert (first.loc[CORNER, "gi_star_z"] > 2).all()
    # Pseudo p-values bottom out at 2 / 1000, so only the clearest grids survive BH here.
    assert first.loc[[grid_id(0, 1), grid_id(1, 0), grid_id(1, 1)], "significant"].all()
    # The caller's weights are untouched by esda's in-place changes.
    assert weights.sparse.diagonal().sum() == 0
    uniform = gi_star(pd.Series(2.0, index=grids.index), weights, permutations=99)
    assert not uniform["significant"].any()


def test_unknown_or_negative_counts_are_rejected(grids, weights):
    with pytest.raises(ValueError, match="not in the weights"):
        gi_star(pd.Series([1.0], index=[12345]), weights)
    with pytest.raises(ValueError, match="non-negative"):
        gi_star(pd.Series(-1.0, index=grids.index), weights)


# --- Gi* over many periods ---------------------------------------------------------------------


def test_vectorised_zscores_equal_esda_per_period(grids, weights):
    rng = np.random.default_rng(11)
    matrix = pd.DataFrame(
        rng.poisson(rng.uniform(0.5, 8, size=(100, 1)), size=(100, 24)).astype(float),
        index=grids.index,
        columns=[f"2026-{m:02d}" for m in range(1, 25)],
    )
    matrix.iloc[:9, 3] += 30  # one period with a strong cluster
    z = gi_star_zscores(matrix.sample(frac=1, random_state=1), weights)  # row order irrelevant
    assert list(z.index) == list(weights.id_order)
    assert list(z.columns) == list(matrix.columns)
    for column in matrix.columns:
        expected = esda_z(matrix[column].to_numpy(), weights)
        assert np.abs(z[column].to_numpy() - expected).max() < 1e-9
        single = gi_star(matrix[column], weights)["gi_star_z"]
        assert np.abs(single.to_numpy() - expected).max() < 1e-9


def test_empty_period_has_zero_z(grids, weights):
    matrix = pd.DataFrame({"a": np.arange(100.0), "b": 0.0}, index=grids.index)
    z = gi_star_zscores(matrix, weights)
    assert (z["b"] == 0).all()
    assert np.abs(z["a"].to_numpy() - esda_z(matrix["a"].to_numpy(), weights)).max() < 1e-9


# --- emerging hot spots ------------------------------------------------------------------------


def history(grids, background, corner_extra: list[float]) -> pd.DataFrame:
    """Background counts in every period plus ``corner_extra[t]`` on the corner block."""
    periods = len(corner_extra)
    matrix = pd.DataFrame(
        np.repeat(background[:, None], periods, axis=1),
        index=grids.index,
        columns=[f"p{t}" for t in range(periods)],
    )
    for t, extra in enumerate(corner_extra):
        matrix.loc[CORNER, f"p{t}"] += extra
    return matrix


@pytest.mark.parametrize(
    ("corner_extra", "expected"),
    [
        ([0] * 7 + [20], "new"),
        ([12 + 4 * t for t in range(8)], "intensifying"),
        ([20] * 8, "persistent"),
        ([40 - 4 * t for t in range(8)], "diminishing"),
        ([20] * 9 + [0], "historical"),
        ([0] * 5 + [20] * 3, "consecutive"),
        ([0, 20, 0, 0, 20, 0, 0, 20], "sporadic"),
    ],
)
def test_emerging_classes(grids, weights, background, corner_extra, expected):
    matrix = history(grids, background, [float(v) for v in corner_extra])
    classes = emerging_hotspots(matrix, weights)
    assert classes.name == "emerging_hotspot"
    assert list(classes.index) == list(grids.index)
    assert (classes.loc[CORNER] == expected).all(), classes.loc[CORNER].to_dict()
    far = [grid_id(r, c) for r in range(5, 10) for c in range(5, 10)]
    assert (classes.loc[far] == "none").all()
    assert set(classes) <= set(hotspots.EMERGING_CLASSES)


def test_historical_needs_ninety_percent(grids, weights, background):
    # Hot in 7 of 8 periods but not the last: 87.5 % < 90 %, so not historical.
    matrix = history(grids, background, [20.0] * 7 + [0.0])
    assert (emerging_hotspots(matrix, weights).loc[CORNER] == "none").all()


def test_hot_now_after_being_cold_is_not_sporadic(grids, weights):
    # Corner cold, then ordinary, then hot, ordinary, hot: on and off, but once cold.
    base = np.full(100, 10.0)
    base[-1] = 11.0
    corner_values = [0.0, 10.0, 40.0, 10.0, 40.0]
    matrix = pd.DataFrame(
        np.repeat(base[:, None], len(corner_values), axis=1),
        index=grids.index,
        columns=list("abcde"),
    )
    for column, value in zip(matrix.columns, corner_values, strict=True):
        matrix.loc[CORNER, column] = value
    z = gi_star_zscores(matrix, weights)
    assert (z.loc[CORNER, "a"] < -2).all()
    classes = emerging_hotspots(matrix, weights)
    assert (classes.loc[CORNER] == "none").all()
    # Without the cold period the same history is sporadic.
    matrix.loc[CORNER, "a"] = 10.0
    assert (emerging_hotspots(matrix, weights).loc[CORNER] == "sporadic").all()


def test_single_period(grids, weights, background):
    matrix = history(grids, background, [20.0])
    assert (emerging_hotspots(matrix, weights).loc[CORNER] == "new").all()
    with pytest.raises(ValueError, match="no periods"):
        emerging_hotspots(matrix.iloc[:, :0], weights)


def test_mann_kendall_statistic_and_p():
    rng = np.random.default_rng(2)
    series = np.vstack(
        [
            np.arange(8.0),  # strictly rising
            np.arange(8.0)[::-1],  # strictly falling
            np.full(8, 3.0),  # constant: all ties
            rng.normal(size=8),
            rng.normal(size=8),
        ]
    )
    s, p = mann_kendall(series)
    pairs = 8 * 7 / 2
    for row in (0, 1, 3, 4):
        tau = stats.kendalltau(np.arange(8), series[row]).statistic
        assert s[row] == pytest.approx(tau * pairs)
    variance = 8 * 7 * 21 / 18
    assert s[0] == 28 and p[0] == pytest.approx(2 * stats.norm.sf(27 / math.sqrt(variance)))
    assert s[1] == -28 and p[1] == pytest.approx(p[0])
    assert s[2] == 0 and p[2] == 1
    # Ties shrink the variance: [1, 1, 2, 3] has one tie group of 2.
    s_tied, p_tied = mann_kendall(np.array([[1.0, 1.0, 2.0, 3.0]]))
    tied_variance = (4 * 3 * 13 - 2 * 1 * 9) / 18
    assert s_tied[0] == 5
    assert p_tied[0] == pytest.approx(2 * stats.norm.sf(4 / math.sqrt(tied_variance)))


# --- kernel density ----------------------------------------------------------------------------

BBOX = (116.0, 39.8, 116.3, 40.0)  # ~25.6 x 22 km


def test_kde_integrates_to_the_number_of_points_and_peaks_at_the_cluster():
    rng = np.random.default_rng(4)
    lon = np.concatenate([rng.uniform(116.05, 116.25, 3000), rng.normal(116.1, 0.003, 2000)])
    lat = np.concatenate([rng.uniform(39.85, 39.95, 3000), rng.normal(39.93, 0.003, 2000)])
    density, bounds = kde_surface(lon, lat, BBOX, cell_m=200, bandwidth_m=500)
    west, south, east, north = bounds
    assert (west, north) == (BBOX[0], BBOX[3])
    assert east >= BBOX[2] and south <= BBOX[1]
    rows, cols = density.shape
    assert (east - west) / cols * 111_195 * math.cos(math.radians(39.9)) == pytest.approx(200)
    assert (north - south) / rows * 111_195 == pytest.approx(200)
    assert (density >= 0).all()
    total = density.sum() * 0.2 * 0.2  # cells of 0.04 km²
    assert total == pytest.approx(len(lon), rel=0.02)
    peak_row, peak_col = np.unravel_index(np.argmax(density), density.shape)
    peak_lon = west + (peak_col + 0.5) * (east - west) / cols
    peak_lat = north - (peak_row + 0.5) * (north - south) / rows  # rows run north to south
    assert peak_lon == pytest.approx(116.1, abs=0.003)
    assert peak_lat == pytest.approx(39.93, abs=0.003)


def direct_density(lon, lat, x, y, bandwidth, kernel):
    """The continuous kernel density at (x, y) in points per km², summed point by point."""
    metres_lon = 111_195 * math.cos(math.radians(39.9))
    d2 = ((lon - x) * metres_lon) ** 2 + ((lat - y) * 111_195) ** 2
    if kernel == "quartic":
        k = 3 / (math.pi * bandwidth**2) * np.clip(1 - d2 / bandwidth**2, 0, None) ** 2
    else:
        k = np.exp(-0.5 * d2 / bandwidth**2) / (2 * math.pi * bandwidth**2)
    return k.sum() * 1e6


@pytest.mark.parametrize("kernel", ["quartic", "gaussian"])
def test_kde_matches_a_direct_kernel_sum(kernel):
    cell, bandwidth = 20.0, 400.0
    empty, (west, south, east, north) = kde_surface(
        np.array([]), np.array([]), BBOX, cell_m=cell, bandwidth_m=bandwidth, kernel=kernel
    )
    rows, cols = empty.shape
    assert not empty.any()

    def centre(row, col):
        return west + (col + 0.5) * (east - west) / cols, north - (row + 0.5) * (
            north - south
        ) / rows

    # Points on cell centres: no binning error, so the surface is the continuous density.
    rng = np.random.default_rng(8)
    cells = np.column_stack([rng.integers(500, 540, 30), rng.integers(600, 640, 30)])
    lon, lat = np.array([centre(r, c) for r, c in cells]).T
    density, _ = kde_surface(lon, lat, BBOX, cell_m=cell, bandwidth_m=bandwidth, kernel=kernel)
    peak = np.unravel_index(np.argmax(density), density.shape)
    assert 490 <= peak[0] <= 550 and 590 <= peak[1] <= 650
    for row, col in [peak, tuple(cells[0]), (cells[0][0] + 12, cells[0][1] - 7), (495, 645)]:
        direct = direct_density(lon, lat, *centre(row, col), bandwidth, kernel)
        assert direct > 1
        assert density[row, col] == pytest.approx(direct, rel=0.01)

    # Anywhere else each point moves by at most half a cell: a few per cent at 20 m cells.
    lon = rng.uniform(116.14, 116.16, 500)
    lat = rng.uniform(39.89, 39.91, 500)
    density, _ = kde_surface(lon, lat, BBOX, cell_m=cell, bandwidth_m=bandwidth, kernel=kernel)
    peak = np.unravel_index(np.argmax(density), density.shape)
    direct = direct_density(lon, lat, *centre(*peak), bandwidth, kernel)
    assert density[peak] == pytest.approx(direct, rel=0.02)


def test_kde_weights_points_outside_and_invalid_input():
    lon = np.array([116.1, 116.1, np.nan, 116.3 + 0.002])  # the last is 170 m east of bbox
    lat = np.array([39.9, 39.9, 39.9, 39.9])
    density, _ = kde_surface(lon[:2], lat[:2], BBOX)
    weighted, _ = kde_surface(lon[:1], lat[:1], BBOX, weights=np.array([2.0]))
    assert np.allclose(density, weighted)
    with_outside, _ = kde_surface(lon, lat, BBOX)
    assert with_outside[:, -1].sum() > density[:, -1].sum()  # edge cells feel the outside point
    with pytest.raises(ValueError, match="bbox"):
        kde_surface(lon, lat, (116.3, 39.8, 116.0, 40.0))
    with pytest.raises(ValueError, match="too large"):
        kde_surface(lon, lat, (-180, -80, 180, 80), cell_m=200)
    with pytest.raises(ValueError, match="same length"):
        kde_surface(lon, lat[:2], BBOX)
