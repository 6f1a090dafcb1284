"""summary.usage -> long usage rows, one per (call, model).

Weave keys ``summary.usage`` by model name, so its shape is data-dependent: a typed
``str.json_decode`` cannot describe it, and Polars' schema inference fails on the mixed
shapes real clients send. Parsing is therefore done once per call with orjson, at the
edge (store ingest, file import); everything after that is Polars.

Counters follow the reference's ``_safe_int``: Python ``int()`` of the value, 0 when that
fails. Rows keep the eight *raw* counters so the ``auto`` mode can compare a parent's
stored usage with its children's; :func:`normalize` derives the six reported tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import polars as pl

from engine import schema as s
from engine.errors import InputDataError


def safe_int(value: Any) -> int:
    """Python ``int(value)``, 0 when that fails (as the reference's ``_safe_int``).

    Examples
    --------
    >>> safe_int("12"), safe_int(3.9), safe_int(True), safe_int("x"), safe_int(None)
    (12, 3, 1, 0, 0)
    """
    if value is None:
        return 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    if not -s.INT64_MAX <= number <= s.INT64_MAX:
        raise InputDataError(f"token count {number} is outside the 64-bit range")
    return number


def usage_entries(summary: Any) -> list[tuple[Any, ...]]:
    """``(model, *RAW_COUNTERS)`` tuples for one parsed summary; non-dict entries skipped.

    Examples
    --------
    >>> usage_entries({"usage": {"gpt-4o": {"input_tokens": "7"}, "bad": 3}})
    [('gpt-4o', 0, 7, 0, 0, 0, 0, 0, 0)]
    """
    if not isinstance(summary, dict):
        return []
    usage = summary.get("usage")
    if not isinstance(usage, dict):
        return []
    return [
        (str(model), *(safe_int(counters.get(name)) for name in s.RAW_COUNTERS))
        for model, counters in usage.items()
        if isinstance(counters, dict)
    ]


_ENTRY_SCHEMA: dict[str, pl.DataType] = {
    name: dtype for name, dtype in s.USAGE_SCHEMA.items() if name != s.ID
}


def usage_from_json(calls: pl.DataFrame, keys: Sequence[str] = (s.ID,)) -> pl.DataFrame:
    """Raw usage rows from the ``summary`` JSON text of ``calls``: the ``keys`` columns of
    each call, then ``model`` and the raw counters (``USAGE_SCHEMA`` for the default key).

    Examples
    --------
    >>> calls = pl.DataFrame({"id": ["a", "b"], "summary": ['{"usage": {"m": {}}}', None]})
    >>> usage_from_json(calls).select("id", "model").rows()
    [('a', 'm')]
    """
    has_usage = pl.col(s.SUMMARY).str.contains('"usage"', literal=True).fill_null(False)
    candidates = calls.filter(has_usage)
    try:
        parsed = [orjson.loads(text) for text in candidates.get_column(s.SUMMARY)]
    except orjson.JSONDecodeError as err:
        raise InputDataError(f"summary is not valid JSON: {err}") from err
    owners: list[int] = []  # the candidate row of each entry
    entries: list[tuple[Any, ...]] = []
    for row, summary in enumerate(parsed):
        found = usage_entries(summary)
        owners.extend([row] * len(found))
        entries.extend(found)
    counters = pl.DataFrame(entries, schema=_ENTRY_SCHEMA, orient="row")
    owner_keys = candidates.select(keys)[owners] if owners else candidates.select(keys).clear()
    return pl.concat([owner_keys, counters], how="horizontal")


def normalize(raw: pl.LazyFrame) -> pl.LazyFrame:
    """Reported tokens from raw counters; drops entries with no usage at all.

    prompt = prompt_tokens + input_tokens, completion = completion_tokens + output_tokens,
    total = total_tokens, or prompt + completion when that is 0. An entry with all six
    reported tokens 0 is dropped, as the reference drops it (its costs are 0 too).
    """
    prompt = pl.col("prompt_tokens") + pl.col("input_tokens")
    completion = pl.col("completion_tokens") + pl.col("output_tokens")
    total = pl.when(pl.col("total_tokens") == 0).then(prompt + completion)
    tokens = raw.select(
        s.ID,
        s.MODEL,
        pl.col("requests").alias(s.REQUESTS),
        prompt.alias(s.PROMPT_TOKENS),
        completion.alias(s.COMPLETION_TOKENS),
        total.otherwise(pl.col("total_tokens")).alias(s.TOTAL_TOKENS),
        pl.col("cache_read_input_tokens").alias(s.CACHE_READ),
        pl.col("cache_creation_input_tokens").alias(s.CACHE_CREATION),
    )
    return tokens.filter(pl.any_horizontal(pl.col(name) != 0 for name in s.TOKENS))
