"""Big request bodies stream (issue 19, defect 7): read through a window of their text,
validated and turned into part columns a chunk of items at a time, never held whole as
Python objects; the answers stay those of a body validated whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from pydantic import BaseModel

from service import body
from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from service.wire import (
    CallBatchEndMode,
    CallBatchStartMode,
    CallCreateBatchReq,
    CompletedCallSchemaForInsert,
)

PROJECT = "entity/project"
T0, T1 = "2025-01-01T00:00:00Z", "2025-01-01T00:00:05Z"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, tuple[str, str]]]:
    """The service with a key granted ``entity/project`` only."""
    settings = Settings(data_dir=tmp_path)
    _, secret = KeyStore(settings.keys_path).add("ada", [PROJECT])
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, ("ada", secret)


def post(c: TestClient, auth: Any, url: str, payload: Any) -> Any:
    return c.post(url, content=json.dumps(payload).encode(), auth=auth)


def start(i: int, **fields: Any) -> dict[str, Any]:
    call = {"project_id": PROJECT, "id": f"c{i}", "trace_id": "t", "op_name": "op",
            "started_at": T0, "attributes": {}, "inputs": {"q": "é" * (i % 7)}}  # fmt: skip
    return {**call, **fields}


def end(i: int) -> dict[str, Any]:
    usage = {"m": {"requests": 1, "prompt_tokens": i}}
    return {"project_id": PROJECT, "id": f"c{i}", "ended_at": T1, "summary": {"usage": usage}}


def upserts(n: int) -> list[dict[str, Any]]:
    return [
        item
        for i in range(n)
        for item in (
            {"mode": "start", "req": {"start": start(i)}},
            {"mode": "end", "req": {"end": end(i)}},
        )
    ]


def stored(c: TestClient, auth: Any) -> dict[str, Any]:
    res = post(c, auth, "/trace/usage", {"project_id": PROJECT, "limit": 0})
    assert res.status_code == 200, res.text
    return res.json()["call_usage"]


def read_whole(raw: bytes) -> dict[str, Any]:
    """A big body as the scanner reads it, its list items gathered."""
    members = body._Scanner(raw).members({"batch"})
    return {k: list(v) if isinstance(v, Iterator) else v for k, v in members}


# --- the window over the text ------------------------------------------------------------

WINDOWED = [
    b'{"batch": [12345, -0.5e-3, 1E+2, true, false, null, "\\u00e9\\ud83d\\ude00", []]}',
    b'{\n "x": "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",\r\n\t"batch" : [ {"a": {"b": [1, 2]}} ,'
    b' "\xc3\xa9" ] , "n": 9876543210123456789012 }\n',
    b'{"batch": [1], "batch": [2, 3], "y": {"batch": [4]}}',
    b'{"a": "' + b"xy" * 40 + b'", "batch": ["' + b"\xc3\xa9" * 30 + b'", 7]}',
]


@pytest.mark.parametrize("window", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("raw", WINDOWED)
def test_a_body_read_through_a_small_window_is_the_same_json(
    monkeypatch: pytest.MonkeyPatch, raw: bytes, window: int
) -> None:
    """Values, multi-byte characters and whitespace cut by the window's edge are read
    again with more text, never cut short (a number, a character)."""
    monkeypatch.setattr(body, "WINDOW_BYTES", window)
    assert read_whole(raw) == json.loads(raw)


MALFORMED = [
    b'{"batch": [1,\n 2,\n  3 4]}',
    b'{\n\n "batch": [{"a": 1}, {"a": }]}',
    b'{"batch": [1]}\n x',
    b'{"batch": [1, 2\n',
    b'{"batch": ["abc\n"]}',
]


def error_of(raw: bytes) -> str:
    with pytest.raises(RequestValidationError) as caught:
        body.validate_json(CallCreateBatchReq, raw)
    (err,) = caught.value.errors()
    assert err["type"] == "json_invalid"
    return err["msg"]


@pytest.mark.parametrize("raw", MALFORMED)
def test_a_malformed_big_body_is_located_in_the_whole_body(
    monkeypatch: pytest.MonkeyPatch, raw: bytes
) -> None:
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    whole = error_of(raw)  # one window holds the whole body
    monkeypatch.setattr(body, "WINDOW_BYTES", 2)
    assert error_of(raw) == whole
    assert not whole.endswith("line 1 column 1")


# --- never whole as Python objects -------------------------------------------------------


class LiveModels:
    """How many instances of some models are alive, and the most at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *models: type[BaseModel]) -> None:
        self.live = self.peak = self.made = 0
        for model in models:
            post_init = model.model_post_init

            def counted(item: Any, context: Any, /, post_init: Any = post_init) -> None:
                self.live += 1
                self.made += 1
                self.peak = max(self.peak, self.live)
                post_init(item, context)

            monkeypatch.setattr(model, "model_post_init", counted)
            monkeypatch.setattr(model, "__del__", self._gone, raising=False)

    def _gone(self) -> None:  # as a type's __del__, a bound method is called with nothing
        self.live -= 1


@pytest.mark.parametrize("split", [True, False], ids=["windowed", "parsed-whole"])
@pytest.mark.parametrize("route", ["upsert_batch", "complete"])
def test_a_2000_item_upload_never_holds_its_items_whole(
    client: Any, monkeypatch: pytest.MonkeyPatch, route: str, split: bool
) -> None:
    """At most two chunks of validated items are alive at once: each chunk becomes part
    columns and is let go (a body validated whole holds all 2,000)."""
    c, auth = client
    if split:
        monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    monkeypatch.setattr(body, "CHUNK_ITEMS", 50)
    if route == "upsert_batch":
        url, items = "/call/upsert_batch", upserts(1000)
        live = LiveModels(monkeypatch, CallBatchStartMode, CallBatchEndMode)
    else:
        url = f"/v2/{PROJECT}/calls/complete"
        items = [{**start(i), **end(i)} for i in range(2000)]
        live = LiveModels(monkeypatch, CompletedCallSchemaForInsert)
    res = post(c, auth, url, {"batch": items})
    assert res.status_code == 200, res.text
    assert live.made == 2000
    assert live.peak <= 2 * 50
    assert len(stored(c, auth)) == len(items) // (2 if route == "upsert_batch" else 1)


# --- the answers of a body validated whole -----------------------------------------------


@pytest.mark.parametrize("split", [True, False], ids=["windowed", "parsed-whole"])
def test_an_invalid_item_anywhere_is_the_answer_and_nothing_is_stored(
    client: Any, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """A refused project in the first chunk does not hide an invalid item in a later one;
    the 403 is the answer only once the whole body validates; either way nothing lands."""
    c, auth = client
    if split:
        monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    monkeypatch.setattr(body, "CHUNK_ITEMS", 4)
    batch = upserts(10)
    batch[0]["req"]["start"]["project_id"] = "other/project"
    batch[14]["req"]["start"]["started_at"] = "not a time"
    res = post(c, auth, "/call/upsert_batch", {"batch": batch})
    assert res.status_code == 422, res.text
    assert res.json()["path"] == "batch.14.CallBatchStartMode.req.start.started_at"
    batch[14]["req"]["start"]["started_at"] = T0
    res = post(c, auth, "/call/upsert_batch", {"batch": batch})
    assert res.status_code == 403, res.text
    assert stored(c, auth) == {}
    batch[0]["req"]["start"]["project_id"] = PROJECT
    res = post(c, auth, "/call/upsert_batch", {"batch": batch})
    assert res.status_code == 200, res.text
    assert len(res.json()["res"]) == 20
    assert len(stored(c, auth)) == 10


def test_unknown_fields_are_named_with_their_index_across_chunks(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, auth = client
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    monkeypatch.setattr(body, "CHUNK_ITEMS", 2)
    batch = upserts(3)
    batch[4]["req"]["start"]["colour"] = "red"
    batch[5]["typo"] = 1
    res = post(c, auth, "/call/upsert_batch", {"batch": batch, "extra": True})
    assert res.status_code == 200, res.text
    assert res.headers["warning"] == ", ".join(
        f'299 - "unknown field {p} ignored"'
        for p in ("extra", "batch[4].req.start.colour", "batch[5].typo")
    )


@pytest.mark.parametrize("split", [True, False], ids=["windowed", "parsed-whole"])
def test_a_repeated_batch_is_the_last_one_as_in_json(
    client: Any, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    c, auth = client
    if split:
        monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    monkeypatch.setattr(body, "CHUNK_ITEMS", 2)
    first, last = json.dumps(upserts(3)), json.dumps(upserts(1))
    raw = f'{{"batch": {first}, "batch": {last}}}'.encode()
    assert orjson.loads(raw)["batch"] == upserts(1)
    res = c.post("/call/upsert_batch", content=raw, auth=auth)
    assert res.status_code == 200, res.text
    assert len(res.json()["res"]) == 2
    assert set(stored(c, auth)) == {"c0"}


def test_a_batch_that_is_not_a_list_is_named(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    c, auth = client
    monkeypatch.setattr(body, "SPLIT_BYTES", 0)
    res = post(c, auth, "/call/upsert_batch", {"batch": {"mode": "start"}})
    assert res.status_code == 422, res.text
    assert res.json()["path"] == "batch"
    res = post(c, auth, "/call/upsert_batch", {"bitch": []})
    assert res.status_code == 422, res.text
    assert res.json()["path"] == "batch"
