"""Weave's call ingest endpoints: start, end, mixed batches, complete calls, delete.

Each request is validated off the event loop, straight from the body's bytes, so a 30 MB
batch holds no other request; a batch is validated and turned into part columns a chunk of
items at a time (:class:`service.body.BodyStream`), so it is never held whole as Python
objects. Every project a request names is checked against the caller's key, and then it is
written in one store transaction: a 2xx answer means all of it is on disk, an error means
none of it is (and an invalid item anywhere is the answer, before any other error).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, HTTPException

from engine.errors import InvalidRequestError, NotFoundError
from service.body import BodyStream
from service.deps import PrincipalDep, StoreDep, json_body
from service.parts import call_part, concat_parts, parts_frame
from service.store import MAX_DELETE_CALLS
from service.wire import (
    CallBatchEndMode,
    CallBatchStartMode,
    CallCreateBatchReq,
    CallCreateBatchRes,
    CallEndReq,
    CallEndRes,
    CallEndV2Req,
    CallEndV2Res,
    CallsDeleteReq,
    CallsDeleteRes,
    CallStartReq,
    CallStartRes,
    CallStartV2Req,
    CallStartV2Res,
    CallsUpsertCompleteReq,
    CallsUpsertCompleteRes,
    CompletedCallSchemaForInsert,
    EndedCallSchemaForInsert,
    StartedCallSchemaForInsert,
)

router = APIRouter(tags=["calls"])


def _start_part(start: StartedCallSchemaForInsert, user: str) -> dict[str, Any]:
    """A start part; like Weave's server, a missing id or trace id is generated."""
    call = start.model_dump()
    call["id"] = start.id or str(uuid.uuid4())
    call["trace_id"] = start.trace_id or str(uuid.uuid4())
    call["wb_user_id"] = start.wb_user_id or user
    return call_part(call, start=True, end=False)


def _end_part(end: EndedCallSchemaForInsert) -> dict[str, Any]:
    return call_part(end.model_dump(), start=False, end=True)


def _project_of(entity: str, project: str, item_project: str, path: str) -> str:
    project_id = f"{entity}/{project}"
    if item_project != project_id:
        raise InvalidRequestError(
            f"project_id {item_project!r} does not match the URL's project {project_id!r}",
            path=path,
        )
    return project_id


@router.post("/call/start")
def call_start(
    req: Annotated[CallStartReq, json_body(CallStartReq)], store: StoreDep, principal: PrincipalDep
) -> CallStartRes:
    """Start a call (or fill in the start of a call whose end came first)."""
    principal.check(req.start.project_id)
    part = _start_part(req.start, principal.user)
    store.write_parts(parts_frame([part]))
    return CallStartRes(id=part["id"], trace_id=part["trace_id"])


@router.post("/call/end")
def call_end(
    req: Annotated[CallEndReq, json_body(CallEndReq)], store: StoreDep, principal: PrincipalDep
) -> CallEndRes:
    """End a call; an end without a stored start is kept until the start arrives."""
    principal.check(req.end.project_id)
    store.write_parts(parts_frame([_end_part(req.end)]))
    return CallEndRes()


@router.post("/call/upsert_batch")
def call_upsert_batch(
    req: Annotated[BodyStream[CallCreateBatchReq], json_body(CallCreateBatchReq, stream=True)],
    store: StoreDep,
    principal: PrincipalDep,
) -> CallCreateBatchRes:
    """Starts and ends, applied in order, in one transaction."""

    def chunk_parts(
        items: list[CallBatchStartMode | CallBatchEndMode], first: int
    ) -> tuple[pl.DataFrame, list[CallStartRes | CallEndRes]]:
        parts: list[dict[str, Any]] = []
        res: list[CallStartRes | CallEndRes] = []
        for i, item in enumerate(items, first):
            if isinstance(item, CallBatchStartMode) and item.mode == "start":
                principal.check(item.req.start.project_id)
                part = _start_part(item.req.start, principal.user)
                res.append(CallStartRes(id=part["id"], trace_id=part["trace_id"]))
            elif isinstance(item, CallBatchEndMode) and item.mode == "end":
                principal.check(item.req.end.project_id)
                part = _end_part(item.req.end)
                res.append(CallEndRes())
            else:
                raise InvalidRequestError("Invalid mode", path=f"batch[{i}].mode")
            parts.append(part)
        return parts_frame(parts), res

    chunks = req.map(chunk_parts)["batch"]
    store.write_parts(concat_parts([frame for frame, _ in chunks]))
    return CallCreateBatchRes(res=[r for _, res in chunks for r in res])


@router.post("/v2/{entity}/{project}/calls/complete")
def calls_complete(
    entity: str,
    project: str,
    req: Annotated[
        BodyStream[CallsUpsertCompleteReq], json_body(CallsUpsertCompleteReq, stream=True)
    ],
    store: StoreDep,
    principal: PrincipalDep,
) -> CallsUpsertCompleteRes:
    """Complete calls (start and end together); each replaces any stored version."""
    principal.check(f"{entity}/{project}")

    def chunk_parts(calls: list[CompletedCallSchemaForInsert], first: int) -> pl.DataFrame:
        parts = []
        for i, call in enumerate(calls, first):
            _project_of(entity, project, call.project_id, f"batch[{i}].project_id")
            row = call.model_dump()
            row["wb_user_id"] = call.wb_user_id or principal.user
            parts.append(call_part(row, start=True, end=True))
        return parts_frame(parts)

    store.write_parts(concat_parts(req.map(chunk_parts)["batch"]))
    return CallsUpsertCompleteRes()


@router.post("/v2/{entity}/{project}/call/start")
def call_start_v2(
    entity: str,
    project: str,
    req: Annotated[CallStartV2Req, json_body(CallStartV2Req)],
    store: StoreDep,
    principal: PrincipalDep,
) -> CallStartV2Res:
    """Weave's eager single start (used for evaluations)."""
    principal.check(_project_of(entity, project, req.start.project_id, "start.project_id"))
    part = _start_part(req.start, principal.user)
    store.write_parts(parts_frame([part]))
    return CallStartV2Res(id=part["id"], trace_id=part["trace_id"])


@router.post("/v2/{entity}/{project}/call/end")
def call_end_v2(
    entity: str,
    project: str,
    req: Annotated[CallEndV2Req, json_body(CallEndV2Req)],
    store: StoreDep,
    principal: PrincipalDep,
) -> CallEndV2Res:
    """Weave's eager single end: 404 unless the call's start is stored."""
    project_id = _project_of(entity, project, req.end.project_id, "end.project_id")
    principal.check(project_id)
    if not store.has_start(project_id, req.end.id):
        raise NotFoundError(f"Cannot end call {req.end.id}: no start found in project {project_id}")
    store.write_parts(parts_frame([_end_part(req.end)]))
    return CallEndV2Res()


@router.post("/calls/delete")
def calls_delete(req: CallsDeleteReq, store: StoreDep, principal: PrincipalDep) -> CallsDeleteRes:
    """Mark calls and their descendants deleted; they are never selected again."""
    principal.check(req.project_id)
    if len(req.call_ids) > MAX_DELETE_CALLS:
        raise HTTPException(
            413,
            f"Cannot delete more than {MAX_DELETE_CALLS} calls at once",
        )
    return CallsDeleteRes(num_deleted=store.delete_calls(req.project_id, req.call_ids))
