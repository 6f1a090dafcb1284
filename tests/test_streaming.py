"""Big answers over a real ``trace-usage serve``: streamed in chunks as they are written,
byte for byte the engine's answer, plain or gzip'd."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from benchmarks.generate import Trace, generate
from benchmarks.server import Service
from engine.trace_usage import trace_usage


@pytest.fixture(scope="module")
def served() -> Any:
    trace = generate("agent", 40_000)  # about 20 MB of answer: several serializer batches
    with Service([trace], cache_size=128) as service:
        yield trace, service


@pytest.mark.parametrize("costs", [False, True])
def test_big_answer_is_streamed_byte_for_byte(served: tuple[Trace, Service], costs: bool) -> None:
    trace, service = served
    req = trace.request(costs)
    want = trace_usage(trace.calls, req, usage=trace.usage).to_json()
    with service.client() as client:
        with client.stream("POST", "/trace/usage", content=orjson.dumps(req)) as res:
            assert res.status_code == 200
            assert res.headers["transfer-encoding"] == "chunked"
            body = b"".join(res.iter_raw())
        assert body == want
        # read whole by a plain request: the same bytes
        assert client.post("/trace/usage", content=orjson.dumps(req)).content == want


def test_big_answer_gzipped_decodes_to_the_same_bytes(served: tuple[Trace, Service]) -> None:
    trace, service = served
    req = trace.request(False)
    headers = {"Authorization": service.auth, "Accept-Encoding": "gzip"}
    res = httpx.post(
        service.url + "/trace/usage", content=orjson.dumps(req), headers=headers, timeout=120
    )
    assert res.headers["content-encoding"] == "gzip"
    assert res.content == trace_usage(trace.calls, req, usage=trace.usage).to_json()
