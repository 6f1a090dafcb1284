"""``compute_threads``: at most that many usage answers are computed at once.

More would share the cores (and the GIL) and all finish late; the rest wait for a slot,
and a cached answer needs none. A request whose client left while it waited is not
computed at all.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

import service.routes.usage as usage_route
from benchmarks.generate import PROJECT, generate
from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from service.store import CallStore

WAIT_S = 10.0


def _until(condition: Any) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _usage_scope(basic: bytes) -> dict[str, Any]:
    """The ASGI scope of a ``POST /trace/usage`` sent with ``basic`` credentials, for
    requests whose ``receive`` a test plays itself (a client that leaves)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/trace/usage",
        "raw_path": b"/trace/usage",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"t"), (b"authorization", basic)],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


@pytest.fixture
def held_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Any:
    """An app with ``request.param`` compute slots whose computations wait for ``release``."""
    slots = request.param
    settings = Settings(data_dir=tmp_path, cache_size=0, compute_threads=slots)
    _, secret = KeyStore(settings.keys_path).add("ada", [PROJECT])
    store = CallStore(settings.db_path)
    trace = generate("agent", 5, seed=1)
    store.write_parts(trace.calls.with_columns(pl.lit(True).alias("complete")))
    app = create_app(settings, store=store)
    release, computing = threading.Event(), []
    compute = usage_route.trace_usage

    def held(*args: Any, **kwargs: Any) -> Any:
        computing.append(1)
        assert release.wait(WAIT_S)
        return compute(*args, **kwargs)

    monkeypatch.setattr(usage_route, "trace_usage", held)
    body = json.dumps(trace.request(True)).encode()
    try:
        yield app, slots, ("ada", secret), body, release, computing
    finally:
        release.set()
        store.close()


@pytest.mark.parametrize("held_app", [1, 2], indirect=True)
def test_answers_beyond_the_slots_wait_for_one(held_app: Any) -> None:
    app, slots, auth, body, release, computing = held_app
    limiter = app.state.compute_slots

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            posts = [
                asyncio.ensure_future(client.post("/trace/usage", content=body, auth=auth))
                for _ in range(slots + 1)
            ]
            # every slot is taken by a held computation, and one more request waits
            full = await asyncio.to_thread(
                _until,
                lambda: len(computing) == slots and limiter.statistics().tasks_waiting == 1,
            )
            waiting = len(computing)
            release.set()
            answers = await asyncio.gather(*posts)
            assert full, limiter.statistics()
            assert waiting == slots
            return [answer.status_code for answer in answers]

    assert asyncio.run(scenario()) == [200] * (slots + 1)
    assert len(computing) == slots + 1


@pytest.mark.parametrize("held_app", [1], indirect=True)
def test_a_request_whose_client_left_while_it_waited_is_not_computed(held_app: Any) -> None:
    app, _, auth, body, release, computing = held_app
    limiter = app.state.compute_slots
    basic = b"Basic " + base64.b64encode(":".join(auth).encode())
    left, statuses = asyncio.Event(), []

    async def receive() -> dict[str, Any]:
        if not left.is_set():
            left.set()
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}  # the client is gone

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def scenario() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.ensure_future(client.post("/trace/usage", content=body, auth=auth))
            assert await asyncio.to_thread(_until, lambda: len(computing) == 1)
            gone = asyncio.ensure_future(app(_usage_scope(basic), receive, send))
            assert await asyncio.to_thread(_until, lambda: limiter.statistics().tasks_waiting == 1)
            release.set()
            await gone
            return (await first).status_code

    assert asyncio.run(scenario()) == 200
    assert statuses == [usage_route.CLIENT_GONE]
    assert len(computing) == 1  # only the first request was computed


def test_a_request_whose_client_leaves_while_it_is_computed_stops_at_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, cache_size=0)
    _, secret = KeyStore(settings.keys_path).add("ada", [PROJECT])
    store = CallStore(settings.db_path)
    trace = generate("agent", 5, seed=1)
    store.write_parts(trace.calls.with_columns(pl.lit(True).alias("complete")))
    app = create_app(settings, store=store)
    reading, leave, noticed, engine_runs = (
        threading.Event(),
        threading.Event(),
        threading.Event(),
        [],
    )
    load, watch = store.load, usage_route._watch

    def held_load(*args: Any, **kwargs: Any) -> Any:
        reading.set()
        assert noticed.wait(WAIT_S)  # the request has seen its client leave
        return load(*args, **kwargs)

    async def watched(*args: Any) -> None:
        await watch(*args)
        noticed.set()

    compute = usage_route.trace_usage

    def counted(*args: Any, **kwargs: Any) -> Any:
        engine_runs.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(store, "load", held_load)
    monkeypatch.setattr(usage_route, "_watch", watched)
    monkeypatch.setattr(usage_route, "trace_usage", counted)
    body = json.dumps(trace.request(True)).encode()
    basic = b"Basic " + base64.b64encode(f"ada:{secret}".encode())
    statuses: list[int] = []
    sent = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent.is_set():
            sent.set()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.to_thread(leave.wait, WAIT_S)  # the client leaves mid-computation
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def scenario() -> None:
        request = asyncio.ensure_future(app(_usage_scope(basic), receive, send))
        assert await asyncio.to_thread(reading.wait, WAIT_S)
        leave.set()
        await request

    try:
        asyncio.run(scenario())
    finally:
        leave.set()
        noticed.set()
        store.close()
    assert statuses == [usage_route.CLIENT_GONE]
    assert engine_runs == []  # the store's read ended after the client had left
