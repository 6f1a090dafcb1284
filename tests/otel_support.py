"""Helpers shared by the OTel tests: random OTLP spans, and weave's ``otel_export`` on them.

The reference takes internal project ids (no ``/``) and stores internal op refs; the
helpers here translate both to the public ids our server faces.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from tests.reference import weave_ref
from tests.reference.weave_ref import tsi

INTERNAL_PROJECT = "cHJvamVjdA"


def any_value(value: Any) -> AnyValue:
    """A Python value as an OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(string_value=value)


def key_values(attrs: list[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs]


def reference_export(
    request: ExportTraceServiceRequest, prices: list[dict[str, Any]] | None = None, server=None
) -> tuple[Any, Any]:
    """``(server, response)`` after weave's in-memory ``otel_export`` of ``request``."""
    server = server or weave_ref.make_server([], prices or [])
    processed = [
        tsi.ProcessedResourceSpans(entity="e", project="p", run_id=None, resource_spans=rs)
        for rs in request.resource_spans
    ]
    res = server.otel_export(
        tsi.OTelExportReq(processed_spans=processed, project_id=INTERNAL_PROJECT)
    )
    return server, res


def public_op_name(op_name: str, project_id: str) -> str:
    """An internal op ref of the reference, as the public ref of ``project_id``."""
    prefix = f"{weave_ref.INTERNAL_SCHEME}{INTERNAL_PROJECT}/"
    assert op_name.startswith(prefix), op_name
    return f"{weave_ref.PUBLIC_SCHEME}{project_id}/{op_name[len(prefix) :]}"


# --- random spans ------------------------------------------------------------------------

MODELS = ("otel-gpt", "otel-claude", "otel-unpriced")
USAGE_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.prompt",
    "llm.token_count.completion",
    "llm.token_count.total",
    "llm.usage.total_tokens",
    "ai.usage.promptTokens",
    "ai.usage.completionTokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.prompt_tokens_details.cached_tokens",
    "gen_ai.usage.input_tokens_details.cached_tokens",
    "prompt_tokens_details.cached_tokens",
)
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "ai.model.id")


def usage_attrs(rng: random.Random) -> list[tuple[str, Any]]:
    """A few usage attributes of any flavour, with well-formed counts."""
    attrs = []
    for key in rng.sample(USAGE_KEYS, rng.randint(0, 4)):
        count = rng.choice([0, rng.randint(1, 900)])
        attrs.append((key, rng.choice([count, count, str(count), float(count)])))
    return attrs


def model_attrs(rng: random.Random, models: tuple[str, ...]) -> list[tuple[str, Any]]:
    roll = rng.random()
    if roll < 0.6:
        return [(rng.choice(MODEL_KEYS), rng.choice(models))]
    if roll < 0.75:
        return [("llm.invocation_parameters", f'{{"model": "{rng.choice(models)}"}}')]
    return []


def random_span(
    rng: random.Random,
    trace_id: bytes,
    span_id: bytes,
    parent: bytes,
    t0_ns: int,
    models: tuple[str, ...] = MODELS,
) -> Span:
    start = t0_ns + rng.randint(0, 10**12)
    attrs = usage_attrs(rng) + model_attrs(rng, models)
    if rng.random() < 0.3:
        attrs.append(("input.value", '{"question": "why?"}'))
    if rng.random() < 0.3:
        attrs.append(("output.value", "because"))
    if rng.random() < 0.2:
        attrs.append(("openinference.span.kind", rng.choice(["LLM", "TOOL", "AGENT"])))
    error = rng.random() < 0.15
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=rng.choice(["chat", "invoke_agent planner", "execute_tool search", "llm"]),
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randint(0, 5 * 10**9),
        attributes=key_values(attrs),
        status=Status(code=Status.STATUS_CODE_ERROR if error else rng.choice([0, 1]),
                      message="boom" if error else ""),
    )  # fmt: skip


def random_trace(seed: int, spans: int, t0_ns: int, models: tuple[str, ...] = MODELS) -> list[Span]:
    """One trace of random spans, each span's parent an earlier span."""
    rng = random.Random(seed)
    trace_id = rng.randbytes(16)
    ids = [rng.randbytes(8) for _ in range(spans)]
    parents = [b"" if i == 0 else ids[rng.randrange(i)] for i in range(spans)]
    return [random_span(rng, trace_id, ids[i], parents[i], t0_ns, models) for i in range(spans)]


def request_of(
    spans: list[Span], resource: list[tuple[str, Any]] = ()
) -> ExportTraceServiceRequest:
    """One resource, one scope, these spans."""
    rs = ResourceSpans(scope_spans=[{"spans": spans}])
    rs.resource.attributes.extend(key_values(list(resource)))
    return ExportTraceServiceRequest(resource_spans=[rs])


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """``request`` in the OTLP JSON encoding (protobuf's JSON, with hex trace and span ids)."""
    body = json_format.MessageToDict(request)
    for resource in body.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return body
