"""Store + engine vs weave 0.53.12's in-memory server, both fed the same wire requests.

Random traces are cut into start, end and complete parts, shuffled, and sent to our routes
(as single requests and mixed batches) and to the reference's own ingest methods; some calls
are deleted on both sides and project prices created on both. Then ``/trace/usage`` and
``/calls/usage`` answers must match.
"""

from __future__ import annotations

import random
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from engine import calls_usage, trace_usage
from engine import schema as s
from engine.trace_usage import default_prices
from service.settings import DB_FILE
from service.store import CallStore
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import MODELS, OTHER_PROJECT, PROJECT, random_calls
from tests.test_ingest_routes import make_client

CASES = 15
tsi = weave_ref.tsi  # the reference's models, imported through its harness


def _parts(rng: random.Random, call: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    start = {
        "project_id": call["project_id"],
        "id": call["id"],
        "trace_id": call["trace_id"],
        "parent_id": call["parent_id"],
        "op_name": call["op_name"],
        "started_at": call["started_at"].isoformat(),
        "attributes": {},
        "inputs": {"n": rng.randint(0, 3)},
    }
    end = {
        "project_id": call["project_id"],
        "id": call["id"],
        "ended_at": (call["ended_at"] or call["started_at"]).isoformat(),
        "summary": call["summary"] or {},
        "output": None,
    }
    if call["op_name"] is None:
        return [("end", end)]
    if call["ended_at"] is None:
        return [("start", start)]
    if rng.random() < 0.25:
        return [("complete", {**start, **end})]
    return [("start", start), ("end", end)]


_MODELS = {
    "start": tsi.CallStartReq,
    "end": tsi.CallEndReq,
}


def _valid(kind: str, body: dict[str, Any]) -> bool:
    try:
        if kind == "complete":
            tsi.CompletedCallSchemaForInsert.model_validate(body)
        else:
            _MODELS[kind].model_validate({kind: body})
    except ValidationError:
        return False
    return True


def _feed_reference(server: Any, kind: str, body: dict[str, Any]) -> None:
    if kind == "start":
        server.call_start(tsi.CallStartReq.model_validate({"start": body}))
    elif kind == "end":
        server.call_end(tsi.CallEndReq.model_validate({"end": body}))
    else:
        batch = [tsi.CompletedCallSchemaForInsert.model_validate(body)]
        server.calls_complete(tsi.CallsUpsertCompleteReq(batch=batch))


def _send(client: Any, group: list[tuple[str, dict[str, Any]]]) -> None:
    kinds = {kind for kind, _ in group}
    if kinds == {"complete"}:
        project = group[0][1]["project_id"]
        if all(body["project_id"] == project for _, body in group):
            res = client.post(
                f"/v2/{project}/calls/complete", json={"batch": [b for _, b in group]}
            )
            assert res.status_code == 200, res.text
            return
    for kind, body in group:
        if kind == "complete":
            res = client.post(f"/v2/{body['project_id']}/calls/complete", json={"batch": [body]})
        elif len(group) == 1:
            res = client.post(f"/call/{kind}", json={kind: body})
        else:
            continue
        assert res.status_code == 200, res.text
    items = [{"mode": k, "req": {k: b}} for k, b in group if k != "complete"]
    if len(group) > 1 and items:
        res = client.post("/call/upsert_batch", json={"batch": items})
        assert res.status_code == 200, res.text


def _default_rows() -> list[dict[str, Any]]:
    rows = default_prices().filter(pl.col(s.LLM_ID).is_in(MODELS)).sort(s.PRICE_SEQ)
    return rows.to_dicts()


def _ingest_both(seed: int, tmp_path: Any) -> tuple[CallStore, Any, list[dict[str, Any]]]:
    rng = random.Random(seed)
    calls = random_calls(rng)
    store = CallStore(tmp_path / f"{seed}-{DB_FILE}")
    client = make_client(store)
    server = weave_ref.make_server([], _default_rows())
    parts = [p for call in calls for p in _parts(rng, call)]
    rng.shuffle(parts)
    for kind, body in parts:
        if not _valid(kind, body):
            path = "/v2/entity/project/calls/complete" if kind == "complete" else f"/call/{kind}"
            payload = {"batch": [body]} if kind == "complete" else {kind: body}
            assert client.post(path, json=payload).status_code == 422, body
    parts = [(k, b) for k, b in parts if _valid(k, b)]
    for kind, body in parts:
        _feed_reference(server, kind, body)
    i = 0
    while i < len(parts):
        size = rng.choice([1, 1, 2, 5, 20])
        _send(client, parts[i : i + size])
        i += size
    for project in (PROJECT, OTHER_PROJECT):
        costs = {
            m: {
                "prompt_token_cost": rng.choice([1e-6, 3e-5]),
                "completion_token_cost": rng.choice([2e-6, 1e-5]),
                "effective_date": rng.choice(["2024-06-01T00:00:00Z", "2025-06-01T00:00:00Z"]),
            }
            for m in rng.sample(MODELS, 2)
        }
        client.post("/cost/create", json={"project_id": project, "costs": costs})
        server.cost_create(
            tsi.CostCreateReq.model_validate(
                {"project_id": project, "costs": costs, "wb_user_id": "ada"}
            )
        )
    doomed = [c["id"] for c in rng.sample(calls, min(2, len(calls)))] + ["no-such-call"]
    res = client.post("/calls/delete", json={"project_id": PROJECT, "call_ids": doomed})
    want = server.calls_delete(
        tsi.CallsDeleteReq(project_id=PROJECT, call_ids=doomed, wb_user_id="ada")
    )
    assert res.json() == {"num_deleted": want.num_deleted}
    return store, server, calls


@pytest.mark.parametrize("seed", range(CASES))
def test_ingested_calls_answer_as_the_reference(seed: int, tmp_path: Any) -> None:
    store, server, calls = _ingest_both(seed, tmp_path)
    try:
        deleted = {rec.id for rec in server._calls.values() if rec.deleted_at is not None}
        stored, usage = store.load(PROJECT)
        assert set(stored.filter(pl.col(s.DELETED_AT).is_not_null()).collect()[s.ID]) == deleted
        prices = store.prices(PROJECT)
        rng = random.Random(seed)
        for req in (
            {"project_id": PROJECT, "include_costs": True},
            {"project_id": PROJECT, "filter": {"trace_ids": ["trace-1"]}},
            {"project_id": PROJECT, "include_costs": True, "filter": {"trace_roots_only": True}},
        ):
            trace_ids = (req.get("filter") or {}).get("trace_ids")
            calls_lf, usage_lf = store.load(PROJECT, trace_ids=trace_ids)
            got = trace_usage(calls_lf, req, usage=usage_lf, prices=prices).to_dict()
            want = weave_ref.reference_trace_usage(server, req)
            assert_same_usage(got, want, f"seed {seed} req {req}")
        ids = [c["id"] for c in rng.sample(calls, min(3, len(calls)))]
        req = {"project_id": PROJECT, "call_ids": ids, "include_costs": True}
        got = calls_usage(stored, req, usage=usage, prices=prices).to_dict()
        assert_same_usage(got, weave_ref.reference_calls_usage(server, req), f"seed {seed}")
    finally:
        store.close()
