"""The read API: ``POST /calls/stream_query``, ``POST /calls/query_stats``, ``GET /projects``.

The first two are Weave's (``CallsQueryReq`` -> JSON Lines of ``CallSchema``; the count of
the same selection); the store loads the project's calls with ``trace_ids``/``call_ids``
pushed down and only the columns the answer, filter, query and sort read. ``/projects``
lets a page offer the projects a key may read.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from engine import schema as s
from engine.calls_models import (
    CallsQueryReq,
    CallsQueryStatsReq,
    CallsQueryStatsRes,
    ProjectInfo,
    ProjectsRes,
)
from engine.calls_query import calls_query, calls_query_stats, columns_needed
from engine.models import CallsFilter
from engine.selection import columns_read
from service.deps import PrincipalDep, StoreDep

JSONL = "application/jsonl"
router = APIRouter(tags=["calls"])


def _pushdown(f: CallsFilter | None) -> dict[str, list[str] | None]:
    """The filter's id lists the store can apply itself."""
    return {
        "trace_ids": (f.trace_ids or None) if f else None,
        "call_ids": (f.call_ids or None) if f else None,
    }


@router.post(
    "/calls/stream_query",
    response_class=StreamingResponse,
    responses={200: {"content": {JSONL: {}}, "description": "one CallSchema per line"}},
)
def calls_stream_query(
    req: CallsQueryReq, request: Request, store: StoreDep, principal: PrincipalDep
) -> StreamingResponse:
    """The selected calls as JSON Lines of Weave's ``CallSchema``, sorted and paged."""
    principal.check(req.project_id)
    calls, usage = store.load(req.project_id, **_pushdown(req.filter), columns=columns_needed(req))
    prices = store.prices(req.project_id) if req.include_costs else None
    page = calls_query(calls, req, usage=usage, prices=prices)
    request.state.calls_selected = len(page)
    return StreamingResponse(page.json_lines(), media_type=JSONL)


@router.post("/calls/query_stats", response_model=CallsQueryStatsRes)
def calls_query_stats_route(
    req: CallsQueryStatsReq, request: Request, store: StoreDep, principal: PrincipalDep
) -> CallsQueryStatsRes:
    """How many calls the filter and query select (at most ``limit``)."""
    principal.check(req.project_id)
    columns = {*s.ANSWER_COLUMNS, *columns_read(req.filter, req.query)}
    calls, _ = store.load(req.project_id, **_pushdown(req.filter), columns=columns)
    stats = calls_query_stats(calls, req)
    request.state.calls_selected = stats.count
    return stats


@router.get("/projects", response_model=ProjectsRes)
def projects(store: StoreDep, principal: PrincipalDep) -> ProjectsRes:
    """The projects the caller's key may read that hold calls, by project id."""
    return ProjectsRes(
        projects=[
            ProjectInfo(project_id=project_id, calls=count)
            for project_id, count in store.projects()
            if principal.key.grants(project_id)
        ]
    )
