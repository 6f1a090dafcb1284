"""``/cost/query`` and ``/cost/purge`` vs the reference's, on the same created prices.

One known difference is left out on purpose: the in-memory reference keeps
``effective_date`` as text and so never matches a date comparison; we compare dates as
dates (as Weave's ClickHouse server does), which ``test_ingest_routes`` covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from service.settings import DB_FILE
from service.store import CallStore
from tests.reference import weave_ref
from tests.test_ingest_routes import make_client

PROJECT = "entity/project"
COSTS = {
    "gpt-4o": {
        "prompt_token_cost": 2.5e-6,
        "completion_token_cost": 1e-5,
        "effective_date": "2024-01-01T00:00:00Z",
    },
    "gpt-4o-mini": {
        "prompt_token_cost": 1.5e-7,
        "completion_token_cost": 6e-7,
        "provider_id": "openai",
        "effective_date": "2024-06-01T00:00:00Z",
    },
    "claude": {
        "prompt_token_cost": 3e-6,
        "completion_token_cost": 1.5e-5,
        "cache_read_input_token_cost": 3e-7,
        "effective_date": "2025-01-01T00:00:00Z",
    },
    "local": {
        "prompt_token_cost": 0,
        "completion_token_cost": 0,
        "prompt_token_cost_unit": "EUR",
        "effective_date": "2023-01-01T00:00:00Z",
    },
}


def lit(v: Any) -> dict[str, Any]:
    return {"$literal": v}


def field(name: str) -> dict[str, Any]:
    return {"$getField": name}


QUERIES: list[dict[str, Any]] = [
    {},
    {"query": {"$expr": {"$eq": [field("llm_id"), lit("claude")]}}},
    {"query": {"$expr": {"$gt": [field("prompt_token_cost"), lit(1e-6)]}}},
    {"query": {"$expr": {"$gte": [field("completion_token_cost"), lit(1e-5)]}}},
    {"query": {"$expr": {"$not": [{"$eq": [field("provider_id"), lit("default")]}]}}},
    {"query": {"$expr": {"$in": [field("llm_id"), [lit("local"), lit("gpt-4o")]]}}},
    {
        "query": {
            "$expr": {
                "$contains": {
                    "input": field("llm_id"),
                    "substr": lit("GPT"),
                    "case_insensitive": True,
                }
            }
        }
    },
    {
        "query": {
            "$expr": {
                "$and": [
                    {"$eq": [field("prompt_token_cost_unit"), lit("USD")]},
                    {"$gt": [field("prompt_token_cost"), lit(0)]},
                ]
            }
        }
    },
    {
        "query": {
            "$expr": {
                "$or": [
                    {"$eq": [field("llm_id"), lit("local")]},
                    {"$eq": [field("llm_id"), lit("claude")]},
                ]
            }
        }
    },
    {"query": {"$expr": {"$eq": [field("prompt_token_cost"), lit("x")]}}},
    {"sort_by": [{"field": "prompt_token_cost", "direction": "desc"}]},
    {"sort_by": [{"field": "llm_id", "direction": "asc"}], "limit": 2, "offset": 1},
    {"sort_by": [{"field": "effective_date", "direction": "asc"}]},
    {"fields": ["llm_id", "prompt_token_cost"], "limit": 3},
    # odd cases: nothing selected, paging past the end, an empty page
    {"query": {"$expr": {"$eq": [field("llm_id"), lit("nope")]}}},
    {"offset": 10},
    {"limit": 0},
    # the query language's own rules, as over calls
    {"query": {"$expr": {"$not": [field("provider_id")]}}},
    {"query": {"$expr": {"$not": [{"$not": [{"$gt": [field("prompt_token_cost"), lit(0)]}]}]}}},
    {"query": {"$expr": {"$eq": [{"$size": field("llm_id")}, lit(5)]}}},
    {"query": {"$expr": {"$gt": [field("prompt_token_cost"), lit(True)]}}},
    {"query": {"$expr": {"$eq": [field("llm_id"), lit(1)]}}},
    {"query": {"$expr": {"$in": [field("prompt_token_cost"), [lit(0), lit("x"), lit(3e-6)]]}}},
    {
        "query": {
            "$expr": {
                "$eq": [
                    {"$convert": {"input": field("prompt_token_cost"), "to": "string"}},
                    lit("3e-06"),
                ]
            }
        }
    },
    {
        "query": {
            "$expr": {"$gt": [{"$convert": {"input": field("llm_id"), "to": "double"}}, lit(0)]}
        }
    },
    {
        "query": {
            "$expr": {"$contains": {"input": field("prompt_token_cost_unit"), "substr": lit("ur")}}
        }
    },
    {
        "query": {
            "$expr": {
                "$eq": [{"$convert": {"input": lit(True), "to": "string"}}, lit("1")],
            }
        }
    },
    {"query": {"$expr": {"$and": [lit(True), {"$eq": [field("llm_id"), lit("local")]}]}}},
    {
        "sort_by": [
            {"field": "completion_token_cost_unit", "direction": "asc"},
            {"field": "prompt_token_cost", "direction": "desc"},
        ]
    },
]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = CallStore(Path(tmp_path_factory.mktemp("costs")) / DB_FILE)
    client = make_client(store)
    server = weave_ref.make_server([], [])
    for llm_id, cost in COSTS.items():
        body = {"project_id": PROJECT, "costs": {llm_id: cost}}
        client.post("/cost/create", json=body)
        server.cost_create(weave_ref.tsi.CostCreateReq.model_validate(body | {"wb_user_id": "ada"}))
    yield client, server
    store.close()


def _without_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


@pytest.mark.parametrize("extra", QUERIES, ids=range(len(QUERIES)))
def test_cost_query_matches_reference(both: Any, extra: dict[str, Any]) -> None:
    client, server = both
    req = {"project_id": PROJECT, **extra}
    res = client.post("/cost/query", json=req)
    assert res.status_code == 200, res.text
    want = server.cost_query(weave_ref.tsi.CostQueryReq.model_validate(req)).model_dump(mode="json")
    assert _without_ids(res.json()["results"]) == _without_ids(want["results"])


@pytest.mark.parametrize("substr", [lit(1), lit(2.5), lit(True), field("prompt_token_cost")])
def test_numeric_substr_is_an_error_as_the_reference(both: Any, substr: dict[str, Any]) -> None:
    client, server = both
    expr = {"$contains": {"input": field("llm_id"), "substr": substr}}
    req = {"project_id": PROJECT, "query": {"$expr": expr}}
    with pytest.raises(Exception) as err:  # ClickHouse's illegal-type error: a 400
        server.cost_query(weave_ref.tsi.CostQueryReq.model_validate(req))
    assert "Illegal type" in str(err.value)
    res = client.post("/cost/query", json=req)
    assert res.status_code == 400 and "$contains" in res.json()["reason"]


@pytest.mark.parametrize(
    "expr",
    [
        {"$eq": [field("llm_id"), lit("x")]},
        {"$gt": [field("id"), lit("x")]},
        {"$eq": [field("id"), lit(3)]},
        {"$and": [{"$eq": [field("id"), lit("x")]}]},
        {"$or": [{"$in": [field("id"), [lit("x")]]}]},
        {"$eq": [lit("x"), field("id")]},
        {"$in": [field("id"), [lit("x"), lit(1)]]},
        {"$not": [{"$eq": [field("id"), lit("x")]}]},
    ],
)
def test_purge_only_by_id_as_the_reference(both: Any, expr: dict[str, Any]) -> None:
    client, server = both
    req = {"project_id": PROJECT, "query": {"$expr": expr}}
    with pytest.raises(Exception) as err:  # the reference's InvalidRequest: a 400
        server.cost_purge(weave_ref.tsi.CostPurgeReq.model_validate(req))
    assert type(err.value).__name__ == "InvalidRequest"
    res = client.post("/cost/purge", json=req)
    assert res.status_code == 400 and "cost ids" in res.json()["reason"]
