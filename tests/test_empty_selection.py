"""Selections of no call, with and without costs, for every filter field and for a query.

The store hands the engine the project's (or the named traces') usage rows whatever the
filter keeps, so a filter that keeps nothing still comes with usage rows; the answer must be
the reference's empty one, not an error. Checked through the HTTP app over a real store and
through the Python API with a pre-extracted usage frame, against weave 0.53.12.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from engine import trace_usage
from engine.trace_usage import price_table
from engine.usage import usage_from_json
from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import PROJECT, random_calls

NONE = "no-such-value"
# each filter field with a value no stored call has
FILTERS: dict[str, dict[str, Any]] = {
    "op_names": {"op_names": [NONE]},
    "op_names wildcard": {"op_names": [f"weave-trace-internal:///cHJvamVjdA/op/{NONE}:*"]},
    "input_refs": {"input_refs": [f"weave:///{PROJECT}/object/{NONE}:v0"]},
    "output_refs": {"output_refs": [f"weave:///{PROJECT}/object/{NONE}:v0"]},
    "parent_ids": {"parent_ids": [NONE]},
    "trace_ids": {"trace_ids": [NONE]},
    "call_ids": {"call_ids": [NONE]},
    "thread_ids": {"thread_ids": [NONE]},
    "turn_ids": {"turn_ids": [NONE]},
    "wb_user_ids": {"wb_user_ids": [NONE]},
    "wb_run_ids": {"wb_run_ids": [NONE]},
    # a real trace (its usage rows are loaded) and a field that keeps none of its calls
    "trace_ids + op_names": {"trace_ids": ["trace-0", "trace-1"], "op_names": [NONE]},
    "trace_ids + call_ids": {"trace_ids": ["trace-0"], "call_ids": ["c1-0"]},
    "trace_roots_only + parent_ids": {"trace_roots_only": True, "parent_ids": ["c0-0"]},
}
QUERY = {"$expr": {"$eq": [{"$getField": "op_name"}, {"$literal": NONE}]}}
CASES = [(name, {"filter": f}) for name, f in FILTERS.items()] + [("query", {"query": QUERY})]


def _calls() -> list[dict[str, Any]]:
    calls = random_calls(random.Random(19), n_traces=3, max_calls=25)
    return [c for c in calls if c["op_name"] is not None and c["project_id"] == PROJECT]


def _complete(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "project_id": call["project_id"],
        "id": call["id"],
        "trace_id": call["trace_id"],
        "parent_id": call["parent_id"],
        "op_name": call["op_name"],
        "started_at": call["started_at"].isoformat(),
        "ended_at": (call["ended_at"] or call["started_at"]).isoformat(),
        "attributes": {},
        "inputs": {},
        "output": None,
        "summary": call["summary"] or {},
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, tuple[str, str], Any]:
    """An app over a real store holding the calls (ended), and the reference holding them."""
    tmp: Path = tmp_path_factory.mktemp("empty")
    config = Settings(data_dir=tmp, cache_size=0)
    _, secret = KeyStore(config.keys_path).add("ada", [PROJECT])
    client = TestClient(create_app(config), raise_server_exceptions=False)
    auth = ("ada", secret)
    calls = [{**c, "ended_at": c["ended_at"] or c["started_at"]} for c in _calls()]
    batch = {"batch": [_complete(c) for c in calls]}
    res = client.post(f"/v2/{PROJECT}/calls/complete", content=json.dumps(batch), auth=auth)
    assert res.status_code == 200, res.text
    server = weave_ref.make_server(calls, [])
    return client, auth, server


@pytest.mark.parametrize("include_costs", [False, True])
@pytest.mark.parametrize(("name", "selection"), CASES, ids=[name for name, _ in CASES])
def test_http_empty_selection_matches_reference(
    served: tuple[TestClient, tuple[str, str], Any],
    name: str,
    selection: dict[str, Any],
    include_costs: bool,
) -> None:
    client, auth, server = served
    req = {"project_id": PROJECT, **selection, "include_costs": include_costs}
    res = client.post("/trace/usage", content=json.dumps(req), auth=auth)
    assert res.status_code == 200, res.text
    want = weave_ref.reference_trace_usage(server, req)
    assert want["call_usage"] == {}, f"{name} selects calls in the reference"
    assert_same_usage(res.json(), want, name)


@pytest.mark.parametrize("include_costs", [False, True])
@pytest.mark.parametrize(("name", "selection"), CASES, ids=[name for name, _ in CASES])
def test_engine_empty_selection_with_usage_rows(
    name: str, selection: dict[str, Any], include_costs: bool
) -> None:
    calls = _calls()
    frame = weave_ref.to_frame(calls)
    usage = usage_from_json(frame.select("id", "summary"))
    assert usage.height > 0
    req = {"project_id": PROJECT, **selection, "include_costs": include_costs}
    got = trace_usage(
        frame, req, usage=usage, prices=price_table(default=weave_ref.to_price_frame([]))
    ).to_dict()
    want = weave_ref.reference_trace_usage(weave_ref.make_server(calls, []), req)
    assert_same_usage(got, want, name)
