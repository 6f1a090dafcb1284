"""OTLP/HTTP trace bodies -> ``ExportTraceServiceRequest`` messages, and replies back.

Two encodings, as the OTLP specification defines them: binary protobuf
(``application/x-protobuf``, what the SDK exporters send) and JSON (``application/json``,
what the Collector's file exporter writes). The JSON encoding differs from protobuf's
canonical JSON in one place handled here: trace and span ids are hex, not base64.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from engine.errors import InvalidRequestError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _field(node: dict[str, Any], camel: str) -> tuple[str, Any]:
    """``(name, value)`` of a field spelled in lowerCamelCase or snake_case."""
    snake = "".join(f"_{ch.lower()}" if ch.isupper() else ch for ch in camel)
    for name in (camel, snake):
        if name in node:
            return name, node[name]
    return camel, None


def _list(node: dict[str, Any], camel: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    name, items = _field(node, camel)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidRequestError(f"{name} must be a list of objects", path=f"{path}.{name}")
    return [(f"{path}.{name}[{i}]", item) for i, item in enumerate(items)]


def _hex_ids(node: dict[str, Any], path: str) -> dict[str, Any]:
    """A copy of ``node`` with its hex id fields in protobuf JSON's base64."""
    node = dict(node)
    for name in _ID_FIELDS:
        value = node.get(name)
        if value is None:
            continue
        try:
            node[name] = base64.b64encode(bytes.fromhex(value)).decode()
        except (TypeError, ValueError):
            raise InvalidRequestError(
                f"{name} must be a hex string, got {value!r}", path=f"{path}.{name}"
            ) from None
    return node


def _spans_with_byte_ids(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (an OTLP JSON request) with every span's and link's ids made base64."""
    body = dict(body)
    name, _ = _field(body, "resourceSpans")
    resources = []
    for rpath, resource in _list(body, "resourceSpans", "$"):
        resource = dict(resource)
        scopes = []
        for spath, scope in _list(resource, "scopeSpans", rpath):
            scope = dict(scope)
            spans = []
            for path, span in _list(scope, "spans", spath):
                span = _hex_ids(span, path)
                links = [_hex_ids(link, lpath) for lpath, link in _list(span, "links", path)]
                if links:
                    span[_field(span, "links")[0]] = links
                spans.append(span)
            scope[_field(scope, "spans")[0]] = spans
            scopes.append(scope)
        resource[_field(resource, "scopeSpans")[0]] = scopes
        resources.append(resource)
    body[name] = resources
    return body


def request_from_json(body: Any) -> ExportTraceServiceRequest:
    """An OTLP JSON ``ExportTraceServiceRequest`` (parsed) as the protobuf message.

    Unknown fields are ignored, as the OTLP specification asks of receivers.

    Examples
    --------
    >>> req = request_from_json({"resourceSpans": [{"scopeSpans": [{"spans": [
    ...     {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
    ...      "name": "chat", "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]})
    >>> req.resource_spans[0].scope_spans[0].spans[0].span_id.hex()
    'b7ad6b7169203331'
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("an OTLP JSON body must be an object", path="$")
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(_spans_with_byte_ids(body), message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise InvalidRequestError(f"invalid OTLP JSON: {e}") from None
    return message


def decode_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """The request in ``body``, encoded as ``content_type`` says (protobuf or JSON)."""
    if content_type == JSON:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise InvalidRequestError(f"malformed JSON body: {e}") from None
        return request_from_json(parsed)
    try:
        return ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError) as e:  # RuntimeError: nesting past protobuf's limit
        raise InvalidRequestError(f"malformed OTLP protobuf body: {e}") from None


def encode_response(rejected: int, message: str, content_type: str) -> bytes:
    """An ``ExportTraceServiceResponse``; ``partial_success`` only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if content_type == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()
