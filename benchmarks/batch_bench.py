"""Batch rollup benchmark: N calls in T traces, Parquet to Parquet, wall time and peak RSS.

Run ``python -m benchmarks.batch_bench --calls 10000000 --traces 100000`` (the issue's
target: <= 90 s and <= 4 GiB on 2 cores). The input is generated once per size and seed
(agent-shaped traces, as directories of Parquet files) and cached in ``--data-dir``; the
rollup itself runs as ``trace-usage rollup`` in a child process, whose whole process tree
(workers included) is sampled for resident memory. ``--verify`` also checks every root's
rolled-up tokens against the sum of its trace's own usage (for small runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil

from engine import schema as s
from engine.usage import normalize, usage_from_json

PROJECT = "bench/batch"
T0 = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
MODELS = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-20250514", "gemini-1.5-pro", "acme/ft"]
_LLM, _TOOL, _STEP = 0, 1, 2
_OPS = ["openai.chat.completions.create", "weave:///bench/batch/op/tool:v1", "Agent.step"]
_CHUNK_CALLS = 1_000_000


def generate(folder: Path, calls: int, traces: int, seed: int = 0) -> None:
    """Write ``calls`` calls in ``traces`` equal-sized traces as Parquet files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    per_trace = max(1, calls // traces)
    traces_per_chunk = max(1, _CHUNK_CALLS // per_trace)
    for part, first in enumerate(range(0, traces, traces_per_chunk)):
        count = min(traces_per_chunk, traces - first)
        rng = np.random.default_rng([seed, part])
        frame = _chunk(rng, first * per_trace, count, per_trace)
        frame.write_parquet(folder / f"part-{part:05d}.parquet", row_group_size=250_000)


def _chunk(rng: np.random.Generator, offset: int, traces: int, per_trace: int) -> pl.DataFrame:
    """``traces`` agent-shaped traces: LLM leaves under random earlier steps and tools."""
    n = traces * per_trace
    i = np.arange(n, dtype=np.int64)
    base = (i // per_trace) * per_trace
    roles = rng.choice([_LLM, _TOOL, _STEP], size=n, p=[0.6, 0.25, 0.15])
    roles[i == base] = _STEP
    containers = np.flatnonzero(roles != _LLM)
    before = np.searchsorted(containers, i, side="left") - np.searchsorted(containers, base)
    pick = np.searchsorted(containers, base) + (rng.random(n) * before).astype(np.int64)
    parent = np.where(before > 0, containers[np.minimum(pick, len(containers) - 1)], base)
    parent = np.where(i == base, -1, parent)
    two_models = rng.random(n) < 0.15
    call_id = pl.format(
        "019a0000-0000-7000-8000-{}", (pl.col("i") + offset).cast(str).str.zfill(12)
    )
    frame = pl.DataFrame(
        {
            "i": i,
            "parent": parent,
            "role": roles,
            "m1": rng.integers(0, len(MODELS), n),
            "m2": rng.integers(0, len(MODELS), n),
            "p": rng.integers(50, 8_000, n),
            "c": rng.integers(1, 1_500, n),
            "two": two_models,
            "running": rng.random(n) < 0.01,
        }
    )
    names = dict(enumerate(MODELS))

    def entry(model: str, prompt: str, completion: str) -> pl.Expr:
        return pl.concat_str(
            pl.lit('"'),
            pl.col(model).replace_strict(names),
            pl.lit('":{"requests":1,"prompt_tokens":'),
            pl.col(prompt).cast(str),
            pl.lit(',"completion_tokens":'),
            pl.col(completion).cast(str),
            pl.lit(',"total_tokens":'),
            (pl.col("p") + pl.col("c")).cast(str),
            pl.lit("}"),
        )

    first, second = entry("m1", "p", "c"), entry("m2", "c", "p")
    usage = pl.when("two").then(pl.concat_str(first, pl.lit(","), second)).otherwise(first)
    started = pl.lit(T0) + pl.duration(milliseconds=pl.col("i") + offset)
    return frame.select(
        pl.lit(PROJECT).alias(s.PROJECT_ID),
        call_id.alias(s.ID),
        pl.format("019a0000-ffff-7000-8000-{}", ((pl.col("i") + offset) // per_trace)).alias(
            s.TRACE_ID
        ),
        pl.when(pl.col("parent") >= 0)
        .then(
            pl.format(
                "019a0000-0000-7000-8000-{}", (pl.col("parent") + offset).cast(str).str.zfill(12)
            )
        )
        .alias(s.PARENT_ID),
        pl.col("role").replace_strict(dict(enumerate(_OPS))).alias(s.OP_NAME),
        started.alias(s.STARTED_AT),
        pl.when(~pl.col("running")).then(started + pl.duration(milliseconds=800)).alias(s.ENDED_AT),
        pl.concat_str(pl.lit('{"step":'), pl.col("i").cast(str), pl.lit("}")).alias(s.INPUTS),
        pl.when(pl.col("role") == _LLM)
        .then(pl.concat_str(pl.lit('{"usage":{'), usage, pl.lit('},"weave":{"status":"ok"}}')))
        .otherwise(pl.lit('{"weave":{"status":"ok"}}'))
        .alias(s.SUMMARY),
    )


def run(folder: Path, output: Path, flags: list[str]) -> dict[str, float]:
    """Run ``trace-usage rollup`` on ``folder``: wall and CPU seconds, peak RSS of its tree.

    The peak is the largest sum of the resident memory of every process of the run at one
    50 ms sample (main process plus workers).
    """
    cmd = [sys.executable, "-m", "service.cli", "rollup", str(folder), "-o", str(output)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--no-progress", *flags])
    root = psutil.Process(proc.pid)
    peak_tree = peak_one = 0
    while proc.poll() is None:
        try:
            rss = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
            peak_tree, peak_one = max(peak_tree, sum(rss)), max(peak_one, max(rss))
        except psutil.Error:  # a process ended between listing and reading
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"rollup failed with exit code {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,  # all processes: on an idle machine, wall ~ cpu / cores
        "peak_rss_gib": peak_tree / 2**30,
        "max_proc_gib": peak_one / 2**30,
    }


def verify(folder: Path, output: Path) -> None:
    """Every root's rolled-up tokens equal its trace's summed own usage (all calls selected)."""
    calls = pl.read_parquet(folder / "*.parquet")
    own = normalize(usage_from_json(calls.select(s.ID, s.SUMMARY)).lazy()).collect()
    want = (
        own.join(calls.select(s.ID, s.TRACE_ID), on=s.ID)
        .group_by(s.TRACE_ID, s.MODEL)
        .agg(pl.col(t).sum() for t in s.TOKENS)
    )
    roots = calls.filter(pl.col(s.PARENT_ID).is_null()).select(pl.col(s.ID).alias(s.CALL_ID))
    got = (
        pl.read_parquet(output)
        .join(roots, on=s.CALL_ID)
        .drop_nulls(s.MODEL)
        .select(s.TRACE_ID, s.MODEL, *s.TOKENS)
    )
    key = [s.TRACE_ID, s.MODEL]
    if not got.sort(key).equals(want.sort(key)):
        raise SystemExit("verification failed: root totals differ from per-trace sums")
    rows = pl.scan_parquet(output).select(pl.col(s.CALL_ID).n_unique()).collect().item()
    if rows != calls.height:
        raise SystemExit(f"verification failed: {rows} calls in output, {calls.height} in input")


def main(argv: list[str] | None = None) -> int:
    """Generate (once), run, report one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=10_000_000)
    parser.add_argument("--traces", type=int, help="default: calls / 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--verify", action="store_true", help="check root totals (small runs)")
    args, flags = parser.parse_known_args(argv)
    traces = args.traces or max(1, args.calls // 100)
    args.calls = traces * max(1, args.calls // traces)  # equal-sized traces
    folder = args.data_dir / f"trace-usage-batch-{args.calls}-{traces}-{args.seed}"
    if not folder.exists():
        started = time.perf_counter()
        generate(folder, args.calls, traces, args.seed)
        print(f"generated {folder} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=args.data_dir) as tmp:
        output = Path(tmp) / "usage.parquet"
        result = run(folder, output, flags)
        if args.verify:
            verify(folder, output)
        rows = pl.scan_parquet(output).select(pl.len()).collect().item()
    report = {"calls": args.calls, "traces": traces, "rows": rows, "flags": flags, **result}
    report["calls_per_s"] = args.calls / result["seconds"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
