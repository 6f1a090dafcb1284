"""Engine vs weave 0.53.12's in-memory server on seeded random traces and prices."""

from __future__ import annotations

import random

import pytest

from engine import calls_usage, trace_usage
from engine.trace_usage import price_table
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import PROJECT, random_calls, random_prices

CASES = 300


def _request(rng: random.Random, calls: list[dict]) -> dict:
    req: dict = {"project_id": PROJECT, "include_costs": rng.random() < 0.6}
    roll = rng.random()
    if roll < 0.3:
        req["filter"] = {"trace_ids": [f"trace-{rng.randrange(3)}"]}
    elif roll < 0.4:
        req["filter"] = {"trace_roots_only": True}
    elif roll < 0.5:
        req["filter"] = {"call_ids": [c["id"] for c in rng.sample(calls, min(5, len(calls)))]}
    elif roll < 0.55:
        req["filter"] = {"parent_ids": [c["id"] for c in rng.sample(calls, min(5, len(calls)))]}
    if rng.random() < 0.2:
        req["limit"] = rng.choice([0, -1, 1, 5, 20])
    return req


@pytest.mark.parametrize("seed", range(CASES))
def test_trace_usage_matches_reference(seed: int) -> None:
    rng = random.Random(seed)
    calls = random_calls(rng)
    prices = random_prices(rng)
    req = _request(rng, calls)
    want = weave_ref.reference_trace_usage(weave_ref.make_server(calls, prices), req)
    got = trace_usage(
        weave_ref.to_frame(calls),
        req,
        prices=price_table(weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([])),
    ).to_dict()
    assert_same_usage(got, want, f"seed {seed} req {req}")


@pytest.mark.parametrize("seed", range(100))
def test_calls_usage_matches_reference(seed: int) -> None:
    rng = random.Random(10_000 + seed)
    calls = random_calls(rng)
    prices = random_prices(rng)
    ids = [c["id"] for c in rng.sample(calls, min(3, len(calls)))] + ["no-such-call"]
    req = {"project_id": PROJECT, "call_ids": ids, "include_costs": rng.random() < 0.5}
    want = weave_ref.reference_calls_usage(weave_ref.make_server(calls, prices), req)
    got = calls_usage(
        weave_ref.to_frame(calls),
        req,
        prices=price_table(weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([])),
    ).to_dict()
    assert_same_usage(got, want, f"seed {seed} req {req}")
