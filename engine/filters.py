"""``CallsFilter`` -> Polars predicates, one per set field (weave 0.53.12
``_calls_filter_matches``). Empty lists of op names, refs and ids mean "no filter"; an
empty ``thread_ids`` or ``turn_ids`` matches nothing.
"""

from __future__ import annotations

import polars as pl

from engine import schema as s
from engine.errors import QueryTooComplexError
from engine.models import CallsFilter

WILDCARD = ":*"
MAX_FILTER_LENGTH = 1000
_ID_FIELDS = (
    ("parent_ids", s.PARENT_ID),
    ("trace_ids", s.TRACE_ID),
    ("call_ids", s.ID),
    ("wb_run_ids", s.WB_RUN_ID),
    ("wb_user_ids", s.WB_USER_ID),
)
_EXPLICIT_FIELDS = (("thread_ids", s.THREAD_ID), ("turn_ids", s.TURN_ID))
_CHECKED = ("op_names", "input_refs", "output_refs", "parent_ids", "trace_ids", "call_ids")


def filter_exprs(filter: CallsFilter | None) -> list[pl.Expr]:
    """Predicates that together keep the calls ``filter`` selects.

    Examples
    --------
    >>> calls = pl.DataFrame({"op_name": ["weave:///e/p/op/a:1", "b"], "parent_id": [None, "x"]})
    >>> calls.filter(filter_exprs(CallsFilter(op_names=["weave:///e/p/op/a:*"])))["op_name"].to_list()
    ['weave:///e/p/op/a:1']
    """
    if filter is None:
        return []
    _check_lengths(filter)
    preds: list[pl.Expr] = []
    if filter.op_names:
        preds.append(_names_match(pl.col(s.OP_NAME), filter.op_names))
    if filter.input_refs:
        preds.append(_refs_match(pl.col(s.INPUT_REFS), filter.input_refs))
    if filter.output_refs:
        preds.append(_refs_match(pl.col(s.OUTPUT_REFS), filter.output_refs))
    for field, column in _ID_FIELDS:
        values = getattr(filter, field)
        if values:
            preds.append(pl.col(column).is_in(values).fill_null(False))
    if filter.trace_roots_only:
        preds.append(pl.col(s.PARENT_ID).is_null())
    for field, column in _EXPLICIT_FIELDS:
        values = getattr(filter, field)
        if values is not None:
            preds.append(pl.col(column).is_in(values).fill_null(False))
    return preds


def _check_lengths(filter: CallsFilter) -> None:
    for field in (*_CHECKED, "thread_ids", "turn_ids"):
        values = getattr(filter, field)
        if values is not None and len(values) > MAX_FILTER_LENGTH:
            raise QueryTooComplexError(
                f"filter.{field} has {len(values)} values; at most {MAX_FILTER_LENGTH} allowed",
                path=f"filter.{field}",
            )


def split_wildcards(values: list[str]) -> tuple[list[str], list[str]]:
    """Exact values and the prefixes (``name:``) of the ``name:*`` ones."""
    exact = [v for v in values if not v.endswith(WILDCARD)]
    prefixes = [v[: -len(WILDCARD)] + ":" for v in values if v.endswith(WILDCARD)]
    return exact, prefixes


def _names_match(name: pl.Expr, values: list[str]) -> pl.Expr:
    exact, prefixes = split_wildcards(values)
    hits = [name.is_in(exact)] + [name.str.starts_with(p) for p in prefixes]
    return pl.any_horizontal(hits).fill_null(False)


def _refs_match(refs: pl.Expr, values: list[str]) -> pl.Expr:
    exact, prefixes = split_wildcards(values)
    hits = [refs.list.eval(pl.element().is_in(exact)).list.any()]
    hits += [refs.list.eval(pl.element().str.starts_with(p)).list.any() for p in prefixes]
    return pl.any_horizontal(hits).fill_null(False)
