"""Rolled-up usage frame -> Weave's ``{"call_usage": ..., "unfinished_call_ids": ...}``.

The JSON is assembled by Polars string expressions, so a 100,000-call answer never becomes
100,000 pydantic objects; :func:`to_dict` parses that same text for Python callers.

A 100,000-call answer is ~50 MB of JSON, so the text is written in one pass: one piece per
usage row, in answer order, each carrying whatever comes before it (a comma, or the call's
opening with the calls that have no usage since the previous call) and after it (the
call's closing brace). The pieces of a batch of rows lie back to back in Polars' string
buffers, which :func:`json_chunks` hands out without copying, batch by batch, so that a
server can send one batch while the next is being written.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from engine import schema as s
from engine import workers

_HEAD = b'{"call_usage":{'
_BATCH_ROWS = 16_384  # ~5 MB of text: small enough to overlap writing with sending
_INLINE = 12  # Arrow string views hold a string of up to 12 bytes in the view itself
_PLACES = np.arange(_INLINE)  # the places of a short string's bytes in its view


def _large_text(values: pl.Series) -> pa.LargeStringArray:
    """``values`` as one Arrow ``large_string`` array: one data buffer, 64-bit offsets."""
    text = values.to_arrow().cast(pa.large_string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _needs_escape(values: pl.Series) -> bool:
    """Whether a value may hold a character a JSON string literal cannot hold as it is.

    Read from Polars' string views without copying: the bytes of short values in the views,
    then the buffers that long ones point into. A byte in those buffers that no value uses
    can only give a false "maybe", which costs escaping text that needs none.
    """
    arr = values.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(arr, pa.StringViewArray) and not arr.null_count:
        buffers = arr.buffers()
        views = np.frombuffer(buffers[1], dtype=np.int32).reshape(-1, 4)
        views = views[arr.offset : arr.offset + len(arr)]
        data = [np.frombuffer(b, dtype=np.uint8) for b in buffers[2:]]
        short = views[views[:, 0] <= _INLINE]
        if len(short):  # the bytes past a short string's end are not its own
            inline = short[:, 1:].view(np.uint8)
            data.append(np.where(short[:, :1] > _PLACES, inline, ord("a")).ravel())
    else:
        text = _large_text(values).buffers()[2]
        data = [np.frombuffer(text, dtype=np.uint8)] if text is not None else []
    return any(
        len(d) and bool(d.min() < 0x20 or (d == ord('"')).any() or (d == ord("\\")).any())
        for d in data
    )


def _escaped(text: pl.Expr) -> pl.Expr:
    """``text`` escaped for a JSON string literal, without the quotes."""
    return pl.struct(text.alias("k")).struct.json_encode().str.slice(6).str.strip_suffix('"}')


def _positions(call_ids: pl.Series, usage: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``usage`` rows of ``call_ids`` ordered by call, and the row number of each's call."""
    index = pl.DataFrame({s.ID: call_ids.cast(pl.String)}).with_row_index("__call")
    ordered = usage.join(index, on=s.ID, how="inner").sort("__call", maintain_order=True)
    return ordered.drop("__call"), ordered.get_column("__call").cast(pl.Int64).to_numpy()


@functools.lru_cache(maxsize=64)
def _entry(metrics: tuple[tuple[str, bool], ...], escape_model: bool) -> pl.Expr:
    """``"model":{"metric":value,...}`` of each usage row, for ``metrics`` (name, whether
    the column is all null) in order; built once per shape of usage frame, as building
    per-metric expressions costs more than running them on a few rows.

    Polars' JSON writer writes each run of metrics that hold values (integers as they are,
    floats as their shortest text, non-finite floats and nulls as ``null``); an all-null
    metric is constant text.
    """
    model = pl.col(s.MODEL)
    parts: list[pl.Expr | str] = ['"', _escaped(model) if escape_model else model, '":{']
    for i, (names, null) in enumerate(_runs(metrics)):
        if i:
            parts.append(",")
        if null:
            parts.append(",".join(f"{orjson.dumps(name).decode()}:null" for name in names))
        else:  # the run's ``{...}`` without its braces
            parts.append(pl.struct(names).struct.json_encode().str.slice(1).str.head(-1))
    parts.append("}")
    return _concat(parts)


def _runs(metrics: tuple[tuple[str, bool], ...]) -> list[tuple[list[str], bool]]:
    """``metrics`` cut into runs of consecutive all-null or not all-null metrics."""
    runs: list[tuple[list[str], bool]] = []
    for name, null in metrics:
        if runs and runs[-1][1] == null:
            runs[-1][0].append(name)
        else:
            runs.append(([name], null))
    return runs


def _concat(parts: list[pl.Expr | str]) -> pl.Expr:
    """``concat_str`` of ``parts``, adjacent constant texts merged into one literal."""
    merged: list[pl.Expr | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in merged])


def _spread(values: pl.Expr, where: np.ndarray, size: int) -> pl.Expr | None:
    """``values`` placed at the increasing positions ``where`` of ``size`` rows, null at the
    others (None if all are: no values)."""
    if len(where) == size:
        return values
    if not len(where):
        return None
    at = np.zeros(size, dtype=np.int64)
    at[where] = np.arange(len(where))
    unset = np.ones(size, dtype=bool)
    unset[where] = False
    return values.gather(pl.lit(pl.Series(pa.array(at, mask=unset))))


def _buffers(pieces: pl.Series) -> Iterator[bytes | memoryview]:
    """The concatenation of ``pieces``, in a few slices of Polars' own buffers.

    Polars writes strings longer than 12 bytes back to back into its string buffers, so
    when every piece is that long their text is handed out straight from those buffers;
    anything else takes the general route through an Arrow ``large_string`` array.
    """
    arr = pieces.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(arr, pa.StringViewArray) and arr.null_count == 0 and len(arr):
        buffers = arr.buffers()
        views = np.frombuffer(buffers[1], dtype=np.int32).reshape(-1, 4)
        views = views[arr.offset : arr.offset + len(arr)]
        length, buffer, offset = views[:, 0], views[:, 2], views[:, 3]
        same = buffer[1:] == buffer[:-1]
        if (
            (length > _INLINE).all()
            and (buffer[1:] >= buffer[:-1]).all()
            and (offset[1:][same] == (offset[:-1] + length[:-1])[same]).all()
        ):
            starts = np.flatnonzero(np.append(True, ~same))
            ends = np.append(starts[1:], len(arr)) - 1
            for i, j in zip(starts.tolist(), ends.tolist(), strict=True):
                yield memoryview(buffers[2 + buffer[i]])[offset[i] : offset[j] + length[j]]
            return
    large = _large_text(pieces)
    offsets = np.frombuffer(large.buffers()[1], dtype=np.int64)[large.offset :]
    data = large.buffers()[2]
    if data is not None:
        yield memoryview(data)[int(offsets[0]) : int(offsets[len(large)])]


def json_chunks(
    call_ids: pl.Series,
    usage: pl.DataFrame,
    unfinished: list[str],
    call_index: np.ndarray | None = None,
) -> Iterator[bytes | memoryview]:
    """The response body in pieces whose concatenation is :func:`to_json`.

    The calls' text is written as rows: a call's usage rows, or one row for a call with
    none. A row that starts a call closes the one before and opens its own (``},"id":{``),
    any other row starts with a comma; then comes its usage entry, if any. The first row
    drops its ``},``. One query writes a batch of rows, whatever their kinds.

    Work happens as the pieces are asked for, a batch of rows at a time; while one batch is
    being handed out the next is written on a worker thread, so at most two batches' text
    is held at once.
    """
    if call_index is None:
        usage, call_index = _positions(call_ids, usage)
    ids = call_ids if call_ids.dtype == pl.String else call_ids.cast(pl.String)
    n, m = ids.len(), len(call_index)
    counts = np.bincount(call_index, minlength=n)
    bare = counts == 0
    call_row = np.zeros(n + 1, dtype=np.int64)  # the row each call starts at, then the end
    np.cumsum(np.maximum(counts, 1), out=call_row[1:])
    usage_row = np.arange(m) + (np.cumsum(bare) - bare)[call_index]  # after the bare calls
    escape_ids = _needs_escape(ids)
    escape_model = m > 0 and _needs_escape(usage.get_column(s.MODEL))
    metrics = tuple(
        (name, usage.get_column(name).null_count() == m)
        for name in usage.columns
        if name not in (s.ID, s.MODEL)
    )
    entry = _entry(metrics, escape_model)

    def batch(lo: int) -> pl.Series:
        hi = min(lo + _BATCH_ROWS, int(call_row[n]))
        c_lo, c_hi = np.searchsorted(call_row[:n], (lo, hi)).tolist()
        u_lo, u_hi = np.searchsorted(usage_row, (lo, hi)).tolist()
        opened = pl.lit(ids.slice(c_lo, c_hi - c_lo))
        opened = _spread(
            _escaped(opened) if escape_ids else opened, call_row[c_lo:c_hi] - lo, hi - lo
        )
        text = (
            pl.lit(",") if opened is None else pl.concat_str(pl.lit('},"'), opened, pl.lit('":{'))
        )
        if c_hi - c_lo not in (0, hi - lo):
            text = text.fill_null(",")
        used = _spread(entry, usage_row[u_lo:u_hi] - lo, hi - lo)
        if used is not None:
            text = pl.concat_str(text, used, ignore_nulls=True)
        return usage.slice(u_lo, u_hi - u_lo).select(text).to_series()

    yield _HEAD
    starts_at = range(0, int(call_row[n]), _BATCH_ROWS)
    # several batches: the next one is written on a worker thread meanwhile
    texts = map(batch, starts_at) if len(starts_at) <= 1 else workers.map_ahead(batch, starts_at)
    skip = 2  # the first row's "},"
    for text in texts:
        for piece in _buffers(text):
            yield memoryview(piece)[skip:] if skip else piece
            skip = 0
    yield b"}" * (n > 0) + b'},"unfinished_call_ids":' + orjson.dumps(unfinished) + b"}"


def to_json(
    call_ids: pl.Series,
    usage: pl.DataFrame,
    unfinished: list[str],
    call_index: np.ndarray | None = None,
) -> bytes:
    """Serialize a result: ``call_ids`` in answer order, ``usage`` in ``RESULT_SCHEMA``.

    ``call_index``, when given, is the row number in ``call_ids`` of each ``usage`` row,
    non-decreasing; otherwise it is found by a join.

    Examples
    --------
    >>> usage = pl.DataFrame({"id": ["a"], "model": ["m"], "requests": [1]})
    >>> to_json(pl.Series(["a", "b"]), usage, ["b"])
    b'{"call_usage":{"a":{"m":{"requests":1}},"b":{}},"unfinished_call_ids":["b"]}'
    """
    return b"".join(json_chunks(call_ids, usage, unfinished, call_index))


def to_dict(
    call_ids: pl.Series,
    usage: pl.DataFrame,
    unfinished: list[str],
    call_index: np.ndarray | None = None,
) -> dict[str, Any]:
    """The same answer as plain Python objects."""
    return orjson.loads(to_json(call_ids, usage, unfinished, call_index))
