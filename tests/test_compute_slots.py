"""``compute_threads``: at most that many usage answers are computed at once.

More would share the cores (and the GIL) and all finish late; the rest wait for a slot,
and a cached answer needs none.
"""

from __future__ import annotations

import asyncio
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


@pytest.mark.parametrize("slots", [1, 2])
def test_answers_beyond_the_slots_wait_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slots: int
) -> None:
    settings = Settings(data_dir=tmp_path, cache_size=0, compute_threads=slots)
    _, secret = KeyStore(settings.keys_path).add("ada", [PROJECT])
    store = CallStore(settings.db_path)
    trace = generate("agent", 5, seed=1)
    store.write_parts(trace.calls.with_columns(pl.lit(True).alias("complete")))
    app = create_app(settings, store=store)
    limiter = app.state.compute_slots
    release, computing = threading.Event(), []
    compute = usage_route.trace_usage

    def held(*args: Any, **kwargs: Any) -> Any:
        computing.append(1)
        assert release.wait(WAIT_S)
        return compute(*args, **kwargs)

    monkeypatch.setattr(usage_route, "trace_usage", held)
    body = json.dumps(trace.request(True)).encode()

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            posts = [
                asyncio.ensure_future(
                    client.post("/trace/usage", content=body, auth=("ada", secret))
                )
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

    try:
        assert asyncio.run(scenario()) == [200] * (slots + 1)
    finally:
        store.close()
    assert len(computing) == slots + 1
