"""The HTTP layer over a fake store: answers, pushdown, error mapping, limits, ops endpoints.

The store is faked (calls and prices from the reference generators) so these tests pin the
service alone; ``test_interop.py`` runs the real store behind uvicorn.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from engine.errors import (
    InputDataError,
    InvalidRequestError,
    NotFoundError,
    QueryParseError,
    QueryTooComplexError,
    TraceUsageError,
    UnsupportedQueryError,
)
from engine.trace_usage import price_table
from engine.usage import usage_from_json
from service.app import create_app
from service.auth import KeyStore
from service.middleware import BodyLimitMiddleware
from service.routes.usage import AnswerCache
from service.settings import Settings
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.generate import PROJECT, random_calls, random_prices

USER = "ada"


class FakeStore:
    """The store contract over in-memory frames; records every ``load`` and ``traces_of``
    and can fail."""

    def __init__(self, calls: list[dict[str, Any]], prices: list[dict[str, Any]]) -> None:
        self.frame = weave_ref.to_frame(calls)
        self.price_frame = price_table(
            weave_ref.to_price_frame(prices), default=weave_ref.to_price_frame([])
        )
        self.loads: list[tuple[str, Any, Any]] = []
        self.fail: Exception | None = None
        self.ingests = 0

    def load(
        self,
        project_id: str,
        trace_ids: list[str] | None = None,
        call_ids: list[str] | None = None,
        columns: Any = None,
    ) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
        """Like the store: only ``columns`` (and ``id``) come back, so a filter or query
        that read a column the route did not ask for would answer wrong, not pass."""
        if self.fail is not None:
            raise self.fail
        self.loads.append((project_id, trace_ids, call_ids))
        kept = [c for c in self.frame.columns if columns is None or c in {*columns, "id"}]
        lf = self.frame.lazy().filter(pl.col("project_id") == project_id).select(kept)
        if trace_ids is not None:
            lf = lf.filter(pl.col("trace_id").is_in(trace_ids))
        if call_ids is not None:
            lf = lf.filter(pl.col("id").is_in(call_ids))
        usage = usage_from_json(self.frame.select("id", "summary")).lazy()
        return lf, usage.join(lf.select("id"), on="id", how="semi")

    def traces_of(self, project_id: str, call_ids: list[str]) -> list[str]:
        self.loads.append((project_id, "traces of", call_ids))
        found = self.frame.filter(
            (pl.col("project_id") == project_id) & pl.col("id").is_in(call_ids)
        )
        return found.get_column("trace_id").drop_nulls().unique().to_list()

    def prices(self, project_id: str) -> pl.DataFrame:
        return self.price_frame

    def version(self) -> int:
        return self.ingests

    def cache_version(self, project_id: str, trace_ids: Sequence[str] | None) -> tuple:
        return (self.ingests,)

    def stats(self) -> dict[str, int]:
        return {"calls": self.frame.height, "bytes": 12345}

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_client(
    tmp_path: Path, store: Any, projects: tuple[str, ...] = (PROJECT,), **settings: Any
) -> tuple[TestClient, tuple[str, str]]:
    """A client of a fresh app and the (user, key) of a key granted ``projects``."""
    config = Settings(data_dir=tmp_path, **settings)
    _, secret = KeyStore(config.keys_path).add(USER, list(projects))
    client = TestClient(create_app(config, store=store), raise_server_exceptions=False)
    return client, (USER, secret)


@pytest.fixture
def sample() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(7)
    return random_calls(rng, n_traces=3, max_calls=30), random_prices(rng)


@pytest.fixture
def store(sample: tuple[list, list]) -> FakeStore:
    return FakeStore(*sample)


@pytest.fixture
def client(tmp_path: Path, store: FakeStore) -> tuple[TestClient, tuple[str, str]]:
    return make_client(tmp_path, store)


def post(client: TestClient, auth: tuple[str, str], url: str, body: Any, **kw: Any) -> Any:
    """POST raw JSON bytes with no Content-Type, as Weave's client does."""
    return client.post(url, content=json.dumps(body).encode(), auth=auth, **kw)


# --- answers --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_trace_usage_over_http_matches_reference(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    calls, prices = random_calls(rng), random_prices(rng)
    client, auth = make_client(tmp_path, FakeStore(calls, prices))
    req: dict[str, Any] = {"project_id": PROJECT, "include_costs": seed % 2 == 0}
    if seed % 3 == 1:
        req["filter"] = {"trace_ids": ["trace-1"]}
    elif seed % 3 == 2:
        req["filter"] = {"call_ids": [c["id"] for c in calls[:6]]}
    res = post(client, auth, "/trace/usage", req)
    assert res.status_code == 200, res.text
    want = weave_ref.reference_trace_usage(weave_ref.make_server(calls, prices), req)
    assert_same_usage(res.json(), want, f"seed {seed}")


@pytest.mark.parametrize("seed", range(8))
def test_calls_usage_over_http_matches_reference(seed: int, tmp_path: Path) -> None:
    rng = random.Random(100 + seed)
    calls, prices = random_calls(rng), random_prices(rng)
    client, auth = make_client(tmp_path, FakeStore(calls, prices))
    ids = [c["id"] for c in rng.sample(calls, 3)] + ["no-such-call"]
    req = {"project_id": PROJECT, "call_ids": ids, "include_costs": seed % 2 == 1}
    res = post(client, auth, "/calls/usage", req)
    assert res.status_code == 200, res.text
    want = weave_ref.reference_calls_usage(weave_ref.make_server(calls, prices), req)
    assert_same_usage(res.json(), want, f"seed {seed}")


def test_filters_are_pushed_down_to_the_store(client: Any, store: FakeStore) -> None:
    c, auth = client
    post(c, auth, "/trace/usage", {"project_id": PROJECT, "filter": {"trace_ids": ["trace-0"]}})
    post(c, auth, "/trace/usage", {"project_id": PROJECT, "filter": {"call_ids": ["c0-1"]}})
    post(c, auth, "/trace/usage", {"project_id": PROJECT, "filter": {"trace_ids": []}})
    trace_of = store.frame.filter(pl.col("id") == "c1-0").get_column("trace_id").item()
    post(c, auth, "/calls/usage", {"project_id": PROJECT, "call_ids": ["c1-0"]})
    assert store.loads == [
        (PROJECT, ["trace-0"], None),
        (PROJECT, None, ["c0-1"]),
        (PROJECT, None, None),
        (PROJECT, "traces of", ["c1-0"]),  # the trace ids only, then the traces
        (PROJECT, [trace_of], None),
    ]


def test_calls_usage_without_ids_does_not_load_the_project(client: Any, store: FakeStore) -> None:
    c, auth = client
    res = post(c, auth, "/calls/usage", {"project_id": PROJECT, "call_ids": []})
    assert res.json() == {"call_usage": {}, "unfinished_call_ids": []}
    assert store.loads == []


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8", "text/x+json"]
)
def test_json_body_is_read_as_json_unlabelled_or_labelled_json(
    client: Any, content_type: str | None
) -> None:
    c, auth = client
    body = json.dumps({"project_id": PROJECT}).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    res = c.post("/trace/usage", content=body, auth=auth, headers=headers)
    assert res.request.headers.get("content-type") == content_type
    if content_type == "text/x+json":  # +json is a structured suffix of application/ only
        assert res.status_code == 415
        return
    assert res.status_code == 200
    assert res.headers["content-type"] == "application/json"
    assert set(res.json()) == {"call_usage", "unfinished_call_ids"}


def test_gzip_only_when_accepted(client: Any) -> None:
    c, auth = client
    req = {"project_id": PROJECT, "include_costs": True}
    zipped = post(c, auth, "/trace/usage", req, headers={"accept-encoding": "gzip"})
    plain = post(c, auth, "/trace/usage", req, headers={"accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert zipped.json() == plain.json()
    assert len(plain.content) > 1024


def test_server_default_summary_usage_applies(tmp_path: Path) -> None:
    t0 = weave_ref.dt.datetime(2025, 1, 1, tzinfo=weave_ref.dt.UTC)
    usage = {"m": {"requests": 1, "prompt_tokens": 10}}
    calls = [
        {"project_id": PROJECT, "id": "root", "trace_id": "t", "op_name": "agent",
         "started_at": t0, "ended_at": t0, "summary": {"usage": usage}},
        {"project_id": PROJECT, "id": "llm", "trace_id": "t", "parent_id": "root",
         "op_name": "llm", "started_at": t0, "ended_at": t0, "summary": {"usage": usage}},
    ]  # fmt: skip
    own, auth = make_client(tmp_path / "own", FakeStore(calls, []))
    auto, auth2 = make_client(tmp_path / "auto", FakeStore(calls, []), summary_usage="auto")
    req = {"project_id": PROJECT}
    assert post(own, auth, "/trace/usage", req).json()["call_usage"]["root"]["m"]["requests"] == 2
    assert post(auto, auth2, "/trace/usage", req).json()["call_usage"]["root"]["m"]["requests"] == 1
    explicit = {**req, "summary_usage": "own"}
    assert (
        post(auto, auth2, "/trace/usage", explicit).json()["call_usage"]["root"]["m"]["requests"]
        == 2
    )


# --- cache ----------------------------------------------------------------------------------


def test_repeated_polls_hit_the_cache_until_the_store_changes(
    client: Any, store: FakeStore
) -> None:
    c, auth = client
    req = {"project_id": PROJECT, "filter": {"trace_ids": ["trace-0"]}}
    first = post(c, auth, "/trace/usage", req)
    second = post(c, auth, "/trace/usage", req)
    assert first.content == second.content and len(store.loads) == 1
    store.ingests += 1
    post(c, auth, "/trace/usage", req)
    assert len(store.loads) == 2


def test_big_answers_are_streamed_whole_and_not_cached(
    tmp_path: Path, sample: tuple[list, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine import serialize

    monkeypatch.setattr(serialize, "_BATCH_ROWS", 3)
    calls, prices = sample
    store = FakeStore(calls, prices)
    c, auth = make_client(tmp_path, store)
    c.app.state.usage_cache.max_bytes = 100  # bodies the cache cannot keep are streamed
    req = {"project_id": PROJECT, "include_costs": True}
    res = post(c, auth, "/trace/usage", req)
    assert res.status_code == 200
    assert "content-length" not in res.headers  # sent as it was written
    want = weave_ref.reference_trace_usage(weave_ref.make_server(calls, prices), req)
    assert_same_usage(res.json(), want, "streamed")
    assert post(c, auth, "/trace/usage", req).content == res.content
    assert len(store.loads) == 2  # too big for the cache: computed again


def test_cache_size_zero_always_loads(tmp_path: Path, store: FakeStore) -> None:
    c, auth = make_client(tmp_path, store, cache_size=0)
    for _ in range(3):
        post(c, auth, "/trace/usage", {"project_id": PROJECT})
    assert len(store.loads) == 3


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (QueryParseError("$eq takes 2 operands", path="query.$expr.$eq"), 400),
        (UnsupportedQueryError("field not supported", path="query.$expr.$getField"), 400),
        (QueryTooComplexError("query nested deeper than 64", path="query.$expr"), 400),
        (InvalidRequestError("bad value", path="limit"), 400),
        (InputDataError("summary is not valid JSON"), 422),
        (NotFoundError("no such project"), 404),
        (TraceUsageError("some other engine error"), 400),
    ],
)
def test_each_engine_error_class_maps_to_its_status(
    client: Any, store: FakeStore, error: TraceUsageError, status: int
) -> None:
    c, auth = client
    store.fail = error
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT})
    assert res.status_code == status
    assert res.json() == {"reason": error.reason, "path": error.path}


def test_invalid_summary_usage_lists_the_allowed_values(client: Any) -> None:
    c, auth = client
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "summary_usage": "both"})
    assert res.status_code == 400
    assert res.json()["path"] == "summary_usage"
    assert "'own'" in res.json()["reason"] and "'auto'" in res.json()["reason"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "project_id"),
        ({"project_id": PROJECT, "limit": "many"}, "limit"),
        ({"project_id": PROJECT, "filter": {"trace_ids": "t"}}, "filter.trace_ids"),
        ({"project_id": PROJECT, "query": {"$expr": {}, "extra": 1}}, "query.extra"),
    ],
)
def test_invalid_body_is_422_naming_the_field(client: Any, body: dict, path: str) -> None:
    c, auth = client
    res = post(c, auth, "/trace/usage", body)
    assert res.status_code == 422
    assert res.json()["path"] == path and res.json()["reason"]


@pytest.mark.parametrize("body", [b'{"project_id": ', b"not json", b'{"project_id": "a",}'])
def test_malformed_json_is_rejected_with_the_reason(client: Any, body: bytes) -> None:
    c, auth = client
    res = c.post("/trace/usage", content=body, auth=auth)
    assert res.status_code == 422
    assert res.json()["reason"].startswith("malformed JSON body:")


def test_deeply_nested_json_is_a_client_error(client: Any) -> None:
    c, auth = client
    depth = 5000
    body = b'{"project_id": "%s", "query": {"$expr": %s1%s}}' % (
        PROJECT.encode(),
        b'{"$not": [' * depth,
        b"]}" * depth,
    )
    res = c.post("/trace/usage", content=body, auth=auth)
    assert res.status_code == 422
    assert res.json() == {"reason": "malformed JSON body: nested too deeply", "path": None}


def test_unexpected_errors_are_a_bare_500(client: Any, store: FakeStore) -> None:
    c, auth = client
    store.fail = RuntimeError("secret internals at /srv/app.py line 3")
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT})
    assert res.status_code == 500
    assert res.json() == {"reason": "internal server error", "path": None}


def test_unknown_route_uses_the_error_shape(client: Any) -> None:
    c, auth = client
    res = c.get("/no/such/route", auth=auth)
    assert res.status_code == 404 and res.json() == {"reason": "Not Found", "path": None}


# --- body limit -----------------------------------------------------------------------------


def test_body_over_the_limit_is_413_by_content_length(tmp_path: Path, store: FakeStore) -> None:
    c, auth = make_client(tmp_path, store, max_body_bytes=200)
    big = {"project_id": PROJECT, "filter": {"trace_ids": ["t" * 300]}}
    res = post(c, auth, "/trace/usage", big)
    assert res.status_code == 413 and "200 bytes" in res.json()["reason"]
    assert store.loads == []


def test_streamed_body_over_the_limit_is_413_before_it_is_read_whole() -> None:
    received: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        received.append(1)
        return {"type": "http.request", "body": b" " * 100, "more_body": len(received) < 1000}

    async def send(message: dict) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not see an oversize body")

    scope = {"type": "http", "method": "POST", "path": "/trace/usage", "headers": []}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=250)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert len(received) == 3


def test_body_at_the_limit_is_accepted(tmp_path: Path, store: FakeStore) -> None:
    body = json.dumps({"project_id": PROJECT}).encode()
    c, auth = make_client(tmp_path, store, max_body_bytes=len(body))
    assert c.post("/trace/usage", content=body, auth=auth).status_code == 200


# --- operations -----------------------------------------------------------------------------


def test_health_needs_no_credentials(client: Any) -> None:
    c, _ = client
    assert c.get("/health").json() == {"status": "ok"}


def test_server_info_answers_as_weave(client: Any) -> None:
    from weave.trace_server.service_interface import ServerInfoRes

    c, auth = client
    info = ServerInfoRes.model_validate(c.get("/server_info", auth=auth).json())
    assert info.min_required_weave_python_version == "0.0.0"
    assert c.get("/server_info").status_code == 401


def test_metrics_count_requests_latency_calls_and_store_size(client: Any, store: FakeStore) -> None:
    c, auth = client
    assert c.get("/metrics", auth=auth).status_code == 403  # a key of one project
    _, secret = c.app.state.keys.add("ops", ["*"])
    admin = ("ops", secret)
    post(c, auth, "/trace/usage", {"project_id": PROJECT})
    post(c, auth, "/trace/usage", {"project_id": "entity/elsewhere"})
    c.get("/health")
    assert c.get("/metrics").status_code == 401
    res = c.get("/metrics", auth=admin)
    assert res.headers["content-type"].startswith("text/plain")
    text = res.text
    ok = 'trace_usage_http_requests_total{method="POST",route="/trace/usage",status="200"} 1.0'
    denied = 'trace_usage_http_requests_total{method="POST",route="/trace/usage",status="403"} 1.0'
    assert ok in text and denied in text
    assert 'trace_usage_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert (
        'trace_usage_http_request_duration_seconds_count{method="POST",route="/trace/usage"}'
        in (text)
    )
    answered = json.loads(post(c, auth, "/trace/usage", {"project_id": PROJECT}).text)
    text = c.get("/metrics", auth=admin).text
    calls = 2 * len(answered["call_usage"])
    assert f'trace_usage_calls_processed_total{{route="/trace/usage"}} {calls}.0' in text
    assert f"trace_usage_store_calls {store.frame.height}.0" in text
    assert "trace_usage_store_bytes 12345.0" in text


def test_one_json_log_line_per_request_without_secrets(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    c, auth = client
    with caplog.at_level(logging.INFO, logger="trace_usage.access"):
        res = post(c, auth, "/trace/usage", {"project_id": PROJECT})
        post(c, auth, "/trace/usage", {"project_id": "entity/elsewhere"})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "trace_usage.access"]
    assert len(lines) == 2
    first, second = lines
    assert first["route"] == "/trace/usage" and first["status"] == 200
    assert first["project"] == PROJECT and first["user"] == USER
    assert first["calls_selected"] == len(res.json()["call_usage"])
    assert first["duration_ms"] >= 0
    assert second["status"] == 403 and second["project"] == "entity/elsewhere"
    assert auth[1] not in caplog.text and "call_usage" not in caplog.text


def test_openapi_names_and_shapes_match_weave(client: Any) -> None:
    from weave.trace_server import trace_server_interface as tsi

    c, _ = client
    spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    extension = {"summary_usage"}
    for model in (tsi.TraceUsageReq, tsi.CallsUsageReq, tsi.TraceUsageRes, tsi.CallsUsageRes,
                  tsi.LLMAggregatedUsage, tsi.CallsFilter):  # fmt: skip
        theirs = model.model_json_schema()
        ours = schemas[model.__name__]
        assert set(ours["properties"]) - extension == set(theirs["properties"]), model
        assert set(ours.get("required", [])) == set(theirs.get("required", [])), model
    paths = spec["paths"]
    for url, req, res in (
        ("/trace/usage", "TraceUsageReq", "TraceUsageRes"),
        ("/calls/usage", "CallsUsageReq", "CallsUsageRes"),
    ):
        op = paths[url]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["$ref"] == f"#/components/schemas/{req}"
        answer = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["$ref"] == f"#/components/schemas/{res}"
        for code in ("400", "401", "403", "413", "422"):
            error = op["responses"][code]["content"]["application/json"]["schema"]
            assert error["$ref"] == "#/components/schemas/ErrorRes"
    usage = schemas["TraceUsageRes"]["properties"]["call_usage"]
    assert usage["additionalProperties"]["additionalProperties"]["$ref"].endswith(
        "/LLMAggregatedUsage"
    )


def test_gzip_body_decodes_to_the_same_answer(client: Any) -> None:
    c, auth = client
    body = json.dumps({"project_id": PROJECT, "include_costs": True}).encode()
    with c.stream(
        "POST", "/trace/usage", content=body, auth=auth, headers={"accept-encoding": "gzip"}
    ) as res:
        raw = b"".join(res.iter_raw())
    assert (
        json.loads(gzip.decompress(raw)) == post(c, auth, "/trace/usage", json.loads(body)).json()
    )


def _nested(depth: int) -> dict[str, Any]:
    expr: dict[str, Any] = {"$eq": [{"$getField": "op_name"}, {"$literal": "x"}]}
    for _ in range(depth):
        expr = {"$not": [expr]}
    return expr


@pytest.mark.parametrize(
    "query",
    [
        {"$expr": _nested(200)},
        {"$expr": {"$in": [{"$getField": "op_name"}, [{"$literal": i} for i in range(20_000)]]}},
    ],
    ids=["too-deep", "too-many-nodes"],
)
def test_query_past_the_compiler_bounds_is_400(client: Any, store: FakeStore, query: dict) -> None:
    c, auth = client
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "query": query})
    assert res.status_code == 400
    assert res.json()["path"].startswith("query") and res.json()["reason"]


def test_malformed_query_is_400_with_its_path(client: Any) -> None:
    c, auth = client
    query = {"$expr": {"$and": [{"$eq": [{"$literal": 1}]}]}}
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "query": query})
    assert res.status_code == 400
    assert res.json()["path"].startswith("query.$expr.$and")


def test_a_query_selects_through_http(client: Any, store: FakeStore) -> None:
    c, auth = client
    op = "openai.chat.completions.create"
    query = {"$expr": {"$eq": [{"$getField": "op_name"}, {"$literal": op}]}}
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "query": query})
    assert res.status_code == 200
    expected = store.frame.filter(
        (pl.col("project_id") == PROJECT)
        & (pl.col("op_name") == op)
        & pl.col("deleted_at").is_null()
    )
    assert set(res.json()["call_usage"]) == set(expected.get_column("id"))


def test_cache_keeps_small_answers_only_and_evicts_the_oldest() -> None:
    cache = AnswerCache(2, max_bytes=3)
    for key, body in [("a", b"1"), ("b", b"22"), ("c", b"333"), ("big", b"4444")]:
        cache.put((key,), body, len(body))
    assert cache.get(("a",)) is None  # the oldest of three went
    assert (cache.get(("b",)), cache.get(("c",))) == ((b"22", 2), (b"333", 3))
    assert cache.get(("big",)) is None  # over max_bytes: never kept
    cache.get(("b",))  # b is now the most recent, so c goes next
    cache.put(("d",), b"1", 1)
    assert [cache.get((k,)) for k in "bcd"] == [(b"22", 2), None, (b"1", 1)]


def test_cache_off_keeps_nothing() -> None:
    cache = AnswerCache(0)
    cache.put(("a",), b"1", 1)
    assert cache.get(("a",)) is None
