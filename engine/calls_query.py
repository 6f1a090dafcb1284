"""``/calls/stream_query`` and ``/calls/query_stats``: Weave's ``CallsSchema`` rows of a selection.

The selection is the one ``/trace/usage`` makes (:func:`engine.selection.select_calls` over
the same candidates); then weave 0.53.12's ``calls_query`` order: sort (``sort_by`` with
the implicit ``id`` tiebreaker, NULLs last in both directions, JSON fields by existence,
then as a number, then as text), ``offset``, ``limit``, the column projection, the derived
``summary.weave`` fields and, with ``include_costs``, ``summary.weave.costs``. Everything
up to the page is one lazy Polars query; only writing the page's JSON visits rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from engine import schema as s
from engine.calls_models import CallsQueryReq, CallsQueryStatsReq, CallsQueryStatsRes, SortBy
from engine.errors import InvalidRequestError
from engine.pricing import default_table, lookup_prices, token_costs
from engine.query import Ctx
from engine.query.ast import Convert, GetField
from engine.query.compile import to_val
from engine.query.fields import split_path
from engine.selection import columns_read, select_calls
from engine.trace_usage import candidate_calls, engine_call, parse_request
from engine.usage import usage_from_json

Frame = pl.DataFrame | pl.LazyFrame

# CallSchema's fields in its order; the sizes and wb_username are only filled on request
CALL_FIELDS = (
    s.ID, s.PROJECT_ID, s.OP_NAME, s.DISPLAY_NAME, s.TRACE_ID, s.PARENT_ID, s.THREAD_ID,
    s.TURN_ID, s.STARTED_AT, s.ATTRIBUTES, s.INPUTS, s.ENDED_AT, s.EXCEPTION, s.OUTPUT,
    s.SUMMARY, s.WB_USER_ID, s.WB_RUN_ID, s.WB_RUN_STEP, s.WB_RUN_STEP_END, s.DELETED_AT,
)  # fmt: skip
NULL_FIELDS = ("wb_username", "expire_at", "storage_size_bytes", "total_storage_size_bytes")
REQUIRED = (s.ID, s.TRACE_ID, s.PROJECT_ID, s.OP_NAME, s.STARTED_AT)
# CallSchema requires these dicts; a projection without them answers {}
REQUIRED_DICTS = (s.ATTRIBUTES, s.INPUTS)
_COST_ROW = (s.PROVIDER_ID, s.PRICING_LEVEL, s.PRICING_LEVEL_ID, s.EFFECTIVE_DATE, *s.PRICES)
_LINES_PER_CHUNK = 1000


def _refuse_unsupported(req: CallsQueryReq | CallsQueryStatsReq) -> None:
    for name in ("include_feedback", "include_storage_size", "include_total_storage_size"):
        if getattr(req, name):
            raise InvalidRequestError(f"{name} is not supported by this server", path=name)
    if req.expand_columns:
        raise InvalidRequestError(
            "expand_columns is not supported: refs are returned as refs", path="expand_columns"
        )


def selected_columns(req: CallsQueryReq) -> list[str]:
    """The call fields an answer carries, as the reference resolves ``columns``.

    Dotted paths name their top-level column (``x_dump`` names ``x``); ``summary`` or
    ``include_costs`` bring ``ended_at``, ``exception`` and ``display_name``, which the
    derived status and name read.

    Examples
    --------
    >>> selected_columns(CallsQueryReq(project_id="e/p", columns=["inputs.q", "summary"]))
    ['inputs', 'summary', 'ended_at', 'exception', 'display_name', 'id', 'trace_id', \
'project_id', 'op_name', 'started_at']
    """
    if not req.columns:
        return list(CALL_FIELDS)
    picked: list[str] = []
    for column in req.columns:
        top = column.split(".")[0]
        if top.endswith("_dump") and top[:-5] in CALL_FIELDS:
            top = top[:-5]
        if top not in picked:
            picked.append(top)
    if req.include_costs and s.SUMMARY not in picked:
        picked.append(s.SUMMARY)
    if s.SUMMARY in picked:
        picked += [c for c in (s.ENDED_AT, s.EXCEPTION, s.DISPLAY_NAME) if c not in picked]
    picked = [c for c in picked if c in CALL_FIELDS]
    return picked + [c for c in REQUIRED if c not in picked]


def _order(sort_by: list[SortBy] | None) -> list[tuple[str, bool]]:
    """(field, descending) terms with the reference's implicit ``id`` tiebreaker."""
    if sort_by is None:
        return [(s.STARTED_AT, False), (s.ID, False)]
    terms = [(term.field, term.direction == "desc") for term in sort_by]
    if terms and not any(name == s.ID for name, _ in terms):
        last_name, last_desc = terms[-1]
        terms.append((s.ID, last_desc if last_name == s.STARTED_AT else True))
    return terms


def _exists(name: str) -> pl.Expr:
    """True where a JSON path is present and not JSON null (the reference's ``exists``)."""
    column = name.split(".")[0]
    doc = pl.col(column)
    if name == column:
        return doc.is_not_null() & (doc.str.strip_chars() != "null")
    keys = split_path(name[len(column) + 1 :])
    path = "$" + "".join("['" + key.replace("'", "\\'") + "']" for key in keys)
    return doc.str.json_path_match(path).is_not_null()


def _is_json(name: str) -> bool:
    return name.split(".")[0] in s.JSON_COLUMNS and not name.startswith("summary.weave.")


def _sort_keys(sort_by: list[SortBy] | None, ctx: Ctx) -> list[tuple[pl.Expr, bool]]:
    """Sort expressions and directions; JSON fields sort by existence, number, then text."""
    keys: list[tuple[pl.Expr, bool]] = []
    for i, (name, desc) in enumerate(_order(sort_by)):
        field = GetField(name, where=f"sort_by[{i}].field")
        if _is_json(name):
            number = to_val(Convert(field, "double", where=field.where), ctx).expr
            keys += [(_exists(name), True), (number, desc), (to_val(field, ctx).expr, desc)]
        else:
            keys.append((to_val(field, ctx).expr, desc))
    return keys


def _sorted(calls: pl.LazyFrame, sort_by: list[SortBy] | None) -> pl.LazyFrame:
    if sort_by is not None and not sort_by:
        return calls
    ctx = Ctx()
    keys = _sort_keys(sort_by, ctx)
    names = [f"__sort{i}" for i in range(len(keys))]
    keyed = ctx.apply(calls).with_columns(e.alias(n) for (e, _), n in zip(keys, names, strict=True))
    ordered = keyed.sort(
        names, descending=[d for _, d in keys], nulls_last=True, maintain_order=True
    )
    return ordered.drop(*names, *ctx.names)


def columns_needed(req: CallsQueryReq) -> set[str]:
    """The call columns a store must load to answer ``req``."""
    ctx = Ctx()
    keys = _sort_keys(req.sort_by, ctx)
    helpers = [e for stage in ctx.stages for e in stage.values()]
    sort_read = {n for e in (*(k for k, _ in keys), *helpers) for n in e.meta.root_names()}
    return (
        set(s.ANSWER_COLUMNS)
        | set(selected_columns(req))
        | columns_read(req.filter, req.query)
        | (sort_read - set(ctx.names) - {f"__sort{i}" for i in range(len(keys))})
    )


def _derived(columns: list[str]) -> list[pl.Expr]:
    """``summary.weave``'s status, latency and name from the *selected* columns only, as
    the reference derives them (so a projection without ``ended_at`` reads as running)."""

    def col(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name) if name in columns else pl.lit(None, dtype)

    ended, exception = col(s.ENDED_AT, s.TIMESTAMP), col(s.EXCEPTION, pl.String())
    errors = (
        pl.lit(0, pl.Int64)
        if s.SUMMARY not in columns
        else pl.col(s.SUMMARY)
        .str.json_path_match("$.status_counts.error")
        .cast(pl.Float64, strict=False)
        .fill_null(0)
    )
    status = (
        pl.when(exception.is_not_null() & (exception != ""))
        .then(pl.lit("error"))
        .when(ended.is_null())
        .then(pl.lit("running"))
        .when(errors > 0)
        .then(pl.lit("descendant_error"))
        .otherwise(pl.lit("success"))
    )
    latency = (ended - pl.col(s.STARTED_AT)).dt.total_microseconds() // 1000
    display = col(s.DISPLAY_NAME, pl.String())
    return [
        status.alias("__status"),
        latency.alias("__latency"),
        pl.when(display != "").then(display).alias("__display"),
        to_val(GetField("summary.weave.trace_name"), Ctx()).expr.alias("__trace_name"),
    ]


@dataclass(frozen=True)
class CallsPage:
    """One answer of ``calls_query``: the page's rows and, with costs, their priced usage.

    ``calls`` holds the selected columns plus the derived ``__status``, ``__latency``,
    ``__display`` and ``__trace_name``; ``costs`` one row per (call, priced model).
    """

    calls: pl.DataFrame
    columns: list[str]
    costs: pl.DataFrame | None

    def __len__(self) -> int:
        return self.calls.height

    def rows(self) -> Iterator[dict[str, Any]]:
        """Each call as Weave's ``CallSchema`` dict (datetimes as ``datetime``)."""
        frame = self.calls
        cols = {name: frame.get_column(name).to_list() for name in frame.columns}
        costs = _costs_by_call(self.costs)
        for i in range(frame.height):
            call: dict[str, Any] = {name: None for name in (*CALL_FIELDS, *NULL_FIELDS)}
            for name in self.columns:
                value = cols[name][i]
                call[name] = _load(value) if name in s.JSON_COLUMNS and value else value
            if call[s.DISPLAY_NAME] == "":
                call[s.DISPLAY_NAME] = None
            for name in REQUIRED_DICTS:
                if call[name] is None:
                    call[name] = {}
            call[s.SUMMARY] = _summary(call[s.SUMMARY], cols, i, costs)
            yield call

    def json_lines(self) -> Iterator[bytes]:
        """The answer as JSON Lines, in chunks of up to 1,000 lines."""
        batch: list[bytes] = []
        for call in self.rows():
            batch.append(_dump(call))
            if len(batch) == _LINES_PER_CHUNK:
                yield b"".join(batch)
                batch = []
        if batch:
            yield b"".join(batch)


def _load(text: str) -> Any:
    """JSON text as Python; what orjson refuses (``Infinity``, lone surrogates, which
    Python's ``json`` writes) is read by ``json``, so no stored value breaks an answer."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _dump(call: dict[str, Any]) -> bytes:
    """One JSON line; values orjson cannot write (lone surrogates) go through ``json``."""
    try:
        return orjson.dumps(call, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return json.dumps(call, default=lambda d: d.isoformat()).encode() + b"\n"


def _summary(
    stored: Any,
    cols: dict[str, list[Any]],
    i: int,
    costs: dict[str, dict[str, dict[str, Any]]] | None,
) -> dict[str, Any]:
    summary = stored if isinstance(stored, dict) else {}
    weave = summary.pop("weave", None)
    weave = weave if isinstance(weave, dict) else {}
    for key in ("status", "trace_name", "latency_ms", "display_name"):
        weave.pop(key, None)
    weave["status"] = cols["__status"][i]
    if cols["__latency"][i] is not None:
        weave["latency_ms"] = cols["__latency"][i]
    if cols["__display"][i] is not None:
        weave["display_name"] = cols["__display"][i]
    else:
        weave["trace_name"] = cols["__trace_name"][i]
    if costs is not None:
        weave.pop("costs", None)
        mine = costs.get(cols[s.ID][i])
        if mine:
            weave["costs"] = mine
    summary["weave"] = weave
    return summary


def _costs_by_call(costs: pl.DataFrame | None) -> dict[str, dict[str, dict[str, Any]]] | None:
    if costs is None:
        return None
    by_call: dict[str, dict[str, dict[str, Any]]] = {}
    for row in costs.iter_rows(named=True):
        call_id, model = row.pop(s.ID), row.pop(s.MODEL)
        date = row[s.EFFECTIVE_DATE]
        row[s.EFFECTIVE_DATE] = date.isoformat() if date is not None else None
        by_call.setdefault(call_id, {})[model] = row
    return by_call


def _cost_rows(
    page: pl.DataFrame, usage: Frame | None, prices: Frame | None, project_id: str
) -> pl.DataFrame:
    """Per (call, model) of the page: tokens as reported and the picked price row's costs.

    Tokens are the reference's ``_cost_usage_from_summary`` (``total_tokens`` as reported,
    not derived); models without a price row are left out, as the reference leaves them.
    """
    if usage is None:
        raw = usage_from_json(page.select(s.ID, s.SUMMARY))
    else:
        raw = (
            s.conform(usage.lazy(), s.USAGE_SCHEMA, "usage")
            .join(page.lazy().select(s.ID), on=s.ID, how="semi")
            .collect(engine=s.ENGINE)
        )
    counters = [pl.col(c).fill_null(0) for c in s.RAW_COUNTERS]
    raw = raw.with_columns(counters).join(page.select(s.ID, s.STARTED_AT), on=s.ID)
    table = default_table() if prices is None else pl.DataFrame(prices.lazy().collect())
    picked = lookup_prices(raw.select(s.MODEL, s.STARTED_AT), table, project_id)
    rows = raw.hstack(picked.select(s.PRICE_SEQ)).filter(pl.col(s.PRICE_SEQ).is_not_null())
    rows = rows.join(table.select(s.PRICE_SEQ, *_COST_ROW), on=s.PRICE_SEQ, how="left")
    tokens = {
        s.PROMPT_TOKENS: pl.col("prompt_tokens") + pl.col("input_tokens"),
        s.COMPLETION_TOKENS: pl.col("completion_tokens") + pl.col("output_tokens"),
        s.CACHE_READ: pl.col(s.CACHE_READ),
        s.CACHE_CREATION: pl.col(s.CACHE_CREATION),
    }
    price = {p: pl.col(p).fill_null(0.0) for p in s.PRICES}
    unit = pl.lit("USD")
    return rows.select(
        s.ID,
        s.MODEL,
        *(expr.alias(name) for name, expr in tokens.items()),
        pl.col(s.REQUESTS),
        pl.col(s.TOTAL_TOKENS),
        *(expr.alias(name) for name, expr in token_costs(tokens, price).items()),
        *(price[p].alias(p) for p in s.PRICES),
        unit.alias("prompt_token_cost_unit"),
        unit.alias("completion_token_cost_unit"),
        pl.col(s.EFFECTIVE_DATE),
        pl.col(s.PROVIDER_ID),
        pl.col(s.PRICING_LEVEL),
        pl.col(s.PRICING_LEVEL_ID),
        pl.lit(None, pl.String).alias("created_at"),
        pl.lit(None, pl.String).alias("created_by"),
    )


def _selection(calls: Frame, req: CallsQueryReq | CallsQueryStatsReq) -> pl.LazyFrame:
    _refuse_unsupported(req)
    return select_calls(candidate_calls(calls, req.project_id), req.filter, req.query)


@engine_call
def calls_query(
    calls: Frame,
    req: CallsQueryReq | dict[str, Any],
    *,
    usage: Frame | None = None,
    prices: Frame | None = None,
) -> CallsPage:
    """The page of calls ``req`` selects, sorted and projected as Weave's ``calls_query``.

    Parameters
    ----------
    calls
        Calls in :data:`engine.schema.CALL_SCHEMA` (eager or lazy).
    req
        A ``CallsQueryReq`` or its JSON-shaped dict.
    usage, prices
        Raw usage rows and a price table, as for :func:`engine.trace_usage.trace_usage`;
        read only with ``include_costs``.

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> calls = pl.DataFrame({
    ...     "project_id": ["e/p"] * 2, "id": ["a", "b"], "trace_id": ["t", "t"],
    ...     "op_name": ["root", "llm"], "started_at": [t0, t0 + dt.timedelta(seconds=1)],
    ...     "ended_at": [t0 + dt.timedelta(seconds=2), None],
    ... })
    >>> page = calls_query(calls, {"project_id": "e/p", "columns": ["id", "summary"],
    ...                            "sort_by": [{"field": "started_at", "direction": "desc"}]})
    >>> [(c["id"], c["summary"]["weave"]["status"]) for c in page.rows()]
    [('b', 'running'), ('a', 'success')]
    """
    q: CallsQueryReq = parse_request(CallsQueryReq, req)
    picked = _sorted(_selection(calls, q), q.sort_by)
    if q.offset and q.offset > 0:
        picked = picked.slice(q.offset)
    if q.limit and q.limit > 0:
        picked = picked.head(q.limit)
    columns = selected_columns(q)
    if s.DISPLAY_NAME not in columns:  # the derived name reads only selected columns
        picked = picked.with_columns(pl.lit(None, pl.String).alias(s.DISPLAY_NAME))
    page = picked.select(*columns, *_derived(columns)).collect(engine=s.ENGINE)
    costs = None
    if q.include_costs:
        costs = _cost_rows(page, usage, prices, q.project_id)
    return CallsPage(page, columns, costs)


@engine_call
def calls_query_stats(calls: Frame, req: CallsQueryStatsReq | dict[str, Any]) -> CallsQueryStatsRes:
    """How many calls the selection holds, capped at ``limit`` (``has_more`` when reached).

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> calls = pl.DataFrame({"project_id": ["e/p"] * 3, "id": ["a", "b", "c"],
    ...                       "op_name": ["op"] * 3, "started_at": [t0] * 3})
    >>> calls_query_stats(calls, {"project_id": "e/p", "limit": 2})
    CallsQueryStatsRes(count=2, has_more=True, total_storage_size_bytes=0)
    """
    q: CallsQueryStatsReq = parse_request(CallsQueryStatsReq, req)
    if q.limit is not None and q.limit < 1:
        raise InvalidRequestError("limit must be a positive integer", path="limit")
    count = _selection(calls, q).select(pl.len()).collect(engine=s.ENGINE).item()
    if q.limit is not None:
        count = min(count, q.limit)
    has_more = q.limit is not None and count >= q.limit
    return CallsQueryStatsRes(count=count, has_more=has_more, total_storage_size_bytes=0)


__all__ = ["CallsPage", "calls_query", "calls_query_stats", "columns_needed", "selected_columns"]
