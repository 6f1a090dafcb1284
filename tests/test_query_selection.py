"""select_calls: one lazy filter, helper columns dropped, each JSON path extracted once."""

from __future__ import annotations

import polars as pl

from engine.models import CallsFilter, Query
from engine.selection import select_calls

CALLS = pl.LazyFrame(
    {
        "id": ["a", "b", "c"],
        "trace_id": ["t1", "t1", "t2"],
        "inputs": ['{"n": 1, "m": "x"}', '{"n": 2, "m": "y"}', '{"n": 3}'],
    }
)


def _query(expr: dict) -> Query:
    return Query.model_validate({"$expr": expr})


def test_result_is_lazy_with_the_input_columns() -> None:
    n = {"$getField": "inputs.n"}
    query = _query({"$and": [{"$gt": [n, {"$literal": 1}]}, {"$lt": [n, {"$literal": 3}]}]})
    out = select_calls(CALLS, CallsFilter(trace_ids=["t1"]), query)
    assert isinstance(out, pl.LazyFrame)
    assert out.collect_schema().names() == ["id", "trace_id", "inputs"]
    assert out.collect()["id"].to_list() == ["b"]


def test_a_path_read_by_several_predicates_is_extracted_once() -> None:
    n = {"$getField": "inputs.n"}
    preds = [{op: [n, {"$literal": 2}]} for op in ("$gt", "$gte", "$eq", "$lt")]
    plan = select_calls(CALLS, None, _query({"$or": preds})).explain(optimized=False)
    # one match of the value, one string test: however many predicates read it
    assert plan.count("json_path_match") == 2


def test_no_filter_no_query_is_the_input() -> None:
    assert select_calls(CALLS, None, None) is CALLS
