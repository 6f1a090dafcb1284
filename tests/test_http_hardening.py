"""Bad requests answer a clear 4xx, never a 5xx: the whole app (middleware, error mapping,
routes) over a real store, one test per way in (issue 19: defects 6, 7, 9, 12 and 14)."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from service import body
from service.app import create_app
from service.auth import KeyStore
from service.middleware import log_text
from service.settings import Settings, is_loopback_host
from service.wire import CallCreateBatchReq

PROJECT = "entity/project"
T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:00:05Z"
INT64_MAX = 2**63 - 1


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, tuple[str, str]]]:
    """The service as ``trace-usage serve`` builds it, and a key granted ``entity/*``."""
    settings = Settings(data_dir=tmp_path, max_body_bytes=1 << 20)
    _, secret = KeyStore(settings.keys_path).add("ada", ["entity/*"])
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, ("ada", secret)


def raw(client: TestClient, auth: Any, url: str, body: bytes, **headers: str) -> httpx.Response:
    return client.post(url, content=body, auth=auth, headers=headers)


def post(client: TestClient, auth: Any, url: str, body: Any, **headers: str) -> httpx.Response:
    """JSON without a Content-Type, as Weave's client sends it (no ASCII escaping, so a lone
    surrogate goes out as the escape ``\\ud800`` that json.dumps writes)."""
    return raw(client, auth, url, json.dumps(body).encode(), **headers)


def start(**fields: Any) -> dict[str, Any]:
    call = {"project_id": PROJECT, "id": "c1", "trace_id": "t1", "op_name": "op",
            "started_at": T0, "attributes": {}, "inputs": {}}  # fmt: skip
    return {**call, **fields}


def complete(**fields: Any) -> dict[str, Any]:
    return {**start(), "ended_at": T1, "summary": {}, **fields}


def usage_of(client: TestClient, auth: Any) -> dict[str, Any]:
    res = post(client, auth, "/trace/usage", {"project_id": PROJECT})
    assert res.status_code == 200, res.text
    return res.json()["call_usage"]


def assert_422_at(res: httpx.Response, path: str) -> None:
    assert res.status_code == 422, res.text
    assert res.json()["path"] == path, res.json()
    assert res.json()["reason"]


# --- 19.6: out of range integers, lone surrogates ----------------------------------------


@pytest.mark.parametrize("step", [2**63, -(2**63) - 1, 2**64])
@pytest.mark.parametrize(
    ("url", "body", "path"),
    [
        ("/call/start", lambda v: {"start": start(wb_run_step=v)}, "start.wb_run_step"),
        (
            "/call/upsert_batch",
            lambda v: {"batch": [{"mode": "start", "req": {"start": start(wb_run_step=v)}}]},
            "batch.0.CallBatchStartMode.req.start.wb_run_step",
        ),
        (
            f"/v2/{PROJECT}/calls/complete",
            lambda v: {"batch": [complete(wb_run_step_end=v)]},
            "batch.0.wb_run_step_end",
        ),
    ],
    ids=["start", "upsert_batch", "complete"],
)
def test_run_steps_outside_int64_are_422_at_the_field(
    app_client: Any, url: str, body: Any, path: str, step: int
) -> None:
    c, auth = app_client
    assert_422_at(post(c, auth, url, body(step)), path)
    assert usage_of(c, auth) == {}


def test_run_steps_at_the_int64_bounds_are_stored(app_client: Any) -> None:
    c, auth = app_client
    batch = [complete(id="lo", wb_run_step=-(2**63)), complete(id="hi", wb_run_step_end=INT64_MAX)]
    assert post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": batch}).status_code == 200
    assert set(usage_of(c, auth)) == {"lo", "hi"}


@pytest.mark.parametrize("url", ["/trace/usage", "/calls/usage"])
@pytest.mark.parametrize("limit", [2**64, 2**63, -(2**63) - 1])
def test_limit_outside_int64_is_422(app_client: Any, url: str, limit: int) -> None:
    c, auth = app_client
    assert_422_at(
        post(c, auth, url, {"project_id": PROJECT, "call_ids": [], "limit": limit}), "limit"
    )


SURROGATE = "a\ud800"


@pytest.mark.parametrize(
    ("url", "body", "path"),
    [
        ("/call/start", {"start": start(id=SURROGATE)}, "start.id"),
        ("/call/start", {"start": start(op_name=SURROGATE)}, "start.op_name"),
        ("/call/start", {"start": start(project_id=SURROGATE)}, "start.project_id"),
        ("/call/start", {"start": start(inputs={"q": SURROGATE})}, "start.inputs.q"),
        (
            "/call/start",
            {"start": start(attributes={SURROGATE: 1})},
            f"start.attributes.{SURROGATE}",
        ),
        (f"/v2/{PROJECT}/calls/complete", {"batch": [complete(id=SURROGATE)]}, "batch.0.id"),
        ("/trace/usage", {"project_id": SURROGATE}, "project_id"),
        ("/calls/usage", {"project_id": PROJECT, "call_ids": [SURROGATE]}, "call_ids.0"),
        ("/calls/delete", {"project_id": PROJECT, "call_ids": [SURROGATE]}, "call_ids.0"),
        (
            "/obj/create",
            {"obj": {"project_id": SURROGATE, "object_id": "o", "val": 1}},
            "obj.project_id",
        ),
    ],
)
def test_lone_surrogates_are_422_at_the_field(
    app_client: Any, url: str, body: dict, path: str
) -> None:
    c, auth = app_client
    assert_422_at(post(c, auth, url, body), path)


def test_a_surrogate_price_model_name_is_422_at_the_costs(app_client: Any) -> None:
    c, auth = app_client
    price = {"prompt_token_cost": 1, "completion_token_cost": 1}
    res = post(c, auth, "/cost/create", {"project_id": PROJECT, "costs": {SURROGATE: price}})
    assert res.status_code == 422, res.text
    assert res.json()["path"].startswith("costs.a")  # pydantic cannot echo the key as sent
    assert "lone surrogate" in res.json()["reason"]


def test_a_surrogate_project_id_still_gets_its_log_line(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    c, auth = app_client
    with caplog.at_level(logging.INFO, logger="trace_usage.access"):
        post(c, auth, "/trace/usage", {"project_id": SURROGATE})
        post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": [complete(project_id=SURROGATE)]})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "trace_usage.access"]
    assert [(x["route"], x["status"]) for x in lines] == [
        ("/trace/usage", 422),
        ("/v2/{entity}/{project}/calls/complete", 422),
    ]


def test_log_text_escapes_what_utf8_cannot_hold() -> None:
    assert json.loads(log_text({"project": SURROGATE, "n": 1})) == {"project": SURROGATE, "n": 1}


# --- 19.7: big bodies are parsed off the event loop --------------------------------------


def test_health_answers_while_a_big_upload_is_being_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload's parse waits until /health has answered: if parsing held the event
    loop, /health could not answer and the parse would give up waiting."""
    settings = Settings(data_dir=tmp_path)
    _, secret = KeyStore(settings.keys_path).add("ada", ["entity/*"])
    app = create_app(settings)
    parsing, health_answered, order = threading.Event(), threading.Event(), []
    read = body.BodyStream.map

    def slow_read(stream: Any, handle: Any) -> Any:
        parsing.set()
        order.append("parse waits" if health_answered.wait(10) else "parse gave up")
        return read(stream, handle)

    monkeypatch.setattr(body.BodyStream, "map", slow_read)
    batch = [complete(id=f"c{i}", inputs={"pad": "x" * 1000}) for i in range(500)]

    async def scenario() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            upload = asyncio.ensure_future(
                client.post(
                    f"/v2/{PROJECT}/calls/complete",
                    content=json.dumps({"batch": batch}).encode(),
                    auth=("ada", secret),
                )
            )
            assert await asyncio.to_thread(parsing.wait, 10)
            health = await client.get("/health")
            order.append("health answered")
            health_answered.set()
            return health.status_code, (await upload).status_code

    try:
        assert asyncio.run(scenario()) == (200, 200)
    finally:
        app.state.store.close()
    assert order == ["health answered", "parse waits"]


SPLIT_BODIES = [
    b'{"batch": []}',
    b' { "x" : 1 , "batch" : [ {"a": [1, {"b": "\\u00e9\xc3\xa9"}]} , 2 ,"s"] ,'
    b' "y": {"batch": [3]} } ',
    b'{"batch": [1], "batch": [2, 3]}',
    b'{"y": null}',
    b"{}",
]


@pytest.mark.parametrize("raw", SPLIT_BODIES)
def test_big_bodies_split_into_items_read_as_one_parse(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    members = body._Scanner(raw).members({"batch"})  # a big body, read member by member
    read = {k: list(v) if isinstance(v, Iterator) else v for k, v in members}
    assert read == orjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [b'{"batch": [1,]}', b'{"batch": [1 2]}', b'{"batch": [1]', b'{"batch": [1]} x',
     b"{batch: []}", b'{"batch" []}', b"[]", b"",
     b'{"batch": [' + b"[" * 5000 + b"]" * 5000 + b"]}"],
)  # fmt: skip
def test_big_malformed_bodies_are_malformed(monkeypatch: pytest.MonkeyPatch, raw: bytes) -> None:
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    with pytest.raises(RequestValidationError) as caught:
        body.validate_json(CallCreateBatchReq, raw)
    assert caught.value.errors()[0]["type"] == "json_invalid"


def test_big_bodies_are_validated_item_by_item_with_gc_paused(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, auth = app_client
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    monkeypatch.setattr(body, "CHUNK_ITEMS", 2)
    chunks, gc_during = [], []
    adapter = body._adapter

    class Counting:
        def __init__(self, annotation: Any) -> None:
            self.inner = adapter(annotation)

        def validate_python(self, items: list) -> Any:
            chunks.append(len(items))
            gc_during.append(gc.isenabled())
            return self.inner.validate_python(items)

    monkeypatch.setattr(body, "_adapter", Counting)
    batch = [complete(id=f"c{i}") for i in range(5)]
    batch[3]["wb_run_step"] = 2**63
    res = post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": batch})
    assert_422_at(res, "batch.3.wb_run_step")  # the chunk's index, made the batch's
    del batch[3]["wb_run_step"]
    assert post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": batch}).status_code == 200
    assert chunks == [2, 2, 1] * 2 and gc_during == [False] * 6
    assert gc.isenabled()
    assert set(usage_of(c, auth)) == {f"c{i}" for i in range(5)}


def test_a_surrogate_in_a_big_body_is_still_named(
    app_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, auth = app_client
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    batch = [complete(id="c0"), complete(id="c1", inputs={"q": SURROGATE})]
    assert_422_at(
        post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": batch}), "batch.1.inputs.q"
    )
    emoji = [complete(id="c2", inputs={"q": "\U0001f600"})]  # escaped as a surrogate pair
    assert post(c, auth, f"/v2/{PROJECT}/calls/complete", {"batch": emoji}).status_code == 200


def test_ingest_bodies_keep_their_openapi_schema(app_client: Any) -> None:
    c, _ = app_client
    spec = c.get("/openapi.json").json()
    for url, model in [
        ("/call/start", "CallStartReq"),
        ("/call/end", "CallEndReq"),
        ("/call/upsert_batch", "CallCreateBatchReq"),
        ("/v2/{entity}/{project}/calls/complete", "CallsUpsertCompleteReq"),
        ("/v2/{entity}/{project}/call/start", "CallStartV2Req"),
        ("/v2/{entity}/{project}/call/end", "CallEndV2Req"),
        ("/obj/create", "ObjCreateReq"),
    ]:
        body = spec["paths"][url]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == {
            "$ref": f"#/components/schemas/{model}"
        }
        assert body["required"] is True
    schemas = spec["components"]["schemas"]
    assert "start" in schemas["CallStartReq"]["properties"]
    assert {"op_name", "started_at", "wb_run_step"} <= set(
        schemas["StartedCallSchemaForInsert"]["properties"]
    )


# --- 19.9: loopback, media types, /metrics -------------------------------------------------


def _resolver(addresses: list[str]) -> Any:
    def getaddrinfo(host: str, *args: Any, **kw: Any) -> list[tuple]:
        if not addresses:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, 1, 6, "", (a, 0))
                for a in addresses]  # fmt: skip

    return getaddrinfo


@pytest.mark.parametrize(
    ("host", "addresses", "loopback"),
    [
        ("127.0.0.1", [], True),
        ("127.1.2.3", [], True),
        ("::1", [], True),
        ("0.0.0.0", [], False),
        ("10.0.0.1", [], False),
        ("127.evil.com", [], False),  # does not resolve
        ("127.evil.com", ["203.0.113.7"], False),
        ("localhost", ["127.0.0.1", "::1"], True),
        ("mixed.example", ["127.0.0.1", "192.0.2.1"], False),
    ],
)
def test_loopback_is_decided_by_the_resolved_addresses(
    monkeypatch: pytest.MonkeyPatch, host: str, addresses: list[str], loopback: bool
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolver(addresses))
    assert is_loopback_host(host) is loopback
    assert Settings(host=host).is_loopback is loopback


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
     "application/x-protobuf", "text/json"],
)  # fmt: skip
@pytest.mark.parametrize("url", ["/trace/usage", "/call/start", f"/v2/{PROJECT}/calls/complete"])
def test_bodies_not_labelled_json_are_415_and_not_read(
    app_client: Any, url: str, content_type: str
) -> None:
    c, auth = app_client
    body = {"project_id": PROJECT, "start": start(), "batch": [complete()]}
    res = post(c, auth, url, body, **{"content-type": content_type})
    assert res.status_code == 415, res.text
    assert content_type.split(";")[0] in res.json()["reason"]
    assert usage_of(c, auth) == {}


def test_json_variants_and_route_declared_types_pass_the_media_check(app_client: Any) -> None:
    c, auth = app_client
    body = {"start": start()}
    for kind in ("application/json", "application/json; charset=utf-8", "application/vnd.x+json"):
        assert post(c, auth, "/call/start", body, **{"content-type": kind}).status_code == 200
    res = c.post(
        "/files/create",
        data={"project_id": PROJECT},
        files={"file": ("obj.py", b"print(1)")},
        auth=auth,
    )
    assert res.status_code == 200, res.text
    protobuf = raw(
        c, auth, "/otel/v1/traces", b"\x0a\x00", **{"content-type": "application/x-protobuf"}
    )
    assert protobuf.status_code != 415


def test_metrics_need_a_key_granted_every_project(app_client: Any) -> None:
    c, auth = app_client
    res = c.get("/metrics", auth=auth)
    assert res.status_code == 403 and "'*'" in res.json()["reason"]
    _, secret = c.app.state.keys.add("ops", ["*"])
    assert c.get("/metrics", auth=("ops", secret)).status_code == 200


# --- 19.12: one code for unreadable bodies, gzip, every error named -----------------------


@pytest.mark.parametrize("url", ["/trace/usage", "/call/upsert_batch"])
@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"project_id": ', "malformed JSON body"),
        (b"\xff\xfe{}", "malformed JSON body"),
        (b'{"project_id": "\xc3\x28"}', "malformed JSON body"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "malformed JSON body"),
    ],
    ids=["truncated", "utf16-bom", "invalid-utf8", "too-deep"],
)
def test_unreadable_bodies_are_422_with_the_reason(
    app_client: Any, url: str, body: bytes, why: str
) -> None:
    c, auth = app_client
    res = raw(c, auth, url, body)
    assert res.status_code == 422, res.text
    assert res.json()["reason"].startswith(why)


def test_gzip_request_bodies_are_read(app_client: Any) -> None:
    c, auth = app_client
    batch = {"batch": [complete(summary={"usage": {"m": {"requests": 1, "prompt_tokens": 3}}})]}
    zipped = gzip.compress(json.dumps(batch).encode())
    res = raw(c, auth, f"/v2/{PROJECT}/calls/complete", zipped, **{"content-encoding": "gzip"})
    assert res.status_code == 200, res.text
    query = gzip.compress(json.dumps({"project_id": PROJECT}).encode())
    res = raw(c, auth, "/trace/usage", query, **{"content-encoding": "gzip"})
    assert res.json()["call_usage"]["c1"]["m"]["prompt_tokens"] == 3


def test_a_gzip_bomb_is_413_and_bad_gzip_422(app_client: Any) -> None:
    c, auth = app_client
    bomb = gzip.compress(b" " * (2 << 20))  # 2 MiB of spaces in ~2 KiB, limit is 1 MiB
    assert len(bomb) < 10_000
    res = raw(c, auth, "/trace/usage", bomb, **{"content-encoding": "gzip"})
    assert res.status_code == 413 and "decompresses to more than" in res.json()["reason"]
    for broken in (b"not gzip at all", gzip.compress(b'{"project_id": "e/p"}')[:-6]):
        res = raw(c, auth, "/trace/usage", broken, **{"content-encoding": "gzip"})
        assert res.status_code == 422 and "not valid gzip" in res.json()["reason"]
    res = raw(c, auth, "/trace/usage", b"{}", **{"content-encoding": "br"})
    assert res.status_code == 415


@pytest.mark.parametrize(
    ("url", "body", "paths"),
    [
        ("/call/start", {"start": {"id": "x"}},
         ["start.project_id", "start.op_name", "start.started_at", "start.attributes",
          "start.inputs"]),
        ("/trace/usage", {"limit": "many", "include_costs": []},
         ["project_id", "include_costs", "limit"]),
    ],
)  # fmt: skip
def test_every_validation_error_is_named(
    app_client: Any, url: str, body: dict, paths: list[str]
) -> None:
    c, auth = app_client
    res = post(c, auth, url, body)
    assert res.status_code == 422
    reason = res.json()["reason"]
    assert reason.startswith(f"{len(paths)} errors: ")
    assert all(f"{p}: " in reason for p in paths), reason
    assert res.json()["path"] in paths


# --- 19.14: unknown fields are ignored, and said so ---------------------------------------


def test_unknown_fields_are_named_in_a_warning_and_the_log(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    c, auth = app_client
    with caplog.at_level(logging.INFO, logger="trace_usage.access"):
        res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "filter": {"trace_id": ["t"]}})
        clean = post(c, auth, "/trace/usage", {"project_id": PROJECT})
    assert res.status_code == 200
    assert res.headers["warning"] == '299 - "unknown field filter.trace_id ignored"'
    assert "warning" not in clean.headers
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "trace_usage.access"]
    assert [x["unknown_fields"] for x in lines] == [["filter.trace_id"], None]


def test_unknown_ingest_fields_are_named_and_not_stored(app_client: Any) -> None:
    c, auth = app_client
    item = {"mode": "start", "req": {"start": start(colour="red"), "typo": 1}}
    res = post(c, auth, "/call/upsert_batch", {"batch": [item], "extra": True})
    assert res.status_code == 200, res.text
    assert res.headers["warning"] == ", ".join(
        f'299 - "unknown field {p} ignored"'
        for p in ("extra", "batch[0].req.typo", "batch[0].req.start.colour")
    )
    assert set(usage_of(c, auth)) == {"c1"}


def test_a_warning_header_holds_any_field_name(app_client: Any) -> None:
    c, auth = app_client
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, 'we"ird\n\u00e9': 1})
    assert res.headers["warning"] == '299 - "unknown field we\\"ird\\n\\u00e9 ignored"'
