"""``calls_query`` and ``calls_query_stats`` against weave 0.53.12's in-memory server.

Seeded random calls (varied JSON, orphans, deleted and foreign calls) with random filters
and queries, plus sort, paging, projection and costs; every answer must be the
reference's, call by call and field by field.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.calls_models import CallsQueryReq
from engine.calls_query import REQUIRED, calls_query, calls_query_stats, selected_columns
from engine.errors import InvalidRequestError, TraceUsageError, UnsupportedQueryError
from engine.pricing import price_table
from tests.calls_compare import assert_same_calls
from tests.reference import weave_ref
from tests.reference.generate import PROJECT, T0, random_prices
from tests.reference.generate_query import random_query_calls, random_request
from tests.reference.weave_ref import tsi

SORT_FIELDS = [
    "started_at", "ended_at", "id", "op_name", "display_name", "trace_id", "parent_id",
    "exception", "wb_run_step", "summary.weave.latency_ms", "summary.weave.status",
    "summary.weave.trace_name", "inputs.a", "output", "attributes.b.c", "summary.usage",
]  # fmt: skip
COLUMNS = ["id", "inputs", "output.x", "summary", "attributes", "ended_at", "display_name",
           "parent_id", "inputs_dump", "wb_run_step", "nonsense"]  # fmt: skip


def _random_query(rng: random.Random, calls: list[dict[str, Any]]) -> dict[str, Any]:
    req = {k: v for k, v in random_request(rng, calls).items() if k in ("filter", "query")}
    if rng.random() < 0.3:
        req = {}
    req |= {"project_id": PROJECT, "include_costs": rng.random() < 0.4}
    roll = rng.random()
    if roll < 0.6:
        req["sort_by"] = [
            {"field": rng.choice(SORT_FIELDS), "direction": rng.choice(["asc", "desc"])}
            for _ in range(rng.randint(1, 3))
        ]
    elif roll < 0.7:
        req["sort_by"] = []
    if rng.random() < 0.4:
        req["limit"] = rng.choice([0, 1, 3, 10])
    if rng.random() < 0.3:
        req["offset"] = rng.choice([0, 2, 5, 100])
    if rng.random() < 0.5:
        req["columns"] = rng.sample(COLUMNS, rng.randint(1, 4))
    return req


def _ours(frame: Any, prices: Any, req: dict[str, Any]) -> list[dict[str, Any]]:
    """Our rows as Weave's client reads them: validated as ``CallSchema`` (which, like the
    reference's own answer, reads usage counters such as ``"42"`` as integers)."""
    rows = calls_query(frame, req, prices=prices).rows()
    return [tsi.CallSchema.model_validate(row).model_dump() for row in rows]


def _theirs(server: Any, req: dict[str, Any]) -> list[dict[str, Any]]:
    res = server.calls_query(tsi.CallsQueryReq.model_validate(req))
    return [c.model_dump() for c in res.calls]


def _sort_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _model_order(server: Any, req: dict[str, Any]) -> list[str]:
    """The page's ids under ClickHouse's ORDER BY: the reference's own sort terms, applied
    by a stable sort per term with NULLs last.

    The reference sorts with a key under which NULL compares equal to everything, which is
    no order at all once a term mixes NULLs and values: its result then depends on the
    order the calls were inserted in. ClickHouse (and this server) order such rows by
    value with NULLs last, which is what this model does with the reference's terms.
    """
    unsorted = {**req, "sort_by": []}
    unsorted.pop("limit", None)
    unsorted.pop("offset", None)
    records = [server._calls[PROJECT, c["id"]] for c in _theirs(server, unsorted)]
    order = [(s["field"], s["direction"]) for s in req.get("sort_by") or []]
    if req.get("sort_by") is None:
        order = [("started_at", "asc"), ("id", "asc")]
    elif order and not any(f == "id" for f, _ in order):
        order.append(("id", order[-1][1] if order[-1][0] == "started_at" else "desc"))
    terms = [t for f, d in order for t in server._compile_calls_sort_field(f, d)]
    for term, direction in reversed(terms):
        values = {id(rec): _sort_value(term(rec)) for rec in records}
        present = [rec for rec in records if values[id(rec)] is not None]
        present.sort(key=lambda rec: values[id(rec)], reverse=direction == "desc")
        records = present + [rec for rec in records if values[id(rec)] is None]
    offset = req.get("offset") or 0
    records = records[offset:]
    if req.get("limit"):
        records = records[: req["limit"]]
    return [rec.id for rec in records]


@pytest.mark.parametrize("seed", range(8))
def test_calls_query_matches_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    calls, prices = random_query_calls(rng), random_prices(rng)
    server = weave_ref.make_server(calls, prices)
    frame = weave_ref.to_frame(calls)
    table = price_table(weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([]))
    for i in range(25):
        req = _random_query(rng, calls)
        context = f"seed {seed} #{i}: {req}"
        try:
            order = _model_order(server, req)
        except Exception:  # a query the reference refuses: we refuse it too, with a 400
            with pytest.raises(TraceUsageError):
                _ours(frame, table, req)
            continue
        ours = _ours(frame, table, req)
        assert [c["id"] for c in ours] == order, context
        everything = {**req, "sort_by": [], "limit": None, "offset": None}
        theirs = {c["id"]: c for c in _theirs(server, everything)}
        assert_same_calls(ours, [theirs[c["id"]] for c in ours], context)


def _stats(server: Any, req: dict[str, Any]) -> dict[str, Any]:
    return server.calls_query_stats(tsi.CallsQueryStatsReq.model_validate(req)).model_dump()


@pytest.mark.parametrize("seed", range(4))
def test_query_stats_match_the_reference(seed: int) -> None:
    rng = random.Random(100 + seed)
    calls = random_query_calls(rng)
    server, frame = weave_ref.make_server(calls, []), weave_ref.to_frame(calls)
    for _ in range(15):
        req = {k: v for k, v in random_request(rng, calls).items() if k in ("filter", "query")}
        req |= {"project_id": PROJECT, "limit": rng.choice([None, 1, 3, 1000])}
        try:
            theirs = _stats(server, req)
        except Exception:
            continue
        assert calls_query_stats(frame, req).model_dump() == theirs, req


def _one_call() -> Any:
    return weave_ref.to_frame(
        [{"project_id": PROJECT, "id": "only", "trace_id": "t", "op_name": "op",
          "started_at": T0, "summary": {"usage": {"gpt-4o": {"prompt_tokens": 5}}}}]
    )  # fmt: skip


def test_empty_selection_and_one_call() -> None:
    frame = _one_call()
    empty = calls_query(frame, {"project_id": "nobody/here", "include_costs": True})
    assert len(empty) == 0 and list(empty.json_lines()) == []
    assert calls_query_stats(frame, {"project_id": "nobody/here"}).count == 0
    (only,) = calls_query(frame, {"project_id": PROJECT, "include_costs": True}).rows()
    assert only["id"] == "only" and only["summary"]["weave"]["status"] == "running"
    assert "latency_ms" not in only["summary"]["weave"]
    # unpriced here (no price table rows for the model): no costs entry, as in the reference
    table = price_table(weave_ref.to_price_frame([]), default=weave_ref.to_price_frame([]))
    (unpriced,) = calls_query(
        frame, {"project_id": PROJECT, "include_costs": True}, prices=table
    ).rows()
    assert "costs" not in unpriced["summary"]["weave"]


@pytest.mark.parametrize(
    ("req", "error", "path"),
    [
        ({"sort_by": [{"field": "x", "direction": "asc"}]}, UnsupportedQueryError, "sort_by[0]"),
        ({"include_feedback": True}, InvalidRequestError, "include_feedback"),
        ({"include_storage_size": True}, InvalidRequestError, "include_storage_size"),
        ({"expand_columns": ["inputs.x"]}, InvalidRequestError, "expand_columns"),
    ],
)  # fmt: skip
def test_refused_options_say_where(req: dict[str, Any], error: type, path: str) -> None:
    with pytest.raises(error) as err:
        calls_query(_one_call(), {"project_id": PROJECT, **req})
    assert err.value.path.startswith(path)


def test_stats_limit_below_one_is_refused() -> None:
    with pytest.raises(InvalidRequestError):
        calls_query_stats(_one_call(), {"project_id": PROJECT, "limit": 0})


def test_columns_resolve_as_the_reference() -> None:
    req = CallsQueryReq(project_id=PROJECT, columns=["output.a", "inputs_dump", "nope"])
    assert selected_columns(req) == ["output", "inputs", *REQUIRED]
    costs = CallsQueryReq(project_id=PROJECT, columns=["id"], include_costs=True)
    assert selected_columns(costs) == [
        "id", "summary", "ended_at", "exception", "display_name", "trace_id", "project_id",
        "op_name", "started_at",
    ]  # fmt: skip
