"""Rolled-up usage frame -> Weave's ``{"call_usage": ..., "unfinished_call_ids": ...}``.

The JSON is assembled by Polars string expressions, so a 100,000-call answer never becomes
100,000 pydantic objects; :func:`to_dict` parses that same text for Python callers.

A 100,000-call answer is ~50 MB of JSON, so the text is written in one pass: one piece per
usage row, in answer order, each carrying whatever comes before it (the call's opening, the
calls with no usage since the previous row's call) and after it (the closing brace, and on
the last row the rest of the document). The pieces then lie back to back in one Arrow
buffer; it is copied out once, in batches, into the body.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import polars as pl
import pyarrow as pa

from engine import schema as s

_ESCAPED = r'[\x00-\x1f"\\]'  # characters a JSON string literal cannot hold as they are
_HEAD = '{"call_usage":{'
_BATCH_ROWS = 250_000


def _json_inner(values: pl.Series) -> pl.Series:
    """``values`` escaped for a JSON string literal, without the quotes (most values, like
    ids and model names, need no escaping and are returned as they are)."""
    values = values.cast(pl.String)
    if not values.str.contains(_ESCAPED).any():
        return values
    encoded = values.alias("k").to_frame().select(pl.struct("k").struct.json_encode())
    return encoded.to_series().str.slice(6).str.strip_suffix('"}')


def _positions(call_ids: pl.Series, usage: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """``usage`` rows of ``call_ids`` ordered by call, and the row number of each's call."""
    index = pl.DataFrame({s.ID: call_ids.cast(pl.String)}).with_row_index("__call")
    ordered = usage.join(index, on=s.ID, how="inner").sort("__call", maintain_order=True)
    return ordered.drop("__call"), ordered.get_column("__call").cast(pl.Int64).to_numpy()


def _value(name: str, column: pl.Series) -> pl.Expr:
    """A metric as JSON text: integers and finite floats as they are, the rest ``null``."""
    if column.null_count() == column.len():
        return pl.lit("null")
    text = pl.col(name).cast(pl.String)
    if column.dtype.is_float() and not column.is_finite().fill_null(True).all():
        text = pl.when(pl.col(name).is_finite()).then(text)
    return text.fill_null("null")


def _entries(usage: pl.DataFrame, metrics: list[str]) -> list[pl.Expr]:
    """The parts of ``"model":{"metric":value,...}`` for each usage row."""
    model = _json_inner(usage.get_column(s.MODEL))
    parts: list[pl.Expr] = [pl.lit('"'), pl.lit(model)]
    if not all(usage.schema[m].is_numeric() for m in metrics):
        return [*parts, pl.lit('":'), pl.struct(metrics).struct.json_encode()]
    for i, name in enumerate(metrics):
        parts.append(pl.lit('":{' * (i == 0) + "," * (i > 0) + f'"{name}":'))
        parts.append(_value(name, usage.get_column(name)))
    parts.append(pl.lit("}" if metrics else '":{}'))
    return parts


def _items(call_ids: pl.Series, ids: pl.Series, which: np.ndarray, body: str) -> pl.Series:
    """``"id":`` + ``body`` for the calls ``which``, each after a comma but the very first."""
    return pl.select(
        pl.concat_str(_choose(which > 0, ',"', '"'), pl.lit(ids.gather(which)), pl.lit('":' + body))
    ).to_series()


def _choose(mask: np.ndarray, yes: str, no: str) -> pl.Expr:
    """``yes`` where ``mask``, else ``no`` (built by Polars: numpy strings convert slowly)."""
    return (
        pl.when(pl.lit(pl.Series(mask, dtype=pl.Boolean))).then(pl.lit(yes)).otherwise(pl.lit(no))
    )


def _write(out: io.BytesIO, pieces: pl.Series) -> None:
    """Append the concatenation of ``pieces`` to ``out``.

    Polars writes strings longer than 12 bytes back to back into its string buffers, so
    when every piece is that long their text is copied straight out of those buffers;
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
                out.write(memoryview(buffers[2 + buffer[i]])[offset[i] : offset[j] + length[j]])
            return
    large = pieces.to_arrow().cast(pa.large_string())
    if isinstance(large, pa.ChunkedArray):
        large = large.combine_chunks()
    offsets = np.frombuffer(large.buffers()[1], dtype=np.int64)[large.offset :]
    data = large.buffers()[2]
    if data is not None:
        out.write(memoryview(data)[int(offsets[0]) : int(offsets[len(large)])])


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
    if call_index is None:
        usage, call_index = _positions(call_ids, usage)
    tail = '},"unfinished_call_ids":' + orjson.dumps(unfinished).decode() + "}"
    ids = _json_inner(call_ids)
    n, m = call_ids.len(), len(call_index)
    has_usage = np.zeros(n, dtype=bool)
    has_usage[call_index] = True
    empty = np.flatnonzero(~has_usage)
    if m == 0:
        return (_HEAD + "".join(_items(call_ids, ids, empty, "{}")) + tail).encode()

    first = np.ones(m, dtype=bool)
    np.not_equal(call_index[1:], call_index[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    openers = call_index[starts]
    # calls with no usage go in front of the next call that has some, or at the very end
    gaps = (
        pl.DataFrame(
            {"slot": np.searchsorted(openers, empty), "item": _items(call_ids, ids, empty, "{}")}
        )
        .group_by("slot", maintain_order=True)
        .agg(pl.col("item").str.join(""))
    )
    end = "".join(gaps.filter(pl.col("slot") == len(openers)).get_column("item").to_list())
    opening = (
        pl.DataFrame({"slot": np.arange(len(openers)), "call": _items(call_ids, ids, openers, "{")})
        .join(gaps, on="slot", how="left", maintain_order="left")
        .select(pl.concat_str(pl.col("item").fill_null(""), "call"))
        .to_series()
    )
    opening = opening.scatter(0, _HEAD + opening[0])
    prefix = pl.repeat(",", m, eager=True).scatter(starts, opening)
    suffix = pl.select(_choose(np.append(first[1:], True), "}", "")).to_series()
    suffix = suffix.scatter(m - 1, "}" + end + tail)
    metrics = [c for c in usage.columns if c not in (s.ID, s.MODEL)]
    # in batches, so that only one batch of pieces exists next to the growing body
    out = io.BytesIO()
    for lo in range(0, m, _BATCH_ROWS):
        rows = usage.slice(lo, _BATCH_ROWS)
        pieces = rows.select(
            pl.concat_str(
                pl.lit(prefix.slice(lo, _BATCH_ROWS)),
                *_entries(rows, metrics),
                pl.lit(suffix.slice(lo, _BATCH_ROWS)),
            )
        ).to_series()
        _write(out, pieces)
        del pieces
    return out.getvalue()  # the buffer itself, not a copy


def to_dict(
    call_ids: pl.Series,
    usage: pl.DataFrame,
    unfinished: list[str],
    call_index: np.ndarray | None = None,
) -> dict[str, Any]:
    """The same answer as plain Python objects."""
    return orjson.loads(to_json(call_ids, usage, unfinished, call_index))
