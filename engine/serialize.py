"""Rolled-up usage frame -> Weave's ``{"call_usage": ..., "unfinished_call_ids": ...}``.

The JSON is assembled by Polars string expressions, so a 100,000-call answer never becomes
100,000 pydantic objects; :func:`to_dict` parses that same text for Python callers.
"""

from __future__ import annotations

from typing import Any

import orjson
import polars as pl

from engine import schema as s


def _json_string(col: str) -> pl.Expr:
    """``col`` as an escaped JSON string literal (``"..."``)."""
    encoded = pl.struct(pl.col(col).alias("k")).struct.json_encode()
    return encoded.str.slice(5).str.strip_suffix("}")


def to_json(call_ids: pl.Series, usage: pl.DataFrame, unfinished: list[str]) -> bytes:
    """Serialize a result: ``call_ids`` in answer order, ``usage`` in ``RESULT_SCHEMA``.

    Examples
    --------
    >>> usage = pl.DataFrame({"id": ["a"], "model": ["m"], "requests": [1]})
    >>> to_json(pl.Series(["a", "b"]), usage, ["b"])
    b'{"call_usage":{"a":{"m":{"requests":1}},"b":{}},"unfinished_call_ids":["b"]}'
    """
    metrics = [c for c in usage.columns if c not in (s.ID, s.MODEL)]
    per_model = usage.lazy().select(
        s.ID,
        pl.concat_str(
            _json_string(s.MODEL), pl.lit(":"), pl.struct(metrics).struct.json_encode()
        ).alias("entry"),
    )
    per_call = per_model.group_by(s.ID).agg(pl.col("entry").str.join(",").alias("models"))
    body = (
        pl.LazyFrame({s.ID: call_ids.cast(pl.String)})
        .with_row_index("__order")
        .join(per_call, on=s.ID, how="left")
        .sort("__order")
        .select(
            pl.concat_str(
                _json_string(s.ID), pl.lit(":{"), pl.col("models").fill_null(""), pl.lit("}")
            )
            .str.join(",")
            .alias("calls")
        )
        .collect()
        .item()
    )
    return b'{"call_usage":{%s},"unfinished_call_ids":%s}' % (
        (body or "").encode(),
        orjson.dumps(unfinished),
    )


def to_dict(call_ids: pl.Series, usage: pl.DataFrame, unfinished: list[str]) -> dict[str, Any]:
    """The same answer as plain Python objects."""
    return orjson.loads(to_json(call_ids, usage, unfinished))
