"""Which calls a request selects: ``CallsFilter`` and ``$expr`` as one predicate.

JSON fields the query reads are extracted once into helper columns, which are dropped
again after the filter, so the result keeps the input's columns. Compiled predicates are
kept for the last few distinct (filter, query) pairs: a trace view polls with the same
filter, and a service asks for the columns a request reads before it selects.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from functools import reduce
from operator import and_

import polars as pl
from pydantic_core import PydanticSerializationError

from engine.filters import filter_exprs
from engine.models import CallsFilter, Query
from engine.query import Ctx, compile_predicate, parse_query

_KEPT = 256
_kept: OrderedDict[tuple[str, str], tuple[tuple[pl.Expr, ...], Ctx]] = OrderedDict()
_lock = threading.Lock()


def _compile(filter: CallsFilter | None, query: Query | None) -> tuple[tuple[pl.Expr, ...], Ctx]:
    preds = filter_exprs(filter)
    ctx = Ctx()
    if query is not None:
        preds.append(compile_predicate(parse_query(query.expr_), ctx))
    return tuple(preds), ctx


def _compiled(filter: CallsFilter | None, query: Query | None) -> tuple[tuple[pl.Expr, ...], Ctx]:
    """:func:`_compile`, kept by the pair's JSON (expressions and a compiled ``Ctx`` are
    only read afterwards); a pair pydantic cannot serialize is compiled every time."""
    try:
        key = (
            filter.model_dump_json() if filter is not None else "",
            query.model_dump_json(by_alias=True) if query is not None else "",
        )
    except PydanticSerializationError:
        return _compile(filter, query)
    with _lock:
        kept = _kept.get(key)
        if kept is not None:
            _kept.move_to_end(key)
            return kept
    kept = _compile(filter, query)
    with _lock:
        _kept[key] = kept
        while len(_kept) > _KEPT:
            _kept.popitem(last=False)
    return kept


def columns_read(filter: CallsFilter | None, query: Query | None) -> set[str]:
    """The call columns ``filter`` and ``query`` read, so a store can load only those.

    Examples
    --------
    >>> q = Query.model_validate({"$expr": {"$gt": [{"$getField": "inputs.k"}, {"$literal": 1}]}})
    >>> sorted(columns_read(CallsFilter(trace_ids=["t"]), q))
    ['inputs', 'trace_id']
    """
    preds, ctx = _compiled(filter, query)
    helpers = [e for stage in ctx.stages for e in stage.values()]
    read = {name for e in (*preds, *helpers) for name in e.meta.root_names()}
    return read - set(ctx.names)


def select_calls(
    calls: pl.LazyFrame, filter: CallsFilter | None, query: Query | None
) -> pl.LazyFrame:
    """Rows of ``calls`` that ``filter`` and ``query`` keep (still lazy).

    Examples
    --------
    >>> calls = pl.LazyFrame({"id": ["a", "b"], "inputs": ['{"k": 1}', '{"k": 2}']})
    >>> q = Query.model_validate({"$expr": {"$gt": [{"$getField": "inputs.k"}, {"$literal": 1}]}})
    >>> select_calls(calls, None, q).collect()["id"].to_list()
    ['b']
    """
    preds, ctx = _compiled(filter, query)
    if not preds:
        return calls
    return ctx.apply(calls).filter(reduce(and_, preds)).drop(ctx.names)
