"""A small run of the batch benchmark: it generates, rolls up through the CLI and verifies."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from benchmarks import batch_bench
from engine import schema as s


def test_small_benchmark_run_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--calls", "3000", "--traces", "40", "--data-dir", str(tmp_path), "--verify"]
    assert batch_bench.main([*argv, "--buckets", "3", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["calls"] == 3000 and report["traces"] == 40
    assert report["rows"] >= 3000 and report["peak_rss_gib"] > 0
    calls = pl.read_parquet(tmp_path / "trace-usage-batch-3000-40-0" / "*.parquet")
    assert calls.height == 3000
    assert calls.get_column(s.TRACE_ID).n_unique() == 40
    assert calls.filter(pl.col(s.PARENT_ID).is_null()).height == 40
