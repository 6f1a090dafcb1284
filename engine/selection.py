"""Which calls a request selects: candidates, then CallsFilter and $expr, as one predicate.

Placeholder until the query compiler lands: trace_ids, call_ids, parent_ids and
trace_roots_only only.
"""

from __future__ import annotations

import polars as pl

from engine import schema as s
from engine.models import CallsFilter, Query


def select_calls(
    calls: pl.LazyFrame, filter: CallsFilter | None, query: Query | None
) -> pl.LazyFrame:
    """Rows of ``calls`` that ``filter`` and ``query`` keep."""
    preds: list[pl.Expr] = []
    if filter is not None:
        for field, column in (
            ("trace_ids", s.TRACE_ID),
            ("call_ids", s.ID),
            ("parent_ids", s.PARENT_ID),
        ):
            values = getattr(filter, field)
            if values:
                preds.append(pl.col(column).is_in(values))
        if filter.trace_roots_only:
            preds.append(pl.col(s.PARENT_ID).is_null())
    return calls.filter(*preds) if preds else calls
