"""Distances between patrol bases and stops: straight line × detour factor, or road paths.

Without a road network the way between two points is the great-circle distance times a
detour factor (streets are never straight; 1.3 is typical of towns). With one, it is the
shortest path on the network: the lines of a GeoJSON / GeoPackage file become a graph whose
nodes are the lines' vertices (vertices closer than about a centimetre are merged, so streets
meeting at a shared vertex connect) and whose edges are the segments between consecutive
vertices. Lines that merely cross without a shared vertex do not connect: a street crossing
a river connects to the other bank only where the file has a bridge. Each point is snapped to
its nearest network node, and the snapping distance (straight) is added at both ends. Points
on parts of the network that do not connect get :data:`UNREACHABLE` metres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

FloatArray = npt.NDArray[np.float64]

EARTH_RADIUS_M: Final = 6_371_008.8
#: Distance given to pairs of points the road network does not connect (metres).
UNREACHABLE: Final = 1.0e9
#: Vertices are merged when their coordinates agree to this many decimal degrees (~1 cm).
_VERTEX_DECIMALS: Final = 7


class RoadNetworkError(ValueError):
    """A road network file cannot be used (unreadable, no lines, …)."""


def haversine_m(
    lon1: FloatArray | float,
    lat1: FloatArray | float,
    lon2: FloatArray | float,
    lat2: FloatArray | float,
) -> FloatArray:
    """Return great-circle distances in metres, element-wise (NumPy broadcasting)."""
    phi1, phi2 = np.radians(lat1), np.radians(lat2)
    dphi = phi2 - phi1
    dlmb = np.radians(lon2) - np.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(phi1) * np.cos(phi2) * np.sin(dlmb / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def straight_line_matrix(lon: FloatArray, lat: FloatArray, detour_factor: float) -> FloatArray:
    """Return the n × n travel distances (metres) as straight line × ``detour_factor``."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    return haversine_m(lon[:, None], lat[:, None], lon[None, :], lat[None, :]) * detour_factor


class RoadNetwork:
    """A road graph built from line geometries, for shortest-path distances.

    Parameters
    ----------
    lines : sequence of shapely LineString or MultiLineString
        Road centre lines in WGS84 (lon, lat).
    """

    def __init__(self, lines: object) -> None:
        import shapely

        geoms = np.asarray(lines, dtype=object)
        parts = shapely.get_parts(geoms[~shapely.is_missing(geoms)])
        parts = parts[shapely.get_type_id(parts) == 1]  # LineString
        if parts.size == 0:
            raise RoadNetworkError("the road network has no lines")
        coords, line_of = shapely.get_coordinates(parts, return_index=True)
        keys = np.round(coords, _VERTEX_DECIMALS)
        unique, node_of = np.unique(keys, axis=0, return_inverse=True)
        node_of = node_of.ravel()
        same_line = line_of[1:] == line_of[:-1]
        a, b = node_of[:-1][same_line], node_of[1:][same_line]
        length = haversine_m(
            unique[a, 0], unique[a, 1], unique[b, 0], unique[b, 1]
        )  # segment lengths
        keep = a != b
        a, b, length = a[keep], b[keep], length[keep]
        n = unique.shape[0]
        # coo → csr sums duplicate edges; keep the shortest instead by sorting and deduplicating
        order = np.lexsort((length, b, a))
        a, b, length = a[order], b[order], length[order]
        first = np.ones(a.size, dtype=bool)
        first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, length = a[first], b[first], length[first]
        self.graph = coo_matrix((length, (a, b)), shape=(n, n)).tocsr()
        self.nodes: FloatArray = unique
        lat0 = float(np.mean(unique[:, 1]))
        self._scale = np.array([np.cos(np.radians(lat0)), 1.0])
        self._tree = cKDTree(unique * self._scale)

    @classmethod
    def from_file(cls, path: Path, layer: str | None = None) -> RoadNetwork:
        """Read a GeoJSON / GeoPackage / Shapefile of lines (any CRS; turned into WGS84)."""
        import geopandas as gpd

        try:
            frame = gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several kinds for unreadable files
            raise RoadNetworkError(f"cannot read the road network {path}: {exc}") from exc
        if frame.crs is not None and frame.crs.to_epsg() != 4326:
            frame = frame.to_crs(4326)
        return cls(frame.geometry.to_numpy())

    def snap(self, lon: FloatArray, lat: FloatArray) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Return the nearest node of each point and the straight distance to it (metres)."""
        points = np.column_stack([lon, lat]).astype(np.float64)
        _, node = self._tree.query(points * self._scale)
        node = np.asarray(node, dtype=np.int64)
        gap = haversine_m(points[:, 0], points[:, 1], self.nodes[node, 0], self.nodes[node, 1])
        return node, gap

    def distance_matrix(self, lon: FloatArray, lat: FloatArray) -> FloatArray:
        """Return the n × n shortest-path distances (metres) between points, snapped."""
        node, gap = self.snap(np.asarray(lon), np.asarray(lat))
        sources, source_of = np.unique(node, return_inverse=True)
        paths = dijkstra(self.graph, directed=False, indices=sources)
        between = paths[source_of.ravel()][:, node]
        matrix = between + gap[:, None] + gap[None, :]
        matrix[~np.isfinite(matrix)] = UNREACHABLE
        np.fill_diagonal(matrix, 0.0)
        return np.asarray(matrix, dtype=np.float64)

    def path_coordinates(
        self, lon1: float, lat1: float, lon2: float, lat2: float
    ) -> list[tuple[float, float]]:
        """Return the road path between two points as (lon, lat) pairs, ends included."""
        node, _ = self.snap(np.array([lon1, lon2]), np.array([lat1, lat2]))
        _, predecessors = dijkstra(
            self.graph, directed=False, indices=int(node[0]), return_predecessors=True
        )
        chain = [int(node[1])]
        while chain[-1] != node[0] and predecessors[chain[-1]] >= 0:
            chain.append(int(predecessors[chain[-1]]))
        if chain[-1] != node[0]:
            return [(lon1, lat1), (lon2, lat2)]
        inner = [(float(self.nodes[i, 0]), float(self.nodes[i, 1])) for i in reversed(chain)]
        return [(lon1, lat1), *inner, (lon2, lat2)]
