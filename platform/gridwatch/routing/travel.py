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

OpenStreetMap extracts supplied by the user (nothing is downloaded) are read too: an ``.osm``
XML file (also ``.osm.gz`` / ``.osm.bz2``) with the standard library's streaming XML parser,
and an ``.osm.pbf`` file when the optional ``osmium`` package is installed. Only ways tagged
``highway`` become roads (not those being planned, built or abandoned, nor platforms);
consecutive nodes of a way become segments, and ways meet where they share a node, as OSM
draws junctions. One-way tags are ignored: patrols on foot and e-bike may use either
direction, and a detour for a police car is rarely long.
"""

from __future__ import annotations

import bz2
import gzip
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final, cast

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
#: ``highway`` values that are no road a patrol can use (yet, or any more).
NOT_ROADS: Final = frozenset(
    {"proposed", "construction", "abandoned", "disused", "razed", "platform", "no", "planned"}
)


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
        """Read a road file: OSM (``.osm``, ``.osm.gz``, ``.osm.bz2``, ``.osm.pbf``) or lines.

        Any other file is read with GeoPandas as GeoJSON / GeoPackage / Shapefile lines (any
        CRS; turned into WGS84).

        Raises
        ------
        RoadNetworkError
            When the file cannot be read or holds no roads.
        """
        name = Path(path).name.lower()
        if name.endswith(".pbf"):
            return cls(read_osm_pbf(Path(path)))
        if name.endswith((".osm", ".osm.gz", ".osm.bz2", ".osm.xml")):
            return cls(read_osm_xml(Path(path)))
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


# --- OpenStreetMap extracts -----------------------------------------------------------------


def _is_road(tags: dict[str, str]) -> bool:
    highway = tags.get("highway")
    return highway is not None and highway not in NOT_ROADS


def _open_osm(path: Path) -> IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    if name.endswith(".bz2"):
        return cast(IO[bytes], bz2.open(path, "rb"))
    return path.open("rb")


def _way_lines(
    refs: list[int], nodes: dict[int, tuple[float, float]]
) -> Iterator[list[tuple[float, float]]]:
    """Yield the runs of a way whose nodes are in the extract (a clipped way has gaps)."""
    run: list[tuple[float, float]] = []
    for ref in refs:
        where = nodes.get(ref)
        if where is None:
            if len(run) >= 2:
                yield run
            run = []
        else:
            run.append(where)
    if len(run) >= 2:
        yield run


def read_osm_xml(path: Path) -> list[object]:
    """Return the road lines (``highway`` ways) of an OSM XML extract, in WGS84.

    The file is parsed as a stream: nodes are kept as coordinates only, ways are turned
    into lines as they end, so a town's extract needs little memory.

    Raises
    ------
    RoadNetworkError
        When the file is missing, is not OSM XML, or has no road; the sentence names the file
        and, for broken XML, the line and column.
    """
    from shapely.geometry import LineString

    nodes: dict[int, tuple[float, float]] = {}
    lines: list[object] = []
    refs: list[int] = []
    tags: dict[str, str] = {}
    try:
        with _open_osm(path) as handle:
            root_seen = False
            for event, element in ET.iterparse(handle, events=("start", "end")):
                tag = element.tag
                if event == "start":
                    if not root_seen:
                        root_seen = True
                        if tag != "osm":
                            raise RoadNetworkError(
                                f"{path}: not an OpenStreetMap XML file (root element "
                                f"<{tag}>, expected <osm>)"
                            )
                    if tag == "way":
                        refs, tags = [], {}
                    continue
                if tag == "node":
                    nodes[int(element.attrib["id"])] = (
                        float(element.attrib["lon"]),
                        float(element.attrib["lat"]),
                    )
                    element.clear()
                elif tag == "nd":
                    refs.append(int(element.attrib["ref"]))
                elif tag == "tag":
                    tags[element.attrib.get("k", "")] = element.attrib.get("v", "")
                elif tag == "way":
                    if _is_road(tags):
                        lines.extend(LineString(run) for run in _way_lines(refs, nodes))
                    element.clear()
                elif tag == "relation":
                    element.clear()
    except ET.ParseError as exc:
        line, column = exc.position
        raise RoadNetworkError(
            f"{path}: broken OSM XML at line {line}, column {column + 1}: {_reason(exc)}"
        ) from exc
    except (KeyError, ValueError) as exc:
        if isinstance(exc, RoadNetworkError):
            raise
        raise RoadNetworkError(
            f"{path}: an OSM node or way lacks a valid id, ref, lon or lat ({exc})"
        ) from exc
    except (OSError, EOFError) as exc:
        raise RoadNetworkError(f"cannot read the OSM file {path}: {exc}") from exc
    if not lines:
        raise RoadNetworkError(f"{path}: the OSM extract has no highway ways (no roads)")
    return lines


def _reason(exc: ET.ParseError) -> str:
    text = str(exc)
    return text.split(":")[0] if ":" in text else text


def read_osm_pbf(path: Path) -> list[object]:
    """Return the road lines of an OSM PBF extract (needs the optional ``osmium`` package).

    Raises
    ------
    RoadNetworkError
        When ``osmium`` is not installed (the sentence says how to convert the file to
        ``.osm``), or the file cannot be read or has no road.
    """
    try:
        import osmium
    except ImportError as exc:
        raise RoadNetworkError(
            f"{path}: reading .pbf needs the osmium package, which is not installed; "
            "convert the extract to OSM XML (for example `osmium cat in.osm.pbf -o out.osm`) "
            "and pass the .osm file"
        ) from exc
    from shapely.geometry import LineString

    lines: list[object] = []
    try:
        processor = (
            osmium.FileProcessor(str(path))
            .with_locations()
            .with_filter(osmium.filter.KeyFilter("highway"))
        )
        for obj in processor:
            if not isinstance(obj, osmium.osm.Way) or not _is_road(dict(obj.tags)):
                continue
            run: list[tuple[float, float]] = []
            for node in obj.nodes:
                location = node.location
                if location.valid():
                    run.append((location.lon, location.lat))
                else:
                    if len(run) >= 2:
                        lines.append(LineString(run))
                    run = []
            if len(run) >= 2:
                lines.append(LineString(run))
    except RuntimeError as exc:  # osmium reports unreadable files as RuntimeError
        raise RoadNetworkError(f"cannot read the OSM file {path}: {exc}") from exc
    if not lines:
        raise RoadNetworkError(f"{path}: the OSM extract has no highway ways (no roads)")
    return lines
