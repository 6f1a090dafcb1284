"""weave 0.53.12's own client reads calls from ``trace-usage serve`` as from its reference.

The same SDK requests (``call_start``/``call_end``, ``cost_create``) feed a running server
and the reference's in-memory server; then ``RemoteHTTPTraceServer.calls_query_stream``,
``calls_query_stats`` and ``WeaveClient.get_calls`` must answer what the reference answers:
filters, queries, sorts, paging, projections, costs and empty selections.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from weave.trace.weave_client import WeaveClient

from tests.calls_compare import assert_same_calls
from tests.live_server import USER, Server, running_server
from tests.reference.weave_ref import ims, tsi

pytestmark = pytest.mark.filterwarnings("ignore:Use .content=.:DeprecationWarning")

ENTITY = "cq"
PROJECT = f"{ENTITY}/calls"
T0 = dt.datetime(2025, 4, 1, tzinfo=dt.UTC)
MODELS = ["cq-llm-a", "cq-llm-b", "cq-unpriced"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("cq-data"), f"{ENTITY}/*", "other/x") as live:
        yield live


@pytest.fixture(scope="module")
def both(server: Server) -> tuple[Any, Any]:
    """Our server's client and the reference, fed the same traces and prices."""
    ours, ref = server.client(), ims.InMemoryTraceServer()
    rng = random.Random(7)
    for target in (ours, ref):
        for req in _prices():
            target.cost_create(req)
    for trace in range(5):
        calls = _trace(rng, trace)
        for target in (ours, ref):
            for start, _ in calls:
                target.call_start(tsi.CallStartReq(start=start))
            for _, end in reversed(calls):
                if end is not None:
                    target.call_end(tsi.CallEndReq(end=end))
    return ours, ref


def _prices() -> list[tsi.CostCreateReq]:
    def cost(prompt: float, completion: float, day: int) -> tsi.CostCreateInput:
        return tsi.CostCreateInput(
            prompt_token_cost=prompt, completion_token_cost=completion,
            cache_read_input_token_cost=prompt / 10, effective_date=T0 + dt.timedelta(days=day),
            provider_id="cq",
        )  # fmt: skip

    costs = {"cq-llm-a": cost(1e-6, 2e-6, -30), "cq-llm-b": cost(3e-6, 1.5e-5, -1)}
    later = {"cq-llm-a": cost(2e-6, 4e-6, 5)}
    return [
        tsi.CostCreateReq(project_id=PROJECT, costs=costs, wb_user_id=USER),
        tsi.CostCreateReq(project_id=PROJECT, costs=later, wb_user_id=USER),
    ]


def _trace(rng: random.Random, trace: int) -> list[tuple[Any, Any]]:
    ids = [f"t{trace}-c{i}" for i in range(rng.randint(2, 12))]
    calls = []
    for i, call_id in enumerate(ids):
        started = T0 + dt.timedelta(days=rng.randint(-10, 10), seconds=rng.randint(0, 9999))
        start = tsi.StartedCallSchemaForInsert(
            project_id=PROJECT, id=call_id, trace_id=f"trace-{trace}",
            parent_id=None if i == 0 else ids[rng.randrange(i)],
            op_name=rng.choice(["agent", "openai.chat.completions.create", "tool"]),
            display_name=rng.choice([None, None, "Nice name"]), started_at=started,
            attributes={"weave": {"client_version": "0.53.12"}, "env": rng.choice(["a", "b"])},
            inputs={"question": f"q{rng.randint(0, 30)}", "n": rng.randint(0, 9)},
            wb_user_id=USER,  # the server attributes calls to the caller; so does this feed
        )  # fmt: skip
        end = None
        if rng.random() > 0.15:
            usage = {
                m: {"requests": 1, "prompt_tokens": rng.randint(0, 500),
                    "completion_tokens": rng.randint(0, 99),
                    "cache_read_input_tokens": rng.choice([0, 20])}
                for m in rng.sample(MODELS, rng.randint(0, 2))
            }  # fmt: skip
            end = tsi.EndedCallSchemaForInsert(
                project_id=PROJECT, id=call_id,
                ended_at=started + dt.timedelta(milliseconds=rng.randint(1, 5000)),
                output={"answer": i}, summary={"usage": usage},
                exception="ValueError: no" if rng.random() < 0.1 else None,
            )  # fmt: skip
        calls.append((start, end))
    return calls


def _by(field: str, direction: str = "asc") -> dict[str, str]:
    return {"field": field, "direction": direction}


REQUESTS: list[dict[str, Any]] = [
    {},
    {"filter": {"trace_ids": ["trace-1", "trace-3"]}},
    {"filter": {"trace_roots_only": True}, "sort_by": [_by("started_at", "desc")]},
    {"filter": {"op_names": ["tool"]}, "sort_by": [_by("op_name"), _by("inputs.question", "desc")]},
    {"query": {"$expr": {"$gt": [{"$getField": "inputs.n"}, {"$literal": 4}]}},
     "sort_by": [_by("summary.weave.status"), _by("summary.weave.trace_name", "desc")]},
    {"sort_by": [_by("inputs.n", "desc")], "limit": 7, "offset": 3},
    {"limit": 5, "columns": ["id", "inputs.question", "output"]},
    {"columns": ["summary"], "include_costs": True, "filter": {"trace_ids": ["trace-0"]}},
    {"include_costs": True, "sort_by": [_by("id", "desc")]},
    {"include_costs": True, "columns": ["inputs"], "offset": 4},
    {"filter": {"trace_ids": ["no-such-trace"]}, "include_costs": True},
    {"query": {"$expr": {"$eq": [{"$getField": "attributes.env"}, {"$literal": "none"}]}}},
]  # fmt: skip


@pytest.mark.parametrize("body", REQUESTS, ids=lambda b: str(sorted(b)))
def test_calls_query_stream_matches_the_reference(both: tuple[Any, Any], body: dict) -> None:
    ours, ref = both
    req = tsi.CallsQueryReq(project_id=PROJECT, **body)
    got = [c.model_dump() for c in ours.calls_query_stream(req)]
    want = [c.model_dump() for c in ref.calls_query_stream(req)]
    assert_same_calls(got, want, str(body))
    stats = tsi.CallsQueryStatsReq(project_id=PROJECT, filter=req.filter, query=req.query)
    assert ours.calls_query_stats(stats) == ref.calls_query_stats(stats)


def _client_calls(server: Any, **kwargs: Any) -> list[dict[str, Any]]:
    client = WeaveClient(ENTITY, "calls", server, ensure_project_exists=False)
    calls = client.get_calls(**kwargs)
    return [len(calls), *[call.to_dict() for call in calls]]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"filter": {"trace_roots_only": True}, "sort_by": [_by("started_at", "desc")]},
        {"limit": 4, "offset": 2, "page_size": 3},
        {"columns": ["inputs", "summary"], "include_costs": True, "page_size": 5},
        {"filter": {"op_names": ["nothing"]}},
    ],
    ids=lambda k: str(sorted(k)),
)
def test_weave_client_get_calls_matches_the_reference(
    both: tuple[Any, Any], kwargs: dict[str, Any]
) -> None:
    ours, ref = both
    got, want = _client_calls(ours, **kwargs), _client_calls(ref, **kwargs)
    assert got[0] == want[0]  # len(), from calls_query_stats
    assert_same_calls(got[1:], want[1:], str(kwargs))


def test_read_api_errors_and_projects(server: Server, both: tuple[Any, Any]) -> None:
    auth = (USER, server.key)
    bad_sort = {"project_id": PROJECT, "sort_by": [_by("nope")]}
    res = httpx.post(server.url + "/calls/stream_query", json=bad_sort, auth=auth)
    assert res.status_code == 400 and res.json()["path"] == "sort_by[0].field"
    res = httpx.post(server.url + "/calls/query_stats", json={"project_id": PROJECT, "limit": 0},
                     auth=auth)  # fmt: skip
    assert res.status_code == 400 and res.json()["path"] == "limit"
    for route, field in (("stream_query", "limit"), ("stream_query", "offset"),
                         ("query_stats", "limit")):  # fmt: skip
        too_big = {"project_id": PROJECT, field: 2**64}  # was a 500 (found by schemathesis)
        res = httpx.post(f"{server.url}/calls/{route}", json=too_big, auth=auth)
        assert res.status_code == 422 and res.json()["path"] == field, res.text
    bad_dir = {"project_id": PROJECT, "sort_by": [{"field": "id", "direction": "up"}]}
    assert (
        httpx.post(server.url + "/calls/stream_query", json=bad_dir, auth=auth).status_code == 422
    )
    narrow = (USER, server.narrow_key)
    res = httpx.post(server.url + "/calls/stream_query", json={"project_id": PROJECT}, auth=narrow)
    assert res.status_code == 403
    assert (
        httpx.post(server.url + "/calls/query_stats", json={"project_id": PROJECT}).status_code
        == 401
    )
    # the browser page's requests get no Basic challenge (no browser dialog), others do
    for headers, challenged in (({}, True), ({"X-Requested-With": "trace-usage-page"}, False)):
        res = httpx.get(server.url + "/projects", auth=(USER, "tu_wrong"), headers=headers)
        assert res.status_code == 401 and ("www-authenticate" in res.headers) is challenged
    listed = httpx.get(server.url + "/projects", auth=auth).json()["projects"]
    assert {"project_id": PROJECT, "calls": sum(1 for _ in both[1].calls_query_stream(
        tsi.CallsQueryReq(project_id=PROJECT)))} in listed  # fmt: skip
    assert httpx.get(server.url + "/projects", auth=narrow).json() == {"projects": []}
