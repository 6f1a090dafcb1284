"""A request's token sums fit in 64 bits, or it is refused: never a wrapped number.

The engine adds counters in 64-bit integers (a call's prompt is ``prompt_tokens +
input_tokens``, a subtree's total the sum of its calls'), where Weave's Python integers are
exact. Every such sum adds some of a request's raw counters, with signs, so it is bounded by
the sum of their absolute values over all usage rows of the request; when that bound fits,
no sum can wrap. It is conservative only where the counters are near 2**63 in total.
"""

from __future__ import annotations

import polars as pl

from engine import schema as s
from engine.errors import InputDataError

_PROMPT = ("prompt_tokens", "input_tokens")
_COMPLETION = ("completion_tokens", "output_tokens")
# each reported number (and each difference priced), and the raw counters it is made of
_SUMS: dict[str, tuple[str, ...]] = {
    s.REQUESTS: ("requests",),
    s.PROMPT_TOKENS: _PROMPT,
    s.COMPLETION_TOKENS: _COMPLETION,
    s.TOTAL_TOKENS: ("total_tokens", *_PROMPT, *_COMPLETION),  # either total or p + c
    s.CACHE_READ: ("cache_read_input_tokens",),
    s.CACHE_CREATION: ("cache_creation_input_tokens",),
}
_BILLED = (
    "billed prompt tokens",
    (*_PROMPT, "cache_read_input_tokens", "cache_creation_input_tokens"),
)


def check_sums(usage: pl.DataFrame | pl.LazyFrame, *, costs: bool) -> None:
    """Raise ``InputDataError`` when a sum of the raw counters of ``usage`` (usage rows as
    :data:`engine.schema.USAGE_SCHEMA`) could pass 2**63 - 1; ``costs`` adds the billed
    prompt (prompt minus cached tokens).

    A cheap bound (rows times the largest magnitudes) clears ordinary usage with a minimum
    and a maximum per counter; only past it are the exact sums of magnitudes taken (in 128
    bits). An eager frame is read as it is: no query.

    Examples
    --------
    >>> big = 2**62 + 5  # two of them wrap: 2**63 + 10
    >>> rows = pl.DataFrame({"id": ["a", "b"], "prompt_tokens": [big, big]})
    >>> try:
    ...     check_sums(rows, costs=False)
    ... except InputDataError as err:
    ...     print(err.reason.split(" of ")[0])
    token counts too large: prompt_tokens + input_tokens
    >>> check_sums(rows.head(1), costs=False)  # one of them fits
    """
    counters = _counters(usage)
    if not counters:
        return
    sums = dict(_SUMS)
    if costs:
        sums[_BILLED[0]] = _BILLED[1]
    rows = len(counters[0])
    # magnitudes as Python ints (|-2**63| does not fit 64 bits)
    peak = {c.name: max(abs(_int(c.max())), abs(_int(c.min()))) for c in counters}
    if all(rows * sum(peak.get(c, 0) for c in parts) <= s.INT64_MAX for parts in sums.values()):
        return
    magnitude = {c.name: c.cast(pl.Int128).abs().sum() for c in counters}
    for name, parts in sums.items():
        bound = sum(magnitude.get(c, 0) for c in parts)
        if bound > s.INT64_MAX:
            raise InputDataError(
                f"token counts too large: {' + '.join(parts)} of these calls add up to "
                f"{bound} in magnitude, so their {name} could pass 2**63 - 1, the largest "
                "sum this server computes exactly"
            )


def _int(value: object) -> int:
    """A counter column's min or max (an int, or None for an empty or all-null column)."""
    return value if isinstance(value, int) else 0


def _counters(usage: pl.DataFrame | pl.LazyFrame) -> list[pl.Series]:
    """The raw counters of ``usage`` as ``Int64`` columns (absent ones read as null, so
    they add nothing); a query runs only for lazy or differently typed input."""
    if isinstance(usage, pl.DataFrame):
        schema = usage.schema  # built anew on every access
        if all(schema.get(c, pl.Int64) == pl.Int64 for c in s.RAW_COUNTERS):
            return [usage.get_column(c) for c in s.RAW_COUNTERS if c in schema]
    conformed = s.conform(usage.lazy(), s.USAGE_SCHEMA, "usage").select(s.RAW_COUNTERS)
    return conformed.collect(engine=s.ENGINE).get_columns()
