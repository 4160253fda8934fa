"""Assign points to grids with a spatial join done once, the same way on every database."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from gridwatch.storage.models import Area


@dataclass
class GridIndex:
    """The leaf areas (grids) with polygons, indexed for point-in-polygon lookups.

    A point on a boundary shared by several grids goes to the grid with the smallest code,
    so the assignment never depends on storage order.
    """

    ids: NDArray[np.int64]
    codes: list[str]
    geoms: NDArray[np.object_]

    def __post_init__(self) -> None:
        self._tree = shapely.STRtree(self.geoms)
        # rank of each grid by code: ties on shared boundaries resolve to the lowest code
        order = sorted(range(len(self.codes)), key=self.codes.__getitem__)
        self._rank = np.empty(len(self.codes), dtype=np.int64)
        self._rank[order] = np.arange(len(self.codes))

    @classmethod
    def from_geometries(cls, items: list[tuple[int, str, BaseGeometry]]) -> GridIndex:
        """Build from ``(area id, code, polygon)`` triples."""
        ids = np.array([i for i, _, _ in items], dtype=np.int64)
        geoms = np.empty(len(items), dtype=object)
        geoms[:] = [g for _, _, g in items]
        return cls(ids, [c for _, c, _ in items], geoms)

    @classmethod
    def load(cls, session: Session) -> GridIndex:
        """Load every area with a polygon that has no child area (the grids)."""
        parent_ids = select(Area.parent_id).where(Area.parent_id.is_not(None))
        rows = session.execute(
            select(Area.id, Area.code, Area.geom).where(
                Area.geom.is_not(None), Area.id.not_in(parent_ids)
            )
        ).all()
        return cls.from_geometries([(r.id, r.code, r.geom) for r in rows])

    def __len__(self) -> int:
        return len(self.codes)

    def assign(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return the area id for each point, or ``-1`` where no grid contains it."""
        result = np.full(len(lon), -1, dtype=np.int64)
        if len(self) == 0 or len(lon) == 0:
            return result
        points = shapely.points(lon, lat)
        point_idx, grid_idx = self._tree.query(points, predicate="intersects")
        if len(point_idx) == 0:
            return result
        order = np.lexsort((self._rank[grid_idx], point_idx))
        point_idx, grid_idx = point_idx[order], grid_idx[order]
        first = np.ones(len(point_idx), dtype=bool)
        first[1:] = point_idx[1:] != point_idx[:-1]
        result[point_idx[first]] = self.ids[grid_idx[first]]
        return result

    def code_of(self) -> dict[int, str]:
        """Return a lookup from area id to code."""
        return dict(zip(self.ids.tolist(), self.codes, strict=True))
