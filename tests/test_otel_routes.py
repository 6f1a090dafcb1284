"""``POST /otel/v1/traces`` on the real app: encodings, auth, partial success, bad bodies.

Answers are checked against weave 0.53.12's ``otel_export`` on the same spans.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from service.app import create_app
from service.settings import Settings
from tests.otel_support import key_values, otlp_json, random_trace, reference_export, request_of
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage

PROJECT = "acme/otel"
PROTOBUF = {"content-type": "application/x-protobuf"}
T0_NS = 1_740_000_000_000_000_000


@pytest.fixture
def app_keys(tmp_path: Path) -> Iterator[tuple[TestClient, tuple[str, str], tuple[str, str]]]:
    app = create_app(Settings(data_dir=tmp_path))
    _, wide = app.state.keys.add("ada", ["acme/*"])
    _, narrow = app.state.keys.add("bob", ["acme/other"])
    with TestClient(app) as client:
        yield client, ("ada", wide), ("bob", narrow)


@pytest.fixture
def client(app_keys) -> TestClient:
    client, wide, _ = app_keys
    client.auth = wide
    return client


def _trace(seed: int, spans: int = 12) -> list[Span]:
    return random_trace(seed, spans, T0_NS)


def _usage(client: TestClient, trace_id: str, project: str = PROJECT) -> dict:
    req = {"project_id": project, "filter": {"trace_ids": [trace_id]}, "include_costs": True}
    res = client.post("/trace/usage", json=req)
    assert res.status_code == 200, res.text
    return res.json()


def _reference_usage(spans: list[Span]) -> dict:
    server, _ = reference_export(request_of(spans))
    req = {"project_id": "cHJvamVjdA", "filter": {"trace_ids": [spans[0].trace_id.hex()]},
           "include_costs": True}  # fmt: skip
    return weave_ref.reference_trace_usage(server, req)


def _post(client: TestClient, spans: list[Span], **headers: str):
    body = request_of(spans).SerializeToString()
    return client.post("/otel/v1/traces", content=body, headers={**PROTOBUF, **headers})


def test_protobuf_export_equals_reference(client: TestClient) -> None:
    spans = _trace(1)
    res = _post(client, spans, project_id=PROJECT)
    assert res.status_code == 200 and res.headers["content-type"] == PROTOBUF["content-type"]
    reply = ExportTraceServiceResponse.FromString(res.content)
    assert not reply.HasField("partial_success")
    assert_same_usage(_usage(client, spans[0].trace_id.hex()), _reference_usage(spans))


def test_json_and_gzip(client: TestClient) -> None:
    spans = _trace(2)
    body = otlp_json(request_of(spans))
    res = client.post(
        "/otel/v1/traces",
        content=gzip.compress(orjson.dumps(body)),
        headers={"content-type": "application/json", "content-encoding": "gzip",
                 "project_id": PROJECT},
    )  # fmt: skip
    assert res.status_code == 200 and res.json() == {}, res.text
    assert_same_usage(_usage(client, spans[0].trace_id.hex()), _reference_usage(spans))


def test_project_from_resource_attributes(client: TestClient) -> None:
    spans = _trace(3)
    body = request_of(spans, [("wandb.entity", "acme"), ("wandb.project", "fromres")])
    res = client.post("/otel/v1/traces", content=body.SerializeToString(), headers=PROTOBUF)
    assert res.status_code == 200
    assert_same_usage(
        _usage(client, spans[0].trace_id.hex(), "acme/fromres"), _reference_usage(spans)
    )
    res = client.post(
        "/otel/v1/traces", content=request_of(spans).SerializeToString(), headers=PROTOBUF
    )
    assert res.status_code == 400 and "project_id header" in res.json()["reason"]


def test_auth(app_keys) -> None:
    client, _, narrow = app_keys
    spans = _trace(4)
    assert _post(client, spans, project_id=PROJECT).status_code == 401
    client.auth = ("bob", "wrong")
    assert _post(client, spans, project_id=PROJECT).status_code == 401
    client.auth = narrow
    res = _post(client, spans, project_id=PROJECT)
    assert res.status_code == 403 and PROJECT in res.json()["reason"]
    body = request_of(spans, [("wandb.entity", "acme"), ("wandb.project", "elsewhere")])
    res = client.post("/otel/v1/traces", content=body.SerializeToString(), headers=PROTOBUF)
    assert res.status_code == 403 and "acme/elsewhere" in res.json()["reason"]
    client.auth = ("ada", "nope")
    assert _post(client, spans, project_id="acme/other").status_code == 401


def test_partial_success(client: TestClient) -> None:
    good = _trace(5, spans=3)
    bad = Span(
        trace_id=good[0].trace_id,
        span_id=b"\x09" * 8,
        name="conflicted",
        attributes=key_values([("a", 1), ("a.b", 2)]),
    )
    spans = [*good, bad]
    res = _post(client, spans, project_id=PROJECT)
    assert res.status_code == 200
    reply = ExportTraceServiceResponse.FromString(res.content)
    _, ref = reference_export(request_of(spans))
    assert reply.partial_success.rejected_spans == ref.partial_success.rejected_spans == 1
    assert "name='conflicted'" in reply.partial_success.error_message
    assert "0909090909090909" in reply.partial_success.error_message
    assert_same_usage(_usage(client, good[0].trace_id.hex()), _reference_usage(spans))
    res = client.post(
        "/otel/v1/traces",
        content=orjson.dumps(otlp_json(request_of([bad]))),
        headers={"content-type": "application/json", "project_id": PROJECT},
    )
    assert res.json()["partialSuccess"]["rejectedSpans"] == "1", res.text


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (b"\xff\xff\xff", "application/x-protobuf", "malformed OTLP protobuf"),
        (b"{not json", "application/json", "malformed JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "zz"}]}]}]}',
         "application/json", "hex"),
        (b'{"resourceSpans": 3}', "application/json", "list of objects"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}',
         "application/json", "invalid OTLP JSON"),
    ],
)  # fmt: skip
def test_malformed_body_is_a_400(client: TestClient, body: bytes, kind: str, fragment: str) -> None:
    res = client.post(
        "/otel/v1/traces", content=body, headers={"content-type": kind, "project_id": PROJECT}
    )
    assert res.status_code == 400 and fragment in res.json()["reason"], res.text


def test_other_media_type_is_a_415(client: TestClient) -> None:
    res = client.post("/otel/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    assert res.status_code == 415


def test_resend_is_idempotent(client: TestClient) -> None:
    spans = _trace(6)
    assert _post(client, spans, project_id=PROJECT).status_code == 200
    first = _usage(client, spans[0].trace_id.hex())
    assert _post(client, spans, project_id=PROJECT).status_code == 200
    assert _usage(client, spans[0].trace_id.hex()) == first
    assert_same_usage(first, _reference_usage(spans))
    leaf = spans[-1].span_id.hex()
    res = client.post("/calls/delete", json={"project_id": PROJECT, "call_ids": [leaf]})
    assert res.status_code == 200
    assert _post(client, spans, project_id=PROJECT).status_code == 200
    assert leaf not in _usage(client, spans[0].trace_id.hex())["call_usage"]  # stays deleted


def test_empty_export(client: TestClient) -> None:
    res = _post(client, [], project_id=PROJECT)
    assert res.status_code == 200 and res.content == b""


@pytest.mark.slow  # the reference takes about 30 s over 10,000 spans
def test_ten_thousand_spans_in_one_export(client: TestClient) -> None:
    spans = _trace(7, spans=10_000)
    body = request_of(spans).SerializeToString()
    assert len(body) < Settings().max_body_bytes
    res = client.post("/otel/v1/traces", content=body, headers={**PROTOBUF, "project_id": PROJECT})
    assert res.status_code == 200
    ours = _usage(client, spans[0].trace_id.hex())
    assert len(ours["call_usage"]) == 10_000
    assert_same_usage(ours, _reference_usage(spans))
