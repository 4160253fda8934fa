"""Columnar storage of a run's results: metric blocks and run parts as Arrow IPC payloads.

A block holds the metrics of every area of one level in one period; a part holds one
township task's intermediate counts or a county-wide layer. Both are small pandas frames
serialised with Arrow (fast, typed, no pickling: a payload read from the database can never
run code), so a run writes a few thousand rows instead of a row per area and period.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Integer, Table, delete, insert, literal, select, tuple_
from sqlalchemy.orm import Session

from gridwatch.storage.models import MetricBlock, RunPart

BLOCKS = cast(Table, MetricBlock.__table__)
PARTS = cast(Table, RunPart.__table__)
#: Unit name of the parts that belong to the whole county rather than one township.
COUNTY_UNIT = "_county"
#: Payloads are an uncompressed Arrow stream compressed as a whole with zstd (several times
#: faster than Arrow's per-column compression for frames of many small columns).
_CODEC = pa.Codec("zstd", compression_level=1)
_MAGIC = b"GWZ1"


def encode(frame: pd.DataFrame) -> bytes:
    """Serialise a frame (plain columns, no index) to a compressed Arrow stream.

    Missing values (``None`` or ``NaN``) in object columns become Arrow nulls; categorical
    columns are stored as dictionary-encoded strings (read back as categoricals).
    """
    arrays = {}
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            categories = pa.array(
                values.cat.categories.astype(object).to_numpy(), type=pa.string()
            )
            arrays[str(column)] = pa.DictionaryArray.from_arrays(
                pa.array(values.cat.codes.to_numpy(), mask=values.isna().to_numpy()), categories
            )
            continue
        arrays[str(column)] = pa.array(values.to_numpy(), from_pandas=True)
    return _write_stream(pa.table(arrays) if arrays else pa.table({}))


def decode(payload: bytes, area_ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Read a frame written by :func:`encode` or sliced by :func:`block_rows`.

    With ``area_ids``, only the rows of those areas are read into pandas (the rest of the
    payload is never converted, which is most of the cost of reading a large part).
    """
    if payload[:4] != _MAGIC:
        raise ValueError("not a GridWatch block payload")
    size = int.from_bytes(payload[4:12], "little")
    raw = _CODEC.decompress(payload[12:], decompressed_size=size, asbytes=True)
    with pa.ipc.open_stream(raw) as reader:
        table = reader.read_all()
    if area_ids is not None:
        wanted = pa.array(np.asarray(area_ids, dtype=np.int64))
        table = table.filter(pc.is_in(table.column("area_id").cast(pa.int64()), wanted))
    return cast(pd.DataFrame, table.to_pandas())


def _write_stream(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    raw = sink.getvalue()
    return _MAGIC + len(raw).to_bytes(8, "little") + _CODEC.compress(raw, asbytes=True)


def block_rows(
    run_id: int,
    level: str,
    kind: str,
    frame: pd.DataFrame,
    labels: np.ndarray | None = None,
) -> Iterable[dict[str, Any]]:
    """Split ``frame`` (``area_id``, ``period`` and metric columns) into one block per period.

    With ``labels``, ``period`` holds integer codes into ``labels`` (cheaper to sort and
    group than strings). The frame is converted to Arrow once and sliced per period (slices
    share memory).
    """
    if frame.empty:
        return
    if labels is None:
        labels, codes = np.unique(frame["period"].astype(str).to_numpy(), return_inverse=True)
    else:
        codes = frame["period"].to_numpy(dtype=np.int64)
    areas = frame["area_id"].to_numpy(dtype=np.int64)
    order = np.lexsort((areas, codes))
    codes = codes[order]
    columns = [c for c in frame.columns if c != "period"]
    table = pa.table({c: pa.array(frame[c].to_numpy()[order], from_pandas=True) for c in columns})
    cuts = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], cuts]).astype(int)
    ends = np.concatenate([cuts, [len(frame)]]).astype(int)
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield {
            "run_id": run_id,
            "level": level,
            "period_kind": kind,
            "period": str(labels[codes[start]]),
            "rows": end - start,
            "payload": _write_stream(table.slice(start, end - start)),
        }


def write_blocks(session: Session, rows: Iterable[dict[str, Any]], chunk: int = 500) -> int:
    """Insert block rows in chunks; return how many were written."""
    written = 0
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= chunk:
            session.execute(insert(BLOCKS), batch)
            written += len(batch)
            batch = []
    if batch:
        session.execute(insert(BLOCKS), batch)
        written += len(batch)
    return written


def read_block(session: Session, run_id: int, level: str, period: str) -> pd.DataFrame | None:
    """Return one block as a frame indexed by area id, or ``None`` if the run has none."""
    payload = session.scalar(
        select(MetricBlock.payload).where(
            MetricBlock.run_id == run_id, MetricBlock.level == level, MetricBlock.period == period
        )
    )
    if payload is None:
        return None
    key = (len(payload), hash(payload))
    frame = _DECODED.get(key)
    if frame is None:
        frame = decode(payload).set_index("area_id")
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = frame
    return frame.copy(deep=False)  # a caller adding columns must not change the kept one


#: Decoded blocks, keyed by their payload's length and hash (a payload never changes once a
#: run is written, and the key holds across databases whose run ids repeat): readers of the
#: same periods — the API, pages, the screen — skip decoding.
_DECODED: dict[tuple[int, int], pd.DataFrame] = {}
_DECODED_MAX = 128


def block_keys(session: Session, run_id: int) -> set[tuple[str, str]]:
    """Return the (level, period) of every block of a run."""
    return {
        (level, period)
        for level, period in session.execute(
            select(MetricBlock.level, MetricBlock.period).where(MetricBlock.run_id == run_id)
        )
    }


def copy_blocks(
    session: Session, source_run: int, target_run: int, skip: set[tuple[str, str]]
) -> int:
    """Copy a run's blocks into another run inside the database, except the ``skip`` keys."""
    keys = block_keys(session, source_run) - skip
    copied = 0
    ordered = sorted(keys)
    for start in range(0, len(ordered), 400):
        chunk = ordered[start : start + 400]
        source = select(
            literal(target_run, Integer),
            BLOCKS.c.level,
            BLOCKS.c.period,
            BLOCKS.c.period_kind,
            BLOCKS.c.rows,
            BLOCKS.c.payload,
        ).where(
            BLOCKS.c.run_id == source_run,
            tuple_(BLOCKS.c.level, BLOCKS.c.period).in_(chunk),
        )
        session.execute(
            insert(BLOCKS).from_select(
                ["run_id", "level", "period", "period_kind", "rows", "payload"], source
            )
        )
        copied += len(chunk)
    return copied


# -- run parts -----------------------------------------------------------------------------


def write_parts(session: Session, run_id: int, unit: str, parts: dict[str, pd.DataFrame]) -> None:
    """Replace the named parts of one unit of a run (a repeated task overwrites its own)."""
    session.execute(
        delete(RunPart).where(
            RunPart.run_id == run_id, RunPart.unit == unit, RunPart.name.in_(list(parts))
        )
    )
    rows = [
        {"run_id": run_id, "unit": unit, "name": name, "payload": encode(frame)}
        for name, frame in parts.items()
    ]
    if rows:
        session.execute(insert(PARTS), rows)


def read_parts(
    session: Session, run_id: int, name: str, units: Sequence[str] | None = None
) -> pd.DataFrame:
    """Concatenate the ``name`` parts of a run's units (all units unless ``units`` is given)."""
    stmt = select(RunPart.payload).where(RunPart.run_id == run_id, RunPart.name == name)
    if units is not None:
        stmt = stmt.where(RunPart.unit.in_(list(units)))
    return concat_parts([decode(p) for p in session.scalars(stmt)])


def read_unit_parts(
    session: Session, run_id: int, name: str, units: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """Return the ``name`` part of each of ``units`` (units without one are left out)."""
    out = {}
    for start in range(0, len(units), 400):
        stmt = select(RunPart.unit, RunPart.payload).where(
            RunPart.run_id == run_id,
            RunPart.name == name,
            RunPart.unit.in_(list(units[start : start + 400])),
        )
        out.update({unit: decode(payload) for unit, payload in session.execute(stmt)})
    return out


def concat_parts(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate part frames, keeping categorical columns categorical."""
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame()
    # Empty frames add nothing but can carry categories of another dtype.
    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0]
    # Give categorical columns one set of categories, so that they stay categorical.
    for column in frames[0].columns:
        if all(column in f and isinstance(f[column].dtype, pd.CategoricalDtype) for f in frames):
            union = pd.api.types.union_categoricals([f[column] for f in frames]).categories
            for f in frames:
                f[column] = f[column].cat.set_categories(union)
    return pd.concat(frames, ignore_index=True)


def part_units(session: Session, run_id: int) -> set[str]:
    """Return the units that wrote parts in a run."""
    return set(session.scalars(select(RunPart.unit).where(RunPart.run_id == run_id).distinct()))


def copy_parts(
    session: Session,
    source_run: int,
    target_run: int,
    units: Sequence[str],
    names: Sequence[str] | None = None,
) -> None:
    """Copy the parts of ``units`` (only ``names``, if given) to another run in the database."""
    wanted = list(units)
    for start in range(0, len(wanted), 400):
        source = select(
            literal(target_run, Integer),
            PARTS.c.unit,
            PARTS.c.name,
            PARTS.c.payload,
        ).where(PARTS.c.run_id == source_run, PARTS.c.unit.in_(wanted[start : start + 400]))
        if names is not None:
            source = source.where(PARTS.c.name.in_(list(names)))
        session.execute(insert(PARTS).from_select(["run_id", "unit", "name", "payload"], source))


def read_named_parts(
    session: Session,
    run_id: int,
    units: Sequence[str],
    names: Sequence[str],
    area_ids: dict[str, Sequence[int]] | None = None,
) -> dict[str, dict[str, pd.DataFrame]]:
    """Return several named parts of several units in one query, unit → name → frame.

    ``area_ids`` maps part names to the areas whose rows are wanted (all rows otherwise).
    Absent parts are left out.
    """
    wanted = area_ids or {}
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for start in range(0, len(units), 400):
        stmt = select(RunPart.unit, RunPart.name, RunPart.payload).where(
            RunPart.run_id == run_id,
            RunPart.unit.in_(list(units[start : start + 400])),
            RunPart.name.in_(list(names)),
        )
        for unit, name, payload in session.execute(stmt):
            out.setdefault(unit, {})[name] = decode(payload, wanted.get(name))
    return out


def copy_named_part(
    session: Session, source_run: int, target_run: int, unit: str, name: str
) -> None:
    """Copy one part from one run to another inside the database (replacing the target's)."""
    session.execute(
        delete(RunPart).where(
            RunPart.run_id == target_run, RunPart.unit == unit, RunPart.name == name
        )
    )
    source = select(
        literal(target_run, Integer), PARTS.c.unit, PARTS.c.name, PARTS.c.payload
    ).where(PARTS.c.run_id == source_run, PARTS.c.unit == unit, PARTS.c.name == name)
    session.execute(insert(PARTS).from_select(["run_id", "unit", "name", "payload"], source))


def part_names(session: Session, run_id: int, units: Sequence[str]) -> dict[str, set[str]]:
    """Return the names of the parts each of ``units`` has in a run (without reading them)."""
    out: dict[str, set[str]] = {}
    for start in range(0, len(units), 400):
        stmt = select(RunPart.unit, RunPart.name).where(
            RunPart.run_id == run_id, RunPart.unit.in_(list(units[start : start + 400]))
        )
        for unit, name in session.execute(stmt):
            out.setdefault(unit, set()).add(name)
    return out
