"""Orchestration of ``/trace/usage`` and ``/calls/usage``: select -> usage -> price -> roll up.

Both endpoints answer from a frame of calls in :data:`engine.schema.CALL_SCHEMA` (eager or
lazy). The selection is collected once; usage is read from a pre-extracted usage frame when
the caller has one (the store does) and parsed from ``summary`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from engine import schema as s
from engine.client_rollup import drop_client_rollups
from engine.errors import AnswerTooLargeError, InputDataError, InvalidRequestError
from engine.models import (
    SUMMARY_USAGE_MODES,
    CallsFilter,
    CallsUsageReq,
    SummaryUsageMode,
    TraceUsageReq,
)
from engine.overflow import check_sums
from engine.pricing import cost_rows, default_prices, default_table, lookup_prices, price_table
from engine.rollup import Tree, index_tree, rollup_rows
from engine.selection import select_calls
from engine.serialize import json_chunks, to_dict, to_json
from engine.usage import normalize, usage_from_json

Frame = pl.DataFrame | pl.LazyFrame
_REQUIRED = (s.PROJECT_ID, s.ID, s.OP_NAME, s.STARTED_AT)


P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)


def engine_call(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with Polars errors as ``InputDataError``.

    Polars errors raised while reading the calls (bad JSON text, wrong column types) become
    ``InputDataError``, so callers see one error family and the service a 422.
    """

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except pl.exceptions.PolarsError as err:
            raise InputDataError(f"cannot read the calls: {err}".splitlines()[0]) from err

    return wrapper


@dataclass(frozen=True)
class UsageResult:
    """An answer: per-call rolled-up usage rows plus the ids that are still running.

    ``call_ids`` lists every call in the answer, in answer order; ``usage`` has one row per
    (call, model) in :data:`engine.schema.RESULT_SCHEMA` (costs null unless requested).
    ``call_index``, when known, is the row number in ``call_ids`` of each ``usage`` row
    (non-decreasing), which spares serialization a join. ``truncated_from`` is the number
    of calls the selection held when ``limit`` cut it (the body does not say so: Weave's
    shape has no field for it), else None.
    """

    call_ids: pl.Series
    usage: pl.DataFrame
    unfinished_call_ids: list[str]
    call_index: np.ndarray | None = None
    truncated_from: int | None = None

    @engine_call
    def to_json(self) -> bytes:
        """The response body, exactly as the HTTP endpoint sends it."""
        return to_json(self.call_ids, self.usage, self.unfinished_call_ids, self.call_index)

    def json_chunks(self) -> Iterator[bytes | memoryview]:
        """:meth:`to_json` in pieces, each written when asked for (for streaming a big
        answer while the rest is being written)."""
        return json_chunks(self.call_ids, self.usage, self.unfinished_call_ids, self.call_index)

    @engine_call
    def to_dict(self) -> dict[str, Any]:
        """The response as plain Python objects."""
        return to_dict(self.call_ids, self.usage, self.unfinished_call_ids, self.call_index)


def parse_request(model: type[M], req: M | dict[str, Any]) -> M:
    """``req`` as ``model`` (a dict is validated): the engine's entry points take either."""
    if isinstance(req, model):
        return req
    try:
        return model.model_validate(req)
    except ValidationError as err:
        raise InvalidRequestError(f"invalid {model.__name__}: {err}") from err


def _mode(requested: str | None, default: str | None) -> SummaryUsageMode:
    mode = requested or default or "own"
    if mode not in SUMMARY_USAGE_MODES:
        allowed = ", ".join(repr(m) for m in SUMMARY_USAGE_MODES)
        raise InvalidRequestError(
            f"summary_usage must be one of {allowed}, not {mode!r}", path="summary_usage"
        )
    return mode  # type: ignore[return-value]


def candidate_calls(calls: Frame, project_id: str) -> pl.LazyFrame:
    """The calls any selection starts from: in the project, not deleted, with an op name and
    a start time (the reference's rules), in the canonical schema."""
    lf = calls.lazy()
    have = lf.collect_schema()
    missing = [c for c in _REQUIRED if c not in have]
    if missing:
        raise InputDataError(f"calls frame lacks required column {missing[0]!r}")
    lf = s.conform(lf, s.CALL_SCHEMA, "calls")
    return lf.filter(
        pl.col(s.DELETED_AT).is_null(),
        pl.col(s.PROJECT_ID) == project_id,
        pl.col(s.OP_NAME).is_not_null(),
        pl.col(s.STARTED_AT).is_not_null(),
    )


def _ordered(calls: pl.LazyFrame, limit: int) -> pl.LazyFrame:
    calls = calls.sort(s.STARTED_AT, s.ID)
    return calls.head(limit) if limit > 0 else calls


def _selection(calls: pl.LazyFrame, parse_summary: bool, *extra: str) -> pl.LazyFrame:
    """The selected calls with only the columns the answer needs (and ``extra``)."""
    needed = [s.ID, s.PARENT_ID, s.STARTED_AT, s.ENDED_AT, *([s.SUMMARY] * parse_summary), *extra]
    return calls.select(needed)


def _in_answer_order(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` sorted by ``started_at``, ``id`` (the answer's order).

    Stores keep calls in the order they started, so the sort is skipped when ``started_at``
    is already strictly increasing (which fixes the order without looking at ids).
    """
    started = frame.get_column(s.STARTED_AT).to_numpy()  # never null among candidates
    if not (started[1:] > started[:-1]).all():
        frame = frame.sort(s.STARTED_AT, s.ID)
    return frame


def _select(calls: pl.LazyFrame, parse_summary: bool, *extra: str) -> pl.DataFrame:
    """The selected calls in answer order, with the columns of :func:`_selection`."""
    return _in_answer_order(_selection(calls, parse_summary, *extra).collect(engine=s.ENGINE))


Prepared = tuple[pl.DataFrame, pl.DataFrame]  # normalized usage rows, raw counters


def _usage_plans(
    usage: Frame, tree_calls: pl.DataFrame | None, mode: SummaryUsageMode
) -> list[pl.LazyFrame]:
    """The plans of :data:`Prepared` for raw usage rows (``USAGE_SCHEMA``): the rows to
    roll up, and every raw counter, which :func:`check_sums` bounds. ``tree_calls`` (the
    selected ids and parents) is needed in mode ``"auto"`` only."""
    raw = rows = s.conform(usage.lazy(), s.USAGE_SCHEMA, "usage")
    if mode == "auto":
        assert tree_calls is not None
        picked = tree_calls.lazy().select(s.ID)
        rows = drop_client_rollups(raw.join(picked, on=s.ID, how="semi"), tree_calls.lazy())
    return [normalize(rows), raw.select(s.RAW_COUNTERS)]


def _collect(plans: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    """``plans`` run together: Polars plans and runs several small queries in about the
    time of one (a request is many small queries)."""
    return pl.collect_all(plans, engine=s.ENGINE)


_BATCH = "__batch"


def _batched(selected: pl.DataFrame, limit: int) -> pl.DataFrame:
    """``selected`` (with ``trace_id``) as weave 0.53.12's ``calls_usage`` rolls it up when
    it holds more than ``limit`` calls: the sorted trace ids are halved until each batch
    holds at most ``limit`` calls, and each batch is rolled up alone, so a parent in another
    batch ends the chain. A single trace over ``limit`` cannot be answered completely.
    """
    sizes = dict(selected.group_by(s.TRACE_ID).len().iter_rows())
    for trace, size in sizes.items():
        if size > limit:
            raise AnswerTooLargeError(
                f"cannot compute complete usage: trace {trace!r} has {size} calls, more than "
                f"the limit of {limit}; increase limit and retry",
                path="limit",
            )
    batch_of: dict[str, int] = {}
    pending = [sorted(sizes)]
    while pending:
        batch = pending.pop()
        if sum(sizes[t] for t in batch) > limit:
            pending += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        else:
            batch_of.update(dict.fromkeys(batch, len(batch_of)))
    batches = pl.DataFrame(
        {s.TRACE_ID: list(batch_of), _BATCH: list(batch_of.values())},
        schema={s.TRACE_ID: pl.String, _BATCH: pl.Int64},
    )
    with_batch = selected.join(batches, on=s.TRACE_ID, how="left", maintain_order="left")
    parents = with_batch.select(pl.col(s.ID).alias(s.PARENT_ID), pl.col(_BATCH).alias("__up"))
    same_batch = pl.col("__up") == pl.col(_BATCH)
    return (
        with_batch.join(parents, on=s.PARENT_ID, how="left", maintain_order="left")
        .with_columns(pl.when(same_batch).then(pl.col(s.PARENT_ID)).alias(s.PARENT_ID))
        .select(selected.columns)
    )


def _running(ids: pl.Series, ended: pl.Series) -> list[str]:
    """The ids of calls that have not ended, sorted (in NumPy and Arrow: no Polars query)."""
    if ended.null_count() == 0:  # a finished trace: nothing to look up
        return []
    running = np.flatnonzero(np.isnat(ended.to_numpy()))
    texts = ids.to_arrow().cast(pa.large_string()).take(pa.array(running, type=pa.int64()))
    return texts.take(pc.array_sort_indices(texts)).to_pylist()


def _compute(
    selected: pl.DataFrame,
    usage: Frame | None,
    prices: Frame | None,
    project_id: str,
    include_costs: bool,
    mode: SummaryUsageMode,
    prepared: Prepared | None = None,
) -> UsageResult:
    """The answer over ``selected``; ``prepared`` is the usage already collected with the
    selection, when it did not depend on it."""
    ids = selected.get_column(s.ID)
    tree_calls = pl.DataFrame([ids, selected.get_column(s.PARENT_ID)])
    if prepared is None:
        if usage is None:
            usage = usage_from_json(selected.select(s.ID, s.SUMMARY))
        rows, counters = _collect(_usage_plans(usage, tree_calls, mode))
    else:
        rows, counters = prepared
    check_sums(counters, costs=include_costs)  # no token sum below may pass 64 bits
    tree = index_tree(tree_calls, rows.get_column(s.ID))  # also rejects repeated ids
    kept = tree.row_call >= 0
    if not kept.all():  # usage of calls outside the selection (all of it when none is)
        rows, tree = rows.filter(pl.Series(kept)), Tree(tree.parent, tree.row_call[kept])
    group_keys = [s.MODEL]
    if include_costs:  # each row priced at its call's start, found by row number: no join
        table = default_table() if prices is None else prices
        started = selected.get_column(s.STARTED_AT).to_numpy()[tree.row_call]  # no query
        keys = pl.DataFrame([rows.get_column(s.MODEL), pl.Series(s.STARTED_AT, started)])
        rows = rows.hstack(lookup_prices(keys, table, project_id))
        group_keys = [s.MODEL, s.PRICE_SEQ, *s.PRICES]
    summed = rollup_rows(tree_calls, rows, group_keys, tree)
    unfinished = _running(ids, selected.get_column(s.ENDED_AT))
    usage_rows, call_index = cost_rows(
        ids, summed.call, summed.groups, summed.group, summed.totals, include_costs
    )
    return UsageResult(ids, usage_rows, unfinished, call_index)


@engine_call
def trace_usage(
    calls: Frame,
    req: TraceUsageReq | dict[str, Any],
    *,
    usage: Frame | None = None,
    prices: Frame | None = None,
    summary_usage: str | None = None,
) -> UsageResult:
    """Per-call usage, each call rolled up with its selected descendants (``/trace/usage``).

    Parameters
    ----------
    calls
        Calls in :data:`engine.schema.CALL_SCHEMA`; missing optional columns read as null.
    req
        A ``TraceUsageReq`` or its JSON-shaped dict.
    usage
        Raw usage rows (:data:`engine.schema.USAGE_SCHEMA`) already extracted from the
        calls' summaries; parsed from ``calls.summary`` when omitted.
    prices
        A price table in :data:`engine.schema.PRICE_SCHEMA`; default: the shipped table.
    summary_usage
        Default for ``req.summary_usage``: ``"own"`` (as Weave) or ``"auto"``.

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> calls = pl.DataFrame({
    ...     "project_id": ["e/p", "e/p"], "id": ["root", "llm"], "trace_id": ["t", "t"],
    ...     "parent_id": [None, "root"], "op_name": ["agent", "openai.chat"],
    ...     "started_at": [t0, t0], "ended_at": [t0, None],
    ...     "summary": [None, '{"usage": {"gpt-4o": {"prompt_tokens": 10, "requests": 1}}}'],
    ... })
    >>> res = trace_usage(calls, {"project_id": "e/p"}).to_dict()
    >>> res["call_usage"]["root"]["gpt-4o"]["prompt_tokens"], res["unfinished_call_ids"]
    (10, ['llm'])
    """
    req = parse_request(TraceUsageReq, req)
    mode = _mode(req.summary_usage, summary_usage)
    picked = select_calls(candidate_calls(calls, req.project_id), req.filter, req.query)
    plan = _selection(picked, usage is None)
    prepared: Prepared | None = None
    if usage is not None and mode == "own":  # the usage plans need no selected call
        found, rows, counters = _collect([plan, *_usage_plans(usage, None, mode)])
        prepared = (rows, counters)
    else:
        found = plan.collect(engine=s.ENGINE)
    selected = _in_answer_order(found)
    cut = 0 < req.limit < selected.height
    result = _compute(
        selected.head(req.limit) if cut else selected,
        usage,
        prices,
        req.project_id,
        req.include_costs,
        mode,
        prepared,
    )
    return replace(result, truncated_from=selected.height) if cut else result


@engine_call
def calls_usage(
    calls: Frame,
    req: CallsUsageReq | dict[str, Any],
    *,
    usage: Frame | None = None,
    prices: Frame | None = None,
    summary_usage: str | None = None,
) -> UsageResult:
    """Usage of each requested call over every call of its trace (``/calls/usage``).

    Ids that are not found answer ``{}``; ``unfinished_call_ids`` covers every call
    considered, as in the reference. Never partial, as weave 0.53.12: ``limit`` must be
    positive, and a trace of more than ``limit`` calls raises ``AnswerTooLargeError``.
    """
    req = parse_request(CallsUsageReq, req)
    mode = _mode(req.summary_usage, summary_usage)
    if req.limit < 1:
        raise InvalidRequestError(
            f"the usage aggregation limit must be positive, not {req.limit}", path="limit"
        )
    wanted = pl.Series(s.ID, list(dict.fromkeys(req.call_ids)), dtype=pl.String)
    empty = UsageResult(wanted, s.empty(s.RESULT_SCHEMA), [])
    if not req.call_ids:
        return empty
    candidates = candidate_calls(calls, req.project_id)
    roots = _ordered(
        select_calls(candidates, CallsFilter(call_ids=req.call_ids), None), len(req.call_ids)
    )
    trace_ids = roots.select(s.TRACE_ID).collect(engine=s.ENGINE).get_column(s.TRACE_ID).unique()
    if trace_ids.len() == 0:
        return empty
    traces = CallsFilter(trace_ids=trace_ids.to_list())
    selected = _select(select_calls(candidates, traces, None), usage is None, s.TRACE_ID)
    if selected.height > req.limit:
        selected = _batched(selected, req.limit)
    result = _compute(selected, usage, prices, req.project_id, req.include_costs, mode)
    return UsageResult(
        wanted,
        result.usage.join(wanted.to_frame(), on=s.ID, how="semi"),
        result.unfinished_call_ids,
    )


# default_prices and price_table are re-exported: the Python API has always named them here
__all__ = ["UsageResult", "calls_usage", "default_prices", "price_table", "trace_usage"]
