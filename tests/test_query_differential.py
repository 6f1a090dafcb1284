"""The query compiler vs weave 0.53.12's in-memory server: random filters and ``$expr`` trees
over random calls with varied JSON, equal answers or both sides rejecting."""

from __future__ import annotations

import random

import pytest

from engine import trace_usage
from engine.errors import QueryError
from engine.refs import extract_refs
from engine.trace_usage import price_table
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import random_prices
from tests.reference.generate_query import random_query_calls, random_request

TRACE_SETS = 150
REQUESTS_PER_SET = 8  # 1,200 cases


@pytest.mark.parametrize("seed", range(TRACE_SETS))
def test_queries_match_reference(seed: int) -> None:
    rng = random.Random(77_000 + seed)
    calls = random_query_calls(rng)
    prices = random_prices(rng)
    server = weave_ref.make_server(calls, prices)
    frame = weave_ref.to_frame(calls, refs=extract_refs)
    table = price_table(weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([]))
    for case in range(REQUESTS_PER_SET):
        req = random_request(rng, calls)
        context = f"seed {seed} case {case} req {req}"
        try:
            want = weave_ref.reference_trace_usage(server, req)
        except Exception:  # the reference rejects: so must we
            with pytest.raises(QueryError):
                trace_usage(frame, req, prices=table)
            continue
        got = trace_usage(frame, req, prices=table).to_dict()
        assert_same_usage(got, want, context)
