"""Readers that turn input files into numbered rows, read in chunks.

Formats: CSV, XLSX, vector layers (GeoJSON, GeoPackage, zipped Shapefile) and GPX. Each row
is numbered as a person would find it in the file.

Row numbers: CSV and XLSX count the header as row 1 (the first data row is row 2, as in a
spreadsheet); vector layers and GPX count features or track points from 1.
"""

from __future__ import annotations

import codecs
import csv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gridwatch.ingest.errors import ImportFileError

#: Key under which vector readers hand over a row's geometry (a Shapely geometry or None).
GEOMETRY_KEY = "__geometry__"
#: Key under which readers report a row that is broken as a whole (e.g. too many fields).
ROW_ERROR_KEY = "__row_error__"

Row = tuple[int, dict[str, Any]]

TABLE_SUFFIXES = {".csv", ".txt", ".tsv", ".xlsx", ".xlsm"}
VECTOR_SUFFIXES = {".geojson", ".json", ".gpkg", ".shp", ".zip"}
GPX_SUFFIXES = {".gpx"}


@dataclass
class Source:
    """An opened input file: its column names and a way to read its rows in chunks."""

    path: Path
    columns: list[str]
    format: str
    encoding: str | None = None
    crs: str | None = None
    _rows: Iterator[Row] | None = field(default=None, repr=False)

    def chunks(self, size: int) -> Iterator[list[Row]]:
        """Yield lists of at most ``size`` numbered rows."""
        assert self._rows is not None
        chunk: list[Row] = []
        for row in self._rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def detect_encoding(path: Path, sample_size: int = 1 << 20) -> str:
    """Guess a text file's encoding: UTF-8 (with or without BOM), else GB18030 (⊇ GBK).

    Chinese Excel saves CSV as GBK; GB18030 decodes every GBK file, so it is the fallback.
    Only when neither fits does charset-normalizer get a say.
    """
    with open(path, "rb") as fh:
        sample = fh.read(sample_size)
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for encoding in ("utf-8", "gb18030"):
        try:
            # final=False: the sample may end inside a multi-byte character.
            codecs.getincrementaldecoder(encoding)().decode(sample, final=False)
            return encoding
        except UnicodeDecodeError:
            continue
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise ImportFileError(
            f"{path.name}: cannot tell the text encoding; save it as UTF-8 or GBK, "
            "or pass --encoding"
        )
    return str(best.encoding)


def _normalise_encoding(encoding: str | None, path: Path) -> str:
    if not encoding or encoding.lower() == "auto":
        return detect_encoding(path)
    enc = encoding.lower().replace("_", "-")
    if enc in ("utf8", "utf-8"):
        return "utf-8-sig"  # tolerate a BOM when the user says UTF-8
    try:
        codecs.lookup(enc)
    except LookupError as exc:
        raise ImportFileError(f"unknown encoding {encoding!r}; use utf-8, gbk or gb18030") from exc
    return enc


def _open_csv(path: Path, encoding: str | None) -> Source:
    enc = _normalise_encoding(encoding, path)
    try:
        with open(path, encoding=enc, errors="strict", newline="") as fh:
            head = fh.read(64 * 1024)
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path.name}: the file is not valid {enc}; save it as UTF-8 or GBK, "
            "or pass the right --encoding"
        ) from exc
    first_line = head.splitlines()[0] if head.splitlines() else ""
    delimiter = max([",", "\t", ";", "|"], key=first_line.count)
    if not first_line.strip():
        raise ImportFileError(f"{path.name}: the file is empty or has no header row")
    header = next(csv.reader([first_line], delimiter=delimiter))
    columns = [h.strip().lstrip("\ufeff") for h in header]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ImportFileError(f"{path.name}: the header repeats columns {dupes}")

    def rows() -> Iterator[Row]:
        with open(path, encoding=enc, errors="strict", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            record = 1
            try:
                next(reader, None)
                for values in reader:
                    record += 1
                    if not values or all(not v.strip() for v in values):
                        continue
                    row: dict[str, Any] = dict(zip(columns, values, strict=False))
                    if len(values) > len(columns):
                        row[ROW_ERROR_KEY] = (
                            f"the row has {len(values)} fields but the header has {len(columns)}"
                        )
                    yield record, row
            except UnicodeDecodeError as exc:
                raise ImportFileError(
                    f"{path.name}: row {record + 1} is not valid {enc}; save the file as "
                    "UTF-8 or GBK, or pass the right --encoding"
                ) from exc
            except csv.Error as exc:
                raise ImportFileError(f"{path.name}: row {record + 1}: {exc}") from exc

    return Source(path, columns, "csv", encoding=enc, _rows=rows())


def _cell(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return value


def _open_xlsx(path: Path, layer: str | None) -> Source:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise ImportFileError(f"{path.name}: not a readable XLSX workbook ({exc})") from exc
    if layer and layer not in workbook.sheetnames:
        raise ImportFileError(f"{path.name}: no sheet named {layer!r} (has {workbook.sheetnames})")
    sheet = workbook[layer] if layer else workbook.worksheets[0]
    values = sheet.iter_rows(values_only=True)
    header_row = 0
    header: list[str] = []
    for cells in values:
        header_row += 1
        if any(c is not None and str(c).strip() for c in cells):
            header = ["" if c is None else str(c).strip() for c in cells]
            break
    while header and not header[-1]:
        header.pop()
    if not header:
        workbook.close()
        raise ImportFileError(f"{path.name}: the sheet is empty or has no header row")

    def rows() -> Iterator[Row]:
        try:
            for number, cells in enumerate(values, start=header_row + 1):
                if all(c is None or (isinstance(c, str) and not c.strip()) for c in cells):
                    continue
                row = {h: _cell(c) for h, c in zip(header, cells, strict=False) if h}
                yield number, row
        finally:
            workbook.close()

    return Source(path, [h for h in header if h], "xlsx", _rows=rows())


def _vector_path(path: Path) -> str:
    if path.suffix.lower() != ".zip":
        return str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            shapefiles = [n for n in archive.namelist() if n.lower().endswith(".shp")]
    except zipfile.BadZipFile as exc:
        raise ImportFileError(f"{path.name}: not a readable ZIP archive") from exc
    if not shapefiles:
        raise ImportFileError(f"{path.name}: the ZIP archive holds no .shp file")
    return f"/vsizip/{path.resolve()}/{shapefiles[0]}"


def _open_vector(path: Path, layer: str | None, encoding: str | None) -> Source:
    import pyogrio

    target = _vector_path(path)
    kwargs: dict[str, Any] = {}
    if layer:
        kwargs["layer"] = layer
    if encoding and encoding.lower() != "auto":
        kwargs["encoding"] = encoding
    try:
        frame = pyogrio.read_dataframe(target, **kwargs)
    except Exception as exc:  # pyogrio wraps GDAL's many failure modes
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFileError(f"{path.name}: cannot read as a GIS layer ({message})") from exc
    crs = frame.crs.to_string() if frame.crs is not None else None
    columns = [str(c) for c in frame.columns if c != "geometry"]
    geoms = list(frame.geometry) if "geometry" in frame.columns else [None] * len(frame)
    records = frame.drop(columns=["geometry"], errors="ignore").to_dict("records")

    def rows() -> Iterator[Row]:
        for number, (record, geom) in enumerate(zip(records, geoms, strict=True), start=1):
            row = {str(k): (None if _is_missing(v) else _cell(v)) for k, v in record.items()}
            row[GEOMETRY_KEY] = geom
            yield number, row

    return Source(path, columns, "vector", crs=crs, _rows=rows())


def _is_missing(value: Any) -> bool:
    try:
        return bool(value != value)  # NaN / NaT
    except (TypeError, ValueError):
        return False


def _open_gpx(path: Path) -> Source:
    import gpxpy
    import gpxpy.gpx

    try:
        with open(path, encoding="utf-8", errors="strict") as fh:
            gpx = gpxpy.parse(fh)
    except (gpxpy.gpx.GPXException, UnicodeDecodeError, ValueError) as exc:
        raise ImportFileError(f"{path.name}: not a readable GPX file ({exc})") from exc

    def rows() -> Iterator[Row]:
        number = 0
        for t_index, track in enumerate(gpx.tracks, start=1):
            for segment in track.segments:
                for point in segment.points:
                    number += 1
                    ts = point.time
                    if isinstance(ts, datetime) and ts.tzinfo is None:
                        ts = ts.replace(tzinfo=UTC)  # GPX times are UTC by definition
                    yield (
                        number,
                        {
                            "team_code": track.name or "",
                            "track": f"{t_index}:{track.name or ''}",
                            "ts": ts,
                            "lon": point.longitude,
                            "lat": point.latitude,
                        },
                    )
        for w_index, waypoint in enumerate(gpx.waypoints, start=1):
            number += 1
            yield (
                number,
                {
                    "team_code": waypoint.name or "",
                    "track": f"w{w_index}",
                    "ts": waypoint.time,
                    "lon": waypoint.longitude,
                    "lat": waypoint.latitude,
                },
            )

    return Source(path, ["team_code", "track", "ts", "lon", "lat"], "gpx", _rows=rows())


def open_source(path: Path, encoding: str | None = None, layer: str | None = None) -> Source:
    """Open any supported file by its suffix.

    Raises
    ------
    ImportFileError
        When the file is missing, of an unsupported kind, or unreadable as a whole.
    """
    path = Path(path)
    if not path.exists():
        raise ImportFileError(f"{path}: no such file")
    if not path.is_file():
        raise ImportFileError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix in {".csv", ".txt", ".tsv"}:
        return _open_csv(path, encoding)
    if suffix in {".xlsx", ".xlsm"}:
        return _open_xlsx(path, layer)
    if suffix in VECTOR_SUFFIXES:
        return _open_vector(path, layer, encoding)
    if suffix in GPX_SUFFIXES:
        return _open_gpx(path)
    if suffix == ".xls":
        raise ImportFileError(f"{path.name}: old .xls workbooks are not read; save as .xlsx")
    raise ImportFileError(
        f"{path.name}: unsupported file type {suffix or '(none)'}; use CSV, XLSX, GeoJSON, "
        "GeoPackage, zipped Shapefile or GPX"
    )


__all__ = ["GEOMETRY_KEY", "ROW_ERROR_KEY", "Source", "detect_encoding", "open_source"]
