"""The work a small ``/trace/usage`` request costs: Polars queries and store round trips.

Almost every trace a trace view asks for has 1 to 1,000 calls, so the fixed work of a
request is what users wait for. These counts keep it from creeping back: three Polars
queries at most whatever the size (one implementation: the selection and the usage rows in
one ``collect_all``, the id lookup, the answer's text; a step such as the sort runs only
when the data needs it), two DuckDB round trips to read a trace (calls,
usage), none for prices once the project's table is kept, one hand-off to a worker thread
(each costs a thread wake-up), and no work at all, not even a hand-off, for an answer
served from the cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import polars as pl
import pytest
from fastapi.testclient import TestClient
from polars.lazyframe import engine as polars_engine

from benchmarks.generate import PROJECT, generate
from service.app import create_app
from service.auth import KeyStore
from service.settings import Settings
from service.store import CallStore

SIZES = (1, 100, 1_000)
POLARS_QUERIES = 3  # per uncached /trace/usage answer, costs on or off (23, then 12, before)
TRACE_READS = 2  # calls and usage of the named traces
THREAD_HOPS = 1  # the route computes on one worker thread; its dependencies run on the loop


class Counter:
    """Counts Polars queries (every collect, eager operations included; a ``collect_all``
    of several plans counts once: it costs about one query), store reads and hand-offs to
    worker threads (FastAPI runs plain ``def`` routes and dependencies there)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: CallStore) -> None:
        self.polars = 0
        self.store = 0
        self.hops = 0
        collect = polars_engine._LocalEngine.collect
        collect_all = polars_engine._LocalEngine.collect_all
        read = store._read
        run_sync = anyio.to_thread.run_sync

        def counted_collect(engine: Any, *args: Any, **kwargs: Any) -> Any:
            self.polars += 1
            return collect(engine, *args, **kwargs)

        def counted_collect_all(engine: Any, *args: Any, **kwargs: Any) -> Any:
            self.polars += 1
            return collect_all(engine, *args, **kwargs)

        def counted_read(*args: Any, **kwargs: Any) -> Any:
            self.store += 1
            return read(*args, **kwargs)

        async def counted_run_sync(*args: Any, **kwargs: Any) -> Any:
            self.hops += 1
            return await run_sync(*args, **kwargs)

        monkeypatch.setattr(polars_engine._LocalEngine, "collect", counted_collect)
        monkeypatch.setattr(polars_engine._LocalEngine, "collect_all", counted_collect_all)
        monkeypatch.setattr(store, "_read", counted_read)
        monkeypatch.setattr(anyio.to_thread, "run_sync", counted_run_sync)

    def reset(self) -> tuple[int, int, int]:
        counts = (self.polars, self.store, self.hops)
        self.polars = self.store = self.hops = 0
        return counts


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, tuple[str, str], CallStore, dict]]:
    config = Settings(data_dir=tmp_path, cache_size=16)
    _, secret = KeyStore(config.keys_path).add("ada", [PROJECT])
    store = CallStore(config.db_path)
    traces = {n: generate("agent", n, seed=n) for n in SIZES}
    for trace in traces.values():
        store.write_parts(trace.calls.with_columns(pl.lit(True).alias("complete")))
    with TestClient(create_app(config, store=store)) as client:
        yield client, ("ada", secret), store, traces


def _post(client: TestClient, auth: tuple[str, str], body: dict[str, Any]) -> Any:
    # uncompressed, as trace views on loopback ask: gzip compresses on a worker thread
    headers = {"accept-encoding": "identity"}
    res = client.post("/trace/usage", content=json.dumps(body), auth=auth, headers=headers)
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.parametrize("include_costs", [False, True])
def test_small_requests_cost_the_same_few_queries_at_every_size(
    app: tuple[TestClient, tuple[str, str], CallStore, dict],
    monkeypatch: pytest.MonkeyPatch,
    include_costs: bool,
) -> None:
    client, auth, store, traces = app
    for n in SIZES:  # the price table and compiled filters are kept after a first request
        _post(client, auth, {**traces[n].request(include_costs), "limit": 0})
    counter = Counter(monkeypatch, store)
    counts = {}
    for n in SIZES:
        answer = _post(client, auth, traces[n].request(include_costs))
        assert len(answer["call_usage"]) == n
        counts[n] = counter.reset()
    assert all(0 < queries <= POLARS_QUERIES for queries, _, _ in counts.values()), counts
    assert all(reads == TRACE_READS for _, reads, _ in counts.values()), counts
    assert all(hops == THREAD_HOPS for _, _, hops in counts.values()), counts


def test_cached_answer_costs_no_query(
    app: tuple[TestClient, tuple[str, str], CallStore, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, auth, store, traces = app
    body = traces[100].request(True)
    first = _post(client, auth, body)
    counter = Counter(monkeypatch, store)
    assert _post(client, auth, body) == first
    assert counter.reset() == (0, 0, 0)
