"""The administrative tree as plain data, and who may see which part of it.

:func:`jurisdiction_of` is the one place that decides a user's reach: every page, export and
API answer filters through the area ids it returns, and an area outside them is treated as if
it did not exist (the web app answers 404).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, or_, select

from gridwatch.storage.db import session_scope
from gridwatch.storage.models import Area, ImportBatch, Station, StationTownship

#: Decimal places of published coordinates (about 0.1 m): enough for any map, and stable.
COORD_DIGITS = 6


@dataclass(frozen=True)
class AreaNode:
    """One area of the tree, without its geometry."""

    id: int
    code: str
    name: str
    level: str
    parent_id: int | None
    population: int | None


@dataclass
class AreaTree:
    """Every area by id and code, with each area's children (cheap: no geometries)."""

    nodes: dict[int, AreaNode]
    by_code: dict[str, AreaNode] = field(init=False)
    children: dict[int | None, list[int]] = field(init=False)
    #: Values derived from this tree alone (e.g. a county user's jurisdiction), kept with it
    #: so they go when a changed tree replaces it.
    derived: dict[Any, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.derived = {}
        self.by_code = {node.code: node for node in self.nodes.values()}
        self.children = {}
        for node in sorted(self.nodes.values(), key=lambda n: n.code):
            parent = node.parent_id if node.parent_id in self.nodes else None
            self.children.setdefault(parent, []).append(node.id)

    def subtree(self, area_id: int) -> set[int]:
        """Return ``area_id`` and every area below it."""
        found: set[int] = set()
        stack = [area_id]
        while stack:
            current = stack.pop()
            if current in found:
                continue
            found.add(current)
            stack.extend(self.children.get(current, []))
        return found

    def ancestors(self, area_id: int) -> list[AreaNode]:
        """Return the areas above ``area_id``, from the top down (itself excluded)."""
        chain: list[AreaNode] = []
        seen = {area_id}
        current = self.nodes[area_id].parent_id
        while current is not None and current in self.nodes and current not in seen:
            seen.add(current)
            chain.append(self.nodes[current])
            current = self.nodes[current].parent_id
        return chain[::-1]

    def child_nodes(self, area_id: int | None) -> list[AreaNode]:
        """Return the direct children of an area (``None``: the top-level areas), by code."""
        return [self.nodes[i] for i in self.children.get(area_id, [])]


def load_tree(engine: Engine) -> AreaTree:
    """Read the whole administrative tree (ids, codes, names, levels, parents)."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(Area.id, Area.code, Area.name, Area.level, Area.parent_id, Area.population)
        ).all()
    return AreaTree({row.id: AreaNode(*row) for row in rows})


#: Import kinds that write the ``areas`` table.
AREA_IMPORT_KINDS = ("grids",)


def tree_signature(engine: Engine) -> tuple[Any, ...]:
    """Return a cheap fingerprint of the administrative tree (one row, no geometry).

    It changes whenever areas are added or removed (count, newest id) and whenever an import
    of areas finishes (the newest ``grids`` batch and its ``finished_at``: a file that adds
    no row may still link areas to parents), and the only writer of areas is that importer.
    A cache of :func:`load_tree` keyed by it never serves a tree older than the last
    finished grids import; read the signature *before* the tree, so a change between the two
    makes the next check reload. Every part is answered from an index (about 0.1 ms on
    SQLite; ``max(areas.batch_id)`` would scan the geometries).
    """
    with session_scope(engine) as session:
        row = session.execute(select(*tree_signature_columns())).one()
    return tuple(row)


def tree_signature_columns() -> tuple[Any, ...]:
    """Return the scalar subqueries whose values make :func:`tree_signature`.

    For a caller that asks them in the same round trip as other things.
    """
    # Equalities rather than IN: an IN list is expanded again on every execution.
    area_import = or_(*(ImportBatch.kind == kind for kind in AREA_IMPORT_KINDS))
    return (
        select(func.count()).select_from(Area).scalar_subquery(),
        select(func.max(Area.id)).scalar_subquery(),
        select(func.max(ImportBatch.id)).where(area_import).scalar_subquery(),
        select(func.max(ImportBatch.finished_at)).where(area_import).scalar_subquery(),
    )


class TreeCache:
    """The administrative tree of one process, reloaded only when its signature changes.

    Every request calls :meth:`get` once (one one-row query) instead of reading the 5,000+
    areas; the tree returned must be treated as read-only, since requests share it.
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple[Any, ...], AreaTree] | None = None
        self.loads = 0

    def get(self, engine: Engine) -> AreaTree:
        """Return the current tree of ``engine``'s database."""
        signature = tree_signature(engine)
        entry = self._entry  # one read: another thread may replace it meanwhile
        if entry is not None and entry[0] == signature:
            return entry[1]
        tree = load_tree(engine)
        self.loads += 1
        self._entry = (signature, tree)
        return tree

    def clear(self) -> None:
        """Forget the cached tree."""
        self._entry = None


@dataclass(frozen=True)
class Jurisdiction:
    """The part of the tree a user may see.

    Attributes
    ----------
    root_ids : tuple of int
        The highest areas the user answers for (a county, a station's townships, a
        township), by code; their subtrees make up ``area_ids``.
    area_ids : frozenset of int
        Every area the user may see.
    """

    root_ids: tuple[int, ...]
    area_ids: frozenset[int]

    def __contains__(self, area_id: object) -> bool:
        return area_id in self.area_ids


def jurisdiction_of(
    engine: Engine,
    role: str,
    area_id: int | None,
    station_id: int | None,
    tree: AreaTree | None = None,
) -> Jurisdiction:
    """Return the areas a user of ``role`` tied to ``area_id`` / ``station_id`` may see.

    An admin without an area sees the whole tree; a station user sees the subtrees of the
    townships their station covers (``StationTownship``); every other user sees the subtree
    of their own area. A user whose area or station is gone sees nothing.
    """
    tree = tree or load_tree(engine)
    if role == "station":
        if station_id is None:
            return Jurisdiction((), frozenset())
        with session_scope(engine) as session:
            roots = sorted(
                session.scalars(
                    select(StationTownship.area_id).where(StationTownship.station_id == station_id)
                ),
                key=lambda i: tree.nodes[i].code if i in tree.nodes else "",
            )
    elif area_id is not None:
        roots = [area_id]
    elif role == "admin":
        roots = tree.children.get(None, [])
    else:
        roots = []
    roots = [r for r in roots if r in tree.nodes]
    visible: set[int] = set()
    for root in roots:
        visible |= tree.subtree(root)
    return Jurisdiction(tuple(roots), frozenset(visible))


def station_name(engine: Engine, station_id: int | None) -> str | None:
    """Return a police station's name (``None`` when there is none)."""
    if station_id is None:
        return None
    with session_scope(engine) as session:
        return session.scalar(select(Station.name).where(Station.id == station_id))


def _round(value: float) -> float:
    return round(float(value), COORD_DIGITS)


def area_records(
    engine: Engine,
    area_ids: Iterable[int] | None = None,
    level: str | None = None,
    code: str | None = None,
) -> list[dict[str, Any]]:
    """Return areas as API objects, by code.

    Each object has ``code, name, level, parent_code, population``, ``bbox`` ``[minx, miny,
    maxx, maxy]`` and ``centroid`` ``{lon, lat}`` in WGS84 (both ``None`` without geometry).

    Parameters
    ----------
    engine : sqlalchemy.Engine
    area_ids : iterable of int, optional
        Only these areas (the caller's jurisdiction); all when ``None``.
    level : str, optional
        Only areas of this level.
    code : str, optional
        Only the area with this code.
    """
    wanted = None if area_ids is None else set(area_ids)
    parent = Area.__table__.alias("parent")
    query = (
        select(
            Area.id, Area.code, Area.name, Area.level, parent.c.code, Area.population, Area.geom
        )
        .outerjoin(parent, Area.parent_id == parent.c.id)
        .order_by(Area.code)
    )
    if level is not None:
        query = query.where(Area.level == level)
    if code is not None:
        query = query.where(Area.code == code)
    out = []
    with session_scope(engine) as session:
        for area_id, code, name, area_level, parent_code, population, geom in session.execute(
            query
        ):
            if wanted is not None and area_id not in wanted:
                continue
            bbox = centroid = None
            if geom is not None and not geom.is_empty:
                bbox = [_round(v) for v in geom.bounds]
                point = geom.centroid
                centroid = {"lon": _round(point.x), "lat": _round(point.y)}
            out.append(
                {
                    "code": code,
                    "name": name,
                    "level": area_level,
                    "parent_code": parent_code,
                    "population": population,
                    "bbox": bbox,
                    "centroid": centroid,
                }
            )
    return out


__all__ = [
    "AREA_IMPORT_KINDS",
    "AreaNode",
    "AreaTree",
    "Jurisdiction",
    "TreeCache",
    "area_records",
    "jurisdiction_of",
    "load_tree",
    "station_name",
    "tree_signature",
    "tree_signature_columns",
]
