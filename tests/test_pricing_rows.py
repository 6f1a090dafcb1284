"""``cost_rows`` turns rolled-up token sums into answer rows: costed from the exact sums,
one row per (call, model) even when a model's rows were priced by several price rows, and
the same ``RESULT_SCHEMA`` frame whether or not there is any usage."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from engine import schema as s
from engine.pricing import cost_rows


def _groups(models: list[str], price: float | None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            s.MODEL: models,
            s.PRICE_SEQ: list(range(len(models))),
            **{p: [price] * len(models) for p in s.PRICES},
        },
        schema={s.MODEL: pl.String, s.PRICE_SEQ: pl.Int64, **dict.fromkeys(s.PRICES, pl.Float64)},
    )


def _totals(rows: int) -> dict[str, np.ndarray]:
    return {
        name: np.arange(1, rows + 1, dtype=np.int64) * (k + 1) for k, name in enumerate(s.TOKENS)
    }


@pytest.mark.parametrize("include_costs", [False, True])
def test_no_usage_gives_empty_result_rows(include_costs: bool) -> None:
    none = np.zeros(0, dtype=np.int64)
    ids = pl.Series(s.ID, ["a", "b"])
    rows, index = cost_rows(ids, none, _groups(["m"], 1.0), none, _totals(0), include_costs)
    again, _ = cost_rows(ids, none, _groups(["m"], 1.0), none, _totals(0), include_costs)
    assert rows.schema == pl.Schema(s.RESULT_SCHEMA) and rows.height == 0
    assert index.tolist() == [] and rows is not again


@pytest.mark.parametrize("include_costs", [False, True])
def test_rows_are_costed_per_call_and_model(include_costs: bool) -> None:
    ids = pl.Series(s.ID, ["a", "b"])
    call, group = np.array([0, 0, 1]), np.array([0, 1, 1])
    groups = _groups(["m", "n"], 0.5).with_columns(pl.Series(s.PROMPT_PRICE, [0.5, None]))
    rows, index = cost_rows(ids, call, groups, group, _totals(3), include_costs)
    assert rows.schema == pl.Schema(s.RESULT_SCHEMA) and index.tolist() == [0, 0, 1]
    assert rows.select(s.ID, s.MODEL).rows() == [("a", "m"), ("a", "n"), ("b", "n")]
    assert rows.get_column(s.PROMPT_TOKENS).to_list() == [2, 4, 6]
    completion = rows.get_column(s.COMPLETION_COST).to_list()
    if include_costs:  # the unpriced prompt of model n costs 0
        assert rows.get_column(s.PROMPT_COST).to_list()[1:] == [0.0, 0.0]
        assert completion == [0.5 * 3, 0.5 * 6, 0.5 * 9]
    else:
        assert completion == [None, None, None]


def test_a_model_under_two_price_rows_is_one_row_with_summed_costs() -> None:
    ids = pl.Series(s.ID, ["a"])
    call, group = np.array([0, 0]), np.array([0, 1])
    groups = _groups(["m", "m"], 1.0).with_columns(pl.Series(s.COMPLETION_PRICE, [1.0, 2.0]))
    rows, index = cost_rows(ids, call, groups, group, _totals(2), True)
    assert index.tolist() == [0] and rows.select(s.ID, s.MODEL).rows() == [("a", "m")]
    assert rows.get_column(s.COMPLETION_TOKENS).to_list() == [3 + 6]
    assert rows.get_column(s.COMPLETION_COST).to_list() == [3 * 1.0 + 6 * 2.0]
