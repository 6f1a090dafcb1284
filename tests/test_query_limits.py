"""Compiled queries grow linearly with the query, and the limits answer 400 naming them.

Sizes are counted (the text of the predicate and of every helper column), never timed:
a rule that copies an operand's expression doubles the size at every nesting level.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import QueryParseError, QueryTooComplexError
from engine.query import (
    MAX_COMPILED,
    MAX_JSON_READS,
    MAX_PATH_PARTS,
    Ctx,
    compile_predicate,
    parse_query,
)
from service.store import CallStore
from tests.query_support import field, lit
from tests.test_service import PROJECT, make_client


def compiled_size(query: dict[str, Any]) -> int:
    ctx = Ctx()
    pred = compile_predicate(parse_query(query), ctx)
    return len(str(pred)) + sum(len(str(e)) for stage in ctx.stages for e in stage.values())


def nots(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"$eq": [field("op_name"), lit("a")]}
    for _ in range(depth):
        query = {"$not": [query]}
    return query


def converts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = field("inputs.a")
    for _ in range(depth):
        text = {"$convert": {"input": value, "to": "string"}}
        found = {"$contains": {"input": text, "substr": lit("1")}}
        value = {"$convert": {"input": found, "to": "int"}}
    return {"$eq": [value, lit(1)]}


def compares(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"$eq": [field("wb_run_step"), lit(1)]}
    for _ in range(depth):
        query = {"$eq": [query, lit(1.5)]}
    return query


def ins(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"$eq": [field("op_name"), lit("a")]}
    for _ in range(depth):
        query = {"$in": [query, [lit(True), field("wb_run_step")]]}
    return query


def ands(depth: int) -> dict[str, Any]:
    query: dict[str, Any] = {"$eq": [field("op_name"), lit("a")]}
    for i in range(depth):
        op = "$and" if i % 2 else "$or"
        query = {op: [query, {"$gt": [field("inputs.n"), lit(i)]}]}
    return query


def path(parts: int) -> dict[str, Any]:
    name = "inputs." + ".".join(f"k{i}" for i in range(parts))
    return {"$eq": [field(name), lit("x")]}


GROWTH: list[tuple[Callable[[int], dict[str, Any]], tuple[int, int, int]]] = [
    (nots, (4, 8, 16)),
    (converts, (2, 4, 6)),
    (compares, (4, 8, 16)),
    (ins, (3, 6, 9)),
    (ands, (5, 10, 20)),
    (path, (4, 8, 16)),
]


@pytest.mark.parametrize(("make", "depths"), GROWTH, ids=[g[0].__name__ for g in GROWTH])
def test_compiled_size_grows_linearly(
    make: Callable[[int], dict[str, Any]], depths: tuple[int, int, int]
) -> None:
    small, middle, large = (compiled_size(make(d)) for d in depths)
    # doubling the nesting adds about as much again as the last doubling, never squares it
    assert large - middle <= 2.5 * (middle - small) + 200, (small, middle, large)


def test_path_length_is_bounded() -> None:
    compiled_size(path(MAX_PATH_PARTS))
    with pytest.raises(QueryTooComplexError) as err:
        compiled_size(path(MAX_PATH_PARTS + 1))
    assert str(MAX_PATH_PARTS) in err.value.reason
    assert err.value.path == "query.$expr.$eq[0].$getField"


def test_json_readings_are_bounded() -> None:
    reads = [{"$eq": [field(f"inputs.k{i}"), lit(1)]} for i in range(MAX_JSON_READS + 1)]
    compiled_size({"$or": reads[:-1]})
    with pytest.raises(QueryTooComplexError) as err:
        compiled_size({"$or": reads})
    assert str(MAX_JSON_READS) in err.value.reason
    assert err.value.path == f"query.$expr.$or[{MAX_JSON_READS}].$eq[0].$getField"


def test_compiled_size_is_bounded() -> None:
    many = [{"$eq": [field("op_name"), lit(str(i))]} for i in range(MAX_COMPILED // 3 + 1)]
    with pytest.raises(QueryTooComplexError) as err:
        compiled_size({"$or": many})  # each $eq is 3 units: itself and two operands
    assert str(MAX_COMPILED) in err.value.reason
    # a long list of literals is one is_in, so it is cheap and allowed
    compiled_size({"$in": [field("op_name"), [lit(str(i)) for i in range(MAX_COMPILED)]]})


def test_lone_surrogates_are_parse_errors() -> None:
    with pytest.raises(QueryParseError) as err:
        parse_query({"$eq": [field("op_name"), lit("a\ud800")]})
    assert err.value.path == "query.$expr.$eq[1].$literal"
    with pytest.raises(QueryParseError) as err:
        parse_query({"$eq": [field("inputs.\udc00"), lit(1)]})
    assert err.value.path == "query.$expr.$eq[0].$getField"


LIMITED: list[tuple[dict[str, Any], str]] = [
    ({"$expr": path(MAX_PATH_PARTS + 1)}, f"at most {MAX_PATH_PARTS} parts"),
    (
        {"$expr": {"$or": [{"$eq": [field(f"inputs.k{i}"), lit(1)]} for i in range(65)]}},
        f"more than {MAX_JSON_READS} JSON paths",
    ),
    ({"$expr": nots(200)}, "nested deeper than 64"),
    (
        {"$expr": {"$or": [{"$eq": [field("op_name"), lit(str(i))]} for i in range(2700)]}},
        f"more than {MAX_COMPILED} units",
    ),
]


@pytest.mark.parametrize(("query", "named"), LIMITED)
def test_limits_answer_400_naming_them(
    tmp_path: Path, store: CallStore, query: dict[str, Any], named: str
) -> None:
    client, auth = make_client(tmp_path, store)
    body = json.dumps({"project_id": PROJECT, "query": query}).encode()
    res = client.post("/trace/usage", content=body, auth=auth)
    assert res.status_code == 400, res.text
    assert named in res.json()["reason"]
    assert res.json()["path"].startswith("query.$expr")


BAD_TEXT: list[tuple[dict[str, Any], int, str]] = [
    ({"filter": {"op_names": ["a\ud800"]}}, 422, "filter.op_names.0"),
    ({"filter": {"trace_ids": ["\udfff"]}}, 422, "filter.trace_ids.0"),
    (
        {"query": {"$expr": {"$eq": [field("op_name"), lit("\ud800")]}}},
        400,
        "query.$expr.$eq[1].$literal",
    ),
    ({"query": {"$expr": {"\ud800": []}}}, 400, "query.$expr"),
]


@pytest.mark.parametrize(("extra", "status", "where"), BAD_TEXT)
def test_lone_surrogates_are_client_errors(
    tmp_path: Path, store: CallStore, extra: dict[str, Any], status: int, where: str
) -> None:
    client, auth = make_client(tmp_path, store)
    # json.dumps writes a lone surrogate as the escape "\ud800", as a hostile client would
    body = json.dumps({"project_id": PROJECT, **extra}).encode()
    res = client.post("/trace/usage", content=body, auth=auth)
    assert res.status_code == status, res.text
    assert where in res.text
