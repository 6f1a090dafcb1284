"""Weave 0.53.12's own HTTP client against ``trace-usage serve`` running as a subprocess.

Traces go in through ``call_start``/``call_end``, ``call_start_batch`` and ``cost_create``
exactly as the SDK sends them; the same requests feed the reference in-memory server, and
every usage answer must match it. Models here have project prices only, so neither side's
default price table matters.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from weave.trace_server_bindings.remote_http_trace_server import RemoteHTTPTraceServer

from tests.live_server import USER, Server, running_server
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.weave_ref import ims, tsi

# weave 0.53.12 posts bytes with httpx's deprecated data=
pytestmark = pytest.mark.filterwarnings("ignore:Use .content=.:DeprecationWarning")

ENTITY = "interop"
MODELS = ["interop-llm-a", "interop-llm-b", "interop-unpriced"]
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
MAX_BODY = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("interop-data")
    with running_server(
        data_dir, f"{ENTITY}/*", f"{ENTITY}/narrow", "--max-body-bytes", str(MAX_BODY)
    ) as live:
        yield live


# --- traces as the SDK would send them ------------------------------------------------------


def _usage(rng: random.Random) -> dict[str, dict[str, int]]:
    usage = {}
    for model in rng.sample(MODELS, rng.randint(0, 2)):
        counters = {
            "requests": 1,
            "prompt_tokens": rng.randint(0, 400),
            "completion_tokens": rng.randint(0, 200),
            "cache_read_input_tokens": rng.choice([0, 0, rng.randint(0, 50)]),
            "cache_creation_input_tokens": rng.choice([0, rng.randint(0, 30)]),
        }
        if rng.random() < 0.3:  # Anthropic-style names
            counters["input_tokens"] = counters.pop("prompt_tokens")
            counters["output_tokens"] = counters.pop("completion_tokens")
        if rng.random() < 0.5:
            counters["total_tokens"] = rng.randint(0, 700)
        usage[model] = counters
    return usage


def _trace(rng: random.Random, project_id: str, trace: int, size: int) -> list[dict[str, Any]]:
    """Calls of one tree: (start, end or None) pairs in start order."""
    ids = [f"t{trace}-c{i}" for i in range(size)]
    calls = []
    for i, call_id in enumerate(ids):
        started = T0 + dt.timedelta(days=rng.randint(-60, 60), microseconds=rng.randint(0, 10**6))
        start = tsi.StartedCallSchemaForInsert(
            project_id=project_id,
            id=call_id,
            trace_id=f"trace-{trace}",
            parent_id=None if i == 0 else ids[rng.randrange(i)],
            op_name=rng.choice(["agent", "openai.chat.completions.create", "tool"]),
            started_at=started,
            attributes={"weave": {"client_version": "0.53.6"}},
            inputs={"question": f"q{i}"},
        )
        end = None
        if rng.random() > 0.15:
            end = tsi.EndedCallSchemaForInsert(
                project_id=project_id,
                id=call_id,
                trace_id=f"trace-{trace}",
                ended_at=started + dt.timedelta(seconds=2),
                output={"answer": i},
                summary={"usage": _usage(rng)},
            )
        calls.append((start, end))
    return calls


def _send_one_by_one(target: Any, calls: list[tuple]) -> None:
    for start, _ in calls:
        target.call_start(tsi.CallStartReq(start=start))
    for _, end in reversed(calls):
        if end is not None:
            target.call_end(tsi.CallEndReq(end=end))


def _send_batch(target: Any, calls: list[tuple]) -> None:
    batch: list[Any] = []
    for start, end in calls:
        batch.append(tsi.CallBatchStartMode(req=tsi.CallStartReq(start=start)))
        if end is not None:
            batch.append(tsi.CallBatchEndMode(req=tsi.CallEndReq(end=end)))
    target.call_start_batch(tsi.CallCreateBatchReq(batch=batch))


def _prices(project_id: str) -> list[tsi.CostCreateReq]:
    def cost(prompt: float, completion: float, day: int, cache: float = 0.0) -> Any:
        return tsi.CostCreateInput(
            prompt_token_cost=prompt,
            completion_token_cost=completion,
            cache_read_input_token_cost=cache,
            cache_creation_input_token_cost=cache * 2,
            effective_date=T0 + dt.timedelta(days=day),
            provider_id="interop",
        )

    first = {"interop-llm-a": cost(1e-6, 2e-6, -365), "interop-llm-b": cost(3e-6, 1.5e-5, -1)}
    later = {"interop-llm-a": cost(2.5e-6, 1e-5, 0, 5e-7)}
    return [
        tsi.CostCreateReq(project_id=project_id, costs=first, wb_user_id=USER),
        tsi.CostCreateReq(project_id=project_id, costs=later, wb_user_id=USER),
    ]


def _feed_both(ours: RemoteHTTPTraceServer, ref: Any, project_id: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    traces = [_trace(rng, project_id, t, rng.randint(3, 25)) for t in range(4)]
    for target in (ours, ref):
        _send_one_by_one(target, traces[0])
        _send_one_by_one(target, traces[1])
        _send_batch(target, traces[2])
        _send_batch(target, traces[3])
        for req in _prices(project_id):
            target.cost_create(req)
    return [start.id for trace in traces for start, _ in trace]


def _requests(project_id: str, ids: list[str], rng: random.Random) -> list[dict[str, Any]]:
    reqs: list[dict[str, Any]] = []
    for costs in (False, True):
        base = {"project_id": project_id, "include_costs": costs}
        reqs += [
            base,
            {**base, "filter": {"trace_ids": ["trace-1", "trace-2"]}},
            {**base, "filter": {"trace_roots_only": True}},
            {**base, "filter": {"call_ids": rng.sample(ids, 8)}},
            {**base, "limit": 7},
        ]
    return reqs


def _assert_all_match(
    ours: RemoteHTTPTraceServer, ref: Any, project_id: str, ids: list[str]
) -> None:
    rng = random.Random(len(ids))
    for req in _requests(project_id, ids, rng):
        got = ours.trace_usage(tsi.TraceUsageReq.model_validate(req)).model_dump()
        assert_same_usage(got, weave_ref.reference_trace_usage(ref, req), f"trace_usage {req}")
    for costs in (False, True):
        req = {"project_id": project_id, "call_ids": [*rng.sample(ids, 5), "nope"],
               "include_costs": costs}  # fmt: skip
        got = ours.calls_usage(tsi.CallsUsageReq.model_validate(req)).model_dump()
        assert_same_usage(got, weave_ref.reference_calls_usage(ref, req), f"calls_usage {req}")


@pytest.mark.parametrize("seed", [1, 2])
def test_sdk_ingest_then_usage_matches_the_reference(server: Server, seed: int) -> None:
    project_id = f"{ENTITY}/usage-{seed}"
    ours, ref = server.client(), ims.InMemoryTraceServer()
    ids = _feed_both(ours, ref, project_id, seed)
    _assert_all_match(ours, ref, project_id, ids)

    doomed = tsi.CallsDeleteReq(project_id=project_id, call_ids=[ids[1], ids[-2]], wb_user_id=USER)
    ours.calls_delete(doomed)
    ref.calls_delete(doomed)
    _assert_all_match(ours, ref, project_id, ids)


def test_costs_are_the_project_prices(server: Server) -> None:
    project_id = f"{ENTITY}/costs"
    ours = server.client()
    start = tsi.StartedCallSchemaForInsert(
        project_id=project_id, id="c", trace_id="t", op_name="llm", started_at=T0,
        attributes={}, inputs={},
    )  # fmt: skip
    end = tsi.EndedCallSchemaForInsert(
        project_id=project_id, id="c", ended_at=T0,
        summary={"usage": {"interop-llm-b": {"prompt_tokens": 1000, "completion_tokens": 10}}},
    )  # fmt: skip
    _send_one_by_one(ours, [(start, end)])
    for req in _prices(project_id):
        ours.cost_create(req)
    got = ours.trace_usage(tsi.TraceUsageReq(project_id=project_id, include_costs=True))
    usage = got.call_usage["c"]["interop-llm-b"]
    assert usage.prompt_tokens_total_cost == pytest.approx(1000 * 3e-6)
    assert usage.completion_tokens_total_cost == pytest.approx(10 * 1.5e-5)


def test_server_info_through_the_client(server: Server) -> None:
    info = server.client().server_info()
    assert info.min_required_weave_python_version == "0.0.0"


# --- security over the wire -----------------------------------------------------------------


def _start_req(project_id: str) -> tsi.CallStartReq:
    return tsi.CallStartReq(
        start=tsi.StartedCallSchemaForInsert(
            project_id=project_id, id="x", trace_id="tx", op_name="op", started_at=T0,
            attributes={}, inputs={},
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/trace/usage", {"project_id": f"{ENTITY}/p"}),
        ("/calls/usage", {"project_id": f"{ENTITY}/p", "call_ids": ["x"]}),
        ("/call/start", _start_req(f"{ENTITY}/p").model_dump(mode="json")),
        ("/cost/create", {"project_id": f"{ENTITY}/p", "costs": {}}),
    ],
)
def test_401_without_valid_credentials(server: Server, url: str, body: dict) -> None:
    for auth in (None, (USER, "tu_not-a-key"), ("someone", server.key)):
        res = httpx.post(server.url + url, json=body, auth=auth)
        assert res.status_code == 401, (url, auth)
        assert res.headers["www-authenticate"].startswith("Basic")


def test_403_for_projects_not_granted_ingest_included(server: Server) -> None:
    narrow = server.client(server.narrow_key)
    other = f"{ENTITY}/not-narrow"
    attempts = [
        lambda: narrow.call_start(_start_req(other)),
        lambda: narrow.call_start_batch(
            tsi.CallCreateBatchReq(batch=[tsi.CallBatchStartMode(req=_start_req(other))])
        ),
        lambda: narrow.cost_create(_prices(other)[0]),
        lambda: narrow.trace_usage(tsi.TraceUsageReq(project_id=other)),
        lambda: narrow.calls_usage(tsi.CallsUsageReq(project_id=other, call_ids=["x"])),
    ]
    for attempt in attempts:
        with pytest.raises(httpx.HTTPStatusError) as err:
            attempt()
        assert err.value.response.status_code == 403
    narrow.call_start(_start_req(f"{ENTITY}/narrow"))
    wide = server.client()
    assert wide.trace_usage(tsi.TraceUsageReq(project_id=other)).call_usage == {}
    assert list(wide.trace_usage(tsi.TraceUsageReq(project_id=f"{ENTITY}/narrow")).call_usage) == [
        "x"
    ]


def test_errors_carry_a_reason_and_never_a_traceback(server: Server) -> None:
    auth = (USER, server.key)
    cases = [
        (b'{"project_id": ', 422),
        (b'{"limit": 3}', 422),
        (b'{"project_id": "interop/p", "summary_usage": "twice"}', 400),
    ]
    for body, status in cases:
        res = httpx.post(server.url + "/trace/usage", content=body, auth=auth)
        assert res.status_code == status, res.text
        assert res.json()["reason"] and "Traceback" not in res.text


def test_gzip_when_the_client_accepts_it(server: Server) -> None:
    _feed_both(server.client(), ims.InMemoryTraceServer(), f"{ENTITY}/gzip", seed=7)
    res = httpx.post(
        server.url + "/trace/usage",
        json={"project_id": f"{ENTITY}/gzip", "include_costs": True},
        auth=(USER, server.key),
        headers={"accept-encoding": "gzip"},
    )
    assert res.status_code == 200
    assert res.headers["content-encoding"] == "gzip"
    assert res.json()["call_usage"]


def test_oversize_bodies_get_413_over_a_real_socket(server: Server) -> None:
    auth = (USER, server.key)
    body = b'{"project_id": "interop/p", "pad": "%s"}' % (b"x" * MAX_BODY)
    declared = httpx.post(server.url + "/trace/usage", content=body, auth=auth)
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        yield from (body[i : i + 65536] for i in range(0, len(body), 65536))

    streamed = httpx.post(server.url + "/trace/usage", content=chunks(), auth=auth)
    assert streamed.status_code == 413
    assert streamed.json()["reason"] == f"request body larger than {MAX_BODY} bytes"
