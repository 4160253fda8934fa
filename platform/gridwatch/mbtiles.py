"""Read basemap tiles from an MBTiles file (SQLite; https://github.com/mapbox/mbtiles-spec).

MBTiles stores rows in the TMS scheme, counted from the south, while Leaflet asks for XYZ tiles
counted from the north: row = 2**z - 1 - y.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: Content types by the tile's leading bytes.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only: the app never writes the basemap, and a typo cannot create an empty file.
    return sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)


def read_tile(path: Path, z: int, x: int, y: int) -> bytes | None:
    """Return the tile at XYZ ``z/x/y``, or ``None`` when the file has none there."""
    if z < 0 or z > 30 or not (0 <= x < 2**z and 0 <= y < 2**z):
        return None
    connection = _connect(path)
    try:
        row = connection.execute(
            "SELECT tile_data FROM tiles"
            " WHERE zoom_level = ? AND tile_column = ? AND tile_row = ?",
            (z, x, (1 << z) - 1 - y),
        ).fetchone()
    finally:
        connection.close()
    return None if row is None else bytes(row[0])


def metadata(path: Path) -> dict[str, str]:
    """Return the file's ``metadata`` table (name → value); empty when it has none."""
    connection = _connect(path)
    try:
        return {str(k): str(v) for k, v in connection.execute("SELECT name, value FROM metadata")}
    except sqlite3.Error:
        return {}
    finally:
        connection.close()


def content_type(tile: bytes) -> str:
    """Return the image type of a tile from its first bytes."""
    for signature, kind in _SIGNATURES:
        if tile.startswith(signature):
            return kind
    if tile[:4] == b"RIFF" and tile[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


__all__ = ["content_type", "metadata", "read_tile"]
