"""The JSON writer: every layout of calls with and without usage, escaping, non-finite
costs, and batch boundaries, checked against the same answer built with plain Python."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import polars as pl
import pytest

from engine import serialize
from engine.serialize import json_chunks, to_dict, to_json

METRICS = ["requests", "prompt_tokens", "prompt_tokens_total_cost"]


def _answer(ids: list[str], rows: list[tuple[str, str, int, int, float | None]]) -> dict:
    """The expected document, by plain Python: rows grouped under their call, in order."""
    usage: dict[str, dict[str, Any]] = {i: {} for i in ids}
    for call, model, *values in rows:
        clean = [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]
        usage[call][model] = dict(zip(METRICS, clean, strict=True))
    return {"call_usage": usage, "unfinished_call_ids": ids[:1]}


def _frame(rows: list[tuple]) -> pl.DataFrame:
    schema = {"id": pl.String, "model": pl.String, "requests": pl.Int64}
    schema |= {"prompt_tokens": pl.Int64, "prompt_tokens_total_cost": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _random_case(rng: random.Random) -> tuple[list[str], list[tuple]]:
    names = ["a", 'q"uote', "back\\slash", "new\nline", "ünï", "\x01ctl", "x" * 40]
    ids = [f"{rng.choice(names)}-{k}" for k in range(rng.randint(0, 12))]
    rows = []
    for call in ids:
        for model in rng.sample(["gpt-4o", 'm"odel', "claude\t3", "o1" * 10], rng.randint(0, 2)):
            cost = rng.choice([None, 0.5, 1e-7, 123456.789, float("nan"), float("inf")])
            rows.append((call, model, rng.randint(0, 3), rng.randint(0, 10**12), cost))
    return ids, rows


@pytest.mark.parametrize("seed", range(60))
def test_text_is_the_plain_python_answer_whatever_the_layout(seed: int) -> None:
    ids, rows = _random_case(random.Random(seed))
    got = to_json(pl.Series(ids, dtype=pl.String), _frame(rows), ids[:1])
    assert json.loads(got) == _answer(ids, rows)


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 1000])
def test_batches_only_cut_the_text_into_more_pieces(
    batch_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(batch_rows)
    ids, rows = _random_case(rng)
    while not rows:
        ids, rows = _random_case(rng)
    whole = to_json(pl.Series(ids, dtype=pl.String), _frame(rows), ids[:1])
    monkeypatch.setattr(serialize, "_BATCH_ROWS", batch_rows)
    pieces = list(json_chunks(pl.Series(ids, dtype=pl.String), _frame(rows), ids[:1]))
    assert b"".join(pieces) == whole
    assert len(pieces) >= 2 + math.ceil(len(rows) / batch_rows)


def test_row_order_of_usage_does_not_matter_without_call_index() -> None:
    ids = ["r", "a", "b"]
    rows = [("b", "m", 1, 2, 0.5), ("r", "m", 3, 4, None), ("b", "n", 5, 6, 1.5)]
    assert to_dict(pl.Series(ids), _frame(rows), ["r"]) == _answer(ids, sorted(rows))


def test_call_index_spares_the_join() -> None:
    ids = ["r", "a", "b"]
    rows = [("a", "m", 1, 2, 0.5), ("b", "m", 3, 4, None)]
    index = np.array([1, 2])
    assert to_dict(pl.Series(ids), _frame(rows), ["r"], index) == _answer(ids, rows)


def test_no_calls_at_all() -> None:
    assert to_json(pl.Series([], dtype=pl.String), _frame([]), []) == (
        b'{"call_usage":{},"unfinished_call_ids":[]}'
    )
