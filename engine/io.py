"""The one reader of exported calls (``trace-usage import`` and ``rollup`` alike), and of
extra price rows.

Calls come as Parquet (a file, a directory of files or a glob, in
:data:`engine.schema.CALL_SCHEMA`; missing optional columns read as null, timestamps may be
ISO 8601 text) or as JSON Lines of Weave calls: one complete call (``CallSchema``) or
start-only call per line, bare or wrapped as ``{"start": {...}}`` (a ``/call/start`` body),
or OTLP ``ExportTraceServiceRequest`` lines (the Collector's file exporter), each span a call
as ``POST /otel/v1/traces`` stores it; gzip accepted. A file whose suffix says neither is
read by its content.

One set of rules, whichever command reads:

* a JSON Lines line is one Weave call: ``project_id``, ``id``, ``op_name`` and
  ``started_at`` present, id-like columns strings, timestamps ISO 8601, run steps 64-bit
  integers (:func:`checked_call`);
* a Parquet row is a stored call: ``project_id`` and ``id`` present, every column of a
  type it can be read as, text timestamps readable (:func:`check_parquet`).

Anything else is an :class:`~engine.errors.InputDataError` that names the file, the line
(or row) and the column. ``input_refs``/``output_refs`` that a file does not carry are found
in the inputs and output as the reference finds them (:mod:`engine.refs`).
"""

from __future__ import annotations

import datetime as dt
import glob
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, cast

import orjson
import polars as pl
import pyarrow.parquet as pq

from engine import schema as s
from engine.errors import InputDataError
from engine.otel import is_otlp_request, otlp_line_calls
from engine.refs import input_refs, output_refs

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PROJECT_COLUMN = s.PROJECT_ID  # optional in a price file: the project the row applies to
Format = Literal["parquet", "jsonl"]
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"

# --- which files, which format -------------------------------------------------------------


def _suffix_format(path: Path) -> Format | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def input_format(path: Path) -> Format:
    """The format of a calls file: by suffix, else by content (Parquet's magic, gzip, or a
    JSON object first); anything else is refused, naming the file."""
    known = _suffix_format(path)
    if known:
        return known
    with path.open("rb") as fh:
        head = fh.read(4)
    if head == _PARQUET_MAGIC:
        return "parquet"
    if head[:2] == _GZIP_MAGIC or head.lstrip()[:1] in (b"{", b""):
        return "jsonl"
    raise InputDataError(
        f"{path}: neither Parquet nor JSON Lines of calls (name it .parquet or .jsonl if "
        "it is one; CSV is not read)"
    )


def input_files(inputs: Iterable[str | Path]) -> list[tuple[Path, Format]]:
    """The files of ``inputs`` (files, directories, globs), in order, with their format.

    A directory contributes every Parquet or JSON Lines file below it (by suffix); a named
    or globbed file of another suffix is read by its content (:func:`input_format`).
    """
    files: list[tuple[Path, Format]] = []
    for item in inputs:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _suffix_format(p))
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not found:
                raise InputDataError(f"no input matches {text!r}")
        files.extend((file, input_format(file)) for file in found)
    return files


def resolve_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """The files of ``inputs`` (:func:`input_files`), split into Parquet and JSON Lines."""
    files = input_files(inputs)
    return [p for p, f in files if f == "parquet"], [p for p, f in files if f == "jsonl"]


def open_calls_file(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """(stream of the file's bytes, gunzipped when it is gzip, raw file whose position says
    how much of the file is read); close the stream, then the raw file."""
    raw: IO[bytes] = path.open("rb")
    gzipped = raw.read(2) == _GZIP_MAGIC
    raw.seek(0)
    # GzipFile reads as IO[bytes] does; typeshed does not declare it one
    stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw)) if gzipped else raw
    return stream, raw


# --- JSON Lines ----------------------------------------------------------------------------
JSONL_REQUIRED = (s.PROJECT_ID, s.ID, s.OP_NAME, s.STARTED_AT)
_REF_SOURCES = {s.INPUT_REFS: s.INPUTS, s.OUTPUT_REFS: s.OUTPUT}
_STRING_COLUMNS = tuple(
    name
    for name, dtype in s.CALL_SCHEMA.items()
    if dtype == pl.String and name not in s.JSON_COLUMNS
)
_INT_COLUMNS = tuple(name for name, dtype in s.CALL_SCHEMA.items() if dtype == pl.Int64)
_INT64 = range(s.INT64_MIN, s.INT64_MAX + 1)
_STRING, _INTEGER, _STRINGS = "a string", "a 64-bit integer", "a list of strings"
_RULES = {
    **dict.fromkeys(_STRING_COLUMNS, _STRING),
    **dict.fromkeys(_INT_COLUMNS, _INTEGER),
    **dict.fromkeys(_REF_SOURCES, _STRINGS),
}


@dataclass(frozen=True, slots=True)
class CallLine:
    """One call of a JSON Lines file: ``call`` (checked, timestamps as aware UTC
    datetimes), ``where`` (``file:line``), ``offset`` (raw bytes read so far)."""

    call: dict[str, Any]
    where: str
    offset: int


def call_lines(path: Path) -> Iterator[CallLine]:
    """The calls of a JSON Lines file, each checked by :func:`checked_call`; blank lines
    are skipped. Every reader of JSON Lines calls (import, rollup, Spark) goes through here.
    """
    stream, raw = open_calls_file(path)
    with raw, stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise InputDataError(f"{where}: not JSON: {err}") from err
            if is_otlp_request(record):  # an OTLP export (Collector file): its spans' calls
                yield from (CallLine(c, where, raw.tell()) for c in otlp_line_calls(record, where))
                continue
            yield CallLine(checked_call(record, where), where, raw.tell())


def checked_call(record: Any, where: str) -> dict[str, Any]:
    """A JSON Lines record as a Weave call, or an ``InputDataError`` naming ``where`` and
    the column. ``{"start": {...}}`` is unwrapped; unknown keys are kept and ignored.

    Examples
    --------
    >>> call = checked_call({"start": {"project_id": "e/p", "id": "a", "op_name": "op",
    ...     "started_at": "2025-01-01T01:00:00+01:00"}}, "f:1")
    >>> call["started_at"]
    datetime.datetime(2025, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    >>> checked_call({"project_id": "e/p", "op_name": "op"}, "f:2")
    Traceback (most recent call last):
    engine.errors.InputDataError: f:2: missing column 'id'
    """
    if isinstance(record, dict) and s.ID not in record and isinstance(record.get("start"), dict):
        record = record["start"]
    if not isinstance(record, dict):
        raise InputDataError(f"{where}: a line must hold one JSON object (a call)")
    for name in JSONL_REQUIRED:
        if record.get(name) in (None, ""):
            raise InputDataError(f"{where}: missing column {name!r}")
    for name, value in record.items():  # one pass: a call holds far fewer keys than rules
        wanted = _RULES.get(name)
        if value is not None and wanted is not None and not _fits(wanted, value):
            raise _bad(where, name, wanted, value)
    for name in s.DATETIME_COLUMNS:
        record[name] = _timestamp(record.get(name), where, name)
    return record


def _fits(wanted: str, value: Any) -> bool:
    if wanted == _STRING:
        return type(value) is str
    if wanted == _INTEGER:
        return type(value) is int and value in _INT64
    return isinstance(value, list) and all(type(v) is str for v in value)


def _bad(where: str, name: str, wanted: str, value: Any) -> InputDataError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InputDataError(f"{where}: column {name!r} must be {wanted}, not {shown}")


def _timestamp(value: Any, where: str, name: str) -> dt.datetime | None:
    """An ISO 8601 text as an aware UTC datetime (no offset: UTC, as the reference reads)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                return parsed.replace(tzinfo=dt.UTC)
            return parsed.astimezone(dt.UTC)
    raise _bad(where, name, "an ISO 8601 timestamp", value)


def refs_of(column: str, source: Any) -> list[str]:
    """The ``input_refs`` (``output_refs``) of a call whose inputs (output) is ``source``."""
    if column == s.INPUT_REFS:
        return input_refs(source if isinstance(source, dict) else None)
    return output_refs(source)


def calls_from_records(records: list[dict[str, Any]]) -> pl.DataFrame:
    """Checked Weave calls (:func:`checked_call`) as a ``CALL_SCHEMA`` frame, JSON columns
    as text, refs found unless a call carries them.

    Examples
    --------
    >>> frame = calls_from_records([checked_call({"id": "a", "project_id": "e/p",
    ...     "op_name": "op", "started_at": "2025-01-01T00:00:00Z", "summary": {"usage": {}}},
    ...     "f:1")])
    >>> frame.select("id", "summary", "ended_at").row(0)
    ('a', '{"usage":{}}', None)
    """
    columns: dict[str, list[Any]] = {name: [] for name in s.CALL_SCHEMA}
    for record in records:
        for name, values in columns.items():
            value = record.get(name)
            if name in s.JSON_COLUMNS and value is not None:
                value = orjson.dumps(value).decode()
            elif name in _REF_SOURCES and value is None:
                value = refs_of(name, record.get(_REF_SOURCES[name]))
            values.append(value)
    return pl.DataFrame(
        [pl.Series(name, columns[name], dtype=dtype) for name, dtype in s.CALL_SCHEMA.items()]
    )


def iter_jsonl_calls(path: Path, chunk_rows: int = 200_000) -> Iterator[pl.DataFrame]:
    """The calls of a JSON Lines file, ``chunk_rows`` at a time, in ``CALL_SCHEMA``."""
    chunk: list[dict[str, Any]] = []
    for line in call_lines(path):
        chunk.append(line.call)
        if len(chunk) >= chunk_rows:
            yield calls_from_records(chunk)
            chunk = []
    if chunk:
        yield calls_from_records(chunk)


def jsonl_to_parquet(
    files: Iterable[Path], folder: Path, columns: Iterable[str] | None = None
) -> list[Path]:
    """JSON Lines files as Parquet chunks in ``folder`` (only ``columns``, if given), so
    that one Parquet scan reads every input."""
    written = []
    keep = list(columns) if columns is not None else list(s.CALL_SCHEMA)
    for i, path in enumerate(files):
        for j, chunk in enumerate(iter_jsonl_calls(path)):
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{i:06d}-{j:06d}.parquet"
            chunk.select(keep).write_parquet(target)
            written.append(target)
    return written


def read_jsonl_calls(paths: Iterable[Path]) -> pl.DataFrame:
    """Every call of some JSON Lines files, in memory."""
    frames = [frame for path in paths for frame in iter_jsonl_calls(path)]
    return pl.concat(frames) if frames else s.empty(s.CALL_SCHEMA)


# --- Parquet -------------------------------------------------------------------------------
PARQUET_REQUIRED = (s.PROJECT_ID, s.ID)


def _readable(name: str, dtype: pl.DataType) -> bool:
    """Whether a Parquet column of ``dtype`` reads as call column ``name``."""
    want = s.CALL_SCHEMA[name]
    if dtype == pl.Null:
        return True
    if want == pl.String:
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    if want == pl.Int64:
        return dtype.is_integer()
    if isinstance(want, pl.Datetime):
        return isinstance(dtype, pl.Datetime) or dtype in (pl.Date, pl.String)
    return isinstance(dtype, pl.List) and dtype.inner in (pl.String, pl.Null)


def parquet_schema(path: Path) -> pl.Schema:
    """The call columns of a Parquet file, checked (:func:`check_parquet` checks values)."""
    try:
        schema = pl.read_parquet_schema(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise InputDataError(f"{path}: not a readable Parquet file: {err}") from err
    for name in PARQUET_REQUIRED:
        if name not in schema:
            raise InputDataError(f"{path}: missing column {name!r}")
    for name, dtype in schema.items():
        if name in s.CALL_SCHEMA and not _readable(name, dtype):
            want = s.CALL_SCHEMA[name]
            raise InputDataError(f"{path}: column {name!r} is {dtype}, which cannot be {want}")
    return pl.Schema({n: t for n, t in schema.items() if n in s.CALL_SCHEMA})


def check_parquet(path: Path) -> pl.Schema:
    """Refuse a Parquet calls file that would be misread, naming the row and the column:
    null ``project_id`` or ``id``, a text timestamp that is not one. Returns its schema.

    Null counts come from the file's statistics when it has them, so a well-formed file
    costs only its footer.
    """
    schema = parquet_schema(path)
    checks = [
        pl.col(name).is_null().alias(name)
        for name in PARQUET_REQUIRED
        if _may_hold_nulls(path, name)
    ]
    checks += [
        (pl.col(name).is_not_null() & _parsed(name).is_null()).alias(name)
        for name in s.DATETIME_COLUMNS
        if schema.get(name) == pl.String
    ]
    if not checks:
        return schema
    firsts = pl.scan_parquet(path).select(c.arg_true().first() for c in checks).collect()
    for name, row in firsts.row(0, named=True).items():
        if row is not None:
            value = pl.scan_parquet(path).select(name).slice(row, 1).collect().item()
            problem = "is null" if value is None else f"is not a timestamp: {value!r}"
            raise InputDataError(f"{path}: row {row + 1}: column {name!r} {problem}")
    return schema


def _may_hold_nulls(path: Path, name: str) -> bool:
    """False when the file's statistics show that column ``name`` holds no null."""
    meta = pq.ParquetFile(path).metadata
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        columns = (row_group.column(i) for i in range(row_group.num_columns))
        column = next((c for c in columns if c.path_in_schema == name), None)
        stats = column.statistics if column is not None else None
        if stats is None or not stats.has_null_count or stats.null_count:
            return True
    return False


def _parsed(name: str) -> pl.Expr:
    return pl.col(name).str.to_datetime(time_unit="us", time_zone="UTC", strict=False)


def conform_calls(frame: pl.LazyFrame, schema: pl.Schema, what: str) -> pl.LazyFrame:
    """Calls read from a file of ``schema`` (checked) as ``CALL_SCHEMA``: text timestamps
    parsed, naive ones read as UTC, refs found in inputs and output when not carried."""
    fixes = [
        _parsed(name) if schema[name] == pl.String else pl.col(name).cast(s.TIMESTAMP)
        for name in s.DATETIME_COLUMNS
        if name in schema
    ]
    fixes += [
        pl.col(source)
        .map_batches(_refs_column(refs), return_dtype=s.CALL_SCHEMA[refs], is_elementwise=True)
        .alias(refs)
        for refs, source in _REF_SOURCES.items()
        if refs not in schema and source in schema
    ]
    return s.conform(frame.with_columns(fixes) if fixes else frame, s.CALL_SCHEMA, what)


def _refs_column(column: str) -> Any:
    def refs(texts: pl.Series) -> pl.Series:
        values = (orjson.loads(text) if text is not None else None for text in texts)
        return pl.Series(column, [refs_of(column, v) for v in values], dtype=pl.List(pl.String))

    return refs


def scan_parquet_calls(files: Iterable[Path]) -> pl.LazyFrame:
    """Parquet call files (each checked) as one lazy frame in ``CALL_SCHEMA``."""
    frames = [conform_calls(pl.scan_parquet(f), check_parquet(f), f"calls file {f}") for f in files]
    if not frames:
        return s.empty(s.CALL_SCHEMA).lazy()
    return pl.concat(frames, how="vertical")


def parquet_rows(path: Path) -> int:
    """How many rows a Parquet file holds (from its footer)."""
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: not a readable Parquet file: {err}") from err


def parquet_call_batches(path: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    """The calls of a Parquet file (checked first), up to ``batch_rows`` at a time."""
    schema = check_parquet(path)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        frame = pl.DataFrame(pl.from_arrow(batch))
        try:
            yield conform_calls(frame.lazy(), schema, f"calls file {path}").collect()
        except (pl.exceptions.PolarsError, orjson.JSONDecodeError) as err:
            raise InputDataError(f"{path}: rows do not fit the call schema: {err}") from err


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
