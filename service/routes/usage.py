"""``POST /trace/usage`` and ``POST /calls/usage``: Weave's wire shapes, the engine's answer.

Handlers check the caller, load the project's calls with ``trace_ids``/``call_ids`` pushed
down to the store, and return the engine's JSON bytes untouched (``response_model`` only
documents the shape); big bodies are streamed as they are written. Repeated polls are
served from a small LRU keyed by the request and ``store.cache_version``: for a request that
names its traces, the versions of those traces, so writes to other traces (a live trace
next door) keep its answer; for any other request, its project's version.

Weave's ``/trace/usage`` cuts the selection at ``limit`` without a word; the body keeps
Weave's shape, and a cut answer carries :data:`TRUNCATED` and :data:`SELECTED_CALLS`
headers. ``/calls/usage`` is never partial (weave 0.53.12): a trace over ``limit`` is a 413.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
import polars as pl
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from pydantic_core import PydanticSerializationError

from engine import schema as s
from engine.models import CallsUsageReq, CallsUsageRes, TraceUsageReq, TraceUsageRes
from engine.selection import columns_read
from engine.trace_usage import UsageResult, calls_usage, trace_usage
from service.deps import PrincipalDep, SettingsDep, StoreDep

if TYPE_CHECKING:
    from service.store import CallStore

JSON = "application/json"
TRUNCATED = "X-Trace-Usage-Truncated"  # "true" when ``limit`` cut the selection
SELECTED_CALLS = "X-Trace-Usage-Selected-Calls"  # how many calls it held before the cut
CLIENT_GONE = 499  # nginx's "client closed request": logged, never read by anyone
router = APIRouter(tags=["usage"])


Kept = tuple[bytes, int] | tuple[bytes, int, dict[str, str]]


class AnswerCache:
    """A thread-safe LRU of response bodies; ``size`` 0 disables it.

    Bodies over ``max_bytes`` are not kept (the route streams them instead): the cache is
    for polls of single traces, and ``size`` whole-project answers would hold a lot of
    memory.

    Examples
    --------
    >>> cache = AnswerCache(1)
    >>> cache.put(("a", 1), b"x", 3), cache.get(("a", 1)), cache.get(("b", 1))
    (None, (b'x', 3), None)
    """

    def __init__(self, size: int, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Kept] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Kept | None:
        """The body kept for ``key``, the number of calls it answers and its headers (when it
        has any), if kept."""
        with self._lock:
            kept = self._items.get(key)
            if kept is not None:
                self._items.move_to_end(key)
            return kept

    def put(
        self, key: tuple, body: bytes, calls: int, headers: dict[str, str] | None = None
    ) -> None:
        """Keep ``body`` for ``key`` (unless the cache is off or the body too big)."""
        if self.size > 0 and len(body) <= self.max_bytes:
            with self._lock:
                self._items[key] = (body, calls, headers) if headers else (body, calls)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)


def _cache_key(kind: str, req: BaseModel, version: tuple) -> tuple | None:
    """The request as canonical JSON and what its answer depends on; None (not cached)
    when pydantic cannot serialize it, e.g. a query nested past its depth limit, which the
    engine then rejects."""
    try:
        return (kind, req.model_dump_json(by_alias=True), version)
    except PydanticSerializationError:
        return None


async def _read_ahead(chunks: Iterator[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """``chunks``, each written on a worker thread while the one before is being sent."""
    pending = asyncio.ensure_future(anyio.to_thread.run_sync(next, chunks, None))
    while (chunk := await pending) is not None:
        pending = asyncio.ensure_future(anyio.to_thread.run_sync(next, chunks, None))
        yield chunk


class ClientGone(Exception):
    """The client left while its answer was being computed."""


Check = Callable[[], None]  # raises ClientGone once the client has left


async def _watch(request: Request, gone: threading.Event) -> None:
    """Set ``gone`` when the client disconnects: once the body is read, the next message a
    request receives is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _answer(
    request: Request, key: tuple | None, compute: Callable[[Check], UsageResult]
) -> Response:
    """The answer's body: from the cache, whole when the cache could keep it, else streamed.

    A cached answer is sent from the event loop; anything else is computed on one worker
    thread, at most ``compute_threads`` answers at once. A request whose client left while
    it waited for its turn is not computed, and one whose client leaves while it is being
    computed stops at the next step (after the store's read, after the engine, between the
    answer's batches of text). A big answer (tens of MB for a 100,000-call trace) is sent
    as it is written, so the client reads one part while the next is being written.
    """
    cache: AnswerCache = request.app.state.usage_cache
    cached = cache.get(key) if key is not None else None
    if cached is not None:
        body, request.state.calls_selected, *headers = cached
        return Response(body, media_type=JSON, headers=headers[0] if headers else None)
    slots = request.app.state.compute_slots
    waits = slots.available_tokens < 1
    async with slots:
        if waits and await request.is_disconnected():  # the client left while it waited
            return Response(status_code=CLIENT_GONE)
        gone = threading.Event()
        watcher = asyncio.ensure_future(_watch(request, gone))
        try:
            return await anyio.to_thread.run_sync(_computed, request, cache, key, compute, gone)
        except ClientGone:
            return Response(status_code=CLIENT_GONE)
        finally:
            watcher.cancel()  # before a streamed answer listens for the disconnect itself


def _computed(
    request: Request,
    cache: AnswerCache,
    key: tuple | None,
    compute: Callable[[Check], UsageResult],
    gone: threading.Event,
) -> Response:
    """The computed answer, kept in ``cache`` under ``key`` when it is small enough."""

    def check() -> None:
        if gone.is_set():
            raise ClientGone

    result = compute(check)
    check()
    calls = request.state.calls_selected = result.call_ids.len()
    cut = result.truncated_from
    headers = {TRUNCATED: "true", SELECTED_CALLS: str(cut)} if cut is not None else None
    chunks = result.json_chunks()
    written, size = [], 0
    for chunk in chunks:
        check()
        written.append(chunk)
        size += len(chunk)
        if size > cache.max_bytes:
            rest = _read_ahead(itertools.chain(written, chunks))
            return StreamingResponse(rest, media_type=JSON, headers=headers)
    body = b"".join(written)
    if key is not None:
        cache.put(key, body, calls, headers)
    return Response(body, media_type=JSON, headers=headers)


@router.post("/trace/usage", response_model=TraceUsageRes)
async def trace_usage_route(
    req: TraceUsageReq,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """Per-call usage of the selected calls, each rolled up over its selected descendants."""
    principal.check(req.project_id)

    def compute(check: Check) -> UsageResult:
        f = req.filter
        calls, usage = store.load(
            req.project_id,
            trace_ids=(f.trace_ids or None) if f else None,
            call_ids=(f.call_ids or None) if f else None,
            columns={*s.ANSWER_COLUMNS, *columns_read(req.filter, req.query)},
        )
        check()
        prices = store.prices(req.project_id) if req.include_costs else None
        return trace_usage(
            calls, req, usage=usage, prices=prices, summary_usage=settings.summary_usage
        )

    traces = (req.filter.trace_ids or None) if req.filter else None
    version = store.cache_version(req.project_id, traces)  # before the load reads the calls
    return await _answer(request, _cache_key("trace", req, version), compute)


@router.post("/calls/usage", response_model=CallsUsageRes)
async def calls_usage_route(
    req: CallsUsageReq,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """Usage of each requested call, rolled up over every call of its trace."""
    principal.check(req.project_id)

    def compute(check: Check) -> UsageResult:
        trace_ids = store.traces_of(req.project_id, req.call_ids) if req.call_ids else []
        calls, usage = _load_traces(store, req.project_id, trace_ids)
        check()
        prices = store.prices(req.project_id) if req.include_costs else None
        return calls_usage(
            calls, req, usage=usage, prices=prices, summary_usage=settings.summary_usage
        )

    # the calls' traces are known only after a store query: keyed by the whole project
    version = store.cache_version(req.project_id, None)
    return await _answer(request, _cache_key("calls", req, version), compute)


def _load_traces(
    store: CallStore, project_id: str, trace_ids: list[str]
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """The calls of ``trace_ids``: no store round trip when there are none."""
    if not trace_ids:
        return s.empty(s.CALL_SCHEMA).lazy(), None
    return store.load(project_id, trace_ids=trace_ids, columns=s.ANSWER_COLUMNS)
