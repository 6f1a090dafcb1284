"""``/cost/*`` input that cannot be stored or used: a 4xx naming the field, never a 5xx."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.store import CallStore
from tests.test_service import PROJECT, make_client

PRICE = {"prompt_token_cost": 1e-6, "completion_token_cost": 2e-6}


def raw_post(tmp_path: Path, store: CallStore, url: str, body: str) -> Any:
    client, auth = make_client(tmp_path, store)
    return client.post(url, content=body.encode(), auth=auth)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("name", ["prompt_token_cost", "cache_read_input_token_cost"])
def test_non_finite_prices_are_422(
    tmp_path: Path, store: CallStore, number: str, name: str
) -> None:
    others = ", ".join(f'"{k}": {v}' for k, v in PRICE.items() if k != name)
    body = f'{{"project_id": "{PROJECT}", "costs": {{"m": {{{others}, "{name}": {number}}}}}}}'
    res = raw_post(tmp_path, store, "/cost/create", body)
    assert res.status_code == 422, res.text
    assert name in res.text
    assert store.project_price_rows(PROJECT) == []


BAD_TEXT: list[tuple[str, str, int, str]] = [
    ("/cost/create", '{"costs": {"gpt-\\ud800": %s}}', 422, "costs"),
    ("/cost/create", '{"costs": {"m": %s}, "wb_user_id": "\\udc00"}', 422, "wb_user_id"),
    ("/cost/query", '{"fields": ["llm_id", "\\ud800"]}', 422, "fields"),
    ("/cost/query", '{"sort_by": [{"field": "\\ud800", "direction": "asc"}]}', 422, "field"),
    (
        "/cost/query",
        '{"query": {"$expr": {"$eq": [{"$getField": "llm_id"}, {"$literal": "\\ud800"}]}}}',
        400,
        "query.$expr.$eq[1].$literal",
    ),
    (
        "/cost/purge",
        '{"query": {"$expr": {"$eq": [{"$getField": "id"}, {"$literal": "\\ud800"}]}}}',
        400,
        "query.$expr.$eq[1].$literal",
    ),
    ("/cost/query", '{"limit": 18446744073709551616}', 422, "limit"),
    ("/cost/query", '{"offset": -1}', 400, "offset"),
    ("/cost/query", '{"sort_by": [{"field": "nope", "direction": "asc"}]}', 400, "sort_by[0]"),
    (
        "/cost/query",
        '{"query": {"$expr": {"$eq": [{"$getField": "nope"}, {"$literal": 1}]}}}',
        400,
        "Unknown field: nope",
    ),
]


@pytest.mark.parametrize(("url", "template", "status", "named"), BAD_TEXT)
def test_bad_cost_input_is_a_client_error(
    tmp_path: Path, store: CallStore, url: str, template: str, status: int, named: str
) -> None:
    fields = json.loads(template % json.dumps(PRICE) if "%s" in template else template)
    body = json.dumps({"project_id": PROJECT, **fields})  # the escapes stay escapes
    res = raw_post(tmp_path, store, url, body)
    assert res.status_code == status, res.text
    assert named in res.text


def test_the_same_query_language_as_calls(tmp_path: Path, store: CallStore) -> None:
    client, auth = make_client(tmp_path, store)
    costs = {"a": PRICE, "bb": {**PRICE, "prompt_token_cost": 5e-6}}
    client.post("/cost/create", json={"project_id": PROJECT, "costs": costs}, auth=auth)
    deep: dict[str, Any] = {"$gt": [{"$getField": "prompt_token_cost"}, {"$literal": 2e-6}]}
    for _ in range(40):  # nesting that once doubled the compiled query at every level
        deep = {"$not": [deep]}
    body = {"project_id": PROJECT, "query": {"$expr": deep}, "fields": ["llm_id"]}
    res = client.post("/cost/query", json=body, auth=auth)
    assert res.status_code == 200, res.text
    assert [r["llm_id"] for r in res.json()["results"]] == ["bb"]
