"""Ingest, price, object and file endpoints on a small app around the real routers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from engine.errors import InputDataError, NotFoundError, TraceUsageError
from service.auth import ApiKey
from service.deps import Principal, get_principal
from service.routes import costs, ingest, objects
from service.store import CallStore

PROJECT = "entity/project"
T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:00:05Z"


def make_client(store: CallStore, projects: tuple[str, ...] = ("entity/*",)) -> TestClient:
    """A client of an app with the ingest/cost/object routers; the caller holds ``projects``."""
    app = FastAPI()
    for module in (ingest, costs, objects):
        app.include_router(module.router)
    app.state.store = store
    key = ApiKey(id="k1", user="ada", projects=projects, sha256="", created_at="")
    app.dependency_overrides[get_principal] = lambda: Principal(user="ada", key=key)

    @app.exception_handler(TraceUsageError)
    async def _engine_error(request: Request, exc: TraceUsageError) -> JSONResponse:
        code = (
            422
            if isinstance(exc, InputDataError)
            else 404
            if isinstance(exc, NotFoundError)
            else 400
        )
        return JSONResponse({"reason": exc.reason, "path": exc.path}, status_code=code)

    return TestClient(app)


@pytest.fixture
def client(store: CallStore) -> TestClient:
    return make_client(store)


def start(call_id: str, parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "project_id": PROJECT,
        "id": call_id,
        "trace_id": "t1",
        "parent_id": parent,
        "op_name": "op",
        "started_at": T0,
        "attributes": {},
        "inputs": {"x": 1},
        **extra,
    }


def end(call_id: str, prompt: int = 0, **extra: Any) -> dict[str, Any]:
    usage = {"gpt-4o": {"prompt_tokens": prompt, "requests": 1}} if prompt else {}
    return {
        "project_id": PROJECT,
        "id": call_id,
        "ended_at": T1,
        "summary": {"usage": usage},
        "output": {"y": 2},
        **extra,
    }


def calls_of(store: CallStore, project: str = PROJECT) -> dict[str, dict[str, Any]]:
    calls, _ = store.load(project)
    return {row["id"]: row for row in calls.collect().to_dicts()}


def usage_of(store: CallStore, project: str = PROJECT) -> dict[str, dict[str, int]]:
    _, usage = store.load(project)
    return {(r["id"], r["model"]): r["prompt_tokens"] for r in usage.collect().to_dicts()}


# --- start / end ---------------------------------------------------------------------------
def test_start_then_end_and_end_then_start_give_the_same_call(
    client: TestClient, store: CallStore
) -> None:
    assert client.post("/call/start", json={"start": start("a")}).json() == {
        "id": "a",
        "trace_id": "t1",
    }
    assert client.post("/call/end", json={"end": end("a", 5)}).json() == {}
    assert client.post("/call/end", json={"end": end("b", 5)}).status_code == 200
    assert client.post("/call/start", json={"start": start("b")}).status_code == 200
    got = calls_of(store)
    for key in ("op_name", "started_at", "ended_at", "inputs", "output", "summary", "trace_id"):
        assert got["a"][key] == got["b"][key], key
    assert got["a"]["summary"] == '{"usage":{"gpt-4o":{"prompt_tokens":5,"requests":1}}}'
    assert usage_of(store) == {("a", "gpt-4o"): 5, ("b", "gpt-4o"): 5}


def test_end_only_call_is_stored_without_start_fields(client: TestClient, store: CallStore) -> None:
    client.post("/call/end", json={"end": end("a", 3, started_at=T0)})
    row = calls_of(store)["a"]
    assert row["op_name"] is None and row["trace_id"] is None
    assert row["started_at"] == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert row["ended_at"] is not None and usage_of(store) == {("a", "gpt-4o"): 3}


def test_replays_are_idempotent_and_a_new_end_replaces_usage(
    client: TestClient, store: CallStore
) -> None:
    for _ in range(3):
        client.post("/call/start", json={"start": start("a")})
        client.post("/call/end", json={"end": end("a", 5)})
    assert usage_of(store) == {("a", "gpt-4o"): 5}
    client.post("/call/end", json={"end": end("a", 9)})
    assert usage_of(store) == {("a", "gpt-4o"): 9}
    client.post("/call/end", json={"end": end("a")})
    assert usage_of(store) == {}
    assert store.stats()["calls"] == 1


def test_start_generates_missing_ids(client: TestClient, store: CallStore) -> None:
    body = start("x")
    del body["id"], body["trace_id"]
    res = client.post("/call/start", json={"start": body}).json()
    assert (
        res["id"] and res["trace_id"] and calls_of(store)[res["id"]]["trace_id"] == res["trace_id"]
    )


def test_upsert_batch_applies_items_in_order(client: TestClient, store: CallStore) -> None:
    batch = [
        {"mode": "end", "req": {"end": end("a", 4)}},
        {"mode": "start", "req": {"start": start("a", display_name="first")}},
        {"mode": "start", "req": {"start": start("a", display_name="second")}},
        {"mode": "start", "req": {"start": start("b", parent="a")}},
    ]
    res = client.post("/call/upsert_batch", json={"batch": batch})
    assert res.status_code == 200
    assert res.json()["res"] == [
        {},
        {"id": "a", "trace_id": "t1"},
        {"id": "a", "trace_id": "t1"},
        {"id": "b", "trace_id": "t1"},
    ]
    got = calls_of(store)
    assert got["a"]["display_name"] == "second" and got["a"]["ended_at"] is not None
    assert got["b"]["ended_at"] is None and usage_of(store) == {("a", "gpt-4o"): 4}


def test_a_bad_batch_is_rejected_whole(client: TestClient, store: CallStore) -> None:
    good = {"mode": "start", "req": {"start": start("a")}}
    missing_field = {"mode": "end", "req": {"end": {"project_id": PROJECT, "id": "b"}}}
    res = client.post("/call/upsert_batch", json={"batch": [good, missing_field]})
    assert res.status_code == 422
    assert "ended_at" in res.text
    fractional = {
        "mode": "end",
        "req": {"end": end("a") | {"summary": {"usage": {"m": {"requests": 1.5}}}}},
    }
    assert client.post("/call/upsert_batch", json={"batch": [good, fractional]}).status_code == 422
    overflow = {
        "mode": "end",
        "req": {"end": end("a") | {"summary": {"usage": {"m": {"requests": 2**70}}}}},
    }
    assert client.post("/call/upsert_batch", json={"batch": [good, overflow]}).status_code in (
        400,
        422,
    )
    other = {"mode": "start", "req": {"start": start("c") | {"project_id": "other/p"}}}
    assert client.post("/call/upsert_batch", json={"batch": [good, other]}).status_code == 403
    bad_mode = {"mode": "middle", "req": {"start": start("a")}}
    assert client.post("/call/upsert_batch", json={"batch": [good, bad_mode]}).status_code == 400
    assert store.stats()["calls"] == 0 and store.version() == 0


def test_forbidden_project_is_403_and_stores_nothing(store: CallStore) -> None:
    client = make_client(store, projects=("entity/other",))
    assert client.post("/call/start", json={"start": start("a")}).status_code == 403
    assert client.post("/call/end", json={"end": end("a")}).status_code == 403
    assert (
        client.post("/calls/delete", json={"project_id": PROJECT, "call_ids": ["a"]}).status_code
        == 403
    )
    assert store.stats()["calls"] == 0


def test_calls_complete_checks_the_url_project(client: TestClient, store: CallStore) -> None:
    call = start("a") | end("a", 2) | {"trace_id": "t1"}
    url = "/v2/entity/project/calls/complete"
    assert client.post(url, json={"batch": [call]}).status_code == 200
    assert usage_of(store) == {("a", "gpt-4o"): 2}
    wrong = call | {"id": "b", "project_id": "entity/elsewhere"}
    res = client.post(url, json={"batch": [call | {"id": "c"}, wrong]})
    assert res.status_code == 400 and res.json()["path"] == "batch[1].project_id"
    assert set(calls_of(store)) == {"a"}


def test_complete_call_replaces_a_deleted_one(client: TestClient, store: CallStore) -> None:
    client.post("/call/start", json={"start": start("a")})
    client.post("/calls/delete", json={"project_id": PROJECT, "call_ids": ["a"]})
    assert calls_of(store)["a"]["deleted_at"] is not None
    client.post("/call/end", json={"end": end("a", 1)})
    assert calls_of(store)["a"]["deleted_at"] is not None  # a part keeps the mark
    call = start("a") | end("a", 2)
    client.post("/v2/entity/project/calls/complete", json={"batch": [call]})
    assert calls_of(store)["a"]["deleted_at"] is None  # as the reference's calls_complete


def test_v2_end_needs_a_stored_start(client: TestClient, store: CallStore) -> None:
    assert client.post("/v2/entity/project/call/end", json={"end": end("a", 1)}).status_code == 404
    assert (
        client.post("/v2/entity/project/call/start", json={"start": start("a")}).status_code == 200
    )
    assert client.post("/v2/entity/project/call/end", json={"end": end("a", 1)}).status_code == 200
    assert usage_of(store) == {("a", "gpt-4o"): 1}


def test_delete_limit_is_413(client: TestClient) -> None:
    body = {"project_id": PROJECT, "call_ids": [str(i) for i in range(1001)]}
    assert client.post("/calls/delete", json=body).status_code == 413


# --- prices --------------------------------------------------------------------------------
def test_cost_create_query_purge(client: TestClient, store: CallStore) -> None:
    costs = {
        "gpt-4o": {"prompt_token_cost": 1.0, "completion_token_cost": 2.0, "effective_date": T0},
        "my-model": {"prompt_token_cost": 3.0, "completion_token_cost": 4.0, "provider_id": "me"},
    }
    ids = client.post("/cost/create", json={"project_id": PROJECT, "costs": costs}).json()["ids"]
    assert [llm for _, llm in ids] == ["gpt-4o", "my-model"]
    res = client.post("/cost/query", json={"project_id": PROJECT}).json()["results"]
    assert [(r["id"], r["llm_id"], r["provider_id"]) for r in res] == [
        (ids[0][0], "gpt-4o", "default"),
        (ids[1][0], "my-model", "me"),
    ]
    assert res[0]["effective_date"] == "2025-01-01T00:00:00Z"
    assert res[0]["prompt_token_cost_unit"] == "USD"
    query = {"$expr": {"$eq": [{"$getField": "llm_id"}, {"$literal": "my-model"}]}}
    picked = client.post(
        "/cost/query", json={"project_id": PROJECT, "query": query, "fields": ["id", "llm_id"]}
    ).json()["results"]
    assert picked == [
        {"id": ids[1][0], "llm_id": "my-model"}
        | {k: None for k in res[0] if k not in ("id", "llm_id")}
    ]
    older = {"$expr": {"$lt": [{"$getField": "effective_date"}, {"$literal": "2025-06-01"}]}}
    got = client.post("/cost/query", json={"project_id": PROJECT, "query": older}).json()
    assert [r["llm_id"] for r in got["results"]] == ["gpt-4o"]
    desc = {
        "project_id": PROJECT,
        "sort_by": [{"field": "llm_id", "direction": "desc"}],
        "limit": 1,
    }
    assert [r["llm_id"] for r in client.post("/cost/query", json=desc).json()["results"]] == [
        "my-model"
    ]
    prices = store.prices(PROJECT)
    project_rows = prices.filter(prices["pricing_level"] == "project")
    assert project_rows["llm_id"].to_list() == ["gpt-4o", "my-model"]
    assert project_rows["seq"].to_list() == [prices.height - 2, prices.height - 1]

    by_name = {"$expr": {"$eq": [{"$getField": "llm_id"}, {"$literal": "gpt-4o"}]}}
    res = client.post("/cost/purge", json={"project_id": PROJECT, "query": by_name})
    assert res.status_code == 400 and "cost ids" in res.json()["reason"]
    by_id = {"$expr": {"$in": [{"$getField": "id"}, [{"$literal": ids[0][0]}]]}}
    assert client.post("/cost/purge", json={"project_id": PROJECT, "query": by_id}).json() == {}
    left = client.post("/cost/query", json={"project_id": PROJECT}).json()["results"]
    assert [r["llm_id"] for r in left] == ["my-model"]
    # another project's key cannot purge or see them
    other = {"$expr": {"$eq": [{"$getField": "id"}, {"$literal": ids[1][0]}]}}
    client.post("/cost/purge", json={"project_id": "entity/other", "query": other})
    assert len(client.post("/cost/query", json={"project_id": PROJECT}).json()["results"]) == 1
    assert client.post("/cost/query", json={"project_id": "entity/other"}).json() == {"results": []}


def test_cost_query_rejects_unknown_fields(client: TestClient) -> None:
    query = {"$expr": {"$eq": [{"$getField": "nope"}, {"$literal": 1}]}}
    client.post(
        "/cost/create",
        json={
            "project_id": PROJECT,
            "costs": {"m": {"prompt_token_cost": 1, "completion_token_cost": 1}},
        },
    )
    assert (
        client.post("/cost/query", json={"project_id": PROJECT, "query": query}).status_code == 400
    )


# --- objects and files ---------------------------------------------------------------------
def test_obj_create_digest_matches_weave(client: TestClient, store: CallStore) -> None:
    from weave.shared.digest import compute_object_digest

    from tests.reference import weave_ref  # noqa: F401 - installs the reference's stub

    val = {"_type": "CustomWeaveType", "weave_type": {"type": "Op"}, "files": {"obj.py": "abc"}}
    body = {"obj": {"project_id": PROJECT, "object_id": "my_op", "val": val}}
    res = client.post("/obj/create", json=body).json()
    assert res == {"digest": compute_object_digest(val), "object_id": "my_op"}
    again = {"obj": body["obj"] | {"expected_digest": res["digest"]}}
    assert client.post("/obj/create", json=again).json() == res
    assert store.read_object(PROJECT, "my_op", res["digest"]) is not None
    mismatch = {"obj": body["obj"] | {"expected_digest": "nope"}}
    assert client.post("/obj/create", json=mismatch).status_code == 409
    bad_name = {"obj": body["obj"] | {"object_id": "a b"}}
    assert client.post("/obj/create", json=bad_name).status_code == 400


def test_files_create_is_multipart_and_digested_as_weave(
    client: TestClient, store: CallStore
) -> None:
    from weave.shared.digest import compute_file_digest

    from tests.reference import weave_ref  # noqa: F401

    content = b"def f():\n    return 1\n"
    res = client.post(
        "/files/create", data={"project_id": PROJECT}, files={"file": ("obj.py", content)}
    )
    assert res.json() == {"digest": compute_file_digest(content)}
    assert store.read_file(PROJECT, res.json()["digest"]) == content
    res = client.post(
        "/files/create",
        data={"project_id": PROJECT, "expected_digest": "x"},
        files={"file": ("obj.py", content)},
    )
    assert res.status_code == 409
    denied = client.post(
        "/files/create", data={"project_id": "other/p"}, files={"file": ("obj.py", content)}
    )
    assert denied.status_code == 403
