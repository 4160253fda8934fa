"""Area importer: counties, townships, villages and grids.

Reads GeoJSON, GeoPackage or zipped Shapefile, several levels in one file or a flat set of
grids.

Parents are resolved after the whole file is read, so a file may list children before their
parents; a parent may also be an area imported earlier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import Table, select, update

from gridwatch.geo.coords import bd09_to_wgs84, gcj02_to_wgs84
from gridwatch.ingest.base import Field, Importer, Record, Rejection, insert_ignoring_duplicates
from gridwatch.ingest.errors import RowError
from gridwatch.ingest.parsing import is_blank, parse_int, text
from gridwatch.ingest.readers import GEOMETRY_KEY
from gridwatch.storage.models import Area


def _polygonal(geom: BaseGeometry) -> MultiPolygon | None:
    """Return the polygonal part of a (repaired) geometry as a MultiPolygon, or None."""
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    if isinstance(geom, Polygon):
        return MultiPolygon([geom]) if not geom.is_empty else None
    if isinstance(geom, MultiPolygon):
        return geom if not geom.is_empty else None
    parts: list[Polygon] = []
    for part in getattr(geom, "geoms", []):
        if isinstance(part, Polygon) and not part.is_empty:
            parts.append(part)
        elif isinstance(part, MultiPolygon):
            parts.extend(p for p in part.geoms if not p.is_empty)
    return MultiPolygon(parts) if parts else None


class AreaImporter(Importer):
    """Import the area tree (``gridwatch import grids``)."""

    kind = "grids"
    table = cast(Table, Area.__table__)
    key_field = "code"
    key_column = "code"
    formats = frozenset({"vector"})
    fields = (
        Field("code", ("编码", "代码", "区划代码", "网格编码", "行政区划代码", "区划编码"), True),
        Field("name", ("名称", "网格名称", "区划名称", "村名", "name_zh"), True),
        Field("level", ("级别", "层级", "区划级别")),
        Field("parent_code", ("上级编码", "上级代码", "父级编码", "所属编码", "parent")),
        Field("population", ("人口", "常住人口", "户籍人口", "pop")),
    )

    def prepare(self) -> None:
        """Set up the coordinate converter and the list of pending areas."""
        self.pending: list[Record] = []
        self._convert = self._converter()

    def _converter(self) -> Callable[[NDArray[np.float64]], NDArray[np.float64]] | None:
        if self.crs == "wgs84":
            return None
        if self.crs in ("gcj02", "bd09"):
            inverse = gcj02_to_wgs84 if self.crs == "gcj02" else bd09_to_wgs84

            def shift(coords: NDArray[np.float64]) -> NDArray[np.float64]:
                lon, lat = inverse(coords[:, 0], coords[:, 1])
                return np.column_stack([lon, lat])

            return shift
        source = "EPSG:4490" if self.crs == "cgcs2000" else self.crs
        transformer = Transformer.from_crs(CRS.from_user_input(source), 4326, always_xy=True)

        def project(coords: NDArray[np.float64]) -> NDArray[np.float64]:
            x, y = transformer.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([x, y])

        return project

    def parse(self, values: dict[str, Any]) -> dict[str, Any]:
        """Validate one area feature (geometry repaired where possible, converted to WGS84)."""
        code = self.required_text(values, "code")
        name = self.required_text(values, "name")
        level = text(values.get("level")) or "grid"
        parent = text(values.get("parent_code")) or None
        if parent == code:
            raise RowError("parent_code", "an area cannot be its own parent")
        population = None
        if not is_blank(values.get("population")):
            try:
                population = parse_int(values["population"])
            except ValueError as exc:
                raise RowError("population", str(exc)) from None
            if population < 0:
                raise RowError("population", "population cannot be negative")
        geom = values.get(GEOMETRY_KEY)
        multipolygon = None
        if geom is not None and not geom.is_empty:
            if self._convert is not None:
                geom = shapely.transform(geom, self._convert)
            multipolygon = _polygonal(geom)
            if multipolygon is None:
                raise RowError("geometry", f"a {geom.geom_type} is not an area polygon")
            minx, miny, maxx, maxy = multipolygon.bounds
            if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
                raise RowError(
                    "geometry",
                    "coordinates are not longitude/latitude; give the file's system with --crs",
                )
        return {
            "code": code,
            "name": name[:200],
            "level": level[:32],
            "parent_code": parent,
            "population": population,
            "geom": multipolygon,
            "_key": code,
        }

    def write(self, records: list[Record], batch_id: int) -> int:
        """Hold areas back until the whole file is read (parents may come later)."""
        self.pending.extend(records)
        return 0

    def finish(self, batch_id: int, reject: Callable[[Rejection], None]) -> int:
        """Check parents, insert the new areas and link them to their parents."""
        stored = {c: i for c, i in self.session.execute(select(Area.code, Area.id)).all()}
        good = {r.values["code"]: r for r in self.pending}
        changed = True
        while changed:  # a child of a rejected parent is rejected too
            changed = False
            for code, record in list(good.items()):
                parent = record.values["parent_code"]
                if parent and parent not in good and parent not in stored:
                    reject(
                        Rejection(
                            record.row,
                            "parent_code",
                            f"parent area {parent!r} is neither in this file nor imported",
                            record.raw,
                        )
                    )
                    del good[code]
                    changed = True
        rows = [
            {
                "code": r.values["code"],
                "name": r.values["name"],
                "level": r.values["level"],
                "parent_code": r.values["parent_code"],
                "population": r.values["population"],
                "geom": None if r.values["geom"] is None else shapely.to_wkb(r.values["geom"]),
                "batch_id": batch_id,
            }
            for r in good.values()
        ]
        insert_ignoring_duplicates(self.session, self.table, rows)
        ids = {c: i for c, i in self.session.execute(select(Area.code, Area.id)).all()}
        for record in good.values():
            parent = record.values["parent_code"]
            if parent:
                self.session.execute(
                    update(Area)
                    .where(Area.code == record.values["code"])
                    .values(parent_id=ids[parent])
                )
        return len(rows)
