"""Dated per-token prices and the reference's choice of price row per (call, model).

For a call started at ``t`` using model ``m``, weave 0.53.12 ranks the rows of ``m`` that are
either project-level for the request's project or default-level, by: not after ``t`` first,
then project before default, then the latest ``effective_date``; the first of equal rows
wins. That ranking is four lookups, done here as two as-of joins and two latest-row joins:
the latest past project row, else the latest past default row, else (every row is in the
future) the latest project row, else the latest default row.

Requests price a few hundred rows against thousands of price rows, so the ranking is done
once per (price table, project) instead: the choice for a model only changes at one of its
effective dates, so a *timeline* of the choice from each such date on (and from before the
first one) answers every row with one binary search among its model's steps
(:func:`lookup_prices`). The module also builds the price table (:func:`price_table`) and
does the cost arithmetic on rolled-up token sums (:func:`cost_rows`).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema as s
from engine.errors import InputDataError

_ROW = "__row"  # a key row's position, to restore key order after sorting by time
_CALL = "__call"  # a result row's call, as its row number in the answer
Num = TypeVar("Num", np.ndarray, pl.Expr, float)  # token_costs takes arrays or expressions
DEFAULT_PRICES_CSV = Path(__file__).resolve().parent.parent / "data" / "llm_token_prices.csv"


def load_price_csv(path: Path | str = DEFAULT_PRICES_CSV) -> pl.DataFrame:
    """Default-level prices (``PRICE_SCHEMA``) from a CSV like ``data/llm_token_prices.csv``.

    Examples
    --------
    >>> prices = load_price_csv()
    >>> prices.columns[:3]
    ['llm_id', 'pricing_level', 'pricing_level_id']
    """
    try:
        raw = pl.read_csv(path, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise InputDataError(f"cannot read price table {path}: {err}") from err
    missing = {s.LLM_ID, s.EFFECTIVE_DATE, s.PROMPT_PRICE, s.COMPLETION_PRICE} - set(raw.columns)
    if missing:
        raise InputDataError(f"price table {path} lacks columns {sorted(missing)}")
    return raw.with_row_index(s.PRICE_SEQ).select(
        pl.col(s.LLM_ID).cast(pl.String),
        pl.lit(s.DEFAULT_LEVEL).alias(s.PRICING_LEVEL),
        pl.lit(s.DEFAULT_LEVEL_ID).alias(s.PRICING_LEVEL_ID),
        _optional(raw, s.PROVIDER_ID, pl.String, "default"),
        pl.col(s.EFFECTIVE_DATE).str.to_datetime(time_zone="UTC", time_unit="us"),
        *(_optional(raw, name, pl.Float64, 0.0) for name in s.PRICES),
        pl.col(s.PRICE_SEQ).cast(pl.Int64),
    )


@lru_cache(maxsize=1)
def default_prices() -> pl.DataFrame:
    """The shipped default price table (``data/llm_token_prices.csv``)."""
    return load_price_csv()


@lru_cache(maxsize=1)
def default_table() -> pl.DataFrame:
    """:func:`price_table` of the shipped rows alone (kept: requests without project
    prices all price against it, and its timeline is kept by identity)."""
    return price_table()


def price_table(
    project_rows: pl.DataFrame | pl.LazyFrame | None = None,
    default: pl.DataFrame | pl.LazyFrame | None = None,
) -> pl.DataFrame:
    """Default rows then project rows (each in stored order) as one ``PRICE_SCHEMA`` frame."""
    parts = [default if default is not None else default_prices()]
    if project_rows is not None:
        parts.append(project_rows)
    frames = [s.conform(p.lazy(), s.PRICE_SCHEMA, "prices").collect(engine=s.ENGINE) for p in parts]
    table = pl.concat(frames).drop(s.PRICE_SEQ).with_row_index(s.PRICE_SEQ)
    return table.cast(pl.Schema(s.PRICE_SCHEMA))


def _optional(
    raw: pl.DataFrame, name: str, dtype: pl.DataType | type[pl.DataType], default: object
) -> pl.Expr:
    col = pl.col(name).cast(dtype) if name in raw.columns else pl.lit(None, dtype)
    return col.fill_null(default).alias(name)


def choose_prices(
    keys: pl.DataFrame, prices: pl.LazyFrame | pl.DataFrame, project_id: str
) -> pl.DataFrame:
    """The chosen price row's ``seq`` and four prices for each row of ``keys``, in row order.

    ``keys`` has ``model`` and ``started_at``; rows with no price for their model get nulls.

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> prices = pl.DataFrame({
    ...     "llm_id": ["m", "m"], "pricing_level": ["default", "project"],
    ...     "pricing_level_id": ["default", "e/p"], "effective_date": [t, t], "seq": [0, 1],
    ... }).with_columns(pl.lit(1e-6).alias(name) for name in s.PRICES)
    >>> keys = pl.DataFrame({"model": ["m", "x"], "started_at": [t, t]})
    >>> choose_prices(keys, prices, "e/p").get_column("seq").to_list()
    [1, None]
    """
    eligible = (
        prices.lazy()
        .filter(
            (
                (pl.col(s.PRICING_LEVEL) == s.PROJECT_LEVEL)
                & (pl.col(s.PRICING_LEVEL_ID) == project_id)
            )
            | (
                (pl.col(s.PRICING_LEVEL) == s.DEFAULT_LEVEL)
                & (pl.col(s.PRICING_LEVEL_ID) == s.DEFAULT_LEVEL_ID)
            )
        )
        .join(keys.lazy().select(pl.col(s.MODEL).alias(s.LLM_ID)).unique(), on=s.LLM_ID, how="semi")
        .sort(s.PRICE_SEQ)
        # equal rank keys: the reference keeps the first row it stored
        .unique([s.PRICING_LEVEL, s.LLM_ID, s.EFFECTIVE_DATE], keep="first", maintain_order=True)
    )
    eligible = eligible.collect(engine=s.ENGINE).lazy()  # small; read by four branches below
    ordered = keys.lazy().select(s.MODEL, s.STARTED_AT).with_row_index(_ROW).sort(s.STARTED_AT)
    picks = []
    for level in (s.PROJECT_LEVEL, s.DEFAULT_LEVEL):
        rows = eligible.filter(pl.col(s.PRICING_LEVEL) == level).select(
            pl.col(s.LLM_ID).alias(s.MODEL), s.EFFECTIVE_DATE, s.PRICE_SEQ
        )
        past = ordered.join_asof(
            rows.sort(s.EFFECTIVE_DATE),
            left_on=s.STARTED_AT,
            right_on=s.EFFECTIVE_DATE,
            by=s.MODEL,
            strategy="backward",
            check_sortedness=False,
        ).select(pl.col(s.PRICE_SEQ).alias(f"past_{level}"))
        latest = (
            rows.sort([s.EFFECTIVE_DATE, s.PRICE_SEQ], descending=[True, False])
            .unique(s.MODEL, keep="first")
            .select(s.MODEL, pl.col(s.PRICE_SEQ).alias(f"latest_{level}"))
        )
        picks.append((past, latest))
    (past_project, latest_project), (past_default, latest_default) = picks
    chosen = (
        pl.concat([ordered, past_project, past_default], how="horizontal")
        .join(latest_project, on=s.MODEL, how="left", maintain_order="left")
        .join(latest_default, on=s.MODEL, how="left", maintain_order="left")
        .select(
            _ROW,
            pl.coalesce(
                f"past_{s.PROJECT_LEVEL}",
                f"past_{s.DEFAULT_LEVEL}",
                f"latest_{s.PROJECT_LEVEL}",
                f"latest_{s.DEFAULT_LEVEL}",
            ).alias(s.PRICE_SEQ),
        )
        .join(
            eligible.select(s.PRICE_SEQ, *s.PRICES),
            on=s.PRICE_SEQ,
            how="left",
            maintain_order="left",
        )
        .sort(_ROW)
        .drop(_ROW)
    )
    return chosen.collect(engine=s.ENGINE)


_FROM = "__from"
_TIMELINES_KEPT = 32


def price_timeline(prices: pl.LazyFrame | pl.DataFrame, project_id: str) -> pl.DataFrame:
    """The price row :func:`choose_prices` picks for each model from each of its effective
    dates on (``__from``), sorted by ``__from`` then model, with ``seq`` and the prices.

    Each model also gets an entry just before the table's first date ("dawn"), which holds
    its pick while every row is in the future; :func:`lookup_prices` reads earlier starts
    as dawn.
    """
    table = prices.lazy()
    steps = table.select(
        pl.col(s.LLM_ID).alias(s.MODEL), pl.col(s.EFFECTIVE_DATE).to_physical().alias(_FROM)
    ).collect(engine=s.ENGINE)
    first = cast("int | None", steps.get_column(_FROM).min())  # physical: microseconds
    dawn = max(first - 1, s.INT64_MIN) if first is not None else 0
    dawns = steps.select(s.MODEL, pl.lit(dawn, pl.Int64).alias(_FROM))
    steps = pl.concat([dawns, steps]).unique(maintain_order=True)
    keys = steps.select(s.MODEL, pl.col(_FROM).cast(s.TIMESTAMP).alias(s.STARTED_AT))
    chosen = choose_prices(keys, table, project_id)
    return (
        keys.rename({s.STARTED_AT: _FROM})
        .hstack(chosen)
        .filter(pl.col(s.PRICE_SEQ).is_not_null())
        .sort(_FROM, s.MODEL)
    )


@dataclass(frozen=True)
class _Steps:
    """A timeline read by model, for one vectorized search: each step's key is its model's
    code (``codes``) times ``len(moments) + 1`` plus the rank of its start among the
    distinct starts (``moments``), so keys sort by model, then start; ``first[c]`` is the
    first key of code ``c``. ``seq`` and the prices are the timeline's, in key order."""

    codes: dict[str, int]
    moments: np.ndarray
    keys: np.ndarray
    first: np.ndarray
    seq: np.ndarray
    prices: np.ndarray  # (steps, 4)

    @classmethod
    def of(cls, timeline: pl.DataFrame) -> _Steps:
        starts = timeline.get_column(_FROM).to_numpy().view(np.int64)
        codes: dict[str, int] = {}
        models = timeline.get_column(s.MODEL).to_list()
        code = np.array([codes.setdefault(m, len(codes)) for m in models], dtype=np.int64)
        row = np.lexsort((starts, code))  # by model, then start
        moments = np.unique(starts)
        keys = code[row] * (len(moments) + 1) + np.searchsorted(moments, starts[row]) + 1
        first = np.searchsorted(code[row], np.arange(len(codes)))
        prices = np.column_stack([timeline.get_column(p).to_numpy() for p in s.PRICES])
        seq = timeline.get_column(s.PRICE_SEQ).to_numpy()[row]
        return cls(codes, moments, keys, first, seq, prices.reshape(-1, 4)[row])


class _Timelines:
    """Timelines of the last few (price table, project) pairs: a server prices every
    request of a project against the same table object until its prices change. Tables are
    told apart by identity, as price tables are treated as values (never changed in place),
    and a weak reference makes sure a recycled id is not taken for the old table."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[int, str], tuple[weakref.ref, pl.DataFrame, _Steps]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, prices: pl.LazyFrame | pl.DataFrame, project_id: str) -> pl.DataFrame:
        """The timeline of ``prices`` for ``project_id``, built on first use (a lazy
        table is built every time: its identity says nothing about its rows)."""
        return self._entry(prices, project_id)[0]

    def steps(self, prices: pl.LazyFrame | pl.DataFrame, project_id: str) -> _Steps:
        """The same timeline, read by model."""
        return self._entry(prices, project_id)[1]

    def _entry(
        self, prices: pl.LazyFrame | pl.DataFrame, project_id: str
    ) -> tuple[pl.DataFrame, _Steps]:
        if not isinstance(prices, pl.DataFrame):
            timeline = price_timeline(prices, project_id)
            return timeline, _Steps.of(timeline)
        key = (id(prices), project_id)
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None and kept[0]() is prices:
                self._kept.move_to_end(key)
                return kept[1], kept[2]
        timeline = price_timeline(prices, project_id)
        steps = _Steps.of(timeline)
        with self._lock:
            self._kept[key] = (weakref.ref(prices), timeline, steps)
            while len(self._kept) > _TIMELINES_KEPT:
                self._kept.popitem(last=False)
        return timeline, steps


_TIMELINES = _Timelines()
_NO_START = np.iinfo(np.int64).min  # a null start, as NumPy reads it
# answers without rows, copied (``clear``) rather than built: building costs ~0.1 ms
_NO_PRICES = pl.DataFrame(schema={s.PRICE_SEQ: pl.Int64, **dict.fromkeys(s.PRICES, pl.Float64)})
_NO_ROWS = pl.DataFrame(schema=s.RESULT_SCHEMA)


def lookup_prices(
    keys: pl.DataFrame, prices: pl.LazyFrame | pl.DataFrame, project_id: str
) -> pl.DataFrame:
    """:func:`choose_prices`, read off the (kept) timeline of ``prices`` for ``project_id``:
    each distinct model's picks from each of the table's step starts on, then each row's
    at its start; a start before its model's first step has that step's pick ("dawn").
    NumPy and Arrow do the work, so a small request pays no Polars query for its prices.

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> prices = pl.DataFrame({
    ...     "llm_id": ["m", "m"], "pricing_level": ["default", "default"],
    ...     "pricing_level_id": ["default", "default"], "seq": [0, 1],
    ...     "effective_date": [t, t + dt.timedelta(days=1)],
    ... }).with_columns(pl.lit(1e-6).alias(name) for name in s.PRICES)
    >>> keys = pl.DataFrame({"model": ["m", "m", "x"], "started_at": [t, t.replace(year=2030), t]})
    >>> lookup_prices(keys, prices, "e/p").get_column("seq").to_list()
    [0, 1, None]
    """
    if not keys.height:  # nothing to look up (a trace without usage)
        return _NO_PRICES.clear()
    steps = _TIMELINES.steps(prices, project_id)
    models = keys.get_column(s.MODEL).cast(pl.String).to_arrow()
    distinct = pc.dictionary_encode(models, null_encoding="encode")  # a null model: None
    # each distinct model's code in the timeline (-1: no prices)
    known = [-1 if m is None else steps.codes.get(m, -1) for m in distinct.dictionary.to_pylist()]
    code = np.array(known, dtype=np.int64)
    model = distinct.indices.to_numpy()  # each row's distinct model
    starts = keys.get_column(s.STARTED_AT).to_numpy().view(np.int64)
    missing = (code[model] < 0) | (starts == _NO_START)
    if len(steps.seq):
        # each distinct model's pick from each moment on (a handful of models times the
        # moments: fewer searches than rows): the last of its steps not after the moment,
        # else its first; then each row's, at the last moment not after its start
        code = np.maximum(code, 0)
        wanted = code[:, None] * (len(steps.moments) + 1) + np.arange(len(steps.moments) + 1)
        picks = np.searchsorted(steps.keys, wanted, "right") - 1
        picks = np.maximum(picks, steps.first[code][:, None])
        at = picks[model, np.searchsorted(steps.moments, starts, "right")]
        seq, table = steps.seq[at], steps.prices[at]
    else:  # no model has a price: every row is missing
        seq, table = np.zeros(keys.height, dtype=np.int64), np.zeros((keys.height, 4))
    some_missing = bool(missing.any())  # nulls need Arrow's masks; none, plain arrays do

    def column(name: str, values: np.ndarray) -> pl.Series:
        return pl.Series(name, pa.array(values, mask=missing) if some_missing else values)

    prices_at = (column(name, table[:, i]) for i, name in enumerate(s.PRICES))
    return pl.DataFrame([column(s.PRICE_SEQ, seq), *prices_at])


def token_costs(tokens: Mapping[str, Num], price: Mapping[str, Num]) -> dict[str, Num]:
    """Weave's four costs of token counts at per-token prices, keyed by the cost columns.

    The prompt is billed without its cache reads and creations (negative when a client
    reports cache reads outside its prompt count, as Anthropic's do: Weave's formula, kept).
    Counts and prices may be NumPy arrays or Polars expressions alike.

    Examples
    --------
    >>> tokens = {"prompt_tokens": 10, "completion_tokens": 4, "cache_read_input_tokens": 2,
    ...           "cache_creation_input_tokens": 1}
    >>> price = dict.fromkeys(s.PRICES, 0.5)
    >>> token_costs(tokens, price)["prompt_tokens_total_cost"]
    3.5
    """
    billed_prompt = tokens[s.PROMPT_TOKENS] - tokens[s.CACHE_READ] - tokens[s.CACHE_CREATION]
    return {
        s.PROMPT_COST: billed_prompt * price[s.PROMPT_PRICE],
        s.COMPLETION_COST: tokens[s.COMPLETION_TOKENS] * price[s.COMPLETION_PRICE],
        s.CACHE_READ_COST: tokens[s.CACHE_READ] * price[s.CACHE_READ_PRICE],
        s.CACHE_CREATION_COST: tokens[s.CACHE_CREATION] * price[s.CACHE_CREATION_PRICE],
    }


def cost_rows(
    ids: pl.Series,
    call: np.ndarray,
    groups: pl.DataFrame,
    group: np.ndarray,
    totals: dict[str, np.ndarray],
    include_costs: bool,
) -> tuple[pl.DataFrame, np.ndarray]:
    """``RESULT_SCHEMA`` rows of rolled-up token sums, costed, one row per (call, model).

    Row ``i`` sums ``totals`` for the call at row ``call[i]`` of ``ids`` and the usage group
    at row ``group[i]`` of ``groups`` (``model``, and with costs the chosen price row:
    ``seq`` and the four prices). Costs come from the exact sums, one multiply per price;
    groups of one model under several price rows are then merged. Returns the rows and the
    row number in ``ids`` of each, non-decreasing.
    """
    if not len(call):  # no usage: nothing to cost or gather
        return _NO_ROWS.clear(), call
    tokens = {name: totals[name] for name in s.TOKENS}
    models = groups.get_column(s.MODEL)
    if include_costs:  # nulls (unpriced models) read as NaN, which cost 0
        table = np.column_stack([groups.get_column(p).to_numpy() for p in s.PRICES])
        table[np.isnan(table)] = 0.0
        price = dict(zip(s.PRICES, table[group].T, strict=True))
        costs = [pl.Series(name, values) for name, values in token_costs(tokens, price).items()]
    else:
        costs = [pl.Series(name, pa.nulls(len(call), pa.float64())) for name in s.COSTS]
    # plain Series into one frame: no Polars query (small answers pay per query)
    rows = pl.DataFrame(
        [
            ids[pl.Series(call.astype(np.uint32))],
            models[pl.Series(group.astype(np.uint32))],
            *(pl.Series(name, values) for name, values in tokens.items()),
            *costs,
        ]
    )
    names = models.to_list()  # a handful: plain Python is quickest
    if not include_costs or len(set(names)) == len(names):  # one price row per model: done
        return rows, call
    merged = rows.insert_column(0, pl.Series(_CALL, call))
    merged = merged.group_by(_CALL, s.MODEL, maintain_order=True).agg(
        pl.col(s.ID).first(), *(pl.col(c).sum() for c in s.METRICS)
    )
    call_index = merged.get_column(_CALL).to_numpy()
    return merged.select(s.ID, s.MODEL, *s.METRICS), call_index
