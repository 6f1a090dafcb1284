"""Exported calls and extra price rows, read into the engine's canonical frames.

Calls come as Parquet (a file, a directory of files or a glob, already in
:data:`engine.schema.CALL_SCHEMA`, missing optional columns read as null) or as JSON Lines of
Weave calls: one complete call (``CallSchema``) or start-only call per line, optionally
wrapped as ``{"start": {...}}`` (a ``/call/start`` body), gzip accepted. JSON Lines are
parsed at the edge, with orjson, a chunk of lines at a time; everything after is Polars.

``input_refs``/``output_refs`` of JSON Lines calls are found in their inputs and output as
the reference finds them (:mod:`engine.refs`), unless a line carries them.
"""

from __future__ import annotations

import glob
import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import polars as pl

from engine import schema as s
from engine.errors import InputDataError
from engine.refs import input_refs, output_refs

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PROJECT_COLUMN = s.PROJECT_ID  # optional in a price file: the project the row applies to


def _suffix_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def resolve_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Split ``inputs`` (files, directories, globs) into Parquet and JSON Lines files.

    A directory contributes every Parquet or JSON Lines file below it; a named file of
    unknown suffix is read as Parquet.
    """
    parquet: list[Path] = []
    jsonl: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _suffix_kind(p))
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise InputDataError(f"no input matches {text!r}")
        for file in found:
            (jsonl if _suffix_kind(file) == "jsonl" else parquet).append(file)
    return parquet, jsonl


def scan_parquet_calls(files: Iterable[Path]) -> pl.LazyFrame:
    """Parquet call files as one lazy frame in ``CALL_SCHEMA`` (files may lack columns)."""
    frames = [s.conform(pl.scan_parquet(f), s.CALL_SCHEMA, f"calls file {f}") for f in files]
    if not frames:
        return s.empty(s.CALL_SCHEMA).lazy()
    return pl.concat(frames, how="vertical")


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with _open(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise InputDataError(f"{path}:{number}: not JSON: {err}") from err
            if (
                isinstance(record, dict)
                and s.ID not in record
                and isinstance(record.get("start"), dict)
            ):
                record = record["start"]
            if not isinstance(record, dict):
                raise InputDataError(f"{path}:{number}: a call must be a JSON object")
            yield record


def calls_from_records(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Weave call objects (JSON-decoded) as a ``CALL_SCHEMA`` frame, JSON columns as text.

    Examples
    --------
    >>> frame = calls_from_records([{"id": "a", "project_id": "e/p", "op_name": "op",
    ...     "started_at": "2025-01-01T00:00:00Z", "summary": {"usage": {}}}])
    >>> frame.select("id", "summary", "ended_at").row(0)
    ('a', '{"usage":{}}', None)
    """
    columns: dict[str, list[Any]] = {name: [] for name in s.CALL_SCHEMA}
    for record in records:
        for name, values in columns.items():
            value = record.get(name)
            if name in s.JSON_COLUMNS and value is not None:
                value = orjson.dumps(value).decode()
            elif name == s.INPUT_REFS and value is None:
                inputs = record.get(s.INPUTS)
                value = input_refs(inputs if isinstance(inputs, dict) else None)
            elif name == s.OUTPUT_REFS and value is None:
                value = output_refs(record.get(s.OUTPUT))
            values.append(value)
    data: dict[str, pl.Series] = {}
    for name, dtype in s.CALL_SCHEMA.items():
        values = columns[name]
        if name in s.DATETIME_COLUMNS:
            data[name] = _timestamps(name, values)
        elif name in (s.INPUT_REFS, s.OUTPUT_REFS):
            data[name] = pl.Series(name, values, dtype=dtype)
        else:
            data[name] = _typed(name, values, dtype)
    return pl.DataFrame(data)


def _typed(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    try:
        return pl.Series(name, values, dtype=dtype, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as err:
        raise InputDataError(f"column {name!r}: {err}", path=name) from err


def _timestamps(name: str, values: list[Any]) -> pl.Series:
    raw = pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
    try:
        return raw.str.to_datetime(time_unit="us", time_zone="UTC")
    except pl.exceptions.PolarsError as err:
        raise InputDataError(f"column {name!r} holds a value that is not a timestamp") from err


def iter_jsonl_calls(path: Path, chunk_rows: int = 200_000) -> Iterator[pl.DataFrame]:
    """The calls of a JSON Lines file, ``chunk_rows`` at a time, in ``CALL_SCHEMA``."""
    chunk: list[dict[str, Any]] = []
    for record in _records(path):
        chunk.append(record)
        if len(chunk) >= chunk_rows:
            yield calls_from_records(chunk)
            chunk = []
    if chunk:
        yield calls_from_records(chunk)


def read_jsonl_calls(paths: Iterable[Path]) -> pl.DataFrame:
    """Every call of some JSON Lines files, in memory."""
    frames = [frame for path in paths for frame in iter_jsonl_calls(path)]
    return pl.concat(frames) if frames else s.empty(s.CALL_SCHEMA)


def read_calls(inputs: Iterable[str | Path]) -> pl.LazyFrame:
    """Calls of Parquet and JSON Lines inputs as one lazy frame (JSON Lines are read now)."""
    parquet, jsonl = resolve_inputs(inputs)
    parts = [scan_parquet_calls(parquet)]
    if jsonl:
        parts.append(read_jsonl_calls(jsonl).lazy())
    return pl.concat(parts, how="vertical")


def read_price_rows(path: str | Path) -> pl.DataFrame:
    """Extra price rows from CSV or Parquet: ``llm_id``, ``effective_date``, the prices.

    Optional columns: ``project_id`` (the project a row prices; null or absent: every
    project) and ``provider_id``. Missing prices read as 0, as in the default table.
    """
    path = Path(path)
    try:
        raw = (
            pl.read_csv(path, infer_schema_length=None)
            if path.name.lower().endswith(".csv")
            else pl.read_parquet(path)
        )
    except (OSError, pl.exceptions.PolarsError) as err:
        raise InputDataError(f"cannot read price rows {path}: {err}") from err
    return price_rows(raw, str(path))


def price_rows(raw: pl.DataFrame, what: str = "price rows") -> pl.DataFrame:
    """Normalize extra price rows: ``project_id``, ``llm_id``, ``provider_id``, UTC date, prices."""
    missing = {s.LLM_ID, s.EFFECTIVE_DATE} - set(raw.columns)
    if missing:
        raise InputDataError(f"{what} lacks columns {sorted(missing)}")

    def optional(name: str, dtype: pl.DataType, default: Any) -> pl.Expr:
        column = pl.col(name).cast(dtype) if name in raw.columns else pl.lit(None, dtype)
        return (column if default is None else column.fill_null(default)).alias(name)

    dtype = raw.schema[s.EFFECTIVE_DATE]
    date = pl.col(s.EFFECTIVE_DATE)
    if dtype == pl.String:
        date = date.str.to_datetime(time_unit="us", time_zone="UTC")
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        date = date.dt.cast_time_unit("us")
    else:  # a naive datetime or a date: read as UTC
        date = date.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    try:
        return raw.select(
            optional(PROJECT_COLUMN, pl.String(), None),
            pl.col(s.LLM_ID).cast(pl.String),
            optional(s.PROVIDER_ID, pl.String(), "default"),
            date.dt.convert_time_zone("UTC").alias(s.EFFECTIVE_DATE),
            *(optional(name, pl.Float64(), 0.0) for name in s.PRICES),
        )
    except pl.exceptions.PolarsError as err:
        raise InputDataError(f"{what}: {err}") from err
