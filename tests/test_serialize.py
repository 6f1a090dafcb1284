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
from polars.lazyframe import engine as polars_engine

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
    # short ones sit in Polars' string views, longer than 12 bytes in its buffers
    names = ["a", 'q"uote', "back\\slash", "new\nline", "ünï", "\x01ctl", "x" * 40]
    names += ['a long "quoted" call id', "ends in a backslash \\", "x" * 11 + "\t", "y" * 12]
    ids = [f"{rng.choice(names)}-{k}" for k in range(rng.randint(0, 12))]
    rows = []
    for call in ids:
        models = ["gpt-4o", 'm"odel', "claude\t3", "o1" * 10, 'a-long-model-"name"-2025']
        for model in rng.sample(models, rng.randint(0, 2)):
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


@pytest.mark.parametrize(
    "costs",
    [[None, None], [None, 0.5], [float("nan"), None], [float("inf"), 2.5], [1e-7, 1e22]],
)
def test_each_kind_of_metric_column_is_written_as_its_values(costs: list) -> None:
    ids = ["a", "b", "c"]
    rows = [("a", "m", 1, None, costs[0]), ("c", "m", 2, 3, costs[1])]
    got = to_json(pl.Series(ids), _frame(rows), ids[:1], np.array([0, 2]))
    assert json.loads(got) == _answer(ids, rows)


def test_a_metric_that_is_not_a_number_is_written_as_json() -> None:
    usage = pl.DataFrame({"id": ["a"], "model": ["m"], "requests": [1], "note": ['x"y']})
    assert to_dict(pl.Series(["a"]), usage, [], np.array([0])) == {
        "call_usage": {"a": {"m": {"requests": 1, "note": 'x"y'}}},
        "unfinished_call_ids": [],
    }


def test_an_answer_larger_than_polars_string_buffers() -> None:
    # thousands of rows: the text spans several of Polars' buffers, handed out in order
    rng = random.Random(7)
    quoted = {5, 3001, 5999}  # a few ids need escaping
    ids = [f"{k:08d}-call-" + 'q\\"' * (k in quoted) + str(rng.random()) for k in range(6000)]
    rows = [(i, m, k, k * 7, k / 3) for k, i in enumerate(ids) for m in ("gpt-4o", "o3") if k % 3]
    got = to_json(pl.Series(ids), _frame(rows), ids[:1])
    assert got == json.dumps(_answer(ids, rows), separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize("calls,rows", [(3, 0), (3, 5), (1, 1)])
def test_one_polars_query_per_batch_of_usage_rows(
    calls: int, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = pl.Series([f"call-{k:04d}" for k in range(calls)])
    index = np.sort(np.random.default_rng(rows).integers(0, calls, rows))
    usage = _frame([(f"call-{k:04d}", f"m{j}", j, 2, 0.5) for j, k in enumerate(index)])
    monkeypatch.setattr(serialize, "_BATCH_ROWS", 2)
    queries = 0
    collect = polars_engine._LocalEngine.collect

    def counted(engine: object, *args: object, **kwargs: object) -> object:
        nonlocal queries
        queries += 1
        return collect(engine, *args, **kwargs)

    monkeypatch.setattr(polars_engine._LocalEngine, "collect", counted)
    got = to_json(ids, usage, [], index)
    assert queries == math.ceil(rows / 2)
    monkeypatch.undo()
    assert got == to_json(ids, usage, [])  # the same answer found by a join
