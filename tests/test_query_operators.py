"""One table per operator and rule of ``$expr``; every row is checked against the reference."""

from __future__ import annotations

from typing import Any

import pytest

from tests.query_support import (
    ALL,
    PUBLIC_OP,
    assert_selects,
    call,
    field,
    lit,
    ours,
    request,
)

EQ = [
    # JSON fields compared with a string read JSON_VALUE text
    (field("inputs.s"), lit("abc"), ["c1"]),
    (field("inputs.n"), lit("5"), ["c1", "c2"]),
    (field("inputs.n"), lit("7"), ["c3"]),  # 7.0 reads as '7'
    (field("inputs.b"), lit("true"), ["c1", "c2"]),
    (field("inputs.missing"), lit(""), ALL),
    (field("inputs.nested.x-y"), lit(""), ALL),  # null reads as ''
    (field("output.a"), lit("1000"), ["c1"]),  # 1e3
    (field("inputs.k\\.d"), lit("dot"), ["c1"]),
    (field("inputs.list.0"), lit("10"), ["c1"]),
    (field("inputs.list.1.a"), lit("x"), ["c1"]),
    (field("inputs.list.1"), lit('{"a":"x"}'), ["c1"]),
    (field("inputs.0"), lit("zero"), ["c1"]),
    (field("output"), lit("plain text"), ["c2"]),
    (field("output.0"), lit("weave-trace-internal:///cHJvamVjdA/object/dataset:v1"), ["c3"]),
    (field("inputs.s"), lit("héllo"), ["c4"]),
    # numeric literals cast the JSON side (null when it does not parse)
    (field("inputs.n"), lit(5), ["c1", "c2"]),
    (field("inputs.t"), lit(7), ["c1"]),  # ' 7 ' trims
    (field("inputs.f"), lit(1.5), ["c1", "c2"]),
    (field("inputs.n"), lit(7.0), ["c3"]),
    (field("inputs.b"), lit(True), ["c1", "c2"]),
    (field("inputs.b"), lit(False), ["c3"]),
    (lit(5), field("inputs.n"), ["c1", "c2"]),  # the cast works from either side
    # plain columns
    (field("op_name"), lit("plain"), ["c1", "c4"]),
    (field("display_name"), lit(""), ["c3"]),
    (field("wb_run_step"), lit(3), ["c1"]),
    (field("wb_run_step"), lit("3"), []),  # int vs str: NULL
    (field("thread_id"), field("thread_id"), ["c1", "c2"]),  # NULL = NULL is NULL
    (field("trace_id"), lit("t2"), ["c3", "c4"]),
]


@pytest.mark.parametrize(("left", "right", "want"), EQ)
def test_eq(left: dict, right: dict, want: list[str]) -> None:
    assert_selects({"$eq": [left, right]}, want)


EQ_NULL = [
    (field("display_name"), ["c2", "c4"]),
    (field("exception"), ["c1", "c2", "c4"]),
    (field("inputs.missing"), []),  # JSON fields are never NULL
    (field("summary.weave.latency_ms"), ["c2"]),
    ({"$convert": {"input": field("inputs.s"), "to": "int"}}, ALL),
]


@pytest.mark.parametrize(("left", "want"), EQ_NULL)
def test_eq_null_means_is_null(left: dict, want: list[str]) -> None:
    assert_selects({"$eq": [left, lit(None)]}, want)


def test_null_literal_on_the_left_is_just_null() -> None:
    assert_selects({"$eq": [lit(None), field("display_name")]}, [])
    assert_selects({"$not": [{"$eq": [lit(None), field("display_name")]}]}, [])


ORDER = [
    ("$gt", field("inputs.n"), lit(5), ["c3"]),
    ("$gte", field("inputs.n"), lit(5), ["c1", "c2", "c3"]),
    ("$lt", field("inputs.n"), lit(5), ["c4"]),
    ("$lte", field("inputs.n"), lit(0), ["c4"]),
    ("$gt", field("inputs.n"), lit(4.5), ["c1", "c2", "c3"]),
    ("$lt", lit(6), field("inputs.n"), ["c3"]),
    ("$gt", field("inputs.s"), lit("abc"), ["c4"]),  # string order
    ("$lt", field("inputs.s"), lit("a"), ["c2", "c3"]),
    ("$gt", field("wb_run_step"), lit(1), ["c1"]),
    ("$gt", field("inputs.n"), field("inputs.s"), ["c3"]),  # text order: '5' < 'ABC' < 'abc'
    ("$gt", field("started_at"), field("ended_at"), []),
    ("$lte", field("started_at"), field("ended_at"), ["c1", "c3", "c4"]),
    ("$gt", field("inputs.n"), lit(None), []),
]


@pytest.mark.parametrize(("op", "left", "right", "want"), ORDER)
def test_ordering(op: str, left: dict, right: dict, want: list[str]) -> None:
    assert_selects({op: [left, right]}, want)


DATETIMES = [
    ("$gt", "started_at", "2025-01-01T00:00:00Z", ["c2", "c3"]),
    ("$gte", "started_at", "2025-01-01T00:00:00+00:00", ["c1", "c2", "c3"]),
    ("$eq", "started_at", "2025-01-01", ["c1"]),
    ("$lt", "started_at", "2025-01-01 00:00:00", ["c4"]),
    ("$gt", "started_at", "2025-01-01T01:00:00+02:00", ["c1", "c2", "c3"]),
    ("$gt", "started_at", 1735689600, ["c2", "c3"]),  # unix seconds
    ("$gt", "started_at", 1735689600.5, ["c2", "c3"]),
    ("$eq", "ended_at", 1735689603, ["c1", "c4"]),
    ("$gt", "ended_at", 0, ["c1", "c3", "c4"]),  # running calls: NULL
    ("$eq", "started_at", "not a date", []),
    ("$gt", "started_at", "not a date", []),
    ("$eq", "started_at", True, []),
]


@pytest.mark.parametrize(("op", "name", "value", "want"), DATETIMES)
def test_datetime_columns(op: str, name: str, value: Any, want: list[str]) -> None:
    assert_selects({op: [field(name), lit(value)]}, want)
    flipped = {"$gt": "$lt", "$gte": "$lte", "$lt": "$gt", "$lte": "$gte", "$eq": "$eq"}[op]
    assert_selects({flipped: [lit(value), field(name)]}, want)


LOGIC = [
    (
        {"$and": [{"$eq": [field("trace_id"), lit("t2")]}, {"$gt": [field("inputs.n"), lit(0)]}]},
        ["c3"],
    ),
    (
        {"$or": [{"$eq": [field("trace_id"), lit("t2")]}, {"$gt": [field("inputs.n"), lit(5)]}]},
        ["c3", "c4"],
    ),
    ({"$not": [{"$eq": [field("trace_id"), lit("t2")]}]}, ["c1", "c2"]),
    # NOT of NULL stays NULL
    ({"$not": [{"$gt": [field("wb_run_step"), lit(1)]}]}, []),
    ({"$not": [{"$eq": [field("display_name"), lit("First")]}]}, ["c3"]),
    ({"$not": [{"$not": [{"$eq": [field("display_name"), lit("First")]}]}]}, ["c1"]),
    # AND/OR of a NULL part are plain false, so NOT of them is true
    (
        {"$not": [{"$and": [{"$gt": [field("wb_run_step"), lit(1)]}, lit(True)]}]},
        ["c2", "c3", "c4"],
    ),
    ({"$or": [{"$gt": [field("wb_run_step"), lit(9)]}, lit(False)]}, []),
    # operands of AND/OR count by truthiness: '' and 0 are false, other text true
    ({"$and": [field("inputs.s"), lit(1)]}, ["c1", "c2", "c4"]),
    ({"$or": [field("display_name"), field("exception")]}, ["c1", "c3"]),
    # a single operand passes its value through unchanged
    ({"$and": [{"$eq": [field("inputs.n"), lit("5")]}]}, ["c1", "c2"]),
    ({"$not": [{"$or": [field("inputs.s")]}]}, ["c3"]),
    ({"$not": [{"$and": [field("display_name")]}]}, ["c3"]),
    ({"$not": [field("input_refs")]}, ["c3", "c4"]),
]


@pytest.mark.parametrize(("query", "want"), LOGIC)
def test_logic(query: dict, want: list[str]) -> None:
    assert_selects(query, want)


IN = [
    (field("inputs.n"), [lit(5), lit(7)], ["c1", "c2", "c3"]),
    (field("inputs.n"), [lit(5), lit(7.0)], ["c1", "c2", "c3"]),  # int+double: double
    (field("inputs.n"), [lit("5"), lit("-2")], ["c1", "c2", "c4"]),
    (field("inputs.n"), [lit(5), lit("7")], ["c3"]),  # mixed: no cast, text vs 5 is NULL
    (field("inputs.b"), [lit(True)], ["c1", "c2"]),
    (field("op_name"), [lit("plain"), lit(None)], ["c1", "c4"]),
    (field("thread_id"), [lit("th-1"), lit("th-2")], ["c1", "c2"]),
    (field("wb_run_step"), [lit(3), lit(4)], ["c1"]),
    (field("op_name"), [], []),
    (field("trace_id"), [field("thread_id"), lit("t2")], ["c3", "c4"]),
    (field("started_at"), [lit("2025-01-01T00:00:00Z")], []),  # no datetime parsing in $in
    (lit("t2"), [field("trace_id")], ["c3", "c4"]),
]


@pytest.mark.parametrize(("left", "items", "want"), IN)
def test_in(left: dict, items: list, want: list[str]) -> None:
    assert_selects({"$in": [left, items]}, want)


def test_not_in_keeps_nulls_out() -> None:
    assert_selects({"$not": [{"$in": [field("thread_id"), [lit("th-1")]]}]}, ["c2"])


CONTAINS = [
    (field("inputs.s"), lit("b"), None, ["c1"]),
    (field("inputs.s"), lit("b"), True, ["c1", "c2"]),
    (field("inputs.s"), lit("B"), False, ["c2"]),
    (field("inputs.s"), lit("É"), True, ["c4"]),
    (field("inputs.s"), lit(""), None, ALL),
    (field("display_name"), lit(""), None, ["c1", "c3"]),  # NULL is not text: false
    (field("op_name"), lit("agent"), None, ["c2"]),
    (field("inputs.list"), lit('"a"'), None, ["c1"]),  # containers read as JSON text
    (field("inputs"), lit("\\u00e9"), None, ["c4"]),  # ...with non-ASCII escaped
    (field("wb_run_step"), lit("3"), None, []),  # not text: false, even under $not
    (lit("xabcx"), field("inputs.s"), None, ["c1", "c3"]),
]


@pytest.mark.parametrize(("haystack", "needle", "ci", "want"), CONTAINS)
def test_contains(haystack: dict, needle: dict, ci: bool | None, want: list[str]) -> None:
    spec: dict[str, Any] = {"input": haystack, "substr": needle}
    if ci is not None:
        spec["case_insensitive"] = ci
    assert_selects({"$contains": spec}, want)


def test_contains_is_never_null() -> None:
    spec = {"input": field("wb_run_step"), "substr": lit("3")}
    assert_selects({"$not": [{"$contains": spec}]}, ALL)


CONVERT = [
    ("inputs.n", "int", {"$gt": [None, lit(0)]}, ["c1", "c2", "c3"]),  # 7.0 reads '7'
    ("inputs.n", "double", {"$lt": [None, lit(0)]}, ["c4"]),
    ("inputs.f", "double", {"$eq": [None, lit(1.5)]}, ["c1", "c2"]),
    ("inputs.t", "int", {"$eq": [None, lit(7)]}, ["c1"]),
    ("inputs.b", "bool", {"$eq": [None, lit(1)]}, ["c1", "c2"]),
    ("inputs.n", "bool", {"$eq": [None, lit(5)]}, ["c1", "c2"]),  # 0..255 read as numbers
    ("inputs.n", "string", {"$eq": [None, lit("5")]}, ["c1", "c2"]),
    ("inputs.missing", "exists", {"$eq": [None, lit(True)]}, ALL),  # JSON reads are never NULL
    ("display_name", "exists", {"$eq": [None, lit(True)]}, ["c1", "c3"]),
    ("wb_run_step", "string", {"$eq": [None, lit("3")]}, ["c1"]),
    ("wb_run_step", "double", {"$gt": [None, lit(2.5)]}, ["c1"]),
    ("started_at", "string", {"$eq": [None, lit("2025-01-01 00:00:00+00:00")]}, ["c1"]),
    ("summary.weave.latency_ms", "string", {"$eq": [None, lit("1500")]}, ["c3"]),
    ("input_refs", "string", {"$contains": None}, ["c1", "c2"]),
]


@pytest.mark.parametrize(("name", "to", "test", "want"), CONVERT)
def test_convert(name: str, to: str, test: dict, want: list[str]) -> None:
    converted = {"$convert": {"input": field(name), "to": to}}
    op, args = next(iter(test.items()))
    if op == "$contains":
        query = {op: {"input": converted, "substr": lit("['weave-trace-internal:///")}}
    else:
        query = {op: [converted, args[1]]}
    assert_selects(query, want)


def test_convert_of_a_comparison_reads_true_false() -> None:
    inner = {"$eq": [field("trace_id"), lit("t2")]}
    query = {"$eq": [{"$convert": {"input": inner, "to": "string"}}, lit("true")]}
    assert_selects(query, ["c3", "c4"])


SIZE = [
    (field("inputs.s"), "$eq", 3, ["c1", "c2"]),
    (field("inputs.s"), "$eq", 5, ["c4"]),  # characters, not bytes
    (field("input_refs"), "$eq", 1, ["c1", "c2"]),
    (field("output_refs"), "$gt", 0, ["c3"]),
    (field("display_name"), "$gte", 0, ["c1", "c3"]),
    (lit("abcd"), "$eq", 4, ALL),
    ({"$convert": {"input": field("wb_run_step"), "to": "string"}}, "$eq", 1, ["c1"]),
]


@pytest.mark.parametrize(("inner", "op", "n", "want"), SIZE)
def test_size(inner: dict, op: str, n: int, want: list[str]) -> None:
    assert_selects({op: [{"$size": inner}, lit(n)]}, want)


COMPUTED = [
    ("summary.weave.status", "error", ["c3"]),
    ("summary.weave.status", "descendant_error", ["c2"]),
    ("summary.weave.status", "success", ["c1", "c4"]),
    ("summary.weave.trace_name", "First", ["c1"]),
    ("summary.weave.trace_name", "agent", ["c2"]),  # internal ref op name
    ("summary.weave.trace_name", "tool", ["c3"]),
    ("summary.weave.trace_name", "plain", ["c4"]),
    ("summary.weave.latency_ms", 3000, ["c1"]),
    ("summary.weave.latency_ms", 1500, ["c3"]),
]


@pytest.mark.parametrize(("name", "value", "want"), COMPUTED)
def test_computed_summary_fields(name: str, value: Any, want: list[str]) -> None:
    assert_selects({"$eq": [field(name), lit(value)]}, want)


def test_trace_name_of_a_public_ref() -> None:
    # an extension: the reference stores internal refs only (a public one crashes it)
    rows = [call("p1", op_name=PUBLIC_OP), call("p2", op_name="weave:///e/p/op/noversion")]
    query = {"$eq": [field("summary.weave.trace_name"), lit("tool")]}
    assert ours(request(query), rows) == ["p1"]
    query = {"$eq": [field("summary.weave.trace_name"), lit("")]}
    assert ours(request(query), rows) == ["p2"]


def test_running_status() -> None:
    assert_selects({"$eq": [field("summary.weave.status"), lit("running")]}, [])
    assert_selects({"$gt": [field("summary.weave.latency_ms"), lit(-1)]}, ["c1", "c3", "c4"])
