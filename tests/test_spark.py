"""Spark (local[2]) gives the single-machine rollup, through the same Polars engine.

One test function, so ``pytest -n 2`` starts exactly one Spark session.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine import schema as s
from engine.batch import SORT_KEYS, rollup_frame
from service.cli import main
from tests.test_batch import (
    EXTRA_PRICES,
    PROJECT,
    _unfinished_without_summary,
    calls_frame,
    sample_calls,
    write_jsonl,
)

pytestmark = pytest.mark.spark


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(SORT_KEYS, nulls_last=True)


def test_spark_equals_polars(tmp_path: Path) -> None:
    from engine.spark import local_session, rollup_spark

    raw = sample_calls(range(50, 53))
    calls = calls_frame(raw)
    calls.write_parquet(tmp_path / "calls.parquet")
    spark = local_session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    try:
        df = spark.read.parquet(str(tmp_path / "calls.parquet"))
        cases = [
            ({"include_costs": True, "prices": EXTRA_PRICES, "summary_usage": "auto"}, None),
            ({"include_costs": True, "summary_usage": "own", "project_id": PROJECT}, 3),
            ({"summary_usage": "own"}, 2),
        ]
        for options, buckets in cases:
            got = pl.from_arrow(rollup_spark(df, buckets=buckets, **options).toArrow())
            want = rollup_frame(calls, **options)
            assert want.height > 0
            assert_frame_equal(_sorted(got), want)

        # the CLI, JSON Lines in: Spark writes a Parquet folder, Polars a file
        write_jsonl(raw, tmp_path / "calls.jsonl.gz")
        EXTRA_PRICES.write_csv(tmp_path / "prices.csv")
        flags = ["--include-costs", "--prices", str(tmp_path / "prices.csv")]
        filter = {"op_names": ["tool", "openai.chat.completions.create"]}
        flags += ["--summary-usage", "auto", "--filter", json.dumps(filter)]
        jsonl = str(tmp_path / "calls.jsonl.gz")
        spark_out, polars_out = tmp_path / "spark-out", tmp_path / "polars.parquet"
        assert main(["rollup", jsonl, "-o", str(spark_out), "--engine", "spark", *flags]) == 0
        assert main(["rollup", jsonl, "-o", str(polars_out), "--no-progress", *flags]) == 0
        from_spark = _sorted(pl.read_parquet(spark_out / "*.parquet"))
        from_polars = pl.read_parquet(polars_out)
        assert_frame_equal(from_spark, _sorted(from_polars))
        want = rollup_frame(
            _unfinished_without_summary(calls),
            include_costs=True,
            prices=EXTRA_PRICES,
            summary_usage="auto",
            filter=filter,
        )
        assert_frame_equal(from_spark, want)
        assert from_spark.filter(pl.col(s.MODEL).is_null()).height > 0
    finally:
        spark.stop()
