"""A whole OTLP export -> the Weave calls it stores and the spans it rejects.

Each resource's spans go to one project: the one the caller names (the ``project_id``
header), else the resource attributes ``wandb.entity`` and ``wandb.project``. Rejected
spans are counted and described in the reply's ``partial_success`` as Weave's
``otel_export`` does (at most 20 messages, then ``...``); the others are stored.
"""

from __future__ import annotations

from binascii import hexlify
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from engine.errors import InputDataError, InvalidRequestError, TraceUsageError
from engine.otel import conventions as c
from engine.otel.attributes import expand_key_values, lookup
from engine.otel.decode import request_from_json
from engine.otel.mapping import SpanRejected, span_call

MAX_MESSAGES = 20


@dataclass
class Export:
    """What an export request stores and what it rejects."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def projects(self) -> set[str]:
        """Every project the stored calls go to (each must be granted to the caller)."""
        return {call["project_id"] for call in self.calls}

    @property
    def message(self) -> str:
        """``partial_success.error_message``: the first rejections, ``; ``-separated."""
        more = "; ..." if len(self.rejected) > MAX_MESSAGES else ""
        return "; ".join(self.rejected[:MAX_MESSAGES]) + more


def _rejection(span: Span, reason: str) -> str:
    ids = f"trace_id='{hexlify(span.trace_id).decode()}' span_id='{hexlify(span.span_id).decode()}'"
    return f"Rejected span (name='{span.name}' {ids}): {reason}"


def _resource_project(resource: Any, path: str) -> str:
    try:
        tree = expand_key_values(resource.attributes)
    except ValueError as e:
        raise SpanRejected(f"resource attributes: {e}") from None
    entity, project = lookup(tree, c.ENTITY_KEY), lookup(tree, c.PROJECT_KEY)
    if not (isinstance(entity, str) and entity and isinstance(project, str) and project):
        raise InvalidRequestError(
            "no project: send the project_id header (entity/project) or the resource "
            f"attributes {c.ENTITY_KEY} and {c.PROJECT_KEY}",
            path=path,
        )
    return f"{entity}/{project}"


def export_calls(
    request: ExportTraceServiceRequest,
    project_id: str | None = None,
    wb_user_id: str | None = None,
) -> Export:
    """The calls of every span in ``request`` (Weave's mapping), and the rejected spans.

    ``project_id`` (``entity/project``) overrides the resources' ``wandb.*`` attributes.
    """
    out = Export()
    for i, resource_spans in enumerate(request.resource_spans):
        spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
        try:
            project = project_id or _resource_project(
                resource_spans.resource, f"resource_spans[{i}].resource.attributes"
            )
        except SpanRejected as e:
            out.rejected.extend(_rejection(span, str(e)) for span in spans)
            continue
        for span in spans:
            try:
                out.calls.append(span_call(span, project, wb_user_id))
            except SpanRejected as e:
                out.rejected.append(_rejection(span, str(e)))
    return out


def calls_from_otlp_json(body: dict[str, Any], project_id: str | None = None) -> Export:
    """The calls of one OTLP JSON ``ExportTraceServiceRequest`` (a line of a Collector
    file): :func:`export_calls` after :func:`engine.otel.decode.request_from_json`."""
    return export_calls(request_from_json(body), project_id)


def is_otlp_request(record: Any) -> bool:
    """Whether a parsed JSON Lines record is an OTLP export request rather than a call."""
    return isinstance(record, dict) and ("resourceSpans" in record or "resource_spans" in record)


def otlp_line_calls(record: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The calls of an OTLP JSON Lines record (a line the Collector's file exporter wrote).

    Each resource must name its project (``wandb.entity``, ``wandb.project``). Spans Weave
    would reject are left out, as the server leaves them out of what it stores.
    """
    try:
        return calls_from_otlp_json(record).calls
    except TraceUsageError as e:
        raise InputDataError(f"{where}: {e}") from None
