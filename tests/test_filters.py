"""One table per CallsFilter field; every row is checked against the reference too."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from engine.errors import QueryTooComplexError
from engine.filters import filter_exprs
from engine.models import CallsFilter
from tests.query_support import (
    ALL,
    DS_V1,
    DS_V2,
    INTERNAL_OP,
    assert_selects,
    field,
    lit,
)

FILTERS: list[tuple[dict[str, Any], list[str]]] = [
    ({"op_names": ["plain"]}, ["c1", "c4"]),
    ({"op_names": [INTERNAL_OP]}, ["c2"]),
    ({"op_names": ["weave-trace-internal:///cHJvamVjdA/op/agent:*"]}, ["c2"]),
    ({"op_names": ["weave-trace-internal:///cHJvamVjdA/op/*"]}, []),  # ':*' only
    ({"op_names": ["weave-trace-internal:///cHJvamVjdA/op/ag:*"]}, []),  # 'name:' prefix
    ({"op_names": ["plain", "weave-trace-internal:///cHJvamVjdA/op/tool:*"]}, ["c1", "c3", "c4"]),
    ({"op_names": []}, ALL),  # empty: no filter
    ({"input_refs": [DS_V1]}, ["c1"]),
    ({"input_refs": [DS_V1, DS_V2]}, ["c1", "c2"]),
    ({"input_refs": ["weave-trace-internal:///cHJvamVjdA/object/dataset:*"]}, ["c1", "c2"]),
    ({"input_refs": ["weave-trace-internal:///cHJvamVjdA/object/data:*"]}, []),
    ({"input_refs": []}, ALL),
    ({"output_refs": [DS_V1]}, ["c3"]),
    ({"output_refs": [DS_V2]}, []),
    ({"parent_ids": ["c1", "c3"]}, ["c2", "c4"]),
    ({"parent_ids": []}, ALL),
    ({"trace_ids": ["t2"]}, ["c3", "c4"]),
    ({"trace_ids": ["t2", "nope"]}, ["c3", "c4"]),
    ({"call_ids": ["c1", "c4", "zz"]}, ["c1", "c4"]),
    ({"call_ids": []}, ALL),
    ({"thread_ids": ["th-1"]}, ["c1"]),
    ({"thread_ids": []}, []),  # explicit empty list: nothing
    ({"turn_ids": ["tu-1", "x"]}, ["c1"]),
    ({"turn_ids": []}, []),
    ({"trace_roots_only": True}, ["c1", "c3"]),
    ({"trace_roots_only": False}, ALL),
    ({"wb_user_ids": ["u2"]}, ["c3"]),
    ({"wb_user_ids": []}, ALL),
    ({"wb_run_ids": ["r1", "r2"]}, ["c1"]),
    ({"trace_ids": ["t1"], "trace_roots_only": True}, ["c1"]),
    ({"trace_ids": ["t2"], "input_refs": [DS_V1]}, []),
]


@pytest.mark.parametrize(("filter", "want"), FILTERS)
def test_filter_field(filter: dict[str, Any], want: list[str]) -> None:
    assert_selects(None, want, filter=filter)


def test_filter_and_query_combine() -> None:
    query = {"$gt": [field("inputs.n"), lit(0)]}
    assert_selects(query, ["c3"], filter={"trace_ids": ["t2"]})


def test_too_many_values() -> None:
    with pytest.raises(QueryTooComplexError) as err:
        filter_exprs(CallsFilter(call_ids=[str(i) for i in range(1001)]))
    assert err.value.path == "filter.call_ids"
    filter_exprs(CallsFilter(wb_run_ids=[str(i) for i in range(1001)]))  # not limited


def test_public_refs_match_by_prefix_too() -> None:
    frame = pl.DataFrame(
        {
            "op_name": ["weave:///e/p/op/agent:v1", "weave:///e/p/op/agents:v1"],
            "input_refs": [["weave:///e/p/object/ds:v1"], []],
        }
    )
    flt = CallsFilter(op_names=["weave:///e/p/op/agent:*"], input_refs=["weave:///e/p/object/ds:*"])
    assert frame.filter(filter_exprs(flt)).height == 1


def test_null_refs_match_nothing() -> None:
    frame = pl.DataFrame({"input_refs": [None, ["a"]]}, schema={"input_refs": pl.List(pl.String)})
    assert frame.filter(filter_exprs(CallsFilter(input_refs=["a"]))).height == 1
