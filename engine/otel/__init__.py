"""OpenTelemetry traces -> Weave calls, exactly as weave 0.53.12's ``otel_export`` maps them.

``decode`` reads OTLP bodies (protobuf or JSON), ``attributes`` expands attribute lists
into trees, ``conventions`` lists the attribute names Weave reads, ``names`` makes op
names, ``mapping`` turns one span into one call and ``export`` a whole request into calls
and rejected spans.
"""

from engine.otel.decode import decode_request, encode_response, request_from_json
from engine.otel.export import (
    Export,
    calls_from_otlp_json,
    export_calls,
    is_otlp_request,
    otlp_line_calls,
)
from engine.otel.mapping import SpanRejected, span_call

__all__ = [
    "Export",
    "SpanRejected",
    "calls_from_otlp_json",
    "decode_request",
    "encode_response",
    "export_calls",
    "is_otlp_request",
    "otlp_line_calls",
    "request_from_json",
    "span_call",
]
