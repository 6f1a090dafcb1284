"""Which span attributes become which call fields: the attribute names weave 0.53.12 reads.

Each table lists candidate attribute paths in priority order; the first one holding a
value wins (a value is anything truthy; for usage a literal integer 0 counts too). Names
come from the conventions LLM instrumentations follow: OpenTelemetry GenAI (``gen_ai.*``),
OpenInference (``llm.*``, ``input.value``), OpenLLMetry / Traceloop, the Vercel AI SDK
(``ai.*``), Pydantic AI / Logfire, MLflow, Google's Vertex agents and Weave's own
``wandb.*`` keys.
"""

from __future__ import annotations

# inputs and output keep the attribute path they were found under as their one key
INPUTS = (
    "ai.prompt",
    "gen_ai.prompt",
    "input.value",
    "mlflow.spanInputs",
    "gen_ai.input.messages",
    "pydantic_ai.all_messages",
    "traceloop.entity.input",
    "gcp.vertex.agent.tool_call_args",
    "gcp.vertex.agent.llm_request",
    "input",
    "inputs",
)
OUTPUTS = (
    "ai.response",
    "gen_ai.completion",
    "output.value",
    "gen_ai.output.messages",
    "mlflow.spanOutputs",
    "final_result",
    "gen_ai.content.completion",
    "traceloop.entity.output",
    "gcp.vertex.agent.tool_response",
    "gcp.vertex.agent.llm_response",
    "output",
    "outputs",
)

# summary.usage counters; every value is read as int() reads it when it can be
USAGE: dict[str, tuple[str, ...]] = {
    "input_tokens": ("gen_ai.usage.input_tokens",),
    "prompt_tokens": (
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "ai.usage.promptTokens",
    ),
    "completion_tokens": (
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "ai.usage.completionTokens",
    ),
    "output_tokens": ("gen_ai.usage.output_tokens",),
    "total_tokens": ("llm.usage.total_tokens", "llm.token_count.total"),
    "cache_creation_input_tokens": ("gen_ai.usage.cache_creation.input_tokens",),
    "cache_read_input_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.prompt_tokens_details.cached_tokens",
        "gen_ai.usage.input_tokens_details.cached_tokens",
        "prompt_tokens_details.cached_tokens",
    ),
}

# call attributes; "model" (else model_parameters.model) names the usage entry
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "system": ("gen_ai.system_instructions", "gen_ai.system", "llm.system"),
    "kind": ("weave.span.kind", "traceloop.span.kind", "openinference.span.kind"),
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "ai.model.id"),
    "provider": ("gen_ai.provider.name", "llm.provider", "ai.model.provider"),
    "model_parameters": ("gen_ai.request", "llm.invocation_parameters"),
    "operation_name": ("gen_ai.operation.name",),
    "response_id": ("gen_ai.response.id",),
    "finish_reasons": ("gen_ai.response.finish_reasons",),
    "agent_name": ("gen_ai.agent.name",),
    "agent_id": ("gen_ai.agent.id",),
}

_SESSION = ("gen_ai.conversation.id", "gcp.vertex.agent.session_id")
# Weave's own call fields; a literal boolean wandb.is_turn overrides the session fallback
WANDB: dict[str, tuple[str, ...]] = {
    "display_name": ("wandb.display_name",),
    "thread_id": (*_SESSION, "wandb.thread_id"),
    "attributes": ("wandb.attributes",),
    "wb_run_id": ("wandb.wb_run_id",),
    "wb_run_step": ("wandb.wb_run_step",),
    "wb_run_step_end": ("wandb.wb_run_step_end",),
    "is_turn": (*_SESSION, "wandb.is_turn"),
}
IS_TURN = "wandb.is_turn"

# Langfuse's real start and end times override the span's
START_OVERRIDE = "langfuse.startTime"
END_OVERRIDE = "langfuse.endTime"

# resource attributes naming the project when no project_id header is sent
ENTITY_KEY = "wandb.entity"
PROJECT_KEY = "wandb.project"

MAX_OP_NAME = 128
MAX_DISPLAY_NAME = 1024
