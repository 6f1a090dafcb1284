"""Durability: a writer killed with SIGKILL loses no acknowledged batch and leaves no half.

A child process writes batches in a loop, printing each batch number after ``write_parts``
returns (the point where the service answers 2xx). The parent kills it at an arbitrary
moment, restarts it on the same file a few times, then checks the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl

from engine import schema as s
from service.settings import DB_FILE
from service.store import CallStore

BATCH = 40
ROUNDS = 3
ACKS_PER_ROUND = (7, 12, 5)

WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from pathlib import Path
    from service.parts import call_part, parts_frame
    from service.store import CallStore

    store = CallStore(Path(sys.argv[1]))
    batch, size = int(sys.argv[2]), int(sys.argv[3])
    t0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    while True:
        parts = []
        for i in range(size):
            call = {
                "project_id": "e/p", "id": f"b{batch}-{i}", "trace_id": f"b{batch}",
                "op_name": "op", "started_at": t0, "inputs": {"pad": "x" * 2000},
                "ended_at": t0, "summary": {"usage": {"m": {"requests": 1, "prompt_tokens": i}}},
            }
            parts.append(call_part(call, start=True, end=i % 2 == 0))
            if i % 2:
                parts.append(call_part(call, start=False, end=True))
        store.write_parts(parts_frame(parts))
        print(batch, flush=True)
        batch += 1
    """
)


def _run_until_killed(path: Path, first_batch: int, acks: int) -> list[int]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(first_batch), str(BATCH)],
        stdout=subprocess.PIPE,
        env=env,
    )
    acked = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked.append(int(line))
            if len(acked) >= acks:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(acked) == acks, f"writer died early: {child.returncode}"
    return acked


def test_acknowledged_batches_survive_sigkill_and_no_batch_is_partial(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    acked: list[int] = []
    next_batch = 0
    for acks in ACKS_PER_ROUND[:ROUNDS]:
        acked += _run_until_killed(path, next_batch, acks)
        next_batch = acked[-1] + 2  # the batch in flight may or may not have landed
    store = CallStore(path)
    try:
        calls, usage = (frame.collect() for frame in store.load("e/p"))
    finally:
        store.close()
    per_batch = calls.group_by(s.TRACE_ID).agg(
        pl.len().alias("calls"), pl.col(s.ENDED_AT).is_not_null().sum().alias("ended")
    )
    assert per_batch["calls"].to_list() == [BATCH] * per_batch.height  # all or nothing
    assert per_batch["ended"].to_list() == [BATCH] * per_batch.height
    present = {int(t[1:]) for t in per_batch[s.TRACE_ID]}
    assert set(acked) <= present
    assert usage.height == calls.height
    assert usage.group_by(pl.col(s.ID).str.extract(r"^(b\d+)-")).len()["len"].to_list() == [
        BATCH
    ] * len(present)
