"""``limit`` as weave 0.53.12 has it: ``/calls/usage`` is never partial, ``/trace/usage`` cuts.

``/calls/usage``: a limit below 1 is a 400; a trace of more calls than the limit is a 413;
traces that fit one by one but not together are rolled up in the reference's batches (a
parent in another batch ends the chain). ``/trace/usage`` still cuts the selection at the
limit, as upstream; the body keeps Weave's shape and headers say how many calls were cut.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from weave.trace_server.errors import InvalidRequest, RequestTooLarge

from engine import calls_usage, trace_usage
from engine.errors import AnswerTooLargeError, InvalidRequestError
from engine.trace_usage import price_table
from service.app import create_app
from service.auth import KeyStore
from service.routes.usage import SELECTED_CALLS, TRUNCATED
from service.settings import Settings
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import PROJECT, random_calls, random_prices

OURS = {InvalidRequestError: "invalid", AnswerTooLargeError: "too large"}
THEIRS = {InvalidRequest: "invalid", RequestTooLarge: "too large"}


def _with_cross_trace_parents(rng: random.Random, calls: list[dict[str, Any]]) -> None:
    """Give a few calls a parent in another trace (batches must cut those links)."""
    for call in calls:
        others = [c["id"] for c in calls if c["trace_id"] != call["trace_id"]]
        if others and rng.random() < 0.1:
            call["parent_id"] = rng.choice(others)


def _ours(calls: list[dict[str, Any]], prices: list[dict[str, Any]], req: dict[str, Any]) -> Any:
    table = price_table(weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([]))
    try:
        return calls_usage(weave_ref.to_frame(calls), req, prices=table).to_dict()
    except (InvalidRequestError, AnswerTooLargeError) as err:
        return OURS[type(err)]


def _theirs(calls: list[dict[str, Any]], prices: list[dict[str, Any]], req: dict[str, Any]) -> Any:
    try:
        return weave_ref.reference_calls_usage(weave_ref.make_server(calls, prices), req)
    except (InvalidRequest, RequestTooLarge) as err:
        return THEIRS[type(err)]


@pytest.mark.parametrize("seed", range(60))
def test_calls_usage_limit_matches_reference(seed: int) -> None:
    rng = random.Random(30_000 + seed)
    calls = random_calls(rng, n_traces=rng.randint(1, 5), max_calls=12)
    _with_cross_trace_parents(rng, calls)
    prices = random_prices(rng)
    ids = [c["id"] for c in rng.sample(calls, min(4, len(calls)))]
    req = {
        "project_id": PROJECT,
        "call_ids": ids,
        "include_costs": rng.random() < 0.5,
        "limit": rng.choice([-1, 0, 1, 3, 8, 12, 20, 40, 10_000]),
    }
    got, want = _ours(calls, prices, req), _theirs(calls, prices, req)
    if isinstance(want, str) or isinstance(got, str):
        assert got == want, f"seed {seed} req {req}"
    else:
        assert_same_usage(got, want, f"seed {seed} req {req}")


def test_batches_cut_parents_in_other_batches() -> None:
    """Two traces of 2 calls under a limit of 3: two batches, so the child in trace b does
    not roll into its parent in trace a, as in the reference."""
    rng = random.Random(1)
    calls = random_calls(rng, n_traces=1, max_calls=1)
    base = {**calls[0], "project_id": PROJECT, "deleted_at": None, "op_name": "op"}
    usage = {"usage": {"m": {"requests": 1, "prompt_tokens": 5}}}
    tree = [("a0", "a", None), ("a1", "a", "a0"), ("b0", "b", "a1"), ("b1", "b", "b0")]
    calls = [
        {**base, "id": i, "trace_id": tr, "parent_id": p, "summary": usage} for i, tr, p in tree
    ]
    req = {"project_id": PROJECT, "call_ids": ["a0", "b0"], "limit": 3}
    got, want = _ours(calls, [], req), _theirs(calls, [], req)
    assert_same_usage(got, want)
    assert got["call_usage"]["a0"]["m"]["requests"] == 2  # b's calls stayed out
    whole = _ours(calls, [], {**req, "limit": 4})
    assert whole["call_usage"]["a0"]["m"]["requests"] == 4  # one batch: they roll in


@pytest.fixture
def served(tmp_path: Path) -> tuple[TestClient, tuple[str, str]]:
    config = Settings(data_dir=tmp_path, cache_size=8)
    _, secret = KeyStore(config.keys_path).add("ada", [PROJECT])
    client = TestClient(create_app(config), raise_server_exceptions=False)
    auth = ("ada", secret)
    usage = {"usage": {"m": {"requests": 1, "prompt_tokens": 5}}}
    batch = [
        {
            "project_id": PROJECT,
            "id": f"c{i}",
            "trace_id": "t",
            "parent_id": None if i == 0 else "c0",
            "op_name": "op",
            "started_at": f"2025-01-01T00:00:0{i}+00:00",
            "ended_at": f"2025-01-01T00:00:0{i}+00:00",
            "attributes": {},
            "inputs": {},
            "output": None,
            "summary": usage,
        }
        for i in range(5)
    ]
    res = client.post(
        f"/v2/{PROJECT}/calls/complete", content=json.dumps({"batch": batch}), auth=auth
    )
    assert res.status_code == 200, res.text
    return client, auth


@pytest.mark.parametrize(("limit", "status"), [(0, 400), (-3, 400), (4, 413), (5, 200)])
def test_calls_usage_route_is_never_partial(
    served: tuple[TestClient, tuple[str, str]], limit: int, status: int
) -> None:
    client, auth = served
    req = {"project_id": PROJECT, "call_ids": ["c0"], "limit": limit}
    for _ in range(2):  # the second answer may come from the cache: the same either way
        res = client.post("/calls/usage", content=json.dumps(req), auth=auth)
        assert res.status_code == status, res.text
        if status != 200:
            assert res.json()["path"] == "limit"
        else:
            assert res.json()["call_usage"]["c0"]["m"]["requests"] == 5


@pytest.mark.parametrize("limit", [2, 4, 5, 0])
def test_trace_usage_cut_says_so_in_headers(
    served: tuple[TestClient, tuple[str, str]], limit: int
) -> None:
    client, auth = served
    req = {"project_id": PROJECT, "filter": {"trace_ids": ["t"]}, "limit": limit}
    cut = 0 < limit < 5
    for _ in range(2):  # computed, then from the cache
        res = client.post("/trace/usage", content=json.dumps(req), auth=auth)
        assert res.status_code == 200, res.text
        assert len(res.json()["call_usage"]) == (limit if cut else 5)
        assert res.headers.get(TRUNCATED) == ("true" if cut else None)
        assert res.headers.get(SELECTED_CALLS) == ("5" if cut else None)


def test_engine_reports_the_cut() -> None:
    rng = random.Random(5)
    calls = random_calls(rng, n_traces=1, max_calls=30)
    frame = weave_ref.to_frame(calls)
    whole = trace_usage(frame, {"project_id": PROJECT, "limit": 0})
    assert whole.truncated_from is None
    n = whole.call_ids.len()
    assert n > 1
    cut = trace_usage(frame, {"project_id": PROJECT, "limit": n - 1})
    assert (cut.truncated_from, cut.call_ids.len()) == (n, n - 1)
