"""One OTLP span -> one Weave call, as weave 0.53.12's ``otel_export`` maps it.

The call's id and trace id are the hex span and trace ids, its parent the hex parent span
id (none when empty or all zeros); start and end are the span's (or Langfuse's override
attributes); ``summary.weave.status`` is ``error`` for an error status, else ``success``,
and the status message is the exception of an errored span. Inputs, output and attributes
come from the attribute keys in :mod:`engine.otel.conventions`; when none of them is
present, the attributes are the span's whole attribute tree.

Usage is Weave's, quirks included: every span gets exactly one usage entry, keyed by the
model the span names (``usage`` when it names none), with every counter Weave reads --
``gen_ai.usage.input_tokens`` and ``llm.token_count.prompt`` are different counters
(``input_tokens``, ``prompt_tokens``), so a span carrying both counts both, and a
``total_tokens`` Weave derives from one pair leaves the other pair out of it.

A span Weave's server would fail on (keys that do not form a tree, an empty attribute
value, an unknown status or kind, a usage counter or call field of the wrong type, a name
that makes no op) raises :class:`SpanRejected`; Weave rejects the first kind and fails the
whole export on the others, here each such span is reported and the rest are kept.
"""

from __future__ import annotations

import datetime as dt
from binascii import hexlify
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import TypeAdapter, ValidationError

from engine import schema as s
from engine.models import LLMUsageSchema
from engine.otel import conventions as c
from engine.otel.attributes import (
    Tree,
    expand_key_values,
    json_ready,
    lists_from_index_keys,
    lookup,
    root,
)
from engine.otel.names import UnstorableNameError, op_name, op_ref, shorten

_NO_PARENT = b"\x00" * 8
_KINDS = range(6)  # SpanKind UNSPECIFIED .. CONSUMER
_STATUS = {Status.STATUS_CODE_UNSET: "success", Status.STATUS_CODE_OK: "success",
           Status.STATUS_CODE_ERROR: "error"}  # fmt: skip


class SpanRejected(ValueError):
    """A span that cannot become a call; the message says why."""


# Weave validates calls with pydantic (lax mode) before storing them; these check the same
_USAGE = TypeAdapter(dict[str, LLMUsageSchema])
_OPTIONAL_INT = TypeAdapter(int | None)
_OPTIONAL_STR = TypeAdapter(str | None)


def _has_value(value: Any, zero_counts: bool) -> bool:
    return bool(value) or (zero_counts and type(value) is int and value == 0)


def _pick(attrs: Tree, paths: tuple[str, ...], zero_counts: bool = False) -> tuple[str, Any]:
    for path in paths:
        if root(path) not in attrs:  # most paths: the span has nothing under their root
            continue
        value = lookup(attrs, path)
        if _has_value(value, zero_counts):
            return path, value
    return "", None


def _extracted(result: dict[str, Any]) -> dict[str, Any]:
    # Weave turns index-keyed dicts below each extracted value into lists, in place: the
    # span's attribute tree shares those values and sees the change too
    lists_from_index_keys(result)
    return result


def _first(attrs: Tree, paths: tuple[str, ...]) -> dict[str, Any]:
    """``{path: value}`` of the first path holding a value, or ``{}``."""
    path, value = _pick(attrs, paths)
    return _extracted({path: value} if path else {})


def _fields(
    attrs: Tree, table: dict[str, tuple[str, ...]], zero_counts: bool = False
) -> dict[str, Any]:
    """``{field: value}`` of each field's first path holding a value."""
    result = {}
    for field, paths in table.items():
        path, value = _pick(attrs, paths, zero_counts)
        if path:
            result[field] = value
    return _extracted(result)


def _as_int(value: Any) -> Any:
    try:
        return int(value)
    except Exception:  # Weave keeps what int() cannot read (and then fails validating it)
        return value


def usage_counters(attrs: Tree) -> dict[str, Any]:
    """The counters Weave reads from a span's attribute tree, with its derived total.

    Examples
    --------
    >>> usage_counters({"gen_ai": {"usage": {"input_tokens": "7", "output_tokens": 2}}})
    {'input_tokens': 7, 'output_tokens': 2, 'total_tokens': 9}
    """
    usage = {k: _as_int(v) for k, v in _fields(attrs, c.USAGE, zero_counts=True).items()}
    for first, second in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),
    ):
        a, b = usage.get(first), usage.get(second)
        if "total_tokens" not in usage and type(a) is int and type(b) is int:
            usage["total_tokens"] = a + b
    return usage


def _denest(found: dict[str, Any], names: tuple[str, str], dicts_only: bool) -> Any:
    """Weave unwraps a lone generic ``inputs``/``output`` value into the field itself."""
    if len(found) != 1:
        return found
    inner = found.get(names[0]) or found.get(names[1])
    if inner is None or (dicts_only and not isinstance(inner, dict)):
        return found
    return json_ready(inner)


def _time(nanos: int) -> dt.datetime:
    # via float seconds, as Weave does, so both round to the same microsecond
    return dt.datetime.fromtimestamp(nanos / 1_000_000_000, tz=dt.UTC)


def _override_time(value: Any) -> dt.datetime | None:
    """Langfuse's start or end time: ISO text, epoch nanoseconds or epoch seconds."""
    try:
        if isinstance(value, str):
            when = dt.datetime.fromisoformat(value)
        elif isinstance(value, int):
            when = dt.datetime.fromtimestamp(value / 1_000_000_000, tz=dt.UTC)
        elif isinstance(value, float):
            when = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        else:
            return None
    except (ValueError, TypeError):
        return None
    except (OverflowError, OSError) as e:
        raise SpanRejected(f"time override {value!r} is out of range") from e
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _valid(adapter: TypeAdapter, value: Any, what: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        problem = e.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise SpanRejected(f"{what}{'.' + where if where else ''}: {problem['msg']}") from None


def _model(attributes: dict[str, Any]) -> Any:
    model = attributes.get("model")
    if not model:
        parameters = attributes.get("model_parameters")
        if parameters:
            if not isinstance(parameters, dict):
                raise SpanRejected(f"model parameters {parameters!r} are not an object")
            model = parameters.get("model")
    return model or "usage"


def _summary_usage(model: Any, usage: dict[str, Any]) -> dict[str, Any]:
    counters = {name: usage.get(name) for name in LLMUsageSchema.__annotations__}
    if not isinstance(model, str | bytes):
        raise SpanRejected(f"model {model!r} is not text")
    checked = _valid(_USAGE, {model: counters}, "usage")
    for name, value in next(iter(checked.values())).items():
        _fits(value, f"usage counter {name}")
    return checked


def _fits(value: int | None, what: str) -> None:
    if value is not None and not s.INT64_MIN <= value <= s.INT64_MAX:
        raise SpanRejected(f"{what}={value} does not fit 64 bits")


def _step(wandb: dict[str, Any], name: str) -> int | None:
    step = _valid(_OPTIONAL_INT, wandb.get(name) or None, f"wandb.{name}")
    _fits(step, f"wandb.{name}")
    return step


def _no_bytes(value: Any, what: str) -> Any:
    """``value`` unless it holds bytes, which Weave cannot store as JSON (it fails)."""
    if isinstance(value, bytes):
        raise SpanRejected(f"{what} holds a bytes value, which cannot be stored as JSON")
    if isinstance(value, dict):
        for v in value.values():
            _no_bytes(v, what)
    elif isinstance(value, list):
        for v in value:
            _no_bytes(v, what)
    return value


def _run_id(project_id: str, wandb: dict[str, Any]) -> str | None:
    run = wandb.get("wb_run_id") or None
    try:
        usable = run and not ("/" in run or ":" in run)
    except TypeError:
        raise SpanRejected(f"wandb.wb_run_id {run!r} is not text") from None
    return f"{project_id}:{run}" if usable else None


def _tree(span: Span) -> Tree:
    """The span's attribute tree; events' and links' attributes are checked as Weave does."""
    for kv_lists in ([e.attributes for e in span.events], [x.attributes for x in span.links]):
        for kvs in kv_lists:
            expand_key_values(kvs)
    return expand_key_values(span.attributes)


def span_call(span: Span, project_id: str, wb_user_id: str | None = None) -> dict[str, Any]:
    """The complete Weave call (Python values) that ``otel_export`` stores for ``span``.

    Raises :class:`SpanRejected` for a span Weave would not store.

    Examples
    --------
    >>> from opentelemetry.proto.trace.v1.trace_pb2 import Span
    >>> span = Span(name="chat", trace_id=b"\\x01" * 16, span_id=b"\\x02" * 8,
    ...             start_time_unix_nano=0, end_time_unix_nano=2_000_000)
    >>> call = span_call(span, "acme/agents")
    >>> call["id"], call["summary"]["weave"]["latency_ms"], list(call["summary"]["usage"])
    ('0202020202020202', 2, ['usage'])
    """
    if span.kind not in _KINDS or span.status.code not in _STATUS:
        raise SpanRejected(f"unknown span kind {span.kind} or status code {span.status.code}")
    try:
        attrs = _tree(span)
    except ValueError as e:
        raise SpanRejected(str(e)) from None
    usage = usage_counters(attrs)
    inputs = _denest(_first(attrs, c.INPUTS), ("inputs", "input"), dicts_only=True)
    output = _denest(_first(attrs, c.OUTPUTS), ("outputs", "output"), dicts_only=False)
    attributes = _fields(attrs, c.ATTRIBUTES)
    wandb = _fields(attrs, c.WANDB)
    if isinstance(turn := lookup(attrs, c.IS_TURN), bool):
        wandb["is_turn"] = turn
    start_override = _override_time(_pick(attrs, (c.START_OVERRIDE,))[1])
    end_override = _override_time(_pick(attrs, (c.END_OVERRIDE,))[1])

    model = _model(attributes)
    if isinstance(output, float):
        raise SpanRejected(f"output {output!r} is a bare number Weave cannot store")
    has_fields = attributes or inputs or usage or isinstance(output, int) or len(output) > 0
    if custom := wandb.get("attributes"):
        try:
            attributes.update(custom)
        except (TypeError, ValueError):
            raise SpanRejected(f"wandb.attributes {custom!r} is not an object") from None
    if not has_fields:
        attributes = json_ready(attrs)

    display_name = _valid(_OPTIONAL_STR, wandb.get("display_name"), "wandb.display_name")
    thread_id = _valid(_OPTIONAL_STR, wandb.get("thread_id") or None, "thread id")
    span_id, trace_id = hexlify(span.span_id).decode(), hexlify(span.trace_id).decode()
    parent = span.parent_span_id
    try:
        name = op_name(span.name)
        op = op_ref(project_id, name)
        display_name = shorten(display_name, c.MAX_DISPLAY_NAME) if display_name else None
    except UnstorableNameError as e:
        raise SpanRejected(str(e)) from None
    started = start_override or _time(span.start_time_unix_nano)
    errored = span.status.code == Status.STATUS_CODE_ERROR
    latency_ms = int((span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000)
    return {
        "project_id": project_id,
        "id": span_id,
        "trace_id": trace_id,
        "parent_id": hexlify(parent).decode() if parent and parent != _NO_PARENT else None,
        "thread_id": thread_id,
        "turn_id": span_id if thread_id is not None and wandb.get("is_turn") else None,
        "op_name": op,
        "display_name": display_name,
        "started_at": started,
        "ended_at": end_override or _time(span.end_time_unix_nano),
        "exception": span.status.message if errored else None,
        "attributes": _no_bytes(attributes, "attributes"),
        "inputs": _no_bytes(inputs, "inputs"),
        "output": _no_bytes(output, "output"),
        "summary": {
            "weave": {
                "status": _STATUS[span.status.code],
                "latency_ms": latency_ms,
                "trace_name": name,
            },
            "usage": _summary_usage(model, usage),
        },
        "wb_user_id": wb_user_id,
        "wb_run_id": _run_id(project_id, wandb),
        "wb_run_step": _step(wandb, "wb_run_step"),
        "wb_run_step_end": _step(wandb, "wb_run_step_end"),
    }
