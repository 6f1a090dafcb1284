"""The batch rollup on a PySpark DataFrame: Spark groups, the Polars engine computes.

Spark only moves data: it groups calls by (project_id, trace_id) -- or, with ``buckets``, by
a hash of that pair, so that one engine run serves many traces -- and hands each group to
:func:`engine.batch.rollup_traces` as Arrow (``applyInArrow``). There is no second
implementation of the rollup; results equal :func:`engine.batch.rollup_frame`'s.

Import this module only when pyspark is installed (the ``spark`` extra); executors need this
package installed too.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from engine import schema as s
from engine.batch import PricesArg, RollupOptions, make_options, rollup_traces
from engine.errors import InputDataError
from engine.io import check_parquet, conform_calls, jsonl_to_parquet, resolve_inputs

_BUCKET = "__bucket"
# output dtype -> (Spark type, the Arrow type Spark expects back: plain strings, not views)
_TYPES: dict[type[pl.DataType], tuple[T.DataType, pa.DataType]] = {
    pl.String: (T.StringType(), pa.string()),
    pl.Int64: (T.LongType(), pa.int64()),
    pl.Float64: (T.DoubleType(), pa.float64()),
    pl.Boolean: (T.BooleanType(), pa.bool_()),
}
_ARROW_SCHEMA = pa.schema([(name, _TYPES[type(t)][1]) for name, t in s.BATCH_OUTPUT_SCHEMA.items()])


def output_schema() -> T.StructType:
    """:data:`engine.schema.BATCH_OUTPUT_SCHEMA` as a Spark schema."""
    fields = [
        T.StructField(name, _TYPES[type(t)][0], True) for name, t in s.BATCH_OUTPUT_SCHEMA.items()
    ]
    return T.StructType(fields)


def _roll_group(options: RollupOptions, table: pa.Table) -> pa.Table:
    """One Spark group (whole traces) through the engine."""
    frame = pl.DataFrame(pl.from_arrow(table))
    schema = pl.Schema({n: t for n, t in frame.schema.items() if n in s.CALL_SCHEMA})
    calls = conform_calls(frame.lazy(), schema, "calls").collect()
    return rollup_traces(calls, options).to_arrow().cast(_ARROW_SCHEMA)


def rollup_spark(
    df: DataFrame,
    *,
    include_costs: bool = False,
    prices: PricesArg = None,
    project_id: str | None = None,
    filter: dict[str, Any] | None = None,
    query: dict[str, Any] | None = None,
    summary_usage: str = "own",
    buckets: int | None = None,
) -> DataFrame:
    """Rollup rows (:data:`engine.schema.BATCH_OUTPUT_SCHEMA`) of a Spark DataFrame of calls.

    ``df`` has the columns of :data:`engine.schema.CALL_SCHEMA` (missing optional ones
    read as null; timestamps as Spark timestamps, JSON columns as text). The options are
    those of :func:`engine.batch.rollup_frame`. By default every (project_id, trace_id) is
    one group and one engine run; ``buckets`` instead groups traces by a hash into that
    many groups, so each engine run serves many traces (far less per-trace overhead; each
    group must fit in an executor's memory).
    """
    options = make_options(
        include_costs=include_costs,
        prices=prices,
        project_id=project_id,
        filter=filter,
        query=query,
        summary_usage=summary_usage,
    )
    missing = [c for c in (s.PROJECT_ID, s.ID, s.TRACE_ID) if c not in df.columns]
    if missing:
        raise InputDataError(f"calls DataFrame lacks required column {missing[0]!r}")
    calls = df.select(*[c for c in options.columns() if c in df.columns])
    if project_id is not None:
        calls = calls.filter(F.col(s.PROJECT_ID) == project_id)

    def roll(table):  # no annotations: Spark then passes one pa.Table per group
        return _roll_group(options, table)

    if buckets is None:
        grouped = calls.groupBy(s.PROJECT_ID, s.TRACE_ID)
    else:
        key = F.pmod(F.xxhash64(s.PROJECT_ID, s.TRACE_ID), F.lit(buckets))
        grouped = calls.withColumn(_BUCKET, key).groupBy(_BUCKET)
    return grouped.applyInArrow(roll, output_schema())


def local_session(master: str = "local[*]") -> SparkSession:
    """A Spark session whose Python workers run this interpreter, in UTC."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(master)
        .appName("trace-usage rollup")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )


def read_calls_spark(spark: SparkSession, inputs: Iterable[str | Path], work: Path) -> DataFrame:
    """Parquet and JSON Lines inputs as one Spark DataFrame (JSON Lines via Parquet in ``work``)."""
    parquet, jsonl = resolve_inputs(inputs)
    for path in parquet:
        check_parquet(path)
    paths = [str(p) for p in (*parquet, *jsonl_to_parquet(jsonl, work))]
    return spark.read.option("mergeSchema", "true").parquet(*paths)


def rollup_spark_files(
    inputs: Iterable[str | Path],
    output: str | Path,
    *,
    master: str = "local[*]",
    **options: Any,
) -> None:
    """``trace-usage rollup --engine spark``: inputs to a Parquet directory ``output``.

    Uses the active Spark session if there is one, else starts (and then stops) one on
    ``master``; ``options`` are those of :func:`rollup_spark`.
    """
    active = SparkSession.getActiveSession()
    spark = active or local_session(master)
    try:
        with tempfile.TemporaryDirectory(prefix="trace-usage-spark-") as tmp:
            calls = read_calls_spark(spark, inputs, Path(tmp))
            rollup_spark(calls, **options).write.mode("overwrite").parquet(str(output))
    finally:
        if active is None:
            spark.stop()
