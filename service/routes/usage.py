"""``POST /trace/usage`` and ``POST /calls/usage``: Weave's wire shapes, the engine's answer.

Handlers check the caller, load the project's calls with ``trace_ids``/``call_ids`` pushed
down to the store, and return the engine's JSON bytes untouched (``response_model`` only
documents the shape). Repeated polls of an unchanged store are served from a small LRU keyed
by the request and ``store.version()``, which every ingest bumps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

import polars as pl
from fastapi import APIRouter, Request, Response
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
router = APIRouter(tags=["usage"])


class AnswerCache:
    """A thread-safe LRU of response bodies; ``size`` 0 disables it.

    Bodies over ``max_bytes`` are not kept: the cache is for polls of single traces, and
    ``size`` whole-project answers would hold a lot of memory.

    Examples
    --------
    >>> cache = AnswerCache(1)
    >>> cache.get_or_compute(("a", 1), lambda: (b"x", 1)), cache.get_or_compute(("a", 1), None)
    ((b'x', 1), (b'x', 1))
    """

    def __init__(self, size: int, max_bytes: int = 4 * 1024 * 1024) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, tuple[bytes, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(
        self, key: tuple, compute: Callable[[], tuple[bytes, int]]
    ) -> tuple[bytes, int]:
        """The cached ``(body, calls)`` for ``key``, computing and keeping it on a miss."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = compute()
        if self.size > 0 and len(value[0]) <= self.max_bytes:
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return value


def _cache_key(kind: str, req: BaseModel) -> tuple | None:
    """The request as canonical JSON; None (not cached) when pydantic cannot serialize it,
    e.g. a query nested past its depth limit, which the engine then rejects."""
    try:
        return (kind, req.model_dump_json(by_alias=True))
    except PydanticSerializationError:
        return None


def _answer(
    request: Request, key: tuple | None, compute: Callable[[], UsageResult], version: int
) -> Response:
    def run() -> tuple[bytes, int]:
        result = compute()
        return result.to_json(), result.call_ids.len()

    cache = request.app.state.usage_cache
    body, calls = run() if key is None else cache.get_or_compute((*key, version), run)
    request.state.calls_selected = calls
    return Response(body, media_type=JSON)


@router.post("/trace/usage", response_model=TraceUsageRes)
def trace_usage_route(
    req: TraceUsageReq,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """Per-call usage of the selected calls, each rolled up over its selected descendants."""
    principal.check(req.project_id)

    def compute() -> UsageResult:
        f = req.filter
        calls, usage = store.load(
            req.project_id,
            trace_ids=(f.trace_ids or None) if f else None,
            call_ids=(f.call_ids or None) if f else None,
            columns={*s.ANSWER_COLUMNS, *columns_read(req.filter, req.query)},
        )
        prices = store.prices(req.project_id) if req.include_costs else None
        return trace_usage(
            calls, req, usage=usage, prices=prices, summary_usage=settings.summary_usage
        )

    key = _cache_key("trace", req)
    return _answer(request, key, compute, store.version())


@router.post("/calls/usage", response_model=CallsUsageRes)
def calls_usage_route(
    req: CallsUsageReq,
    request: Request,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    """Usage of each requested call, rolled up over every call of its trace."""
    principal.check(req.project_id)

    def compute() -> UsageResult:
        trace_ids: list[str] = []
        if req.call_ids:
            roots, _ = store.load(req.project_id, call_ids=req.call_ids, columns=[s.TRACE_ID])
            found = roots.select(s.TRACE_ID).drop_nulls().unique().collect()
            trace_ids = found.get_column(s.TRACE_ID).to_list()
        calls, usage = _load_traces(store, req.project_id, trace_ids)
        prices = store.prices(req.project_id) if req.include_costs else None
        return calls_usage(
            calls, req, usage=usage, prices=prices, summary_usage=settings.summary_usage
        )

    key = _cache_key("calls", req)
    return _answer(request, key, compute, store.version())


def _load_traces(
    store: CallStore, project_id: str, trace_ids: list[str]
) -> tuple[pl.LazyFrame, pl.LazyFrame | None]:
    """The calls of ``trace_ids``: no store round trip when there are none."""
    if not trace_ids:
        return s.empty(s.CALL_SCHEMA).lazy(), None
    return store.load(project_id, trace_ids=trace_ids, columns=s.ANSWER_COLUMNS)
