"""Assign points to grids with a spatial join done once, the same way on every database."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from gridwatch.geo.locate import RasterLocator, exact_join
from gridwatch.storage.models import Area
from gridwatch.storage.types import wkb_of

#: The raster locator is built once this many points per grid have been assigned: its build
#: costs about as much as an exact join of 20 points per grid, so small lookups never pay it
#: and large ones pay at most twice the best case.
RASTER_AFTER_POINTS_PER_GRID = 20


@dataclass
class GridIndex:
    """The leaf areas (grids) with polygons, indexed for point-in-polygon lookups.

    A point on a boundary shared by several grids goes to the grid with the smallest code,
    so the assignment never depends on storage order. Lookups go through a
    :class:`~gridwatch.geo.locate.RasterLocator` (same answers, much faster), built on first
    use once enough points have been assigned.
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
        self._locator: RasterLocator | None = None
        self._points_assigned = 0

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
            select(Area.id, Area.code, wkb_of(Area.__table__.c.geom)).where(
                Area.geom.is_not(None), Area.id.not_in(parent_ids)
            )
        ).all()
        geoms = shapely.from_wkb([bytes(r[2]) for r in rows]) if rows else []
        return cls.from_geometries([(r[0], r[1], g) for r, g in zip(rows, geoms, strict=True)])

    def __len__(self) -> int:
        return len(self.codes)

    def assign(self, lon: NDArray[np.float64], lat: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return the area id for each point, or ``-1`` where no grid contains it."""
        if len(self) == 0 or len(lon) == 0:
            return np.full(len(lon), -1, dtype=np.int64)
        if self._locator is None:
            self._points_assigned += len(lon)
            if self._points_assigned < RASTER_AFTER_POINTS_PER_GRID * len(self):
                return self.assign_exact(lon, lat)
            self._locator = RasterLocator(self.ids, self.codes, self.geoms)
        return self._locator.assign(lon, lat)

    def assign_exact(
        self, lon: NDArray[np.float64], lat: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Answer like :meth:`assign` with an STRtree query of every point (no raster)."""
        return exact_join(
            self._tree,
            self._rank,
            self.ids,
            np.asarray(lon, dtype=np.float64),
            np.asarray(lat, dtype=np.float64),
        )

    def code_of(self) -> dict[int, str]:
        """Return a lookup from area id to code."""
        return dict(zip(self.ids.tolist(), self.codes, strict=True))
