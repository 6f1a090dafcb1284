"""Bulk import of calls into the store, read by the reader ``rollup`` uses (:mod:`engine.io`).

* JSON Lines (optionally gzip'd): one Weave call per line, bare or as ``{"start": ...}``.
  A line with ``ended_at`` is a complete call and replaces what is stored; a line without
  it is a start and leaves a stored end alone.
* Parquet: rows in :data:`engine.schema.CALL_SCHEMA` (JSON columns as text; missing
  optional columns read as null), each a complete call.

Files are streamed in batches, one store transaction each, so memory stays flat and a
re-run (everything is an upsert) is idempotent. A Parquet file is checked whole before its
first batch is written; a JSON Lines file is written batch by batch up to its first bad
line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from engine import schema as s
from engine.errors import InvalidRequestError
from engine.io import call_lines, input_files, parquet_call_batches, parquet_rows
from service.parts import COMPLETE, PART_SCHEMA, call_part, parts_frame
from service.store import CallStore

BATCH_ROWS = 10_000
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "data" / "sample"
SAMPLE_PROJECT = "demo/agents"
Progress = Callable[[int], Any]
# progress(path, total, unit) -> a callback told how many units were consumed
ProgressFactory = Callable[[Path, int, str], Progress]


@dataclass
class ImportStats:
    """What one import wrote."""

    files: int = 0
    rows: int = 0
    batches: int = 0


def import_files(
    store: CallStore,
    inputs: Iterable[str | Path],
    *,
    batch_rows: int = BATCH_ROWS,
    progress: ProgressFactory | None = None,
) -> ImportStats:
    """Import every file of ``inputs`` (files, directories, globs), in order.

    ``progress(path, total, unit)`` makes a per-file callback that is told how many units
    (``"rows"`` of Parquet, ``"B"`` of JSON Lines, compressed) were consumed.
    """
    if batch_rows < 1:
        raise InvalidRequestError(f"batch_rows must be at least 1, not {batch_rows}")
    stats = ImportStats()
    for path, fmt in input_files(inputs):
        if fmt == "parquet":
            total, unit, batches = parquet_rows(path), "rows", parquet_batches(path, batch_rows)
        else:
            total, unit, batches = path.stat().st_size, "B", jsonl_batches(path, batch_rows)
        tick = progress(path, total, unit) if progress else None
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
    return import_files(store, [sample_dir]).rows


def jsonl_batches(path: Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, int]]:
    """Part frames of ``batch_rows`` lines, each with the raw bytes consumed since the last."""
    rows: list[dict[str, Any]] = []
    seen = 0
    for line in call_lines(path):
        rows.append(call_part(line.call, start=True, end=line.call.get(s.ENDED_AT) is not None))
        if len(rows) >= batch_rows:
            yield parts_frame(rows), line.offset - seen
            rows, seen = [], line.offset
    if rows:
        yield parts_frame(rows), path.stat().st_size - seen


def parquet_batches(path: Path, batch_rows: int) -> Iterator[tuple[pl.DataFrame, int]]:
    """Part frames (complete calls) of up to ``batch_rows`` rows, each with its row count."""
    for calls in parquet_call_batches(path, batch_rows):
        yield (
            calls.with_columns(pl.lit(True).alias(COMPLETE)).select(list(PART_SCHEMA)),
            calls.height,
        )
