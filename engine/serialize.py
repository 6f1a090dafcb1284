"""Rolled-up usage frame -> Weave's ``{"call_usage": ..., "unfinished_call_ids": ...}``.

The JSON is assembled by Polars string expressions, so a 100,000-call answer never becomes
100,000 pydantic objects; :func:`to_dict` parses that same text for Python callers.

A 100,000-call answer is ~50 MB of JSON, so the text is written in one pass: one piece per
usage row, in answer order, each carrying what comes before it: a comma, or for a call's
first row the close of the call before, the calls with no usage since, and its own opening.
The pieces of a batch of rows lie back to back in Polars' string buffers, which
:func:`json_chunks` hands out without copying, batch by batch, so that a server can send
one batch while the next is being written. A batch is one Polars query, whatever the size
(and the calls' openings none: Arrow writes them), with the per-metric expressions built
once per kind of usage frame.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema as s
from engine import workers

_HEAD = b'{"call_usage":{'
_BATCH_ROWS = 16_384  # ~5 MB of text: small enough to overlap writing with sending
_INLINE = 12  # Arrow string views hold a string of up to 12 bytes in the view itself
# a call's text around its id (``},"id":{``), joined with no separator
_CLOSE, _OPEN, _JOINED = (pa.scalar(text, pa.large_string()) for text in ('},"', '":{', ""))


def _large_text(values: pl.Series) -> pa.LargeStringArray:
    """``values`` as one Arrow ``large_string`` array: one data buffer, 64-bit offsets."""
    text = values.to_arrow().cast(pa.large_string())
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _needs_escape(text: pa.LargeStringArray) -> bool:
    """Whether a value holds a character a JSON string literal cannot hold as it is."""
    data = text.buffers()[2]
    if data is None:
        return False
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset :]
    raw = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[len(text)]]
    return bool(len(raw)) and bool(raw.min() < 0x20 or (raw == 0x22).any() or (raw == 0x5C).any())


def _escaped(text: pl.Expr) -> pl.Expr:
    """``text`` escaped for a JSON string literal, without the quotes."""
    return pl.struct(text.alias("k")).struct.json_encode().str.slice(6).str.strip_suffix('"}')


def _positions(call_ids: pl.Series, usage: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``usage`` rows of ``call_ids`` ordered by call, and the row number of each's call."""
    index = pl.DataFrame({s.ID: call_ids.cast(pl.String)}).with_row_index("__call")
    ordered = usage.join(index, on=s.ID, how="inner").sort("__call", maintain_order=True)
    return ordered.drop("__call"), ordered.get_column("__call").cast(pl.Int64).to_numpy()


def _kind(column: pl.Series) -> str:
    """How a metric column is written: ``null`` (all null), ``text`` (as cast to text),
    ``nullable`` (some null), ``nonfinite`` (a float that is not finite), ``other``."""
    nulls, dtype = column.null_count(), column.dtype
    if nulls == column.len():
        return "null"
    if not dtype.is_numeric():
        return "other"
    if dtype.is_float():
        values = column.to_numpy()  # nulls as NaN: more non-finite values than nulls?
        if values.size - np.count_nonzero(np.isfinite(values)) > nulls:
            return "nonfinite"
    return "nullable" if nulls else "text"


def _value(name: str, kind: str) -> pl.Expr | str:
    """A metric as JSON text: integers and finite floats as they are, the rest ``null``."""
    if kind == "null":
        return "null"
    text = pl.col(name).cast(pl.String)
    if kind == "nonfinite":
        text = pl.when(pl.col(name).is_finite()).then(text)
    return text if kind == "text" else text.fill_null("null")


@functools.lru_cache(maxsize=64)
def _entry(metrics: tuple[tuple[str, str], ...], escape_model: bool) -> tuple[pl.Expr, ...]:
    """The parts of ``"model":{"metric":value,...}`` for each usage row, for ``metrics``
    (name and :func:`_kind`); built once per kind of usage frame, as the expressions cost
    more to build than to run on a few rows."""
    model = pl.col(s.MODEL)
    parts: list[pl.Expr | str] = ['"', _escaped(model) if escape_model else model]
    if any(kind == "other" for _, kind in metrics):
        names = [name for name, _ in metrics]
        parts += ['":', pl.struct(names).struct.json_encode()]
    else:
        for i, (name, kind) in enumerate(metrics):
            parts.append('":{' * (i == 0) + "," * (i > 0) + f'"{name}":')
            parts.append(_value(name, kind))
        parts.append("}" if metrics else '":{}')
    merged: list[pl.Expr | str] = []  # adjacent constant texts as one literal
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    return tuple(pl.lit(p) if isinstance(p, str) else p for p in merged)


def _heads(ids: pa.LargeStringArray, openers: np.ndarray) -> tuple[pl.Series, memoryview]:
    """The text in front of the first usage row of each call in ``openers`` (increasing row
    numbers in ``ids``), and the text after the last one.

    Every call is written ``},"id":{``: it closes the call before it and opens its own, so a
    call without usage becomes ``"id":{}`` once the next one is written. The text in front
    of an opener is that of the calls since the previous opener, itself included: a range
    of the text of all calls, so each is new offsets over the same data buffer.
    """
    text = pc.binary_join_element_wise(_CLOSE, ids, _OPEN, _JOINED)
    ends = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset :][: len(text) + 1]
    data = text.buffers()[2] or pa.py_buffer(b"")
    bounds = np.ascontiguousarray(ends[np.append(0, openers + 1)])
    heads = pa.LargeStringArray.from_buffers(len(openers), pa.py_buffer(bounds), data)
    return pl.Series(heads), memoryview(data)[bounds[-1] : ends[-1]]


def _spread(values: pl.Expr, where: np.ndarray, size: int, fill: str) -> pl.Expr:
    """``values`` placed at the increasing positions ``where`` of ``size`` rows, ``fill``
    at the others."""
    if len(where) == size:
        return values
    if not len(where):
        return pl.lit(fill)
    at = np.zeros(size, dtype=np.int64)
    at[where] = np.arange(len(where))
    unset = np.ones(size, dtype=bool)
    unset[where] = False
    return values.gather(pl.lit(pl.Series(pa.array(at, mask=unset)))).fill_null(fill)


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
        end = offset + length
        # a new run of text where a piece does not start where the one before ends
        runs = np.flatnonzero((offset[1:] != end[:-1]) | (buffer[1:] != buffer[:-1])) + 1
        if (length > _INLINE).all() and (buffer[runs] > buffer[runs - 1]).all():
            bounds = [0, *runs.tolist(), len(arr)]
            for i, j in itertools.pairwise(bounds):
                yield memoryview(buffers[2 + buffer[i]])[offset[i] : end[j - 1]]
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

    The first call's ``},`` is dropped, and the text after the last usage row closes the
    last call.

    Work happens as the pieces are asked for, a batch of rows at a time; while one batch is
    being handed out the next is written on a worker thread, so at most two batches' text
    is held at once.
    """
    if call_index is None:
        usage, call_index = _positions(call_ids, usage)
    call_ids = call_ids if call_ids.dtype == pl.String else call_ids.cast(pl.String)
    ids = _large_text(call_ids)
    if _needs_escape(ids):
        ids = _large_text(pl.select(_escaped(pl.lit(call_ids))).to_series())
    n, m = len(ids), len(call_index)
    first = np.ones(m, dtype=bool)
    np.not_equal(call_index[1:], call_index[:-1], out=first[1:])
    starts = np.flatnonzero(first)  # the first usage row of each call that has some
    heads, tail = _heads(ids, call_index[starts])
    kinds = tuple((c.name, _kind(c)) for c in usage.get_columns() if c.name not in (s.ID, s.MODEL))
    entry = _entry(kinds, m > 0 and _needs_escape(_large_text(usage.get_column(s.MODEL))))

    def batch(lo: int) -> pl.Series:
        rows = usage.slice(lo, _BATCH_ROWS)
        k_lo, k_hi = np.searchsorted(starts, (lo, lo + rows.height)).tolist()
        head = pl.lit(heads.slice(k_lo, k_hi - k_lo))
        prefix = _spread(head, starts[k_lo:k_hi] - lo, rows.height, ",")
        return rows.select(pl.concat_str(prefix, *entry)).to_series()

    yield _HEAD
    starts_at = range(0, m, _BATCH_ROWS)
    # several batches: the next one is written on a worker thread meanwhile
    texts = map(batch, starts_at) if m <= _BATCH_ROWS else workers.map_ahead(batch, starts_at)
    skip = 2  # the first call's "},"
    for piece in itertools.chain.from_iterable(map(_buffers, texts)):
        yield memoryview(piece)[skip:] if skip else piece
        skip = 0
    yield tail[skip:]
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
