"""Batch rollup of exported calls: every trace is one selection, answered by the one engine.

Semantics, per trace (the calls sharing ``project_id`` and ``trace_id``): the trace's calls
are what :func:`engine.trace_usage.trace_usage` sees, with the given ``filter`` and ``query``
and **no limit** (a per-request safety limit has no meaning for a whole export). The result
is one row per (selected call, model) of that call's rolled-up usage, plus one row with a
null model (and null counters) for each selected call whose subtree has no usage.

Speed: the engine's cost is mostly per call, but it has a fixed cost per run, which 100,000
traces cannot pay one at a time. Traces share no calls, so one engine run over many traces
gives each trace's answer, provided that (1) call ids are unique across those traces and
(2) no call's parent is a call of another trace, and (3) they share a project (prices are
per project). :func:`rollup_traces` therefore runs the engine once per project over every
trace that satisfies (1) and (2). The rest ("tangled" traces) get, when no filter or query
reads the ids, trace-qualified ids in that same run, and otherwise one run per trace. The
selection is then the same, since a filter or query keeps or drops each call on its own
columns only.

Scale: :func:`rollup_files` hashes (project_id, trace_id) into buckets with a streaming
Polars sink, so no more than a bucket is in memory per worker, then rolls up bucket by
bucket, in worker processes, appending each bucket's rows to one Parquet file.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from tqdm import tqdm

from engine import schema as s
from engine.errors import InputDataError, InvalidRequestError
from engine.io import (
    PROJECT_COLUMN,
    jsonl_to_parquet,
    price_rows,
    read_price_rows,
    resolve_inputs,
    scan_parquet_calls,
)
from engine.trace_usage import price_table, trace_usage

SORT_KEYS = [s.PROJECT_ID, s.TRACE_ID, s.CALL_ID, s.MODEL]
# what the engine reads when there is no filter or query (those may read any column)
ROLLUP_COLUMNS = (
    s.PROJECT_ID,
    s.ID,
    s.TRACE_ID,
    s.PARENT_ID,
    s.OP_NAME,
    s.STARTED_AT,
    s.ENDED_AT,
    s.DELETED_AT,
    s.SUMMARY,
)
_BUCKET = "__bucket"
_PARENT_TRACE = "__parent_trace"

PricesArg = pl.DataFrame | str | Path | None


@dataclass(frozen=True)
class RollupOptions:
    """What to compute: one per run, shipped as is to worker processes and Spark executors.

    ``prices`` holds extra price rows as :func:`engine.io.price_rows` returns them; a row
    with a null ``project_id`` prices every project.
    """

    include_costs: bool = False
    prices: pl.DataFrame | None = None
    project_id: str | None = None
    filter: dict[str, Any] | None = None
    query: dict[str, Any] | None = None
    summary_usage: str = "own"

    def request(self, project_id: str) -> dict[str, Any]:
        """The engine request for one project's traces."""
        return {
            "project_id": project_id,
            "filter": self.filter,
            "query": self.query,
            "include_costs": self.include_costs,
            "limit": 0,
        }

    def columns(self) -> tuple[str, ...]:
        """The call columns the rollup reads."""
        return tuple(s.CALL_SCHEMA) if self.filter or self.query else ROLLUP_COLUMNS

    def price_table(self, project_id: str) -> pl.DataFrame | None:
        """The default table plus this project's extra rows; None: the default table alone."""
        if not self.include_costs or self.prices is None:
            return None
        rows = self.prices.filter(
            pl.col(PROJECT_COLUMN).is_null() | (pl.col(PROJECT_COLUMN) == project_id)
        )
        if rows.height == 0:
            return None
        return price_table(
            rows.select(
                s.LLM_ID,
                pl.lit(s.PROJECT_LEVEL).alias(s.PRICING_LEVEL),
                pl.lit(project_id).alias(s.PRICING_LEVEL_ID),
                s.PROVIDER_ID,
                s.EFFECTIVE_DATE,
                *s.PRICES,
            )
        )


def make_options(
    *,
    include_costs: bool = False,
    prices: PricesArg = None,
    project_id: str | None = None,
    filter: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    summary_usage: str = "own",
) -> RollupOptions:
    """Options, checked now by the engine itself (bad filter, query or mode raise here).

    ``prices`` is a frame or a CSV/Parquet file of extra price rows (see
    :func:`engine.io.read_price_rows`).
    """
    if isinstance(prices, str | Path):
        prices = read_price_rows(prices)
    elif prices is not None:
        prices = price_rows(prices)
    options = RollupOptions(include_costs, prices, project_id, filter, query, summary_usage)
    trace_usage(s.empty(s.CALL_SCHEMA), options.request(""), summary_usage=summary_usage)
    return options


def rollup_traces(calls: pl.DataFrame, options: RollupOptions) -> pl.DataFrame:
    """Rollup rows (``BATCH_OUTPUT_SCHEMA``, in no set order) of whole traces, of any projects.

    Every call of a trace in ``calls`` must be there: a trace split across two calls of this
    function would be two traces.
    """
    calls = calls.filter(pl.col(s.PROJECT_ID).is_not_null())
    if options.project_id is not None:
        calls = calls.filter(pl.col(s.PROJECT_ID) == options.project_id)
    parts = [
        _project_rollup(frame, project, options)
        for (project,), frame in calls.partition_by(s.PROJECT_ID, as_dict=True).items()
    ]
    if not parts:
        return s.empty(s.BATCH_OUTPUT_SCHEMA)
    return pl.concat(parts)


def _project_rollup(frame: pl.DataFrame, project: str, options: RollupOptions) -> pl.DataFrame:
    """One project's traces in one engine run, unless traces are tangled (see the module)."""
    owners = frame.select(s.ID, s.TRACE_ID).unique()
    tangled = _tangled_traces(frame, owners)
    prices = options.price_table(project)
    if tangled.height == 0:
        return _run_engine(frame, _owners(owners), project, prices, options)
    if options.filter is None and options.query is None:
        # nothing reads the ids but the rollup: prefixing them with their trace cuts every
        # link between traces and keeps each trace's own ids distinct, in one run
        qualified = frame.with_columns(_qualified(s.ID), _qualified(s.PARENT_ID))
        keys = frame.select(_qualified(s.ID), s.TRACE_ID, pl.col(s.ID).alias(s.CALL_ID)).unique()
        return _run_engine(qualified, keys, project, prices, options)
    traces = [
        frame.join(tangled, on=s.TRACE_ID, how="anti", nulls_equal=True),
        *frame.join(tangled, on=s.TRACE_ID, how="semi", nulls_equal=True).partition_by(s.TRACE_ID),
    ]
    return pl.concat(
        _run_engine(part, _owners(part.select(s.ID, s.TRACE_ID).unique()), project, prices, options)
        for part in traces
    )


def _owners(ids: pl.DataFrame) -> pl.DataFrame:
    """Engine id -> (trace_id, call_id) when the engine sees the calls' own ids."""
    return ids.with_columns(pl.col(s.ID).alias(s.CALL_ID))


def _qualified(column: str) -> pl.Expr:
    """``column`` prefixed with the call's trace (a null trace is a trace too)."""
    trace = pl.when(pl.col(s.TRACE_ID).is_null()).then(pl.lit("\x00")).otherwise(pl.col(s.TRACE_ID))
    return pl.concat_str(trace, pl.lit("\x1f"), pl.col(column)).alias(column)


def _tangled_traces(frame: pl.DataFrame, owners: pl.DataFrame) -> pl.DataFrame:
    """Traces that share a call id with another trace, or hang a call under another trace."""
    shared = owners.filter(pl.col(s.ID).is_duplicated()).select(s.TRACE_ID)
    crossing = (
        frame.select(s.TRACE_ID, s.PARENT_ID)
        .drop_nulls(s.PARENT_ID)
        .join(owners.rename({s.ID: s.PARENT_ID, s.TRACE_ID: _PARENT_TRACE}), on=s.PARENT_ID)
        .filter(pl.col(s.TRACE_ID).ne_missing(pl.col(_PARENT_TRACE)))
        .select(s.TRACE_ID)
    )
    return pl.concat([shared, crossing]).unique()


def _run_engine(
    frame: pl.DataFrame,
    owners: pl.DataFrame,
    project: str,
    prices: pl.DataFrame | None,
    options: RollupOptions,
) -> pl.DataFrame:
    """One engine run over traces of one project whose engine ids are unique across them.

    ``owners`` maps each engine ``id`` to its ``trace_id`` and original ``call_id``.
    """
    result = trace_usage(
        frame, options.request(project), prices=prices, summary_usage=options.summary_usage
    )
    unfinished = pl.Series(s.ID, result.unfinished_call_ids, dtype=pl.String)
    return (
        result.call_ids.rename(s.ID)
        .to_frame()
        .join(owners, on=s.ID, how="left")
        .join(result.usage, on=s.ID, how="left")
        .select(
            pl.lit(project, pl.String).alias(s.PROJECT_ID),
            s.TRACE_ID,
            s.CALL_ID,
            s.MODEL,
            *s.TOKENS,
            *s.COSTS,
            pl.col(s.ID).is_in(unfinished.implode()).alias(s.UNFINISHED),
        )
        .cast(pl.Schema(s.BATCH_OUTPUT_SCHEMA))
    )


def rollup_frame(
    calls: pl.LazyFrame | pl.DataFrame,
    *,
    include_costs: bool = False,
    prices: PricesArg = None,
    project_id: str | None = None,
    filter: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    summary_usage: str = "own",
) -> pl.DataFrame:
    """Per-(call, model) rolled-up usage of an in-memory set of calls, trace by trace.

    Rows are sorted by project, trace, call and model (nulls last).

    Parameters
    ----------
    calls
        Calls in :data:`engine.schema.CALL_SCHEMA` (missing optional columns read as null).
    include_costs
        Price each row; costs are null otherwise.
    prices
        Extra price rows (frame or CSV/Parquet path) on top of the shipped default table.
    project_id
        Only this project's traces; default: every project in ``calls``.
    filter, query
        A ``CallsFilter`` and ``{"$expr": ...}`` as JSON, applied within each trace.
    summary_usage
        ``"own"`` (as Weave) or ``"auto"`` (count SDK-rolled-up parents once).

    Examples
    --------
    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> calls = pl.LazyFrame({
    ...     "project_id": ["e/p"] * 3, "id": ["root", "llm", "other"],
    ...     "trace_id": ["t1", "t1", "t2"], "parent_id": [None, "root", None],
    ...     "op_name": ["agent", "llm", "tool"], "started_at": [t0] * 3, "ended_at": [t0] * 3,
    ...     "summary": [None, '{"usage": {"gpt-4o": {"prompt_tokens": 10}}}', None],
    ... })
    >>> rollup_frame(calls).select("trace_id", "call_id", "model", "prompt_tokens").rows()
    [('t1', 'llm', 'gpt-4o', 10), ('t1', 'root', 'gpt-4o', 10), ('t2', 'other', None, None)]
    """
    options = make_options(
        include_costs=include_costs,
        prices=prices,
        project_id=project_id,
        filter=filter,
        query=query,
        summary_usage=summary_usage,
    )
    try:
        frame = s.conform(calls.lazy(), s.CALL_SCHEMA, "calls").select(options.columns()).collect()
    except pl.exceptions.PolarsError as err:
        raise InputDataError(f"cannot read the calls: {err}") from err
    return rollup_traces(frame, options).sort(SORT_KEYS, nulls_last=True)


@dataclass(frozen=True)
class RollupStats:
    """What a file run did."""

    traces: int
    calls: int
    rows: int
    buckets: int


def rollup_files(
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    include_costs: bool = False,
    prices: PricesArg = None,
    project_id: str | None = None,
    filter: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    summary_usage: str = "own",
    buckets: int | None = None,
    bucket_rows: int = 500_000,
    workers: int | None = 1,
    progress: bool = True,
    tmp_dir: str | Path | None = None,
) -> RollupStats:
    """Roll up Parquet / JSON Lines call files into one Parquet file, in bounded memory.

    Same results as :func:`rollup_frame` on the same calls (row order aside). Input is
    hashed on (project_id, trace_id) into ``buckets`` temporary Parquet parts (default:
    one per ``bucket_rows`` calls), written by a streaming sink; each bucket is then rolled
    up on its own, so peak memory is about one bucket per worker. ``workers`` > 1 (None: one
    per CPU) rolls buckets up in spawned processes, which, as any ``multiprocessing`` use,
    needs the calling script's work under ``if __name__ == "__main__":``. Temporary files
    go to ``tmp_dir`` (default: the system's).
    """
    for name, value in (("buckets", buckets), ("bucket_rows", bucket_rows), ("workers", workers)):
        if value is not None and value < 1:
            raise InvalidRequestError(f"{name} must be at least 1, not {value}", path=name)
    options = make_options(
        include_costs=include_costs,
        prices=prices,
        project_id=project_id,
        filter=filter,
        query=query,
        summary_usage=summary_usage,
    )
    parquet, jsonl = resolve_inputs(inputs)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="trace-usage-rollup-") as tmp:
        work = Path(tmp)
        sources = [*parquet, *jsonl_to_parquet(jsonl, work / "jsonl", options.columns())]
        calls = scan_parquet_calls(sources).select(options.columns())
        if options.project_id is not None:
            calls = calls.filter(pl.col(s.PROJECT_ID) == options.project_id)
        try:
            total = calls.select(pl.len()).collect().item()
        except pl.exceptions.PolarsError as err:
            raise InputDataError(f"cannot read the calls: {err}") from err
        count = buckets or max(1, math.ceil(total / bucket_rows))
        parts = _partition(calls, work / "buckets", count)
        stats = _roll_buckets(parts, output, options, total, workers, progress)
    return RollupStats(stats[0], stats[1], stats[2], count)


def _partition(calls: pl.LazyFrame, folder: Path, count: int) -> list[Path]:
    """Stream ``calls`` into ``count`` hash buckets of whole traces; one folder per bucket."""
    bucket = pl.struct(s.PROJECT_ID, s.TRACE_ID).hash(seed=0) % count
    try:
        calls.with_columns(bucket.alias(_BUCKET)).sink_parquet(
            pl.PartitionBy(folder, key=_BUCKET, include_key=False), mkdir=True
        )
    except pl.exceptions.PolarsError as err:  # unreadable file, column of the wrong type
        raise InputDataError(f"cannot read the calls: {err}") from err
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def roll_bucket(bucket: Path, options: RollupOptions) -> tuple[int, int, pl.DataFrame]:
    """Roll up one bucket folder: (traces, calls, rollup rows)."""
    calls = pl.read_parquet(bucket / "*.parquet")
    traces = calls.select(pl.struct(s.PROJECT_ID, s.TRACE_ID).n_unique()).item()
    return traces, calls.height, rollup_traces(calls, options)


def _roll_buckets(
    parts: list[Path],
    output: Path,
    options: RollupOptions,
    total: int,
    workers: int | None,
    progress: bool,
) -> tuple[int, int, int]:
    """Roll every bucket up (in worker processes when more than one) into ``output``.

    Workers send their rows back (pickled as Arrow IPC); this process alone writes.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(parts)))
    schema = s.empty(s.BATCH_OUTPUT_SCHEMA).to_arrow().schema
    done = [0, 0, 0]
    with (
        pq.ParquetWriter(output, schema) as writer,
        tqdm(total=total, unit="call", desc="rollup", disable=not progress) as bar,
    ):

        def collect(traces: int, calls: int, rows: pl.DataFrame) -> None:
            writer.write_table(rows.to_arrow().cast(schema))
            done[:] = [done[0] + traces, done[1] + calls, done[2] + rows.height]
            bar.update(calls)
            bar.set_postfix(traces=done[0])

        if workers == 1:
            for part in parts:
                collect(*roll_bucket(part, options))
        else:
            spawn = multiprocessing.get_context("spawn")  # Polars' thread pool must not fork
            with ProcessPoolExecutor(workers, mp_context=spawn) as pool:
                queue = iter(parts)
                # a few buckets in flight; a finished one is dropped once written
                pending = {pool.submit(roll_bucket, p, options) for p in islice(queue, workers + 1)}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        collect(*future.result())
                        pending.update(
                            pool.submit(roll_bucket, p, options) for p in islice(queue, 1)
                        )
    return done[0], done[1], done[2]
