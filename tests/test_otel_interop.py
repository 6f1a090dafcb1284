"""The OpenTelemetry SDK's own OTLP/HTTP exporter against ``trace-usage serve``.

Agent traces are built with ``opentelemetry-sdk`` (nested agent, tool and LLM spans, every
usage-attribute flavour Weave reads, cache tokens, an errored span, an agent span carrying
its children's total) and sent by ``OTLPSpanExporter`` (protobuf, gzip or not) to a running
server; the same finished spans, OTLP-encoded, go to weave 0.53.12's in-memory
``otel_export``. ``/trace/usage`` per trace, costs on, must be equal.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.live_server import USER, Server, running_server
from tests.otel_support import INTERNAL_PROJECT, reference_export
from tests.reference import weave_ref
from tests.reference.compare import assert_same_usage
from tests.reference.weave_ref import tsi

ENTITY = "otel"
T0 = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("otel-data"), f"{ENTITY}/*", "x/y") as live:
        yield live


def _ns(seconds: float) -> int:
    return int((T0.timestamp() + seconds) * 1e9) + 123


def _llm(tracer: Any, name: str, at: float, attrs: dict[str, Any], error: bool = False) -> None:
    span = tracer.start_span(name, start_time=_ns(at), attributes=attrs)
    if error:
        span.record_exception(RuntimeError("rate limited"))
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    span.end(end_time=_ns(at + 1.5))


def _agent_trace(tracer: Any) -> None:
    """An agent run: planner LLM calls of each usage flavour, a tool, a nested agent."""
    root = tracer.start_span("invoke_agent travel", start_time=_ns(0),
                             attributes={"gen_ai.operation.name": "invoke_agent",
                                         "gen_ai.agent.name": "travel",
                                         "input.value": '{"question": "where to?"}'})  # fmt: skip
    with trace.use_span(root, end_on_exit=False):
        _llm(tracer, "chat otel-gpt", 1, {  # OpenTelemetry GenAI, with cache tokens
            "gen_ai.request.model": "otel-gpt", "gen_ai.response.model": "otel-gpt-0301",
            "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 150,
        })  # fmt: skip
        _llm(tracer, "ChatCompletion", 3, {  # OpenInference
            "openinference.span.kind": "LLM", "llm.model_name": "otel-claude",
            "llm.token_count.prompt": 400, "llm.token_count.completion": 55,
            "llm.token_count.total": 455, "llm.token_count.prompt_details.cache_read": 9,
        })  # fmt: skip
        _llm(tracer, "openai.chat", 5, {  # older OpenLLMetry keys, counts as text
            "gen_ai.system": "openai", "gen_ai.request.model": "otel-gpt",
            "gen_ai.usage.prompt_tokens": "300", "gen_ai.usage.completion_tokens": "20",
            "llm.usage.total_tokens": 320,
            "gen_ai.usage.prompt_tokens_details.cached_tokens": 100,
        })  # fmt: skip
        _llm(tracer, "ai.generateText", 7, {  # Vercel AI SDK
            "ai.model.id": "otel-claude", "ai.usage.promptTokens": 90,
            "ai.usage.completionTokens": 12, "prompt_tokens_details.cached_tokens": 40,
        })  # fmt: skip
        _llm(tracer, "llm both", 9, {  # GenAI and OpenInference on one span: both count
            "gen_ai.usage.input_tokens": 50, "llm.token_count.prompt": 50,
            "gen_ai.usage.output_tokens": 5, "llm.token_count.completion": 5,
            "llm.invocation_parameters": '{"model": "otel-gpt", "temperature": 0}',
        })  # fmt: skip
        _llm(tracer, "chat failed", 11, {"gen_ai.request.model": "otel-gpt",
                                         "gen_ai.usage.input_tokens": 70}, error=True)  # fmt: skip
        _llm(tracer, "execute_tool search", 13, {"gen_ai.tool.name": "search",
                                                 "input": '{"q": "Lisbon"}'})  # fmt: skip
        _llm(
            tracer,
            "chat unpriced",
            14,
            {
                "gen_ai.request.model": "otel-nobody",
                "gen_ai.usage.input_tokens": 0,
                "gen_ai.usage.output_tokens": 3,
                "gen_ai.usage.input_tokens_details.cached_tokens": 0,
            },
        )
        _rolled_up_agent(tracer, 15)
    root.end(end_time=_ns(40))


def _rolled_up_agent(tracer: Any, at: float) -> None:
    """An ``invoke_agent`` span that carries the total usage of its two LLM children."""
    agent = tracer.start_span("invoke_agent booker", start_time=_ns(at), attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "otel-gpt",
        "gen_ai.usage.input_tokens": 130, "gen_ai.usage.output_tokens": 17,
    })  # fmt: skip
    with trace.use_span(agent, end_on_exit=False):
        for i, (prompt, completion) in enumerate(((100, 10), (30, 7))):
            _llm(tracer, "chat", at + 1 + i, {
                "gen_ai.request.model": "otel-gpt", "gen_ai.usage.input_tokens": prompt,
                "gen_ai.usage.output_tokens": completion,
            })  # fmt: skip
    agent.end(end_time=_ns(at + 5))


def _finished_spans(resource: dict[str, str]) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-test", **resource}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.otel")

    for _ in range(2):
        _agent_trace(tracer)
    return list(memory.get_finished_spans())


def _exporter(server: Server, compression: Compression, **headers: str) -> OTLPSpanExporter:
    basic = base64.b64encode(f"{USER}:{server.key}".encode()).decode()
    return OTLPSpanExporter(
        endpoint=f"{server.url}/otel/v1/traces",
        headers={"Authorization": f"Basic {basic}", **headers},
        compression=compression,
    )


def _prices(project_id: str) -> list[tsi.CostCreateReq]:
    def cost(prompt: float, completion: float, day: int, cache: float = 0.0) -> Any:
        return tsi.CostCreateInput(
            prompt_token_cost=prompt, completion_token_cost=completion,
            cache_read_input_token_cost=cache, cache_creation_input_token_cost=cache * 3,
            effective_date=T0 + dt.timedelta(days=day), provider_id="otel",
        )  # fmt: skip

    costs = {"otel-gpt": cost(2e-6, 8e-6, -10, 5e-7), "otel-claude": cost(3e-6, 1.5e-5, -3),
             "otel-gpt-0301": cost(1e-6, 4e-6, -1, 2.5e-7)}  # fmt: skip
    return [tsi.CostCreateReq(project_id=project_id, costs=costs, wb_user_id=USER)]


def _usage(server: Server, project_id: str, trace_id: str, **extra: Any) -> dict[str, Any]:
    req = {"project_id": project_id, "filter": {"trace_ids": [trace_id]},
           "include_costs": True, **extra}  # fmt: skip
    res = httpx.post(f"{server.url}/trace/usage", json=req, auth=(USER, server.key), timeout=30)
    assert res.status_code == 200, res.text
    return res.json()


def _reference(spans: list[ReadableSpan]) -> Any:
    server = weave_ref.make_server([], [])
    for req in _prices(INTERNAL_PROJECT):
        server.cost_create(req)
    reference_export(encode_spans(spans), server=server)
    return server


@pytest.mark.parametrize(
    ("compression", "by_header"), [(Compression.NoCompression, True), (Compression.Gzip, False)]
)
def test_sdk_exporter_usage_equals_weave(
    server: Server, compression: Compression, by_header: bool
) -> None:
    project_id = f"{ENTITY}/{compression.value}"
    entity, project = project_id.split("/")
    resource = {} if by_header else {"wandb.entity": entity, "wandb.project": project}
    spans = _finished_spans(resource)
    headers = {"project_id": project_id} if by_header else {}
    ours = server.client()
    for req in _prices(project_id):
        ours.cost_create(req)
    assert _exporter(server, compression, **headers).export(spans) == SpanExportResult.SUCCESS
    assert _exporter(server, compression, **headers).export(spans[:5]) == SpanExportResult.SUCCESS
    ref = _reference(spans)

    trace_ids = sorted({format(s.context.trace_id, "032x") for s in spans})
    assert len(trace_ids) == 2
    for trace_id in trace_ids:
        req = {"project_id": INTERNAL_PROJECT, "filter": {"trace_ids": [trace_id]},
               "include_costs": True}  # fmt: skip
        want = weave_ref.reference_trace_usage(ref, req)
        got = _usage(server, project_id, trace_id)
        assert len(got["call_usage"]) == 12
        assert_same_usage(got, want, trace_id)


def _hex(span_or_trace_id: int, width: int) -> str:
    return format(span_or_trace_id, f"0{width}x")


def test_agent_span_with_its_childrens_total_counts_once(server: Server) -> None:
    project_id = f"{ENTITY}/auto"
    for req in _prices(project_id):
        server.client().cost_create(req)
    spans = _finished_spans({})
    exporter = _exporter(server, Compression.Gzip, project_id=project_id)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    for agent in (s for s in spans if s.name == "invoke_agent booker"):
        trace_id, agent_id = _hex(agent.context.trace_id, 32), _hex(agent.context.span_id, 16)
        root = next(
            s for s in spans if s.parent is None and s.context.trace_id == agent.context.trace_id
        )
        root_id = _hex(root.context.span_id, 16)
        own = _usage(server, project_id, trace_id)["call_usage"]
        auto = _usage(server, project_id, trace_id, summary_usage="auto")["call_usage"]
        # Weave ("own") counts the agent's total and its children's again: 2 x (130 + 17)
        mine = own[agent_id]["otel-gpt"]
        assert (mine["prompt_tokens"], mine["completion_tokens"], mine["total_tokens"]) == (
            260, 34, 294
        )  # fmt: skip
        once = auto[agent_id]["otel-gpt"]
        assert (once["prompt_tokens"], once["completion_tokens"], once["total_tokens"]) == (
            130, 17, 147
        )  # fmt: skip
        assert once["prompt_tokens_total_cost"] == pytest.approx(130 * 2e-6)
        assert once["completion_tokens_total_cost"] == pytest.approx(17 * 8e-6)
        gpt_own, gpt_auto = own[root_id]["otel-gpt"], auto[root_id]["otel-gpt"]
        assert gpt_own["prompt_tokens"] - gpt_auto["prompt_tokens"] == 130
        # spans without usage on the parent (OpenTelemetry's usual shape) are unchanged
        assert auto[root_id]["otel-claude"] == own[root_id]["otel-claude"]
