"""Bulk import of calls into the store: Weave JSON Lines and canonical Parquet.

* JSON Lines (``.jsonl``, ``.ndjson``, optionally gzip'd): one Weave call per line. A line
  with ``ended_at`` is a complete call and replaces what is stored; a line without it is a
  start and leaves a stored end alone.
* Parquet: rows in :data:`engine.schema.CALL_SCHEMA` (JSON columns as text; missing optional
  columns read as null), each a complete call.

Files are streamed in batches, one store transaction each, so memory stays flat and a
re-run (everything is an upsert) is idempotent.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl
import pyarrow.parquet as pq

from engine import schema as s
from engine.errors import InputDataError
from engine.refs import input_refs, output_refs
from service.parts import COMPLETE, PART_SCHEMA, call_part, parts_frame
from service.store import CallStore

BATCH_ROWS = 10_000
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
SAMPLE_PROJECT = "demo/agents"
Progress = Callable[[int], Any]


@dataclass
class ImportStats:
    """What one import wrote."""

    files: int = 0
    rows: int = 0
    batches: int = 0


def import_files(
    store: CallStore,
    paths: list[Path],
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[Path, int], Progress] | None = None,
) -> ImportStats:
    """Import each file (format by suffix); ``progress(path, total)`` makes a per-file
    callback that is told how many units (bytes or rows) were consumed."""
    stats = ImportStats()
    for path in paths:
        path = Path(path)
        if path.suffix == ".parquet":
            total = pq.ParquetFile(path).metadata.num_rows
            batches = parquet_batches(path, batch_rows)
        else:
            total = path.stat().st_size
            batches = jsonl_batches(path, batch_rows)
        tick = progress(path, total) if progress else None
        for frame, consumed in batches:
            store.write_parts(frame)
            stats.rows += frame.height
            stats.batches += 1
            if tick:
                tick(consumed)
        stats.files += 1
    return stats


def seed_sample(store: CallStore, sample_dir: Path = SAMPLE_DIR) -> int:
    """Import the sample traces when the store holds no calls; returns rows imported."""
    if store.stats()["calls"]:
        return 0
    files = sorted(p for p in Path(sample_dir).iterdir() if _importable(p))
    return import_files(store, files).rows


def _importable(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith((".jsonl", ".ndjson", ".parquet"))


# --- JSON Lines ----------------------------------------------------------------------------
def _open(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(text stream to read lines from, raw file whose position measures progress)."""
    raw = path.open("rb")
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw), raw
    raw.seek(0)
    return raw, raw


def _datetime(value: Any, where: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            pass
    raise InputDataError(f"{where}: not an ISO 8601 datetime: {value!r}")


def jsonl_part(call: Any, where: str) -> dict[str, Any]:
    """The part row of one JSON Lines call (see the module docstring)."""
    if not isinstance(call, dict):
        raise InputDataError(f"{where}: a line must hold one JSON object")
    for name in s.DATETIME_COLUMNS:
        call[name] = _datetime(call.get(name), f"{where} {name}")
    required = [s.PROJECT_ID, s.ID, s.OP_NAME, s.STARTED_AT]
    missing = [name for name in required if not call.get(name)]
    if missing:
        raise InputDataError(f"{where}: missing {missing[0]!r}")
    for name in (s.PROJECT_ID, s.ID, s.TRACE_ID, s.PARENT_ID, s.OP_NAME):
        if call.get(name) is not None and not isinstance(call[name], str):
            raise InputDataError(f"{where}: {name!r} must be a string")
    complete = call.get(s.ENDED_AT) is not None
    return call_part(call, start=True, end=complete)


def jsonl_batches(path: Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, int]]:
    """Part frames of ``batch_rows`` lines, each with the raw bytes consumed since the last."""
    stream, raw = _open(path)
    rows: list[dict[str, Any]] = []
    seen = 0
    with raw, stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                call = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise InputDataError(f"{where}: invalid JSON: {err}") from err
            rows.append(jsonl_part(call, where))
            if len(rows) >= batch_rows:
                pos = raw.tell()
                yield parts_frame(rows), pos - seen
                rows, seen = [], pos
        if rows:
            yield parts_frame(rows), raw.tell() - seen


# --- Parquet -------------------------------------------------------------------------------
def _parquet_frame(frame: pl.DataFrame) -> pl.DataFrame:
    have = frame.schema
    fixes = [
        pl.col(name).str.to_datetime(time_zone="UTC", time_unit="us")
        for name in s.DATETIME_COLUMNS
        if have.get(name) == pl.String
    ]
    frame = frame.with_columns(fixes) if fixes else frame
    calls = s.conform(frame.lazy(), s.CALL_SCHEMA, "parquet calls").collect()
    for refs, source in ((s.INPUT_REFS, s.INPUTS), (s.OUTPUT_REFS, s.OUTPUT)):
        if refs not in have:
            calls = calls.with_columns(_refs_from_json(calls.get_column(source), source, refs))
    return calls.with_columns(pl.lit(True).alias(COMPLETE)).select(list(PART_SCHEMA))


def _refs_from_json(texts: pl.Series, source: str, name: str) -> pl.Series:
    """Refs of JSON texts, for files written without the refs columns."""
    values = (orjson.loads(text) if text is not None else None for text in texts)
    if source == s.OUTPUT:
        refs = [output_refs(value) for value in values]
    else:
        refs = [input_refs(value if isinstance(value, dict) else None) for value in values]
    return pl.Series(name, refs, dtype=pl.List(pl.String))


def parquet_batches(path: Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, int]]:
    """Part frames of up to ``batch_rows`` rows, each with its row count."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        try:
            yield _parquet_frame(frame), frame.height
        except (pl.exceptions.PolarsError, orjson.JSONDecodeError) as err:
            raise InputDataError(f"{path}: rows do not fit the call schema: {err}") from err
