"""Malformed and disallowed queries: typed errors with the JSON path, as the reference also
rejects them; size bounds before any recursion."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import QueryParseError, QueryTooComplexError, UnsupportedQueryError
from engine.query import MAX_DEPTH, MAX_NODES, parse_query
from engine.query.ast import Compare, GetField, Literal
from tests.query_support import assert_rejects, field, lit, ours, request

BOTH_REJECT: list[tuple[dict[str, Any], type]] = [
    ({"$bogus": [lit(1), lit(1)]}, QueryParseError),
    ({"$literal": 1}, QueryParseError),  # the top level must be an operation
    ({"$eq": [lit(1)]}, QueryParseError),
    ({"$eq": [lit(1), lit(1), lit(1)]}, QueryParseError),
    ({"$not": [lit(1), lit(2)]}, QueryParseError),
    ({"$not": lit(1)}, QueryParseError),
    ({"$and": []}, QueryParseError),
    ({"$or": []}, QueryParseError),
    ({"$in": [field("id")]}, QueryParseError),
    ({"$in": [field("id"), lit("x")]}, QueryParseError),
    ({"$contains": {"input": field("id")}}, QueryParseError),
    (
        {"$contains": {"input": field("id"), "substr": lit("a"), "case_insensitive": "maybe"}},
        QueryParseError,
    ),
    ({"$eq": [{"$convert": {"input": field("id"), "to": "date"}}, lit(1)]}, QueryParseError),
    ({"$eq": [{"$getField": 5}, lit(1)]}, QueryParseError),
    ({"$eq": [lit([1]), lit(1)]}, QueryParseError),
    ({"$eq": [lit({"a": lit(1)}), lit(1)]}, QueryParseError),
    ({"$eq": [field("bogus"), lit(1)]}, UnsupportedQueryError),
    ({"$eq": [field("inputsx"), lit(1)]}, UnsupportedQueryError),
    ({"$eq": [field("storage_size_bytes"), lit(1)]}, UnsupportedQueryError),
    ({"$eq": [field("summary.weave.bogus"), lit(1)]}, UnsupportedQueryError),
    ({"$eq": [field("summary.weave.status.x"), lit(1)]}, UnsupportedQueryError),
    ({"$eq": [field("annotation_queue_items.bogus"), lit(1)]}, UnsupportedQueryError),
    ({"$gt": [field("started_at"), lit(1e20)]}, QueryParseError),  # no such timestamp
]


@pytest.mark.parametrize(("query", "error"), BOTH_REJECT)
def test_rejected_like_the_reference(query: dict, error: type) -> None:
    assert_rejects(query, error)


OURS_ONLY: list[dict[str, Any]] = [
    # not part of our data (the reference reads feedback, queues and expire_at)
    {"$eq": [field("feedback.[wandb.runnable.x].payload.score"), lit(1)]},
    {"$eq": [field("annotation_queue_items.queue_id"), lit("q")]},
    {"$gt": [field("expire_at"), lit(0)]},
    # the reference fails these only when a row reaches them
    {"$eq": [{"$size": field("wb_run_step")}, lit(1)]},
    {"$eq": [{"$size": field("started_at")}, lit(1)]},
]


@pytest.mark.parametrize("query", OURS_ONLY)
def test_unsupported(query: dict) -> None:
    with pytest.raises(UnsupportedQueryError):
        ours(request(query))


def test_errors_say_where() -> None:
    query = {"$and": [{"$eq": [field("id"), lit("a")]}, {"$gt": [field("id")]}]}
    with pytest.raises(QueryParseError) as err:
        parse_query(query)
    assert err.value.path == "query.$expr.$and[1].$gt"
    assert "2 operand" in err.value.reason
    with pytest.raises(UnsupportedQueryError) as err:
        ours(request({"$or": [lit(True), {"$eq": [field("nope"), lit(1)]}]}))
    assert err.value.path == "query.$expr.$or[1].$eq[0].$getField"


def test_first_operator_key_wins_and_others_are_ignored() -> None:
    # as pydantic's union picks the first member that validates, in Weave's order
    raw = {"$gt": [lit(1), lit(2)], "$eq": [field("id"), lit("a")], "note": "x"}
    assert parse_query(raw) == Compare("eq", GetField("id"), Literal("a"))


def _nested(depth: int) -> dict:
    query: dict = {"$eq": [field("id"), lit("a")]}
    for _ in range(depth - 1):
        query = {"$not": [query]}
    return query


def test_depth_bound() -> None:
    parse_query(_nested(MAX_DEPTH // 3))
    with pytest.raises(QueryTooComplexError) as err:
        parse_query(_nested(100_000))  # no RecursionError: checked before descending
    assert "deeper" in err.value.reason


def test_node_bound() -> None:
    wide = {"$or": [{"$eq": [field("id"), lit(str(i))]} for i in range(MAX_NODES)]}
    with pytest.raises(QueryTooComplexError) as err:
        parse_query(wide)
    assert "nodes" in err.value.reason


def test_deep_lists_are_bounded_too() -> None:
    deep: Any = lit(1)
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises((QueryTooComplexError, QueryParseError)):
        parse_query({"$and": deep})


LAX_BOOLS = [
    (True, ["c1", "c2"]),
    ("yes", ["c1", "c2"]),
    (1, ["c1", "c2"]),
    ("off", ["c1"]),
    (None, ["c1"]),
]


@pytest.mark.parametrize(("flag", "want"), LAX_BOOLS)
def test_case_insensitive_reads_like_pydantic(flag: Any, want: list[str]) -> None:
    from tests.query_support import assert_selects

    spec = {"input": field("inputs.s"), "substr": lit("ab"), "case_insensitive": flag}
    assert_selects({"$contains": spec}, want)
