"""Span -> call, ours against weave 0.53.12's ``otel_export``, span by span.

Random spans mix every attribute flavour Weave reads with odd values (text and float
counts, JSON text, index keys, conflicting keys, wrong types). Each span is exported alone
to the reference so that a failure is the span's own: where the reference rejects the span
or fails the whole export, ours must reject it; otherwise every stored field must match.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from engine.otel import SpanRejected, export_calls, span_call
from engine.otel.attributes import AttributeConflictError, expand, lists_from_index_keys, lookup
from engine.otel.names import PLACEHOLDER_OP_DIGEST, shorten
from tests.otel_support import (
    INTERNAL_PROJECT,
    key_values,
    public_op_name,
    reference_export,
    request_of,
)

PROJECT = "acme/otel"
FIELDS = (
    "trace_id", "parent_id", "thread_id", "turn_id", "display_name", "started_at", "ended_at",
    "exception", "inputs", "output", "summary", "wb_run_id", "wb_run_step", "wb_run_step_end",
)  # fmt: skip

KEYS = (
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens", "llm.token_count.prompt", "llm.token_count.completion",
    "llm.token_count.total", "llm.usage.total_tokens", "ai.usage.promptTokens",
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_creation.input_tokens",
    "prompt_tokens_details.cached_tokens", "gen_ai.response.model", "gen_ai.request.model",
    "gen_ai.request.temperature", "llm.model_name", "llm.invocation_parameters", "ai.model.id",
    "gen_ai.system", "gen_ai.prompt.0.role", "gen_ai.prompt.0.content", "gen_ai.prompt.1.role",
    "gen_ai.completion", "input.value", "output.value", "input", "inputs", "output", "outputs",
    "wandb.display_name", "wandb.thread_id", "wandb.is_turn", "gen_ai.conversation.id",
    "wandb.attributes", "wandb.wb_run_id", "wandb.wb_run_step", "wandb.wb_run_step_end",
    "langfuse.startTime", "langfuse.endTime", "custom.key", "custom", "gen_ai.usage",
)  # fmt: skip
VALUES = (
    0, 1, 37, -4, 2**40, 2**63 - 1, 12.0, 12.7, True, False, "", "12", "12.0",
    " 7 ", "abc", "otel-gpt", '{"model": "otel-claude", "t": 1}', '{"a": {"0": 1, "1": 2}}',
    "[1, 2]", "[broken", "a/b", "run:1", "2025-03-01T10:00:00", "2025-03-01T10:00:00+02:00",
    [1, 2], ["x", "y"], b"12", b"\x00\xff", 1_740_000_000_000_000_000, 1_740_000_000.5,
)  # fmt: skip


def _random_span(rng: random.Random, i: int) -> Span:
    attrs = [(rng.choice(KEYS), rng.choice(VALUES)) for _ in range(rng.randint(0, 7))]
    start = 1_740_000_000_000_000_000 + rng.randint(0, 10**15)
    return Span(
        trace_id=bytes([i % 256]) * 16,
        span_id=rng.randbytes(8),
        parent_span_id=rng.choice([b"", b"\x00" * 8, rng.randbytes(8)]),
        name=rng.choice(["chat", "Chat GPT/4o", "x" * 130 + ".tail", "invoke_agent a"]),
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randint(0, 10**10),
        kind=rng.randint(0, 5),
        attributes=key_values(attrs),
        status=Status(code=rng.randint(0, 2), message=rng.choice(["", "boom"])),
    )


def _reference_call(span: Span) -> dict[str, Any] | None:
    """The reference's stored call for ``span`` alone, or None when it takes none."""
    try:
        server, res = reference_export(request_of([span]))
    except Exception:  # the reference fails the whole export on this span
        return None
    if res.partial_success is not None:
        return None
    (rec,) = server._calls.values()
    return {name: getattr(rec, name) for name in (*FIELDS, "id", "op_name", "attributes")}


def _ours(span: Span) -> dict[str, Any] | None:
    try:
        return span_call(copy.deepcopy(span), PROJECT)
    except SpanRejected:
        return None


@pytest.mark.parametrize("seed", range(4))
def test_span_call_equals_weave(seed: int) -> None:
    rng = random.Random(seed)
    stored = 0
    for i in range(300):
        span = _random_span(rng, i)
        ref, ours = _reference_call(span), _ours(span)
        assert (ref is None) == (ours is None), (span, ref, ours)
        if ref is None:
            continue
        stored += 1
        assert ours["id"] == ref["id"] == span.span_id.hex()
        assert ours["op_name"] == public_op_name(ref["op_name"], PROJECT)
        assert ours["attributes"] == ref["attributes"], span
        for name in FIELDS:
            want = ref[name]
            if name == "wb_run_id" and want:
                want = want.replace(INTERNAL_PROJECT, PROJECT, 1)
            assert ours[name] == want, (name, span, ours[name], want)
    assert stored > 50  # the generator makes mostly storable spans


def test_index_keys_and_conflicts() -> None:
    assert expand([("a.0.x", 1), ("a.1.x", 2)]) == {"a": {"0": {"x": 1}, "1": {"x": 2}}}
    assert lists_from_index_keys({"m": {"0": {"x": 1}, "1": {"x": 2}}}) == {
        "m": [{"x": 1}, {"x": 2}]
    }
    assert expand([("a", [1, 2]), ("a.2", 3)]) == {"a": {"0": 1, "1": 2, "2": 3}}
    with pytest.raises(AttributeConflictError, match="'a'"):
        expand([("a", 1), ("a.b", 2)])
    with pytest.raises(AttributeConflictError, match="'a.b'"):
        expand([("a.b.c", 1), ("a.b", 2)])
    assert lookup({"a": [{"b": 7}]}, "a.0.b") == 7
    assert lookup({"a": [1]}, "a.3") is None


def test_shorten_equals_weave() -> None:
    from weave.trace_server.opentelemetry.helpers import shorten_name

    rng = random.Random(7)
    for _ in range(3000):
        name = "".join(rng.choice("ab ./,|?x") for _ in range(rng.randint(1, 40)))
        limit = rng.randint(6, 30)
        for suffix, keep in (("...", True), (":a1b2", False)):
            try:
                want = shorten_name(name, limit, abbrv=suffix, use_delimiter_in_abbr=keep)
            except IndexError:  # weave fails on a cut through trailing delimiters
                with pytest.raises(ValueError):
                    shorten(name, limit, suffix, keep)
                continue
            assert shorten(name, limit, suffix, keep) == want, (name, limit, suffix)


def test_names() -> None:
    assert shorten("a" * 10, 10) == "a" * 10
    assert shorten("alpha beta gamma", 12) == "alpha ..."
    assert len(span_call(Span(name="n" * 300, span_id=b"1" * 8), PROJECT)["op_name"]) < 200
    call = span_call(Span(name="My Agent/run", span_id=b"1" * 8), PROJECT)
    assert call["op_name"] == f"weave:///{PROJECT}/op/my_agent_run:{PLACEHOLDER_OP_DIGEST}"
    with pytest.raises(SpanRejected, match="no valid op name"):
        span_call(Span(name="!!!", span_id=b"1" * 8), PROJECT)


def test_usage_quirks() -> None:
    span = Span(
        name="llm",
        span_id=b"1" * 8,
        attributes=key_values(
            [
                ("gen_ai.usage.input_tokens", 10),
                ("llm.token_count.prompt", 7),
                ("gen_ai.usage.output_tokens", 3),
                ("llm.token_count.completion", 2),
                ("gen_ai.request.model", "otel-gpt"),
            ]
        ),  # fmt: skip
    )
    usage = span_call(span, PROJECT)["summary"]["usage"]
    # both prompt counters kept; the total Weave derives covers prompt + completion only
    assert usage == {
        "otel-gpt": {
            "prompt_tokens": 7, "input_tokens": 10, "completion_tokens": 2, "output_tokens": 3,
            "requests": None, "total_tokens": 9, "cache_creation_input_tokens": None,
            "cache_read_input_tokens": None,
        }
    }  # fmt: skip
    bare = span_call(Span(name="tool", span_id=b"2" * 8), PROJECT)["summary"]["usage"]
    assert list(bare) == ["usage"] and set(bare["usage"].values()) == {None}


def test_resource_without_project_is_a_400() -> None:
    from engine.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="project_id header"):
        export_calls(request_of([Span(name="x", span_id=b"1" * 8)]))
    done = export_calls(
        request_of(
            [Span(name="x", span_id=b"1" * 8)], [("wandb.entity", "e"), ("wandb.project", "p")]
        )
    )
    assert done.projects == {"e/p"} and done.calls[0]["started_at"] == dt.datetime(
        1970, 1, 1, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    "attr",
    [("gen_ai.usage.input_tokens", str(2**63)), ("wandb.wb_run_step", str(-(2**63) - 1))],
)
def test_counts_past_64_bits_are_rejected(attr: tuple[str, str]) -> None:
    # Weave stores them (Python ints); the store's columns are 64-bit, so the span is refused
    with pytest.raises(SpanRejected, match="does not fit 64 bits"):
        span_call(Span(name="llm", span_id=b"1" * 8, attributes=key_values([attr])), PROJECT)
    fits = (attr[0], str(2**63 - 1))
    assert span_call(Span(name="llm", span_id=b"1" * 8, attributes=key_values([fits])), PROJECT)
