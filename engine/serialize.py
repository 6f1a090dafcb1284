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


def _large_text(values: pl.Series) -> pa.LargeStringArray:
    """``values`` as one Arrow ``large_string`` array: one data buffer, 64-bit offsets."""
    text = values.to_arrow().cast(pa.large_string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _needs_escape(values: pl.Series) -> bool:
    """Whether any value holds a character a JSON string literal cannot hold as it is."""
    data = _large_text(values).buffers()[2]
    if data is None:
        return False
    raw = np.frombuffer(data, dtype=np.uint8)
    return bool(len(raw)) and bool(raw.min() < 0x20 or (raw == 0x22).any() or (raw == 0x5C).any())


def _json_inner(values: pl.Series) -> pl.Series:
    """``values`` escaped for a JSON string literal, without the quotes (most values, like
    ids and model names, need no escaping and are returned as they are)."""
    values = values.cast(pl.String)
    if not _needs_escape(values):
        return values
    encoded = values.alias("k").to_frame().select(pl.struct("k").struct.json_encode())
    return encoded.to_series().str.slice(6).str.strip_suffix('"}')


def _positions(call_ids: pl.Series, usage: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``usage`` rows of ``call_ids`` ordered by call, and the row number of each's call."""
    index = pl.DataFrame({s.ID: call_ids.cast(pl.String)}).with_row_index("__call")
    ordered = usage.join(index, on=s.ID, how="inner").sort("__call", maintain_order=True)
    return ordered.drop("__call"), ordered.get_column("__call").cast(pl.Int64).to_numpy()


def _all_finite(column: pl.Series) -> bool:
    """Whether every non-null float is finite (checked in NumPy: a Polars query per column
    and batch costs more than the check)."""
    values = column.to_numpy() if column.null_count() == 0 else column.drop_nulls().to_numpy()
    return bool(np.isfinite(values).all())


def _value(name: str, column: pl.Series) -> pl.Expr | str:
    """A metric as JSON text: integers and finite floats as they are, the rest ``null``."""
    if column.null_count() == column.len():
        return "null"
    text = pl.col(name).cast(pl.String)
    if column.dtype.is_float() and not _all_finite(column):
        text = pl.when(pl.col(name).is_finite()).then(text)
    return text.fill_null("null")


def _entry(usage: pl.DataFrame, metrics: list[str], model: pl.Series) -> list[pl.Expr | str]:
    """The parts of ``"model":{"metric":value,...}`` for each usage row."""
    parts: list[pl.Expr | str] = ['"', pl.lit(model)]
    if not all(usage.schema[m].is_numeric() for m in metrics):
        return [*parts, '":', pl.struct(metrics).struct.json_encode()]
    for i, name in enumerate(metrics):
        parts.append('":{' * (i == 0) + "," * (i > 0) + f'"{name}":')
        parts.append(_value(name, usage.get_column(name)))
    parts.append("}" if metrics else '":{}')
    return parts


def _concat(parts: list[pl.Expr | str]) -> pl.Expr:
    """``concat_str`` of ``parts``, adjacent constant texts merged into one literal."""
    merged: list[pl.Expr | str] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return pl.concat_str([pl.lit(p) if isinstance(p, str) else p for p in merged])


def _choose(mask: np.ndarray, yes: str, no: str) -> pl.Expr:
    """``yes`` where ``mask``, else ``no`` (built by Polars: numpy strings convert slowly)."""
    return (
        pl.when(pl.lit(pl.Series(mask, dtype=pl.Boolean))).then(pl.lit(yes)).otherwise(pl.lit(no))
    )


def _gaps(ids: pl.Series, empty: np.ndarray, slot: np.ndarray, slots: int) -> pl.Series:
    """For each of ``slots`` slots, ``"id":{},`` for every call in ``empty`` (call rows
    with no usage, increasing) whose ``slot`` it is, in call order.

    The items of a slot are adjacent in the text of all items, so each slot's text is a
    range of that text: new offsets over the same data buffer, with no join or group-by.
    """
    items = pl.select(pl.concat_str(pl.lit('"'), pl.lit(ids).gather(empty), pl.lit('":{},')))
    text = _large_text(items.to_series())
    item_end = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset :]
    first_item = np.zeros(slots + 1, dtype=np.int64)
    np.cumsum(np.bincount(slot, minlength=slots), out=first_item[1:])
    bounds = pa.py_buffer(np.ascontiguousarray(item_end[first_item]))
    data = text.buffers()[2] or pa.py_buffer(b"")
    return pl.Series(pa.LargeStringArray.from_buffers(slots, bounds, data))


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
            (length > 12).all()
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

    Work happens as the pieces are asked for, a batch of usage rows at a time; while one
    batch is being handed out the next is written on a worker thread, so at most two
    batches' text is held at once.
    """
    if call_index is None:
        usage, call_index = _positions(call_ids, usage)
    ids = _json_inner(call_ids)
    n, m = call_ids.len(), len(call_index)
    has_usage = np.zeros(n, dtype=bool)
    has_usage[call_index] = True
    empty = np.flatnonzero(~has_usage)
    first = np.ones(m, dtype=bool)
    np.not_equal(call_index[1:], call_index[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    openers = call_index[starts]
    # calls with no usage go in front of the next call that has some, or at the very end
    gaps = _gaps(ids, empty, np.searchsorted(openers, empty), len(openers) + 1)
    end = gaps[-1][:-1]  # the calls after the last one with usage, without the last comma
    rest = ("," if m and end else "") + end
    yield _HEAD
    if m:
        opening = pl.select(
            pl.concat_str(
                _choose(np.arange(len(openers)) > 0, ",", ""),
                pl.lit(gaps.head(len(openers))),
                pl.lit('"'),
                pl.lit(ids).gather(openers),
                pl.lit('":{'),
            )
        ).to_series()
        prefix = pl.repeat(",", m, eager=True).scatter(starts, opening)
        last = np.append(first[1:], True)
        model = _json_inner(usage.get_column(s.MODEL))
        metrics = [c for c in usage.columns if c not in (s.ID, s.MODEL)]

        def batch(lo: int) -> pl.Series:
            rows = usage.slice(lo, _BATCH_ROWS)
            parts: list[pl.Expr | str] = [pl.lit(prefix.slice(lo, _BATCH_ROWS))]
            parts += _entry(rows, metrics, model.slice(lo, _BATCH_ROWS))
            parts.append(_choose(last[lo : lo + _BATCH_ROWS], "}", ""))
            return rows.select(_concat(parts)).to_series()

        starts_at = range(0, m, _BATCH_ROWS)
        # several batches: the next one is written on a worker thread meanwhile
        texts = map(batch, starts_at) if m <= _BATCH_ROWS else workers.map_ahead(batch, starts_at)
        for text in texts:
            yield from _buffers(text)
    yield rest.encode() + b'},"unfinished_call_ids":' + orjson.dumps(unfinished) + b"}"


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
