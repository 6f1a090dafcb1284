"""``$expr``, sort and paging over a small table of plain typed columns (price rows).

The same parser and compiler as the calls' query, with the table's columns as its fields
(:class:`~engine.query.fields.TableFields`), so ``/cost/query`` and ``/trace/usage`` read
one language with one set of rules and error messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from engine.errors import InvalidRequestError, QueryParseError
from engine.query.compile import compile_predicate
from engine.query.fields import Ctx, TableFields
from engine.query.parse import parse_query


def query_table(
    rows: pl.LazyFrame,
    expr: dict[str, Any] | None = None,
    sort_by: Sequence[tuple[str, bool]] = (),
    offset: int | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """The rows ``expr`` keeps, sorted by ``(field, descending)`` keys (nulls last, ties in
    table order), then paged.

    Examples
    --------
    >>> prices = pl.LazyFrame({"llm_id": ["a", "b", "c"], "prompt_token_cost": [1.0, 3.0, 2.0]})
    >>> cheap = {"$lt": [{"$getField": "prompt_token_cost"}, {"$literal": 3}]}
    >>> query_table(prices, cheap, [("prompt_token_cost", True)])["llm_id"].to_list()
    ['c', 'a']
    """
    for name, value in (("offset", offset), ("limit", limit)):
        if value is not None and value < 0:
            raise InvalidRequestError(f"{name} must be non-negative", path=name)
    schema = rows.collect_schema()
    for i, (name, _) in enumerate(sort_by):
        if name not in schema:
            raise QueryParseError(f"Unknown field: {name}", path=f"sort_by[{i}].field")
    if expr is not None:
        ctx = Ctx(fields=TableFields.of(schema))
        pred = compile_predicate(parse_query(expr), ctx)
        rows = ctx.apply(rows).filter(pred).drop(ctx.names)
    if sort_by:
        rows = rows.sort(
            [name for name, _ in sort_by],
            descending=[desc for _, desc in sort_by],
            nulls_last=True,
            maintain_order=True,
        )
    return rows.slice(offset or 0, limit).collect()
