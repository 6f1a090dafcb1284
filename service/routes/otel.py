"""``POST /otel/v1/traces``: OTLP/HTTP trace export, each span stored as a call as Weave does.

Bodies are OTLP protobuf (``application/x-protobuf``) or OTLP JSON (``application/json``),
gzip'd or not (the body middleware inflates them); the reply is an
``ExportTraceServiceResponse`` in the request's encoding. Spans go to the project of the
``project_id`` header, else of their resource's ``wandb.entity`` and ``wandb.project``;
every project must be granted to the caller's key. Spans that cannot become calls are
reported in ``partial_success`` and the rest are stored, in one transaction: each span as
a start part and an end part, as Weave's ``otel_export`` writes them, so a re-sent span
replaces its call.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from engine.otel import Export, decode_request, encode_response, export_calls
from engine.otel.decode import JSON, PROTOBUF
from service.deps import Principal, PrincipalDep, StoreDep
from service.middleware import is_json, media_type
from service.parts import call_part, parts_frame
from service.store import CallStore

router = APIRouter(tags=["otel"])
PROJECT_HEADER = "project_id"


def _store(
    body: bytes, encoding: str, project_id: str | None, principal: Principal, store: CallStore
) -> Export:
    """Decode, map, check every project, then write each call's start and end parts."""
    done = export_calls(decode_request(body, encoding), project_id, principal.user)
    for project in sorted(done.projects):
        principal.check(project)
    parts = [call_part(call, start=start, end=not start)
             for call in done.calls for start in (True, False)]  # fmt: skip
    if parts:
        store.write_parts(parts_frame(parts))
    return done


@router.post(
    "/otel/v1/traces",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "An OTLP ExportTraceServiceRequest.",
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object"}},
            },
        }
    },
)
async def otel_traces(request: Request, store: StoreDep, principal: PrincipalDep) -> Response:
    """Store the spans of an OTLP export as calls; rejected spans in ``partial_success``."""
    project_id = request.headers.get(PROJECT_HEADER) or None
    if project_id is not None:
        principal.check(project_id)
    kind = request.headers.get("content-type", "")
    encoding = JSON if is_json(media_type(kind.encode("latin-1"))) else PROTOBUF
    body = await request.body()
    done = await run_in_threadpool(_store, body, encoding, project_id, principal, store)
    reply = encode_response(len(done.rejected), done.message, encoding)
    return Response(reply, media_type=encoding)
